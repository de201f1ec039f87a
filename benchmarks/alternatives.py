"""Strong pure-PyTorch alternatives to the handops ops: what a careful user would write without them.

``tree_marginals_direct_levels`` and ``tree_marginals_fft_levels`` compute the same sum-product
marginals as :func:`handops.tree_marginals` (same numerical conventions as ``handops._reference``) but

* batch every message of one tree level (all images x all messages of the level) into one tensor,
* leave the backward pass to autograd,

and convolve in two ways:

* ``direct_levels``: one grouped ``conv2d`` per level. Exact on every input (a direct sum of
  non-negative terms is accurate relative to each entry), like the reference and handops.
* ``fft_levels``: ``torch.fft`` on a circular grid just large enough to equal the linear convolution
  on the centred H x W output, with the kernel spectra of all messages computed once. Accurate only
  to about eps times each message's largest entry: right on flat (e.g. uniformly random) inputs,
  wrong on the peaked heatmaps and kernels AGMN produces, whose messages multiply entries 1e-14 of
  their peak (tests/test_tree_marginals_peaked.py). The benchmark runs it on random inputs only.

``edge_conv_fft`` computes one head of :func:`handops.edge_conv` (thesis Eq. 5.2) the same way:
every node map is transformed once, every edge multiplies its source's spectrum by its kernel's,
the edges into a node are summed in the frequency domain and each node is transformed back once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from handops._reference.tree_marginals import MESSAGE_FLOOR, zero_message_threshold
from handops.graph import Graph
from handops.ops.tree_marginals import _canonical_inputs
from handops.tree import Tree

__all__ = ["fft_size", "tree_marginals_direct_levels", "tree_marginals_fft_levels", "edge_conv_fft"]

# An FFT convolution is exact only up to round-off of about eps * log2(N) * |k|_2 * |h|_2; a message
# whose peak stays below this many times that bound is treated as identically zero.
_ZERO_MESSAGE_TOLERANCE = 8.0


def fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: a length every FFT library transforms quickly."""
    size = max(n, 1)
    while True:
        rest = size
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return size
        size += 1


def _rescale(x: torch.Tensor) -> torch.Tensor:
    """x / max(x) per map, the maximum a constant for autograd; an all-zero map stays zero."""
    peak = x.detach().amax(dim=(-2, -1), keepdim=True)
    return x / torch.where(peak > 0, peak, torch.ones_like(peak))


