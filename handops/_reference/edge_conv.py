"""Readable reference of the edge-aware graph convolution, thesis Eq. 5.2 literally: the spec.

    y[b, h, t] = sum over edges e = (s, t) of A_hat[t, e] * (conv(weight[h, e], x[b, s]) + bias[h, e])

with ``conv(k, x)[p] = sum_q k[p - q + c] x[q]``, c = (kh // 2, kw // 2): the convention of
``handops.tree_marginals``. Shapes: x [B, K, H, W] (every head reads it) or [B, Hd, K, H, W] (head h
reads x[:, h]), weight [Hd, E, kh, kw], bias [Hd, E] or None; the result is [B, Hd, K, H, W].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from handops.graph import Graph

__all__ = ["edge_conv_reference"]


def edge_conv_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, graph: Graph) -> torch.Tensor:
    batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    heads, num_edges, kh, kw = weight.shape
    broadcast = graph.broadcast.to(x)  # B [E, K]
    aggregation = graph.aggregation.to(x)  # A_hat [K, E]
    outputs = []
    for head in range(heads):
        gathered = torch.einsum("ek,bkhw->behw", broadcast, x if x.dim() == 4 else x[:, head])  # B X: each edge's source map
        # Channel-wise convolution: one kernel per edge (groups = E); conv2d correlates, so flip.
        along_edges = F.conv2d(gathered, weight[head].flip(-2, -1).unsqueeze(1), padding=(kh // 2, kw // 2), groups=num_edges)
        if bias is not None:
            along_edges = along_edges + bias[head].view(1, num_edges, 1, 1)
        outputs.append(torch.einsum("te,behw->bthw", aggregation, along_edges))
    if not outputs:
        return x.new_zeros(batch, 0, graph.num_nodes, height, width)
    return torch.stack(outputs, 1)
