"""Appearance: the random polygons that background shapes and occluders are drawn as, and their pixel boxes."""

from __future__ import annotations

import functools

import numpy as np

from handops_models.data.synthetic.stream import lerp


def polygons(u: np.ndarray, centre: np.ndarray, scale: np.ndarray, bar_prob: float) -> np.ndarray:
    """Corner points [N, 24, 2] of N random shapes from their numbers ``u`` [N, 16]: an ellipse
    (24-gon), a rectangle, a triangle or a blob (a 9-gon with jittered radii), or with probability
    ``bar_prob`` a long thin bar, with half-axes ~ ``scale`` [N] pixels, rotated, around ``centre`` [N, 2]
    (corners of the polygons with fewer sides are repeated)."""
    kind = np.minimum((u[:, 0] * 4).astype(int), 3)
    a, b = scale * lerp(u[:, 1], 0.4, 1.0), scale * lerp(u[:, 2], 0.4, 1.0)
    bar = u[:, 3] < bar_prob
    kind = np.where(bar, 1, kind)
    a = np.where(bar, scale * lerp(u[:, 4], 1.2, 2.5), a)
    b = np.where(bar, scale * lerp(u[:, 5], 0.06, 0.2), b)
    templates, blob_idx = _shape_templates()
    local = templates[kind]  # [N, 24, 2]
    radius = np.where((kind == 3)[:, None], 1 + 0.35 * (2 * u[:, 6:15][:, blob_idx] - 1), 1.0)  # [N, 24]
    lx, ly = local[..., 0] * a[:, None] * radius, local[..., 1] * b[:, None] * radius
    angle = np.pi * u[:, 15]
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return np.stack([centre[:, 0:1] + c * lx - s * ly, centre[:, 1:2] + s * lx + c * ly], -1)


@functools.lru_cache(maxsize=1)
def _shape_templates():
    """Unit shapes [4, 24, 2] (by kind: ellipse, rectangle, triangle, blob) and the blob
    corner of each of the 24 points."""
    k = np.arange(24)
    t = 2 * np.pi * k / 24
    ellipse = np.stack([np.cos(t), np.sin(t)], -1)
    rect = np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)])[k // 6]
    tri = np.array([(1.0, 0.0), (-1.0, 1.0), (-1.0, -1.0)])[k // 8]
    blob_idx = k * 9 // 24
    blob = np.stack([np.cos(2 * np.pi * blob_idx / 9), np.sin(2 * np.pi * blob_idx / 9)], -1)
    return np.stack([ellipse, rect, tri, blob]), blob_idx


def pixel_boxes(pts: np.ndarray, size: int) -> np.ndarray:
    """Integer pixel boxes [..., 4] (x0, y0, x1, y1), x1 / y1 exclusive, covering polygons ``pts``
    [..., P, 2] (pixel coordinates) with a pixel of margin, clipped to the image."""
    lo = np.floor(pts.min(-2)) - 1
    hi = np.ceil(pts.max(-2)) + 2
    return np.clip(np.concatenate([lo, hi], -1), 0, size).astype(np.int64)
