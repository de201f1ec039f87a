"""handops.geometry: the rotation conversions and the pinhole projection that handops and handops_models share.

Each test says which plausible wrong implementation it rules out."""

import math

import pytest
import torch
from scipy.spatial.transform import Rotation

from handops.geometry import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    project,
    rotation_6d_to_matrix,
)

F64 = torch.float64

# 90 degrees counter-clockwise about x, y and z (x' = R x): each takes the next axis to the one after it.
QUARTER_TURNS = {
    0: [[1, 0, 0], [0, 0, -1], [0, 1, 0]],
    1: [[0, 0, 1], [0, 1, 0], [-1, 0, 0]],
    2: [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
}


def _skew(v):
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(*v.shape[:-1], 3, 3)


def _random_rotvecs(n, seed, max_angle=math.pi):
    gen = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, dtype=F64, generator=gen), dim=-1)
    return axis * torch.rand(n, 1, dtype=F64, generator=gen) * max_angle


# --------------------------------------------------------------------------------------------------
# axis-angle -> matrix


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_quarter_turn_about_each_axis(axis):
    # Rules out the transposed (inverse, clockwise) rotation and a skew matrix with the wrong signs.
    rotvec = torch.zeros(3, dtype=F64)
    rotvec[axis] = math.pi / 2
    expected = torch.tensor(QUARTER_TURNS[axis], dtype=F64)
    torch.testing.assert_close(axis_angle_to_matrix(rotvec), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(matrix_to_axis_angle(expected), rotvec, rtol=0, atol=1e-15)


def test_axis_angle_matches_scipy_and_the_matrix_exponential():
    # Two independent implementations (scipy's quaternions, exp(skew(v))): rules out a wrong coefficient in the
    # closed form or the series (the first cases are in the series branch, t^2 < 1e-6, the next ones just beside
    # its edge t = 1e-3).
    rotvec = _random_rotvecs(64, seed=0, max_angle=3.1)
    rotvec[:4] *= 1e-5 / rotvec[:4].norm(dim=-1, keepdim=True)
    for k, angle in enumerate((1e-3 - 1e-12, 1e-3 + 1e-12, 0.99e-3, 1.01e-3)):
        rotvec[4 + k] *= angle / rotvec[4 + k].norm()
    got = axis_angle_to_matrix(rotvec)
    scipy_matrices = torch.from_numpy(Rotation.from_rotvec(rotvec.numpy()).as_matrix())
    torch.testing.assert_close(got, scipy_matrices, rtol=0, atol=1e-14)
    torch.testing.assert_close(got, torch.linalg.matrix_exp(_skew(rotvec)), rtol=0, atol=1e-14)


def test_any_leading_shape():
    # Rules out an implementation that assumes [N, 3] (or flattens the batch and forgets to restore it).
    rotvec = _random_rotvecs(24, seed=1).view(2, 3, 4, 3)
    matrices = axis_angle_to_matrix(rotvec)
    assert matrices.shape == (2, 3, 4, 3, 3)
    torch.testing.assert_close(matrices.view(24, 3, 3), axis_angle_to_matrix(rotvec.view(24, 3)), rtol=0, atol=0)
    assert axis_angle_to_matrix(torch.zeros(3, dtype=F64)).shape == (3, 3)
    assert axis_angle_to_matrix(torch.zeros(0, 3)).shape == (0, 3, 3)
    assert matrix_to_axis_angle(matrices).shape == (2, 3, 4, 3)
    assert matrix_to_rotation_6d(matrices).shape == (2, 3, 4, 6)
    assert rotation_6d_to_matrix(torch.randn(2, 3, 4, 6)).shape == (2, 3, 4, 3, 3)


@pytest.mark.parametrize("scale", [0.0, 1e-5, 1e-2, 1.0])
def test_axis_angle_gradient_is_finite_and_exact(scale):
    # Rules out sin(t) / t and (1 - cos t) / t^2 differentiated as written (0/0 = nan at t = 0) and a series whose
    # derivative is off (gradcheck compares with finite differences in float64).
    rotvec = (torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(1)) * scale).requires_grad_()
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (rotvec,))
    axis_angle_to_matrix(rotvec).sum().backward()
    assert torch.isfinite(rotvec.grad).all()


def test_derivative_at_zero_is_the_generators():
    # dR/dv_k at v = 0 is skew(e_k) exactly: rules out a gradient that is finite but wrong at zero (a clamp of t,
    # say, whose derivative there is 0).
    jacobian = torch.autograd.functional.jacobian(axis_angle_to_matrix, torch.zeros(3, dtype=F64))  # [3, 3, 3]
    for k in range(3):
        torch.testing.assert_close(jacobian[..., k], _skew(torch.eye(3, dtype=F64)[k]), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# matrix -> axis-angle


@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-9, 1e-6, 1e-3, 0.5, 2.0, math.pi - 1e-3, math.pi - 1e-6,
                                   math.pi - 1e-9])
