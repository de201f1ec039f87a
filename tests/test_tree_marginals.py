"""handops.tree_marginals: the C++ CPU kernel against the reference, the reference against brute force."""

import subprocess
import sys

import pytest
import torch

import handops
from handops import _extension
from handops._reference.tree_marginals import MESSAGE_FLOOR, tree_marginals_reference
from handops.tree import Tree
from tree_helpers import assert_entrywise, brute_force_marginals, canonical_reference, symmetric_kernels

HAND = handops.hand_tree()
SMALL_TREES = [Tree([-1, 0, 0, 1]), Tree([2, 2, -1, 1, 3])]


def sample_inputs(tree, batch=2, size=(9, 8), kernel=(5, 3), layout="adaptive", models=2, dtype=torch.float64, seed=0):
    """(unary, pairwise, weights) for one pairwise layout: adaptive, shared, pool or adaptive_pool."""
    gen = torch.Generator().manual_seed(seed)
    unary = torch.rand(batch, tree.num_nodes, *size, generator=gen, dtype=dtype) ** 3
    shape = {
        "adaptive": (batch, tree.num_messages),
        "shared": (tree.num_messages,),
        "pool": (models, tree.num_messages),
        "adaptive_pool": (batch, models, tree.num_messages),
    }[layout]
    pairwise = torch.rand(*shape, *kernel, generator=gen, dtype=dtype) + 0.05
    weights = torch.rand(batch, models, generator=gen, dtype=dtype) if "pool" in layout else None
    return unary, pairwise, weights


# ----------------------------------------------------------------------------------------------
# The reference is exact belief propagation.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tree", [Tree([-1, 0, 1]), Tree([-1, 0, 0])])
def test_reference_is_exact_on_a_small_tree(tree):
    gen = torch.Generator().manual_seed(1)
    unary = torch.rand(tree.num_nodes, 3, 3, generator=gen, dtype=torch.float64)
    kernels = symmetric_kernels(torch.rand(tree.num_messages, 3, 5, generator=gen, dtype=torch.float64), tree)
    expected = brute_force_marginals(unary, kernels, tree)
    got = canonical_reference(unary[None], kernels, tree)[0]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_offset_convention_with_delta_kernels():
    # Node 0 sits at (5, 4); the kernel 0 -> 1 says "1 lies at 0 + (2, -3)"; node 1 is uninformed.
    tree = Tree([-1, 0])
    unary = torch.zeros(1, 2, 11, 10)
    unary[0, 0, 5, 4] = 1.0
    unary[0, 1] = 1.0
    pairwise = torch.full((2, 7, 7), 1e-3)
    pairwise[tree.message_index(0, 1)] = 0.0
    pairwise[tree.message_index(0, 1), 3 + 2, 3 - 3] = 1.0
    out = handops.tree_marginals(unary, pairwise, tree)
    assert out[0, 1].argmax().item() == 7 * 10 + 1
    assert out[0, 1, 7, 1].item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(out, canonical_reference(unary.double(), pairwise.double(), tree).float())


# ----------------------------------------------------------------------------------------------
# The registered op (C++ on the CPU) against the reference.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["adaptive", "shared", "pool", "adaptive_pool"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tree", [HAND] + SMALL_TREES, ids=["hand", "small4", "small5"])
def test_matches_reference(layout, dtype, tree):
    unary, pairwise, weights = sample_inputs(tree, layout=layout, dtype=dtype)
    got = handops.tree_marginals(unary, pairwise, tree, weights)
    expected = canonical_reference(unary.double(), pairwise.double(), tree, None if weights is None else weights.double())
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-6)
    assert got.dtype == dtype and got.shape == unary.shape
    torch.testing.assert_close(got.double(), expected, **tol)


