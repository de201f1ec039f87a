"""One training loop for every recipe: stages, validation, best-checkpoint selection, logging, resume.

    run_recipe(model, recipe, train_set, val_set, out_dir, settings)

For each stage of the recipe (``recipes.Stage``): freeze everything but the stage's modules, build Adam
and a step-wise MultiStepLR from the stage's milestones, train the stage's epochs with the stage's
loss weights, validate after every epoch, keep ``DIR/<stage>/best.pt`` (the best validation score: mPCK at
the thesis' thresholds for the 2-D networks, minus MPVPE for the mesh networks (``evaluate_mesh``), or the
stage's own ``selection`` metric) and ``DIR/last.pt``, and start the next stage from the best weights.
Each stage trains at its own ``batch_size`` where it names one (chapter 6's confidence predictor: 128).

Exact resume. The data order of epoch e of stage s is a permutation drawn from a generator seeded by
(seed, s, e); a resumed run skips the batches already seen. ``last.pt`` holds the model, optimizer,
scheduler, stage, epoch, step within the epoch, global step, the RNG states and the loop's history, and
is written atomically every ``checkpoint_every`` steps and at the end of every epoch. So training N steps
in one go, or k steps, a crash, and N - k more from ``last.pt`` end with identical parameters.

Distributed: under torchrun the model is wrapped in DistributedDataParallel, each rank takes its
``DistributedSampler``-style slice of the same permutation (the global batch is split across ranks),
metrics are averaged across ranks and only rank 0 writes checkpoints and logs. ``last.pt`` holds every
rank's RNG states (``extra["rng_ranks"]``) and a resume at the same world size gives each rank its own.
Every rank validates on the whole validation split (no collective inside validation); at a stage's end
rank 0 loads the stage's best weights and broadcasts them, so the ranks agree without reading the file
themselves; run_recipe returns on every rank only after rank 0 has written its files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset

from handops_models.metrics import THESIS_THRESHOLDS, pck
from handops_models.train import distributed as D
from handops_models.train.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from handops_models.train.recipes import Stage

__all__ = ["Settings", "run_recipe", "evaluate_model", "evaluate_mesh", "rank_accuracy", "collate", "set_trainable"]

TINY_THRESHOLDS = (0.05, 0.1, 0.15, 0.2)  # meaningful at 8-pixel cells on a 128-pixel crop


@dataclass
class Settings:
    batch_size: int = 32
    seed: int = 0
    workers: int = 0
    max_steps: int | None = None  # stop the whole recipe after this many optimizer steps (smoke runs, tests)
    checkpoint_every: int = 200
    val_limit: int | None = None  # validate on the first n validation images only
    device: str = "cpu"
    progress: bool = True
    thresholds: tuple[float, ...] = THESIS_THRESHOLDS
    extra_thresholds: tuple[float, ...] = TINY_THRESHOLDS
    cluster_centres: torch.Tensor | None = field(default=None, repr=False)
    # a stage's own (train, val) datasets by stage name (R-MGMN's classifier on a 70/30 split of the
    # training split); the other stages use run_recipe's train_set and val_set
    stage_data: dict = field(default_factory=dict, repr=False)


def collate(samples: list[dict]) -> dict:
    """Stack every key the samples share that is a tensor or a number (image, keypoints2d, visibility, and the
    3-D keys betas, pose, vertices, K, subject, ... where a data set has them); R-MGMN's cluster as long."""
    batch = {}
    for key in samples[0]:
        values = [s.get(key) for s in samples]
        if all(isinstance(v, torch.Tensor) for v in values):
            batch[key] = torch.stack(values)
        elif all(isinstance(v, (bool, int, float)) for v in values):
            batch[key] = torch.tensor(values)
    if "cluster" in batch:
        batch["cluster"] = batch["cluster"].long()
    return batch


