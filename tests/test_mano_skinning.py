"""handops::mano_skinning against mano_forward_reference (the spec), its analytic backward, registration."""

import pytest
import torch
from scipy.spatial.transform import Rotation

from handops._reference.mano import mano_forward_reference
from handops.ops.mano_skinning import mano_skinning
from mano_helpers import random_mano_model


def sample(batch=3, num_vertices=40, num_betas=10, dtype=torch.float64, seed=0):
    model = random_mano_model(seed, num_vertices=num_vertices)
    g = torch.Generator().manual_seed(seed)
    betas = torch.randn(batch, num_betas, generator=g, dtype=torch.float64).to(dtype)
    rotations = torch.from_numpy(Rotation.random(batch * 16, random_state=seed).as_matrix()).view(batch, 16, 3, 3).to(dtype)
    return model, betas, rotations


def op_args(model, betas, rotations):
    m = model.to(dtype=betas.dtype)
    return (betas, rotations, m.v_template, m.shapedirs, m.posedirs, m.J_regressor, m.weights, m.parents.tolist())


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("num_betas", [10, 4])
def test_matches_reference(dtype, tol, num_betas):
    model, betas, rotations = sample(batch=4, num_vertices=778, num_betas=num_betas, dtype=dtype)
    for got, expected in zip(mano_skinning(model, betas, rotations), mano_forward_reference(model, betas, rotations)):
        assert got.dtype == dtype
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_zero_rotations_are_the_rest_pose():
    model, betas, _ = sample(batch=2)
    eye = torch.eye(3, dtype=torch.float64).expand(2, 16, 3, 3)
    vertices, joints, transforms = mano_skinning(model, betas, eye)
    ref = mano_forward_reference(model, betas, eye)
    for got, expected in zip((vertices, joints, transforms), ref):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # Identity rotations: no pose correctives, every A_k is the identity, vertices are v_shaped.
    v_shaped = model.v_template + torch.einsum("bl,vkl->bvk", betas, model.shapedirs)
    torch.testing.assert_close(vertices, v_shaped, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(transforms, torch.eye(4, dtype=torch.float64).expand(2, 16, 4, 4))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-3)])
