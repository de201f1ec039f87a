"""Triton kernels for exact sum-product and max-product on trees of 2-D heatmaps.

Shapes (canonical, as the registered ops pass them): unary [B, K, H, W], pairwise [Bp, L, M, kh, kw]
with Bp in {1, B} (max-product: [Bp, M, kh, kw]), weights [B, L]; message m of the schedule is
``tree.messages[m] = (src, dst)``. A *pair* n = b * L + l is one image under one model.

Sum-product (``tree_marginals_forward``), per pair, message by message in ``tree.levels`` order:

* rescaled product ``P(u, f_1..f_n)``: ``out_0 = u / c_0``, ``out_k = out_{k-1} * f_k / c_k`` with
  ``c_k = max(out_{k-1} * f_k)`` (1 where that maximum is 0);
* ``h_m = P(unary[src], [msg_k for k into src, k not from dst])`` in ``tree.incoming`` order;
* ``raw_m[p] = sum_q kernel_m[p - q + c] h_m[q]``, c = (kh // 2, kw // 2), by direct convolution;
* ``msg_m = raw_m / max(raw_m)`` (all ones where raw_m is identically 0), then floored:
  ``msg + max(MESSAGE_FLOOR - msg, 0)``;
* ``belief_i = P(unary[i], [msg_k for k into i])``, ``p_i = belief_i / sum(belief_i)`` (``1 / (H W)``
  where the sum is 0), and ``marginals = sum_l weights[:, l] * p_i`` of model l.

The backward (``tree_marginals_backward``) is the gradient of exactly these formulas with every
``c_k`` and ``max(raw_m)`` held constant and the floor passed straight through. It recomputes the
products from the saved messages (same kernels, so bitwise the same values and constants) and walks
the schedule backwards: message m's gradient is complete once the beliefs and every later level have
pushed into it. For ``P``: ``g_pre_n = g_P / c_n``; for k = n..1: ``g_f_k += g_pre_k * out_{k-1}``,
``g_pre_{k-1} = g_pre_k * f_k / c_{k-1}``; ``g_u += g_pre_0``. For the message:
``g_raw = g_msg / max(raw)`` (0 for an all-ones replacement), ``g_h[q] = sum_t K[t] g_raw[q + t - c]``,
``g_K[t] = sum_q g_raw[q + t - c] h[q]``. For the normalisation ``p = b / T``:
``g_b = g_p / T - sum(g_p * b / T / T)`` with ``g_p = weights[:, l] * grad``, ``g_w = sum(grad * p)``.

Max-product (``tree_map_forward``) works on ``log(unary)`` and ``log(kernels)``:
``log_h_m = log unary[src] + sum msg_k``, ``best_m[p] = max_t (log_h_m[p + t - c] + log K[c' - t])``
(first maximal tap in row-major order), ``msg_m = best_m - max(best_m)`` (0 where everything is
-inf); max-marginals ``exp(log_b - max(log_b))`` and a joint configuration decoded from the root,
with the tie-breaking of ``handops._reference.tree_map_reference``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from handops._reference.tree_marginals import MESSAGE_FLOOR, zero_message_threshold
from handops._triton._common import compute_dtype, constexpr_names, direct_conv_tile, kernel_signature, tile_coords
from handops.tree import Tree, hand_tree, tree_from_schedule

__all__ = ["OPS", "tree_marginals_forward", "tree_marginals_backward", "tree_map_forward", "compile_specs", "KERNELS"]

_FLOOR = tl.constexpr(MESSAGE_FLOOR)


# ---------------------------------------------------------------------------------------------
# Shared device helpers
# ---------------------------------------------------------------------------------------------


# Divisions are written tl.fdiv(x, y, ieee_rounding=x.dtype == tl.float32): a float32 `/` compiles
# to div.full.f32 (up to 2 ulp off) while the reference divides with IEEE rounding (which float64 `/`
# already does, and which ieee_rounding cannot request for float64). The maxima come out as exactly 1.
# Small register vectors are read with tl.sum(tl.where(slots == k, v, 0)), exact since the other
# addends are 0. Both are spelled inline: every device-function call re-patches the interpreter.


@triton.jit
def _chain(u_ptr, f_base, fac_ptr, consts, slots, k, offs, mask, HW, RESCALED: tl.constexpr):
    """A tile of the rescaled product after k factors: pre_k, or out_k = pre_k / c_k if RESCALED.

    pre_0 = u and pre_k = out_{k-1} * f_k, dividing by each constant before the next factor so
    that nothing underflows, exactly in the reference's order.
    """
    x = tl.load(u_ptr + offs, mask=mask, other=0.0)
    for j in range(1, k + 1):
        f_idx = tl.load(fac_ptr + j - 1).to(tl.int64)
        f = tl.load(f_base + f_idx * HW + offs, mask=mask, other=0.0)
        c = tl.sum(tl.where(slots == j - 1, consts, 0.0), axis=0)
        x = tl.fdiv(x, c, ieee_rounding=x.dtype == tl.float32) * f
    if RESCALED:
        c = tl.sum(tl.where(slots == k, consts, 0.0), axis=0)
        x = tl.fdiv(x, c, ieee_rounding=x.dtype == tl.float32)
    return x


@triton.jit
def _chain_constants(u_ptr, f_base, fac_ptr, nf, HW, BLOCK: tl.constexpr, SLOTS: tl.constexpr):
    """The rescaling constants c_0..c_nf of a product (1 where a maximum is 0), a pass over the map each."""
    slots = tl.arange(0, SLOTS)
    consts = tl.full([SLOTS], 1.0, u_ptr.dtype.element_ty)
    for k in range(0, nf + 1):
        peak = tl.zeros([BLOCK], u_ptr.dtype.element_ty)
        for start in range(0, HW, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            peak = tl.maximum(peak, _chain(u_ptr, f_base, fac_ptr, consts, slots, k, offs, offs < HW, HW, False))
        top = tl.max(peak, axis=0)
        consts = tl.where(slots == k, tl.where(top > 0, top, 1.0), consts)
    return consts, slots


@triton.jit
def _chain_backward_tile(g, u_ptr, f_base, gf_base, fac_ptr, nf, consts, slots, offs, mask, HW):
    """Pushes g = dL/d out_nf of a tile into the factors' gradients (+= in place); returns dL/du.

    The intermediate out_{k-1} are recomputed for each k (n <= tree degree, so O(n^2) is cheap).
    """
    c = tl.sum(tl.where(slots == nf, consts, 0.0), axis=0)
    g = tl.fdiv(g, c, ieee_rounding=g.dtype == tl.float32)  # now dL/d pre_nf
    for kk in range(0, nf):
        k = nf - kk
        out_prev = _chain(u_ptr, f_base, fac_ptr, consts, slots, k - 1, offs, mask, HW, True)
        f_idx = tl.load(fac_ptr + k - 1).to(tl.int64)
        f = tl.load(f_base + f_idx * HW + offs, mask=mask, other=0.0)
        gf_ptr = gf_base + f_idx * HW + offs
        tl.store(gf_ptr, tl.load(gf_ptr, mask=mask, other=0.0) + g * out_prev, mask=mask)
        c = tl.sum(tl.where(slots == k - 1, consts, 0.0), axis=0)
        g = tl.fdiv(g * f, c, ieee_rounding=g.dtype == tl.float32)
    return g


@triton.jit
def _first_argmax(x_ptr, HW, BLOCK: tl.constexpr):
    """Row-major index of the first maximum of a map (0 when every entry is -inf), like torch.argmax."""
    peak = tl.full([BLOCK], float("-inf"), x_ptr.dtype.element_ty)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        peak = tl.maximum(peak, tl.load(x_ptr + offs, mask=offs < HW, other=float("-inf")))
    top = tl.max(peak, axis=0)
    first = tl.full([BLOCK], HW, tl.int32)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        x = tl.load(x_ptr + offs, mask=mask, other=float("-inf"))
        first = tl.minimum(first, tl.where(mask & (x == top), offs, HW))
    return tl.min(first, axis=0)


# ---------------------------------------------------------------------------------------------
# Sum-product kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _rescaled_product_kernel(
    unary_ptr, msgs_ptr, out_ptr, node_tab, nfac_tab, fac_tab,
    num_models, num_nodes, num_messages, HW, max_factors,
    BLOCK: tl.constexpr, SLOTS: tl.constexpr,
):
    """out[pair, item] = P(unary[node], msgs[pair, factors]) for the items (messages) of one level."""
    pair = tl.program_id(0).to(tl.int64)
    item = tl.program_id(1)
    num_items = tl.num_programs(1)
    image = pair // num_models
    node = tl.load(node_tab + item)
    nf = tl.load(nfac_tab + item)
    fac_ptr = fac_tab + item * max_factors
    u_ptr = unary_ptr + (image * num_nodes + node) * HW
    f_base = msgs_ptr + pair * num_messages * HW
    consts, slots = _chain_constants(u_ptr, f_base, fac_ptr, nf, HW, BLOCK, SLOTS)
    o_ptr = out_ptr + (pair * num_items + item) * HW
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        tl.store(o_ptr + offs, _chain(u_ptr, f_base, fac_ptr, consts, slots, nf, offs, mask, HW, True), mask=mask)


@triton.jit
def _message_conv_kernel(
    h_ptr, pairwise_ptr, raw_ptr, msg_tab,
    num_models, num_messages, kernel_batched, H, W, kh, kw,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """raw[pair, item][p] = sum_q K_m[p - q + c] h[pair, item][q] on one output tile (direct, exact)."""
    pair = tl.program_id(0).to(tl.int64)
    item = tl.program_id(1)
    num_items = tl.num_programs(1)
    image = pair // num_models
    model = pair % num_models
    m = tl.load(msg_tab + item)
    k_ptr = pairwise_ptr + ((image * kernel_batched * num_models + model) * num_messages + m) * (kh * kw)
    rows, cols = tile_coords(tl.program_id(2), H, W, BLOCK_H, BLOCK_W)
    base = (pair * num_items + item) * (H * W)
    acc = direct_conv_tile(h_ptr + base, k_ptr, rows, cols, H, W, kh, kw, h_ptr.dtype.element_ty, False)
    tl.store(raw_ptr + base + rows * W + cols, acc, mask=(rows < H) & (cols < W))


@triton.jit
def _message_rescale_kernel(
    raw_ptr, h_ptr, kernel_norm_ptr, msgs_ptr, scales_ptr, msg_tab, num_models, num_messages, kernel_batched, HW,
    zero_tol, BLOCK: tl.constexpr,
):
    """msgs[pair, m] = floor(raw / max(raw)), scales[pair, m] = max(raw); a zero message (max(raw) <=
    zero_tol * |K_m|_2 * |h|_2, the FFT round-off level the reference also uses) becomes all ones, scale 0."""
    pair = tl.program_id(0).to(tl.int64)
    item = tl.program_id(1)
    src = raw_ptr + (pair * tl.num_programs(1) + item) * HW
    h_src = h_ptr + (pair * tl.num_programs(1) + item) * HW
    peak = tl.zeros([BLOCK], raw_ptr.dtype.element_ty)
    h_sq = tl.zeros([BLOCK], raw_ptr.dtype.element_ty)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        peak = tl.maximum(peak, tl.load(src + offs, mask=offs < HW, other=0.0))
        h = tl.load(h_src + offs, mask=offs < HW, other=0.0)
        h_sq += h * h
    top = tl.max(peak, axis=0)
    m = tl.load(msg_tab + item)
    image = pair // num_models
    model = pair % num_models
    kernel_norm = tl.load(kernel_norm_ptr + (image * kernel_batched * num_models + model) * num_messages + m)
    informative = top > zero_tol * kernel_norm * tl.sqrt(tl.sum(h_sq, axis=0))
    scale = tl.where(informative, top, 1.0)
    tl.store(scales_ptr + pair * num_messages + m, tl.where(informative, top, 0.0))
    dst = msgs_ptr + (pair * num_messages + m) * HW
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        msg = tl.where(informative, tl.fdiv(tl.load(src + offs, mask=mask, other=0.0), scale, ieee_rounding=scale.dtype == tl.float32), 1.0)
        # The reference floors as msg + clamp(FLOOR - msg, 0): the same two roundings.
        tl.store(dst + offs, msg + tl.maximum(_FLOOR - msg, 0.0), mask=mask)


@triton.jit
def _belief_marginal_kernel(
    unary_ptr, msgs_ptr, out_ptr, nfac_tab, fac_tab,
    num_models, num_nodes, num_messages, HW, max_factors,
    BLOCK: tl.constexpr, SLOTS: tl.constexpr,
):
    """out[pair, node] = belief / sum(belief) (uniform for a zero belief), belief = P(unary, msgs in)."""
    pair = tl.program_id(0).to(tl.int64)
    node = tl.program_id(1)
    image = pair // num_models
    nf = tl.load(nfac_tab + node)
    fac_ptr = fac_tab + node * max_factors
    u_ptr = unary_ptr + (image * num_nodes + node) * HW
    f_base = msgs_ptr + pair * num_messages * HW
    consts, slots = _chain_constants(u_ptr, f_base, fac_ptr, nf, HW, BLOCK, SLOTS)
    acc = tl.zeros([BLOCK], unary_ptr.dtype.element_ty)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += _chain(u_ptr, f_base, fac_ptr, consts, slots, nf, offs, offs < HW, HW, True)
    total = tl.sum(acc, axis=0)
    positive = total > 0
    safe_total = tl.where(positive, total, 1.0)
    # torch.full_like(belief, 1 / (H * W)) rounds the float64 quotient to the dtype.
    uniform = (1.0 / HW.to(tl.float64)).to(unary_ptr.dtype.element_ty)
    o_ptr = out_ptr + (pair * num_nodes + node) * HW
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        belief = _chain(u_ptr, f_base, fac_ptr, consts, slots, nf, offs, mask, HW, True)
        p = tl.fdiv(belief, safe_total, ieee_rounding=belief.dtype == tl.float32)
        tl.store(o_ptr + offs, tl.where(positive, p, uniform), mask=mask)


@triton.jit
def _mixture_kernel(p_ptr, weights_ptr, out_ptr, num_models, KHW, BLOCK: tl.constexpr):
    """out[b] = sum_l weights[b, l] * p[b, l], summed in model order from 0 like the reference."""
    image = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < KHW
    acc = tl.zeros([BLOCK], p_ptr.dtype.element_ty)
    for model in range(0, num_models):
        w = tl.load(weights_ptr + image * num_models + model)
        acc = acc + w * tl.load(p_ptr + (image * num_models + model) * KHW + offs, mask=mask, other=0.0)
    tl.store(out_ptr + image * KHW + offs, acc, mask=mask)


@triton.jit
def _belief_backward_kernel(
    grad_ptr, weights_ptr, unary_ptr, msgs_ptr, gu_ptr, gmsg_ptr, gw_part_ptr, nfac_tab, fac_tab,
    num_models, num_nodes, num_messages, HW, max_factors,
    BLOCK: tl.constexpr, SLOTS: tl.constexpr,
):
    """Gradient of weights[b, l] * belief / sum(belief) into unary (written), msgs (accumulated), weights."""
    pair = tl.program_id(0).to(tl.int64)
    node = tl.program_id(1)
    image = pair // num_models
    model = pair % num_models
    w = tl.load(weights_ptr + image * num_models + model)
    nf = tl.load(nfac_tab + node)
    fac_ptr = fac_tab + node * max_factors
    u_ptr = unary_ptr + (image * num_nodes + node) * HW
    g_ptr = grad_ptr + (image * num_nodes + node) * HW
    f_base = msgs_ptr + pair * num_messages * HW
    gf_base = gmsg_ptr + pair * num_messages * HW
    consts, slots = _chain_constants(u_ptr, f_base, fac_ptr, nf, HW, BLOCK, SLOTS)
    acc = tl.zeros([BLOCK], unary_ptr.dtype.element_ty)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += _chain(u_ptr, f_base, fac_ptr, consts, slots, nf, offs, offs < HW, HW, True)
    total = tl.sum(acc, axis=0)
    positive = total > 0
    safe_total = tl.where(positive, total, 1.0)
    uniform = (1.0 / HW.to(tl.float64)).to(unary_ptr.dtype.element_ty)

    gw_acc = tl.zeros([BLOCK], unary_ptr.dtype.element_ty)
    gt_acc = tl.zeros([BLOCK], unary_ptr.dtype.element_ty)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        belief = _chain(u_ptr, f_base, fac_ptr, consts, slots, nf, offs, mask, HW, True)
        p = tl.fdiv(belief, safe_total, ieee_rounding=belief.dtype == tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0)
        gw_acc += g * tl.where(positive, p, uniform)
        gt_acc += (g * w) * tl.fdiv(p, safe_total, ieee_rounding=p.dtype == tl.float32)
    tl.store(gw_part_ptr + pair * num_nodes + node, tl.sum(gw_acc, axis=0))
    g_total = -tl.sum(gt_acc, axis=0)  # d/dT of belief / T, pushed back through T = sum(belief)

    gu = gu_ptr + (pair * num_nodes + node) * HW
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        g = tl.load(g_ptr + offs, mask=mask, other=0.0) * w
        g_belief = tl.where(positive, tl.fdiv(g, safe_total, ieee_rounding=g.dtype == tl.float32) + g_total, 0.0)
        g_u = _chain_backward_tile(g_belief, u_ptr, f_base, gf_base, fac_ptr, nf, consts, slots, offs, mask, HW)
        tl.store(gu + offs, g_u, mask=mask)


@triton.jit
def _message_grad_unscale_kernel(scales_ptr, gmsg_ptr, graw_ptr, msg_tab, num_messages, HW, BLOCK: tl.constexpr):
    """g_raw = g_msg / scale (the forward's max(raw), a constant); 0 where the message was replaced by ones."""
    pair = tl.program_id(0).to(tl.int64)
    item = tl.program_id(1)
    base = (pair * tl.num_programs(1) + item) * HW
    m = tl.load(msg_tab + item)
    top = tl.load(scales_ptr + pair * num_messages + m)
    informative = top > 0
    scale = tl.where(informative, top, 1.0)
    g_src = gmsg_ptr + (pair * num_messages + m) * HW
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        g = tl.load(g_src + offs, mask=mask, other=0.0)
        tl.store(graw_ptr + base + offs, tl.where(informative, tl.fdiv(g, scale, ieee_rounding=g.dtype == tl.float32), 0.0), mask=mask)


@triton.jit
def _message_conv_transpose_kernel(
    graw_ptr, pairwise_ptr, gh_ptr, msg_tab,
    num_models, num_messages, kernel_batched, H, W, kh, kw,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """g_h[q] = sum_t K_m[t] g_raw[q + t - c] on one tile: the adjoint of _message_conv_kernel."""
    pair = tl.program_id(0).to(tl.int64)
    item = tl.program_id(1)
    num_items = tl.num_programs(1)
    image = pair // num_models
    model = pair % num_models
    m = tl.load(msg_tab + item)
    k_ptr = pairwise_ptr + ((image * kernel_batched * num_models + model) * num_messages + m) * (kh * kw)
    rows, cols = tile_coords(tl.program_id(2), H, W, BLOCK_H, BLOCK_W)
    base = (pair * num_items + item) * (H * W)
    acc = direct_conv_tile(graw_ptr + base, k_ptr, rows, cols, H, W, kh, kw, graw_ptr.dtype.element_ty, True)
    tl.store(gh_ptr + base + rows * W + cols, acc, mask=(rows < H) & (cols < W))


@triton.jit
def _kernel_grad_kernel(
    graw_ptr, h_ptr, gk_ptr, msg_tab, num_messages, H, W, kh, kw,
    BLOCK_T: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    """g_K[pair, m][t] = sum_q g_raw[q + t - c] h[q] for a block of kernel taps t."""
    pair = tl.program_id(0).to(tl.int64)
    item = tl.program_id(1)
    base = (pair * tl.num_programs(1) + item) * (H * W)
    taps = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    tap_ok = taps < kh * kw
    dr = (taps // kw - kh // 2)[:, None]
    dc = (taps % kw - kw // 2)[:, None]
    acc = tl.zeros([BLOCK_T, BLOCK_Q], graw_ptr.dtype.element_ty)
    for start in range(0, H * W, BLOCK_Q):
        q = start + tl.arange(0, BLOCK_Q)
        q_ok = q < H * W
        h = tl.load(h_ptr + base + q, mask=q_ok, other=0.0)
        r = (q // W)[None, :] + dr
        c = (q % W)[None, :] + dc
        ok = tap_ok[:, None] & q_ok[None, :] & (r >= 0) & (r < H) & (c >= 0) & (c < W)
        acc += tl.load(graw_ptr + base + r * W + c, mask=ok, other=0.0) * h[None, :]
    dst = gk_ptr + (pair * num_messages + tl.load(msg_tab + item)) * (kh * kw)
    tl.store(dst + taps, tl.sum(acc, axis=1), mask=tap_ok)


@triton.jit
def _product_backward_kernel(
    unary_ptr, msgs_ptr, gh_ptr, gu_ptr, gmsg_ptr,
    node_tab, nfac_tab, fac_tab, group_node_tab, group_size_tab, group_item_tab,
    num_items, num_models, num_nodes, num_messages, HW, max_factors, max_group,
    BLOCK: tl.constexpr, SLOTS: tl.constexpr,
):
    """For one source node of a level: every message h it sent pushes g_h into unary and msgs (+=).

    One program owns all messages of a level leaving one node, so the gradient maps it accumulates
    into (that node's unary and the messages into it) are touched by no other program.
    """
    pair = tl.program_id(0).to(tl.int64)
    group = tl.program_id(1)
    image = pair // num_models
    node = tl.load(group_node_tab + group)
    u_ptr = unary_ptr + (image * num_nodes + node) * HW
    gu = gu_ptr + (pair * num_nodes + node) * HW
    f_base = msgs_ptr + pair * num_messages * HW
    gf_base = gmsg_ptr + pair * num_messages * HW
    for i in range(0, tl.load(group_size_tab + group)):
        item = tl.load(group_item_tab + group * max_group + i)
        nf = tl.load(nfac_tab + item)
        fac_ptr = fac_tab + item * max_factors
        consts, slots = _chain_constants(u_ptr, f_base, fac_ptr, nf, HW, BLOCK, SLOTS)
        g_src = gh_ptr + (pair * num_items + item) * HW
        for start in range(0, HW, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < HW
            g = tl.load(g_src + offs, mask=mask, other=0.0)
            g_u = _chain_backward_tile(g, u_ptr, f_base, gf_base, fac_ptr, nf, consts, slots, offs, mask, HW)
            tl.store(gu + offs, tl.load(gu + offs, mask=mask, other=0.0) + g_u, mask=mask)
        # The next message of this node accumulates into the same maps, possibly from other threads.
        tl.debug_barrier()


# ---------------------------------------------------------------------------------------------
# Max-product kernels (log domain)
# ---------------------------------------------------------------------------------------------


@triton.jit
def _log_sum_kernel(
    log_unary_ptr, msgs_ptr, out_ptr, msg_tab, node_tab, nfac_tab, fac_tab,
    num_nodes, num_messages, HW, max_factors, BLOCK: tl.constexpr,
):
    """out[b, m] = log unary[b, node] + sum_k msgs[b, k] (added in schedule order) on one tile."""
    image = tl.program_id(0).to(tl.int64)
    item = tl.program_id(1)
    offs = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    node = tl.load(node_tab + item)
    x = tl.load(log_unary_ptr + (image * num_nodes + node) * HW + offs, mask=mask, other=0.0)
    for j in range(0, tl.load(nfac_tab + item)):
        k = tl.load(fac_tab + item * max_factors + j)
        x = x + tl.load(msgs_ptr + (image * num_messages + k) * HW + offs, mask=mask, other=0.0)
    tl.store(out_ptr + (image * num_messages + tl.load(msg_tab + item)) * HW + offs, x, mask=mask)


@triton.jit
def _max_conv_kernel(
    log_h_ptr, log_k_ptr, best_ptr, source_ptr, msg_tab,
    num_messages, kernel_batched, H, W, kh, kw,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """best[p] = max_t log_h[p + t - c] + log K[kh-1-a, kw-1-b] (t = (a, b)), and its source position.

    Taps are scanned row-major with a strict comparison, so the first maximal tap wins, as in
    torch.max over the unfolded patches. The source is -1 where every candidate is -inf.
    """
    image = tl.program_id(0).to(tl.int64)
    item = tl.program_id(1)
    m = tl.load(msg_tab + item)
    src = log_h_ptr + (image * num_messages + m) * (H * W)
    k_ptr = log_k_ptr + (image * kernel_batched * num_messages + m) * (kh * kw)
    rows, cols = tile_coords(tl.program_id(2), H, W, BLOCK_H, BLOCK_W)
    ch = kh // 2
    cw = kw // 2
    best = tl.full([BLOCK_H, BLOCK_W], float("-inf"), log_h_ptr.dtype.element_ty)
    arg = tl.zeros([BLOCK_H, BLOCK_W], tl.int32)
    for a in range(0, kh):
        r = rows + (a - ch)
        row_ok = (r >= 0) & (r < H)
        for t in range(0, kw):
            c = cols + (t - cw)
            ok = row_ok & (c >= 0) & (c < W)
            score = tl.load(src + r * W + c, mask=ok, other=float("-inf"))
            score = score + tl.load(k_ptr + (kh - 1 - a) * kw + (kw - 1 - t))
            take = score > best
            best = tl.where(take, score, best)
            arg = tl.where(take, r * W + c, arg)
    inside = (rows < H) & (cols < W)
    out = (image * tl.num_programs(1) + item) * (H * W) + rows * W + cols
    tl.store(best_ptr + out, best, mask=inside)
    arg = tl.where(best > float("-inf"), arg, -1)
    tl.store(source_ptr + (image * num_messages + m) * (H * W) + rows * W + cols, arg, mask=inside)


@triton.jit
def _max_message_kernel(best_ptr, msgs_ptr, msg_tab, num_messages, HW, BLOCK: tl.constexpr):
    """msgs[b, m] = best - max(best), or 0 everywhere when best is identically -inf."""
    image = tl.program_id(0).to(tl.int64)
    item = tl.program_id(1)
    src = best_ptr + (image * tl.num_programs(1) + item) * HW
    peak = tl.full([BLOCK], float("-inf"), best_ptr.dtype.element_ty)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        peak = tl.maximum(peak, tl.load(src + offs, mask=offs < HW, other=float("-inf")))
    top = tl.max(peak, axis=0)
    finite = top > float("-inf")
    dst = msgs_ptr + (image * num_messages + tl.load(msg_tab + item)) * HW
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        x = tl.load(src + offs, mask=mask, other=0.0)
        tl.store(dst + offs, tl.where(finite, x - tl.where(finite, top, 0.0), 0.0), mask=mask)  # no -inf - -inf


@triton.jit
def _max_marginals_kernel(
    log_unary_ptr, msgs_ptr, out_ptr, nfac_tab, fac_tab,
    num_nodes, num_messages, HW, max_factors, BLOCK: tl.constexpr,
):
    """out[b, node] = log_b - max(log_b) (0 where log_b is identically -inf); the host takes exp."""
    image = tl.program_id(0).to(tl.int64)
    node = tl.program_id(1)
    nf = tl.load(nfac_tab + node)
    u_ptr = log_unary_ptr + (image * num_nodes + node) * HW
    f_base = msgs_ptr + image * num_messages * HW
    peak = tl.full([BLOCK], float("-inf"), log_unary_ptr.dtype.element_ty)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        x = tl.load(u_ptr + offs, mask=mask, other=float("-inf"))
        for j in range(0, nf):
            k = tl.load(fac_tab + node * max_factors + j)
            x = x + tl.load(f_base + k * HW + offs, mask=mask, other=0.0)
        peak = tl.maximum(peak, x)
    top = tl.max(peak, axis=0)
    finite = top > float("-inf")
    o_ptr = out_ptr + (image * num_nodes + node) * HW
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        x = tl.load(u_ptr + offs, mask=mask, other=0.0)
        for j in range(0, nf):
            k = tl.load(fac_tab + node * max_factors + j)
            x = x + tl.load(f_base + k * HW + offs, mask=mask, other=0.0)
        tl.store(o_ptr + offs, tl.where(finite, x - tl.where(finite, top, 0.0), 0.0), mask=mask)


@triton.jit
def _map_decode_kernel(
    max_marginals_ptr, log_h_ptr, source_ptr, config_ptr, order_tab, parent_tab, up_msg_tab,
    root, num_nodes, num_messages, W, HW,
    BLOCK: tl.constexpr, NODES: tl.constexpr,
):
    """config[b] by backtracking: the root's first argmax, then each node (parents first) the
    source its upward message chose for the parent's position, else its upward belief's first argmax."""
    image = tl.program_id(0).to(tl.int64)
    nodes = tl.arange(0, NODES)
    pos = tl.zeros([NODES], tl.int32)
    root_pos = _first_argmax(max_marginals_ptr + (image * num_nodes + root) * HW, HW, BLOCK)
    pos = tl.where(nodes == root, root_pos, pos)
    for i in range(0, num_nodes - 1):
        node = tl.load(order_tab + i)
        parent = tl.load(parent_tab + node)
        m = tl.load(up_msg_tab + node)
        parent_pos = tl.sum(tl.where(nodes == parent, pos, 0), axis=0)
        chosen = tl.load(source_ptr + (image * num_messages + m) * HW + parent_pos)
        fallback = _first_argmax(log_h_ptr + (image * num_messages + m) * HW, HW, BLOCK)
        pos = tl.where(nodes == node, tl.where(chosen >= 0, chosen, fallback), pos)
    out = config_ptr + (image * num_nodes + nodes) * 2
    ok = nodes < num_nodes
    tl.store(out, (pos // W).to(tl.int64), mask=ok)
    tl.store(out + 1, (pos % W).to(tl.int64), mask=ok)


# ---------------------------------------------------------------------------------------------
# Host side: schedule tables, tile sizes, launchers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Level:
    size: int
    msg: torch.Tensor  # [S] global message index of each item
    node: torch.Tensor  # [S] source node
    nfac: torch.Tensor  # [S] number of factors
    fac: torch.Tensor  # [S, max_factors] incoming messages multiplied in, -1 padded
    num_groups: int
    group_node: torch.Tensor  # [G] source nodes of the level
    group_size: torch.Tensor  # [G]
    group_item: torch.Tensor  # [G, max_group] level-local items leaving group_node


@dataclass(frozen=True)
class _Plan:
    max_factors: int
    max_group: int
    levels: tuple[_Level, ...]
    belief_nfac: torch.Tensor  # [K]
    belief_fac: torch.Tensor  # [K, max_factors]
    order: torch.Tensor  # [K - 1] non-root nodes, parents first
    parent: torch.Tensor  # [K]
    up_msg: torch.Tensor  # [K] index of node -> parent (0 for the root)


def _max_factors(tree: Tree) -> int:
    return max([len(tree.incoming(i)) for i in range(tree.num_nodes)] + [1])


@functools.lru_cache(maxsize=64)
def _plan(tree: Tree, device: torch.device) -> _Plan:
    max_factors = _max_factors(tree)

    def table(rows, width):
        data = [list(r) + [-1] * (width - len(r)) for r in rows] or [[-1] * width]
        return torch.tensor(data, dtype=torch.int32, device=device)

    def vector(values):
        return torch.tensor(list(values) or [0], dtype=torch.int32, device=device)

    incoming = [tree.incoming(i) for i in range(tree.num_nodes)]
    level_data = []
    max_group = 1
    for level in tree.levels:
        msgs = list(level)
        facs = []
        for m in msgs:
            src, dst = tree.messages[m]
            facs.append([k for k in incoming[src] if tree.messages[k][0] != dst])
        sources = sorted({tree.messages[m][0] for m in msgs})
        groups = [[j for j, m in enumerate(msgs) if tree.messages[m][0] == s] for s in sources]
        max_group = max([max_group] + [len(g) for g in groups])
        level_data.append((msgs, facs, sources, groups))
    levels = []
    for msgs, facs, sources, groups in level_data:
        levels.append(
            _Level(
                size=len(msgs),
                msg=vector(msgs),
                node=vector(tree.messages[m][0] for m in msgs),
                nfac=vector(len(f) for f in facs),
                fac=table(facs, max_factors),
                num_groups=len(groups),
                group_node=vector(sources),
                group_size=vector(len(g) for g in groups),
                group_item=table(groups, max_group),
            )
        )
    order = [n for n in sorted(range(tree.num_nodes), key=lambda n: tree.depth[n]) if tree.parents[n] != -1]
    return _Plan(
        max_factors=max_factors,
        max_group=max_group,
        levels=tuple(levels),
        belief_nfac=vector(len(f) for f in incoming),
        belief_fac=table(incoming, max_factors),
        order=vector(order),
        parent=vector(max(p, 0) for p in tree.parents),
        up_msg=vector(tree.message_index(n, p) if p != -1 else 0 for n, p in enumerate(tree.parents)),
    )


@dataclass(frozen=True)
class _Sizes:
    """Every compile-time tile size of a launch; the launchers and compile_specs both read these."""

    BLOCK: int  # 1-D tile over a flattened map; whole-map reductions loop over such tiles
    SLOTS: int  # register slots for the constants c_0..c_n of a product
    BLOCK_H: int  # 2-D output tile of the direct convolutions
    BLOCK_W: int
    BLOCK_T: int  # kernel taps per program of the kernel gradient
    BLOCK_Q: int  # map positions per step of the kernel gradient
    NODES: int  # register slots for the decoded position of every node
    conv_tiles: int
    tap_tiles: int

    def pick(self, kernel) -> dict:
        """The constexpr arguments of ``kernel``."""
        return {name: getattr(self, name) for name in constexpr_names(kernel)}




# Largest tiles; smaller maps get the next power of two above their size. 16x32 conv tiles give a
# 46x46 map 6 programs per message; 32x64 kernel-gradient tiles keep it near 100 registers.
# (Tests shrink these to run the multi-tile paths on small maps.)
TILE_LIMITS = {"BLOCK": 1024, "BLOCK_H": 16, "BLOCK_W": 32, "BLOCK_T": 32, "BLOCK_Q": 64}


def _sizes(height: int, width: int, kh: int, kw: int, tree: Tree) -> _Sizes:
    hw, taps = height * width, kh * kw
    pow2 = triton.next_power_of_2
    block_h = min(pow2(height), TILE_LIMITS["BLOCK_H"])
    block_w = min(pow2(width), TILE_LIMITS["BLOCK_W"])
    block_t = min(pow2(taps), TILE_LIMITS["BLOCK_T"])
    return _Sizes(
        BLOCK=min(pow2(hw), TILE_LIMITS["BLOCK"]),
        SLOTS=pow2(_max_factors(tree) + 1),  # c_0 .. c_n
        BLOCK_H=block_h,
        BLOCK_W=block_w,
        BLOCK_T=block_t,
        BLOCK_Q=min(pow2(hw), TILE_LIMITS["BLOCK_Q"]),
        NODES=pow2(tree.num_nodes),
        conv_tiles=triton.cdiv(height, block_h) * triton.cdiv(width, block_w),
        tap_tiles=triton.cdiv(taps, block_t),
    )


def _check_shapes(unary, pairwise, tree, weights=None):
    batch, num_nodes, height, width = unary.shape
    if num_nodes != tree.num_nodes:
        raise ValueError(f"unary has {num_nodes} maps but the tree has {tree.num_nodes} nodes")
    if pairwise.shape[0] not in (1, batch) or pairwise.shape[-3] != tree.num_messages:
        raise ValueError(f"pairwise {list(pairwise.shape)} does not fit unary {list(unary.shape)} and the tree")
    if pairwise.shape[-2] % 2 == 0 or pairwise.shape[-1] % 2 == 0:
        raise ValueError(f"pairwise kernels must have odd sizes, got {list(pairwise.shape[-2:])}")
    if weights is not None and tuple(weights.shape) != (batch, pairwise.shape[1]):
        raise ValueError(f"weights must be [B, L] = [{batch}, {pairwise.shape[1]}], got {list(weights.shape)}")


def _run_levels(unary, pairwise, msgs, plan, sizes, levels, h, raw, finish_level):
    """For each level: h = products into its messages, raw = their convolutions; then finish_level."""
    batch, num_nodes, height, width = unary.shape
    _, num_models, num_messages, kh, kw = pairwise.shape
    pairs = batch * num_models
    kernel_batched = int(pairwise.shape[0] != 1)
    for level in levels:
        _rescaled_product_kernel[(pairs, level.size)](
            unary, msgs, h, level.node, level.nfac, level.fac,
            num_models, num_nodes, num_messages, height * width, plan.max_factors,
            **sizes.pick(_rescaled_product_kernel),
        )
        _message_conv_kernel[(pairs, level.size, sizes.conv_tiles)](
            h, pairwise, raw, level.msg,
            num_models, num_messages, kernel_batched, height, width, kh, kw,
            **sizes.pick(_message_conv_kernel),
        )
        finish_level(level)


def tree_marginals_forward(unary: torch.Tensor, pairwise: torch.Tensor, weights: torch.Tensor, tree: Tree):
    """Marginals [B, K, H, W] (mixture over the L models) and normalised messages [B, L, M, H, W]."""
    dtype = compute_dtype(unary, pairwise, weights)
    unary, pairwise, weights = (t.to(dtype).contiguous() for t in (unary, pairwise, weights))
    _check_shapes(unary, pairwise, tree, weights)
    batch, num_nodes, height, width = unary.shape
    _, num_models, num_messages, kh, kw = pairwise.shape
    hw = height * width
    pairs = batch * num_models
    marginals = unary.new_zeros(batch, num_nodes, height, width)
    msgs = unary.new_zeros(batch, num_models, num_messages, height, width)
    scales = unary.new_zeros(batch, num_models, num_messages)
    if pairs == 0:
        return marginals, msgs, scales
    plan = _plan(tree, unary.device)
    sizes = _sizes(height, width, kh, kw, tree)

    if tree.levels:
        h = unary.new_empty(pairs, max(tree.level_sizes), hw)
        raw = torch.empty_like(h)

        kernel_norms = pairwise.flatten(-2).norm(dim=-1).contiguous()  # [Bp, L, M]
        kernel_batched = int(pairwise.shape[0] != 1)
        zero_tol = zero_message_threshold(dtype)

        def rescale(level):
            _message_rescale_kernel[(pairs, level.size)](
                raw, h, kernel_norms, msgs, scales, level.msg, num_models, num_messages, kernel_batched, hw, zero_tol,
                **sizes.pick(_message_rescale_kernel),
            )

        _run_levels(unary, pairwise, msgs, plan, sizes, plan.levels, h, raw, rescale)

    per_model = unary.new_empty(batch, num_models, num_nodes, hw)
    _belief_marginal_kernel[(pairs, num_nodes)](
        unary, msgs if num_messages else unary, per_model, plan.belief_nfac, plan.belief_fac,
        num_models, num_nodes, num_messages, hw, plan.max_factors,
        **sizes.pick(_belief_marginal_kernel),
    )
    khw = num_nodes * hw
    _mixture_kernel[(batch, triton.cdiv(khw, sizes.BLOCK))](
        per_model, weights, marginals, num_models, khw, **sizes.pick(_mixture_kernel)
    )
    return marginals, msgs, scales


def tree_marginals_backward(grad, unary, pairwise, weights, msgs, scales, tree: Tree):
    """(g_unary [B,K,H,W], g_pairwise [Bp,L,M,kh,kw], g_weights [B,L]) of sum(grad * marginals)."""
    dtype = compute_dtype(unary, pairwise, weights)
    grad, unary, pairwise, weights, msgs, scales = (
        t.to(dtype).contiguous() for t in (grad, unary, pairwise, weights, msgs, scales)
    )
    _check_shapes(unary, pairwise, tree, weights)
    batch, num_nodes, height, width = unary.shape
    _, num_models, num_messages, kh, kw = pairwise.shape
    hw = height * width
    pairs = batch * num_models
    if pairs == 0:
        return torch.zeros_like(unary), torch.zeros_like(pairwise), torch.zeros_like(weights)
    plan = _plan(tree, unary.device)
    sizes = _sizes(height, width, kh, kw, tree)
    kernel_batched = int(pairwise.shape[0] != 1)

    g_u = unary.new_zeros(batch, num_models, num_nodes, hw)  # per model; summed over models at the end
    g_msgs = unary.new_zeros(batch, num_models, num_messages, hw)
    g_kernels = unary.new_zeros(batch, num_models, num_messages, kh, kw)
    g_w_parts = unary.new_empty(batch, num_models, num_nodes)

    _belief_backward_kernel[(pairs, num_nodes)](
        grad, weights, unary, msgs if num_messages else unary, g_u, g_msgs if num_messages else g_u, g_w_parts,
        plan.belief_nfac, plan.belief_fac, num_models, num_nodes, num_messages, hw, plan.max_factors,
        **sizes.pick(_belief_backward_kernel),
    )
    if tree.levels:
        h = unary.new_empty(pairs, max(tree.level_sizes), hw)
        raw, g_raw, g_h = torch.empty_like(h), torch.empty_like(h), torch.empty_like(h)

        def backward_level(level):
            _message_grad_unscale_kernel[(pairs, level.size)](
                scales, g_msgs, g_raw, level.msg, num_messages, hw, **sizes.pick(_message_grad_unscale_kernel)
            )
            _message_conv_transpose_kernel[(pairs, level.size, sizes.conv_tiles)](
                g_raw, pairwise, g_h, level.msg,
                num_models, num_messages, kernel_batched, height, width, kh, kw,
                **sizes.pick(_message_conv_transpose_kernel),
            )
            _kernel_grad_kernel[(pairs, level.size, sizes.tap_tiles)](
                g_raw, h, g_kernels, level.msg, num_messages, height, width, kh, kw,
                **sizes.pick(_kernel_grad_kernel),
            )
            _product_backward_kernel[(pairs, level.num_groups)](
                unary, msgs, g_h, g_u, g_msgs,
                level.node, level.nfac, level.fac, level.group_node, level.group_size, level.group_item,
                level.size, num_models, num_nodes, num_messages, hw, plan.max_factors, plan.max_group,
                **sizes.pick(_product_backward_kernel),
            )

        # Each level's products and convolutions are recomputed from the saved messages (bitwise
        # the forward's values and constants) just before its gradient is pushed back.
        _run_levels(unary, pairwise, msgs, plan, sizes, reversed(plan.levels), h, raw, backward_level)

    g_unary = g_u.sum(1).view(batch, num_nodes, height, width)
    g_pairwise = g_kernels if pairwise.shape[0] == batch else g_kernels.sum(0, keepdim=True)
    return g_unary, g_pairwise, g_w_parts.sum(-1)


def tree_map_forward(unary: torch.Tensor, pairwise: torch.Tensor, tree: Tree):
    """Max-marginals [B, K, H, W] (maximum 1 per map) and a MAP configuration [B, K, 2] int64."""
    dtype = compute_dtype(unary, pairwise)
    unary, pairwise = (t.to(dtype).contiguous() for t in (unary, pairwise))
    _check_shapes(unary, pairwise, tree)
    batch, num_nodes, height, width = unary.shape
    num_messages, kh, kw = pairwise.shape[1:]
    hw = height * width
    config = torch.zeros(batch, num_nodes, 2, dtype=torch.long, device=unary.device)
    if batch == 0:
        return unary.new_empty(unary.shape), config
    plan = _plan(tree, unary.device)
    sizes = _sizes(height, width, kh, kw, tree)
    kernel_batched = int(pairwise.shape[0] != 1)
    # The logs (and the final exp) are torch's own, so that every value, and so every tie the
    # reference breaks, is reproduced bitwise: the kernels only add, compare and subtract.
    log_unary = torch.log(unary)
    log_kernels = torch.log(pairwise)
    channels = max(num_messages, 1)  # a single-node tree still needs valid pointers
    msgs = unary.new_zeros(batch, channels, hw)
    log_h = unary.new_zeros(batch, channels, hw)  # kept for every message: the decoder's fallback
    source = torch.full((batch, channels, hw), -1, dtype=torch.int32, device=unary.device)
    if tree.levels:
        best = unary.new_empty(batch, max(tree.level_sizes), hw)
        for level in plan.levels:
            _log_sum_kernel[(batch, level.size, triton.cdiv(hw, sizes.BLOCK))](
                log_unary, msgs, log_h, level.msg, level.node, level.nfac, level.fac,
                num_nodes, num_messages, hw, plan.max_factors, **sizes.pick(_log_sum_kernel),
            )
            _max_conv_kernel[(batch, level.size, sizes.conv_tiles)](
                log_h, log_kernels, best, source, level.msg,
                num_messages, kernel_batched, height, width, kh, kw, **sizes.pick(_max_conv_kernel),
            )
            _max_message_kernel[(batch, level.size)](best, msgs, level.msg, num_messages, hw, **sizes.pick(_max_message_kernel))
    max_marginals = unary.new_empty(batch, num_nodes, height, width)
    _max_marginals_kernel[(batch, num_nodes)](
        log_unary, msgs, max_marginals, plan.belief_nfac, plan.belief_fac,
        num_nodes, num_messages, hw, plan.max_factors, **sizes.pick(_max_marginals_kernel),
    )
    max_marginals.exp_()
    _map_decode_kernel[(batch,)](
        max_marginals, log_h, source, config, plan.order, plan.parent, plan.up_msg,
        tree.root, num_nodes, num_messages, width, hw, **sizes.pick(_map_decode_kernel),
    )
    return max_marginals, config


# ---------------------------------------------------------------------------------------------
# The registered ops, with their schema arguments (see handops/ops/_registration.py)
# ---------------------------------------------------------------------------------------------

def _tree(messages, level_sizes) -> Tree:
    return tree_from_schedule(tuple(messages), tuple(level_sizes))


OPS = {
    "tree_marginals": lambda unary, pairwise, weights, messages, level_sizes: tree_marginals_forward(
        unary, pairwise, weights, _tree(messages, level_sizes)),
    "tree_marginals_backward": lambda grad, unary, pairwise, weights, msgs, scales, messages, level_sizes: tree_marginals_backward(
        grad, unary, pairwise, weights, msgs, scales, _tree(messages, level_sizes)),
    "tree_map": lambda unary, pairwise, messages, level_sizes: tree_map_forward(unary, pairwise, _tree(messages, level_sizes)),
}


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation
# ---------------------------------------------------------------------------------------------

KERNELS = (
    _rescaled_product_kernel,
    _message_conv_kernel,
    _message_rescale_kernel,
    _belief_marginal_kernel,
    _mixture_kernel,
    _belief_backward_kernel,
    _message_grad_unscale_kernel,
    _message_conv_transpose_kernel,
    _kernel_grad_kernel,
    _product_backward_kernel,
    _log_sum_kernel,
    _max_conv_kernel,
    _max_message_kernel,
    _max_marginals_kernel,
    _map_decode_kernel,
)

_INT_POINTERS = {"source_ptr": "*i32", "config_ptr": "*i64"}


def compile_specs(dtype: torch.dtype, height: int, width: int, kernel_size, tree: Tree | None = None):
    """(kernel, signature, constexprs) of every kernel of this module, for ``triton.compile``.

    The constexprs are the ones the launchers pick for these sizes. Argument types follow the
    naming: ``*_ptr`` a tensor of ``dtype`` (``source_ptr`` int32, ``config_ptr`` int64), ``*_tab`` an
    int32 table, a ``tl.constexpr`` annotation a constexpr, anything else an int32 scalar.
    """
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    sizes = _sizes(height, width, kernel_size[0], kernel_size[1], tree if tree is not None else hand_tree())
    return [(kernel, kernel_signature(kernel, dtype, _INT_POINTERS), sizes.pick(kernel)) for kernel in KERNELS]
