"""The C++ CPU kernel of ``handops::tree_map`` against its specification, ``tree_map_reference``.

The kernel performs the reference's floating-point operations in the reference's order, so the
max-marginals match to rounding (in practice bit for bit) and the MAP configuration exactly, ties
included.
"""

from __future__ import annotations

import pytest
import torch

import handops
from handops._reference.tree_marginals import tree_map_reference
from tree_helpers import brute_force_map, brute_force_max_marginals, config_log_prob, symmetric_kernels

pytestmark = pytest.mark.skipif(not handops.HAS_EXTENSION, reason="the C++ extension handops._C is not built")

SMALL_TREES = {
    "single": handops.Tree([-1]),
    "pair": handops.Tree([-1, 0]),
    "fork": handops.Tree([-1, 0, 0, 1]),
    "chain": handops.Tree([-1, 0, 1, 2]),
    "root_last": handops.Tree([3, 3, 0, -1, 1]),
}


def _inputs(tree, batch, height, width, kernel, dtype, adaptive, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # Peaked heatmaps and kernels (a power of uniforms), as real ones are, with a floor above zero.
    unary = torch.rand(batch, tree.num_nodes, height, width, generator=generator, dtype=dtype) ** 4 + 1e-6
    shape = (batch,) if adaptive else ()
    pairwise = torch.rand(*shape, tree.num_messages, kernel, kernel, generator=generator, dtype=dtype) ** 4
    return unary, pairwise


def _reference(unary, pairwise, tree):
    return tree_map_reference(unary, pairwise if pairwise.dim() == 4 else pairwise[None], tree)


def _assert_matches_reference(unary, pairwise, tree):
    max_marginals, config = handops.tree_map(unary, pairwise, tree)
    expected_marginals, expected_config = _reference(unary, pairwise, tree)
    assert max_marginals.shape == unary.shape and max_marginals.dtype == unary.dtype
    assert config.shape == (unary.shape[0], tree.num_nodes, 2) and config.dtype == torch.int64
    torch.testing.assert_close(max_marginals, expected_marginals)
    assert torch.equal(config, expected_config), f"config differs:\n{config}\nexpected\n{expected_config}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("adaptive", [False, True], ids=["shared", "adaptive"])
@pytest.mark.parametrize(
    "batch,height,width,kernel", [(2, 9, 11, 5), (3, 16, 16, 7), (1, 7, 5, 21), (4, 13, 20, 3), (2, 1, 1, 3)]
)
def test_hand_tree_matches_reference(dtype, adaptive, batch, height, width, kernel):
    tree = handops.hand_tree()
    _assert_matches_reference(*_inputs(tree, batch, height, width, kernel, dtype, adaptive), tree)


@pytest.mark.parametrize("name", list(SMALL_TREES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("adaptive", [False, True], ids=["shared", "adaptive"])
def test_small_trees_match_reference(name, dtype, adaptive):
    tree = SMALL_TREES[name]
    _assert_matches_reference(*_inputs(tree, 3, 10, 12, 5, dtype, adaptive, seed=1), tree)


@pytest.mark.parametrize("batch", [1, 2])
def test_full_size_maps_match_reference(batch):
    # The size the thesis uses: 46x46 maps, 45x45 kernels (every tap row and column reaches the map).
    tree = handops.hand_tree()
    _assert_matches_reference(*_inputs(tree, batch, 46, 46, 45, torch.float32, adaptive=True, seed=2), tree)


def _delta(height, width, row, col, dtype=torch.float64):
    out = torch.zeros(height, width, dtype=dtype)
    out[row, col] = 1.0
    return out


def _offset_kernel(size, offset, dtype=torch.float64):
    """A size x size kernel with a single one at `offset` (row, col) from its centre."""
    centre = size // 2
    return _delta(size, size, centre + offset[0], centre + offset[1], dtype)


@pytest.mark.parametrize("evidence_at", ["root", "leaf"])
def test_hand_computed_chain(evidence_at):
    # Chain 0 - 1 - 2 on a 10x12 map. Delta kernels say exactly where each neighbour lies; one node
    # has a delta unary and the others are uniform, so the only configuration with non-zero
    # probability is the known one, whichever end the evidence enters.
    tree = handops.Tree([-1, 0, 1])
    height, width, size = 10, 12, 9
    positions = [(4, 5), (6, 3), (7, 7)]
    pairwise = torch.stack(
        [
            _offset_kernel(size, (positions[dst][0] - positions[src][0], positions[dst][1] - positions[src][1]))
            for src, dst in tree.messages
        ]
    )
    unary = torch.ones(1, 3, height, width, dtype=torch.float64)
    node = 0 if evidence_at == "root" else 2
    unary[0, node] = _delta(height, width, *positions[node])

    max_marginals, config = handops.tree_map(unary, pairwise, tree)

    assert config[0].tolist() == [list(p) for p in positions]
    for k, (row, col) in enumerate(positions):
        assert torch.equal(max_marginals[0, k], _delta(height, width, row, col)), f"node {k}"
    _assert_matches_reference(unary, pairwise, tree)


def test_sparse_unaries_and_tiny_kernels_match_reference():
    # log 0 = -inf almost everywhere in the beliefs, and kernel values near float32's smallest
    # normal: -inf must propagate without NaN, and the finite scores must still be ranked exactly.
    tree = handops.hand_tree()
    generator = torch.Generator().manual_seed(4)
    unary = torch.zeros(3, tree.num_nodes, 16, 16)
    hits = torch.rand(unary.shape, generator=generator) < 0.02
    unary[hits] = torch.rand(int(hits.sum()), generator=generator)
    pairwise = torch.rand(tree.num_messages, 7, 7, generator=generator) * 1e-30
    pairwise[:, ::2, 1::2] = 0.0
    _assert_matches_reference(unary, pairwise, tree)
    max_marginals, _ = handops.tree_map(unary, pairwise, tree)
    assert torch.isfinite(max_marginals).all()


def test_zero_beliefs_and_fallback_match_reference():
    # Node 2's unary is all zero (its max-marginal is all ones, its messages all zeros), and node 3
    # lies too far from its parent for the kernel to reach, so its position falls back to the
    # first maximum of its own upward belief.
    tree = handops.Tree([-1, 0, 0, 1])
    unary = torch.rand(2, 4, 9, 9, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    unary[:, 2] = 0.0
    unary[:, 1] = 0.0
    unary[:, 1, 0, 0] = 1.0
    unary[:, 3] = 0.0
    unary[:, 3, 8, 8] = 0.5
    pairwise = torch.ones(tree.num_messages, 3, 3, dtype=torch.float64)
    max_marginals, config = handops.tree_map(unary, pairwise, tree)
    assert torch.equal(max_marginals[:, 2], torch.ones(2, 9, 9, dtype=torch.float64))
    assert config[:, 3].tolist() == [[8, 8], [8, 8]]
    _assert_matches_reference(unary, pairwise, tree)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_break_like_the_reference(dtype):
    # Constant unaries and kernels: every position and every tap ties, so the configuration is
    # decided by the tie-breaking alone (first maximum in tap order, first row-major maximum).
    tree = handops.hand_tree()
    unary = torch.full((2, tree.num_nodes, 8, 9), 0.5, dtype=dtype)
    pairwise = torch.full((tree.num_messages, 5, 5), 0.25, dtype=dtype)
    _assert_matches_reference(unary, pairwise, tree)
    # Ties between a few distinct values: quantised heatmaps and kernels.
    generator = torch.Generator().manual_seed(6)
    unary = torch.randint(0, 3, (2, tree.num_nodes, 8, 9), generator=generator).to(dtype)
    pairwise = torch.randint(0, 3, (2, tree.num_messages, 5, 5), generator=generator).to(dtype)
    _assert_matches_reference(unary, pairwise, tree)


def _op_args(tree=None, batch=2, height=6, width=7, kernel=3, dtype=torch.float32):
    tree = tree or handops.Tree([-1, 0, 0, 1])
    generator = torch.Generator().manual_seed(8)
    unary = torch.rand(batch, tree.num_nodes, height, width, generator=generator, dtype=dtype)
    pairwise = torch.rand(1, tree.num_messages, kernel, kernel, generator=generator, dtype=dtype)
    return unary, pairwise, tree.flat_messages(), list(tree.level_sizes)


@pytest.mark.parametrize("tensor", ["unary", "pairwise"])
@pytest.mark.parametrize(
    "bad,message", [(-0.5, "must be non-negative"), (float("nan"), "must be finite"), (float("inf"), "must be finite")]
)
def test_bad_values_raise_value_error(tensor, bad, message):
    unary, pairwise, messages, level_sizes = _op_args()
    (unary if tensor == "unary" else pairwise)[0, 1, 1, 1] = bad
    with pytest.raises(ValueError, match=f"{tensor} {message}"):
        torch.ops.handops.tree_map(unary, pairwise, messages, level_sizes)
    with pytest.raises(ValueError, match=f"{tensor} {message}"):
        handops.tree_map(unary, pairwise[0], handops.Tree([-1, 0, 0, 1]))


def test_bad_shapes_raise_clear_errors():
    unary, pairwise, messages, level_sizes = _op_args()
    op = torch.ops.handops.tree_map
    cases = [
        ((unary[0], pairwise), "unary must be a 4-D tensor"),
        ((unary, pairwise[0]), "pairwise must be a 4-D tensor"),
        ((unary[:, :3], pairwise), r"K = 3 nodes has 4 directed messages, but pairwise holds M = 6"),
        ((unary, pairwise[:, :4]), r"K = 4 nodes has 6 directed messages, but pairwise holds M = 4"),
        ((unary, pairwise[..., :2, :]), "odd height and width"),
        ((unary, torch.rand(2, 6, 3, 4)), "odd height and width"),
        ((unary, pairwise.expand(3, -1, -1, -1)), "one per image"),
        ((unary[:, :, :0], pairwise), "at least 1x1"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            op(*args, messages, level_sizes)
    with pytest.raises(TypeError, match="pairwise must have the dtype of unary"):
        op(unary, pairwise.double(), messages, level_sizes)
    with pytest.raises(TypeError, match="float32 or float64"):
        op(unary.half(), pairwise.half(), messages, level_sizes)


def test_bad_schedules_raise_value_error():
    unary, pairwise, messages, level_sizes = _op_args()
    op = torch.ops.handops.tree_map
    out_of_range = list(messages)
    out_of_range[1] = 9
    swapped_levels = [m for pair in reversed(list(zip(messages[0::2], messages[1::2]))) for m in pair]
    cases = [
        (out_of_range, level_sizes, "join two different nodes"),
        (messages[:-2], level_sizes, "messages must hold the"),
        (messages, [6], "from an earlier level"),  # one level: (1, 0) would read (3, 1) of the same level
        (messages, level_sizes[:-1], "must add up to"),
        (swapped_levels, list(reversed(level_sizes)), "two upward messages|no reverse|earlier level"),
    ]
    for schedule, sizes, message in cases:
        with pytest.raises(ValueError, match=message):
            op(unary, pairwise, schedule, sizes)
    # Three nodes whose upward messages form a cycle 1 -> 2 -> 1 beside the root 0.
    with pytest.raises(ValueError, match="cycle|more than once|earlier level"):
        op(unary[:, :3], pairwise[:, :4], [1, 2, 2, 1, 2, 1, 1, 2], [1, 1, 1, 1])


def test_wrong_ranks_and_mismatches_through_the_public_function():
    tree = handops.hand_tree()
    unary, pairwise = _inputs(tree, 2, 8, 8, 3, torch.float32, adaptive=False)
    with pytest.raises(ValueError, match="4-D"):
        handops.tree_map(unary[0], pairwise, tree)
    with pytest.raises(ValueError, match="message kernels"):
        handops.tree_map(unary, pairwise[:-1], tree)
    with pytest.raises(ValueError, match="odd"):
        handops.tree_map(unary, pairwise[..., :2], tree)
    with pytest.raises(ValueError, match="batch size"):
        handops.tree_map(unary, pairwise.expand(3, -1, -1, -1), tree)


# ----------------------------------------------------------------------------------------------
# Against brute-force enumeration: the reference and the C++ op both, so that a shared mistake
# (a flipped offset, a message sent the wrong way, a decoder that takes per-node argmaxes of the
# max-marginals instead of a jointly consistent configuration) cannot pass as agreement.
# ----------------------------------------------------------------------------------------------

BRUTE_FORCE_TREES = {  # (HW)^K stays below a million configurations
    "pair": (handops.Tree([-1, 0]), 7, 8),
    "chain": (handops.Tree([-1, 0, 1]), 6, 7),
    "fork": (handops.Tree([-1, 0, 0, 1]), 5, 6),
    "root_last": (handops.Tree([3, 3, 0, -1, 1]), 4, 4),
}
IMPLEMENTATIONS = {
    "op": handops.tree_map,
    "reference": lambda unary, pairwise, tree: _reference(unary, pairwise, tree),
}


def _brute_force_inputs(tree, height, width, kernel, regime, seed):
    """float64 (unary [2, K, H, W], symmetric kernels [2, M, kh, kw]) with zero taps (-inf log-kernel)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(2, tree.num_nodes, height, width, generator=generator, dtype=torch.float64)
    k = torch.rand(2, tree.num_messages, kernel, kernel, generator=generator, dtype=torch.float64)
    if regime == "peaked":  # real-heatmap-like: powers of uniforms
        unary, pairwise = u**4 + 1e-6, k**4
    else:  # "wide": unaries down to 1e-130 and kernels 1e-8..1e-160, the regime test_triton_tree.py has
        unary, pairwise = torch.exp(-300 * u**3), torch.exp(-350 * (k + 0.05))
    pairwise[:, :, 0, 1:] = 0.0  # forbidden offsets
    return unary, symmetric_kernels(pairwise, tree)


@pytest.mark.parametrize("regime", ["peaked", "wide"])
@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("name", list(BRUTE_FORCE_TREES))
def test_max_marginals_and_map_match_brute_force(name, implementation, regime):
    tree, height, width = BRUTE_FORCE_TREES[name]
    unary, pairwise = _brute_force_inputs(tree, height, width, 3, regime, seed=len(name))
    max_marginals, config = IMPLEMENTATIONS[implementation](unary, pairwise, tree)
    for b in range(2):
        expected = brute_force_max_marginals(unary[b], pairwise[b], tree)
        # Relative entry by entry: the log-domain sums round to ~|log p| eps, i.e. 1e-13 at log p ~ -1000.
        torch.testing.assert_close(max_marginals[b], expected, rtol=1e-11, atol=0)
        best, log_joint = brute_force_map(unary[b], pairwise[b], tree)
        # Continuous random inputs: the maximiser is unique, so the decoded configuration is it.
        assert (log_joint == log_joint.max()).sum() == 1
        assert torch.equal(config[b], best), f"image {b}: {config[b].tolist()} != {best.tolist()}"


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_map_with_ties_is_a_joint_maximiser(implementation):
    # Quantised heatmaps and kernels: many configurations tie, so per-node choices can mix two
    # different maximisers into a configuration that is not one; the decoded one must reach the maximum.
    tree, height, width = BRUTE_FORCE_TREES["fork"]
    generator = torch.Generator().manual_seed(11)
    unary = torch.randint(1, 4, (2, tree.num_nodes, height, width), generator=generator).double()
    pairwise = symmetric_kernels(torch.randint(0, 3, (2, tree.num_messages, 3, 3), generator=generator).double(), tree)
    max_marginals, config = IMPLEMENTATIONS[implementation](unary, pairwise, tree)
    for b in range(2):
        torch.testing.assert_close(max_marginals[b], brute_force_max_marginals(unary[b], pairwise[b], tree), rtol=1e-12, atol=0)
        _, log_joint = brute_force_map(unary[b], pairwise[b], tree)
        assert (log_joint == log_joint.max()).sum() > 1  # the test is about ties
        # Tied sums of logs may differ in the last bit; a non-maximiser is at least log(3 / 2) below.
        assert config_log_prob(log_joint, config[b], width) >= log_joint.max() - 1e-9