def test_gradients_match_autograd_through_the_reference(dtype, tol):
    model, betas, rotations = sample(batch=3, num_vertices=200, dtype=dtype, seed=1)
    g = torch.Generator().manual_seed(2)
    weights = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in ((3, 200, 3), (3, 16, 3), (3, 16, 4, 4))]
    grads = []
    for fn in (mano_skinning, mano_forward_reference):
        b, r = betas.clone().requires_grad_(), rotations.clone().requires_grad_()
        loss = sum((o * w).sum() for o, w in zip(fn(model, b, r), weights))
        grads.append(torch.autograd.grad(loss, (b, r)))
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_gradient_of_one_output_only():
    model, betas, rotations = sample(batch=2, seed=3)
    for index in range(3):
        grads = []
        for fn in (mano_skinning, mano_forward_reference):
            b, r = betas.clone().requires_grad_(), rotations.clone().requires_grad_()
            grads.append(torch.autograd.grad(fn(model, b, r)[index].square().sum(), (b, r)))
        for got, expected in zip(*grads):
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck(seed):
    model, betas, rotations = sample(batch=2, num_vertices=8, num_betas=5, seed=seed)
    # Free matrices (not only rotations): the op is defined for any 3x3 input, like the reference.
    rotations = rotations + 0.1 * torch.randn(rotations.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    b, r = betas.requires_grad_(), rotations.requires_grad_()
    assert torch.autograd.gradcheck(lambda b_, r_: mano_skinning(model, b_, r_), (b, r))


def test_opcheck():
    model, betas, rotations = sample(batch=2, num_vertices=10)
    torch.library.opcheck(torch.ops.handops.mano_skinning, op_args(model, betas, rotations))
    torch.library.opcheck(torch.ops.handops.mano_skinning, op_args(model, betas.requires_grad_(), rotations.requires_grad_()))
    model32, b32, r32 = sample(batch=1, num_vertices=10, dtype=torch.float32)
    torch.library.opcheck(torch.ops.handops.mano_skinning, op_args(model32, b32, r32))


def test_torch_compile_fullgraph():
    model, betas, rotations = sample(batch=2, num_vertices=30)
    m = model.to(dtype=torch.float64)
    parents = m.parents.tolist()

    def fn(b, r):
        vertices, joints, transforms = torch.ops.handops.mano_skinning(b, r, m.v_template, m.shapedirs, m.posedirs,
                                                                       m.J_regressor, m.weights, parents)
        return vertices.square().sum() + joints.sum() + transforms.sum()

    compiled = torch.compile(fn, fullgraph=True)
    b, r = betas.clone().requires_grad_(), rotations.clone().requires_grad_()
    loss = compiled(b, r)
    torch.testing.assert_close(loss, fn(betas, rotations))
    grads = torch.autograd.grad(loss, (b, r))
    b2, r2 = betas.clone().requires_grad_(), rotations.clone().requires_grad_()
    expected = torch.autograd.grad(fn(b2, r2), (b2, r2))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_empty_batch():
    model, betas, rotations = sample(batch=0, num_vertices=12)
    b, r = betas.requires_grad_(), rotations.requires_grad_()
    vertices, joints, transforms = mano_skinning(model, b, r)
    assert vertices.shape == (0, 12, 3) and joints.shape == (0, 16, 3) and transforms.shape == (0, 16, 4, 4)
    g_b, g_r = torch.autograd.grad(vertices.sum() + joints.sum() + transforms.sum(), (b, r))
    assert g_b.shape == (0, 10) and g_r.shape == (0, 16, 3, 3)


def test_non_contiguous_inputs():
    model, betas, rotations = sample(batch=4, num_vertices=30)
    betas_nc = betas.t().contiguous().t()[::2]  # column-major and strided
    rotations_nc = rotations.transpose(-1, -2).contiguous().transpose(-1, -2)[::2]
    assert not betas_nc.is_contiguous() and not rotations_nc.is_contiguous()
    m = model.to(dtype=torch.float64)
    shapedirs_nc = m.shapedirs.transpose(0, 2).contiguous().transpose(0, 2)
    got = torch.ops.handops.mano_skinning(betas_nc, rotations_nc, m.v_template, shapedirs_nc, m.posedirs, m.J_regressor,
                                          m.weights, m.parents.tolist())
    for g, e in zip(got, mano_forward_reference(model, betas[::2], rotations[::2])):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    grads = torch.ops.handops.mano_skinning_backward(*[torch.ones_like(t).transpose(0, -1).contiguous().transpose(0, -1) for t in got],
                                                     *op_args(model, betas_nc, rotations_nc))
    b, r = betas[::2].clone().requires_grad_(), rotations[::2].clone().requires_grad_()
    expected = torch.autograd.grad(sum(o.sum() for o in mano_forward_reference(model, b, r)), (b, r))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("change,error,match", [
    (lambda a: a.__setitem__(0, a[0][:, :, None]), ValueError, "betas must be"),
    (lambda a: a.__setitem__(1, a[1][:, :15]), ValueError, r"rotations must be \[B, 16, 3, 3\]"),
    (lambda a: a.__setitem__(0, torch.zeros(2, 11, dtype=torch.float64)), ValueError, "shape blend shapes"),
    (lambda a: a.__setitem__(2, a[2][:, :2]), ValueError, r"v_template must be \[V, 3\]"),
    (lambda a: a.__setitem__(4, a[4][..., :100]), ValueError, r"posedirs must be \[V, 3, 135\]"),
    (lambda a: a.__setitem__(5, a[5][:, :-1]), ValueError, r"J_regressor must be \[16, V\]"),
    (lambda a: a.__setitem__(6, a[6][:, :15]), ValueError, r"weights must be \[V, 16\]"),
    (lambda a: a.__setitem__(7, a[7][:15]), ValueError, "parents must list 16"),
    (lambda a: a.__setitem__(7, [-1] + [2] * 15), ValueError, r"parents\[1\] must be in"),
    (lambda a: a.__setitem__(1, a[1].float()), TypeError, "dtype of betas"),
])
def test_bad_shapes(change, error, match):
    model, betas, rotations = sample(batch=2, num_vertices=10)
    args = list(op_args(model, betas, rotations))
    change(args)
    with pytest.raises(error, match=match):
        torch.ops.handops.mano_skinning(*args)


def test_wrapper_checks_shapes():
    model, betas, rotations = sample(batch=2, num_vertices=10)
    with pytest.raises(ValueError, match=r"rotations must be \[B, 16, 3, 3\]"):
        mano_skinning(model, betas, rotations[:1])
    with pytest.raises(ValueError, match=r"betas must be \[B, S\]"):
        mano_skinning(model, betas[0], rotations)


def test_backward_checks_gradient_shapes():
    model, betas, rotations = sample(batch=2, num_vertices=10)
    with pytest.raises(ValueError, match="grad_vertices must be"):
        torch.ops.handops.mano_skinning_backward(torch.zeros(2, 9, 3, dtype=torch.float64), torch.zeros(2, 16, 3, dtype=torch.float64),
                                                torch.zeros(2, 16, 4, 4, dtype=torch.float64), *op_args(model, betas, rotations))


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
        "from handops.ops.mano_skinning import mano_skinning\n"
        "from handops._reference.mano import mano_forward_reference\n"
        "assert not handops.HAS_EXTENSION\n"
        "m = random_mano_model(0, num_vertices=20)\n"
        "b = torch.randn(2, 10, dtype=torch.float64, requires_grad=True)\n"
        "r = (torch.eye(3, dtype=torch.float64) + 0.1).repeat(2, 16, 1, 1).requires_grad_()\n"
        "loss = sum(o.square().sum() for o in mano_skinning(m, b, r))\n"
        "ref = sum(o.square().sum() for o in mano_forward_reference(m, b, r))\n"
        "torch.testing.assert_close(loss, ref)\n"
        "g1, g2 = torch.autograd.grad(loss, (b, r)), torch.autograd.grad(ref, (b, r))\n"
        "[torch.testing.assert_close(x, y) for x, y in zip(g1, g2)]\n"
    )
    here = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=here.parent,
                            env={**__import__("os").environ, "PYTHONPATH": f"{here.parent}:{here}"})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("batch", [1, 17, 37])