def test_round_trip_near_zero_and_near_pi(angle):
    # acos((tr R - 1) / 2) loses half the digits near 0 (an angle of 1e-9 comes back as 0 or ~1e-8) and
    # dividing by sin t loses the axis near pi; the quaternion route keeps every angle to float64 precision.
    axis = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8], [1.0, 0.0, 0.0], [-0.2, 0.9, 0.1]], dtype=F64),
                                         dim=-1)
    rotvec = axis * angle
    back = matrix_to_axis_angle(axis_angle_to_matrix(rotvec))
    # relative accuracy where the angle is tiny, ~1e-8 absolute on the axis at pi - 1e-9 (w = cos(t/2) ~ 5e-10
    # is known to ~1e-16 only, so the axis's last digits come from the off-diagonal sums)
    torch.testing.assert_close(back, rotvec, rtol=1e-9, atol=1e-8 if angle > 3 else 1e-15)


def test_angle_pi_gives_the_same_rotation():
    # At exactly pi, v and -v are the same rotation: either is right, but the angle must be pi and the matrix the same
    # (rules out a result of length 0 or 2 pi from a sign error in w).
    axis = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8], [0.0, 0.0, 1.0]], dtype=F64), dim=-1)
    rotvec = axis * math.pi
    matrices = axis_angle_to_matrix(rotvec)
    back = matrix_to_axis_angle(matrices)
    torch.testing.assert_close(back.norm(dim=-1), torch.full((2,), math.pi, dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(axis_angle_to_matrix(back), matrices, rtol=0, atol=1e-14)


def test_matrix_to_axis_angle_random_round_trip_and_dtype():
    # Random rotations of every angle in [0, pi): rules out a candidate quaternion picked from the wrong component.
    rotvec = _random_rotvecs(500, seed=3)
    torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(rotvec)), rotvec, rtol=0, atol=1e-12)
    # float32 in, float32 out (computed in float64 inside)
    single = matrix_to_axis_angle(axis_angle_to_matrix(rotvec.float()))
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), rotvec, rtol=0, atol=2e-6)


