"""Scene, first stage: the hand poses (45 axis-angle values per sample, MANO joint order, no global orientation).

``anatomical``: per long finger a curl level (the hand's overall curl, or with probability 0.35 the
finger's own) mapped to flexion angles inside anatomical ranges, abduction (spread, less when flexed) and
a little twist; a thumb with CMC flexion, abduction and opposition and MCP / IP flexion. ``pca``: the
mean pose plus N(0, 1) coefficients on the first eight pose components. Both consume the same numbers.
"""

from __future__ import annotations

import numpy as np

from handops_models.data.synthetic.hand_model import HandModel, hand_model
from handops_models.data.synthetic.stream import Cursor, lerp

POSE_MODES = ("anatomical", "pca")


def anatomical_pose(hand: HandModel, U: Cursor, Z: Cursor) -> np.ndarray:
    """[B, 45] axis-angle hand poses inside anatomical joint ranges (see the package docstring), from the
    uniforms ``U`` and normals ``Z`` (B rows each)."""
    batch = U.values.shape[0]
    deg = np.pi / 180
    pose = np.zeros((batch, 15, 3))
    overall = U.take() ** 0.8
    own = U.take(4) < 0.35
    own_curl = U.take(4)
    curl = np.clip(np.where(own, own_curl, overall[:, None] + 0.12 * Z.take(4)), 0, 1)
    spread = lerp(U.take(), -0.2, 1.0)
    # long fingers in MANO joint order: index (1, 2, 3), middle (4, 5, 6), little (7, 8, 9), ring (10, 11, 12)
    abd_pattern = {1: 14.0, 4: 2.0, 7: -22.0, 10: -9.0}
    for f_i, base in enumerate((1, 4, 10, 7)):  # index, middle, ring, little (curl columns)
        c = curl[:, f_i]
        mcp = np.clip(lerp(c, -10, 85) + 8 * Z.take(), -15, 90)
        pip = np.clip(lerp(c, 0, 100) + 8 * Z.take(), 0, 105)
        dip = np.clip(0.7 * pip + 6 * Z.take(), 0, 80)
        abd = (abd_pattern[base] * spread + 4 * Z.take()) * (1 - 0.7 * c)
        twist = 4 * Z.take()
        for k, angle in enumerate((mcp, pip, dip)):
            j = base + k
            pose[:, j - 1] = (angle * deg)[:, None] * hand.flex[j - 1]
        pose[:, base - 1] += (abd * deg)[:, None] * hand.abd[base - 1] + (twist * deg)[:, None] * hand.bone[base - 1]
    # thumb (13 CMC, 14 MCP, 15 IP)
    t_curl = np.clip(np.where(U.take() < 0.4, U.take(), overall), 0, 1)
    opp = lerp(U.take(), 0.0, 1.0)
    cmc_flex = np.clip(lerp(t_curl, -10, 35) + 6 * Z.take(), -15, 45)
    cmc_side = lerp(U.take(), -15, 25)
    mcp = np.clip(lerp(t_curl, 0, 55) + 8 * Z.take(), -5, 60)
    ip = np.clip(lerp(t_curl, -5, 70) + 8 * Z.take(), -10, 80)
    pose[:, 12] = ((cmc_flex * deg)[:, None] * hand.flex[12] + (cmc_side * deg)[:, None] * hand.thumb_side
                   + (opp * 45 * deg)[:, None] * hand.thumb_opp)
    pose[:, 13] = (mcp * deg)[:, None] * hand.flex[13]
    pose[:, 14] = (ip * deg)[:, None] * hand.flex[14]
    # the PCA sampler's coefficients: drawn in both modes, so that the stream layout is the same
    Z.take(8)
    return pose.reshape(batch, 45)


def pca_pose(hand: HandModel, U: Cursor, Z: Cursor) -> np.ndarray:
    """[B, 45] the mean pose plus N(0, 1) coefficients on the first eight pose components."""
    anatomical_pose(hand, U, Z)  # consumes the same numbers; its last 8 normals are the coefficients
    coef = Z.values[:, Z.pos - 8:Z.pos]
    return hand.mean[None] + coef @ hand.comps[:8]


def sample_hand_poses(pose_mode: str, model_seed: int, is_left: np.ndarray, U: Cursor, Z: Cursor) -> np.ndarray:
    """[B, 45] hand poses of ``pose_mode`` for B hands (``is_left`` [B] bool), each drawn with its own
    handedness' axes from the same numbers (the cursors end after them whatever the hands are)."""
    hand_pose = np.zeros((len(is_left), 45))
    start = U.pos, Z.pos
    sampler = anatomical_pose if pose_mode == "anatomical" else pca_pose
    for left in (False, True):  # the same numbers for either hand
        U.pos, Z.pos = start
        poses = sampler(hand_model(model_seed, not left), U, Z)
        sel = is_left == left
        hand_pose[sel] = poses[sel]
    return hand_pose