def set_trainable(model: torch.nn.Module, paths: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """Parameters under ``paths`` ("" = all) require grad, every other one is frozen; returns the trainable."""
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = []
    for path in paths:
        if path and _names_parameter(model, path):  # R-MGMN's pool of kernels is a parameter, not a module
            params = [model.get_parameter(path)]
        else:
            params = (model.get_submodule(path) if path else model).parameters()
        for p in params:
            p.requires_grad_(True)
    seen = set()
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            trainable.append(p)
    if not trainable:
        raise ValueError(f"stage trains {paths}, which hold no parameters of {type(model).__name__}")
    return trainable


def _names_parameter(model: torch.nn.Module, path: str) -> bool:
    try:
        model.get_parameter(path)
    except AttributeError:
        return False
    return True


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _epoch_order(n: int, seed: int, stage: int, epoch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed((seed * 1_000_003 + stage) * 10_007 + epoch)
    return torch.randperm(n, generator=gen)


def _batches(order: torch.Tensor, batch_size: int, rank: int, world: int) -> list[torch.Tensor]:
    """The epoch's global batches (last partial one dropped), each split evenly across ranks."""
    per_rank = batch_size // world
    steps = len(order) // batch_size
    return [order[i * batch_size:(i + 1) * batch_size][rank * per_rank:(rank + 1) * per_rank] for i in range(steps)]


def evaluate_model(model, dataset: Dataset, settings: Settings, limit: int | None = None) -> dict:
    """Predictions on ``dataset`` (first ``limit`` images): PCK at the thesis' and the coarse thresholds
    (normalised by the crop size, Eq. 5.5), mPCK, EPE in pixels; the predictions themselves."""
    network = model.module if hasattr(model, "module") else model
    indices = range(len(dataset) if limit is None else min(limit, len(dataset)))
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=settings.batch_size, collate_fn=collate,
                        num_workers=settings.workers)
    preds, gts = [], []
    for batch in loader:
        out = network.predict(batch["image"].to(settings.device))
        preds.append(out["keypoints2d"].cpu())
        gts.append(batch["keypoints2d"])
    pred, gt = torch.cat(preds), torch.cat(gts)
    size = torch.full((len(pred),), float(network.input_size))
    thresholds = tuple(settings.thresholds)
    values = pck(pred, gt, size, thresholds)
    coarse = pck(pred, gt, size, tuple(settings.extra_thresholds))
    return {
        "pck": {f"{t:g}": float(v) for t, v in zip(thresholds, values)},
        "mpck": float(values.mean()),
        "pck_coarse": {f"{t:g}": float(v) for t, v in zip(settings.extra_thresholds, coarse)},
        "epe_px": float((pred - gt).norm(dim=-1).mean()),
        "num_images": len(pred),
        "predictions": pred,
    }


def evaluate_mesh(model, dataset: Dataset, settings: Settings, limit: int | None = None) -> dict:
    """A mesh network's root-relative MPJPE and MPVPE in mm (thesis Sec. 6.4.1) on ``dataset`` (first ``limit``
    images), with the true shape given to an identity-aware network; for the baseline its shape error and its
    confidence's rank accuracy within each subject (``rank_accuracy`` with the samples' ``subject``)."""
    from handops_models.metrics import betas_mse, mpjpe, mpvpe

    network = model.module if hasattr(model, "module") else model
    indices = range(len(dataset) if limit is None else min(limit, len(dataset)))
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=settings.batch_size, collate_fn=collate,
                        num_workers=settings.workers)
    joints, vertices, true_joints, true_vertices, betas, true_betas, confidence, subjects = [], [], [], [], [], [], [], []
    for batch in loader:
        batch = {k: v.to(settings.device) for k, v in batch.items()}
        out = network.predict(*network.batch_inputs(batch))
        truth = network.targets(batch)
        joints.append(out["keypoints3d"].cpu())
        vertices.append(out["vertices"].cpu())
        true_joints.append(truth["keypoints3d"].cpu())
        true_vertices.append(truth["vertices"].cpu())
        betas.append(out["betas"].cpu())
        true_betas.append(truth["betas"].cpu())
        if "confidence" in out:
            confidence.append(out["confidence"].cpu())
        if "subject" in batch:
            subjects.append(batch["subject"].cpu())
    joints, true_joints = torch.cat(joints), torch.cat(true_joints)
    result = {
        "mpjpe_mm": mpjpe(joints, true_joints),
        "mpvpe_mm": mpvpe(torch.cat(vertices), torch.cat(true_vertices), joints[:, 0], true_joints[:, 0]),
        "num_images": len(joints),
    }
    if not getattr(network, "identity_aware", True):
        betas, true_betas = torch.cat(betas), torch.cat(true_betas)
        result["betas_mse"] = betas_mse(betas, true_betas)
        if confidence and len(betas) >= 2:
            groups = torch.cat(subjects) if len(subjects) == len(confidence) else None
            result["rank_accuracy"] = rank_accuracy(torch.cat(confidence), (betas - true_betas).abs().mean(1), groups)
    return result


