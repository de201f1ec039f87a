"""Triton tree kernels against the readable reference.

Without a GPU the kernels run in the Triton interpreter on CPU tensors (conftest sets
TRITON_INTERPRET=1), which is slow: the sizes here are small. A separate test compiles every kernel
ahead of time for sm_80 and sm_90 at the sizes the thesis uses, in a subprocess without the
interpreter.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from tree_helpers import assert_entrywise
from triton_aot import compile_for_sm80_and_sm90

pytest.importorskip("triton")

import handops  # noqa: E402
from handops._reference.tree_marginals import MESSAGE_FLOOR, tree_map_reference, tree_marginals_reference  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from handops._triton import tree_marginals as tt  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL_TREE = handops.Tree([-1, 0, 0, 1])  # root with two children, one grandchild: 6 messages, 4 levels
STAR_TREE = handops.Tree([-1, 0, 0, 0, 1])  # a node of degree 4: products of 3 messages


def _inputs(tree, batch, height, width, kernel=(3, 3), models=1, kernel_batch=None, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kernel_batch = batch if kernel_batch is None else kernel_batch
    unary = torch.rand(batch, tree.num_nodes, height, width, generator=gen, dtype=dtype)
    pairwise = torch.rand(kernel_batch, models, tree.num_messages, *kernel, generator=gen, dtype=dtype)
    weights = torch.rand(batch, models, generator=gen, dtype=dtype)
    return unary.to(DEVICE), pairwise.to(DEVICE), weights.to(DEVICE)


def _reference_grads(grad, unary, pairwise, weights, tree):
    inputs = [t.detach().clone().requires_grad_(True) for t in (unary, pairwise, weights)]
    marginals = tree_marginals_reference(*inputs, tree)[0]
    return torch.autograd.grad(marginals, inputs, grad)


def _assert_close(actual, expected, rtol):
    """Relative to the tensor's scale: gradients of extreme inputs span many decades."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-300))


def _check_sum_product(unary, pairwise, weights, tree, rtol=1e-10, seed=1):
    """Forward (marginals and messages) and backward (all three gradients) against the reference,
    always evaluated in float64: for float32 inputs that is the truth the kernels approximate."""
    marginals, msgs, scales = tt.tree_marginals_forward(unary, pairwise, weights, tree)
    assert marginals.dtype == msgs.dtype == unary.dtype
    ref_inputs = [t.double() for t in (unary, pairwise, weights)]
    ref_marginals, ref_msgs, ref_scales = tree_marginals_reference(*ref_inputs, tree)
    _assert_close(marginals.double(), ref_marginals, rtol)
    _assert_close(msgs.double(), ref_msgs, rtol)
    _assert_close(scales.double(), ref_scales, rtol)
    grad = torch.rand(unary.shape, generator=torch.Generator().manual_seed(seed), dtype=unary.dtype).to(DEVICE) - 0.5
    # The backward gets non-contiguous grad and messages, as autograd may hand them over.
    grad = grad.transpose(2, 3).contiguous().transpose(2, 3)
    msgs_view = msgs.transpose(3, 4).contiguous().transpose(3, 4)
    grads = tt.tree_marginals_backward(grad, unary, pairwise, weights, msgs_view, scales, tree)
    for got, want, like in zip(grads, _reference_grads(grad.double(), *ref_inputs, tree), (unary, pairwise, weights)):
        assert got.dtype == unary.dtype and got.shape == like.shape
        _assert_close(got.double(), want, rtol)
    return marginals, msgs, grads


@pytest.mark.parametrize(
    "batch, size, kernel, models, shared_kernels",
    [
        (2, (6, 7), (3, 3), 2, False),
        (2, (7, 6), (5, 3), 1, True),
        (1, (10, 10), (3, 5), 2, True),
    ],
)
def test_sum_product_matches_reference(batch, size, kernel, models, shared_kernels):
    unary, pairwise, weights = _inputs(SMALL_TREE, batch, *size, kernel, models, 1 if shared_kernels else batch)
    _check_sum_product(unary, pairwise, weights, SMALL_TREE)


