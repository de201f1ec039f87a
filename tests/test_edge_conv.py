"""handops.edge_conv: the C++ CPU kernel against the literal reference (thesis Eq. 5.2), the graph tensors."""

import pytest
import torch

import handops
from handops._reference.edge_conv import edge_conv_reference
from handops.graph import Graph

HAND = handops.hand_graph()
CHAIN = Graph(3, [(0, 1), (1, 2), (2, 2)])  # a 3-node chain with one self loop: node 0 receives nothing


def sample(graph, batch=2, heads=2, size=(9, 8), kernel=(5, 3), bias=True, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, graph.num_nodes, *size, generator=gen, dtype=dtype)
    weight = torch.randn(heads, graph.num_edges, *kernel, generator=gen, dtype=dtype)
    b = torch.randn(heads, graph.num_edges, generator=gen, dtype=dtype) if bias else None
    return x, weight, b


# ----------------------------------------------------------------------------------------------
# Graphs.
# ----------------------------------------------------------------------------------------------


def test_hand_graph():
    graph = handops.hand_graph()
    assert graph.num_nodes == 21 and graph.num_edges == 61
    assert sum(1 for s, t in graph.edges if s == t) == 21
    bones = set(handops.hand_tree().edges)
    assert {(s, t) for s, t in graph.edges if s != t} == bones | {(c, p) for p, c in bones}
    assert list(graph.edges) == sorted(graph.edges, key=lambda e: (e[1], e[0]))  # Algorithm 1's order
    assert handops.hand_graph(self_loops=False).num_edges == 40


def test_broadcast_and_aggregation_follow_algorithm_1():
    adjacency = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 1, 1]])  # adjacency[j, i] = 1: an edge j -> i
    graph = Graph.from_adjacency(adjacency)
    assert graph.edges == ((0, 0), (0, 1), (1, 1), (2, 1), (1, 2), (2, 2))
    b, a = graph.broadcast, graph.aggregation
    assert b.shape == (6, 3) and a.shape == (3, 6)
    torch.testing.assert_close(b.sum(1), torch.ones(6, dtype=torch.float64))
    assert b[3, 2] == 1  # edge 3 = (2, 1) starts at node 2
    torch.testing.assert_close(a.sum(1), torch.ones(3, dtype=torch.float64))  # row-normalised
    assert a[1, 1] == a[1, 2] == a[1, 3] == pytest.approx(1 / 3) and a[0, 0] == 1


@pytest.mark.parametrize("num_nodes, edges, match", [(0, [(0, 0)], "at least one node"), (2, [(0, 2)], "outside"),
                                                      (2, [(0, 1), (0, 1)], "repeat"), (2, [], "at least one edge")])
def test_bad_graphs(num_nodes, edges, match):
    with pytest.raises(ValueError, match=match):
        Graph(num_nodes, edges)


# ----------------------------------------------------------------------------------------------
# The op against the reference.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("graph", [HAND, CHAIN], ids=["hand", "chain"])
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference(graph, heads, bias, dtype):
    x, weight, b = sample(graph, heads=heads, bias=bias, dtype=dtype)
    got = handops.edge_conv(x, weight, graph, b)
    expected = edge_conv_reference(x.double(), weight.double(), None if b is None else b.double(), graph)
    tol = dict(rtol=1e-10, atol=1e-11) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    assert got.shape == (2, heads, graph.num_nodes, 9, 8) and got.dtype == dtype
    torch.testing.assert_close(got.double(), expected, **tol)


@pytest.mark.parametrize("size, kernel", [((46, 46), (45, 45)), ((13, 17), (9, 3)), ((3, 4), (7, 9)), ((1, 1), (3, 3))])
def test_matches_reference_at_several_sizes(size, kernel):
    x, weight, b = sample(HAND, batch=1, heads=2, size=size, kernel=kernel)
    torch.testing.assert_close(handops.edge_conv(x, weight, HAND, b), edge_conv_reference(x, weight, b, HAND), rtol=1e-9, atol=1e-10)


