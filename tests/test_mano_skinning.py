"""handops::mano_skinning and handops::mano_keypoints_jacobian against the references (the spec), the
analytic backward and Jacobian, the registration."""

import pytest
import torch
from scipy.spatial.transform import Rotation

from handops._reference.mano import mano_forward_reference, mano_keypoints_jacobian_reference, mano_skinning_reference
from handops.geometry import axis_angle_to_matrix
from handops.ops.mano_skinning import SkinningModel, mano_keypoints_jacobian, mano_skinning
from mano_helpers import random_mano_model


def sample(batch=3, num_vertices=40, num_betas=10, dtype=torch.float64, seed=0, matrices=False):
    """(ManoModel, SkinningModel, betas, pose, transl): pose [B, 16, 3] axis-angle (angles up to ~2 rad, one
    joint exactly zero) or [B, 16, 3, 3] random rotations."""
    model = random_mano_model(seed, num_vertices=num_vertices)
    g = torch.Generator().manual_seed(seed)
    betas = torch.randn(batch, num_betas, generator=g, dtype=torch.float64).to(dtype)
    if matrices:
        pose = torch.from_numpy(Rotation.random(batch * 16, random_state=seed).as_matrix()).view(batch, 16, 3, 3).to(dtype)
    else:
        pose = torch.randn(batch, 16, 3, generator=g, dtype=torch.float64)
        if batch:
            pose[0, 5] = 0.0  # Rodrigues at zero: the series branch
        pose = pose.to(dtype)
    transl = torch.randn(batch, 3, generator=g, dtype=torch.float64).to(dtype)
    return model, SkinningModel.from_mano(model), betas, pose, transl


