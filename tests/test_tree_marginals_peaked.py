"""handops.tree_marginals on the inputs AGMN produces: peaked Gaussian heatmaps and kernels.

The wrong implementation these tests rule out is the FFT convolution the C++ kernel used before: it is
accurate only to eps times a message's largest entry, so a message whose true value at the unary's
peak is 1e-14 of its own peak came back as round-off noise, and the marginal peaked in the noise
(issue 9). ``test_an_fft_convolution_fails_these_inputs`` checks that the comparisons below really
catch such an implementation (the level-batched FFT alternative of the benchmarks).
"""

import math

import pytest
import torch

import handops
from benchmarks.alternatives import tree_marginals_fft_levels
from handops.tree import Tree
from handops_models.data.targets import keypoint_heatmaps, pairwise_targets
from tree_helpers import canonical_reference as reference
from tree_helpers import gaussian

PAIR = Tree([-1, 0])
CHAIN = Tree([-1, 0, 1])
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}  # marginal entries, absolute (issue 9)


def peaked_pair(distance: float, sigma: float, size: int, kernel: int, kernel_sigma: float, dtype=torch.float64):
    """Two unary peaks `distance` px apart along the diagonal and kernels saying "the neighbour is near me"."""
    step = distance / math.sqrt(2)
    start = (size - 1 - step) / 2
    unary = torch.stack([gaussian(size, (start, start), sigma), gaussian(size, (start + step, start + step), sigma)])
    centre = kernel // 2
    kernels = torch.stack([gaussian(kernel, (centre, centre), kernel_sigma)] * 2)
    return unary[None].to(dtype), kernels[None].to(dtype)


