"""Triton MANO skinning kernels (handops/_triton/mano_skinning.py) against the readable reference.

Without a GPU the kernels run in the Triton interpreter on CPU tensors (conftest sets
TRITON_INTERPRET=1), so the models here are small random MANO-format hands (tests/mano_helpers.py)
plus one run on the 912-vertex synthetic hand. The gradients are compared with autograd through the
float64 reference, which is also the truth the float32 kernels approximate. A separate test compiles
every kernel ahead of time for sm_80 and sm_90 at the real MANO sizes.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from scipy.spatial.transform import Rotation

pytest.importorskip("triton")

from mano_helpers import random_mano_model  # noqa: E402
from triton_aot import compile_for_sm80_and_sm90  # noqa: E402

import handops  # noqa: E402
from handops._reference.mano import mano_forward_reference, mano_skinning_reference  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from handops._triton import mano_skinning as tm  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _sample(batch=3, num_vertices=40, num_betas=10, dtype=torch.float64, seed=0, free=True):
    """A random model and inputs; ``free`` perturbs the rotations into general 3x3 matrices (the op is
    defined for any matrices, and a perturbation makes every pose-feature entry matter)."""
    model = random_mano_model(seed, num_vertices=num_vertices)
    gen = torch.Generator().manual_seed(seed)
    betas = 2 * torch.randn(batch, num_betas, generator=gen, dtype=torch.float64)
    rotations = torch.from_numpy(Rotation.random(max(batch, 1) * 16, random_state=seed).as_matrix())
    rotations = rotations.view(-1, 16, 3, 3)[:batch].clone()
    if free:
        rotations += 0.1 * torch.randn(rotations.shape, generator=gen, dtype=torch.float64)
    return model, betas.to(dtype), rotations.to(dtype)


def _args(model, betas, rotations):
    m = model.to(dtype=betas.dtype)
    tensors = [betas, rotations, m.v_template, m.shapedirs, m.posedirs, m.J_regressor, m.weights]
    return [t.to(DEVICE) for t in tensors] + [m.parents.tolist()]


def _joint_basis(J_regressor, v_template, shapedirs):
    """J_template = J_regressor v_template [16, 3] and J_shapedirs = J_regressor shapedirs [16, 3, S']."""
    return J_regressor @ v_template, torch.einsum("jv,vks->jks", J_regressor, shapedirs)


def _launch_forward(betas, rotations, v_template, shapedirs, posedirs, J_regressor, weights, parents):
    """(vertices, joints, transforms) from the registered schema's Triton function, for matrices and no
    transl: what the tests below compare with ``mano_forward_reference`` (which takes J_regressor)."""
    vertices, _, joints, transforms = tm.mano_skinning_forward(
        betas, rotations, None, v_template, shapedirs, posedirs, *_joint_basis(J_regressor, v_template, shapedirs),
        weights, parents, [])
    return vertices, joints, transforms


def _launch_backward(grad_vertices, grad_joints, grad_transforms, betas, rotations, v_template, shapedirs, posedirs,
                     J_regressor, weights, parents):
    """(grad_betas, grad_rotations) from the registered schema's Triton backward (see _launch_forward)."""
    grad_betas, grad_rotations, _ = tm.mano_skinning_backward(
        grad_vertices, None, grad_joints, grad_transforms, betas, rotations, v_template, shapedirs, posedirs,
        *_joint_basis(J_regressor, v_template, shapedirs), weights, parents, [])
    return grad_betas, grad_rotations


def _output_grads(batch, num_vertices, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = ((batch, num_vertices, 3), (batch, 16, 3), (batch, 16, 4, 4))
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).to(DEVICE) for s in shapes]


def _reference(model, betas, rotations, grads):
    """Forward and (grad_betas, grad_rotations) by autograd through the float64 reference."""
    b = betas.detach().cpu().double().requires_grad_(True)
    r = rotations.detach().cpu().double().requires_grad_(True)
    outputs = mano_forward_reference(model.to(dtype=torch.float64), b, r)
    used = [(o, g.cpu().double()) for o, g in zip(outputs, grads) if g is not None]
    gradients = torch.autograd.grad([o for o, _ in used], (b, r), [g for _, g in used], allow_unused=True)
    gradients = [torch.zeros_like(t) if g is None else g for g, t in zip(gradients, (b, r))]
    return [o.detach() for o in outputs], gradients