def keypoint_ids(num_vertices):
    """Joints and vertices in a scrambled order, one repeated."""
    return (0, 16 + num_vertices - 1, 7, 16, 15, 16 + num_vertices // 2, 7)


def reference(sm, betas, pose, transl, ids=()):
    m = sm.to(betas.dtype, betas.device)
    return mano_skinning_reference(betas, pose, transl, *m.tensors(), m.parents, ids)


def op_args(sm, betas, pose, transl, ids=()):
    m = sm.to(betas.dtype, betas.device)
    return (betas, pose, transl, *m.tensors(), list(m.parents), list(ids))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("num_betas", [10, 4])
@pytest.mark.parametrize("matrices", [False, True])
def test_matches_the_regressor_reference(dtype, tol, num_betas, matrices):
    # mano_forward_reference regresses the joints from v_shaped with the model's J_regressor, as smplx does.
    model, sm, betas, pose, transl = sample(batch=4, num_vertices=778, num_betas=num_betas, dtype=dtype, matrices=matrices)
    rotations = pose if matrices else axis_angle_to_matrix(pose.double()).to(dtype)
    ids = keypoint_ids(778)
    vertices, keypoints, joints, transforms = mano_skinning(sm, betas, pose, transl, ids)
    expected = mano_forward_reference(model, betas, rotations, transl)
    for got, want in zip((vertices, joints, transforms), expected):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    torch.testing.assert_close(keypoints, torch.cat([expected[1], expected[0]], 1)[:, list(ids)], rtol=tol, atol=tol)


def test_without_transl_and_keypoints():
    _, sm, betas, pose, transl = sample(batch=2)
    with_t = mano_skinning(sm, betas, pose, transl)
    without = mano_skinning(sm, betas, pose)
    assert with_t[1].shape == (2, 0, 3)
    torch.testing.assert_close(with_t[0], without[0] + transl[:, None])
    torch.testing.assert_close(with_t[2], without[2] + transl[:, None])
    torch.testing.assert_close(with_t[3][..., :3, 3], without[3][..., :3, 3] + transl[:, None])
    torch.testing.assert_close(with_t[3][..., :3, :3], without[3][..., :3, :3])


def test_zero_pose_is_the_rest_pose():
    model, sm, betas, _, _ = sample(batch=2)
    vertices, _, joints, transforms = mano_skinning(sm, betas, torch.zeros(2, 16, 3, dtype=torch.float64))
    # Identity rotations: no pose correctives, every A_k is the identity, vertices are v_shaped, joints J.
    v_shaped = model.v_template + torch.einsum("bl,vkl->bvk", betas, model.shapedirs)
    torch.testing.assert_close(vertices, v_shaped, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(joints, torch.einsum("jv,bvk->bjk", model.J_regressor, v_shaped), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(transforms, torch.eye(4, dtype=torch.float64).expand(2, 16, 4, 4))


def test_rodrigues_is_exact_near_zero():
    # Tiny angles go through the series branch: the rotation of a known axis and angle, in float64.
    _, sm, betas, _, _ = sample(batch=1)
    for angle in (0.0, 1e-9, 1e-3, 0.009, 0.011, 1.0, 3.0):
        pose = torch.zeros(1, 16, 3, dtype=torch.float64)
        pose[0, 0, 2] = angle
        transforms = mano_skinning(sm, betas, pose)[3]
        c, s = torch.cos(torch.tensor(angle, dtype=torch.float64)), torch.sin(torch.tensor(angle, dtype=torch.float64))
        expected = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
        torch.testing.assert_close(transforms[0, 0, :3, :3], expected, rtol=0, atol=1e-15)


# Against autograd through the float64 reference (the truth, also for float32 inputs): each gradient
# within rtol of itself or atol times its tensor's largest entry (sums of signed products cancel).
# Observed: float32 at most 5e-7 of the scale (6e-6 relative where nothing cancels), float64 5e-16 of
# it (1e-12 relative). The former 1e-3 absolute let through anything above 3e-8 on the shape gradients.
@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float64, 1e-11, 1e-14), (torch.float32, 1e-5, 2e-6)])
@pytest.mark.parametrize("matrices", [False, True])
def test_gradients_match_autograd_through_the_reference(dtype, rtol, atol, matrices):
    _, sm, betas, pose, transl = sample(batch=3, num_vertices=200, dtype=dtype, seed=1, matrices=matrices)
    ids = keypoint_ids(200)
    g = torch.Generator().manual_seed(2)
    shapes = ((3, 200, 3), (3, len(ids), 3), (3, 16, 3), (3, 16, 4, 4))
    weights = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    grads = []
    for fn, cast in ((lambda *a: mano_skinning(sm, *a, ids), dtype), (lambda *a: reference(sm, *a, ids), torch.float64)):
        leaves = [t.to(cast).requires_grad_() for t in (betas, pose, transl)]
        loss = sum((o * w.to(cast)).sum() for o, w in zip(fn(*leaves), weights))
        grads.append(torch.autograd.grad(loss, leaves))
    for got, expected in zip(*grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=atol * expected.abs().max().item())


