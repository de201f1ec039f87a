"""The structured parts of the networks, with two interchangeable implementations.

``impl="handops"`` (the default) calls the fused ops (``handops.tree_marginals``, ``handops.edge_conv``);
``impl="reference"`` calls ``handops._reference``: one message, or one head's grouped convolution, at a
time, the way the thesis' published code runs them. The training-step benchmark and the equivalence
tests switch a network between the two with ``model.structured_impl = "reference"``.
"""

from __future__ import annotations

import torch

import handops
from handops._reference.edge_conv import edge_conv_reference
from handops._reference.tree_marginals import tree_marginals_reference
from handops.graph import Graph

__all__ = ["IMPLEMENTATIONS", "normalised_potentials", "tree_marginals", "edge_conv"]

IMPLEMENTATIONS = ("handops", "reference")


def _check_impl(impl: str) -> None:
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"structured_impl must be one of {IMPLEMENTATIONS}, got {impl!r}")


def normalised_potentials(maps: torch.Tensor, floor: float) -> torch.Tensor:
    """``clamp(maps, min=floor)`` with each [h, w] map divided by its sum: non-negative potentials that are
    never all zero (Eq. 4.2 / 4.4 with the author's floors; the floor's gradient is that of max(0, .))."""
    # float16 cannot hold the author's floors (1e-32 and 1e-16 round to 0, and an all-negative map would
    # become 0 / 0): half maps are normalised in float32, which the ops compute in anyway.
    if maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()
    positive = maps.clamp(min=floor)
    return positive / positive.sum(dim=(-2, -1), keepdim=True)


def tree_marginals(unary: torch.Tensor, kernels: torch.Tensor, weights: torch.Tensor | None = None,
                   impl: str = "handops") -> torch.Tensor:
    """Marginals [B, K, h, w] on ``handops.hand_tree()``: kernels [B, 40, kh, kw] (one model per image) or,
    with weights [B, L], a pool [L, 40, kh, kw] mixed as in Eq. 3.10."""
    _check_impl(impl)
    tree = handops.hand_tree()
    if impl == "handops":
        return handops.tree_marginals(unary, kernels, tree, weights)
    if weights is None:
        pairwise, weights = kernels[:, None], unary.new_ones(unary.shape[0], 1)
    else:
        pairwise = kernels[None]
    return tree_marginals_reference(unary, pairwise, weights, tree)[0]


def edge_conv(x: torch.Tensor, weight: torch.Tensor, graph: Graph, impl: str = "handops") -> torch.Tensor:
    """Eq. 5.2 without the activation: x [B, K, h, w] (one input for every head) or [B, Hd, K, h, w] (one
    input per head), weight [Hd, E, kh, kw] -> [B, Hd, K, h, w]."""
    _check_impl(impl)
    if impl == "handops":
        return handops.edge_conv(x, weight, graph)
    if x.dim() == 4:
        return edge_conv_reference(x, weight, None, graph)
    return torch.cat([edge_conv_reference(x[:, h], weight[h:h + 1], None, graph) for h in range(weight.shape[0])], 1)