def _assert_close(actual, expected, rtol):
    """Relative to the tensor's scale (a sum of many signed products has no useful elementwise rtol)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    actual, expected = actual.cpu().double(), expected.cpu().double()
    assert torch.isfinite(actual).all()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-300))


def _check(model, betas, rotations, rtol, seed=1):
    args = _args(model, betas, rotations)
    outputs = _launch_forward(*args)
    batch, num_vertices = betas.shape[0], model.v_template.shape[0]
    grads = _output_grads(batch, num_vertices, betas.dtype, seed)
    ref_outputs, ref_grads = _reference(model, betas, rotations, grads)
    for got, want in zip(outputs, ref_outputs):
        assert got.dtype == betas.dtype and got.device.type == DEVICE
        _assert_close(got, want, rtol)
    got_grads = _launch_backward(*grads, *args)
    for got, want, like in zip(got_grads, ref_grads, (betas, rotations)):
        assert got.dtype == betas.dtype and got.shape == like.shape
        _assert_close(got, want, rtol)
    return outputs, got_grads


@pytest.fixture
def small_tiles(monkeypatch):
    # 16-vertex blocks (the smallest tl.dot allows) give a 40-vertex model three vertex blocks, the last
    # one partial; 8-hand chain blocks give B = 17 three chain programs, and 16-hand skinning blocks two.
    monkeypatch.setattr(tm, "TILE_LIMITS", dict(tm.TILE_LIMITS, BLOCK_V=16, CHAIN_BLOCK_B=8))


# Observed (relative to each tensor's largest entry): 1.8e-7 in float32, 6e-16 in float64.
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 5e-15), (torch.float32, 1e-6)])
@pytest.mark.parametrize("num_betas", [10, 4])
def test_matches_reference(dtype, rtol, num_betas):
    model, betas, rotations = _sample(batch=3, num_vertices=40, num_betas=num_betas, dtype=dtype, seed=num_betas)
    _check(model, betas, rotations, rtol)


def test_many_blocks_of_vertices_and_hands(small_tiles):
    model, betas, rotations = _sample(batch=17, num_vertices=40, num_betas=10, seed=3)
    assert tm.TILE_LIMITS["BLOCK_V"] == 16
    _check(model, betas, rotations, 1e-12, seed=4)


def test_synthetic_hand():
    model = handops.mano.synthetic_model()
    assert model.v_template.shape[0] == 912
    gen = torch.Generator().manual_seed(5)
    betas = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    rotations = torch.from_numpy(Rotation.random(32, random_state=5).as_matrix()).view(2, 16, 3, 3)
    _check(model, betas, rotations, 1e-12, seed=6)


def test_no_shape_coefficients():
    model, betas, rotations = _sample(batch=2, num_vertices=30, num_betas=0, seed=16)
    assert betas.shape == (2, 0)
    _, (grad_betas, _) = _check(model, betas, rotations, 1e-12, seed=17)
    assert grad_betas.shape == (2, 0)


def test_joint_basis_of_the_full_model_with_a_subset_of_vertices():
    # The joints depend on the vertices only through J_template and J_shapedirs: with those of the full
    # model, a subset of the vertices gives the full model's outputs at that subset.
    model, betas, rotations = _sample(batch=2, num_vertices=40, num_betas=10, seed=18)
    betas_, rotations_, vt, sd, pd, jr, w, parents = _args(model, betas, rotations)
    j_template, j_shapedirs = _joint_basis(jr, vt, sd)
    keep = torch.tensor([3, 17, 0, 39, 21, 8])
    full = _launch_forward(betas_, rotations_, vt, sd, pd, jr, w, parents)
    part = tm._forward(betas_, rotations_, vt[keep], sd[keep], pd[keep], j_template, j_shapedirs, w[keep], parents)
    _assert_close(part[0], full[0][:, keep], 1e-13)
    _assert_close(part[1], full[1], 1e-13)
    _assert_close(part[2], full[2], 1e-13)
    grads = _output_grads(2, 40, torch.float64, 19)
    want = _launch_backward(grads[0] * (torch.arange(40) == 3)[:, None], *grads[1:], *_args(model, betas, rotations))
    sub = torch.zeros(2, len(keep), 3, dtype=torch.float64)
    sub[:, 0] = grads[0][:, 3]
    got = tm._backward(sub, *grads[1:], betas_, rotations_, vt[keep], sd[keep], pd[keep], j_template, j_shapedirs,
                       w[keep], parents)
    for g, e in zip(got, want):
        _assert_close(g, e, 1e-12)


@pytest.mark.parametrize("axis_angle, with_transl", [(True, True), (False, False)])
def test_op_schema_glue(axis_angle, with_transl):
    # handops::mano_skinning's registered schema: the joint basis of the full model with a subset of the
    # vertices, axis-angle or matrix pose, transl, keypoints (joints, vertices, a repeated id).
    model, betas, rotations = _sample(batch=3, num_vertices=40, num_betas=8, seed=20)
    gen = torch.Generator().manual_seed(21)
    pose = torch.randn(3, 16, 3, generator=gen, dtype=torch.float64) if axis_angle else rotations
    if axis_angle:
        pose[0, 2] = 0.0  # Rodrigues' series branch
    transl = torch.randn(3, 3, generator=gen, dtype=torch.float64) if with_transl else None
    keep = torch.tensor([5, 0, 33, 12, 39, 20, 7])
    j_template = model.J_regressor @ model.v_template
    j_shapedirs = torch.einsum("jv,vks->jks", model.J_regressor, model.shapedirs)
    tensors = (model.v_template[keep], model.shapedirs[keep], model.posedirs[keep], j_template, j_shapedirs, model.weights[keep])
    parents, ids = model.parents.tolist(), [0, 15, 16 + 3, 7, 16 + 6, 16 + 3]
    got = tm.mano_skinning_forward(betas, pose, transl, *tensors, parents, ids)
    inputs = [betas.clone().requires_grad_(), pose.clone().requires_grad_(), (transl if with_transl else torch.zeros(3, 3,
              dtype=torch.float64)).clone().requires_grad_()]
    want = mano_skinning_reference(*inputs, *tensors, parents, ids)
    assert [tuple(g.shape) for g in got] == [(3, 7, 3), (3, 6, 3), (3, 16, 3), (3, 16, 4, 4)]
    for g, w in zip(got, want):
        _assert_close(g, w.detach(), 1e-12)
    grads = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in want]
    grads[2] = None  # any output gradient may be missing
    want_grads = torch.autograd.grad([w for w, g in zip(want, grads) if g is not None], inputs,
                                     [g for g in grads if g is not None])
    got_grads = tm.mano_skinning_backward(*grads, betas, pose, *tensors, parents, ids)
    for g, w in zip(got_grads, want_grads):
        assert g.shape == w.shape
        _assert_close(g, w, 1e-12)


def test_identity_rotations_give_the_shaped_template():
    model, betas, _ = _sample(batch=2, num_vertices=30, num_betas=6, seed=7)
    eye = torch.eye(3, dtype=torch.float64).expand(2, 16, 3, 3).contiguous()
    vertices, joints, transforms = _launch_forward(*_args(model, betas, eye))
    v_shaped = model.v_template + torch.einsum("bl,vkl->bvk", betas, model.shapedirs[..., :6])
    _assert_close(vertices, v_shaped, 1e-13)
    _assert_close(joints, torch.einsum("jv,bvk->bjk", model.J_regressor, v_shaped), 1e-13)
    _assert_close(transforms, torch.eye(4, dtype=torch.float64).expand(2, 16, 4, 4), 1e-13)


def test_gradient_of_one_output_at_a_time():
    model, betas, rotations = _sample(batch=2, num_vertices=30, num_betas=5, seed=8)
    args = _args(model, betas, rotations)
    full = _output_grads(2, 30, torch.float64, 9)
    for index in range(3):
        grads = [g if i == index else None for i, g in enumerate(full)]
        _, want = _reference(model, betas, rotations, grads)
        got = _launch_backward(*grads, *args)  # None is a zero gradient
        for g, w in zip(got, want):
            _assert_close(g, w, 1e-12)
        assert got[1].abs().max() > 0  # every output depends on the rotations


def test_empty_batch():
    model, betas, rotations = _sample(batch=0, num_vertices=30, num_betas=10)
    args = _args(model, betas, rotations)
    vertices, joints, transforms = _launch_forward(*args)
    assert vertices.shape == (0, 30, 3) and joints.shape == (0, 16, 3) and transforms.shape == (0, 16, 4, 4)
    grad_betas, grad_rotations = _launch_backward(vertices, joints, transforms, *args)
    assert grad_betas.shape == (0, 10) and grad_rotations.shape == (0, 16, 3, 3)
    tensors = (*args[2:5], *_joint_basis(args[5], args[2], args[3]), args[6])
    pose = torch.zeros(0, 16, 3, dtype=torch.float64)
    outputs = tm.mano_skinning_forward(betas, pose, torch.zeros(0, 3, dtype=torch.float64), *tensors, args[7], [0, 20])
    assert [tuple(o.shape) for o in outputs] == [(0, 30, 3), (0, 2, 3), (0, 16, 3), (0, 16, 4, 4)]
    grads = tm.mano_skinning_backward(*outputs, betas, pose, *tensors, args[7], [0, 20])
    assert [tuple(g.shape) for g in grads] == [(0, 10), (0, 16, 3), (0, 3)]


def test_non_contiguous_inputs():
    model, betas, rotations = _sample(batch=3, num_vertices=30, num_betas=6, seed=10)
    args = _args(model, betas, rotations)
    # Same values, other strides: betas a column slice, rotations transposed in memory, the model
    # tensors transposed copies or slices of bigger tensors.
    wide = torch.zeros(3, 12, dtype=torch.float64)
    wide[:, ::2] = betas
    betas_nc = wide[:, ::2]
    rot_nc = rotations.transpose(2, 3).contiguous().transpose(2, 3)
    vt, sd, pd, jr, w = args[2:7]
    vt_nc = vt.t().contiguous().t()
    sd_nc = torch.cat([sd, sd], 2)[..., : sd.shape[2]]
    pd_nc = pd.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    jr_nc = jr.t().contiguous().t()
    w_nc = w.t().contiguous().t()
    nc = [betas_nc, rot_nc, vt_nc, sd_nc, pd_nc, jr_nc, w_nc]
    assert not any(t.is_contiguous() for t in nc)
    grads = _output_grads(3, 30, torch.float64, 11)
    grads_nc = [g.transpose(-1, -2).contiguous().transpose(-1, -2) for g in grads]
    ref_outputs, ref_grads = _reference(model, betas, rotations, grads)
    for got, want in zip(_launch_forward(*nc, args[7]), ref_outputs):
        _assert_close(got, want, 1e-12)
    for got, want in zip(_launch_backward(*grads_nc, *nc, args[7]), ref_grads):
        _assert_close(got, want, 1e-12)


def test_hands_are_independent_and_a_nan_hand_stays_its_own():
    # A NaN in one hand's rotations must not reach the other hands (masked lanes, the tl.dot columns).
    model, betas, rotations = _sample(batch=3, num_vertices=30, num_betas=10, seed=12)
    bad = rotations.clone()
    bad[1, 4, 0, 0] = float("nan")
    args, bad_args = _args(model, betas, rotations), _args(model, betas, bad)
    grads = _output_grads(3, 30, torch.float64, 13)
    clean = _launch_forward(*args) + _launch_backward(*grads, *args)
    dirty = _launch_forward(*bad_args) + _launch_backward(*grads, *bad_args)
    for c, d in zip(clean, dirty):
        assert torch.equal(c[[0, 2]], d[[0, 2]])
        assert torch.isnan(d[1]).any()


def test_backward_is_deterministic(small_tiles):
    model, betas, rotations = _sample(batch=5, num_vertices=40, num_betas=10, dtype=torch.float32, seed=14)
    args = _args(model, betas, rotations)
    grads = _output_grads(5, 40, torch.float32, 15)
    first = _launch_backward(*grads, *args)
    second = _launch_backward(*grads, *args)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_bad_inputs_raise_clear_errors():
    model, betas, rotations = _sample(batch=2, num_vertices=20, num_betas=10)
    args = _args(model, betas, rotations)

    def call(index, value):
        bad = list(args)
        bad[index] = value
        return _launch_forward(*bad)

    with pytest.raises(ValueError, match="betas must be"):
        call(0, betas[0])
    with pytest.raises(ValueError, match="pose must be"):
        call(1, rotations[:1])
    with pytest.raises(ValueError, match="only 10 shape blend shapes"):
        call(0, torch.zeros(2, 11, dtype=torch.float64))
    with pytest.raises(ValueError, match="posedirs"):
        call(4, args[4][..., :134])
    with pytest.raises(ValueError, match="weights"):
        call(6, args[6][:, :15])
    with pytest.raises(TypeError, match="dtype of betas"):
        call(1, rotations.float())
    with pytest.raises(TypeError, match="float32 or float64"):
        _launch_forward(*[t.half() if isinstance(t, torch.Tensor) else t for t in args])
    with pytest.raises(RuntimeError, match="device"):
        call(3, args[3].to("meta"))
    with pytest.raises(ValueError, match=r"parents\[5\]"):
        call(7, [-1, 0, 1, 2, 0, 7, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
    with pytest.raises(ValueError, match="parents must list 16"):
        call(7, args[7][:15])
    grads = _output_grads(2, 20, torch.float64, 0)
    with pytest.raises(ValueError, match="grad_vertices"):
        _launch_backward(grads[0][:, :19], *grads[1:], *args)
    tensors = (*args[2:5], *_joint_basis(args[5], args[2], args[3]), args[6])
    with pytest.raises(ValueError, match="keypoint_ids"):
        tm.mano_skinning_forward(betas, rotations, None, *tensors, args[7], [0, 36])
    with pytest.raises(ValueError, match="pose must be"):
        tm.mano_skinning_forward(betas, rotations[..., 0, :2], None, *tensors, args[7], [0])
    with pytest.raises(ValueError, match="J_template"):
        tm.mano_skinning_forward(betas, rotations, None, *tensors[:3], tensors[3][:15], *tensors[4:], args[7], [0])
    with pytest.raises(ValueError, match="J_shapedirs"):
        tm._forward(betas, rotations, *tensors[:4], tensors[4][..., :3], tensors[5], args[7])


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation for sm_80 and sm_90
# ---------------------------------------------------------------------------------------------


def test_every_kernel_compiles_for_sm80_and_sm90():
    # The real MANO sizes: V = 778 vertices, S = 10 (V and B are int32 runtime arguments).
    result = compile_for_sm80_and_sm90("mano_skinning", [["float32", 778, 10], ["float64", 778, 10]])
    module_kernels = {name for name in dir(tm) if name.endswith("_kernel") and hasattr(getattr(tm, name), "fn")}
    assert module_kernels == set(result["kernels"]), "KERNELS must list every kernel of the module"
    sizes = tm._sizes(10)
    for sm in (80, 90):
        for dtype in ("torch.float32", "torch.float64"):
            done = [c for c in result["compiled"] if c["sm"] == sm and c["dtype"] == dtype]
            assert {c["kernel"] for c in done} == module_kernels
            for c in done:
                kernel = getattr(tm, c["kernel"])
                expected = tm._pick(kernel, sizes)
                if c["kernel"] == "_rodrigues_kernel":  # both variants
                    expected = {**expected, "BACKWARD": c["constexprs"]["BACKWARD"]}
                assert c["constexprs"] == expected, c
            assert sorted(c["constexprs"]["BACKWARD"] for c in done if c["kernel"] == "_rodrigues_kernel") == [False, True]


def test_the_cuda_registration_runs_these_kernels_with_the_ops_arguments():
    # What handops::mano_skinning runs for CUDA tensors (handops/ops/mano_skinning.py), called here on CPU
    # tensors in the interpreter with the op's own argument list, against the C++ CPU kernel.
    from handops.ops import mano_skinning as ops

    model = random_mano_model(3, num_vertices=30)
    layer = handops.ManoLayer(model, use_pca=False, flat_hand_mean=True)
    gen = torch.Generator().manual_seed(4)
    betas, pose, transl = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in ((2, 10), (2, 16, 3), (2, 3)))
    m = layer.skinning
    args = (betas, pose, transl, *m.tensors(), list(m.parents), list(layer.keypoint_ids))
    got = ops._cuda_forward(*args)
    want = torch.ops.handops.mano_skinning(*args)
    for g, w in zip(got, want):
        _assert_close(g, w, 1e-12)
    grads = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in want]
    grads[0] = None
    backward_args = (*grads, betas, pose, *args[3:])
    for g, w in zip(ops._cuda_backward(*backward_args), torch.ops.handops.mano_skinning_backward(*backward_args)):
        _assert_close(g, w, 1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
def test_rodrigues_kernel_matches_the_reference_and_its_gradient(dtype, tol):
    from handops.geometry import axis_angle_to_matrix

    gen = torch.Generator().manual_seed(8)
    pose = 1.5 * torch.randn(3, 16, 3, generator=gen, dtype=torch.float64)
    pose[0, :4] *= torch.tensor([0.0, 1e-9, 1e-3, 9e-3], dtype=torch.float64)[:, None]  # zero and the series branch
    pose[1, 0] = torch.tensor([0.011, 0.0, 0.0])  # just past the series
    pose[1, 1] = torch.tensor([3.1, 0.2, -0.1])  # near pi
    leaf = pose.clone().requires_grad_()
    want = axis_angle_to_matrix(leaf)
    grad = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    (want_grad,) = torch.autograd.grad(want, leaf, grad)
    got = tm._rotations(pose.to(dtype))
    got_grad = tm._rotations_backward(pose.to(dtype), grad.to(dtype))
    assert got.dtype == dtype and got_grad.dtype == dtype and got.shape == (3, 16, 3, 3)
    torch.testing.assert_close(got.double(), want.detach(), rtol=0, atol=tol)
    _assert_close(got_grad.double(), want_grad, tol)
    assert tm._rotations(pose[:0]).shape == (0, 16, 3, 3) and tm._rotations_backward(pose[:0], grad[:0]).shape == (0, 16, 3)