@pytest.mark.parametrize("size, kernel", [((46, 46), (45, 45)), ((17, 23), (9, 13)), ((5, 4), (7, 9)), ((1, 1), (3, 3))])
def test_matches_reference_at_several_sizes(size, kernel):
    unary, pairwise, _ = sample_inputs(HAND, batch=1, size=size, kernel=kernel)
    args = (unary, pairwise[:, None], unary.new_ones(1, 1))
    got = torch.ops.handops.tree_marginals(*args, HAND.flat_messages(), list(HAND.level_sizes))
    expected = tree_marginals_reference(*args, HAND)
    for g, e in zip(got, expected):  # marginals, messages, scales
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layout", ["adaptive", "shared", "adaptive_pool"])
@pytest.mark.parametrize("tree", [HAND, SMALL_TREES[0]], ids=["hand", "small4"])
def test_gradients_match_reference(layout, tree):
    unary, pairwise, weights = sample_inputs(tree, layout=layout, size=(7, 6), kernel=(5, 3))
    inputs = [t.requires_grad_() for t in (unary, pairwise, weights) if t is not None]
    grad = torch.randn(unary.shape, dtype=unary.dtype, generator=torch.Generator().manual_seed(3))
    got = torch.autograd.grad((handops.tree_marginals(unary, pairwise, tree, weights) * grad).sum(), inputs)
    expected = torch.autograd.grad((canonical_reference(unary, pairwise, tree, weights) * grad).sum(), inputs)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("layout", ["adaptive", "pool"])
def test_gradcheck(layout, seed):
    tree = SMALL_TREES[0]
    unary, pairwise, weights = sample_inputs(tree, batch=2, size=(5, 4), kernel=(3, 3), layout=layout, seed=seed)
    unary = unary + 0.05  # finite differences must not step below zero
    args = [t.requires_grad_() for t in (unary, pairwise, weights) if t is not None]
    fn = (lambda u, p: handops.tree_marginals(u, p, tree)) if weights is None else (lambda u, p, w: handops.tree_marginals(u, p, tree, w))
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_hand_tree():
    unary, pairwise, _ = sample_inputs(HAND, batch=1, size=(4, 4), kernel=(3, 3))
    args = ((unary + 0.05).requires_grad_(), pairwise.requires_grad_())
    assert torch.autograd.gradcheck(lambda u, p: handops.tree_marginals(u, p, HAND), args, eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Numerical safety.
# ----------------------------------------------------------------------------------------------


def test_sparse_unaries_tiny_kernels_large_maps():
    gen = torch.Generator().manual_seed(5)
    unary = torch.zeros(1, 21, 128, 128)
    rows, cols = torch.randint(0, 128, (2, 21), generator=gen)
    unary[0, torch.arange(21), rows, cols] = 1.0  # one non-zero pixel per map
    pairwise = torch.rand(1, 40, 15, 15, generator=gen) * 1e-30  # every kernel entry tiny
    out = handops.tree_marginals(unary, pairwise, HAND)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(dim=(-2, -1)), torch.ones(1, 21))
    # With a single allowed position per node, the marginal is a delta there whatever the messages.
    assert (out[0].flatten(1).argmax(1) == rows * 128 + cols).all()
    expected = canonical_reference(unary.double(), pairwise.double(), HAND)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)


def test_far_apart_evidence_does_not_underflow():
    # Gaussian kernels whose tails fall below float32's range: messages are ~0 where other nodes' evidence is.
    yy, xx = torch.meshgrid(torch.arange(-22, 23.0), torch.arange(-22, 23.0), indexing="ij")
    gaussian = torch.exp(-(yy**2 + xx**2) / 2.0)  # down to 1e-210 before float32 flushes it
    pairwise = gaussian.expand(40, 45, 45).clone()
    unary = torch.rand(2, 21, 46, 46, generator=torch.Generator().manual_seed(2)) ** 8
    out = handops.tree_marginals(unary, pairwise, HAND)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(dim=(-2, -1)), torch.ones(2, 21))
    expected = canonical_reference(unary.double(), pairwise.double(), HAND)
    # Entry by entry (the median marginal is 3e-6): observed 2e-6 relative, where an FFT message
    # convolution in float32 is 1e-2 off. Below 1e-30 of a map's peak float32 runs into subnormals.
    assert_entrywise(out, expected, rtol=1e-5, floor=1e-30, what="marginals")