@pytest.mark.parametrize("index", range(4))
def test_gradient_of_one_output_only(index):
    # The other outputs' gradients reach the backward as None (the vertex sweep is skipped without one).
    _, sm, betas, pose, transl = sample(batch=2, seed=3)
    ids = keypoint_ids(40)
    grads = []
    for fn in (lambda *a: mano_skinning(sm, *a, ids), lambda *a: reference(sm, *a, ids)):
        leaves = [t.clone().requires_grad_() for t in (betas, pose, transl)]
        grads.append(torch.autograd.grad(fn(*leaves)[index].square().sum(), leaves))
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("matrices", [False, True])
def test_gradcheck(seed, matrices):
    _, sm, betas, pose, transl = sample(batch=2, num_vertices=8, num_betas=5, seed=seed, matrices=matrices)
    if matrices:  # free matrices, not only rotations: the op is defined for any 3x3 input, like the reference
        pose = pose + 0.1 * torch.randn(pose.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    ids = keypoint_ids(8)
    leaves = [t.clone().requires_grad_() for t in (betas, pose, transl)]
    assert torch.autograd.gradcheck(lambda *a: mano_skinning(sm, *a, ids), leaves)


def test_gradcheck_at_zero_rotation():
    # Every joint at exactly zero: Rodrigues' series branch, where the naive formula divides by zero.
    _, sm, betas, _, transl = sample(batch=1, num_vertices=8, num_betas=3)
    pose = torch.zeros(1, 16, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: mano_skinning(sm, betas, p, transl, (3, 20)), (pose,))


def test_opcheck():
    for dtype in (torch.float64, torch.float32):
        for matrices in (False, True):
            _, sm, betas, pose, transl = sample(batch=2, num_vertices=10, dtype=dtype, matrices=matrices)
            ids = keypoint_ids(10)
            torch.library.opcheck(torch.ops.handops.mano_skinning, op_args(sm, betas, pose, transl, ids))
            torch.library.opcheck(torch.ops.handops.mano_skinning, op_args(sm, betas, pose, None, ()))
            leaves = [t.clone().requires_grad_() for t in (betas, pose, transl)]
            torch.library.opcheck(torch.ops.handops.mano_skinning, op_args(sm, *leaves, ids))
        _, sm, betas, pose, transl = sample(batch=2, num_vertices=10, dtype=dtype)
        torch.library.opcheck(torch.ops.handops.mano_keypoints_jacobian, op_args(sm, betas, pose, transl, keypoint_ids(10)))


def test_non_contiguous_inputs():
    _, sm, betas, pose, transl = sample(batch=4, num_vertices=30)
    ids = keypoint_ids(30)
    betas_nc = betas.t().contiguous().t()[::2]  # column-major and strided
    pose_nc = pose.transpose(-1, -2).contiguous().transpose(-1, -2)[::2]
    transl_nc = transl.t().contiguous().t()[::2]
    assert not betas_nc.is_contiguous() and not pose_nc.is_contiguous() and not transl_nc.is_contiguous()
    args = list(op_args(sm, betas_nc, pose_nc, transl_nc, ids))
    args[4] = args[4].transpose(0, 2).contiguous().transpose(0, 2)  # shapedirs
    got = torch.ops.handops.mano_skinning(*args)
    for g, e in zip(got, reference(sm, betas[::2], pose[::2], transl[::2], ids)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    grad_outputs = [torch.ones_like(t).transpose(0, -1).contiguous().transpose(0, -1) for t in got]
    grads = torch.ops.handops.mano_skinning_backward(*grad_outputs, betas_nc, pose_nc, *args[3:])
    leaves = [t[::2].clone().requires_grad_() for t in (betas, pose, transl)]
    expected = torch.autograd.grad(sum(o.sum() for o in reference(sm, *leaves, ids)), leaves)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    points, jacobian = torch.ops.handops.mano_keypoints_jacobian(*args)
    want_points, want_jacobian = mano_keypoints_jacobian_reference(*op_args(sm, betas[::2], pose[::2], transl[::2], ids))
    torch.testing.assert_close(points, want_points, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jacobian, want_jacobian, rtol=1e-10, atol=1e-12)


def test_backward_leaves_the_callers_gradients_alone():
    _, sm, betas, pose, transl = sample(batch=2, num_vertices=10)
    ids = keypoint_ids(10)
    outputs = mano_skinning(sm, betas, pose, transl, ids)
    grads = [torch.randn(o.shape, dtype=torch.float64) for o in outputs]
    copies = [g.clone() for g in grads]
    torch.ops.handops.mano_skinning_backward(*grads, *op_args(sm, betas, pose, transl, ids)[:2], *op_args(sm, betas, pose, None, ids)[3:])
    for g, c in zip(grads, copies):
        assert torch.equal(g, c)


@pytest.mark.parametrize("change,error,match", [
    (lambda a: a.__setitem__(0, a[0][:, :, None]), ValueError, "betas must be"),
    (lambda a: a.__setitem__(1, a[1][:, :15]), ValueError, r"pose must be \[B, 16, 3\] axis-angle or \[B, 16, 3, 3\]"),
    (lambda a: a.__setitem__(2, a[2][:, :2]), ValueError, r"transl must be \[B, 3\]"),
    (lambda a: a.__setitem__(0, torch.zeros(2, 11, dtype=torch.float64)), ValueError, "shape blend shapes"),
    (lambda a: a.__setitem__(3, a[3][:, :2]), ValueError, r"v_template must be \[V, 3\]"),
    (lambda a: a.__setitem__(5, a[5][..., :100]), ValueError, r"posedirs must be \[V, 3, 135\]"),
    (lambda a: a.__setitem__(6, a[6][:15]), ValueError, r"J_template must be \[16, 3\]"),
    (lambda a: a.__setitem__(7, a[7][..., :4]), ValueError, r"J_shapedirs must be \[16, 3, S'\]"),
    (lambda a: a.__setitem__(8, a[8][:, :15]), ValueError, r"weights must be \[V, 16\]"),
    (lambda a: a.__setitem__(9, a[9][:15]), ValueError, "parents must list 16"),
    (lambda a: a.__setitem__(9, [-1] + [2] * 15), ValueError, r"parents\[1\] must be in"),
    (lambda a: a.__setitem__(10, [3, 16 + 10]), ValueError, "keypoint_ids must be joints"),
    (lambda a: a.__setitem__(1, a[1].float()), TypeError, "dtype of betas"),
])
def test_bad_shapes(change, error, match):
    _, sm, betas, pose, transl = sample(batch=2, num_vertices=10)
    args = list(op_args(sm, betas, pose, transl, (1, 17)))
    change(args)
    with pytest.raises(error, match=match):
        torch.ops.handops.mano_skinning(*args)
    with pytest.raises(error, match=match):
        torch.ops.handops.mano_keypoints_jacobian(*args)


def test_wrapper_checks_shapes():
    _, sm, betas, pose, transl = sample(batch=2, num_vertices=10)
    with pytest.raises(ValueError, match=r"pose must be \[B, 16, 3\] axis-angle or \[B, 16, 3, 3\]"):
        mano_skinning(sm, betas, pose[:1])
    with pytest.raises(ValueError, match=r"betas must be \[B, S\]"):
        mano_skinning(sm, betas[0], pose)
    with pytest.raises(ValueError, match=r"transl must be \[B, 3\]"):
        mano_skinning(sm, betas, pose, transl[:, :2])
    with pytest.raises(ValueError, match="axis-angle"):
        mano_keypoints_jacobian(sm, betas, axis_angle_to_matrix(pose), None, (1,))


def test_backward_checks_gradient_shapes():
    _, sm, betas, pose, _ = sample(batch=2, num_vertices=10)
    args = op_args(sm, betas, pose, None)
    with pytest.raises(ValueError, match="grad_vertices must be"):
        torch.ops.handops.mano_skinning_backward(torch.zeros(2, 9, 3, dtype=torch.float64), None, None, None, betas, pose, *args[3:])
    with pytest.raises(ValueError, match="grad_keypoints must be"):
        torch.ops.handops.mano_skinning_backward(None, torch.zeros(2, 1, 3, dtype=torch.float64), None, None, betas, pose, *args[3:])


# Observed against the float64 reference: 1e-7 m (points) and 3e-8 (Jacobian) in float32, 2e-16 in float64.
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-14), (torch.float32, 5e-7)])
def test_keypoints_jacobian_matches_the_reference(dtype, tol):
    _, sm, betas, pose, transl = sample(batch=3, num_vertices=50, dtype=dtype, seed=4)
    ids = keypoint_ids(50)
    points, jacobian = mano_keypoints_jacobian(sm, betas, pose, transl, ids)
    want_points, want_jacobian = mano_keypoints_jacobian_reference(*op_args(sm, betas.double(), pose.double(), transl.double(), ids))
    assert points.dtype == dtype and jacobian.shape == (3, len(ids), 3, 48)
    torch.testing.assert_close(points.double(), want_points, rtol=0, atol=tol)
    torch.testing.assert_close(jacobian.double(), want_jacobian, rtol=0, atol=tol)
    torch.testing.assert_close(points, mano_skinning(sm, betas, pose, transl, ids)[1])