def test_single_layer_shapes():
    x, weight, b = sample(CHAIN, heads=1)
    y = handops.edge_conv(x, weight[0], CHAIN, b[0])
    assert y.shape == x.shape
    torch.testing.assert_close(y, edge_conv_reference(x, weight, b, CHAIN)[:, 0])


def test_delta_kernel_shifts_the_source():
    # Edge (0, 1) with a delta at offset (+1, -2) from the centre: node 1 receives node 0 moved by it.
    graph = Graph(2, [(0, 1)])
    x = torch.zeros(1, 2, 8, 8)
    x[0, 0, 3, 4] = 1.0
    weight = torch.zeros(1, 5, 5)
    weight[0, 2 + 1, 2 - 2] = 1.0
    y = handops.edge_conv(x, weight, graph)
    assert (y[0, 1].abs() > 1e-5).nonzero().tolist() == [[4, 2]] and y[0, 1, 4, 2] == pytest.approx(1.0, abs=1e-6)
    assert y[0, 0].abs().max() < 1e-6  # node 0 has no incoming edge


@pytest.mark.parametrize("graph", [HAND, CHAIN], ids=["hand", "chain"])
def test_gradients_match_reference(graph):
    x, weight, b = sample(graph, heads=2, size=(7, 6), kernel=(3, 5))
    inputs = [t.requires_grad_() for t in (x, weight, b)]
    grad = torch.randn(2, 2, graph.num_nodes, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = torch.autograd.grad((handops.edge_conv(x, weight, graph, b) * grad).sum(), inputs)
    expected = torch.autograd.grad((edge_conv_reference(x, weight, b, graph) * grad).sum(), inputs)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck(seed):
    x, weight, b = sample(CHAIN, heads=2, size=(5, 4), kernel=(3, 3), seed=seed)
    args = [t.requires_grad_() for t in (x, weight, b)]
    assert torch.autograd.gradcheck(lambda x_, w_, b_: handops.edge_conv(x_, w_, CHAIN, b_), args)


def test_gradcheck_hand_graph_without_bias():
    x, weight, _ = sample(HAND, batch=1, heads=1, size=(4, 4), kernel=(3, 3), bias=False)
    args = [x.requires_grad_(), weight[0].requires_grad_()]
    assert torch.autograd.gradcheck(lambda x_, w_: handops.edge_conv(x_, w_, HAND), args)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.rand(21, 9, 8), torch.rand(61, 3, 3), HAND), ValueError, "x must be 4-D or 5-D"),
        ((torch.rand(2, 3, 21, 9, 8), torch.rand(61, 3, 3), HAND), ValueError, "per-head x .* needs weight \\[Hd, E"),
        ((torch.rand(2, 3, 21, 9, 8), torch.rand(2, 61, 3, 3), HAND), ValueError, "3 heads .* weight has 2"),
        ((torch.rand(2, 3, 20, 9, 8), torch.rand(3, 61, 3, 3), HAND), ValueError, "graph has 21 nodes"),
        ((torch.rand(2, 20, 9, 8), torch.rand(61, 3, 3), HAND), ValueError, "graph has 21 nodes"),
        ((torch.rand(2, 21, 9, 8), torch.rand(60, 3, 3), HAND), ValueError, "graph has 61 edges"),
        ((torch.rand(2, 21, 9, 8), torch.rand(61, 4, 3), HAND), ValueError, "odd height and width"),
        ((torch.rand(2, 21, 9, 8), torch.rand(2, 3, 61, 3, 3), HAND), ValueError, "weight must be 3-D or 4-D"),
        ((torch.rand(2, 21, 9, 8), torch.rand(61, 3, 3), HAND, torch.rand(60)), ValueError, "bias must be"),
        ((torch.rand(2, 21, 9, 8), torch.rand(2, 61, 3, 3), HAND, torch.rand(61)), ValueError, "bias must be"),
        ((torch.rand(2, 21, 9, 8), torch.rand(61, 3, 3).to("meta"), HAND), ValueError, "one device"),
        ((torch.rand(2, 21, 9, 8).long(), torch.rand(61, 3, 3), HAND), TypeError, "x must be float16"),
        ((torch.rand(2, 21, 9, 8), torch.rand(61, 3, 3), [(0, 1)]), TypeError, "handops.Graph"),
    ],
)
def test_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        handops.edge_conv(*args)