def test_multi_tile_paths(monkeypatch):
    # Tiny tile limits make every whole-map reduction, convolution and kernel gradient loop over
    # several (partial) tiles, as 46x46 and 128x128 maps do with the real limits.
    monkeypatch.setattr(tt, "TILE_LIMITS", {"BLOCK": 16, "BLOCK_H": 4, "BLOCK_W": 4, "BLOCK_T": 4, "BLOCK_Q": 8})
    unary, pairwise, weights = _inputs(SMALL_TREE, 1, 6, 9, (5, 3), 1, 1, seed=11)
    _check_sum_product(unary, pairwise, weights, SMALL_TREE)
    max_marginals, config = tt.tree_map_forward(unary, pairwise[:, 0], SMALL_TREE)
    ref_max_marginals, ref_config = tree_map_reference(unary, pairwise[:, 0], SMALL_TREE)
    _assert_close(max_marginals, ref_max_marginals, 1e-12)
    assert torch.equal(config, ref_config)


def test_sum_product_products_of_several_messages():
    # Node 0 has degree 3: its belief multiplies three messages, each message out of it two.
    unary, pairwise, weights = _inputs(STAR_TREE, 1, 6, 6, (3, 3), 2, 1, seed=3)
    _check_sum_product(unary, pairwise, weights, STAR_TREE)


def test_hand_tree_all_ops():
    tree = handops.hand_tree()
    unary, pairwise, weights = _inputs(tree, 1, 5, 6, (3, 3), 1, 1, seed=4)
    _check_sum_product(unary, pairwise, weights, tree)
    max_marginals, config = tt.tree_map_forward(unary, pairwise[:, 0], tree)
    ref_max_marginals, ref_config = tree_map_reference(unary, pairwise[:, 0], tree)
    _assert_close(max_marginals, ref_max_marginals, 1e-12)
    assert torch.equal(config, ref_config)


def test_non_contiguous_inputs():
    unary, pairwise, weights = _inputs(SMALL_TREE, 2, 7, 6, (3, 3), 2, 2, seed=5)
    unary_nc = unary.transpose(2, 3).contiguous().transpose(2, 3)  # same values, column-major maps
    pairwise_nc = pairwise.new_zeros(*pairwise.shape[:-1], 2 * pairwise.shape[-1])[..., ::2].copy_(pairwise)
    weights_nc = weights.t().contiguous().t()
    assert not (unary_nc.is_contiguous() or pairwise_nc.is_contiguous() or weights_nc.is_contiguous())
    _check_sum_product(unary_nc, pairwise_nc, weights_nc, SMALL_TREE)  # grad and msgs non-contiguous too
    max_marginals, config = tt.tree_map_forward(unary_nc, pairwise_nc[:, 0], SMALL_TREE)
    ref_max_marginals, ref_config = tree_map_reference(unary, pairwise[:, 0], SMALL_TREE)
    _assert_close(max_marginals, ref_max_marginals, 1e-12)
    assert torch.equal(config, ref_config)


def test_float32():
    unary, pairwise, weights = _inputs(SMALL_TREE, 2, 6, 7, (3, 3), 2, 1, dtype=torch.float32, seed=6)
    _check_sum_product(unary, pairwise, weights, SMALL_TREE, rtol=1e-5)
    max_marginals, config = tt.tree_map_forward(unary, pairwise[:, 0], SMALL_TREE)
    ref_max_marginals, ref_config = tree_map_reference(unary, pairwise[:, 0], SMALL_TREE)
    assert max_marginals.dtype == torch.float32
    _assert_close(max_marginals, ref_max_marginals, 1e-6)
    assert torch.equal(config, ref_config)


def test_empty_batch():
    unary, pairwise, weights = _inputs(SMALL_TREE, 0, 6, 7, (3, 3), 2, 0)
    marginals, msgs, scales = tt.tree_marginals_forward(unary, pairwise, weights, SMALL_TREE)
    assert marginals.shape == (0, 4, 6, 7) and msgs.shape == (0, 2, 6, 6, 7)
    g_unary, g_pairwise, g_weights = tt.tree_marginals_backward(marginals, unary, pairwise, weights, msgs, scales, SMALL_TREE)
    assert g_unary.shape == unary.shape and g_pairwise.shape == pairwise.shape and g_weights.shape == weights.shape
    max_marginals, config = tt.tree_map_forward(unary, pairwise[:, 0], SMALL_TREE)
    assert max_marginals.shape == (0, 4, 6, 7) and config.shape == (0, 4, 2) and config.dtype == torch.int64


