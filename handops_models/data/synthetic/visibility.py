"""The keypoints' visibility: a keypoint is visible when its pixel (rounded position) is inside the image,
not covered by an occluder (coverage > 0.5) and not hidden by the hand itself.

Self-occlusion is a depth test against the z-buffer at the keypoint's pixel centre: visible when the
keypoint's depth <= z-buffer depth + ``margin``, with ``margin = self_occlusion_scale * r +
self_occlusion_tolerance`` and ``r`` the keypoint's local tube radius (``HandModel.radii``). Joints lie
inside the fingers, about ``r`` behind the surface seen over them; a finger or palm in front of the joint
puts the surface much further ahead. Near a silhouette or a depth edge the answer is the one of that pixel.
"""

from __future__ import annotations

import numpy as np

from handops_models.data.synthetic.shading import HandPixels


def keypoint_visibility(kp2d: np.ndarray, kp3d: np.ndarray, hands: HandPixels, occluder_alpha: np.ndarray,
                        margin: np.ndarray) -> np.ndarray:
    """[B, 21] bool visibility of the keypoints ``kp2d`` [B, 21, 2] (pixels) / ``kp3d`` [B, 21, 3] (camera
    frame) in pictures with the hand pixels ``hands`` and occluder coverage ``occluder_alpha`` [B, S, S]
    uint8; ``margin`` [B, 21] metres of the self-occlusion depth test."""
    batch, S = occluder_alpha.shape[:2]
    px = np.floor(kp2d + 0.5).astype(np.int64)
    inside = (px >= 0).all(-1) & (px < S).all(-1) & (kp3d[..., 2] > 0)
    cx, cy = px[..., 0].clip(0, S - 1), px[..., 1].clip(0, S - 1)
    b_ix = np.arange(batch)[:, None]
    zbuf = hands.depth_at((b_ix * S + cy) * S + cx)
    not_self = kp3d[..., 2] <= zbuf + margin
    not_occ = occluder_alpha[b_ix, cy, cx] <= 127
    return inside & not_self & not_occ
