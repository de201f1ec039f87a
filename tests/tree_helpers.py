"""Brute-force enumeration of small tree models: the ground truth the tree-op tests check against.

A tree model here is a joint distribution over the positions of K nodes on an H x W map,
``p(x) ~ prod_i unary_i(x_i) * prod_{(a, b) in tree.edges} kernel_ab[x_b - x_a + c]`` (c the kernel
centre, zero outside the kernel), which is what sum-product and max-product compute when the kernel
of the message b -> a is the flip of the kernel of a -> b (:func:`symmetric_kernels` makes them so).
Every configuration of the (H W)^K is enumerated, as one broadcast tensor of log-probabilities, so
the values cannot underflow however wide their dynamic range is: keep (H W)^K to a few million.
"""

from __future__ import annotations

import torch

from handops._reference.tree_marginals import tree_marginals_reference
from handops.tree import Tree

__all__ = ["canonical_reference", "gaussian", "assert_entrywise", "symmetric_kernels", "brute_force_log_joint", "brute_force_marginals", "brute_force_max_marginals", "brute_force_map", "config_log_prob"]


def symmetric_kernels(kernels: torch.Tensor, tree: Tree) -> torch.Tensor:
    """kernels [..., M, kh, kw] with each upward message's kernel replaced by the flip of its downward one,
    so that both directions of an edge describe one potential (a proper joint distribution)."""
    out = kernels.clone()
    for parent, child in tree.edges:
        out[..., tree.message_index(child, parent), :, :] = kernels[..., tree.message_index(parent, child), :, :].flip(-2, -1)
    return out


def _edge_log_potential(log_kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[HW, HW]: entry (a, b) = log kernel[x_b - x_a + c] (-inf outside the kernel)."""
    kh, kw = log_kernel.shape
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    dr = rows[None, :] - rows[:, None] + kh // 2
    dc = cols[None, :] - cols[:, None] + kw // 2
    inside = (dr >= 0) & (dr < kh) & (dc >= 0) & (dc < kw)
    values = log_kernel[dr.clamp(0, kh - 1), dc.clamp(0, kw - 1)]
    return torch.where(inside, values, torch.full_like(values, float("-inf")))


def brute_force_log_joint(unary: torch.Tensor, kernels: torch.Tensor, tree: Tree) -> torch.Tensor:
    """Unnormalised log p over every configuration of one image: [HW] * K, axis i the flat position of node i.

    unary [K, H, W] and kernels [M, kh, kw] (channel m is ``tree.messages[m]``; only the kernels of the
    downward messages parent -> child are read), both non-negative, computed in float64.
    """
    num_nodes, height, width = unary.shape
    positions = height * width

    def along(axis: int, t: torch.Tensor) -> torch.Tensor:  # a [HW] vector on axis `axis` of a K-D tensor
        return t.view([positions if k == axis else 1 for k in range(num_nodes)])

    log_joint = torch.zeros([1] * num_nodes, dtype=torch.float64)
    for node in range(num_nodes):
        log_joint = log_joint + along(node, torch.log(unary[node].double()).flatten())
    for parent, child in tree.edges:
        log_psi = _edge_log_potential(torch.log(kernels[tree.message_index(parent, child)].double()), height, width)
        shape = [1] * num_nodes
        shape[parent], shape[child] = positions, positions
        if parent > child:
            log_psi = log_psi.t()
        log_joint = log_joint + log_psi.reshape(shape)
    return log_joint


def _others(num_nodes: int, node: int) -> list[int]:
    return [k for k in range(num_nodes) if k != node]


def brute_force_marginals(unary: torch.Tensor, kernels: torch.Tensor, tree: Tree) -> torch.Tensor:
    """Exact marginals [K, H, W] (float64) of one image, by a log-sum-exp over every configuration."""
    log_joint = brute_force_log_joint(unary, kernels, tree)
    num_nodes = unary.shape[0]
    log_z = torch.logsumexp(log_joint.flatten(), 0)
    out = [torch.logsumexp(log_joint, _others(num_nodes, n)) if num_nodes > 1 else log_joint for n in range(num_nodes)]
    return torch.exp(torch.stack(out) - log_z).view(unary.shape)


def brute_force_max_marginals(unary: torch.Tensor, kernels: torch.Tensor, tree: Tree) -> torch.Tensor:
    """Exact max-marginals [K, H, W] (float64) of one image, each map scaled to maximum 1."""
    log_joint = brute_force_log_joint(unary, kernels, tree)
    num_nodes = unary.shape[0]
    out = torch.stack([log_joint.amax(_others(num_nodes, n)) if num_nodes > 1 else log_joint for n in range(num_nodes)])
    return torch.exp(out - out.amax(1, keepdim=True)).view(unary.shape)


def brute_force_map(unary: torch.Tensor, kernels: torch.Tensor, tree: Tree) -> tuple[torch.Tensor, torch.Tensor]:
    """(a most probable configuration [K, 2] (row, col), the log p of every configuration [HW] * K) of one image.

    Ties make the maximiser ambiguous: a decoder is right when the log p of its configuration
    (:func:`config_log_prob`) reaches the maximum, and must equal this one when it is unique.
    """
    log_joint = brute_force_log_joint(unary, kernels, tree)
    width = unary.shape[-1]
    flat = torch.tensor(torch.unravel_index(log_joint.argmax(), log_joint.shape))
    return torch.stack([flat // width, flat % width], -1), log_joint


def config_log_prob(log_joint: torch.Tensor, config: torch.Tensor, width: int) -> torch.Tensor:
    """log p (from :func:`brute_force_log_joint`) of a configuration [K, 2] (row, col)."""
    flat = config[:, 0] * width + config[:, 1]
    return log_joint[tuple(flat.tolist())]


def assert_entrywise(actual, expected, rtol, floor, what):
    """|actual - expected| <= rtol |expected| + floor * (largest |expected| of the map) at every entry."""
    assert actual.shape == expected.shape, what
    actual, expected = actual.double().cpu(), expected.double().cpu()
    scale = expected.abs().amax((-2, -1), keepdim=True) if expected.dim() > 2 else expected.abs().amax()
    excess = (actual - expected).abs() - (rtol * expected.abs() + floor * scale)
    worst = int(excess.flatten().argmax())
    assert excess.max() <= 0, (
        f"{what}: entry {worst} is {actual.flatten()[worst].item():.6e}, expected {expected.flatten()[worst].item():.6e} "
        f"(rtol {rtol}, floor {floor} of the map's peak)"
    )


def canonical_reference(unary, pairwise, tree, weights=None):
    """The reference (``tree_marginals_reference``) for any public layout of ``handops.tree_marginals``."""
    if pairwise.dim() == 3:
        pairwise = pairwise[None, None]
    elif pairwise.dim() == 4:
        pairwise = pairwise[:, None] if weights is None else pairwise[None]
    if weights is None:
        weights = unary.new_ones(unary.shape[0], 1)
    return tree_marginals_reference(unary, pairwise, weights, tree)[0]


def gaussian(size: int, centre: tuple[float, float], sigma: float, dtype=torch.float64) -> torch.Tensor:
    """exp(-|p - centre|^2 / (2 sigma^2)) on a size x size grid, p = (row, col): a peaked heatmap or kernel."""
    rows = torch.arange(size, dtype=dtype)[:, None]
    cols = torch.arange(size, dtype=dtype)[None, :]
    return torch.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma * sigma))
