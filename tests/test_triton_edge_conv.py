"""Triton edge_conv kernels against the readable reference (autograd through it for the gradients).

Without a GPU the kernels run in the Triton interpreter on CPU tensors (conftest sets
TRITON_INTERPRET=1): the sizes here are small. A separate test compiles every kernel ahead of time
for sm_80 and sm_90 at the thesis sizes, in a subprocess without the interpreter.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from triton_aot import compile_for_sm80_and_sm90

pytest.importorskip("triton")

import handops  # noqa: E402
from handops._reference.edge_conv import edge_conv_reference  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from handops._triton import edge_conv as ec  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CHAIN = handops.Graph(3, [(0, 1), (1, 2), (2, 2)])  # node 0: nothing comes in, so y[:, :, 0] = 0
# Node 0 receives nothing, node 3 sends nothing (grad_x[:, 3] = 0), node 2 averages three edges.
SINK = handops.Graph(4, [(0, 1), (1, 2), (2, 2), (0, 2), (1, 3)])


def _inputs(graph, batch, height, width, kernel=(3, 3), heads=1, bias=True, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, graph.num_nodes, height, width, generator=gen, dtype=dtype)
    weight = torch.randn(heads, graph.num_edges, *kernel, generator=gen, dtype=dtype)
    b = torch.randn(heads, graph.num_edges, generator=gen, dtype=dtype) if bias else None
    return x.to(DEVICE), weight.to(DEVICE), None if b is None else b.to(DEVICE)


def _assert_close(actual, expected, rtol):
    """Relative to the tensor's scale: a sum of many signed products has no useful elementwise rtol."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-300))


def _reference(grad, x, weight, bias, graph):
    """Forward and (grad_x, grad_weight, grad_bias) by autograd through the float64 reference; a
    missing bias is a zero bias, whose gradient the backward always returns."""
    inputs = [t.detach().double().clone().requires_grad_(True) for t in (x, weight)]
    b = (bias.detach().double().clone() if bias is not None else weight.new_zeros(weight.shape[:2]).double()).requires_grad_(True)
    y = edge_conv_reference(*inputs, b, graph)
    return y.detach(), torch.autograd.grad(y, inputs + [b], grad.double())


def _check(x, weight, bias, graph, rtol=1e-12, seed=1):
    """Forward and all three gradients against the reference, always evaluated in float64: for
    float32 inputs that is the truth the kernels approximate."""
    y = ec.edge_conv_forward(x, weight, bias, graph)
    assert y.dtype == x.dtype and y.shape == (x.shape[0], weight.shape[0], *x.shape[1:])
    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(y.shape, generator=gen, dtype=x.dtype).to(DEVICE)
    ref_y, ref_grads = _reference(grad, x, weight, bias, graph)
    _assert_close(y.double(), ref_y, rtol)
    grads = ec.edge_conv_backward(grad, x, weight, graph)
    for got, want, like in zip(grads, ref_grads, (x, weight, weight[:, :, 0, 0])):
        assert got.dtype == x.dtype and got.shape == like.shape
        _assert_close(got.double(), want, rtol)
    return y, grads


@pytest.mark.parametrize(
    "batch, size, kernel, heads, bias",
    [
        (2, (5, 6), (3, 3), 2, True),
        (1, (7, 6), (5, 3), 1, False),
        (2, (9, 9), (3, 5), 1, True),
        (1, (6, 5), (5, 3), 2, False),
    ],
)
def test_chain_graph_matches_reference(batch, size, kernel, heads, bias):
    x, weight, b = _inputs(CHAIN, batch, *size, kernel, heads, bias)
    y, _ = _check(x, weight, b, CHAIN)
    assert torch.equal(y[:, :, 0], torch.zeros_like(y[:, :, 0]))


def test_sources_and_sinks():
    x, weight, b = _inputs(SINK, 2, 6, 5, (3, 3), 2, True, seed=2)
    y, (grad_x, _, _) = _check(x, weight, b, SINK)
    assert torch.equal(y[:, :, 0], torch.zeros_like(y[:, :, 0]))  # no incoming edge: not even a bias
    assert torch.equal(grad_x[:, 3], torch.zeros_like(grad_x[:, 3]))  # no outgoing edge


@pytest.mark.parametrize("heads, bias", [(1, True), (2, False)])
def test_hand_graph(heads, bias):
    graph = handops.hand_graph()
    x, weight, b = _inputs(graph, 1, 5, 6, (3, 3), heads, bias, seed=3)
    _check(x, weight, b, graph)


def test_multi_tile_paths(monkeypatch):
    # Tiny tile limits make the convolutions cover the map in several (partial) tiles and the weight
    # gradient loop over several tap blocks and pixel steps, as 46x46 maps with 45x45 kernels do.
    monkeypatch.setattr(ec, "TILE_LIMITS", {"BLOCK_H": 4, "BLOCK_W": 4, "BLOCK_T": 4, "BLOCK_P": 8})
    x, weight, b = _inputs(SINK, 2, 9, 7, (5, 3), 2, True, seed=4)
    _check(x, weight, b, SINK)