def _gaussian_maps(centres, sigma, size):
    """[N, size, size] exp(-|p - c|^2 / (2 sigma^2)) for centres [N, 2] (row, col), in float32."""
    grid = torch.arange(size, dtype=torch.float32)
    centres = torch.as_tensor(centres, dtype=torch.float32)
    rows = torch.exp(-((grid - centres[:, :1]) ** 2) / (2 * sigma**2))
    cols = torch.exp(-((grid - centres[:, 1:]) ** 2) / (2 * sigma**2))
    return rows[:, :, None] * cols[:, None, :]


def test_peaked_heatmaps_far_apart_match_reference_entry_by_entry():
    # Issue 9: node 0 at (8, 8), node 1 at (28, 28), kernels saying "the neighbour is near me". The
    # message 0 -> 1 is 1e-14 of its peak at node 1's peak, and that is what sets the marginal of 1
    # there: an FFT convolution (accurate to eps of the peak) returned noise and the wrong argmax.
    tree = Tree([-1, 0])
    unary = torch.stack([_gaussian_maps([[8, 8]], 2.0, 46)[0], _gaussian_maps([[28, 28]], 2.0, 46)[0]])[None]
    pairwise = _gaussian_maps([[22, 22], [22, 22]], 3.0, 46)[None, :, :45, :45].clone()
    inputs = [unary.requires_grad_(), pairwise.requires_grad_()]
    out = handops.tree_marginals(unary, pairwise, tree)
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    expected = canonical_reference(*ref_inputs, tree)
    assert_entrywise(out, expected, rtol=1e-5, floor=1e-30, what="marginals")
    assert torch.equal(out.flatten(2).argmax(2), expected.flatten(2).argmax(2))
    # float32 gradients against the float64 reference (signed sums: 1e-3 of themselves or 1e-5 of their map's peak).
    grad = torch.rand(unary.shape, generator=torch.Generator().manual_seed(0)) - 0.5
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(expected, ref_inputs, grad.double())
    for g, w, what in zip(got, want, ("unary", "pairwise")):
        assert_entrywise(g, w, rtol=1e-3, floor=1e-5, what=f"gradient of {what}")


WIDE_TREE = Tree([-1, 0, 0, 1])


def _wide_inputs(unary_scale, kernel_scale, kernel, seed):
    """float64 unary exp(-a u^3) and symmetric kernels exp(-b (k + 0.05)) on 7x7 maps, 2 images."""
    gen = torch.Generator().manual_seed(seed)
    unary = torch.exp(-unary_scale * torch.rand(2, 4, 7, 7, generator=gen, dtype=torch.float64) ** 3)
    pairwise = torch.exp(-kernel_scale * (torch.rand(2, 6, kernel, kernel, generator=gen, dtype=torch.float64) + 0.05))
    return unary, symmetric_kernels(pairwise, WIDE_TREE)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_dynamic_range_matches_brute_force(seed):
    # Unaries down to 1e-44 and kernels 1e-2..1e-45: marginals span 1e-50 of their peaks and messages
    # 1e-20, far below what an FFT resolves (eps of the peak) but above MESSAGE_FLOOR, so the
    # floored sum-product of the specification is exact belief propagation: enumerate it.
    unary, pairwise = _wide_inputs(100, 100, 7, seed)
    args = (unary, pairwise[:, None], unary.new_ones(2, 1), WIDE_TREE.flat_messages(), list(WIDE_TREE.level_sizes))
    out, msgs, _ = torch.ops.handops.tree_marginals(*args)
    assert (msgs > MESSAGE_FLOOR).all() and msgs.min() < 1e-17
    expected = torch.stack([brute_force_marginals(unary[b], pairwise[b], WIDE_TREE) for b in range(2)])
    assert (expected / expected.amax((-2, -1), keepdim=True)).min() < 1e-40
    # The brute force sums logs of size ~200: its exponents are good to ~1e-13.
    assert_entrywise(out, expected, rtol=1e-11, floor=0.0, what="marginals")


