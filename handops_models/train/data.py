"""Datasets for training and evaluating the 2-D networks: one call per data source and split.

    train, val, test = make_datasets("synthetic", None, input_size=128, train_size=20000)
    test = make_split("freihand", "/data/FreiHAND", input_size=368, split="test")

Every sample is a square hand crop at the network's input size with the keys the loop needs (``image``,
``keypoints2d``, ``visibility``): the real formats' samples go through ``HandCrop(input_size)``, the thesis'
square crop of 2.2 times the hand's keypoint box (Sec. 3.5.1 / 4.5.1 / 5.4), on which PCK normalised by the
crop side is the thesis' Eq. 5.5; ``SyntheticHands`` renders its crops at ``input_size`` as they are
generated: the hand's box spans 0.45-0.85 of the side (its ``fill``; 1 / 2.2 = 0.45) and 10% of the hands are
pushed partly outside (``truncation``), so a threshold that is a fraction of the crop side is a somewhat
tighter one relative to the hand than on the 2.2x crops.

Splits (train / val / test). Where a format has no validation split, one is carved from its training split
with a fixed seed (``SPLIT_SEED``, not the training seed, so runs with different seeds share their splits):

* ``synthetic``: ``SyntheticHands(split=...)``; the splits divide the ``num_subjects`` subjects (80/10/10),
  test subjects are never seen in training.
* ``panoptic`` (``PanopticHands``): ``hand_labels`` has ``manual_train`` / ``manual_test``: test is
  ``manual_test``, val is 10% of ``manual_train``'s images (Panoptic names no subjects, so the cut is by
  image), train the rest. The layouts without splits (``hand_labels_synth``, ``hand143_panopticdb``, a plain
  folder of pairs) are cut 80/10/10 by image.
* ``freihand`` (``FreiHAND``): test is the ``evaluation`` set (needs the release-v2 ``evaluation_xyz.json``);
  val is 10% of the training *annotations* with all of their image versions (FreiHAND shows each annotation
  in 4 versions; they never straddle train and val), train the rest. FreiHAND names no subjects.
* ``dexycb`` (``DexYCB``): the toolkit's ``setup`` (default ``"s0"``) with its own train / val / test;
  frames without a hand annotation are left out (``drop_unannotated``).
* ``humbi`` (``HUMBIHands``): no official split; the subjects found are split 80/10/10 by
  ``split_subjects`` (seeded; at least 3 subjects), so val and test subjects are unseen in training.
* ``mhp`` (``MHPHands``): the thesis' protocol (default ``"ch5"``: 70/15/15 by image, seeded; see the
  ``MHPHands`` docstring for why by image and what ``unit="frame"`` changes).

Sizes: for ``synthetic`` the number of images rendered per split (defaults ``SYNTHETIC_SIZES``); for the real
formats a seeded random subset of that many images of the split (None: all of it; a larger number: all).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["DATA_SOURCES", "REAL_SOURCES", "SPLITS", "SPLIT_SEED", "SYNTHETIC_SIZES", "Cropped", "make_split",
           "make_datasets", "subset", "split_keypoints", "holdout_split"]

REAL_SOURCES = ("panoptic", "freihand", "dexycb", "humbi", "mhp")
DATA_SOURCES = ("synthetic",) + REAL_SOURCES
SPLITS = ("train", "val", "test")
SPLIT_SEED = 0
SYNTHETIC_SIZES = {"train": 10000, "val": 500, "test": 2000}
VAL_FRACTION = 0.1  # of a training split carved into train / val


class Cropped(Dataset):
    """``transform(dataset[i])`` for each i (the real formats' samples through ``HandCrop``)."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.transform(self.dataset[index])


def _permutation(n: int, seed: int, salt: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(salt)]).permutation(n)


def subset(dataset: Dataset, size: int | None, seed: int = SPLIT_SEED) -> Dataset:
    """A seeded random ``size`` images of ``dataset`` in index order (all of it for None or a larger size)."""
    if size is None or size >= len(dataset):
        return dataset
    if size < 1:
        raise ValueError(f"a split size must be a positive number of images, got {size}")
    keep = np.sort(_permutation(len(dataset), seed, 1)[:size])
    return Subset(dataset, keep.tolist())