def test_matrix_to_axis_angle_gradient():
    # The composition with axis_angle_to_matrix is the identity map, so its Jacobian is I: rules out gradients
    # through the wrong (masked-out) branch.
    rotvec = _random_rotvecs(6, seed=4, max_angle=3.0).requires_grad_()
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (axis_angle_to_matrix(rotvec).detach().requires_grad_(),))
    for v in rotvec.detach():
        jacobian = torch.autograd.functional.jacobian(lambda x: matrix_to_axis_angle(axis_angle_to_matrix(x)), v)
        torch.testing.assert_close(jacobian, torch.eye(3, dtype=F64), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# 6-D


def test_6d_is_the_first_two_columns():
    # The quarter turn about z has columns (0, 1, 0) and (-1, 0, 0); its rows would give (0, -1, 0, 1, 0, 0) (the
    # pytorch3d convention, the transposed rotation): rules out rows instead of columns both ways.
    rz = torch.tensor(QUARTER_TURNS[2], dtype=F64)
    d6 = matrix_to_rotation_6d(rz)
    torch.testing.assert_close(d6, torch.tensor([0.0, 1, 0, -1, 0, 0], dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(rotation_6d_to_matrix(d6), rz, rtol=0, atol=0)
    torch.testing.assert_close(rotation_6d_to_matrix(torch.tensor([0.0, -1, 0, 1, 0, 0], dtype=F64)), rz.T)


def test_6d_round_trip_and_gram_schmidt():
    matrices = torch.from_numpy(Rotation.random(16, random_state=0).as_matrix())
    d6 = matrix_to_rotation_6d(matrices)
    torch.testing.assert_close(d6, torch.cat([matrices[..., 0], matrices[..., 1]], -1), rtol=0, atol=0)
    torch.testing.assert_close(rotation_6d_to_matrix(d6), matrices, rtol=0, atol=1e-15)
    # Scaling the first column and adding some of it to the second changes nothing: rules out a missing
    # normalisation or orthogonalisation.
    a1, a2 = d6[..., :3], d6[..., 3:]
    skewed = torch.cat([2.5 * a1, 0.7 * a2 + 0.4 * a1], -1)
    torch.testing.assert_close(rotation_6d_to_matrix(skewed), matrices, rtol=0, atol=1e-14)
    # Any 6-D input gives a proper rotation: rules out b2 x b1 (a reflection, det -1) as the third column.
    noisy = rotation_6d_to_matrix(d6 + 0.1)
    torch.testing.assert_close(noisy @ noisy.transpose(-1, -2), torch.eye(3, dtype=F64).expand(16, 3, 3))
    torch.testing.assert_close(torch.linalg.det(noisy), torch.ones(16, dtype=F64))


def test_6d_gradient():
    d6 = torch.randn(4, 6, dtype=F64, generator=torch.Generator().manual_seed(5), requires_grad=True)
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (d6,))


# --------------------------------------------------------------------------------------------------
# projection

# A camera with skew and fx != fy, so that K and K^T, and x and y, give different pixels.
K_EXAMPLE = [[100.0, 2.0, 50.0], [0.0, 200.0, 40.0], [0.0, 0.0, 1.0]]


def test_project_hand_computed_pinhole():
    # X = (0.1, -0.2, 2): K X = (10 - 0.4 + 100, -40 + 80, 2) = (109.6, 40, 2), so the pixel is (54.8, 20) at depth 2.
    # Rules out a transposed K (K^T X = (10, -39.8, 0.2) + ...), dividing by the camera z before applying the
    # principal point wrongly, and swapped u and v.
    K = torch.tensor(K_EXAMPLE, dtype=F64)
    points = torch.tensor([[0.1, -0.2, 2.0], [0.0, 0.0, 1.0]], dtype=F64)
    pixels, depth = project(points, K, return_depth=True)
    torch.testing.assert_close(pixels, torch.tensor([[54.8, 20.0], [50.0, 40.0]], dtype=F64), rtol=0, atol=1e-13)
    torch.testing.assert_close(depth, torch.tensor([2.0, 1.0], dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(project(points, K), pixels, rtol=0, atol=0)


def test_project_batches_broadcast():
    # Per-image K [B, 3, 3] against one shared K [3, 3]: rules out a K applied to the wrong image or batch axis.
    gen = torch.Generator().manual_seed(6)
    points = torch.randn(2, 3, 5, 3, dtype=F64, generator=gen) * 0.1 + torch.tensor([0, 0, 1.0], dtype=F64)
    K = torch.tensor(K_EXAMPLE, dtype=F64)
    shared = project(points, K)
    assert shared.shape == (2, 3, 5, 2)
    scaled = K.expand(2, 3, 3, 3).clone()
    scaled[1, :, :2] *= 2  # image 1: twice the focal lengths and principal point, so twice the pixels
    per_image = project(points, scaled)
    torch.testing.assert_close(per_image[0], shared[0], rtol=1e-14, atol=1e-12)
    torch.testing.assert_close(per_image[1], 2 * shared[1], rtol=1e-14, atol=1e-12)
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(project(points[b, c], K), shared[b, c], rtol=1e-14, atol=1e-12)


def test_project_min_depth():
    # Without min_depth a point on the camera plane divides by zero; with it the divisor is max(z, min_depth) and
    # the returned depth stays the true (here negative) one: rules out clamping the depth that is returned, or
    # clamping |z| (which would project a point behind the camera as if it were in front).
    K = torch.eye(3, dtype=F64)
    points = torch.tensor([[1.0, 2.0, 0.0], [1.0, 2.0, -0.5], [1.0, 2.0, 0.5]], dtype=F64)
    assert not torch.isfinite(project(points, K)[0]).all()
    pixels, depth = project(points, K, min_depth=1e-6, return_depth=True)
    expected = torch.tensor([[1e6, 2e6], [1e6, 2e6], [2.0, 4.0]], dtype=F64)
    torch.testing.assert_close(pixels, expected, rtol=1e-15, atol=0)
    torch.testing.assert_close(depth, torch.tensor([0.0, -0.5, 0.5], dtype=F64), rtol=0, atol=0)


def test_project_gradient_and_dtype():
    points = (torch.randn(2, 4, 3, dtype=F64, generator=torch.Generator().manual_seed(7)) * 0.1
              + torch.tensor([0, 0, 1.0], dtype=F64)).requires_grad_()
    K = torch.tensor(K_EXAMPLE, dtype=F64).expand(2, 3, 3).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p, k: project(p, k, return_depth=True), (points, K))
    # K is cast to the points' dtype
    assert project(points.detach().float(), K.detach()).dtype == torch.float32


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"rotvec must be \[\.\.\., 3\]"):
        axis_angle_to_matrix(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"matrix must be \[\.\.\., 3, 3\]"):
        matrix_to_axis_angle(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"d6 must be \[\.\.\., 6\]"):
        rotation_6d_to_matrix(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        axis_angle_to_matrix(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"K must be \[\.\.\., 3, 3\]"):
        project(torch.zeros(5, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"points must be \[\.\.\., N, 3\]"):
        project(torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match="does not broadcast"):
        project(torch.zeros(2, 5, 3), torch.eye(3).expand(3, 3, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-4, 1.0, math.pi - 1e-3, math.pi])
def test_matrix_to_axis_angle_has_finite_gradients(dtype, angle):
    """At and near the identity and at pi the gradient is finite, and the round trip's Jacobian is the
    identity away from pi. Rules out sqrt(clamp(q, 0)) and norm() at 0, whose infinite derivatives
    times zero give NaN."""
    rotvec = torch.tensor([angle, 0.0, 0.0], dtype=torch.float64)
    matrix = axis_angle_to_matrix(rotvec).to(dtype).requires_grad_(True)
    matrix_to_axis_angle(matrix).sum().backward()
    assert torch.isfinite(matrix.grad).all()
    if angle < 3:
        leaf = rotvec.clone().requires_grad_(True)
        jacobian = torch.autograd.functional.jacobian(lambda v: matrix_to_axis_angle(axis_angle_to_matrix(v)), leaf)
        torch.testing.assert_close(jacobian, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-6)
