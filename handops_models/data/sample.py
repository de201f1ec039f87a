"""The sample dictionary every dataset in ``handops_models.data`` yields, and a checker for it.

Conventions (the same for the synthetic hands and every real-format loader):

    image        [3, S, S] float32 in [0, 1]   (or [3, H, W] for an uncropped real image)
    keypoints2d  [21, 2]   float32 pixels (x, y) in the OpenPose order of ``handops.hand_tree()``;
                           (0, 0) is the centre of the top-left pixel, x grows to the right (columns),
                           y downwards (rows), so a point projects as (u, v) = (K @ X)[:2] / (K @ X)[2]
    visibility   [21]      bool, the keypoint is neither outside the image nor hidden (by the hand itself
                           or an occluder)
    keypoints3d  [21, 3]   float32 metres, camera coordinates (x right, y down, z forward)
    vertices     [V, 3]    float32 metres, camera coordinates
    pose         [48]      float32 MANO axis-angle, global orientation first (flat: the layer's mean
                           pose is not included, i.e. ``ManoLayer(..., flat_hand_mean=True)`` semantics)
    betas        [10]      float32 MANO shape
    K            [3, 3]    float32 camera intrinsics of ``image``
    subject      int       subject id (splits divide subjects, never samples)
    bbox         [4]       float32 (x0, y0, x1, y1) pixels, the tight box of the visible-or-not keypoints
    is_left      bool      the hand is a left hand

A key a dataset has no data for is absent (a real dataset without MANO fits has no ``pose``).
"""

from __future__ import annotations

import torch

__all__ = ["SAMPLE_KEYS", "check_sample"]

# key -> (shape with None for a free size, dtype); the python-typed keys have shape None.
SAMPLE_KEYS = {
    "image": ((3, None, None), torch.float32),
    "keypoints2d": ((21, 2), torch.float32),
    "visibility": ((21,), torch.bool),
    "keypoints3d": ((21, 3), torch.float32),
    "vertices": ((None, 3), torch.float32),
    "pose": ((48,), torch.float32),
    "betas": ((10,), torch.float32),
    "K": ((3, 3), torch.float32),
    "subject": (None, int),
    "bbox": ((4,), torch.float32),
    "is_left": (None, bool),
}


def check_sample(sample: dict, required: tuple[str, ...] = ("image", "keypoints2d")) -> dict:
    """Raises ValueError naming the key when ``sample`` breaks the conventions above; returns it."""
    if not isinstance(sample, dict):
        raise ValueError(f"a sample must be a dict, got {type(sample).__name__}")
    missing = [k for k in required if k not in sample]
    if missing:
        raise ValueError(f"sample lacks the keys {missing}")
    unknown = sorted(set(sample) - set(SAMPLE_KEYS))
    if unknown:
        raise ValueError(f"sample has keys outside the convention: {unknown}")
    for key, value in sample.items():
        shape, dtype = SAMPLE_KEYS[key]
        if shape is None:
            if not isinstance(value, dtype) or (dtype is int and isinstance(value, bool)):
                raise ValueError(f"sample[{key!r}] must be a python {dtype.__name__}, got {type(value).__name__}")
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"sample[{key!r}] must be a tensor, got {type(value).__name__}")
        if value.dtype != dtype:
            raise ValueError(f"sample[{key!r}] must be {dtype}, got {value.dtype}")
        if value.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, value.shape)):
            wanted = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"sample[{key!r}] must have shape {wanted}, got {list(value.shape)}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"sample[{key!r}] holds NaN or Inf")
    if "image" in sample and (float(sample["image"].min()) < 0 or float(sample["image"].max()) > 1):
        raise ValueError("sample['image'] must lie in [0, 1]")
    return sample