def test_batches_across_hand_blocks(batch):
    # The kernel works on blocks of up to 16 hands: full, partial and single-hand blocks.
    model, betas, rotations = sample(batch=batch, num_vertices=25, seed=batch)
    b, r = betas.clone().requires_grad_(), rotations.clone().requires_grad_()
    out = mano_skinning(model, b, r)
    b2, r2 = betas.clone().requires_grad_(), rotations.clone().requires_grad_()
    ref = mano_forward_reference(model, b2, r2)
    for got, expected in zip(out, ref):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    weights = [torch.randn(o.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(ref)]
    got = torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), (b, r))
    expected = torch.autograd.grad(sum((o * w).sum() for o, w in zip(ref, weights)), (b2, r2))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_mano_layer_outputs_equal_the_reference_with_transl():
    import handops

    model, betas, rotations = sample(batch=3, num_vertices=60, seed=5)
    transl = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    layer = handops.ManoLayer(model, use_pca=False, flat_hand_mean=True)
    out = layer(betas, rotations[:, 0], rotations[:, 1:], transl=transl)
    vertices, joints, transforms = mano_forward_reference(model, betas, rotations, transl)
    torch.testing.assert_close(out.vertices, vertices, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.mano_joints, joints, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.transforms, transforms, rtol=1e-12, atol=1e-12)
