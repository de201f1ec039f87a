"""Scene, third stage: the camera, a pinhole with a random field of view (30..60 deg) and principal point
(jittered by up to 2 % of the image) at the origin; the hand is moved in front of it.

The distance is chosen so that the hand's box spans a fraction ``fill`` (lo, hi) of the image side
(measured orthographically on the mesh; the perspective makes it a little larger), far enough that the
hand's 3-D size spans at most 1.4 image sides (foreshortened views) and never nearer than 12 cm to the
closest vertex. The hand centre lands near the image centre, or (probability ``truncation``) pushed
towards a border so that part of it leaves the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from handops.geometry import project
from handops_models.data.synthetic.stream import Cursor, lerp


@dataclass
class CameraView:
    """The posed hands in camera coordinates and their camera (B samples, float32).

    vertices [B, V, 3] and keypoints3d [B, 21, 3] in metres; K [B, 3, 3]; keypoints2d [B, 21, 2] pixels
    (projected in float64); bbox [B, 4] (x0, y0, x1, y1) the keypoints' box in pixels.
    """

    vertices: np.ndarray
    keypoints3d: np.ndarray
    K: np.ndarray
    keypoints2d: np.ndarray
    bbox: np.ndarray


def place_camera(U: Cursor, verts: np.ndarray, joints: np.ndarray, image_size: int, fill: tuple[float, float],
                 truncation: float, size_ratio: np.ndarray | None = None) -> CameraView:
    """Draws a camera for each of the B hands ``verts`` [B, V, 3] / ``joints`` [B, 21, 3] (float64, model
    frame) and moves the hands in front of it (see the module docstring). ``fill`` (lo, hi): the range of the hand's box side as a fraction of S;
    ``truncation``: the probability of pushing the hand towards a border; ``size_ratio`` [B] (None: all 1):
    each hand's size over the mean hand's, multiplying its drawn fill, so that a bigger hand looks bigger (as
    from a camera at a fixed distance) instead of every hand filling the same range whatever its size."""
    S, batch = image_size, len(verts)
    fov = np.radians(lerp(U.take(), 30.0, 60.0))
    focal = (S / 2.0) / np.tan(fov / 2.0)
    frac = lerp(U.take(), *fill)
    if size_ratio is not None:
        frac = frac * size_ratio
    pp = (S - 1) / 2.0 + 0.02 * S * (2 * U.take(2) - 1)
    jitter = 0.08 * S * (2 * U.take(2) - 1)
    trunc = U.take() < truncation
    t_dir = 2 * np.pi * U.take()
    t_amount = lerp(U.take(), 0.3, 0.5) * S
    coords = np.ascontiguousarray(verts.transpose(0, 2, 1))  # [B, 3, V]: fast (exact) reductions
    v_lo, v_hi = coords.min(2), coords.max(2)
    lo_xy, hi_xy = v_lo[:, :2], v_hi[:, :2]
    centre = np.concatenate([(lo_xy + hi_xy) / 2, verts[:, :, 2:].mean(1)], 1)
    extent = (hi_xy - lo_xy).max(1)
    depth = focal * extent / (frac * S)
    # foreshortened views (fingers towards the camera) would bring the camera very close: keep the
    # hand's 3-D size within 1.4 image sides
    size3 = (v_hi - v_lo).max(1)
    depth = np.maximum(depth, focal * size3 / (1.4 * S))
    depth = np.maximum(depth, 0.12 + (centre[:, 2] - v_lo[:, 2]))
    target = pp + jitter + trunc[:, None] * t_amount[:, None] * np.stack([np.cos(t_dir), np.sin(t_dir)], 1)
    transl = np.concatenate([(target - pp) * depth[:, None] / focal[:, None], depth[:, None]], 1) - centre
    verts32 = (verts + transl[:, None]).astype(np.float32)
    kp3d = (joints + transl[:, None]).astype(np.float32)
    K = np.zeros((batch, 3, 3), dtype=np.float32)
    K[:, 0, 0] = K[:, 1, 1] = focal
    K[:, :2, 2] = pp
    K[:, 2, 2] = 1.0
    # the stored (float32) keypoints, projected in float64
    kp2d = project(torch.from_numpy(kp3d.astype(np.float64)), torch.from_numpy(K.astype(np.float64)))
    kp2d = kp2d.numpy().astype(np.float32)
    bbox = np.concatenate([kp2d.min(1), kp2d.max(1)], 1).astype(np.float32)
    return CameraView(vertices=verts32, keypoints3d=kp3d, K=K, keypoints2d=kp2d, bbox=bbox)