def rank_accuracy(confidence: torch.Tensor, error: torch.Tensor, groups: torch.Tensor | None = None) -> float:
    """The share of image pairs with different errors whose confidences are ordered the other way round (the
    smaller error has the larger confidence): what the margin ranking loss trains (0.5 is chance).

    With ``groups`` [N] (subject ids) only pairs within a group count: Eq. 6.6 weighs one subject's images
    against each other (a per-subject offset in the confidences changes nothing), so that is what matters for
    personalisation. Memory is the largest group's pairs (or all N^2 pairs without groups)."""
    groups = torch.zeros(len(error), dtype=torch.long) if groups is None else groups
    right, counted = 0, 0
    for g in torch.unique(groups):
        members = (groups == g).nonzero()[:, 0]
        if len(members) < 2:
            continue
        c, e = confidence[members], error[members]
        i, j = torch.triu_indices(len(members), len(members), offset=1)
        y = torch.sign(e[j] - e[i])
        keep = y != 0
        right += int(((c[i] - c[j]) * y > 0)[keep].sum())
        counted += int(keep.sum())
    return right / counted if counted else float("nan")


def run_recipe(model, recipe: list[Stage], train_set: Dataset, val_set: Dataset, out_dir, settings: Settings,
               resume: bool = False, log=print) -> dict:
    """Train ``model`` through ``recipe`` (module docstring); returns the history (per epoch metrics)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    rank, world = _rank_world()
    if settings.batch_size % world:
        raise ValueError(f"batch size {settings.batch_size} must be divisible by the number of processes {world}")
    for stage in recipe:  # before any training: a stage whose batch does not fit would fail only when reached
        size = len(settings.stage_data.get(stage.name, (train_set,))[0])
        if size < (stage.batch_size or settings.batch_size):
            raise ValueError(f"the training set of stage {stage.name} ({size} images) is smaller than one batch "
                             f"({stage.batch_size or settings.batch_size})")
    network = model
    network.to(settings.device)
    position = {"stage": 0, "epoch": 0, "batch": 0, "step": 0}
    history: list[dict] = []
    best: dict[str, float] = {}
    resume_state = None
    last = out_dir / "last.pt"
    if resume and world > 1:
        _check_same_last(last)
    if resume and last.is_file():
        resume_state = load_checkpoint(last, expect_model=getattr(network, "model_name", None), expect_config=network.config,
                                       build=False)
        network.load_state_dict(resume_state["network"]["state_dict"])
        extra = resume_state["extra"]
        position = extra["position"]
        history, best = extra["history"], extra["best"]
        if rank == 0 and position["stage"] >= len(recipe):
            log(f"resuming from {last}: the recipe already finished (step {position['step']}); nothing to train")
        elif rank == 0:
            log(f"resuming from {last}: stage {position['stage']} ({recipe[position['stage']].name}), "
                f"epoch {position['epoch']}, batch {position['batch']}, step {position['step']}")
    elif resume and rank == 0:
        log(f"--resume: no {last} yet, starting from scratch")

    for stage_index, stage in enumerate(recipe):
        if stage_index < position["stage"]:
            continue
        stage_dir = out_dir / stage.name
        stage_train, stage_val = settings.stage_data.get(stage.name, (train_set, val_set))
        trainable = set_trainable(network, stage.train)
        ddp = network
        if world > 1:
            ddp = torch.nn.parallel.DistributedDataParallel(network, find_unused_parameters=True)
        optimizer = torch.optim.Adam(trainable, lr=stage.lr)
        batch_size = stage.batch_size or settings.batch_size
        if batch_size % world:
            raise ValueError(f"stage {stage.name}'s batch size {batch_size} must be divisible by the number of processes {world}")
        steps_per_epoch = len(stage_train) // batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"the training set of stage {stage.name} ({len(stage_train)} images) is smaller than one batch ({batch_size})")
        milestones = [round(m * stage.epochs * steps_per_epoch) for m in stage.milestones]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=stage.gamma)
        if resume_state is not None and stage_index == position["stage"]:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            restore_rng_state(_own_rng(resume_state, rank, world))
        weights = dict(stage.loss_weights)
        for epoch in range(position["epoch"] if stage_index == position["stage"] else 0, stage.epochs):
            if stage.alpha_drop is not None and epoch >= stage.alpha_drop[0] * stage.epochs:
                weights["estimator"] = stage.alpha_drop[1]
            order = _epoch_order(len(stage_train), settings.seed, stage_index, epoch)
            batches = _batches(order, batch_size, rank, world)
            start = position["batch"] if (stage_index, epoch) == (position["stage"], position["epoch"]) else 0
            network.train()
            _keep_frozen_batchnorm_still(network)
            totals: dict[str, float] = {}
            bar = tqdm(range(start, len(batches)), desc=f"{stage.name} {epoch + 1}/{stage.epochs}", leave=False,
                       disable=not settings.progress or rank != 0)
            seen, waiting = 0, 0.0
            t0 = time.perf_counter()
            stream = _batch_stream(stage_train, batches[start:], settings, stage, seed=(settings.seed, stage_index, epoch))
            for b in bar:
                if settings.max_steps is not None and position["step"] >= settings.max_steps:
                    break
                t_wait = time.perf_counter()
                batch = next(stream)
                waiting += time.perf_counter() - t_wait
                batch = {k: v.to(settings.device) for k, v in batch.items()}
                outputs = ddp(*network.batch_inputs(batch))
                total, terms = network.loss(outputs, batch, weights)
                if not math.isfinite(total.item()):
                    raise FloatingPointError(f"stage {stage.name}, epoch {epoch}, batch {b}: the loss is {total.item()} "
                                             f"({ {k: v.item() for k, v in terms.items()} })")
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                scheduler.step()
                position.update(stage=stage_index, epoch=epoch, batch=b + 1, step=position["step"] + 1)
                for k, v in [("loss", total)] + list(terms.items()):
                    totals[k] = totals.get(k, 0.0) + float(v.detach())
                seen += 1
                bar.set_postfix(loss=f"{total.item():.4g}")
                if settings.checkpoint_every and position["step"] % settings.checkpoint_every == 0:
                    rngs = D.all_gather_objects(capture_rng_state()) if world > 1 else None  # every rank takes part
                    if rank == 0:
                        _save_last(last, network, optimizer, scheduler, stage, position, history, best, rngs)
            stopped = settings.max_steps is not None and position["step"] >= settings.max_steps
            finished_epoch = position["batch"] >= len(batches)
            if finished_epoch:
                position.update(epoch=epoch + 1, batch=0)
            partial = stopped and not finished_epoch
            if partial:
                # max_steps mid-epoch: last.pt holds the loop as it stands, before validation draws from the
                # RNGs (a DataLoader takes a seed); the validation below is for the log only (no best.pt,
                # not in last.pt's history), so k steps, a stop and a resume end where one run ends.
                rngs = D.all_gather_objects(capture_rng_state()) if world > 1 else None
                if rank == 0:
                    _save_last(last, network, optimizer, scheduler, stage, position, history, best, rngs)
            metrics = _validate(network, stage_val, settings, stage)
            record = {"stage": stage.name, "epoch": epoch + 1 if finished_epoch else epoch + position["batch"] / len(batches),
                      "step": position["step"], "seconds": round(time.perf_counter() - t0, 2),
                      "images_per_s": round(seen * batch_size / max(time.perf_counter() - t0, 1e-9), 1),
                      "data_wait_share": round(waiting / max(time.perf_counter() - t0, 1e-9), 4),
                      "train": dict(zip(totals, D.all_reduce_mean([v / max(seen, 1) for v in totals.values()]))),
                      "val": {k: v for k, v in metrics.items() if k != "predictions"}}
            if partial:
                if rank == 0:
                    log(f"{stage.name}: stopped at step {position['step']} (max_steps), epoch {record['epoch']:.4g}: "
                        f"loss {record['train'].get('loss', float('nan')):.4g}  val {_summary(metrics)}")
                    _append_jsonl(out_dir / "metrics.jsonl", dict(record, partial=True))
                D.barrier()  # the files are written when run_recipe returns, on every rank
                return {"history": history + [record], "best": best, "stopped": True}
            history.append(record)
            score = -math.inf if math.isnan(metrics["score"]) else metrics["score"]  # NaN (no valid pair) ranks last
            improved = score >= best.get(stage.name, -math.inf)
            if improved:  # on every rank, so every rank returns the same ``best``
                best[stage.name] = score
            rngs = D.all_gather_objects(capture_rng_state()) if world > 1 else None
            if rank == 0:
                log(f"{stage.name} epoch {record['epoch']:.4g}: loss {record['train'].get('loss', float('nan')):.4g}  "
                    f"val {_summary(metrics)}  {record['images_per_s']} img/s")
                _append_jsonl(out_dir / "metrics.jsonl", record)
                if improved:
                    save_checkpoint(stage_dir / "best.pt", network, stage=stage_index, stage_name=stage.name,
                                    epoch=position["epoch"], step=position["step"], extra={"val": record["val"]})
                _save_last(last, network, optimizer, scheduler, stage, position, history, best, rngs)
                _plot_history(history, out_dir / "curves.png")
            if stopped:
                D.barrier()  # the files are written when run_recipe returns, on every rank
                return {"history": history, "best": best, "stopped": True}
        # The next stage starts from this stage's best weights, as the thesis does: rank 0 reads them and
        # broadcasts them (the other ranks need not see the file, e.g. a folder cached per node).
        del ddp  # this stage's DDP (its gradient hooks) goes; the next stage wraps the network afresh
        best_path = stage_dir / "best.pt"
        if rank == 0 and best_path.is_file():
            network.load_state_dict(load_checkpoint(best_path, build=False)["network"]["state_dict"])
        if world > 1:
            for tensor in network.state_dict().values():
                dist.broadcast(tensor, src=0)
        position.update(stage=stage_index + 1, epoch=0, batch=0)
        resume_state = None
    D.barrier()
    return {"history": history, "best": best, "stopped": False}


def _keep_frozen_batchnorm_still(network: torch.nn.Module) -> None:
    """A BatchNorm whose parameters are frozen in this stage runs in eval mode: its running statistics
    belong to the stage that trained it (R-MGMN's rotation net must not drift while the pool trains)."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


class _StageSamples(Dataset):
    """The stage's training samples, with R-MGMN's cluster label added where the stage needs it."""

    def __init__(self, dataset: Dataset, settings: Settings, stage: Stage):
        self.dataset, self.settings, self.stage = dataset, settings, stage

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return _with_cluster(self.dataset[int(index)], self.settings, self.stage)


def _batch_stream(dataset: Dataset, batches: list[torch.Tensor], settings: Settings, stage: Stage, seed: tuple[int, ...]):
    """The epoch's remaining batches, collated. Without workers they are read here, in order; with
    ``settings.workers`` a DataLoader reads ahead in worker processes (the same batches in the same order;
    worker seeds depend only on (seed, stage, epoch), but a dataset drawing random augmentations in its
    workers sees other worker seeds after a mid-epoch resume: exact resume is guaranteed without workers
    or with deterministic samples, as SyntheticHands' are)."""
    samples = _StageSamples(dataset, settings, stage)
    if not settings.workers:
        for indices in batches:
            yield collate([samples[int(i)] for i in indices])
        return
    generator = torch.Generator().manual_seed((seed[0] * 1_000_003 + seed[1]) * 10_007 + seed[2])
    loader = DataLoader(samples, batch_sampler=[[int(i) for i in b] for b in batches], collate_fn=collate,
                        num_workers=settings.workers, generator=generator)
    yield from loader


def _with_cluster(sample: dict, settings: Settings, stage: Stage) -> dict:
    if not stage.needs_clusters:
        return sample
    if settings.cluster_centres is None:
        raise ValueError(f"stage {stage.name!r} trains the soft classifier on K-means clusters: pass cluster centres")
    from handops_models.data.targets import assign_pose_clusters

    return dict(sample, cluster=int(assign_pose_clusters(sample["keypoints2d"][None], settings.cluster_centres)[0]))


def _check_same_last(last: Path) -> None:
    """Every rank must resume from the same ``last.pt`` (a folder on a filesystem every node shares);
    ranks that disagree would run different steps and wait on each other's collectives forever."""
    try:
        view = last.stat().st_size if last.is_file() else None
    except OSError:
        view = None
    views = D.all_gather_objects(view)
    if len(set(views)) > 1:
        seen = "; ".join(f"rank {r}: " + ("missing" if v is None else f"{v} bytes") for r, v in enumerate(views))
        raise RuntimeError(f"--resume: the ranks do not see the same {last} ({seen}); the output folder must be on a "
                           f"filesystem that every node shares")


def _own_rng(resume_state: dict, rank: int, world: int) -> dict:
    """This rank's RNG states from ``last.pt``: its own when the checkpoint holds every rank's for this world
    size, else rank 0's (a single-process checkpoint, or a resume on another number of processes)."""
    ranks = resume_state["extra"].get("rng_ranks")
    if ranks and len(ranks) == world:
        return ranks[rank]
    return resume_state["rng"]


def _validate(network, val_set, settings: Settings, stage: Stage) -> dict:
    """The network's validation metrics with "score" (higher is better) that picks a stage's best checkpoint:
    the stage's ``selection`` metric, else mPCK for the 2-D networks and minus MPVPE (mm) for the mesh networks
    (``validation == "mesh"``)."""
    net = network.module if hasattr(network, "module") else network
    if getattr(net, "validation", "pck") == "mesh":
        metrics = evaluate_mesh(net, val_set, settings, limit=settings.val_limit)
        default = -metrics["mpvpe_mm"]
    else:
        metrics = evaluate_model(network, val_set, settings, limit=settings.val_limit)
        default = metrics["mpck"]
    if stage.selection is None:
        return dict(metrics, score=default)
    if stage.selection not in metrics:
        raise ValueError(f"stage {stage.name} selects its best checkpoint by {stage.selection!r}, which the validation "
                         f"does not report (it has {sorted(k for k in metrics if k != 'predictions')})")
    return dict(metrics, score=metrics[stage.selection])


def _summary(metrics: dict) -> str:
    if "mpvpe_mm" in metrics:
        ranks = f"  rank accuracy {metrics['rank_accuracy']:.3f}" if "rank_accuracy" in metrics else ""
        return f"MPJPE {metrics['mpjpe_mm']:.2f} mm  MPVPE {metrics['mpvpe_mm']:.2f} mm{ranks}"
    return f"mPCK {metrics['mpck']:.4f}  PCK@0.2 {metrics['pck_coarse'].get('0.2', float('nan')):.3f}"


def _save_last(path, network, optimizer, scheduler, stage, position, history, best, rngs=None) -> None:
    extra = {"position": dict(position), "history": history, "best": dict(best)}
    if rngs is not None:
        extra["rng_ranks"] = rngs
    save_checkpoint(path, network, optimizer, scheduler, stage=position["stage"], stage_name=stage.name,
                    epoch=position["epoch"], step=position["step"], extra=extra)


def _append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    x = list(range(1, len(history) + 1))
    ax1.plot(x, [h["train"].get("loss", float("nan")) for h in history], marker="o")
    ax1.set(xlabel="epoch (all stages)", ylabel="training loss", yscale="log", title="loss")
    if "mpvpe_mm" in history[0]["val"]:
        ax2.plot(x, [h["val"]["mpjpe_mm"] for h in history], marker="o", label="MPJPE (mm)")
        ax2.plot(x, [h["val"]["mpvpe_mm"] for h in history], marker="s", label="MPVPE (mm)")
        ax2.set(xlabel="epoch (all stages)", ylabel="validation error (mm)", title="validation")
    else:
        ax2.plot(x, [h["val"]["mpck"] for h in history], marker="o", label="mPCK (0.01-0.06)")
        ax2.plot(x, [h["val"]["pck_coarse"].get("0.2", float("nan")) for h in history], marker="s", label="PCK@0.2")
        ax2.set(xlabel="epoch (all stages)", ylabel="validation", ylim=(0, 1), title="validation")
    ax2.legend()
    for i, h in enumerate(history[1:], 1):
        if h["stage"] != history[i - 1]["stage"]:
            for ax in (ax1, ax2):
                ax.axvline(i + 0.5, color="grey", lw=0.5)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
