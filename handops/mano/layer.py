"""``handops.ManoLayer``: MANO as a torch module, with the pose representations a network produces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from handops.geometry import axis_angle_to_matrix, rotation_6d_to_matrix
from handops.mano.model import OPENPOSE_FROM_MANO, ManoModel
from handops.ops.mano_skinning import SkinningModel, mano_skinning

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

    The 6-D representation is the first two *columns* of the rotation matrix R (Zhou et al. 2019):
    ``torch.cat([R[..., :, 0], R[..., :, 1]], -1)`` (``handops.geometry.matrix_to_rotation_6d``), turned back
    into R by Gram-Schmidt (``handops.geometry.rotation_6d_to_matrix``). pytorch3d's ``matrix_to_rotation_6d``
    stores the first two *rows* instead (``R[..., :2, :].flatten(-2)``); read as columns that is a different
    rotation (centimetres of vertex error, silently), so convert such poses with pytorch3d's
    ``rotation_6d_to_matrix`` and pass the matrices.
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
        # The op's tensors for the full mesh, and for the joints-only path the five fingertip vertices alone
        # (the joints come from the full model's regressor either way, so both paths give the same joints).
        self.skinning = SkinningModel.from_mano(model_or_path)
        self.fingertips = SkinningModel.from_mano(model_or_path, model_or_path.fingertip_ids)
        # OpenPose keypoint k from [16 joints, vertices]: a joint id, or 16 + the fingertip's vertex id.
        tips = [int(v) for v in model_or_path.fingertip_ids]
        self.keypoint_ids = tuple(i if i < 16 else 16 + tips[i - 16] for i in OPENPOSE_FROM_MANO)
        self.fingertip_keypoint_ids = tuple(OPENPOSE_FROM_MANO)  # there fingertip t (16-20) is vertex t - 16
        self.use_pca, self.num_pca_comps, self.flat_hand_mean = use_pca, num_pca_comps, flat_hand_mean
        m = model_or_path
        # Buffers follow .to(device/dtype) of the module; the model itself stays float64 on the CPU.
        self.register_buffer("hands_components", m.hands_components[:num_pca_comps].clone(), persistent=False)
        self.register_buffer("pose_mean", torch.zeros(45, dtype=torch.float64) if flat_hand_mean else m.hands_mean.clone(),
                             persistent=False)

    def _hand_pose(self, hand_pose: torch.Tensor) -> torch.Tensor:
        """[B, 15, 3] axis-angle or [B, 15, 3, 3] matrices, the mean pose added where it applies."""
        batch = hand_pose.shape[0]
        if hand_pose.dim() == 2:
            if self.use_pca:
                if hand_pose.shape[1] != self.num_pca_comps:
                    raise ValueError(f"hand_pose must be [B, {self.num_pca_comps}] PCA coefficients, got {list(hand_pose.shape)}")
                hand_pose = hand_pose @ self.hands_components.to(hand_pose)
            elif hand_pose.shape[1] != 45:
                raise ValueError(f"hand_pose must be [B, 45] axis-angle (use_pca=False), got {list(hand_pose.shape)}")
            hand_pose = hand_pose.view(batch, 15, 3)
        elif hand_pose.dim() == 3 and hand_pose.shape[1:] == (15, 6):
            return rotation_6d_to_matrix(hand_pose)
        elif hand_pose.dim() == 4 and hand_pose.shape[1:] == (15, 3, 3):
            return hand_pose
        elif not (hand_pose.dim() == 3 and hand_pose.shape[1:] == (15, 3)):
            raise ValueError("hand_pose must be [B, num_pca_comps] / [B, 45], [B, 15, 3], [B, 15, 6] or [B, 15, 3, 3], "
                             f"got {list(hand_pose.shape)}")
        return hand_pose if self.flat_hand_mean else hand_pose + self.pose_mean.to(hand_pose).view(15, 3)

    @staticmethod
    def _root_pose(global_orient: torch.Tensor) -> torch.Tensor:
        """[B, 3] axis-angle or [B, 3, 3] a matrix."""
        if global_orient.dim() == 2 and global_orient.shape[1] == 3:
            return global_orient
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
        root, hand = self._root_pose(global_orient).to(betas), self._hand_pose(hand_pose).to(betas)
        if root.dim() == 2 and hand.dim() == 4:  # axis-angle root, matrix fingers: all as matrices
            root = axis_angle_to_matrix(root)
        elif root.dim() == 3 and hand.dim() == 3:  # matrix root, axis-angle fingers
            hand = axis_angle_to_matrix(hand)
        pose = torch.cat([root[:, None], hand], 1)  # [B, 16, 3] axis-angle (Rodrigues runs in the op) or [B, 16, 3, 3]
        model, ids = (self.skinning, self.keypoint_ids) if with_vertices else (self.fingertips, self.fingertip_keypoint_ids)
        vertices, joints, mano_joints, transforms = mano_skinning(model, betas, pose, transl, ids)
        return ManoOutput(vertices if with_vertices else None, joints, mano_joints, transforms)

