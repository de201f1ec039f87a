"""Triton kernels for the edge-aware graph convolution of SIA-GCN (thesis Eq. 5.2), forward and backward.

Shapes (canonical, as the registered ops pass them): x [B, K, H, W], weight [Hd, E, kh, kw] with odd
kh, kw, bias [Hd, E] or None, grad and y [B, Hd, K, H, W]. Edge e is ``graph.edges[e] = (src_e, dst_e)``,
``A_hat[t, e] = 1 / in_degree(t)`` for the edges into t, c = (kh // 2, kw // 2) and
``conv(k, x)[p] = sum_q k[p - q + c] x[q] = sum_tap k[tap] x[p - (tap - c)]`` (zero outside the map).

Forward (``edge_conv_forward``), one program per (image b, head h, target node t, output tile):

    y[b, h, t] = A_hat[t] * sum over edges e = (s, t) of (conv(weight[h, e], x[b, s]) + bias[h, e])

by direct convolution, edge after edge, into one register tile: no [B, E, H, W] gathered or
per-edge intermediate ever reaches memory. A node with no incoming edge gets zeros.

Backward (``edge_conv_backward``), the adjoints of that sum:

* ``grad_x[b, s][q] = sum over edges e = (s, d) out of s, heads h of
  A_hat[d] * sum_tap weight[h, e][tap] grad[b, h, d][q + (tap - c)]`` (a correlation), one program per
  (image, source node, tile); zeros for a node with no outgoing edge;
* ``grad_weight[h, e][tap] = A_hat[d] * sum over b, p of grad[b, h, d][p] x[b, s][p - (tap - c)]``,
  one program per (head, edge, tile of taps) looping over every image and pixel, so no atomics;
* ``grad_bias[h, e] = A_hat[d] * sum over b, p of grad[b, h, d][p]``, summed by the tap tile 0 program
  of (h, e) from the grad tiles it loads anyway. Always returned: without a bias it is the gradient
  of a zero bias, which the caller drops.

Everything computes in the input dtype (float32 or float64; other float types in float32). The
per-node A_hat is a table of ``1 / in_degree`` rounded from float64 to that dtype, the value the
reference's ``graph.aggregation.to(x)`` holds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from handops._triton._common import compute_dtype, constexpr_names, direct_conv_tile, kernel_signature, tile_coords
from handops.graph import Graph, graph_from_edges

__all__ = ["OPS", "edge_conv_forward", "edge_conv_backward", "compile_specs", "KERNELS"]


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _edge_conv_aggregate_kernel(
    x_ptr, weight_ptr, bias_ptr, node_scale_ptr, y_ptr, in_start_tab, in_edge_tab, edge_src_tab,
    heads, num_nodes, num_edges, H, W, kh, kw,
    HAS_BIAS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """y[b, h, t] on one tile: A_hat[t] * sum over edges e = (s, t) of conv(weight[h, e], x[b, s]) + bias[h, e]."""
    image_head = tl.program_id(0).to(tl.int64)  # b * heads + h
    node = tl.program_id(1)
    image = image_head // heads
    head = image_head % heads
    rows, cols = tile_coords(tl.program_id(2), H, W, BLOCK_H, BLOCK_W)
    acc = tl.zeros([BLOCK_H, BLOCK_W], x_ptr.dtype.element_ty)
    for i in range(tl.load(in_start_tab + node), tl.load(in_start_tab + node + 1)):
        edge = tl.load(in_edge_tab + i)
        src = tl.load(edge_src_tab + edge)
        kernel = weight_ptr + (head * num_edges + edge) * (kh * kw)
        along = direct_conv_tile(x_ptr + (image * num_nodes + src) * (H * W), kernel, rows, cols, H, W, kh, kw, x_ptr.dtype.element_ty, False)
        if HAS_BIAS:
            along += tl.load(bias_ptr + head * num_edges + edge)
        acc += along
    # Every edge into t carries the same A_hat[t, e] = 1 / in_degree(t): scale the sum once.
    acc *= tl.load(node_scale_ptr + node)
    out = y_ptr + (image_head * num_nodes + node) * (H * W)
    tl.store(out + rows * W + cols, acc, mask=(rows < H) & (cols < W))


@triton.jit
def _edge_conv_input_grad_kernel(
    grad_ptr, weight_ptr, node_scale_ptr, gx_ptr, out_start_tab, out_edge_tab, edge_dst_tab,
    heads, num_nodes, num_edges, H, W, kh, kw,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """grad_x[b, s] on one tile: sum over edges e = (s, d), heads h of A_hat[d] * corr(grad[b, h, d], weight[h, e])."""
    image = tl.program_id(0).to(tl.int64)
    node = tl.program_id(1)
    rows, cols = tile_coords(tl.program_id(2), H, W, BLOCK_H, BLOCK_W)
    acc = tl.zeros([BLOCK_H, BLOCK_W], grad_ptr.dtype.element_ty)
    for i in range(tl.load(out_start_tab + node), tl.load(out_start_tab + node + 1)):
        edge = tl.load(out_edge_tab + i)
        dst = tl.load(edge_dst_tab + edge)
        along = tl.zeros([BLOCK_H, BLOCK_W], grad_ptr.dtype.element_ty)
        for head in range(0, heads):
            g = grad_ptr + ((image * heads + head) * num_nodes + dst) * (H * W)
            kernel = weight_ptr + (head * num_edges + edge) * (kh * kw)
            along += direct_conv_tile(g, kernel, rows, cols, H, W, kh, kw, grad_ptr.dtype.element_ty, True)
        acc += tl.load(node_scale_ptr + dst) * along
    out = gx_ptr + (image * num_nodes + node) * (H * W)
    tl.store(out + rows * W + cols, acc, mask=(rows < H) & (cols < W))


@triton.jit
def _edge_weight_bias_grad_kernel(
    grad_ptr, x_ptr, node_scale_ptr, gw_ptr, gb_ptr, edge_src_tab, edge_dst_tab,
    batch, heads, num_nodes, num_edges, H, W, kh, kw,
    BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """grad_weight[h, e][taps] = A_hat[d] * sum_{b, p} grad[b, h, d][p] x[b, s][p - (tap - c)] for one
    block of taps, and (tap block 0) grad_bias[h, e] = A_hat[d] * sum_{b, p} grad[b, h, d][p]."""
    head_edge = tl.program_id(0)  # h * num_edges + e
    tap_block = tl.program_id(1)
    head = head_edge // num_edges
    edge = head_edge % num_edges
    src = tl.load(edge_src_tab + edge)
    dst = tl.load(edge_dst_tab + edge)
    taps = tap_block * BLOCK_T + tl.arange(0, BLOCK_T)
    tap_ok = taps < kh * kw
    dr = (taps // kw - kh // 2)[:, None]
    dc = (taps % kw - kw // 2)[:, None]
    HW = H * W
    acc = tl.zeros([BLOCK_T, BLOCK_P], grad_ptr.dtype.element_ty)
    bias_acc = tl.zeros([BLOCK_P], grad_ptr.dtype.element_ty)
    # Image by image the maps lie one image stride further on; stepping the pointers keeps the
    # offsets 64-bit without widening the loop counter.
    g_map = grad_ptr + (head * num_nodes + dst) * HW
    x_map = x_ptr + src * HW
    for _ in range(0, batch):
        for start in range(0, HW, BLOCK_P):
            p = start + tl.arange(0, BLOCK_P)
            p_ok = p < HW
            g = tl.load(g_map + p, mask=p_ok, other=0.0)
            r = (p // W)[None, :] - dr
            c = (p % W)[None, :] - dc
            ok = tap_ok[:, None] & p_ok[None, :] & (r >= 0) & (r < H) & (c >= 0) & (c < W)
            acc += tl.load(x_map + r * W + c, mask=ok, other=0.0) * g[None, :]
            bias_acc += g
        g_map += heads * num_nodes * HW
        x_map += num_nodes * HW
    scale = tl.load(node_scale_ptr + dst)
    tl.store(gw_ptr + head_edge.to(tl.int64) * (kh * kw) + taps, scale * tl.sum(acc, axis=1), mask=tap_ok)
    tl.store(gb_ptr + head_edge, scale * tl.sum(bias_acc, axis=0), mask=tap_block == 0)


# ---------------------------------------------------------------------------------------------
# Host side: graph tables, tile sizes, launchers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    """The graph as int32 device tables: edges grouped by destination (CSR) and by source."""

    in_start: torch.Tensor  # [K + 1]: the edges into t are in_edge[in_start[t]:in_start[t + 1]]
    in_edge: torch.Tensor  # [E]
    out_start: torch.Tensor  # [K + 1]: the edges out of s are out_edge[out_start[s]:out_start[s + 1]]
    out_edge: torch.Tensor  # [E]
    edge_src: torch.Tensor  # [E]
    edge_dst: torch.Tensor  # [E]


def _csr(num_nodes: int, keys: list[int]) -> tuple[list[int], list[int]]:
    """Edge indices grouped by key (in edge order within a group) and each group's start."""
    order = sorted(range(len(keys)), key=lambda e: (keys[e], e))
    start = [0] * (num_nodes + 1)
    for key in keys:
        start[key + 1] += 1
    for node in range(num_nodes):
        start[node + 1] += start[node]
    return start, order


