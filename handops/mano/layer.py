"""``handops.ManoLayer``: MANO as a torch module, with the pose representations a network produces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from handops._reference.mano import OPENPOSE_FROM_MANO, axis_angle_to_matrix, rotation_6d_to_matrix
from handops.mano.model import ManoModel
from handops.ops.mano_skinning import mano_skinning

__all__ = ["ManoLayer", "ManoOutput"]


@dataclass
class ManoOutput:
    """vertices [B, V, 3] (None on the joints-only path), joints [B, 21, 3] in the OpenPose order of
    ``handops.hand_tree()`` (fingertips from ``model.fingertip_ids``), mano_joints [B, 16, 3] in
    MANO's order (smplx's ``joints``), transforms [B, 16, 4, 4]; all in metres."""

    vertices: torch.Tensor | None
    joints: torch.Tensor
    mano_joints: torch.Tensor
    transforms: torch.Tensor


class ManoLayer(torch.nn.Module):
    """MANO (thesis Sec. 2.5) for a batch of hands.

    Args:
        model_or_path: a :class:`ManoModel` or a MANO file path (read with ``handops.mano.load``).
        use_pca: a 2-D ``hand_pose`` holds PCA coefficients (else 45 axis-angle values).
        num_pca_comps: how many PCA components a 2-D ``hand_pose`` holds when ``use_pca``.
        flat_hand_mean: False adds the model's mean pose to axis-angle and PCA poses (as smplx does).

    ``forward(betas [B, S], global_orient, hand_pose, transl=None, with_vertices=True)``; with
    ``with_vertices=False`` only the joint chain and the five fingertip vertices are computed.
    ``global_orient`` is [B, 3] axis-angle, [B, 3, 3] a matrix or [B, 6] the 6-D representation;
    ``hand_pose`` is [B, num_pca_comps] (PCA) or [B, 45] (axis-angle) when 2-D, [B, 15, 3] axis-angle,
    [B, 15, 6] 6-D or [B, 15, 3, 3] matrices. The mean pose is added only to axis-angle and PCA poses.
    """

    def __init__(self, model_or_path: ManoModel | str | Path, use_pca: bool = True, num_pca_comps: int = 6,
                 flat_hand_mean: bool = False):
        super().__init__()
        if isinstance(model_or_path, (str, Path)):
            from handops.mano import io

            model_or_path = io.load(model_or_path)
        if not isinstance(model_or_path, ManoModel):
            raise TypeError(f"ManoLayer needs a ManoModel or a path, got {type(model_or_path).__name__}")
        if use_pca and not 1 <= num_pca_comps <= 45:
            raise ValueError(f"num_pca_comps must be in [1, 45], got {num_pca_comps}")
        self.model = model_or_path
        self.joints_model = _joints_only_model(model_or_path)
        self.use_pca, self.num_pca_comps, self.flat_hand_mean = use_pca, num_pca_comps, flat_hand_mean
        m = model_or_path
        # Buffers follow .to(device/dtype) of the module; the model itself stays float64 on the CPU.
        self.register_buffer("hands_components", m.hands_components[:num_pca_comps].clone(), persistent=False)
        self.register_buffer("pose_mean", torch.zeros(45, dtype=torch.float64) if flat_hand_mean else m.hands_mean.clone(),
                             persistent=False)

    def _hand_rotations(self, hand_pose: torch.Tensor) -> torch.Tensor:
        batch = hand_pose.shape[0]
        if hand_pose.dim() == 2:
            if self.use_pca:
                if hand_pose.shape[1] != self.num_pca_comps:
                    raise ValueError(f"hand_pose must be [B, {self.num_pca_comps}] PCA coefficients, got {list(hand_pose.shape)}")
                hand_pose = hand_pose @ self.hands_components.to(hand_pose)
            elif hand_pose.shape[1] != 45:
                raise ValueError(f"hand_pose must be [B, 45] axis-angle (use_pca=False), got {list(hand_pose.shape)}")
            return axis_angle_to_matrix((hand_pose + self.pose_mean.to(hand_pose)).view(batch, 15, 3))
        if hand_pose.dim() == 3 and hand_pose.shape[1:] == (15, 3):
            return axis_angle_to_matrix(hand_pose + self.pose_mean.to(hand_pose).view(15, 3))
        if hand_pose.dim() == 3 and hand_pose.shape[1:] == (15, 6):
            return rotation_6d_to_matrix(hand_pose)
        if hand_pose.dim() == 4 and hand_pose.shape[1:] == (15, 3, 3):
            return hand_pose
        raise ValueError("hand_pose must be [B, num_pca_comps] / [B, 45], [B, 15, 3], [B, 15, 6] or [B, 15, 3, 3], "
                         f"got {list(hand_pose.shape)}")

    @staticmethod
    def _root_rotation(global_orient: torch.Tensor) -> torch.Tensor:
        if global_orient.dim() == 2 and global_orient.shape[1] == 3:
            return axis_angle_to_matrix(global_orient)
        if global_orient.dim() == 2 and global_orient.shape[1] == 6:
            return rotation_6d_to_matrix(global_orient)
        if global_orient.dim() == 3 and global_orient.shape[1:] == (3, 3):
            return global_orient
        raise ValueError(f"global_orient must be [B, 3], [B, 6] or [B, 3, 3], got {list(global_orient.shape)}")

    def forward(self, betas: torch.Tensor, global_orient: torch.Tensor, hand_pose: torch.Tensor,
                transl: torch.Tensor | None = None, with_vertices: bool = True) -> ManoOutput:
        batch = betas.shape[0]
        if betas.dim() != 2 or betas.shape[1] > self.model.num_betas:
            raise ValueError(f"betas must be [B, S] with S <= {self.model.num_betas}, got {list(betas.shape)}")
        for name, t in (("global_orient", global_orient), ("hand_pose", hand_pose), ("transl", transl)):
            if t is not None and t.shape[0] != batch:
                raise ValueError(f"{name} has batch size {t.shape[0]} but betas has {batch}")
        if transl is not None and transl.shape != (batch, 3):
            raise ValueError(f"transl must be [B, 3], got {list(transl.shape)}")
        rotations = torch.cat([self._root_rotation(global_orient)[:, None], self._hand_rotations(hand_pose)], 1)
        # The fused op (handops::mano_skinning) leaves the global translation out: it is a plain add.
        model = self.model if with_vertices else self.joints_model
        vertices, mano_joints, transforms = mano_skinning(model, betas, rotations.to(betas))
        if transl is not None:
            shift = transl.to(betas)[:, None]
            vertices, mano_joints = vertices + shift, mano_joints + shift
            # transl into the translation column of every A_k: [B, 1, 3, 1] padded to [B, 1, 4, 4].
            transforms = transforms + torch.nn.functional.pad(shift[..., None], (3, 0, 0, 1))
        tips = vertices[:, model.fingertip_ids.to(vertices.device)]
        joints = torch.cat([mano_joints, tips], 1)[:, list(OPENPOSE_FROM_MANO)]
        return ManoOutput(vertices if with_vertices else None, joints, mano_joints, transforms)


def _joints_only_model(model: ManoModel) -> ManoModel:
    """The same joints and fingertips from 21 vertices instead of V: the 16 rest joints as vertices
    (J = J_regressor v_shaped is linear in the shape, so J_template + J_shapedirs betas is exact and the
    regressor becomes [I | 0]) followed by the five fingertip vertices; no other vertex is skinned."""
    tips = model.fingertip_ids
    j_template = model.J_regressor @ model.v_template
    j_shapedirs = torch.einsum("jv,vks->jks", model.J_regressor, model.shapedirs)
    regressor = torch.cat([torch.eye(16, dtype=model.J_regressor.dtype), model.J_regressor.new_zeros(16, 5)], 1)
    weights = torch.cat([torch.eye(16, dtype=model.weights.dtype), model.weights[tips]], 0)
    return ManoModel(
        v_template=torch.cat([j_template, model.v_template[tips]]),
        shapedirs=torch.cat([j_shapedirs, model.shapedirs[tips]]),
        posedirs=torch.cat([model.posedirs.new_zeros(16, 3, model.posedirs.shape[-1]), model.posedirs[tips]]),
        J_regressor=regressor, weights=weights, faces=model.faces.new_zeros(0, 3), parents=model.parents,
        hands_components=model.hands_components, hands_mean=model.hands_mean,
        fingertip_ids=torch.arange(16, 21), is_right=model.is_right,
    )