def test_no_models_and_single_node_tree():
    unary, pairwise, weights = _inputs(SMALL_TREE, 2, 5, 6, (3, 3), 0, 2)
    marginals, msgs, scales = tt.tree_marginals_forward(unary, pairwise, weights, SMALL_TREE)
    assert torch.equal(marginals, torch.zeros_like(unary)) and msgs.shape == (2, 0, 6, 5, 6)
    # One node, no messages (the reference cannot stack an empty message list): p = u / sum(u).
    single = handops.Tree([-1])
    unary, pairwise, weights = _inputs(single, 2, 5, 6, (3, 3), 2, 1, seed=2)
    unary[1] = 0
    marginals, msgs, scales = tt.tree_marginals_forward(unary, pairwise, weights, single)
    inputs = [unary.clone().requires_grad_(True), weights.clone().requires_grad_(True)]
    total = inputs[0].sum((2, 3), keepdim=True)
    p = torch.where(total > 0, inputs[0] / torch.where(total > 0, total, 1.0), torch.full_like(total, 1 / 30))
    expected = sum(inputs[1][:, l, None, None, None] * p for l in range(2))
    _assert_close(marginals, expected.detach(), 1e-12)
    assert msgs.shape == (2, 2, 0, 5, 6)
    grad = torch.rand_like(unary)
    g_unary, g_pairwise, g_weights = tt.tree_marginals_backward(grad, unary, pairwise, weights, msgs, scales, single)
    want = torch.autograd.grad(expected, inputs, grad)
    _assert_close(g_unary, want[0], 1e-12)
    _assert_close(g_weights, want[1], 1e-12)
    assert torch.equal(g_pairwise, torch.zeros_like(pairwise))
    max_marginals, config = tt.tree_map_forward(unary, pairwise[:, 0], single)
    peak = unary.amax((2, 3), keepdim=True)
    _assert_close(max_marginals, torch.where(peak > 0, unary / torch.where(peak > 0, peak, 1.0), 1.0), 1e-12)
    flat = unary.flatten(2).argmax(2)
    assert torch.equal(config, torch.stack([flat // 6, flat % 6], -1))


def test_zero_unary_node_and_zero_kernel():
    unary, pairwise, weights = _inputs(SMALL_TREE, 2, 6, 6, (3, 3), 2, 2, seed=7)
    unary[0, 3] = 0  # the leaf sends an all-zero message (replaced by ones) and has a zero belief
    unary[1, 0] = 0  # the root: zero beliefs, zero messages downwards
    pairwise[1, 0, 2] = 0  # an all-zero kernel: message 2 of image 1, model 0 is replaced by ones
    marginals, msgs, _ = _check_sum_product(unary, pairwise, weights, SMALL_TREE)
    up = SMALL_TREE.message_index(3, 1)
    assert torch.equal(msgs[0, :, up], torch.ones_like(msgs[0, :, up]))
    assert torch.equal(msgs[1, 0, 2], torch.ones_like(msgs[1, 0, 2]))
    for b, node in ((0, 3), (1, 0)):  # a zero belief gives the uniform marginal, times sum(weights)
        torch.testing.assert_close(marginals[b, node], torch.full_like(marginals[b, node], weights[b].sum().item() / 36))
    # Max-product: log(0) = -inf everywhere, so decoding falls back on the upward beliefs.
    for kernels in (pairwise[:, 0], pairwise[:1, 0]):
        max_marginals, config = tt.tree_map_forward(unary, kernels, SMALL_TREE)
        ref_max_marginals, ref_config = tree_map_reference(unary, kernels, SMALL_TREE)
        _assert_close(max_marginals, ref_max_marginals, 1e-12)
        assert torch.equal(config, ref_config)


def test_extreme_dynamic_range_hits_the_floor():
    # Peaked unaries and kernels spanning 1e-150..1 drive messages below MESSAGE_FLOOR.
    unary, pairwise, weights = _inputs(SMALL_TREE, 2, 7, 7, (3, 3), 1, 2, seed=8)
    unary = torch.exp(-300 * unary)
    pairwise = torch.exp(-350 * pairwise)
    marginals, msgs, _ = _check_sum_product(unary, pairwise, weights, SMALL_TREE, rtol=1e-9)
    assert bool((msgs == MESSAGE_FLOOR).any())


# ---------------------------------------------------------------------------------------------
# Peaked heatmaps, entry by entry
# ---------------------------------------------------------------------------------------------
#
# Real unaries are Gaussians of sigma 1-3 pixels and real kernels AGMN targets (Gaussians of sigma 1
# at the offset between two keypoints). Where two nodes' evidence disagrees, a message's value at
# the other node's peak is 1e-16..1e-30 of its own peak, and it is those values that set the
# marginals there. An FFT convolution is accurate only to eps times a message's peak, so it returns
# noise for them while a direct convolution of non-negative terms is accurate entry by entry: the
# checks below compare every entry relative to itself, which a tolerance relative to the tensor's
# maximum (``_assert_close``) cannot see.

# name: (tree, map size, kernel size, unary sigma per node, kernel sigma,
#        unary keypoints [2 images, K, (x, y)], keypoints the kernels are the AGMN targets of)
PEAKED = {
    # Two sigma-1 nodes far apart, kernels saying "the neighbour is near me" (the case, scaled down).
    "near_kernel": (handops.Tree([-1, 0]), 10, 15, (1.0, 1.0), 1.0,
                    [[[1, 1], [8, 7]], [[2, 8], [7, 1]]], [[[0, 0], [0, 0]], [[0, 0], [-1, 1]]]),
    # A wide (sigma 3) and a sharp node at opposite corners, kernels of a pose that contradicts both.
    "wide_and_sharp": (handops.Tree([-1, 0]), 11, 13, (3.0, 1.0), 1.0,
                       [[[0, 1], [10, 9]], [[10, 0], [1, 9]]], [[[0, 0], [-3, -3]], [[0, 0], [2, 3]]]),
    # Four nodes of sigma 3, 1, 2, 1 and the AGMN targets of another pose, on the fork tree.
    "fork_agmn": (SMALL_TREE, 9, 9, (3.0, 1.0, 2.0, 1.0), 1.0,
                  [[[0, 0], [8, 1], [1, 8], [8, 8]], [[4, 4], [0, 0], [8, 8], [0, 8]]],
                  [[[4, 4], [5, 3], [3, 5], [4, 5]], [[4, 4], [7, 4], [4, 1], [8, 3]]]),
}

# Values: relative to each entry. float32 is compared with the float64 reference, which it matches to
# a few ulp except below 1e-30 of a map's peak, where the rescaled products pass through float32's
# subnormals (1e-38 and below); MESSAGE_FLOOR is 1e-30 of a message's peak too.
# Gradients are signed sums that cancel: each entry within rtol of itself, or within floor times the
# largest entry of its map (observed: 1e-6 of it in float32, 1e-13 in float64).
VALUE_TOL = {torch.float64: dict(rtol=1e-10, floor=0.0), torch.float32: dict(rtol=1e-5, floor=1e-30)}
GRAD_TOL = {torch.float64: dict(rtol=1e-9, floor=1e-12), torch.float32: dict(rtol=1e-3, floor=1e-5)}


def _peaked_inputs(name, layout, dtype):
    """Canonical (unary, pairwise, weights) of a PEAKED case in one public pairwise layout."""
    from handops.ops.tree_marginals import _canonical_inputs
    from handops_models.data.targets import keypoint_heatmaps, pairwise_targets

    tree, size, kernel, unary_sigmas, kernel_sigma, unary_at, kernels_at = PEAKED[name]
    unary_at = torch.tensor(unary_at, dtype=torch.float64)
    unary = torch.stack(
        [keypoint_heatmaps(unary_at[:, k : k + 1], size, stride=1, sigma=s)[:, 0] for k, s in enumerate(unary_sigmas)], 1
    )
    kernels = pairwise_targets(torch.tensor(kernels_at, dtype=torch.float64), tree, kernel, stride=1, sigma=kernel_sigma)
    pairwise = {
        "adaptive": kernels,  # [B, M, kh, kw]
        "shared": kernels[0],  # [M, kh, kw]
        "pool": kernels,  # [L, M, kh, kw], the two poses as two models
        "adaptive_pool": torch.stack([kernels, kernels.flip(0)]),  # [B, L, M, kh, kw]
    }[layout]
    weights = torch.tensor([[0.7, 0.3], [0.2, 0.9]], dtype=torch.float64) if "pool" in layout else None
    canonical = _canonical_inputs(unary.to(dtype), pairwise.to(dtype), tree, None if weights is None else weights.to(dtype))
    return tree, *(t.to(DEVICE) for t in canonical)


def _check_peaked_forward(marginals, msgs, scales, reference, dtype):
    ref_marginals, ref_msgs, ref_scales = reference
    tol = VALUE_TOL[dtype]
    assert_entrywise(marginals, ref_marginals, what="marginals", **tol)
    assert_entrywise(msgs, ref_msgs, what="messages", **tol)
    assert_entrywise(scales, ref_scales, tol["rtol"], 0.0, "message scales")
    # Where the marginal peaks: what the keypoint read-out uses.
    assert torch.equal(marginals.cpu().flatten(2).argmax(2), ref_marginals.flatten(2).argmax(2))


def _fft_message_conv(h, kernel):
    """The plausible wrong implementation: the message convolution by FFT (zero padded, so linear)."""
    (_, height, width), (kh, kw) = h.shape, kernel.shape[-2:]
    size = (height + kh - 1, width + kw - 1)
    full = torch.fft.irfft2(torch.fft.rfft2(h, size) * torch.fft.rfft2(kernel, size), size)
    return full[:, kh // 2 : kh // 2 + height, kw // 2 : kw // 2 + width]


@pytest.mark.parametrize("name", list(PEAKED))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_peaked_checks_reject_an_fft_convolution(name, dtype, monkeypatch):
    # The cases are peaked enough that an FFT message convolution, in either dtype, fails the
    # entry-by-entry check that the Triton kernels pass below (run on the reference, which is fast).
    from handops._reference import tree_marginals as reference_module

    tree, unary, pairwise, weights = _peaked_inputs(name, "adaptive", dtype)
    exact = tree_marginals_reference(*(t.double().cpu() for t in (unary, pairwise, weights)), tree)
    monkeypatch.setattr(reference_module, "message_conv", _fft_message_conv)
    fft = tree_marginals_reference(*(t.cpu() for t in (unary, pairwise, weights)), tree)
    with pytest.raises(AssertionError, match="marginals"):
        _check_peaked_forward(*fft, exact, dtype)


@pytest.mark.parametrize(
    "name, layout, dtype",
    [
        ("near_kernel", "adaptive", torch.float64),
        ("near_kernel", "shared", torch.float32),
        ("wide_and_sharp", "pool", torch.float64),
        ("wide_and_sharp", "adaptive_pool", torch.float32),
        ("fork_agmn", "adaptive_pool", torch.float64),
        ("fork_agmn", "pool", torch.float32),
        ("fork_agmn", "shared", torch.float64),
    ],
)
def test_peaked_inputs_match_reference_entry_by_entry(name, layout, dtype):
    tree, unary, pairwise, weights = _peaked_inputs(name, layout, dtype)
    ref_inputs = [t.double().cpu().requires_grad_() for t in (unary, pairwise, weights)]
    reference = tree_marginals_reference(*ref_inputs, tree)
    marginals, msgs, scales = tt.tree_marginals_forward(unary, pairwise, weights, tree)
    assert marginals.dtype == dtype
    _check_peaked_forward(marginals, msgs, scales, [r.detach() for r in reference], dtype)
    # float32 gradients against the float64 reference, for a random upstream gradient.
    grad = torch.rand(unary.shape, generator=torch.Generator().manual_seed(13), dtype=dtype).to(DEVICE) - 0.5
    grads = tt.tree_marginals_backward(grad, unary, pairwise, weights, msgs, scales, tree)
    ref_grads = torch.autograd.grad(reference[0], ref_inputs, grad.double().cpu())
    for got, want, what in zip(grads, ref_grads, ("unary", "pairwise", "weights")):
        assert got.dtype == dtype
        assert_entrywise(got, want, what=f"gradient of {what}", **GRAD_TOL[dtype])


@pytest.mark.parametrize("batch, size, kernel, shared_kernels", [(2, (6, 7), (3, 3), False), (2, (8, 6), (5, 3), True)])
def test_tree_map_matches_reference(batch, size, kernel, shared_kernels):
    unary, pairwise, _ = _inputs(SMALL_TREE, batch, *size, kernel, 1, 1 if shared_kernels else batch, seed=9)
    pairwise = pairwise[:, 0]
    pairwise[..., 0, :] = 0  # -inf log-kernel entries
    max_marginals, config = tt.tree_map_forward(unary, pairwise, SMALL_TREE)
    ref_max_marginals, ref_config = tree_map_reference(unary, pairwise, SMALL_TREE)
    _assert_close(max_marginals, ref_max_marginals, 1e-12)
    assert config.dtype == torch.int64 and torch.equal(config, ref_config)


def test_tree_map_ties_break_like_the_reference():
    # Quantised inputs make many exactly equal scores, both among taps and among positions.
    unary, pairwise, _ = _inputs(SMALL_TREE, 2, 6, 6, (3, 3), 1, 1, seed=10)
    unary = (unary * 2).floor() + 1
    pairwise = ((pairwise[:, 0] * 2).floor() + 1) / 4
    max_marginals, config = tt.tree_map_forward(unary, pairwise, SMALL_TREE)
    ref_max_marginals, ref_config = tree_map_reference(unary, pairwise, SMALL_TREE)
    assert torch.equal(max_marginals, ref_max_marginals)
    assert torch.equal(config, ref_config)


def test_cuda_dispatch_glue_calls_the_triton_launchers():
    # The CUDA kernels registered for the handops ops call this module; call them directly here.
    from handops.ops import tree_marginals as ops
    from handops.ops._dispatch import triton_module

    assert triton_module("tree_marginals") is tt
    unary, pairwise, weights = _inputs(SMALL_TREE, 1, 5, 6, (3, 3), 1, 1, seed=12)
    schedule, level_sizes = SMALL_TREE.flat_messages(), list(SMALL_TREE.level_sizes)
    marginals, msgs, scales = ops._cuda_forward(unary, pairwise, weights, schedule, level_sizes)
    _assert_close(marginals, tree_marginals_reference(unary, pairwise, weights, SMALL_TREE)[0], 1e-10)
    grad = torch.rand_like(unary)
    grads = ops._cuda_backward(grad, unary, pairwise, weights, msgs, scales, schedule, level_sizes)
    for got, want in zip(grads, _reference_grads(grad, unary, pairwise, weights, SMALL_TREE)):
        _assert_close(got, want, 1e-10)
    max_marginals, config = ops._cuda_map(unary, pairwise[:, 0], schedule, level_sizes)
    assert torch.equal(config, tree_map_reference(unary, pairwise[:, 0], SMALL_TREE)[1])
    with pytest.raises(ValueError, match="non-negative"):
        ops._cuda_forward(-unary, pairwise, weights, schedule, level_sizes)


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation for sm_80 and sm_90
# ---------------------------------------------------------------------------------------------

def test_every_kernel_compiles_for_sm80_and_sm90():
    # Thesis maps (46x46, 45x45 kernels) and the largest supported maps (128x128), hand tree.
    cases = [[dtype, size, size, 45] for dtype in ("float32", "float64") for size in (46, 128)]
    result = compile_for_sm80_and_sm90("tree_marginals", cases)
    module_kernels = {name for name in dir(tt) if name.endswith("_kernel") and hasattr(getattr(tt, name), "fn")}
    assert module_kernels == set(result["kernels"]), "compile_specs must cover every kernel of the module"
    for sm in (80, 90):
        done = {c["kernel"] for c in result["compiled"] if c["sm"] == sm}
        assert done == module_kernels
        for dtype in ("torch.float32", "torch.float64"):
            assert {c["kernel"] for c in result["compiled"] if c["sm"] == sm and c["dtype"] == dtype} == module_kernels
    for c in result["compiled"]:
        assert c["ptx"] > 0 and c["cubin"] > 0 and c["target_ok"], c
