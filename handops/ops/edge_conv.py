"""Public edge-aware graph convolution ``edge_conv`` (SIA-GCN, thesis Eq. 5.2) and its registration.

Dispatch: CPU tensors run the C++ kernel (FFT, ``csrc/cpu/edge_conv.cpp``), CUDA tensors the Triton
kernels of ``handops/_triton/edge_conv.py`` (the reference when triton is missing), anything else
the reference.
"""

from __future__ import annotations

import functools

import torch

from handops._reference.edge_conv import edge_conv_reference
from handops.graph import Graph, graph_from_edges
from handops.ops._checks import check_tensor as _check_tensor
from handops.ops._checks import describe as _describe
from handops.ops._dispatch import register_autograd
from handops.ops._registration import register_backends

__all__ = ["edge_conv"]


def edge_conv(x: torch.Tensor, weight: torch.Tensor, graph: Graph, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Edge-aware graph convolution: every directed edge owns a 2-D kernel (SIA-GCN).

    Three forms:

    ========================  ==================  =====================================================
    x                         weight              result
    ========================  ==================  =====================================================
    [B, K, H, W]              [E, kh, kw]         [B, K, H, W]: one layer
    [B, K, H, W]              [Hd, E, kh, kw]     [B, Hd, K, H, W]: Hd heads on the same input (layer 1
                                                  of a multi-head SIA-GCN block)
    [B, Hd, K, H, W]          [Hd, E, kh, kw]     [B, Hd, K, H, W]: head h on its own input x[:, h]
                                                  (layers 2.. of the block, all heads in one call)
    ========================  ==================  =====================================================

    Args:
        x: node maps as above, K = ``graph.num_nodes``.
        weight: odd kernel sizes; kernel e belongs to ``graph.edges[e]``.
        graph: a :class:`handops.Graph` (``handops.hand_graph()`` for hands).
        bias: optional [E] (with 3-D weights) or [Hd, E], added to each edge's convolution before aggregation.
    Returns:
        ``y[.., h, t](p) = sum_{e = (s, t)} A_hat[t, e] * (sum_q weight[h, e][p - q + c] x[.., (h,) s](q) + bias[h, e])``
        with c = (kh // 2, kw // 2) and A_hat[t, e] = 1 / in_degree(t). No activation inside.
    Differentiable in ``x``, ``weight`` and ``bias``; half inputs compute in float32.

    The per-head form runs the same kernels on the disjoint union of Hd copies of the graph (nodes
    h K + k, edges h E + e): x [B, Hd, K, H, W] is viewed as [B, Hd K, H, W] and weight as [1, Hd E, kh, kw],
    so head h's maps only ever meet head h's kernels, and nothing is copied for contiguous inputs.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a handops.Graph (for example handops.hand_graph()), got {type(graph).__name__}")
    _check_tensor("x", x, (4, 5))
    _check_tensor("weight", weight, (3, 4))
    per_head = x.dim() == 5
    if per_head and weight.dim() != 4:
        raise ValueError(f"per-head x [B, Hd, K, H, W] needs weight [Hd, E, kh, kw], got x {_describe(x)} and weight {_describe(weight)}")
    if x.shape[-3] != graph.num_nodes:
        raise ValueError(f"x has {x.shape[-3]} node maps (dim {x.dim() - 3}) but the graph has {graph.num_nodes} nodes: {_describe(x)}")
    single_layer = weight.dim() == 3
    weight4 = weight[None] if single_layer else weight
    if per_head and x.shape[1] != weight4.shape[0]:
        raise ValueError(f"per-head x has {x.shape[1]} heads (dim 1) but weight has {weight4.shape[0]} (dim 0): "
                         f"x {_describe(x)}, weight {_describe(weight)}")
    if weight4.shape[1] != graph.num_edges:
        raise ValueError(f"weight has {weight4.shape[1]} edge kernels but the graph has {graph.num_edges} edges: {_describe(weight)}")
    kh, kw = weight4.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"edge kernels must have odd height and width (a centre), got {kh}x{kw}")
    bias2 = None
    if bias is not None:
        _check_tensor("bias", bias, (1, 2))
        bias2 = bias[None] if bias.dim() == 1 else bias
        if bias2.shape != weight4.shape[:2] or (bias.dim() == 1) != single_layer:
            raise ValueError(f"bias must be [{'E' if single_layer else 'Hd, E'}] = {list(weight.shape[:-2])}, got {_describe(bias)}")
    tensors = [x, weight] + ([bias] if bias is not None else [])
    if any(t.device != x.device for t in tensors):
        raise ValueError(f"x, weight and bias must be on one device, got {', '.join(str(t.device) for t in tensors)}")
    out_dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    if per_head:
        batch, heads, nodes, height, width = x.shape
        union = graph.copies(heads)
        y = _edge_conv_op(x.to(dtype).reshape(batch, heads * nodes, height, width),
                          weight4.to(dtype).reshape(1, heads * graph.num_edges, kh, kw),
                          None if bias2 is None else bias2.to(dtype).reshape(1, heads * graph.num_edges), union.flat_edges())
        return y.to(out_dtype).view(batch, heads, nodes, height, width)
    y = _edge_conv_op(x.to(dtype), weight4.to(dtype), None if bias2 is None else bias2.to(dtype), graph.flat_edges())
    y = y.to(out_dtype)
    return y[:, 0] if single_layer else y




@torch.library.register_fake("handops::edge_conv")
def _edge_conv_fake(x, weight, bias, edges):
    torch._check(x.dim() == 4 and weight.dim() == 4)
    torch._check(weight.shape[1] * 2 == len(edges))
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[1], x.shape[2], x.shape[3])


@torch.library.register_fake("handops::edge_conv_backward")
def _edge_conv_backward_fake(grad, x, weight, edges):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[:2])


def _setup_context(ctx, inputs, output):
    x, weight, bias, edges = inputs
    ctx.save_for_backward(x, weight)
    ctx.edges, ctx.has_bias = edges, bias is not None


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    g_x, g_weight, g_bias = torch.ops.handops.edge_conv_backward(grad.contiguous(), x, weight, ctx.edges)
    return g_x, g_weight, (g_bias if ctx.has_bias else None), None


_edge_conv_op = register_autograd("edge_conv", _backward, _setup_context)


def _reference_forward(x, weight, bias, edges):
    return edge_conv_reference(x, weight, bias, graph_from_edges(x.shape[1], tuple(edges))).contiguous()


def _reference_backward(grad, x, weight, edges):
    graph = graph_from_edges(x.shape[1], tuple(edges))
    with torch.enable_grad():
        inputs = [x.detach().requires_grad_(True), weight.detach().requires_grad_(True)]
        bias = weight.new_zeros(weight.shape[:2], requires_grad=True)
        grads = torch.autograd.grad(edge_conv_reference(*inputs, bias, graph), inputs + [bias], grad, allow_unused=True)
    return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs + [bias]))


_cuda_forward = register_backends("edge_conv", _reference_forward, triton="edge_conv")
_cuda_backward = register_backends("edge_conv_backward", _reference_backward, triton="edge_conv")
