"""Rotations and the pinhole camera: the one definition of each that handops and handops_models use.

Every function takes torch tensors with any leading batch shape ``...`` and is differentiable.

Rotations act on column vectors, ``x' = R x``. Axis-angle ("rotation vector") ``v = t u`` is the angle
``t = |v|`` in radians about the unit axis ``u``, counter-clockwise looking down the axis. The 6-D
representation of Zhou et al. (CVPR 2019) is the first two *columns* of R here (``d6 = (R[:, 0], R[:, 1])``),
as in the thesis and MANO's ``ManoLayer``; pytorch3d's ``matrix_to_rotation_6d`` stores the first two
*rows* instead (the transpose's columns), so pytorch3d 6-D poses must be converted with pytorch3d.

The camera is the pinhole ``x ~ K X``: a camera-frame point X [3] (z forward, metres) has pixel
coordinates ``(q_0 / q_2, q_1 / q_2)`` with ``q = K X`` (K [3, 3] applied to the point, not transposed).
"""

from __future__ import annotations

import torch

__all__ = [
    "axis_angle_to_matrix", "matrix_to_axis_angle", "rotation_6d_to_matrix", "matrix_to_rotation_6d", "project",
]

# Below this squared angle a = sin t / t and b = (1 - cos t) / t^2 are evaluated by their series: the closed
# forms lose digits to cancellation near t = 0 (b's relative error is about eps / t^2) and their autograd
# divides by zero at t = 0. The series to t^6 leaves t^8 / 362880 < 3e-22 of error here, below float64's
# resolution of a and b. The C++ and Triton kernels use the same threshold and series
# (csrc/cpu/mano_skinning.cpp, handops/_triton/mano_skinning.py; tests/test_constants.py checks it).
RODRIGUES_SERIES_BELOW = 1e-4
# Quaternion components below this count as zero when dividing by them (matrix_to_axis_angle).
_TINY = 1e-12


