"""The benchmarks' pure-PyTorch alternatives agree with the thesis-style reference, values and gradients."""

import pytest
import torch

import handops
from benchmarks.alternatives import edge_conv_fft, fft_size, tree_marginals_direct_levels, tree_marginals_fft_levels
from handops._reference.edge_conv import edge_conv_reference
from handops._reference.tree_marginals import tree_marginals_reference
from tree_helpers import gaussian

TREE = handops.hand_tree()
M = TREE.num_messages


TREE_ALTERNATIVES = (tree_marginals_fft_levels, tree_marginals_direct_levels)


def _reference(unary, pairwise, weights=None):
    """The reference through the canonical shapes of handops.tree_marginals' four pairwise layouts."""
    batch = unary.shape[0]
    if pairwise.dim() == 3:
        pairwise, weights = pairwise[None, None], unary.new_ones(batch, 1)
    elif pairwise.dim() == 4 and weights is None:
        pairwise, weights = pairwise[:, None], unary.new_ones(batch, 1)
    elif pairwise.dim() == 4:
        pairwise = pairwise[None]
    return tree_marginals_reference(unary, pairwise, weights, TREE)[0]


def _assert_agree(unary, pairwise, weights=None):
    """Both level-batched alternatives against the reference: values and gradients of every input."""
    inputs = [t.clone().requires_grad_(True) for t in (unary, pairwise) + ((weights,) if weights is not None else ())]
    grad_out = torch.randn(unary.shape, dtype=unary.dtype, generator=torch.Generator().manual_seed(7))

    def value_and_grads(fn):
        out = fn(*inputs)
        return (out, *torch.autograd.grad((out * grad_out).sum(), inputs))

    expected = value_and_grads(_reference)
    for alternative in TREE_ALTERNATIVES:
        got = value_and_grads(lambda u, p, w=None: alternative(u, p, TREE, w))
        for g, want in zip(got, expected):
            torch.testing.assert_close(g, want, rtol=1e-9, atol=1e-12)


def _random(*shape, seed):
    return torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_fft_size_is_smallest_5_smooth():
    assert fft_size(46 + 45 // 2) == 72
    assert [fft_size(n) for n in (1, 7, 11, 13, 17, 97)] == [1, 8, 12, 15, 18, 100]


@pytest.mark.parametrize("kernel", [5, 7, 21])  # 21 > 2H - 1: offsets beyond the map are cropped
def test_adaptive_kernels_match_reference(kernel):
    batch, size = 2, 9
    _assert_agree(_random(batch, 21, size, size, seed=0), _random(batch, M, kernel, kernel, seed=1))


def test_rectangular_maps_and_kernels_match_reference():
    _assert_agree(_random(2, 21, 7, 11, seed=2), _random(2, M, 5, 9, seed=3))


def test_shared_kernels_match_reference():
    _assert_agree(_random(3, 21, 8, 8, seed=4), _random(M, 5, 5, seed=5))


@pytest.mark.parametrize("per_image", [False, True])
def test_mixture_matches_reference(per_image):
    batch, models = 2, 3
    pairwise = _random(*((batch,) if per_image else ()), models, M, 5, 5, seed=6)
    _assert_agree(_random(batch, 21, 8, 8, seed=7), pairwise, _random(batch, models, seed=8))


def test_degenerate_inputs_match_reference():
    """A zero kernel and a zero unary give all-ones messages; a zero belief the uniform marginal."""
    unary, pairwise = _random(2, 21, 8, 8, seed=9), _random(2, M, 5, 5, seed=10)
    pairwise[0, TREE.message_index(4, 3)] = 0  # thumb tip -> ip carries nothing
    unary[1, 8] = 0  # index tip: zero belief, zero messages out
    _assert_agree(unary, pairwise)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_message_pushed_off_the_map_is_all_ones(dtype):
    """Mass in a corner sent further out by the kernel: the exact message is zero, the FFT's is round-off."""
    unary, pairwise = _random(1, 21, 8, 8, seed=11), _random(1, M, 7, 7, seed=12)
    tip_to_dip = TREE.message_index(4, 3)
    corner, rows_up = unary[0, 4, :2, :2].clone(), pairwise[0, tip_to_dip, :2].clone()
    unary[0, 4], pairwise[0, tip_to_dip] = 0, 0
    unary[0, 4, :2, :2] = corner  # the thumb tip in the top-left 2 x 2 corner
    pairwise[0, tip_to_dip, :2] = rows_up  # offsets 2 and 3 rows up: every source leaves the map
    for alternative in TREE_ALTERNATIVES:
        got = alternative(unary.to(dtype), pairwise.to(dtype), TREE)
        torch.testing.assert_close(got, _reference(unary, pairwise).to(dtype))


def test_float32_agrees_with_reference():
    unary, pairwise = _random(2, 21, 12, 12, seed=13), _random(2, M, 9, 9, seed=14)
    for alternative in TREE_ALTERNATIVES:
        got = alternative(unary.float(), pairwise.float(), TREE)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, _reference(unary, pairwise).float(), rtol=1e-4, atol=1e-6)


