import pytest

import handops
from handops.tree import Tree, tree_from_schedule


def test_hand_tree_structure():
    tree = handops.hand_tree()
    assert tree.num_nodes == 21 and tree.root == 0
    assert len(tree.messages) == 40 and tree.level_sizes == (5,) * 8
    assert tree.parents[1] == tree.parents[5] == tree.parents[9] == tree.parents[13] == tree.parents[17] == 0
    assert tree.parents[4] == 3 and tree.parents[20] == 19
    assert sorted(tree.edges) == sorted((p, c) for c, p in enumerate(tree.parents) if p >= 0)
    # Every upward message comes before every downward one.
    upward = [tree.parents[s] == d for s, d in tree.messages]
    assert upward == [True] * 20 + [False] * 20


@pytest.mark.parametrize("parents", [[-1], [-1, 0], [-1, 0, 0, 1], [2, 2, -1, 1, 3], [-1, 0, 1, 2, 3, 4]])
def test_schedule_respects_dependencies(parents):
    tree = Tree(parents)
    assert len(tree.messages) == 2 * (len(parents) - 1)
    assert sorted(tree.messages) == sorted([(c, p) for p, c in tree.edges] + list(tree.edges))
    level_of = {m: level for level, group in enumerate(tree.levels) for m in group}
    for m, (src, dst) in enumerate(tree.messages):
        for k in tree.incoming(src):
            if tree.messages[k][0] != dst:
                assert level_of[k] < level_of[m], (m, k)
    assert tree_from_schedule(tuple(tree.flat_messages()), tree.level_sizes) == tree


@pytest.mark.parametrize(
    "parents, match",
    [([], "at least one node"), ([0, -1], "its own parent"), ([-1, -1], "exactly one root"), ([-1, 5], "not a node index"),
     ([-1, 2, 1], "cycle")],
)
def test_bad_parents(parents, match):
    with pytest.raises(ValueError, match=match):
        Tree(parents)


def test_schedule_from_another_order_is_refused():
    tree = handops.hand_tree()
    flat = tree.flat_messages()
    swapped = flat[2:4] + flat[0:2] + flat[4:]
    for other in (swapped, flat[40:] + flat[:40]):  # reordered inside a level; downward pass first
        with pytest.raises(ValueError, match="not the one handops.Tree builds"):
            tree_from_schedule(tuple(other), tree.level_sizes)


def test_message_index():
    tree = handops.hand_tree()
    m = tree.message_index(4, 3)
    assert tree.messages[m] == (4, 3)
    with pytest.raises(ValueError, match="not an edge"):
        tree.message_index(4, 0)
