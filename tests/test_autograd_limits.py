"""What the fused ops' autograd supports, and that everything else is a clear error, never zeros:
second derivatives raise, torch.func's grad and jacrev match the references, tree_map has no gradient."""

import pytest
import torch

import handops
from handops._reference.edge_conv import edge_conv_reference
from handops._reference.mano import mano_skinning_reference
from handops._reference.tree_marginals import tree_marginals_reference
from handops.mano import synthetic_model
from handops.ops.mano_skinning import SkinningModel, mano_skinning

TREE = handops.Tree([-1, 0, 0, 1])
CHAIN = handops.Graph(3, [(0, 1), (1, 2), (2, 2)])
SKINNING = SkinningModel.from_mano(synthetic_model(0))


def _tensors(*shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(*s, generator=gen, dtype=torch.float64) + 0.05 for s in shapes]


def _tree_case():
    unary, pairwise = _tensors((2, 4, 5, 5), (2, 6, 3, 3))
    ours = lambda u, p: handops.tree_marginals(u, p, TREE)  # noqa: E731
    reference = lambda u, p: tree_marginals_reference(u, p[:, None], u.new_ones(2, 1), TREE)[0]  # noqa: E731
    return ours, reference, (unary, pairwise)


def _edge_conv_case():
    x, weight = _tensors((2, 3, 5, 4), (2, 3, 3, 3))
    return (lambda x_, w: handops.edge_conv(x_, w, CHAIN)), (lambda x_, w: edge_conv_reference(x_, w, None, CHAIN)), (x, weight)


def _mano_case():
    betas, pose = _tensors((2, 10), (2, 16, 3))
    model = SKINNING.tensors()
    ours = lambda b, p: mano_skinning(SKINNING, b, p, None, (3, 16 + 500))[1]  # noqa: E731
    reference = lambda b, p: mano_skinning_reference(b, p, None, *model, SKINNING.parents, (3, 16 + 500))[1]  # noqa: E731
    return ours, reference, (betas, pose * 0.5)


CASES = {"tree_marginals": _tree_case, "edge_conv": _edge_conv_case, "mano_skinning": _mano_case}


@pytest.mark.parametrize("name", CASES)
def test_second_derivative_raises_instead_of_zeros(name):
    ours, reference, inputs = CASES[name]()
    a, b = [t.clone().requires_grad_() for t in inputs]
    # The reference has a non-zero second derivative, which the fused backward cannot give.
    g_ref, = torch.autograd.grad(reference(a, b).square().sum(), a, create_graph=True)
    assert torch.autograd.grad(g_ref.sum(), b)[0].abs().max() > 1e-6
    g, = torch.autograd.grad(ours(a, b).square().sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match=f"handops.{name} has no second derivative"):
        torch.autograd.grad(g.sum(), b)


def test_mano_layer_second_derivative_raises():
    layer = handops.ManoLayer(synthetic_model(0), use_pca=False)
    betas, pose = (t.requires_grad_() for t in _tensors((2, 10), (2, 45)))
    g, = torch.autograd.grad(layer(betas, torch.zeros(2, 3), pose).joints.square().sum(), pose, create_graph=True)
    with pytest.raises(RuntimeError, match="handops.mano_skinning has no second derivative"):
        g.sum().backward()


@pytest.mark.parametrize("name", CASES)
def test_first_derivative_with_create_graph_is_unchanged(name):
    ours, _, inputs = CASES[name]()
    leaves = [t.clone().requires_grad_() for t in inputs]
    plain = torch.autograd.grad(ours(*leaves).square().sum(), leaves)
    graphed = torch.autograd.grad(ours(*leaves).square().sum(), leaves, create_graph=True)
    for p, g in zip(plain, graphed):
        assert g.requires_grad
        torch.testing.assert_close(g.detach(), p, rtol=0, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_torch_func_grad_and_jacrev_match_the_reference(name):
    ours, reference, inputs = CASES[name]()
    for argnums in (0, 1):
        got = torch.func.grad(lambda *a: ours(*a).square().sum(), argnums=argnums)(*inputs)
        want = torch.func.grad(lambda *a: reference(*a).square().sum(), argnums=argnums)(*inputs)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    with pytest.warns(UserWarning, match="performance drop"):  # the backward ops batch by PyTorch's loop
        got = torch.func.jacrev(ours, argnums=(0, 1))(*inputs)
    want = torch.func.jacrev(reference, argnums=(0, 1))(*inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_torch_func_higher_order_is_a_clear_error(name):
    ours, _, (a, b) = CASES[name]()
    with pytest.raises(RuntimeError, match=f"handops.{name} has no second derivative"):
        torch.func.grad(lambda b_: torch.func.grad(lambda a_: ours(a_, b_).square().sum())(a).sum())(b)
    with pytest.raises(RuntimeError, match=f"handops.{name} has no forward-mode derivative"):
        torch.func.jvp(lambda a_: ours(a_, b), (a,), (torch.ones_like(a),))


def test_tree_map_outputs_do_not_require_grad():
    unary, pairwise = (t.requires_grad_() for t in _tensors((2, 4, 5, 5), (2, 6, 3, 3)))
    max_marginals, config = handops.tree_map(unary, pairwise, TREE)
    assert not max_marginals.requires_grad and not config.requires_grad