def holdout_split(groups, fraction: float, seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Indices (kept, held out) of items labelled by ``groups`` [N]: a seeded ``fraction`` of the distinct
    groups (at least one, and at least one left) is held out with every item of theirs."""
    groups = np.asarray(groups)
    distinct = np.unique(groups)
    if len(distinct) < 2:
        raise ValueError(f"cannot hold out a part of {len(distinct)} group(s): need at least 2")
    n_out = min(len(distinct) - 1, max(1, int(round(fraction * len(distinct)))))
    out_groups = distinct[_permutation(len(distinct), seed, 2)[:n_out]]
    held = np.isin(groups, out_groups)
    return np.flatnonzero(~held).tolist(), np.flatnonzero(held).tolist()


def _three_way(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, list[int]]:
    """80/10/10 of ``n`` items by a seeded permutation (every part non-empty for n >= 3)."""
    if n < 3:
        raise ValueError(f"cannot cut {n} images into train / val / test: need at least 3")
    perm = _permutation(n, seed, 3)
    n_val = max(1, int(round(n * fractions[1])))
    n_test = max(1, int(round(n * fractions[2])))
    parts = {"train": perm[:n - n_val - n_test], "val": perm[n - n_val - n_test:n - n_test], "test": perm[n - n_test:]}
    return {k: np.sort(v).tolist() for k, v in parts.items()}


def _check(name: str, root, split: str) -> Path | None:
    if name not in DATA_SOURCES:
        raise ValueError(f"unknown data {name!r}; expected one of {list(DATA_SOURCES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if name == "synthetic":
        return None
    if root is None:
        raise ValueError(f"--data {name} reads a dataset you downloaded: pass its folder as --root DIR")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: {name} folder not found")
    return root


SIZE_CUE_HELP = ("synthetic: a hand's size shows in the picture (a camera at a fixed distance; default: every hand "
                 "fills a random share of the crop)")  # the --size-cue help of every command that reads data


def make_split(name: str, root, input_size: int, split: str, size: int | None = None, *, cache_dir=None,
               num_subjects: int = 50, occlusion: float = 0.3, dexycb_setup: str = "s0", mhp_protocol: str = "ch5",
               size_cue: bool = False, progress: bool = False) -> Dataset:
    """One split (``"train"``, ``"val"`` or ``"test"``) of ``name`` as ``input_size`` crops (module docstring).

    ``cache_dir``, ``num_subjects``, ``occlusion``, ``size_cue``: ``SyntheticHands``' (synthetic only); ``dexycb_setup``:
    DexYCB's setup; ``mhp_protocol``: MHP's thesis protocol.
    """
    root = _check(name, root, split)
    if name == "synthetic":
        from handops_models.data.synthetic import SyntheticHands

        n = SYNTHETIC_SIZES[split] if size is None else int(size)
        return SyntheticHands(n, image_size=input_size, num_subjects=num_subjects, split=split, occlusion=occlusion,
                              cache_dir=cache_dir, size_cue=size_cue, progress=progress)
    if cache_dir is not None:
        raise ValueError("--cache-dir caches rendered synthetic hands; it does not apply to real data")
    if size_cue:
        raise ValueError("--size-cue is SyntheticHands' camera option; it does not apply to real data")
    from handops_models.data.transforms import HandCrop

    crop = HandCrop(int(input_size))
    if name == "mhp":
        from handops_models.data.formats import MHPHands

        return subset(MHPHands(root, protocol=mhp_protocol, split=split, transform=crop), size)
    base = _real_split(name, root, split, dexycb_setup)
    return subset(Cropped(base, crop), size)


def _real_split(name: str, root: Path, split: str, dexycb_setup: str) -> Dataset:
    if name == "panoptic":
        from handops_models.data.formats import PanopticHands

        if _is_hand_labels(root):
            if split == "test":
                return PanopticHands(root, split="test")
            train = PanopticHands(root, split="train")
            kept, held = holdout_split(np.arange(len(train)), VAL_FRACTION)
            return Subset(train, kept if split == "train" else held)
        everything = PanopticHands(root)
        return Subset(everything, _three_way(len(everything), SPLIT_SEED)[split])
    if name == "freihand":
        from handops_models.data.formats import FreiHAND

        if split == "test":
            test = FreiHAND(root, "evaluation")
            if test.xyz is None:
                raise FileNotFoundError(f"{root}/evaluation_xyz.json: FreiHAND's evaluation keypoints (release v2) are "
                                        f"needed for the test split")
            return test
        train = FreiHAND(root, "training")
        annotations = [train.annotation_index(i) for i in range(len(train))]
        kept, held = holdout_split(annotations, VAL_FRACTION)
        return Subset(train, kept if split == "train" else held)
    if name == "dexycb":
        from handops_models.data.formats import DexYCB

        return DexYCB(root, setup=dexycb_setup, split=split, drop_unannotated=True)
    if name == "humbi":
        from handops_models.data.formats import HUMBIHands
        from handops_models.data.synthetic import split_subjects

        subjects = sorted(int(m.group(1)) for p in root.iterdir()
                          if p.is_dir() and (m := re.fullmatch(r"subject_(\d+)", p.name)))
        if len(subjects) < 3:
            raise ValueError(f"{root}: HUMBI has no official split and is split by subject here: need at least 3 "
                             f"subject_<n> folders, found {len(subjects)}")
        chosen = split_subjects(len(subjects), seed=SPLIT_SEED)[split]
        return HUMBIHands(root, subjects=[subjects[i] for i in chosen])
    raise AssertionError(name)  # pragma: no cover


def _is_hand_labels(root: Path) -> bool:
    return (root / "manual_train").is_dir() or (root / "manual_test").is_dir()


def make_datasets(name: str, root, input_size: int, train_size: int | None = None, val_size: int | None = None,
                  test_size: int | None = None, **options) -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, test) of ``name`` at ``input_size`` (:func:`make_split` for each; options pass through)."""
    sizes = {"train": train_size, "val": val_size, "test": test_size}
    return tuple(make_split(name, root, input_size, split, sizes[split], **options) for split in SPLITS)


def _keypoints_only(samples: list[dict]) -> torch.Tensor:
    return torch.stack([s["keypoints2d"] for s in samples])


def split_keypoints(dataset: Dataset, batch_size: int = 64, workers: int = 0) -> torch.Tensor:
    """Every sample's ``keypoints2d`` [N, 21, 2] (one pass over the split; R-MGMN's K-means input)."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=_keypoints_only, num_workers=workers)
    parts = [batch for batch in loader]
    if not parts:
        raise ValueError("the split holds no images")
    return torch.cat(parts)