def _check_last_dims(name: str, tensor: torch.Tensor, dims: tuple[int, ...]) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < len(dims) or tuple(tensor.shape[tensor.dim() - len(dims):]) != dims:
        shape = "[..., " + ", ".join(map(str, dims)) + "]"
        raise ValueError(f"{name} must be {shape}, got {list(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle ``rotvec`` [..., 3] -> rotation matrices [..., 3, 3].

    ``R = I + a(t) S + b(t) S^2`` with ``S = skew(v) = [[0, -z, y], [z, 0, -x], [-y, x, 0]]`` for v = (x, y, z),
    ``t = |v|``, ``a = sin t / t`` and ``b = (1 - cos t) / t^2`` (the unit-axis form ``I + sin t K + (1 - cos t) K^2``
    with K = S / t). For ``t^2 < 1e-4`` a and b are their series ``1 - t^2/6 + t^4/120 - t^6/5040`` and
    ``1/2 - t^2/24 + t^4/720 - t^6/40320``, so the value and the gradient are exact and finite at (and near) zero rotation.
    """
    _check_last_dims("rotvec", rotvec, (3,))
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = theta2 < RODRIGUES_SERIES_BELOW
    # the closed forms see a harmless 1 where the series is used, so that neither branch's gradient is inf/nan
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(safe2)
    series_a = 1 - theta2 / 6 * (1 - theta2 / 20 * (1 - theta2 / 42))
    series_b = 0.5 - theta2 / 24 * (1 - theta2 / 30 * (1 - theta2 / 56))
    a = torch.where(small, series_a, torch.sin(theta) / theta)
    b = torch.where(small, series_b, (1 - torch.cos(theta)) / safe2)
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(skew)
    return eye + a * skew + b * (skew @ skew)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> axis-angle [..., 3] with the angle in [0, pi], via the unit quaternion.

    With ``tr = R_00 + R_11 + R_22``, the quaternion (w, x, y, z) has ``|w| = sqrt(1 + tr) / 2``,
    ``|x| = sqrt(1 + R_00 - R_11 - R_22) / 2`` (likewise y, z). The largest of the four is taken as it is and the
    others follow from it by the off-diagonal sums and differences (e.g. for w: ``x = (R_21 - R_12) / 4w``,
    ``y = (R_02 - R_20) / 4w``, ``z = (R_10 - R_01) / 4w``), which is accurate at every angle, 0 and pi included.
    The sign makes ``w >= 0``; after normalising, ``t = 2 atan2(|(x, y, z)|, w)`` and the result is
    ``(x, y, z) t / |(x, y, z)|`` (``2 (x, y, z) / w`` when ``|(x, y, z)| <= 1e-12``). Computed in float64 and
    returned in the input's dtype. At exactly pi the axis's sign is whichever the largest component gives (both
    are the same rotation).
    """
    _check_last_dims("matrix", matrix, (3, 3))
    r = matrix.double()
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    q = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    # |w|, |x|, |y|, |z|; sqrt only where positive: its infinite derivative at 0 would make the gradient NaN
    positive = q > 0
    q = torch.where(positive, torch.sqrt(torch.where(positive, q, torch.ones_like(q))), torch.zeros_like(q)) / 2
    w, x, y, z = q.unbind(-1)
    largest = q.argmax(-1)
    # the differences give w times the vector part, the sums the products of vector components
    dx, dy, dz = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    sxy, sxz, syz = r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1]
    w4, x4, y4, z4 = (4 * c.clamp_min(_TINY) for c in (w, x, y, z))
    candidates = torch.stack([
        torch.stack([w, dx / w4, dy / w4, dz / w4], -1),
        torch.stack([dx / x4, x, sxy / x4, sxz / x4], -1),
        torch.stack([dy / y4, sxy / y4, y, syz / y4], -1),
        torch.stack([dz / z4, sxz / z4, syz / z4, z], -1),
    ], -2)  # [..., 4, 4]: the quaternion computed from each of the four components
    quat = candidates.gather(-2, largest[..., None, None].expand(*largest.shape, 1, 4)).squeeze(-2)
    quat = quat * torch.where(quat[..., :1] < 0, -1.0, 1.0)  # w >= 0: the angle in [0, pi]
    quat = quat / quat.norm(dim=-1, keepdim=True)
    vector = quat[..., 1:]
    # |vector| without norm()'s 0/0 gradient at the identity
    sin2 = (vector * vector).sum(-1, keepdim=True)
    some = sin2 > 0
    sin_half = torch.where(some, torch.sqrt(torch.where(some, sin2, torch.ones_like(sin2))), torch.zeros_like(sin2))
    angle = 2 * torch.atan2(sin_half, quat[..., :1])
    scale = torch.where(sin_half > _TINY, angle / sin_half.clamp_min(_TINY), 2.0 / quat[..., :1].clamp_min(_TINY))
    return (vector * scale).to(matrix.dtype)


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """The continuous 6-D representation [..., 6] -> rotation matrices [..., 3, 3] by Gram-Schmidt.

    ``d6 = (a1, a2)``: ``b1 = a1 / |a1|``, ``b2 = (a2 - (b1 . a2) b1) / |...|``, ``b3 = b1 x b2``, and
    ``R = [b1 b2 b3]`` with b1, b2, b3 its *columns* (pytorch3d stacks them as rows: see the module docstring).
    Any d6 with a1 and a2 linearly independent gives a rotation; the matrix's own 6-D gives it back exactly.
    """
    _check_last_dims("d6", d6, (6,))
    a1, a2 = d6[..., 0:3], d6[..., 3:6]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> the 6-D representation [..., 6]: ``(R[..., :, 0], R[..., :, 1])``, the
    first two *columns* (pytorch3d takes the first two rows)."""
    _check_last_dims("matrix", matrix, (3, 3))
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], -1)


def project(points: torch.Tensor, K: torch.Tensor, *, min_depth: float | None = None,
            return_depth: bool = False):
    """Pinhole projection: camera-frame ``points`` [..., N, 3] and intrinsics ``K`` [..., 3, 3] -> pixels [..., N, 2].

    ``q = K X`` for every point (computed as ``points @ K^T``), ``pixel = (q_0, q_1) / q_2``. K's batch dimensions
    broadcast against the points' (a single [3, 3] K serves every batch entry); K is cast to the points' dtype.

    Args:
        min_depth: when given, the divisor is ``max(q_2, min_depth)``, so that points at or behind the camera give
            large finite pixels and finite gradients (which an optimiser needs) instead of inf, nan or a mirrored
            image. None (default): divide by q_2 itself.
        return_depth: also return the depth ``q_2`` [..., N] (unclamped; the camera z when K's last row is
            (0, 0, 1)).
    Returns:
        pixels [..., N, 2], or (pixels, depth) with ``return_depth``.
    """
    _check_last_dims("points", points, (3,))
    _check_last_dims("K", K, (3, 3))
    if points.dim() < 2:
        raise ValueError(f"points must be [..., N, 3], got {list(points.shape)}")
    try:
        torch.broadcast_shapes(points.shape[:-2], K.shape[:-2])
    except RuntimeError:
        raise ValueError(f"K's batch shape {list(K.shape[:-2])} does not broadcast against the points' "
                         f"{list(points.shape[:-2])} (points [..., N, 3], K [..., 3, 3])") from None
    q = points @ K.to(points.dtype).transpose(-1, -2)
    depth = q[..., 2:]
    pixels = q[..., :2] / (depth if min_depth is None else depth.clamp_min(min_depth))
    return (pixels, depth[..., 0]) if return_depth else pixels