@functools.lru_cache(maxsize=32)
def _tables(graph: Graph, device: torch.device) -> _Tables:
    src = [s for s, _ in graph.edges]
    dst = [d for _, d in graph.edges]
    in_start, in_edge = _csr(graph.num_nodes, dst)
    out_start, out_edge = _csr(graph.num_nodes, src)

    def table(values):
        return torch.tensor(values, dtype=torch.int32, device=device)

    return _Tables(table(in_start), table(in_edge), table(out_start), table(out_edge), table(src), table(dst))


@functools.lru_cache(maxsize=32)
def _node_scale(graph: Graph, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A_hat[t] = 1 / in_degree(t) (0 where nothing comes in), rounded from float64 like the reference."""
    scale = [1.0 / d if d else 0.0 for d in graph.in_degree]
    return torch.tensor(scale, dtype=torch.float64).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class _Sizes:
    """Every compile-time tile size of a launch; the launchers and compile_specs both read these."""

    BLOCK_H: int  # 2-D output tile of the direct convolutions
    BLOCK_W: int
    BLOCK_T: int  # kernel taps per program of the weight gradient
    BLOCK_P: int  # map positions per step of the weight gradient
    conv_tiles: int
    tap_tiles: int

    def pick(self, kernel, **extra) -> dict:
        """The constexpr arguments of ``kernel`` (``extra`` for those that are not tile sizes)."""
        return {name: extra[name] if name in extra else getattr(self, name) for name in constexpr_names(kernel)}


# Largest tiles; smaller maps get the next power of two above their size. 16x32 output tiles give a
# 46x46 map 6 programs per (image, head, node); 32x64 weight-gradient tiles keep the [taps, pixels]
# accumulator at 16 elements a thread (4 warps). (Tests shrink these to run the multi-tile paths on small maps.)
TILE_LIMITS = {"BLOCK_H": 16, "BLOCK_W": 32, "BLOCK_T": 32, "BLOCK_P": 64}


def _sizes(height: int, width: int, kh: int, kw: int) -> _Sizes:
    pow2 = triton.next_power_of_2
    block_h = min(pow2(height), TILE_LIMITS["BLOCK_H"])
    block_w = min(pow2(width), TILE_LIMITS["BLOCK_W"])
    block_t = min(pow2(kh * kw), TILE_LIMITS["BLOCK_T"])
    return _Sizes(
        BLOCK_H=block_h,
        BLOCK_W=block_w,
        BLOCK_T=block_t,
        BLOCK_P=min(pow2(height * width), TILE_LIMITS["BLOCK_P"]),
        conv_tiles=triton.cdiv(height, block_h) * triton.cdiv(width, block_w),
        tap_tiles=triton.cdiv(kh * kw, block_t),
    )


def _check_shapes(x, weight, bias, graph: Graph):
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"x must be [B, K, H, W] and weight [Hd, E, kh, kw], got {list(x.shape)} and {list(weight.shape)}")
    if x.shape[1] != graph.num_nodes:
        raise ValueError(f"x has {x.shape[1]} node maps but the graph has {graph.num_nodes} nodes")
    if weight.shape[1] != graph.num_edges:
        raise ValueError(f"weight has {weight.shape[1]} edge kernels but the graph has {graph.num_edges} edges")
    if weight.shape[2] % 2 == 0 or weight.shape[3] % 2 == 0:
        raise ValueError(f"edge kernels must have odd sizes, got {list(weight.shape[2:])}")
    if bias is not None and tuple(bias.shape) != tuple(weight.shape[:2]):
        raise ValueError(f"bias must be [Hd, E] = {list(weight.shape[:2])}, got {list(bias.shape)}")


def edge_conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, graph: Graph) -> torch.Tensor:
    """y [B, Hd, K, H, W] of thesis Eq. 5.2 (see the module docstring)."""
    dtype = compute_dtype(*[t for t in (x, weight, bias) if t is not None])
    x, weight = (t.to(dtype).contiguous() for t in (x, weight))
    bias = None if bias is None else bias.to(dtype).contiguous()
    _check_shapes(x, weight, bias, graph)
    batch, num_nodes, height, width = x.shape
    heads, num_edges, kh, kw = weight.shape
    if batch * heads * height * width == 0:
        return x.new_zeros(batch, heads, num_nodes, height, width)
    y = x.new_empty(batch, heads, num_nodes, height, width)
    tables = _tables(graph, x.device)
    sizes = _sizes(height, width, kh, kw)
    _edge_conv_aggregate_kernel[(batch * heads, num_nodes, sizes.conv_tiles)](
        x, weight, x if bias is None else bias, _node_scale(graph, dtype, x.device), y,
        tables.in_start, tables.in_edge, tables.edge_src,
        heads, num_nodes, num_edges, height, width, kh, kw,
        **sizes.pick(_edge_conv_aggregate_kernel, HAS_BIAS=bias is not None),
    )
    return y


def edge_conv_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, graph: Graph):
    """(grad_x [B, K, H, W], grad_weight [Hd, E, kh, kw], grad_bias [Hd, E]) of sum(grad * y)."""
    dtype = compute_dtype(grad, x, weight)
    grad, x, weight = (t.to(dtype).contiguous() for t in (grad, x, weight))
    _check_shapes(x, weight, None, graph)
    batch, num_nodes, height, width = x.shape
    heads, num_edges, kh, kw = weight.shape
    if tuple(grad.shape) != (batch, heads, num_nodes, height, width):
        raise ValueError(f"grad must be [B, Hd, K, H, W] = {[batch, heads, num_nodes, height, width]}, got {list(grad.shape)}")
    if batch * heads * height * width == 0:
        return torch.zeros_like(x), torch.zeros_like(weight), weight.new_zeros(heads, num_edges)
    grad_x = torch.empty_like(x)
    grad_weight = torch.empty_like(weight)
    grad_bias = weight.new_empty(heads, num_edges)
    tables = _tables(graph, x.device)
    node_scale = _node_scale(graph, dtype, x.device)
    sizes = _sizes(height, width, kh, kw)
    _edge_conv_input_grad_kernel[(batch, num_nodes, sizes.conv_tiles)](
        grad, weight, node_scale, grad_x, tables.out_start, tables.out_edge, tables.edge_dst,
        heads, num_nodes, num_edges, height, width, kh, kw,
        **sizes.pick(_edge_conv_input_grad_kernel),
    )
    _edge_weight_bias_grad_kernel[(heads * num_edges, sizes.tap_tiles)](
        grad, x, node_scale, grad_weight, grad_bias, tables.edge_src, tables.edge_dst,
        batch, heads, num_nodes, num_edges, height, width, kh, kw,
        **sizes.pick(_edge_weight_bias_grad_kernel),
    )
    return grad_x, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------------
# The registered ops, with their schema arguments (see handops/ops/_registration.py)
# ---------------------------------------------------------------------------------------------

OPS = {
    "edge_conv": lambda x, weight, bias, edges: edge_conv_forward(x, weight, bias, graph_from_edges(x.shape[1], tuple(edges))),
    "edge_conv_backward": lambda grad, x, weight, edges: edge_conv_backward(grad, x, weight, graph_from_edges(x.shape[1], tuple(edges))),
}


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation
# ---------------------------------------------------------------------------------------------

KERNELS = (_edge_conv_aggregate_kernel, _edge_conv_input_grad_kernel, _edge_weight_bias_grad_kernel)


def compile_specs(dtype: torch.dtype, height: int, width: int, kernel_size: int | tuple[int, int]):
    """(kernel, signature, constexprs) of every launch this module makes for these sizes, for
    ``triton.compile``: the forward once with and once without bias, the backward kernels once each.

    The constexprs are the ones the launchers pick; heads, batch and the graph are int32 runtime
    arguments and tables (see ``_common.kernel_signature`` for the argument types).
    """
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    sizes = _sizes(height, width, *kernel_size)
    specs = []
    for kernel in KERNELS:
        variants = [{"HAS_BIAS": True}, {"HAS_BIAS": False}] if "HAS_BIAS" in constexpr_names(kernel) else [{}]
        for extra in variants:
            specs.append((kernel, kernel_signature(kernel, dtype), sizes.pick(kernel, **extra)))
    return specs
