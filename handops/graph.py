"""Directed graphs over keypoints for the edge-aware graph convolution (SIA-GCN, thesis Sec. 5.3)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

__all__ = ["Graph", "hand_graph", "graph_from_edges"]


class Graph:
    """A directed graph over ``num_nodes`` nodes with edges (src, dst); self loops (k, k) are edges too.

    Attributes:
        num_nodes, edges: as given (edge e is ``edges[e]``; its kernel is channel e of the weights).
        in_degree: tuple of the number of edges into each node.
    The tensors of Algorithm 1 (thesis Eq. 5.2) are ``broadcast`` B [E, K] (B[e, src_e] = 1) and
    ``aggregation`` A_hat [K, E] (A_hat[t, e] = 1 / in_degree(t) for every edge e into t).
    """

    def __init__(self, num_nodes: int, edges: Sequence[tuple[int, int]]):
        num_nodes = int(num_nodes)
        if num_nodes < 1:
            raise ValueError(f"a graph needs at least one node, got num_nodes={num_nodes}")
        parsed = []
        for edge in edges:
            if len(edge) != 2:
                raise ValueError(f"each edge must be a (src, dst) pair, got {edge!r}")
            src, dst = int(edge[0]), int(edge[1])
            if not (0 <= src < num_nodes and 0 <= dst < num_nodes):
                raise ValueError(f"edge ({src}, {dst}) names a node outside [0, {num_nodes})")
            parsed.append((src, dst))
        if len(set(parsed)) != len(parsed):
            raise ValueError("edges must not repeat")
        if not parsed:
            raise ValueError("a graph needs at least one edge")
        self.num_nodes = num_nodes
        self.edges = tuple(parsed)
        self.in_degree = tuple(sum(1 for _, d in parsed if d == node) for node in range(num_nodes))

    @classmethod
    def from_adjacency(cls, adjacency) -> Graph:
        """Algorithm 1's edge order from an adjacency matrix A (A[j, i] = 1: an edge j -> i):
        edges sorted by destination, then source."""
        a = torch.as_tensor(adjacency)
        if a.dim() != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"adjacency must be a square [K, K] matrix, got shape {list(a.shape)}")
        k = a.shape[0]
        return cls(k, [(j, i) for i in range(k) for j in range(k) if a[j, i] != 0])

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def copies(self, count: int) -> Graph:
        """The disjoint union of ``count`` copies: node c K + k and edge c E + e are copy c's k and e
        (how ``edge_conv``'s per-head form runs every head in one call). Built once per count."""
        cache = self.__dict__.setdefault("_copies", {})
        if count not in cache:
            k = self.num_nodes
            cache[count] = Graph(count * k, [(c * k + s, c * k + t) for c in range(count) for s, t in self.edges])
        return cache[count]

    def flat_edges(self) -> list[int]:
        """``[src0, dst0, src1, dst1, ...]``: how the registered op receives the graph."""
        return [v for edge in self.edges for v in edge]

    @property
    def broadcast(self) -> torch.Tensor:
        """B [E, K] (float64: cast it to the dtype at hand)."""
        b = torch.zeros(self.num_edges, self.num_nodes, dtype=torch.float64)
        for e, (src, _) in enumerate(self.edges):
            b[e, src] = 1.0
        return b

    @property
    def aggregation(self) -> torch.Tensor:
        """A_hat [K, E] (float64, so that 1 / in_degree is exact to double precision)."""
        a = torch.zeros(self.num_nodes, self.num_edges, dtype=torch.float64)
        for e, (_, dst) in enumerate(self.edges):
            a[dst, e] = 1.0 / self.in_degree[dst]
        return a

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and (other.num_nodes, other.edges) == (self.num_nodes, self.edges)

    def __hash__(self) -> int:
        return hash((self.num_nodes, self.edges))

    def __repr__(self) -> str:
        return f"Graph(num_nodes={self.num_nodes}, edges={list(self.edges)})"


def hand_graph(self_loops: bool = True) -> Graph:
    """The 21-keypoint hand skeleton (OpenPose order) with both directions of each of the 20 bones,
    plus one self loop per node: 61 edges, in Algorithm 1's order (by destination, then source)."""
    from handops.tree import hand_tree

    bones = hand_tree().edges
    pairs = {(p, c) for p, c in bones} | {(c, p) for p, c in bones}
    if self_loops:
        pairs |= {(k, k) for k in range(21)}
    return Graph(21, sorted(pairs, key=lambda e: (e[1], e[0])))


@functools.lru_cache(maxsize=64)
def graph_from_edges(num_nodes: int, edges: tuple[int, ...]) -> Graph:
    """The :class:`Graph` with ``edges`` given flat (src, dst, src, dst, ...), as the registered ops receive it."""
    if len(edges) % 2:
        raise ValueError(f"edges must hold (src, dst) pairs, got {len(edges)} integers")
    return Graph(num_nodes, list(zip(edges[0::2], edges[1::2])))