def test_registered_op_checks_edges():
    x, weight, _ = sample(CHAIN)
    with pytest.raises(ValueError, match="outside"):
        torch.ops.handops.edge_conv(x, weight, None, [0, 1, 1, 5, 2, 2])


# ----------------------------------------------------------------------------------------------
# The per-head form: x [B, Hd, K, H, W], weight [Hd, E, kh, kw] (SIA-GCN layers 2..5).
# ----------------------------------------------------------------------------------------------


def per_head_sample(heads=3, batch=2, size=(9, 8), kernel=(5, 7), dtype=torch.float64, seed=11):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, heads, HAND.num_nodes, *size, generator=gen, dtype=dtype)
    weight = torch.randn(heads, HAND.num_edges, *kernel, generator=gen, dtype=dtype)
    bias = torch.randn(heads, HAND.num_edges, generator=gen, dtype=dtype)
    return x, weight, bias


def test_per_head_equals_one_call_per_head():
    """Head h of the per-head form is the single-layer op on x[:, h] with weight[h]. Rules out a union
    graph whose copies share nodes (a missing node offset mixes heads) or kernels taken from the wrong head."""
    x, weight, bias = per_head_sample()
    y = handops.edge_conv(x, weight, HAND, bias)
    assert y.shape == x.shape
    for h in range(x.shape[1]):
        torch.testing.assert_close(y[:, h], handops.edge_conv(x[:, h], weight[h], HAND, bias[h]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, edge_conv_reference(x, weight, bias, HAND), rtol=1e-12, atol=1e-12)


def test_per_head_heads_do_not_mix():
    """Changing head 1's input changes only head 1's output (the gradient of head 0 w.r.t. x[:, 1] is zero)."""
    x, weight, _ = per_head_sample(heads=2)
    x = x.requires_grad_(True)
    y = handops.edge_conv(x, weight, HAND)
    (grad,) = torch.autograd.grad(y[:, 0].sum(), x)
    assert torch.equal(grad[:, 1], torch.zeros_like(grad[:, 1])) and grad[:, 0].abs().sum() > 0


def test_per_head_gradcheck_with_kernels_larger_than_the_maps():
    """float64 gradcheck in the thesis' regime (45x45 kernels on 46x46 maps), scaled down to stay quick."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(1, 2, CHAIN.num_nodes, 4, 3, generator=gen, dtype=torch.float64)
    weight = torch.randn(2, CHAIN.num_edges, 7, 5, generator=gen, dtype=torch.float64)
    bias = torch.randn(2, CHAIN.num_edges, generator=gen, dtype=torch.float64)
    args = tuple(t.requires_grad_(True) for t in (x, weight, bias))
    assert torch.autograd.gradcheck(lambda x_, w_, b_: handops.edge_conv(x_, w_, CHAIN, b_), args)


def test_per_head_float32_matches_float64_reference_on_heatmaps():
    """What a SIA-GCN layer 2 sees: peaked non-negative maps (relu of Gaussians) and identity-like kernels."""
    from handops_models.data.targets import keypoint_heatmaps

    gen = torch.Generator().manual_seed(5)
    keypoints = torch.rand(2, 3, 21, 2, generator=gen) * 120
    x = torch.relu(keypoint_heatmaps(keypoints, size=16, stride=8) + 0.01 * torch.randn(2, 3, 21, 16, 16, generator=gen))
    weight = 1e-3 * torch.randn(3, HAND.num_edges, 15, 15, generator=gen)
    for e, (s, t) in enumerate(HAND.edges):
        if s == t:
            weight[:, e, 7, 7] += HAND.in_degree[t]
    y = handops.edge_conv(x, weight, HAND)
    ref = edge_conv_reference(x.double(), weight.double(), None, HAND)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=1e-5 * ref.abs().max().item())