def assert_marginals_match(out, ref, dtype):
    """Entry by entry within the issue's tolerance, and the same argmax for every map (up to exact ties:
    the reference's value at handops' argmax is the reference's maximum)."""
    assert out.dtype == ref.dtype
    err = (out - ref).abs().max().item()
    assert err <= TOLERANCE[dtype], f"max |handops - reference| = {err:.3g}"
    ref_flat = ref.flatten(2)
    at_argmax = ref_flat.gather(-1, out.flatten(2).argmax(-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(at_argmax, ref_flat.amax(-1), rtol=1e-6, atol=0)


# The snippet of issue 9 at every distance up to 40 px, sigma 1-3.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_two_peaks_at_every_distance(dtype, sigma):
    for distance in range(0, 41, 4):
        unary, kernels = peaked_pair(distance, sigma, 46, 45, 3.0, dtype)
        assert_marginals_match(handops.tree_marginals(unary, kernels, PAIR), reference(unary, kernels, PAIR), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_peaks_on_128_maps(dtype):
    for distance in (10, 25, 40):
        unary, kernels = peaked_pair(distance, 2.0, 128, 63, 3.0, dtype)
        assert_marginals_match(handops.tree_marginals(unary, kernels, PAIR), reference(unary, kernels, PAIR), dtype)


def layouts(unary, kernels, models=3):
    """(pairwise, weights) for the four public layouts, built from one [B, M, kh, kw] kernel set."""
    batch = unary.shape[0]
    gen = torch.Generator().manual_seed(0)
    weights = torch.rand(batch, models, generator=gen, dtype=unary.dtype)
    # Mixture members differ by a scale and a shift of the kernel's peak, so they disagree.
    pool = torch.stack([kernels[0].roll(shifts=(s, -s), dims=(-2, -1)) * (1 + s) for s in range(models)])
    return {
        "adaptive": (kernels, None),
        "shared": (kernels[0], None),
        "pool": (pool, weights),
        "adaptive_pool": (pool[None].expand(batch, -1, -1, -1, -1).contiguous(), weights),
    }


@pytest.mark.parametrize("layout", ["adaptive", "shared", "pool", "adaptive_pool"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_layout_on_peaked_chains(layout, dtype):
    """A 3-node chain with peaks 12 and 30 px apart, two images (the adaptive kernels differ)."""
    first = torch.stack([gaussian(46, c, s) for c, s in (((6, 8), 1.0), ((20, 15), 2.0), ((40, 38), 1.5))])
    second = torch.stack([gaussian(46, c, s) for c, s in (((30, 4), 2.5), ((10, 12), 1.0), ((3, 41), 3.0))])
    unary = torch.stack([first, second]).to(dtype)
    kernels = torch.stack([gaussian(45, (22 + dr, 22 + dc), 2.5) for dr, dc in ((5, 3), (-5, -3), (8, -2), (-8, 2))])
    kernels = torch.stack([kernels, kernels.flip(-1)]).to(dtype)
    pairwise, weights = layouts(unary, kernels)[layout]
    out = handops.tree_marginals(unary, pairwise, CHAIN, weights=weights)
    assert_marginals_match(out, reference(unary, pairwise, CHAIN, weights), dtype)


def agmn_inputs(moved: float, dtype=torch.float64):
    """The library's own AGMN targets for a hand whose keypoint 8 the unary branch puts `moved` px off."""
    gen = torch.Generator().manual_seed(3)
    keypoints = 60 + 250 * torch.rand(1, 21, 2, generator=gen, dtype=torch.float64)  # 368-px image, stride 8
    wrong = keypoints.clone()
    wrong[0, 8] += 8 * moved  # heatmap pixels -> image pixels
    unary = keypoint_heatmaps(wrong, size=46, stride=8, sigma=1.0)
    pairwise = pairwise_targets(keypoints, kernel_size=45, stride=8, sigma=1.0)
    return unary.to(dtype), pairwise.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("moved", [0.0, 10.0, 20.0])
def test_agmn_targets_with_a_misplaced_keypoint(dtype, moved):
    tree = handops.hand_tree()
    unary, pairwise = agmn_inputs(moved, dtype)
    assert_marginals_match(handops.tree_marginals(unary, pairwise, tree), reference(unary, pairwise, tree), dtype)


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def float32_gradients_match_float64(unary, pairwise, tree, weights=None):
    """Gradients of <g, marginals> for unary, pairwise (and weights) in float32 within 1e-3 of the float64 reference."""
    grad_out = torch.randn(unary.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    inputs64 = [t.detach().double().requires_grad_(True) for t in (unary, pairwise) + ((weights,) if weights is not None else ())]
    expected = torch.autograd.grad((reference(*inputs64[:2], tree, *inputs64[2:]) * grad_out).sum(), inputs64)
    inputs32 = [t.detach().float().requires_grad_(True) for t in inputs64]
    out = handops.tree_marginals(*inputs32[:2], tree, weights=inputs32[2] if weights is not None else None)
    got = torch.autograd.grad((out * grad_out.float()).sum(), inputs32)
    for name, g, e in zip(("unary", "pairwise", "weights"), got, expected):
        assert relative_error(g.double(), e) < 1e-3, f"{name}: relative error {relative_error(g.double(), e):.3g}"


@pytest.mark.parametrize("distance", [8, 20, 30])
def test_float32_gradients_on_peaked_pairs(distance):
    unary, kernels = peaked_pair(distance, 2.0, 46, 45, 3.0)
    float32_gradients_match_float64(unary, kernels, PAIR)


@pytest.mark.parametrize("layout", ["adaptive", "shared", "pool", "adaptive_pool"])
def test_float32_gradients_in_every_layout(layout):
    unary = torch.stack([gaussian(46, c, 1.5) for c in ((6, 8), (20, 15), (40, 38))])[None]
    kernels = torch.stack([gaussian(45, (22 + dr, 22 + dc), 2.5) for dr, dc in ((5, 3), (-5, -3), (8, -2), (-8, 2))])[None]
    pairwise, weights = layouts(unary, kernels)[layout]
    float32_gradients_match_float64(unary, pairwise, CHAIN, weights)


@pytest.mark.parametrize("moved", [10.0])
def test_float32_gradients_on_agmn_targets(moved):
    unary, pairwise = agmn_inputs(moved)
    float32_gradients_match_float64(unary, pairwise, handops.hand_tree())


def test_gradcheck_on_small_peaked_inputs():
    """float64 gradcheck with peaks 7 px apart on 11x11 maps, 7x7 kernels (values down to 1e-20).

    The inputs are parameterised by their logarithms so that finite differences stay non-negative
    and perturb the tiny entries relative to their size.
    """
    log_unary = torch.stack([gaussian(11, (1, 2), 1.0), gaussian(11, (8, 7), 1.0)])[None].log().requires_grad_(True)
    log_kernels = torch.stack([gaussian(7, (3, 3), 1.5)] * 2)[None].log().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u, k: handops.tree_marginals(u.exp(), k.exp(), PAIR), (log_unary, log_kernels))


def test_an_fft_convolution_fails_these_inputs():
    """The comparisons above catch an FFT implementation: it is far off on the issue's 20 px case."""
    unary, kernels = peaked_pair(20 * math.sqrt(2), 2.0, 46, 45, 3.0, torch.float32)
    ref = reference(unary, kernels, PAIR)
    assert (tree_marginals_fft_levels(unary, kernels, PAIR) - ref).abs().max() > 100 * TOLERANCE[torch.float32]
    assert_marginals_match(handops.tree_marginals(unary, kernels, PAIR), ref, torch.float32)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e30])
def test_kernel_scale_does_not_matter_in_float32(scale):
    """Marginals are invariant to each kernel's scale; float32 kernels of maximum 1e-30 or 1e30 must give
    the float64 reference's marginals. Rules out norms or products of the unscaled kernel, whose squares
    underflow (NaN thresholds drop the message) or overflow."""
    unary = torch.stack([gaussian(20, (4, 4), 1.5), gaussian(20, (12, 12), 1.5), gaussian(20, (15, 15), 2.0)])[None]
    kernels = torch.rand(1, CHAIN.num_messages, 7, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.05
    out = handops.tree_marginals(unary.float(), (kernels * scale).float(), CHAIN)
    assert_marginals_match(out.double(), reference(unary, kernels, CHAIN), torch.float32)


@pytest.mark.parametrize("which", ["unary", "pairwise"])
@pytest.mark.parametrize("scale", [1e-39, 1e-41])
def test_denormal_float32_maxima_are_not_zero(which, scale):
    """A float32 unary or kernel whose maximum is denormal (below 1.2e-38) still carries information:
    against the float64 reference on the same values. Rules out rescaling by 1 / max in float32, which
    overflows to inf (the map then counted as zero: a uniform marginal or an all-ones message)."""
    unary = torch.stack([gaussian(16, (4, 4), 2.0), gaussian(16, (10, 10), 2.0)])[None].float()
    kernel = gaussian(9, (6, 6), 1.5).float()
    pairwise = torch.stack([kernel, kernel.flip(-2, -1)])
    if which == "unary":
        unary[:, 1] *= scale
    else:
        pairwise = pairwise * scale
    out = handops.tree_marginals(unary, pairwise, PAIR)
    torch.testing.assert_close(out.double(), reference(unary.double(), pairwise.double(), PAIR), rtol=0, atol=1e-6)


def test_output_dtype_promotes_every_input():
    """float64 weights with float32 maps compute in float64 and return float64 (rules out a result cast
    back to the maps' dtype, which threw the promotion away)."""
    unary, kernels = peaked_pair(10, 2.0, 12, 5, 1.5, torch.float32)
    pool = torch.stack([kernels[0], kernels[0].flip(-1)])
    weights = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    out = handops.tree_marginals(unary, pool, PAIR, weights=weights)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference(unary.double(), pool.double(), PAIR, weights), rtol=1e-12, atol=1e-14)