def test_keypoints_jacobian_matches_finite_differences():
    # Independent of both implementations: central differences of the op's own keypoints.
    _, sm, betas, pose, transl = sample(batch=2, num_vertices=30, seed=6)
    ids = keypoint_ids(30)
    _, jacobian = mano_keypoints_jacobian(sm, betas, pose, transl, ids)
    step, columns = 1e-6, []
    for entry in range(48):
        delta = torch.zeros(48, dtype=torch.float64)
        delta[entry] = step
        delta = delta.view(1, 16, 3)
        plus = mano_skinning(sm, betas, pose + delta, transl, ids)[1]
        minus = mano_skinning(sm, betas, pose - delta, transl, ids)[1]
        columns.append((plus - minus) / (2 * step))
    torch.testing.assert_close(jacobian, torch.stack(columns, -1), rtol=1e-6, atol=1e-8)


def test_without_extension_the_reference_runs_forward_and_backward():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, warnings, torch\n"
        "sys.modules['handops._C'] = None\n"  # as if the extension had not been built
        "warnings.simplefilter('ignore')\n"
        "import handops\n"
        "from mano_helpers import random_mano_model\n"
        "from handops.ops.mano_skinning import SkinningModel, mano_skinning, mano_keypoints_jacobian\n"
        "from handops._reference.mano import mano_forward_reference\n"
        "assert not handops.HAS_EXTENSION\n"
        "m = random_mano_model(0, num_vertices=20)\n"
        "sm = SkinningModel.from_mano(m)\n"
        "b = torch.randn(2, 10, dtype=torch.float64, requires_grad=True)\n"
        "r = (torch.eye(3, dtype=torch.float64) + 0.1).repeat(2, 16, 1, 1).requires_grad_()\n"
        "v, k, j, t = mano_skinning(sm, b, r, None, (3, 17))\n"
        "loss = v.square().sum() + j.square().sum() + t.square().sum()\n"
        "ref = sum(o.square().sum() for o in mano_forward_reference(m, b, r))\n"
        "torch.testing.assert_close(loss, ref)\n"
        "g1, g2 = torch.autograd.grad(loss, (b, r)), torch.autograd.grad(ref, (b, r))\n"
        "[torch.testing.assert_close(x, y) for x, y in zip(g1, g2)]\n"
        "p = torch.randn(2, 16, 3, dtype=torch.float64)\n"
        "points, jac = mano_keypoints_jacobian(sm, b.detach(), p, None, (3, 17))\n"
        "assert jac.shape == (2, 2, 3, 48) and torch.allclose(points, mano_skinning(sm, b.detach(), p, None, (3, 17))[1])\n"
    )
    here = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=here.parent,
                            env={**__import__("os").environ, "PYTHONPATH": f"{here.parent}:{here}"})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("batch", [1, 17, 37])
