"""Test helpers for MANO: random models in the MANO format (no real MANO data is needed)."""

from __future__ import annotations

import numpy as np
import torch

from handops.mano.model import MANO_PARENTS, OFFICIAL_FINGERTIP_IDS, ManoModel


def random_mano_model(seed: int, num_vertices: int = 778, num_faces: int | None = None, num_betas: int = 10,
                      is_right: bool = True) -> ManoModel:
    """A valid ManoModel with plausible random arrays, reproducible from ``seed``.

    v_template ~ 10 cm, blend shapes ~ 1 mm, skinning weights over 1-3 joints per vertex (rows sum
    to 1), J_regressor over a few vertices per joint (rows sum to 1, mostly zeros like the real one),
    parents = MANO_PARENTS, hands_components orthonormal, fingertips the official ids when
    ``num_vertices`` is 778 and distinct random vertices otherwise.
    """
    if num_vertices < 5:
        raise ValueError(f"random_mano_model needs num_vertices >= 5 (five fingertips), got {num_vertices}")
    rng = np.random.default_rng(seed)
    v = num_vertices
    f = 2 * v if num_faces is None else num_faces

    v_template = rng.normal(scale=0.05, size=(v, 3))
    shapedirs = rng.normal(scale=1e-3, size=(v, 3, num_betas))
    posedirs = rng.normal(scale=1e-3, size=(v, 3, 135))

    weights = np.zeros((v, 16))
    for i in range(v):
        joints = rng.choice(16, size=rng.integers(1, 4), replace=False)
        weights[i, joints] = rng.random(len(joints)) + 0.1
    weights /= weights.sum(axis=1, keepdims=True)

    j_regressor = np.zeros((16, v))
    for j in range(16):
        verts = rng.choice(v, size=min(v, int(rng.integers(3, 9))), replace=False)
        j_regressor[j, verts] = rng.random(len(verts)) + 0.1
    j_regressor /= j_regressor.sum(axis=1, keepdims=True)

    faces = np.stack([rng.choice(v, size=3, replace=False) for _ in range(f)]) if f else np.zeros((0, 3), np.int64)
    q, r = np.linalg.qr(rng.normal(size=(45, 45)))
    hands_components = q * np.sign(np.diag(r))  # rows orthonormal
    hands_mean = rng.normal(scale=0.1, size=45)
    tips = OFFICIAL_FINGERTIP_IDS if v == 778 else rng.choice(v, size=5, replace=False)

    def t(a):
        return torch.tensor(a, dtype=torch.float64)

    return ManoModel(
        v_template=t(v_template),
        shapedirs=t(shapedirs),
        posedirs=t(posedirs),
        J_regressor=t(j_regressor),
        weights=t(weights),
        faces=torch.tensor(faces, dtype=torch.int64),
        parents=torch.tensor(MANO_PARENTS, dtype=torch.int64),
        hands_components=t(hands_components),
        hands_mean=t(hands_mean),
        fingertip_ids=torch.tensor(np.asarray(tips), dtype=torch.int64),
        is_right=is_right,
    )