def _circular_kernels(pairwise: torch.Tensor, grid: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """[..., kh, kw] -> [..., Nh, Nw]: the kernel entry at offset d from its centre moves to index d mod N.

    Offsets with |d| >= H can never reach an output position, so they are cropped first; the rest
    then fit on the grid without wrapping onto each other (N >= H + |d|max).
    """
    kh, kw = pairwise.shape[-2:]
    reach_h, reach_w = min(kh // 2, height - 1), min(kw // 2, width - 1)
    cropped = pairwise[..., kh // 2 - reach_h : kh // 2 + reach_h + 1, kw // 2 - reach_w : kw // 2 + reach_w + 1]
    padded = F.pad(cropped, (0, grid[1] - cropped.shape[-1], 0, grid[0] - cropped.shape[-2]))
    return torch.roll(padded, shifts=(-reach_h, -reach_w), dims=(-2, -1))


def _fft_conv(h: torch.Tensor, kernel_spectra: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``sum_q k[p - q + c] h[q]`` for p on the H x W map: h [..., H, W], spectra [..., Nh, Nw // 2 + 1]."""
    height, width = h.shape[-2:]
    product = torch.fft.rfft2(h, s=grid) * kernel_spectra
    out = torch.fft.irfft2(product, s=grid)[..., :height, :width]
    # Round-off leaves tiny negatives where the exact result is ~0: clamp them, but let the gradient
    # pass straight through, as it does for the exact (non-negative) convolution of the reference.
    return out + (out.clamp_min(0) - out).detach()


class _MessageStore:
    """The messages computed so far, one [B, L, n, H, W] tensor per level: no copy into a growing bank."""

    def __init__(self, tree: Tree, ones: torch.Tensor):
        self.ones = ones  # [B, L, H, W], stands in for a missing factor
        self.location = {m: (i, j) for i, level in enumerate(tree.levels) for j, m in enumerate(level)}
        self.levels: list[torch.Tensor] = []

    def gather(self, column: list[int | None]) -> torch.Tensor:
        """Messages ``column`` ([B, L, n, H, W], None for all ones): a view when they are consecutive in one level."""
        places = [self.location.get(m) for m in column]
        first = places[0]
        if first is not None and places == [(first[0], first[1] + n) for n in range(len(places))]:
            return self.levels[first[0]][:, :, first[1] : first[1] + len(places)]
        maps = [self.ones if p is None else self.levels[p[0]][:, :, p[1]] for p in places]
        return torch.stack(maps, dim=2)

    def product(self, base: torch.Tensor, factors: list[list[int]]) -> torch.Tensor:
        """base [B, L, n, H, W] times the messages ``factors[n]`` for each map n, rescaled after every step."""
        out = _rescale(base)
        for f in range(max((len(fs) for fs in factors), default=0)):
            out = _rescale(out * self.gather([fs[f] if f < len(fs) else None for fs in factors]))
        return out


def _level_messages_fft(pairwise: torch.Tensor, tree: Tree, height: int, width: int):
    """The FFT message rule: returns messages(level index, h [B, L, n, H, W]) -> (raw, noise level)."""
    kh, kw = pairwise.shape[-2:]
    grid = (fft_size(height + min(kh // 2, height - 1)), fft_size(width + min(kw // 2, width - 1)))
    kernels = _circular_kernels(pairwise, grid, height, width)
    # [Bp, L, M, Nh, Nw // 2 + 1], once for every message; split (not sliced) so the backward is one cat.
    kernel_spectra = torch.fft.rfft2(kernels).split(tree.level_sizes, dim=2)
    log_grid = torch.log2(torch.tensor(float(grid[0] * grid[1])))
    noise_scale = _ZERO_MESSAGE_TOLERANCE * torch.finfo(pairwise.dtype).eps * log_grid
    kernel_norms = kernels.detach().flatten(-2).norm(dim=-1)[..., None, None].split(tree.level_sizes, dim=2)

    def messages(index: int, h: torch.Tensor):
        h_norms = h.detach().flatten(-2).norm(dim=-1)[..., None, None]
        return _fft_conv(h, kernel_spectra[index], grid), noise_scale * kernel_norms[index] * h_norms

    return messages


def _level_messages_direct(pairwise: torch.Tensor, tree: Tree, height: int, width: int):
    """The direct message rule (the reference's, batched over a level): one grouped conv2d per level."""
    kh, kw = pairwise.shape[-2:]
    kernels = pairwise.flip(-2, -1).split(tree.level_sizes, dim=2)  # conv2d correlates: flip once
    kernel_norms = pairwise.detach().flatten(-2).norm(dim=-1)[..., None, None].split(tree.level_sizes, dim=2)
    threshold = zero_message_threshold(pairwise.dtype)

    def messages(index: int, h: torch.Tensor):
        # h is [B, 1, n, ...] before a model's message enters it; kernels are [1, L, n, ...] when shared.
        batch, models, count = torch.broadcast_shapes(h.shape[:3], kernels[index].shape[:3])
        h = h.expand(batch, models, count, height, width)
        weight = kernels[index].expand(batch, models, count, kh, kw).reshape(-1, 1, kh, kw)
        raw = F.conv2d(h.reshape(1, -1, height, width), weight, padding=(kh // 2, kw // 2), groups=weight.shape[0])
        h_norms = h.detach().flatten(-2).norm(dim=-1)[..., None, None]
        return raw.view(h.shape), threshold * kernel_norms[index] * h_norms

    return messages


def _tree_marginals_levels(unary, pairwise, tree, weights, message_rule) -> torch.Tensor:
    """Sum-product marginals with the messages of each level batched; ``message_rule`` convolves them."""
    out_dtype = torch.promote_types(unary.dtype, pairwise.dtype)
    unary, pairwise, weights = _canonical_inputs(unary, pairwise, tree, weights)  # [B,K,H,W], [Bp,L,M,kh,kw], [B,L]
    batch, num_nodes, height, width = unary.shape
    num_models = pairwise.shape[1]
    messages = message_rule(pairwise, tree, height, width)

    unary = unary[:, None]  # [B, 1, K, H, W]
    store = _MessageStore(tree, unary.new_ones(()).expand(batch, num_models, height, width))
    for index, level in enumerate(tree.levels):
        pairs = [tree.messages[m] for m in level]
        factors = [[k for k in tree.incoming(src) if tree.messages[k][0] != dst] for src, dst in pairs]
        h = store.product(unary[:, :, [src for src, _ in pairs]], factors)  # [B, L, n, H, W]
        raw, noise = messages(index, h)
        informative = raw.detach().amax(dim=(-2, -1), keepdim=True) > noise
        msg = torch.where(informative, _rescale(raw), torch.ones_like(raw))
        store.levels.append(msg + (MESSAGE_FLOOR - msg).clamp_min(0).detach())  # floor, straight-through gradient

    belief = store.product(unary, [list(tree.incoming(node)) for node in range(num_nodes)])  # [B, L, K, H, W]
    total = belief.sum(dim=(-2, -1), keepdim=True)
    marginals = torch.where(total > 0, belief / torch.where(total > 0, total, 1.0), 1.0 / (height * width))
    return (weights[:, :, None, None, None] * marginals).sum(1).to(out_dtype)


def tree_marginals_fft_levels(
    unary: torch.Tensor, pairwise: torch.Tensor, tree: Tree, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum-product tree marginals with level-batched FFT convolutions; same contract as :func:`handops.tree_marginals`.

    Args:
        unary: [B, K, H, W] non-negative.
        pairwise: [B, M, kh, kw] or [M, kh, kw]; with ``weights`` [L, M, kh, kw] or [B, L, M, kh, kw].
        tree: the :class:`handops.Tree`; weights: [B, L] or None.
    Returns:
        [B, K, H, W]: ``sum_l weights[:, l] * p_l`` with every p_l map summing to 1.

    Images are laid out as [B, L] (unary broadcast over the L models, shared kernels over B).
    Circular convolution on an N x N grid equals the linear one on the H x W output when
    N >= H + kh // 2 (72 for H = 46, kh = 45). Not exact on peaked inputs (module docstring).
    """
    return _tree_marginals_levels(unary, pairwise, tree, weights, _level_messages_fft)


def tree_marginals_direct_levels(
    unary: torch.Tensor, pairwise: torch.Tensor, tree: Tree, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum-product tree marginals with level-batched direct (grouped conv2d) convolutions; exact on every input.

    Same arguments, result and conventions as :func:`tree_marginals_fft_levels` and the reference.
    """
    return _tree_marginals_levels(unary, pairwise, tree, weights, _level_messages_direct)


def edge_conv_fft(x: torch.Tensor, weight: torch.Tensor, graph: Graph, bias: torch.Tensor | None = None) -> torch.Tensor:
    """One head of the edge-aware graph convolution through ``torch.fft``; autograd backward.

    Args:
        x: [B, K, H, W] node maps; weight: [E, kh, kw], odd sizes, kernel e for ``graph.edges[e]``;
        bias: [E] or None.
    Returns:
        [B, K, H, W], ``y[t] = sum_{e = (s, t)} A_hat[t, e] * (conv(weight[e], x[s]) + bias[e])``,
        conv as in :func:`handops.edge_conv`. In the frequency domain, on the N x N circular grid
        (N >= H + kh // 2, where circular equals linear convolution on the H x W output):
        ``Y[t] = sum_{e = (s, t)} X[s] * (A_hat[t, e] K[e])``, X = rfft2(x), K = rfft2(weight).
    """
    height, width = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    grid = (fft_size(height + min(kh // 2, height - 1)), fft_size(width + min(kw // 2, width - 1)))
    dtype = torch.promote_types(x.dtype, weight.dtype)
    src, dst = (torch.tensor(ends, device=x.device) for ends in zip(*graph.edges))
    edge_weight = graph.aggregation.to(device=x.device, dtype=dtype)[dst, torch.arange(graph.num_edges, device=x.device)]

    # A_hat[t, e] is a real scalar per edge: fold it into the kernel before its transform.
    kernel_spectra = torch.fft.rfft2(_circular_kernels(weight * edge_weight[:, None, None], grid, height, width))
    node_spectra = torch.fft.rfft2(x.to(dtype), s=grid)  # [B, K, Nh, Nw // 2 + 1], once per node map
    along_edges = node_spectra.index_select(1, src) * kernel_spectra  # [B, E, Nh, Nw // 2 + 1]
    into_nodes = torch.zeros_like(node_spectra).index_add(1, dst, along_edges)  # sum over the edges into t
    y = torch.fft.irfft2(into_nodes, s=grid)[..., :height, :width]  # once per target node
    if bias is not None:
        y = y + (graph.aggregation.to(device=x.device, dtype=dtype) @ bias.to(dtype))[:, None, None]
    return y
