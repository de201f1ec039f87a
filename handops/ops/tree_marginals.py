"""Public tree ops: exact sum-product marginals (``tree_marginals``) and max-product decoding (``tree_map``).

The registered ops (``torch.ops.handops.tree_marginals`` and friends) take canonical shapes; the
functions here check the user's input, bring it to those shapes and return the result. Dispatch:
CPU tensors run the C++ kernel of ``csrc/cpu``, CUDA tensors the Triton kernels of
``handops/_triton`` (the reference when triton is missing), anything else the reference.
"""

from __future__ import annotations

import torch

from handops._reference import tree_marginals as _ref
from handops.ops._checks import check_tensor as _check_tensor
from handops.ops._checks import check_values
from handops.ops._checks import describe as _describe
from handops.ops._dispatch import register_autograd
from handops.ops._registration import register_backends
from handops.tree import Tree, tree_from_schedule

__all__ = ["tree_marginals", "tree_map"]


def _canonical_inputs(unary, pairwise, tree, weights, allow_mixture=True):
    """Checks shapes, dtypes and devices; returns unary [B,K,H,W], pairwise [Bp,L,M,kh,kw], weights [B,L]."""
    if not isinstance(tree, Tree):
        raise TypeError(f"tree must be a handops.Tree (for example handops.hand_tree()), got {type(tree).__name__}")
    _check_tensor("unary", unary, (4,))
    batch, num_nodes, height, width = unary.shape
    if num_nodes != tree.num_nodes:
        raise ValueError(f"unary has {num_nodes} keypoint maps (dim 1) but the tree has {tree.num_nodes} nodes: {_describe(unary)}")
    if height < 1 or width < 1:
        raise ValueError(f"unary maps must be at least 1x1, got {_describe(unary)}")
    ranks = (3, 4, 5) if allow_mixture else (3, 4)
    _check_tensor("pairwise", pairwise, ranks)
    if weights is not None:
        if not allow_mixture:
            raise ValueError("tree_map decodes a single tree model; a mixture (weights) has no tree-structured MAP")
        _check_tensor("weights", weights, (2,))
    if pairwise.device != unary.device or (weights is not None and weights.device != unary.device):
        devices = [str(unary.device), str(pairwise.device)] + ([str(weights.device)] if weights is not None else [])
        raise ValueError(f"unary, pairwise and weights must be on one device, got {', '.join(devices)}")

    rank = pairwise.dim()
    if rank == 3:  # [M, kh, kw]: one model shared by every image
        layout, canon = "[M, kh, kw]", pairwise[None, None]
    elif rank == 4 and weights is None:  # [B, M, kh, kw]: adaptive kernels (AGMN)
        layout, canon = "[B, M, kh, kw]", pairwise[:, None]
    elif rank == 4:  # [L, M, kh, kw]: a pool of L shared models (R-MGMN)
        layout, canon = "[L, M, kh, kw]", pairwise[None]
    else:
        if weights is None:
            raise ValueError(f"5-D pairwise [B, L, M, kh, kw] is a mixture of L models and needs weights [B, L], got {_describe(pairwise)}")
        layout, canon = "[B, L, M, kh, kw]", pairwise
    if "B," in layout and canon.shape[0] != batch:
        raise ValueError(f"pairwise {layout} has batch size {canon.shape[0]} but unary has {batch}: {_describe(pairwise)}")
    num_models, num_messages, kh, kw = canon.shape[1:]
    if num_models == 0:  # the weighted sum of no models would be all-zero "marginals"
        raise ValueError(f"pairwise {layout} must hold at least one model (L >= 1), got {_describe(pairwise)}")
    if num_messages != tree.num_messages:
        raise ValueError(
            f"pairwise {layout} has {num_messages} message kernels (M) but the tree has {tree.num_messages} "
            f"directed messages: {_describe(pairwise)}"
        )
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"pairwise kernels must have odd height and width (a centre), got {kh}x{kw}")
    if weights is None:
        weights = unary.new_ones(batch, 1)
    elif weights.shape != (batch, num_models):
        raise ValueError(f"weights must be [B, L] = [{batch}, {num_models}] for pairwise {layout}, got {_describe(weights)}")

    dtype = torch.promote_types(unary.dtype, pairwise.dtype)
    dtype = torch.promote_types(dtype, weights.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32  # half inputs compute in float32
    return unary.to(dtype), canon.to(dtype), weights.to(dtype)


def tree_marginals(unary: torch.Tensor, pairwise: torch.Tensor, tree: Tree, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Exact sum-product marginals of a tree of 2-D heatmaps (AGMN, and R-MGMN's mixture, Eq. 3.10).

    Args:
        unary: [B, K, H, W] non-negative heatmaps, K = ``tree.num_nodes``.
        pairwise: non-negative odd-sized kernels, channel m for ``tree.messages[m] = (i, j)``:
            [B, M, kh, kw] (one set per image), [M, kh, kw] (shared), or with ``weights``
            [L, M, kh, kw] / [B, L, M, kh, kw] (a mixture of L models).
        tree: the :class:`handops.Tree` (``handops.hand_tree()`` for hands).
        weights: [B, L] non-negative mixture weights, or None for a single model.
    Returns:
        [B, K, H, W] in the promoted input dtype: ``sum_l weights[b, l] * p_l(x_k = p)`` where each
        p_l map sums to 1 (without weights, the marginals themselves).

    The message from i to j is ``m_ij(x_j) = sum_{x_i} kernel_ij[x_j - x_i + c] h_i(x_i)`` with
    c = (kh // 2, kw // 2) and ``h_i`` the unary of i times every message into i but the one from j:
    mass at offset d from a kernel's centre says "j lies at i + d". See ``handops._reference`` for the
    numerical conventions (rescaling, flooring, the uniform marginal of an all-zero belief).
    Differentiable in ``unary``, ``pairwise`` and ``weights``.
    """
    unary_c, pairwise_c, weights_c = _canonical_inputs(unary, pairwise, tree, weights)
    out_dtype = torch.promote_types(unary.dtype, pairwise.dtype)
    if weights is not None:
        out_dtype = torch.promote_types(out_dtype, weights.dtype)
    marginals, _, _ = _tree_marginals_op(unary_c, pairwise_c, weights_c, tree.flat_messages(), list(tree.level_sizes))
    return marginals.to(out_dtype)


def tree_map(unary: torch.Tensor, pairwise: torch.Tensor, tree: Tree) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-product on a tree of 2-D heatmaps: max-marginals and a jointly most probable configuration.

    Args:
        unary: [B, K, H, W] non-negative; pairwise: [B, M, kh, kw] or [M, kh, kw] non-negative,
        with the conventions of :func:`tree_marginals`.
    Returns:
        max_marginals [B, K, H, W] (each map scaled to maximum 1: the probability of the best
        configuration through that position relative to the best overall), and config [B, K, 2]
        int64 (row, col), one MAP configuration decoded jointly by backtracking from the root.
        Not differentiable.
    """
    unary_c, pairwise_c, _ = _canonical_inputs(unary, pairwise, tree, None, allow_mixture=False)
    # Max-product has no gradient and the op no autograd formula: detached inputs keep the outputs from
    # requiring grad (PyTorch's fallback would mark them, and a backward would leave no gradient).
    max_marginals, config = torch.ops.handops.tree_map(unary_c.detach(), pairwise_c[:, 0].detach(), tree.flat_messages(),
                                                       list(tree.level_sizes))
    return max_marginals.to(torch.promote_types(unary.dtype, pairwise.dtype)), config


# ---------------------------------------------------------------------------------------------
# Registration: fake (meta) implementations, autograd, and the non-C++ backends.
# ---------------------------------------------------------------------------------------------


@torch.library.register_fake("handops::tree_marginals")
def _tree_marginals_fake(unary, pairwise, weights, messages, level_sizes):
    torch._check(unary.dim() == 4 and pairwise.dim() == 5 and weights.dim() == 2)
    torch._check(pairwise.shape[2] * 2 == len(messages))
    batch, _, height, width = unary.shape
    marginals = unary.new_empty(unary.shape)
    msgs = unary.new_empty(batch, pairwise.shape[1], pairwise.shape[2], height, width)
    return marginals, msgs, unary.new_empty(batch, pairwise.shape[1], pairwise.shape[2])


@torch.library.register_fake("handops::tree_marginals_backward")
def _tree_marginals_backward_fake(grad, unary, pairwise, weights, messages, scales, schedule, level_sizes):
    return unary.new_empty(unary.shape), pairwise.new_empty(pairwise.shape), weights.new_empty(weights.shape)


@torch.library.register_fake("handops::tree_map")
def _tree_map_fake(unary, pairwise, messages, level_sizes):
    torch._check(unary.dim() == 4 and pairwise.dim() == 4)
    return unary.new_empty(unary.shape), unary.new_empty(unary.shape[0], unary.shape[1], 2, dtype=torch.long)


def _setup_context(ctx, inputs, output):
    unary, pairwise, weights, schedule, level_sizes = inputs
    _, msgs, scales = output
    ctx.save_for_backward(unary, pairwise, weights, msgs, scales)
    ctx.schedule, ctx.level_sizes = schedule, level_sizes


def _backward(ctx, grad_marginals, grad_messages, grad_scales):
    unary, pairwise, weights, msgs, scales = ctx.saved_tensors
    # The messages and scales are by-products for the backward; gradients arriving for them are ignored.
    grads = torch.ops.handops.tree_marginals_backward(
        grad_marginals.contiguous(), unary, pairwise, weights, msgs, scales, ctx.schedule, ctx.level_sizes
    )
    return grads[0], grads[1], grads[2], None, None


_tree_marginals_op = register_autograd("tree_marginals", _backward, _setup_context)


# Reference implementations, registered where no compiled kernel exists.
def _reference_forward(unary, pairwise, weights, messages, level_sizes):
    check_values(unary=unary, pairwise=pairwise, weights=weights)
    tree = tree_from_schedule(tuple(messages), tuple(level_sizes))
    marginals, msgs, scales = _ref.tree_marginals_reference(unary, pairwise, weights, tree)
    return marginals.contiguous(), msgs.contiguous(), scales.contiguous()


def _reference_backward(grad, unary, pairwise, weights, msgs, scales, messages, level_sizes):
    tree = tree_from_schedule(tuple(messages), tuple(level_sizes))
    with torch.enable_grad():
        inputs = [t.detach().requires_grad_(True) for t in (unary, pairwise, weights)]
        marginals = _ref.tree_marginals_reference(*inputs, tree)[0]
        grads = torch.autograd.grad(marginals, inputs, grad, allow_unused=True)
    return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs))


def _reference_map(unary, pairwise, messages, level_sizes):
    check_values(unary=unary, pairwise=pairwise)
    tree = tree_from_schedule(tuple(messages), tuple(level_sizes))
    return _ref.tree_map_reference(unary, pairwise, tree)


_cuda_forward = register_backends("tree_marginals", _reference_forward, triton="tree_marginals",
                                  check=lambda unary, pairwise, weights, *_: check_values(unary=unary, pairwise=pairwise, weights=weights))
_cuda_backward = register_backends("tree_marginals_backward", _reference_backward, triton="tree_marginals")
_cuda_map = register_backends("tree_map", _reference_map, triton="tree_marginals",
                              check=lambda unary, pairwise, *_: check_values(unary=unary, pairwise=pairwise))
