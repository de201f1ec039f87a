"""What the Triton kernels of handops share: direct-convolution tiles and ahead-of-time compile signatures.

The convolution convention is the tree ops' and edge_conv's (``handops/_reference``):
``sum_t K[t] x[p - (t - c)]`` over the map, zero outside it; ``TRANSPOSE`` gives the adjoint.
"""

from __future__ import annotations

import functools
import inspect

import torch
import triton
import triton.language as tl

__all__ = ["direct_conv_tile", "tile_coords", "constexpr_names", "compute_dtype", "kernel_signature"]


@triton.jit
def direct_conv_tile(src, k_ptr, rows, cols, H, W, kh, kw, dtype: tl.constexpr, TRANSPOSE: tl.constexpr):
    """sum_t K[t] x[p - (t - c)] (TRANSPOSE: x[p + (t - c)]) over a tile, zero outside the map."""
    ch = kh // 2
    cw = kw // 2
    acc = tl.zeros(rows.shape, dtype) + tl.zeros(cols.shape, dtype)
    for a in range(0, kh):
        if TRANSPOSE:
            r = rows + (a - ch)
        else:
            r = rows - (a - ch)
        row_ok = (r >= 0) & (r < H)
        for t in range(0, kw):
            if TRANSPOSE:
                c = cols + (t - cw)
            else:
                c = cols - (t - cw)
            ok = row_ok & (c >= 0) & (c < W)
            x = tl.load(src + r * W + c, mask=ok, other=0.0)
            acc += tl.load(k_ptr + a * kw + t) * x
    return acc


@triton.jit
def tile_coords(tile, H, W, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    tiles_w = tl.cdiv(W, BLOCK_W)
    rows = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    cols = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    return rows, cols


@functools.cache
def constexpr_names(kernel) -> tuple[str, ...]:
    # Read from the Python signature: works for jitted and interpreted kernels alike.
    params = inspect.signature(kernel.fn).parameters.values()
    return tuple(p.name for p in params if "constexpr" in str(p.annotation))


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def kernel_signature(kernel, dtype: torch.dtype, int_pointers: dict[str, str] | None = None) -> dict[str, str]:
    """The ``triton.compile`` signature of ``kernel`` by argument naming: ``*_ptr`` a tensor of ``dtype``
    (or the type ``int_pointers`` names), ``*_tab`` an int32 table, a constexpr annotation a
    constexpr, anything else an int32 scalar."""
    pointer = {torch.float32: "*fp32", torch.float64: "*fp64"}[dtype]
    int_pointers = int_pointers or {}
    constexprs = constexpr_names(kernel)
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = int_pointers.get(name, pointer)
        elif name.endswith("_tab"):
            signature[name] = "*i32"
        else:
            signature[name] = "i32"
    return signature
