"""Each network's thesis training schedule as data: a recipe is a list of stages.

A stage says what trains (attribute paths of the network; "" is all of it; everything else is frozen),
the loss weights passed to ``model.loss``, the optimizer's learning rate, the number of epochs, the
learning-rate milestones (fractions of the stage's epochs; the rate is multiplied by ``gamma`` at each)
and SiaPose's alpha drop (Eq. 5.4: alpha becomes ``alpha_drop[1]`` from fraction ``alpha_drop[0]``).
Epoch counts are the thesis' (the ``paper`` recipes); ``scaled(recipe, factor)`` shrinks them for a
budget. Every stage keeps the checkpoint that is best on the validation split (mPCK) and the next stage
starts from it, as the thesis does.

Chapter 6 (Sec. 6.4.1): the mesh networks train 15 epochs with Adam at 1e-4, the rate times 0.1 at epoch 10
(HUMBI's schedule); the baseline with Eq. 6.9 (the confidence predictor excluded), then the confidence
predictor alone on the frozen baseline at batch 128 with the margin ranking loss, its best checkpoint picked by
the validation rank accuracy within subjects (what Eq. 6.6's per-subject softmax uses); the identity-aware network with Eq. 6.10; the 2-D detector (a Stacked Hourglass
with the BCE heatmap loss) on its own, at the thesis' Hourglass rate 7.5e-4 (chapter 6 gives none).

Sources: R-MGMN Sec. 3.4-3.5 (Adam, lr 1e-4, rotation net 6 epochs, unary branch and classifier 100,
pool 40, joint 150); AGMN Sec. 4.4-4.5 (unary, then pairwise with the unary frozen, then fine-tuning
with alpha = 1, 0.1, 0.1 at lr 1e-5; the epoch counts are not given: 100, 100, 40 here); SiaPose
Sec. 5.4 (100 epochs, lr 1e-4 for CPM and 7.5e-4 for the Hourglass, halved at epochs 60 and 80,
alpha 1.0 then 0.1 from epoch 40).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["Stage", "RECIPES", "recipe_for", "scaled", "with_total_epochs"]


@dataclass(frozen=True)
class Stage:
    name: str
    train: tuple[str, ...]
    loss_weights: tuple[tuple[str, float], ...]
    lr: float
    epochs: int
    milestones: tuple[float, ...] = ()
    gamma: float = 0.5
    alpha_drop: tuple[float, float] | None = None
    needs_clusters: bool = False  # R-MGMN's classifier stage: targets["cluster"] from K-means on the training split
    batch_size: int | None = None  # None: the run's batch size (the confidence predictor trains at 128)
    selection: str | None = None  # the validation metric (higher is better) that picks best.pt; None: the network's


_MESH_LOSS = (("mesh", 1.0), ("normal", 0.1), ("edge", 1.0), ("pose", 1.0))  # Eq. 6.10 (6.9 adds the shape)


def _siapose(lr: float) -> list[Stage]:
    return [Stage("end_to_end", ("",), (("estimator", 1.0), ("fused", 1.0)), lr, 100, (0.6, 0.8), alpha_drop=(0.4, 0.1))]


RECIPES: dict[str, list[Stage]] = {
    "cpm": [Stage("unary", ("",), (("unary", 1.0),), 1e-4, 100, (0.6, 0.8))],
    "hourglass": [Stage("unary", ("",), (("unary", 1.0),), 7.5e-4, 100, (0.6, 0.8))],
    "agmn": [
        Stage("unary", ("unary_branch",), (("unary", 1.0),), 1e-4, 100),
        Stage("pairwise", ("pairwise_backbone", "pairwise_stages"), (("pairwise", 1.0),), 1e-4, 100),
        Stage("finetune", ("",), (("unary", 1.0), ("pairwise", 0.1), ("last", 0.1)), 1e-5, 40),
    ],
    "rmgmn": [
        Stage("rotation", ("rotation_net",), (("rotation", 1.0),), 1e-4, 6),
        Stage("unary", ("unary_branch",), (("unary", 1.0),), 1e-4, 100),
        Stage("classifier", ("classifier",), (("classifier", 1.0),), 1e-4, 100, needs_clusters=True),
        Stage("pool", ("kernels",), (("gm", 1.0),), 1e-4, 40),
        Stage("joint", ("",), (("gm", 1.0),), 1e-4, 150),
    ],
    "siapose": _siapose(1e-4),
    "sharedgcn": _siapose(1e-4),
    "rsiapose": [Stage("rotation", ("rotation_net",), (("rotation", 1.0),), 1e-4, 6)] + _siapose(1e-4),
    "mesh-identity": [Stage("regressor", ("",), _MESH_LOSS, 1e-4, 15, (2 / 3,), gamma=0.1)],
    "mesh-baseline": [
        Stage("regressor", ("backbone", "regressor", "shape_regressor"), _MESH_LOSS + (("shape", 1.0),), 1e-4, 15,
              (2 / 3,), gamma=0.1),
        Stage("confidence", ("confidence",), (("ranking", 1.0),), 1e-4, 15, (2 / 3,), gamma=0.1, batch_size=128,
              selection="rank_accuracy"),
    ],
    "detector2d": [Stage("detector", ("",), (("unary", 1.0),), 7.5e-4, 15, (2 / 3,), gamma=0.1)],
}


def recipe_for(model_name: str, estimator: str = "cpm") -> list[Stage]:
    """The thesis recipe of a registry model (SiaPose on the Hourglass trains at 7.5e-4)."""
    if model_name not in RECIPES:
        raise ValueError(f"no recipe for {model_name!r}; recipes exist for {sorted(RECIPES)}")
    stages = list(RECIPES[model_name])
    if model_name in ("siapose", "sharedgcn", "rsiapose") and estimator == "hourglass":
        stages = [dataclasses.replace(s, lr=7.5e-4) if s.name == "end_to_end" else s for s in stages]
    return stages


def scaled(recipe: list[Stage], factor: float = 1.0, minimum: int = 1, lr_factor: float = 1.0) -> list[Stage]:
    """The recipe with every stage's epochs multiplied by ``factor`` (at least ``minimum``) and its learning
    rate by ``lr_factor`` (small CPU-sized networks on small budgets train faster than the thesis' rates)."""
    return [dataclasses.replace(s, epochs=max(minimum, round(s.epochs * factor)), lr=s.lr * lr_factor) for s in recipe]


def with_total_epochs(recipe: list[Stage], total: int) -> list[Stage]:
    """The recipe with ``total`` epochs in all, shared among its stages in the thesis' proportions.

    Each stage gets at least one epoch and ``floor(total * e_s / sum(e))`` plus one more for the stages with
    the largest remainders, so the counts add up to exactly ``total`` (what the study's budget matching needs:
    a baseline trains as many epochs as the structured model spends in all its stages).
    """
    if not isinstance(total, int) or isinstance(total, bool) or total < len(recipe):
        raise ValueError(f"total epochs must be an int >= the recipe's {len(recipe)} stages "
                         f"({', '.join(s.name for s in recipe)}): every stage trains at least one epoch; got {total!r}")
    weights = [s.epochs for s in recipe]
    spare = total - len(recipe)  # the epochs left after one per stage, shared in proportion
    shares = [spare * w / sum(weights) for w in weights]
    counts = [1 + int(share) for share in shares]
    by_remainder = sorted(range(len(recipe)), key=lambda i: (-(shares[i] - int(shares[i])), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return [dataclasses.replace(s, epochs=n) for s, n in zip(recipe, counts)]
