"""Readable reference of the MANO forward pass (thesis Sec. 2.5): the spec the fused op is tested against.

For B hands, with model tensors as in :class:`handops.mano.ManoModel` (V vertices, 16 joints):

    v_shaped = v_template + shapedirs . betas                              [B, V, 3]
    J        = J_regressor @ v_shaped                                      [B, 16, 3]
    f        = (R_1 - I, ..., R_15 - I) flattened                          [B, 135]
    v_posed  = v_shaped + posedirs . f                                     [B, V, 3]
    G_k      = G_parent(k) [R_k | J_k - J_parent(k)],  G_0 = [R_0 | J_0]   (the kinematic chain)
    A_k      = G_k with translation J'_k - R'_k J_k (G_k relative to the rest joint)
    vertices = sum_k weights[:, k] A_k [v_posed, 1] + transl
    joints   = translation of G_k + transl ("mano_joints", smplx's joints)

The same computation as ``smplx.lbs`` with ``pose2rot`` done by :func:`handops.geometry.axis_angle_to_matrix`.
"""

from __future__ import annotations

import torch

from handops.geometry import axis_angle_to_matrix

__all__ = ["mano_forward_reference", "mano_skinning_reference", "mano_keypoints_jacobian_reference"]


def _skin(rotations, transl, v_shaped, joints, posedirs, weights, parents):
    """Pose correctives, the kinematic chain and linear blend skinning of the module docstring, from the
    shaped mesh v_shaped [B, V, 3] and the rest joints [B, 16, 3]: (vertices, posed joints, A_k)."""
    batch = rotations.shape[0]
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    pose_feature = (rotations[:, 1:] - eye).reshape(batch, -1)
    v_posed = v_shaped + torch.einsum("bp,vkp->bvk", pose_feature, posedirs)
    world = []
    for k in range(16):
        local = torch.cat([rotations[:, k], (joints[:, k] - (joints[:, parents[k]] if k else 0)).unsqueeze(-1)], -1)
        local = torch.cat([local, local.new_tensor([0, 0, 0, 1]).expand(batch, 1, 4)], 1)  # [B, 4, 4]
        world.append(local if k == 0 else world[parents[k]] @ local)
    world = torch.stack(world, 1)  # [B, 16, 4, 4]
    posed_joints = world[..., :3, 3]
    # Relative to the rest pose: A_k = G_k with its translation reduced by R'_k J_k.
    offset = posed_joints - (world[..., :3, :3] @ joints.unsqueeze(-1)).squeeze(-1)
    relative = torch.cat([torch.cat([world[..., :3, :3], offset[..., None]], -1), world[..., 3:, :]], -2)
    blended = torch.einsum("vk,bkij->bvij", weights, relative)  # [B, V, 4, 4]
    vertices = (blended[..., :3, :3] @ v_posed.unsqueeze(-1)).squeeze(-1) + blended[..., :3, 3]
    if transl is not None:
        vertices = vertices + transl[:, None]
        posed_joints = posed_joints + transl[:, None]
        relative = relative + torch.nn.functional.pad(transl[:, None, :, None], (3, 0, 0, 1))
    return vertices, posed_joints, relative


def mano_skinning_reference(betas, pose, transl, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights, parents,
                            keypoint_ids=()):
    """The registered op ``handops::mano_skinning``, readably (the equations of the module docstring).

    Args:
        betas [B, S]; pose [B, 16, 3] axis-angle or [B, 16, 3, 3] matrices (root first); transl [B, 3] or None;
        v_template [V, 3], shapedirs [V, 3, S'], posedirs [V, 3, 135], weights [V, 16];
        J_template [16, 3] = J_regressor v_template and J_shapedirs [16, 3, S'] = J_regressor shapedirs
        (J = J_regressor v_shaped = J_template + J_shapedirs betas exactly: the regressor is linear);
        parents: 16 ints; keypoint_ids: ints, id < 16 the joint id, else 16 + a vertex id.
    Returns:
        vertices [B, V, 3], keypoints [B, n, 3], joints [B, 16, 3], transforms [B, 16, 4, 4], transl added.
    """
    rotations = axis_angle_to_matrix(pose) if pose.dim() == 3 else pose
    num_betas = betas.shape[1]
    v_shaped = v_template + torch.einsum("bl,vkl->bvk", betas, shapedirs[..., :num_betas])
    joints = J_template + torch.einsum("bl,jkl->bjk", betas, J_shapedirs[..., :num_betas])
    vertices, posed_joints, relative = _skin(rotations, transl, v_shaped, joints, posedirs, weights, list(parents))
    keypoints = torch.cat([posed_joints, vertices], 1)[:, list(keypoint_ids)]
    return vertices, keypoints, posed_joints, relative


def mano_keypoints_jacobian_reference(betas, pose, transl, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights,
                                      parents, keypoint_ids):
    """The registered op ``handops::mano_keypoints_jacobian``: keypoints [B, n, 3] and their Jacobian with respect
    to the axis-angle pose [B, n, 3, 48], as 48 forward-mode products (hands are independent, so one tangent
    per pose entry, shared by all hands, gives every hand's column at once)."""
    model = (v_template, shapedirs, posedirs, J_template, J_shapedirs, weights, parents, keypoint_ids)

    def keypoints_of(p):
        return mano_skinning_reference(betas, p, transl, *model)[1]

    tangents = torch.eye(48, dtype=pose.dtype, device=pose.device).view(48, 1, 16, 3).expand(48, *pose.shape)
    columns = [torch.func.jvp(keypoints_of, (pose,), (t,))[1] for t in tangents]  # 48 x [B, n, 3]
    return keypoints_of(pose), torch.stack(columns, -1)


def mano_forward_reference(model, betas: torch.Tensor, rotations: torch.Tensor, transl: torch.Tensor | None = None):
    """MANO with every joint rotation given as a matrix, with the model's own joint regressor (as smplx does it).

    Args:
        model: a :class:`handops.mano.ManoModel` (cast to the dtype/device of ``betas`` here).
        betas: [B, S]; rotations: [B, 16, 3, 3] (the root first); transl: [B, 3] or None.
    Returns:
        vertices [B, V, 3], mano_joints [B, 16, 3], transforms [B, 16, 4, 4] (the A_k above, with
        transl added to their translation).
    """
    m = model.to(dtype=betas.dtype, device=betas.device)
    v_shaped = m.v_template + torch.einsum("bl,vkl->bvk", betas, m.shapedirs[..., : betas.shape[1]])
    joints = torch.einsum("jv,bvk->bjk", m.J_regressor, v_shaped)
    return _skin(rotations, transl, v_shaped, joints, m.posedirs, m.weights, m.parents.tolist())
