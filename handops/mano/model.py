"""The MANO hand model as a container of tensors (thesis Sec. 2.5).

A model holds, for V vertices, F faces and MANO's 16 joints (wrist, then index 1-3, middle 1-3,
little 1-3, ring 1-3, thumb 1-3, each from base to tip, as in the official files):

    v_template        [V, 3]       rest-pose mesh in metres
    shapedirs         [V, 3, S]    shape blend shapes (S = 10)
    posedirs          [V, 3, P]    pose-corrective blend shapes (P = 135 = 15 joints x 9)
    J_regressor       [16, V]      joint regressor (dense)
    weights           [V, 16]      linear-blend-skinning weights (rows sum to 1)
    faces             [F, 3]       int64 triangle indices
    parents           [16]         int64 kinematic tree, parents[0] = -1
    hands_components  [45, 45]     pose PCA basis (rows are components, axis-angle of the 15 joints)
    hands_mean        [45]         mean pose (axis-angle)
    fingertip_ids     [5]          int64 vertex ids of the thumb, index, middle, ring and little tips
    is_right          bool

All float tensors are float64 on the CPU; layers cast them to the dtype and device they run on.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["ManoModel", "MANO_PARENTS", "OFFICIAL_FINGERTIP_IDS", "OPENPOSE_FROM_MANO"]

# MANO's kinematic tree (kintree_table[0] of the official files, root first).
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# Fingertip vertices of the official MANO meshes (778 vertices): thumb, index, middle, ring, little.
OFFICIAL_FINGERTIP_IDS = (744, 320, 443, 554, 671)
# The 21 OpenPose keypoints (``handops.hand_tree()``'s order) as entries of [MANO's 16 joints (0 wrist, 1-3 index,
# 4-6 middle, 7-9 little, 10-12 ring, 13-15 thumb), the five fingertip vertices (16 thumb, 17 index, 18 middle,
# 19 ring, 20 little)]: OpenPose keypoint k is entry OPENPOSE_FROM_MANO[k].
OPENPOSE_FROM_MANO = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)


@dataclass(frozen=True)
class ManoModel:
    v_template: torch.Tensor
    shapedirs: torch.Tensor
    posedirs: torch.Tensor
    J_regressor: torch.Tensor
    weights: torch.Tensor
    faces: torch.Tensor
    parents: torch.Tensor
    hands_components: torch.Tensor
    hands_mean: torch.Tensor
    fingertip_ids: torch.Tensor
    is_right: bool = True

    def __post_init__(self):
        v = self.v_template.shape[0] if self.v_template.dim() == 2 else -1
        expected = {
            "v_template": (v, 3),
            "shapedirs": (v, 3, None),
            "posedirs": (v, 3, 135),
            "J_regressor": (16, v),
            "weights": (v, 16),
            "faces": (None, 3),
            "parents": (16,),
            "hands_components": (45, 45),
            "hands_mean": (45,),
            "fingertip_ids": (5,),
        }
        for name, shape in expected.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"ManoModel.{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
                wanted = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
                raise ValueError(f"ManoModel.{name} must have shape {wanted} (V = {v}), got {list(t.shape)}")
        if v < 1:
            raise ValueError(f"ManoModel.v_template must be [V, 3] with V >= 1, got {list(self.v_template.shape)}")
        for name in expected:
            t = getattr(self, name)
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"ManoModel.{name} must be finite, but it holds NaN or Inf entries")
        # Linear blend skinning is a convex combination of the bone transforms: rows off 1 scale the mesh.
        row_error = (self.weights.sum(1) - 1).abs()
        if float(row_error.max()) > max(1e-4, 16 * torch.finfo(self.weights.dtype).eps):
            row = int(row_error.argmax())
            raise ValueError(f"ManoModel.weights rows (skinning weights of a vertex) must sum to 1, "
                             f"but row {row} sums to {float(self.weights[row].sum()):.6g}")
        if self.faces.numel() and (int(self.faces.min()) < 0 or int(self.faces.max()) >= v):
            raise ValueError(f"ManoModel.faces must index vertices in [0, {v}), got range [{int(self.faces.min())}, {int(self.faces.max())}]")
        if self.fingertip_ids.numel() and (int(self.fingertip_ids.min()) < 0 or int(self.fingertip_ids.max()) >= v):
            raise ValueError(f"ManoModel.fingertip_ids must index vertices in [0, {v})")

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[-1]

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> ManoModel:
        """A copy with float tensors in ``dtype`` and every tensor on ``device``."""
        values = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if isinstance(t, torch.Tensor):
                t = t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else t.dtype)
            values[f.name] = t
        return ManoModel(**values)
