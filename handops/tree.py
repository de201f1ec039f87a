"""Rooted trees over keypoints and the message schedule of exact belief propagation on them."""

from __future__ import annotations

import functools
from collections.abc import Sequence

__all__ = ["Tree", "hand_tree", "tree_from_schedule", "HAND_KEYPOINT_NAMES"]

HAND_KEYPOINT_NAMES = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "little_mcp", "little_pip", "little_dip", "little_tip",
)


class Tree:
    """A rooted tree over ``K`` nodes, given by each node's parent (``-1`` for the single root).

    Attributes:
        parents: tuple of K ints, ``parents[root] == -1``.
        edges: tuple of the K-1 undirected edges as (parent, child), in node order.
        depth: tuple of K ints, the root has depth 0.
        messages: tuple of the 2(K-1) directed messages (src, dst) in schedule order. Upward
            messages (child -> parent) come first, deepest children first; then downward messages
            (parent -> child), shallowest parents first. Within a level messages are ordered by
            source node, then destination node.
        levels: tuple of tuples of message indices; the messages of one level depend only on
            messages of earlier levels, so they can be computed in parallel.
        level_sizes: number of messages per level (``sum(level_sizes) == len(messages)``).

    Message ``m`` of a schedule is the channel ``m`` of the pairwise kernels given to
    :func:`handops.tree_marginals` and :func:`handops.tree_map`.
    """

    def __init__(self, parents: Sequence[int]):
        parents = tuple(int(p) for p in parents)
        num_nodes = len(parents)
        if num_nodes < 1:
            raise ValueError("Tree needs at least one node, got an empty parents list")
        roots = [i for i, p in enumerate(parents) if p == -1]
        if len(roots) != 1:
            raise ValueError(f"Tree needs exactly one root (parent -1), got {len(roots)}: {roots}")
        for i, p in enumerate(parents):
            if p != -1 and not 0 <= p < num_nodes:
                raise ValueError(f"parents[{i}] = {p} is not a node index in [0, {num_nodes}) or -1")
            if p == i:
                raise ValueError(f"node {i} is its own parent")
        depth = [-1] * num_nodes
        for i in range(num_nodes):
            # Walk up to the root; a walk longer than the node count means a cycle.
            path, node = [], i
            while node != -1 and depth[node] == -1:
                path.append(node)
                node = parents[node]
                if len(path) > num_nodes:
                    raise ValueError(f"parents contain a cycle through node {i}; a tree has none")
            base = -1 if node == -1 else depth[node]
            for offset, n in enumerate(reversed(path)):
                depth[n] = base + 1 + offset

        self.parents = parents
        self.root = roots[0]
        self.depth = tuple(depth)
        self.num_nodes = num_nodes
        self.edges = tuple((p, c) for c, p in enumerate(parents) if p != -1)
        self.children = tuple(tuple(c for c, p in enumerate(parents) if p == i) for i in range(num_nodes))

        max_depth = max(depth)
        levels: list[list[tuple[int, int]]] = []
        for d in range(max_depth, 0, -1):  # upward: children at depth d send to their parents
            levels.append([(c, parents[c]) for c in range(num_nodes) if depth[c] == d])
        for d in range(0, max_depth):  # downward: parents at depth d send to their children
            levels.append([(p, c) for p in range(num_nodes) if depth[p] == d for c in self.children[p]])
        messages, grouped = [], []
        for level in levels:
            grouped.append(tuple(range(len(messages), len(messages) + len(level))))
            messages.extend(level)
        self.messages = tuple(messages)
        self.levels = tuple(grouped)
        self.level_sizes = tuple(len(g) for g in grouped)
        self._index = {msg: m for m, msg in enumerate(self.messages)}

    @property
    def num_messages(self) -> int:
        return len(self.messages)

    def message_index(self, src: int, dst: int) -> int:
        """The channel of the directed message ``src -> dst``."""
        try:
            return self._index[(src, dst)]
        except KeyError:
            raise ValueError(f"({src}, {dst}) is not an edge of this tree") from None

    def incoming(self, node: int) -> tuple[int, ...]:
        """Indices of all messages into ``node``."""
        return tuple(m for m, (_, dst) in enumerate(self.messages) if dst == node)

    def flat_messages(self) -> list[int]:
        """The schedule as ``[src0, dst0, src1, dst1, ...]``: how the registered ops receive it."""
        return [v for msg in self.messages for v in msg]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tree) and other.parents == self.parents

    def __hash__(self) -> int:
        return hash(self.parents)

    def __repr__(self) -> str:
        return f"Tree(parents={list(self.parents)})"


def hand_tree() -> Tree:
    """The 21 hand keypoints in OpenPose/Panoptic order, rooted at the wrist (node 0).

    Each finger is a chain from its base to its tip: thumb 1-4, index 5-8, middle 9-12,
    ring 13-16, little 17-20; every finger base hangs from the wrist. ``hand_tree().messages``
    has 40 entries in 8 levels of 5.
    """
    parents = [-1]
    for finger in range(5):
        base = 1 + 4 * finger
        parents += [0, base, base + 1, base + 2]
    return Tree(parents)


@functools.lru_cache(maxsize=64)
def tree_from_schedule(messages: tuple[int, ...], level_sizes: tuple[int, ...]) -> Tree:
    """The :class:`Tree` whose schedule is ``messages`` (flat src/dst pairs) with ``level_sizes``.

    The registered ops receive the schedule as integer lists; this rebuilds the tree and refuses
    a schedule that is not exactly the one :class:`Tree` makes.
    """
    if len(messages) % 2:
        raise ValueError(f"messages must hold (src, dst) pairs, got {len(messages)} integers")
    pairs = list(zip(messages[0::2], messages[1::2]))
    num_nodes = len(pairs) // 2 + 1
    parents = [-1] * num_nodes
    for src, dst in pairs[: len(pairs) // 2]:  # the upward half: child -> parent
        if not (0 <= src < num_nodes and 0 <= dst < num_nodes):
            raise ValueError(f"message ({src}, {dst}) names a node outside [0, {num_nodes})")
        parents[src] = dst
    wrong = "the message schedule is not the one handops.Tree builds; pass tree.flat_messages() and tree.level_sizes"
    try:
        tree = Tree(parents)
    except ValueError as error:
        raise ValueError(f"{wrong} ({error})") from None
    if tree.messages != tuple(pairs) or tree.level_sizes != tuple(level_sizes):
        raise ValueError(wrong)
    return tree
