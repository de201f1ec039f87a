"""Readable pure-PyTorch references for the tree ops: the specification every kernel is tested against.

Shapes are the canonical ones the registered ops receive (see ``handops.ops.tree_marginals``):
``unary`` [B, K, H, W], ``pairwise`` [Bp, L, M, kh, kw] with Bp in {1, B}, ``weights`` [B, L]; the
schedule is a :class:`handops.Tree`. Messages are computed one at a time, as the thesis code does.

Numerical conventions (shared by every implementation):

* Convolution: with c = (kh // 2, kw // 2), ``conv(k, h)[p] = sum_q k[p - q + c] * h[q]`` over the
  H x W map, zero outside the kernel and the map. Every implementation computes it so that each
  entry is accurate *relative to itself* (within about kh * kw * eps): a direct sum of non-negative
  terms, as here (conv2d), in the C++ kernel (csrc/cpu/direct_correlation.h) and in the Triton
  kernels. An FFT convolution does not qualify: it is accurate only to about eps times the largest
  entry, and on peaked heatmaps the entries that decide the marginal are 1e-14 of the largest.
* Every message and every partial product is rescaled to maximum 1. The scale factors are treated as
  constants by the backward pass; this is exact because each marginal is invariant to the scale of
  each message (it is homogeneous of degree 0 in it).
* Messages are floored at ``MESSAGE_FLOOR`` (relative to their maximum 1) so that a product of
  messages never underflows to an all-zero belief; the floor passes gradients straight through.
* A message that is zero carries no information and is replaced by all ones. "Zero" means a peak
  ``max(r) <= zero_message_threshold(dtype) * |kernel|_2 * |h|_2``: Cauchy-Schwarz bounds the peak by
  ``|kernel|_2 * |h|_2``, and a peak 256 eps below that bound means the kernel sends (nearly) all of
  h's mass off the map. A node whose belief is identically zero gets the uniform marginal ``1 / (H * W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from handops.tree import Tree

__all__ = ["MESSAGE_FLOOR", "zero_message_threshold", "tree_marginals_reference", "tree_map_reference", "message_conv"]

# The C++ kernel repeats both numbers (csrc/cpu/tree_marginals.cpp); tests/test_constants.py checks they agree.
MESSAGE_FLOOR = 1e-30
ZERO_MESSAGE_EPS_FACTOR = 256.0


def zero_message_threshold(dtype: torch.dtype) -> float:
    """A message peak at or below this times |kernel|_2 * |h|_2 counts as zero (all mass sent off the map)."""
    return ZERO_MESSAGE_EPS_FACTOR * torch.finfo(dtype).eps


def _rescale(x: torch.Tensor) -> torch.Tensor:
    """x / max(x) per map, the maximum a constant for autograd; an all-zero map stays zero."""
    peak = x.detach().amax(dim=(-2, -1), keepdim=True)
    return x / torch.where(peak > 0, peak, torch.ones_like(peak))


def message_conv(h: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``conv(kernel, h)[b, p] = sum_q kernel[b, p - q + c] * h[b, q]`` for h [B, H, W], kernel [B, kh, kw]."""
    batch, kh, kw = kernel.shape
    # conv2d is a cross-correlation, so the kernel is flipped; groups=B gives one kernel per image.
    out = F.conv2d(h.unsqueeze(0), kernel.flip(-2, -1).unsqueeze(1), padding=(kh // 2, kw // 2), groups=batch)
    return out.squeeze(0)


def _product(unary: torch.Tensor, factors: list[torch.Tensor]) -> torch.Tensor:
    """unary * prod(factors), rescaled after every multiplication so it cannot underflow."""
    out = _rescale(unary)
    for f in factors:
        out = _rescale(out * f)
    return out


def _single_model(unary: torch.Tensor, kernels: torch.Tensor, tree: Tree):
    """Marginals [B, K, H, W], normalised messages [B, M, H, W] and their scales [B, M] of one model.

    kernels [B, M, kh, kw]; a message's scale is the peak of its raw convolution, 0 for a zero message.
    """
    batch, num_nodes, height, width = unary.shape
    msgs: list[torch.Tensor | None] = [None] * tree.num_messages
    scales = []
    threshold = zero_message_threshold(unary.dtype)
    for m, (src, dst) in enumerate(tree.messages):
        into_src = [msgs[k] for k in tree.incoming(src) if tree.messages[k][0] != dst]
        h = _product(unary[:, src], into_src)
        raw = message_conv(h, kernels[:, m])
        msg = _rescale(raw)
        peak = raw.detach().amax(dim=(-2, -1))
        bound = kernels[:, m].detach().flatten(1).norm(dim=1) * h.detach().flatten(1).norm(dim=1)
        informative = peak > threshold * bound
        msg = torch.where(informative[:, None, None], msg, torch.ones_like(msg))
        msgs[m] = msg + (MESSAGE_FLOOR - msg).clamp_min(0).detach()  # floor, straight-through gradient
        scales.append(torch.where(informative, peak, torch.zeros_like(peak)))

    marginals = []
    for node in range(num_nodes):
        belief = _product(unary[:, node], [msgs[k] for k in tree.incoming(node)])
        total = belief.sum(dim=(-2, -1), keepdim=True)
        uniform = torch.full_like(belief, 1.0 / (height * width))
        marginals.append(torch.where(total > 0, belief / torch.where(total > 0, total, 1.0), uniform))
    if not msgs:  # a single-node tree
        return torch.stack(marginals, 1), unary.new_zeros(batch, 0, height, width), unary.new_zeros(batch, 0)
    return torch.stack(marginals, 1), torch.stack(msgs, 1), torch.stack(scales, 1)


def tree_marginals_reference(unary: torch.Tensor, pairwise: torch.Tensor, weights: torch.Tensor, tree: Tree):
    """Sum-product marginals of a weighted mixture of tree models sharing the unary (thesis Eq. 3.10).

    Args:
        unary: [B, K, H, W] non-negative.
        pairwise: [Bp, L, M, kh, kw] non-negative, Bp in {1, B}; channel m is ``tree.messages[m]``.
        weights: [B, L] non-negative mixture weights.
    Returns:
        marginals [B, K, H, W] = sum_l weights[:, l] * p_l (each p_l map sums to 1), the normalised
        messages [B, L, M, H, W] and their scales [B, L, M] (peak of the raw convolution, 0 for a
        message replaced by ones).
    """
    batch = unary.shape[0]
    out = unary.new_zeros(unary.shape)
    messages, scales = [], []
    for model in range(pairwise.shape[1]):
        kernels = pairwise[:, model].expand(batch, *pairwise.shape[2:])
        marginals, msgs, peaks = _single_model(unary, kernels, tree)
        out = out + weights[:, model, None, None, None] * marginals
        messages.append(msgs)
        scales.append(peaks)
    if not messages:
        empty = unary.new_zeros(batch, 0, tree.num_messages)
        return out, empty[..., None, None].expand(-1, -1, -1, *unary.shape[2:]).contiguous(), empty
    return out, torch.stack(messages, 1), torch.stack(scales, 1)


def tree_map_reference(unary: torch.Tensor, pairwise: torch.Tensor, tree: Tree):
    """Max-product on one tree model, in the log domain, with a joint MAP decoding by backtracking.

    Args:
        unary: [B, K, H, W] non-negative.
        pairwise: [Bp, M, kh, kw] non-negative, Bp in {1, B}.
    Returns:
        max_marginals [B, K, H, W]: ``max over configurations with x_i = p of the joint``, scaled so
        that each map's maximum is 1 (all ones for a node whose belief is identically zero), and
        config [B, K, 2] int64 (row, col): a jointly most probable configuration. The root takes the
        first maximum (row-major) of its max-marginal; every other node the position its message to
        its parent chose for the parent's position. Where every candidate has probability zero, the
        node takes the first maximum of its own upward belief.
    """
    batch, num_nodes, height, width = unary.shape
    kh, kw = pairwise.shape[-2:]
    ch, cw = kh // 2, kw // 2
    kernels = pairwise.expand(batch, *pairwise.shape[1:])
    with torch.no_grad():
        log_unary = torch.log(unary)
        log_kernels = torch.log(kernels)
        msgs: list[torch.Tensor | None] = [None] * tree.num_messages
        source: dict[int, torch.Tensor] = {}  # upward message m: flat source position per target position
        upward_belief: dict[int, torch.Tensor] = {}
        rows = torch.arange(height, device=unary.device).view(height, 1)
        cols = torch.arange(width, device=unary.device).view(1, width)
        for m, (src, dst) in enumerate(tree.messages):
            log_h = log_unary[:, src].clone()
            for k in tree.incoming(src):
                if tree.messages[k][0] != dst:
                    log_h = log_h + msgs[k]
            # patches[b, a*kw + t, p] = log_h[b, p + (a - ch, t - cw)], -inf outside the map.
            padded = F.pad(log_h.unsqueeze(1), (cw, cw, ch, ch), value=float("-inf"))
            patches = F.unfold(padded, (kh, kw)).view(batch, kh * kw, height, width)
            # The source x_i = p + (a - ch, t - cw) is at offset d = (ch - a, cw - t): kernel index kh-1-a, kw-1-t.
            scores = patches + log_kernels[:, m].flip(-2, -1).reshape(batch, kh * kw, 1, 1)
            best, tap = scores.max(dim=1)
            peak = best.amax(dim=(-2, -1), keepdim=True)
            msgs[m] = torch.where(peak > float("-inf"), best - peak, torch.zeros_like(best))
            if tree.parents[src] == dst:
                src_row = (rows + tap // kw - ch).clamp(0, height - 1)
                src_col = (cols + tap % kw - cw).clamp(0, width - 1)
                source[m] = torch.where(best > float("-inf"), src_row * width + src_col, -1)
                upward_belief[src] = log_h

        log_beliefs = []
        for node in range(num_nodes):
            log_b = log_unary[:, node].clone()
            for k in tree.incoming(node):
                log_b = log_b + msgs[k]
            log_beliefs.append(log_b)
        log_beliefs = torch.stack(log_beliefs, 1)
        peak = log_beliefs.amax(dim=(-2, -1), keepdim=True)
        max_marginals = torch.where(peak > float("-inf"), torch.exp(log_beliefs - peak), torch.ones_like(log_beliefs))

        flat = torch.zeros(batch, num_nodes, dtype=torch.long, device=unary.device)
        flat[:, tree.root] = max_marginals[:, tree.root].flatten(1).argmax(dim=1)
        order = sorted(range(num_nodes), key=lambda n: tree.depth[n])
        for node in order:
            parent = tree.parents[node]
            if parent == -1:
                continue
            chosen = source[tree.message_index(node, parent)].flatten(1).gather(1, flat[:, parent, None]).squeeze(1)
            fallback = upward_belief[node].flatten(1).argmax(dim=1)
            flat[:, node] = torch.where(chosen >= 0, chosen, fallback)
        config = torch.stack([flat // width, flat % width], dim=-1)
    return max_marginals, config