def test_batches_across_hand_blocks(batch):
    # The kernel works on blocks of up to 16 hands: full, partial and single-hand blocks.
    _, sm, betas, pose, transl = sample(batch=batch, num_vertices=25, seed=batch)
    ids = keypoint_ids(25)
    leaves = [t.clone().requires_grad_() for t in (betas, pose, transl)]
    out = mano_skinning(sm, *leaves, ids)
    leaves2 = [t.clone().requires_grad_() for t in (betas, pose, transl)]
    ref = reference(sm, *leaves2, ids)
    for got, expected in zip(out, ref):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    weights = [torch.randn(o.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(ref)]
    got = torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), leaves)
    expected = torch.autograd.grad(sum((o * w).sum() for o, w in zip(ref, weights)), leaves2)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_mano_layer_outputs_equal_the_reference_with_transl():
    import handops

    model, _, betas, rotations, transl = sample(batch=3, num_vertices=60, seed=5, matrices=True)
    layer = handops.ManoLayer(model, use_pca=False, flat_hand_mean=True)
    vertices, joints, transforms = mano_forward_reference(model, betas, rotations, transl)
    for root, hand in ((rotations[:, 0], rotations[:, 1:]),  # matrices
                       (torch.from_numpy(Rotation.from_matrix(rotations[:, 0].numpy()).as_rotvec()), rotations[:, 1:])):  # mixed
        out = layer(betas, root, hand, transl=transl)
        torch.testing.assert_close(out.vertices, vertices, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.mano_joints, joints, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.transforms, transforms, rtol=1e-12, atol=1e-12)
    joints_only = layer(betas, rotations[:, 0], rotations[:, 1:], transl=transl, with_vertices=False)
    assert joints_only.vertices is None
    torch.testing.assert_close(joints_only.joints, out.joints, rtol=1e-12, atol=1e-12)
