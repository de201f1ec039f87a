"""Optimisation-augmented inference (thesis Eq. 6.4) and shape personalisation (Eq. 6.6-6.7).

``fit_keypoints2d`` fits MANO pose and root translation of a whole batch of images to 2-D keypoints;
``calibrate_shape`` finds one shape per subject from the per-image predictions of K images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from handops.mano.layer import ManoLayer

__all__ = ["FitResult", "fit_keypoints2d", "calibrate_shape", "project"]


@dataclass
class FitResult:
    """global_orient [B, 3] and hand_pose [B, 45] axis-angle (hand_pose as ``ManoLayer`` takes it,
    i.e. relative to the layer's mean pose), transl [B, 3] metres, joints [B, 21, 3] (camera frame),
    reprojection_error [B]: the weighted mean pixel distance of the 21 keypoints."""

    global_orient: torch.Tensor
    hand_pose: torch.Tensor
    transl: torch.Tensor
    joints: torch.Tensor
    reprojection_error: torch.Tensor


def project(points: torch.Tensor, camera_K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection: points [B, N, 3] (camera frame, z > 0) with intrinsics [B, 3, 3] -> [B, N, 2] pixels."""
    uvw = points @ camera_K.transpose(1, 2)
    return uvw[..., :2] / uvw[..., 2:].clamp_min(1e-6)


def _reprojection(joints, transl, keypoints2d, camera_K, weights):
    """Per image: sum_k w_k |x_k - P(J_k + r)|_2 (Eq. 6.4 with per-keypoint confidences) and the weighted mean."""
    distance = (project(joints + transl[:, None], camera_K) - keypoints2d).norm(dim=-1)  # [B, 21]
    energy = (weights * distance).sum(-1)
    return energy, energy / weights.sum(-1).clamp_min(1e-12)


def _initial_translation(layer, betas, global_orient, hand_pose, keypoints2d, camera_K, weights):
    """Depth from the ratio of 3-D to 2-D keypoint spread (focal length times size), x and y by back-projecting
    the weighted keypoint centroid: close enough for the translation stage to converge."""
    with torch.no_grad():
        joints = layer(betas, global_orient, hand_pose.view(-1, 15, 3), with_vertices=False).joints
        w = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
        centre3 = (w[..., None] * joints).sum(1)
        centre2 = (w[..., None] * keypoints2d).sum(1)
        spread3 = (w * (joints[..., :2] - centre3[:, None, :2]).norm(dim=-1)).sum(-1)
        spread2 = (w * (keypoints2d - centre2[:, None]).norm(dim=-1)).sum(-1)
        focal = 0.5 * (camera_K[:, 0, 0] + camera_K[:, 1, 1])
        depth = (focal * spread3 / spread2.clamp_min(1e-6)).clamp(0.05, 10.0)
        x = (centre2[:, 0] - camera_K[:, 0, 2]) / camera_K[:, 0, 0] * depth
        y = (centre2[:, 1] - camera_K[:, 1, 2]) / camera_K[:, 1, 1] * depth
        return torch.stack([x, y, depth], -1) - centre3


def fit_keypoints2d(layer: ManoLayer, keypoints2d: torch.Tensor, camera_K: torch.Tensor, betas: torch.Tensor,
                    init: dict | None = None, weights: torch.Tensor | None = None, solver: str = "adam",
                    iterations: tuple[int, int] = (200, 60), learning_rates: tuple[float, float] = (1e-2, 1e-3),
                    progress: bool = False) -> FitResult:
    """Thesis Eq. 6.4 for a batch of images: stage 1 moves the root translation only, stage 2 pose
    and translation together (Adam; the thesis schedule is 200 steps at 1e-2 then 60 at 1e-3).

    Args:
        layer: a :class:`ManoLayer`; keypoints2d [B, 21, 2] pixels (x, y) in OpenPose order;
        camera_K [B, 3, 3]; betas [B, S] (fixed); init: dict with any of global_orient [B, 3],
        hand_pose [B, 45] (a network's prediction; default the layer's mean pose) and transl [B, 3]
        (default from the keypoints' spread); weights [B, 21] per-keypoint confidence or visibility.
    """
    if solver != "adam":
        raise ValueError(f"solver must be 'adam' (the thesis schedule), got {solver!r}")
    if keypoints2d.dim() != 3 or keypoints2d.shape[1:] != (21, 2):
        raise ValueError(f"keypoints2d must be [B, 21, 2] pixels, got {list(keypoints2d.shape)}")
    batch = keypoints2d.shape[0]
    if camera_K.shape != (batch, 3, 3):
        raise ValueError(f"camera_K must be [B, 3, 3] = [{batch}, 3, 3], got {list(camera_K.shape)}")
    if betas.dim() != 2 or betas.shape[0] != batch:
        raise ValueError(f"betas must be [B, S] with B = {batch}, got {list(betas.shape)}")
    init = dict(init or {})
    unknown = set(init) - {"global_orient", "hand_pose", "transl"}
    if unknown:
        raise ValueError(f"init may hold global_orient, hand_pose and transl, got {sorted(unknown)}")
    weights = keypoints2d.new_ones(batch, 21) if weights is None else weights.to(keypoints2d)
    if weights.shape != (batch, 21) or bool((weights < 0).any()):
        raise ValueError(f"weights must be [B, 21] non-negative, got {list(weights.shape)}")
    for name, t in (("keypoints2d", keypoints2d), ("camera_K", camera_K), ("betas", betas), ("weights", weights)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or Inf entries")

    dtype = keypoints2d.dtype
    global_orient = init.get("global_orient", keypoints2d.new_zeros(batch, 3)).to(dtype).clone()
    hand_pose = init.get("hand_pose", keypoints2d.new_zeros(batch, 45)).to(dtype).clone()
    betas = betas.to(dtype)
    transl = init.get("transl")
    if transl is None:
        transl = _initial_translation(layer, betas, global_orient, hand_pose, keypoints2d, camera_K, weights)
    transl = transl.to(dtype).clone()

    def energy():
        joints = layer(betas, global_orient, hand_pose.view(batch, 15, 3), with_vertices=False).joints
        return joints, _reprojection(joints, transl, keypoints2d, camera_K, weights)

    stages = [([transl], iterations[0], learning_rates[0]), ([global_orient, hand_pose, transl], iterations[1], learning_rates[1])]
    for params, steps, lr in stages:
        for p in params:
            p.requires_grad_(True)
        optimiser = torch.optim.Adam(params, lr=lr)
        for _ in tqdm(range(steps), desc="fit_keypoints2d", disable=not progress, leave=False):
            optimiser.zero_grad(set_to_none=True)
            _, (total, _) = energy()
            total.sum().backward()  # images are independent: the sum's gradient is each image's own
            optimiser.step()
        for p in params:
            p.requires_grad_(False)
    with torch.no_grad():
        joints, (_, mean_error) = energy()
    return FitResult(global_orient, hand_pose, transl, joints + transl[:, None], mean_error)


def calibrate_shape(layer: ManoLayer, betas: torch.Tensor, poses: torch.Tensor, confidences: torch.Tensor | None = None,
                    temperature: float = 0.33, iterations: int = 50) -> torch.Tensor:
    """One shape for one subject from K images (thesis Eq. 6.6-6.7).

        w = softmax(confidences / temperature)   (1/K each when confidences is None)
        beta~ = argmin_b sum_k w_k |M(b, theta_k) - M(beta_k, theta_k)|_F

    Args:
        betas: [K, S] per-image shape predictions; poses: [K, 48] axis-angle per image (global
        orientation first, hand pose as the layer takes it); confidences: [K] or None.
    Returns:
        [S] the calibrated shape.

    MANO's vertices are affine in the shape for a fixed pose, so each image's mesh is
    M_k(b) = a_k + D_k b exactly; the sum of (unsquared) Frobenius norms is minimised by iteratively
    reweighted least squares on that affine form (each step a S x S solve).
    """
    if betas.dim() != 2:
        raise ValueError(f"betas must be [K, S], got {list(betas.shape)}")
    count, num_betas = betas.shape
    if count == 0:
        raise ValueError("calibrate_shape needs at least one image")
    if poses.shape != (count, 48):
        raise ValueError(f"poses must be [K, 48] axis-angle (global orientation first) with K = {count}, got {list(poses.shape)}")
    if confidences is None:
        w = betas.new_full((count,), 1.0 / count)
    else:
        if confidences.shape != (count,):
            raise ValueError(f"confidences must be [K] = [{count}], got {list(confidences.shape)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        w = torch.softmax(confidences.to(betas) / temperature, dim=0)

    with torch.no_grad():
        def meshes(shape):  # [K, S] -> [K, V*3]
            return layer(shape, poses[:, :3], poses[:, 3:].reshape(count, 15, 3)).vertices.reshape(count, -1)

        targets = meshes(betas)
        base = meshes(betas.new_zeros(count, num_betas))
        # D_k columns: the mesh change per unit of each shape component (exact: M is affine in b).
        basis = torch.stack([meshes(torch.eye(num_betas, dtype=betas.dtype, device=betas.device)[s].expand(count, -1)) - base
                             for s in range(num_betas)], -1)  # [K, V*3, S]
        residual_of = lambda b: base + basis @ b - targets  # noqa: E731  [K, V*3]
        gram = torch.einsum("kvs,kvt->kst", basis, basis)
        rhs = torch.einsum("kvs,kv->ks", basis, targets - base)
        shape = torch.linalg.solve((w[:, None, None] * gram).sum(0), (w[:, None] * rhs).sum(0))  # squared-norm start
        for _ in range(iterations):
            norms = residual_of(shape).norm(dim=-1).clamp_min(1e-12)
            c = w / norms
            new = torch.linalg.solve((c[:, None, None] * gram).sum(0), (c[:, None] * rhs).sum(0))
            if torch.allclose(new, shape, rtol=1e-10, atol=1e-12):
                shape = new
                break
            shape = new
    return shape