def test_kernel_larger_than_map():
    # The thesis runs 45x45 kernels on 46x46 maps: most taps fall off the map for most pixels.
    x, weight, b = _inputs(CHAIN, 2, 5, 6, (9, 11), 1, True, seed=5)
    _check(x, weight, b, CHAIN)


def test_float32():
    x, weight, b = _inputs(SINK, 2, 7, 6, (5, 3), 2, True, dtype=torch.float32, seed=6)
    _check(x, weight, b, SINK, rtol=1e-5)


def test_non_contiguous_inputs():
    x, weight, b = _inputs(SINK, 2, 7, 6, (3, 5), 2, True, seed=7)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, column-major maps
    weight_nc = weight.new_zeros(*weight.shape[:-1], 2 * weight.shape[-1])[..., ::2].copy_(weight)
    b_nc = b.t().contiguous().t()
    assert not (x_nc.is_contiguous() or weight_nc.is_contiguous() or b_nc.is_contiguous())
    y = ec.edge_conv_forward(x_nc, weight_nc, b_nc, SINK)
    grad = torch.randn(y.shape, dtype=y.dtype).to(DEVICE)
    grad_nc = grad.transpose(3, 4).contiguous().transpose(3, 4)
    ref_y, ref_grads = _reference(grad, x, weight, b, SINK)
    _assert_close(y, ref_y, 1e-12)
    for got, want in zip(ec.edge_conv_backward(grad_nc, x_nc, weight_nc, SINK), ref_grads):
        _assert_close(got, want, 1e-12)


def test_empty_batch():
    x, weight, b = _inputs(CHAIN, 0, 6, 7, (3, 3), 2, True)
    y = ec.edge_conv_forward(x, weight, b, CHAIN)
    assert y.shape == (0, 2, 3, 6, 7)
    grad_x, grad_weight, grad_bias = ec.edge_conv_backward(y, x, weight, CHAIN)
    assert grad_x.shape == x.shape
    assert torch.equal(grad_weight, torch.zeros_like(weight)) and torch.equal(grad_bias, torch.zeros_like(b))


def test_shape_errors():
    x, weight, b = _inputs(CHAIN, 1, 5, 5, (3, 3), 1, True)
    with pytest.raises(ValueError, match="nodes"):
        ec.edge_conv_forward(x[:, :2], weight, b, CHAIN)
    with pytest.raises(ValueError, match="edge kernels"):
        ec.edge_conv_forward(x, weight[:, :2], b, CHAIN)
    with pytest.raises(ValueError, match="odd"):
        ec.edge_conv_forward(x, weight[..., :2], b, CHAIN)
    with pytest.raises(ValueError, match="bias"):
        ec.edge_conv_forward(x, weight, b[:, :2], CHAIN)


def test_cuda_dispatch_glue_calls_the_triton_launchers():
    # The CUDA kernels registered for the handops ops call this module; call them directly here.
    from handops.ops import edge_conv as ops
    from handops.ops._dispatch import triton_module

    assert triton_module("edge_conv") is ec
    x, weight, b = _inputs(CHAIN, 1, 5, 6, (3, 3), 2, True, seed=8)
    edges = CHAIN.flat_edges()
    grad = torch.randn(1, 2, 3, 5, 6, dtype=x.dtype).to(DEVICE)
    ref_y, ref_grads = _reference(grad, x, weight, b, CHAIN)
    _assert_close(ops._cuda_forward(x, weight, b, edges), ref_y, 1e-12)
    for got, want in zip(ops._cuda_backward(grad, x, weight, edges), ref_grads):
        _assert_close(got, want, 1e-12)


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation for sm_80 and sm_90
# ---------------------------------------------------------------------------------------------

def test_every_kernel_compiles_for_sm80_and_sm90():
    # Thesis sizes: 46x46 maps, 45x45 kernels (Hd = 10 heads on the hand graph are runtime
    # arguments and tables: the launchers pass them as int32, so they do not change the binaries).
    result = compile_for_sm80_and_sm90("edge_conv", [["float32", 46, 46, 45], ["float64", 46, 46, 45]])
    module_kernels = {name for name in dir(ec) if name.endswith("_kernel") and hasattr(getattr(ec, name), "fn")}
    assert module_kernels == set(result["kernels"]), "KERNELS must list every kernel of the module"
    # The sizes the launchers pick at the thesis sizes, both forward variants.
    sizes = ec._sizes(46, 46, 45, 45)
    expected = {("_edge_conv_aggregate_kernel", True), ("_edge_conv_aggregate_kernel", False),
                ("_edge_conv_input_grad_kernel", None), ("_edge_weight_bias_grad_kernel", None)}
    for sm in (80, 90):
        for dtype in ("torch.float32", "torch.float64"):
            done = [c for c in result["compiled"] if c["sm"] == sm and c["dtype"] == dtype]
            assert {(c["kernel"], c["constexprs"].get("HAS_BIAS")) for c in done} == expected
            for c in done:
                for name, value in c["constexprs"].items():
                    assert name == "HAS_BIAS" or value == getattr(sizes, name), c