def test_dynamic_range_beyond_the_floor_matches_reference():
    # The regime of test_triton_tree.py: kernels down to 1e-160 drive messages onto MESSAGE_FLOOR,
    # where the specification (the reference) departs from exact belief propagation on purpose.
    unary, pairwise = _wide_inputs(300, 350, 3, seed=1)
    args = (unary, pairwise[:, None], unary.new_ones(2, 1), WIDE_TREE.flat_messages(), list(WIDE_TREE.level_sizes))
    inputs = [t.requires_grad_() for t in args[:3]]
    out, msgs, scales = torch.ops.handops.tree_marginals(*inputs, *args[3:])
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    expected = tree_marginals_reference(*ref_inputs, WIDE_TREE)
    assert (expected[1] == MESSAGE_FLOOR).any()
    for got, want, what in zip((out, msgs, scales), expected, ("marginals", "messages", "scales")):
        assert_entrywise(got, want, rtol=1e-10, floor=0.0, what=what)
    grad = torch.rand(unary.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) - 0.5
    for g, w, what in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected[0], ref_inputs, grad), "upw"):
        assert_entrywise(g, w, rtol=1e-9, floor=1e-12, what=f"gradient {what}")


def test_zero_unary_gives_uniform_marginal_and_zero_kernel_carries_nothing():
    unary, pairwise, _ = sample_inputs(SMALL_TREES[0], batch=1, size=(6, 5))
    unary[0, 3] = 0.0  # node 3 (a leaf) has no evidence at all
    pairwise[0, SMALL_TREES[0].message_index(0, 2)] = 0.0  # an all-zero kernel
    unary.requires_grad_(), pairwise.requires_grad_()
    out = handops.tree_marginals(unary, pairwise, SMALL_TREES[0])
    torch.testing.assert_close(out[0, 3], torch.full((6, 5), 1 / 30, dtype=torch.float64))
    expected = canonical_reference(unary, pairwise, SMALL_TREES[0])
    torch.testing.assert_close(out, expected)
    # A random upstream gradient: that of out.sum() is exactly zero (every map sums to 1), whatever the kernel does.
    grad = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(out, (unary, pairwise), grad)
    want = torch.autograd.grad(expected, (unary, pairwise), grad)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_message_that_leaves_the_map_is_zero_in_every_implementation():
    # Node 0 sits in the corner and the kernel 0 -> 1 points off the map: in exact arithmetic the
    # message is zero, the FFT kernel sees only round-off; both must call it uninformative (ones).
    tree = Tree([-1, 0])
    unary = torch.rand(1, 2, 12, 12, generator=torch.Generator().manual_seed(0))
    unary[0, 0] = 0.0
    unary[0, 0, 0, 0] = 1.0
    pairwise = torch.rand(2, 5, 5)
    pairwise[tree.message_index(0, 1)] = 0.0
    pairwise[tree.message_index(0, 1), 0, 0] = 1.0  # offset (-2, -2)
    out, msgs, scales = torch.ops.handops.tree_marginals(unary, pairwise[None, None], torch.ones(1, 1), tree.flat_messages(), list(tree.level_sizes))
    m = tree.message_index(0, 1)
    assert scales[0, 0, m] == 0 and (msgs[0, 0, m] == 1).all()
    torch.testing.assert_close(out[0, 1], unary[0, 1] / unary[0, 1].sum())
    torch.testing.assert_close(out.double(), canonical_reference(unary.double(), pairwise.double(), tree), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------


def _bad(unary=None, pairwise=None, weights=None, tree=SMALL_TREES[0]):
    u, p, _ = sample_inputs(SMALL_TREES[0], batch=2)
    return (u if unary is None else unary), (p if pairwise is None else pairwise), tree, weights


@pytest.mark.parametrize(
    "args, error, match",
    [
        (_bad(unary=torch.rand(21, 9, 8)), ValueError, "unary must be 4-D"),
        (_bad(unary=torch.rand(2, 5, 9, 8, dtype=torch.float64)), ValueError, "tree has 4 nodes"),
        (_bad(pairwise=torch.rand(2, 7, 3, 3, dtype=torch.float64)), ValueError, "6 directed messages"),
        (_bad(pairwise=torch.rand(2, 6, 4, 3, dtype=torch.float64)), ValueError, "odd height and width"),
        (_bad(pairwise=torch.rand(3, 6, 3, 3, dtype=torch.float64)), ValueError, "batch size 3 but unary has 2"),
        (_bad(pairwise=torch.rand(6, 3, 3, 3, 3, dtype=torch.float64)), ValueError, "needs weights"),
        (_bad(pairwise=torch.rand(3, 6, 3, 3, dtype=torch.float64), weights=torch.rand(2, 2, dtype=torch.float64)), ValueError, r"weights must be \[B, L\]"),
        (_bad(pairwise=torch.rand(2, 6, 3, 3, dtype=torch.float64).to("meta")), ValueError, "one device"),
        (_bad(unary=torch.rand(2, 4, 9, 8).int()), TypeError, "unary must be float16"),
        (_bad(tree=[-1, 0, 0, 1]), TypeError, "handops.Tree"),
        (_bad(unary=-torch.rand(2, 4, 9, 8, dtype=torch.float64)), ValueError, "unary must be non-negative"),
        (_bad(unary=torch.full((2, 4, 9, 8), float("nan"), dtype=torch.float64)), ValueError, "unary must be finite"),
        (_bad(pairwise=torch.full((2, 6, 3, 3), float("inf"), dtype=torch.float64)), ValueError, "pairwise must be finite"),
        (_bad(pairwise=torch.rand(3, 6, 3, 3, dtype=torch.float64), weights=-torch.rand(2, 3, dtype=torch.float64)), ValueError, "weights must be non-negative"),
    ],
)
def test_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        handops.tree_marginals(*args)


def test_registered_op_rejects_a_broken_schedule():
    unary, pairwise, _ = sample_inputs(SMALL_TREES[0])
    flat = SMALL_TREES[0].flat_messages()
    with pytest.raises(ValueError, match="earlier level"):
        torch.ops.handops.tree_marginals(unary, pairwise[:, None], unary.new_ones(2, 1), flat[6:] + flat[:6], [3, 3])


# ----------------------------------------------------------------------------------------------
# Registration and the pure-Python install.
# ----------------------------------------------------------------------------------------------


def test_extension_is_built():
    assert handops.HAS_EXTENSION, "handops._C did not load: the tests would only check the reference"


def test_python_schemas_match_the_extension():
    for name, schema in _extension.SCHEMAS.items():
        assert str(getattr(torch.ops.handops, name).default._schema) == "handops::" + schema


def test_without_extension_ops_fall_back_to_the_reference():
    code = (
        "import sys, warnings, torch\n"
        "sys.modules['handops._C'] = None\n"  # as if the extension had not been built
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import handops\n"
        "assert not handops.HAS_EXTENSION\n"
        "assert sum('C++ extension is not available' in str(w.message) for w in caught) == 1\n"
        "u = torch.rand(2, 21, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()\n"
        "p = torch.rand(2, 40, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()\n"
        "out = handops.tree_marginals(u, p, handops.hand_tree())\n"
        "out.pow(2).sum().backward()\n"
        "torch.save((out.detach(), u.grad, p.grad), sys.argv[1])\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/out.pt"
        subprocess.run([sys.executable, "-c", code, path], check=True)
        out, gu, gp = torch.load(path)
    u = torch.rand(2, 21, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    p = torch.rand(2, 40, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    expected = handops.tree_marginals(u, p, HAND)
    expected.pow(2).sum().backward()
    torch.testing.assert_close(out, expected.detach())
    torch.testing.assert_close(gu, u.grad)
    torch.testing.assert_close(gp, p.grad)