def test_only_the_direct_alternative_is_exact_on_peaked_inputs():
    """Two Gaussian peaks 28 px apart, Gaussian "near me" kernels: the FFT's round-off floods the message."""
    unary = torch.stack([gaussian(46, (8, 8), 2.0), gaussian(46, (28, 28), 2.0)])[None].float()
    kernels = torch.stack([gaussian(45, (22, 22), 3.0)] * 2)[None].float()
    pair = handops.Tree([-1, 0])
    want = tree_marginals_reference(unary, kernels[:, None], torch.ones(1, 1), pair)[0]
    torch.testing.assert_close(tree_marginals_direct_levels(unary, kernels, pair), want, rtol=0, atol=1e-6)
    assert (tree_marginals_fft_levels(unary, kernels, pair) - want).abs().max() > 1e-2


# edge_conv_fft: one head of handops.edge_conv through torch.fft.

HAND_GRAPH = handops.hand_graph()
CHAIN = handops.Graph(3, [(0, 1), (1, 2), (2, 2)])  # node 0 receives nothing: its output is zero


def _assert_edge_conv_agrees(graph, x, weight, bias=None):
    """Forward and gradients (x, weight, bias) of edge_conv_fft against the reference's single head."""
    inputs = [t.clone().requires_grad_(True) for t in (x, weight) + ((bias,) if bias is not None else ())]
    grad_out = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(7))

    def fft(x, weight, bias=None):
        return edge_conv_fft(x, weight, graph, bias)

    def reference(x, weight, bias=None):
        return edge_conv_reference(x, weight[None], None if bias is None else bias[None], graph)[:, 0]

    results = []
    for fn in (fft, reference):
        out = fn(*inputs)
        results.append((out, *torch.autograd.grad((out * grad_out).sum(), inputs)))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def _signed(*shape, seed):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("graph", [HAND_GRAPH, CHAIN], ids=["hand", "chain"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("kernel", [(5, 5), (3, 7), (21, 21)])  # 21 > 2H - 1: offsets beyond the map are cropped
def test_edge_conv_fft_matches_reference(graph, with_bias, kernel):
    x = _random(2, graph.num_nodes, 9, 10, seed=20)
    weight = _signed(graph.num_edges, *kernel, seed=21)
    bias = _signed(graph.num_edges, seed=22) if with_bias else None
    _assert_edge_conv_agrees(graph, x, weight, bias)


def test_edge_conv_fft_float32_agrees_with_reference():
    x, weight = _random(2, 21, 12, 12, seed=23), _signed(HAND_GRAPH.num_edges, 9, 9, seed=24)
    got = edge_conv_fft(x.float(), weight.float(), HAND_GRAPH)
    assert got.dtype == torch.float32
    want = edge_conv_reference(x, weight[None], None, HAND_GRAPH)[:, 0].float()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
