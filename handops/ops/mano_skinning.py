"""The fused MANO skinning op ``handops::mano_skinning`` (thesis Sec. 2.5) and its registration.

Dispatch: CPU tensors run the C++ kernel (``csrc/cpu/mano_skinning.cpp``, an analytic backward);
any other device, or an install without the extension, runs ``mano_forward_reference`` and takes its
backward from autograd through that reference.
"""

from __future__ import annotations

import torch

from handops import _extension
from handops._reference.mano import mano_forward_reference
from handops.mano.model import ManoModel

__all__ = ["mano_skinning"]

# Model casts by (id, dtype, device): ManoLayer calls this every forward, and re-casting the float64
# model (a few MB) to float32 each time would cost as much as the op. The model is kept in the entry so
# its id cannot be reused while the entry lives.
_CAST_CACHE: dict[tuple, tuple[ManoModel, ManoModel]] = {}


def _cast(model: ManoModel, dtype: torch.dtype, device: torch.device) -> ManoModel:
    key = (id(model), dtype, device)
    entry = _CAST_CACHE.get(key)
    if entry is None or entry[0] is not model:
        if len(_CAST_CACHE) >= 16:
            _CAST_CACHE.clear()
        entry = (model, model.to(dtype=dtype, device=device))
        _CAST_CACHE[key] = entry
    return entry[1]


def mano_skinning(model: ManoModel, betas: torch.Tensor, rotations: torch.Tensor):
    """MANO with matrix rotations, without a global translation (the caller adds it).

    Args:
        model: a :class:`handops.mano.ManoModel` (cast to the dtype and device of ``betas``).
        betas: [B, S] with S <= ``model.num_betas``, float32 or float64.
        rotations: [B, 16, 3, 3] joint rotations, the root first (cast to the dtype of ``betas``).
    Returns:
        vertices [B, V, 3], joints [B, 16, 3] (MANO order), transforms [B, 16, 4, 4] (the relative
        A_k), equal to ``mano_forward_reference(model, betas, rotations)``. Differentiable in
        ``betas`` and ``rotations``; the model tensors are constants.
    """
    if betas.dim() != 2:
        raise ValueError(f"betas must be [B, S], got {list(betas.shape)}")
    if rotations.shape != (betas.shape[0], 16, 3, 3):
        raise ValueError(f"rotations must be [B, 16, 3, 3] with B = {betas.shape[0]}, got {list(rotations.shape)}")
    m = _cast(model, betas.dtype, betas.device)
    return torch.ops.handops.mano_skinning(betas, rotations.to(betas), m.v_template, m.shapedirs, m.posedirs,
                                           m.J_regressor, m.weights, m.parents.tolist())


def _model_from(v_template, shapedirs, posedirs, J_regressor, weights, parents) -> ManoModel:
    """A ManoModel around the op's model tensors, for the reference (faces and PCA are unused there)."""
    v = v_template.shape[0]
    long = dict(dtype=torch.int64, device=v_template.device)
    return ManoModel(v_template, shapedirs, posedirs, J_regressor, weights, faces=torch.zeros(0, 3, **long),
                     parents=torch.tensor(list(parents), **long), hands_components=v_template.new_zeros(45, 45),
                     hands_mean=v_template.new_zeros(45), fingertip_ids=torch.arange(5, **long) % v)


@torch.library.register_fake("handops::mano_skinning")
def _mano_skinning_fake(betas, rotations, v_template, shapedirs, posedirs, J_regressor, weights, parents):
    torch._check(betas.dim() == 2 and rotations.dim() == 4 and v_template.dim() == 2)
    torch._check(len(parents) == 16)
    batch = betas.shape[0]
    return (betas.new_empty(batch, v_template.shape[0], 3), betas.new_empty(batch, 16, 3), betas.new_empty(batch, 16, 4, 4))


@torch.library.register_fake("handops::mano_skinning_backward")
def _mano_skinning_backward_fake(grad_vertices, grad_joints, grad_transforms, betas, rotations, v_template, shapedirs,
                                 posedirs, J_regressor, weights, parents):
    return betas.new_empty(betas.shape), rotations.new_empty(rotations.shape)


def _setup_context(ctx, inputs, output):
    # The backward recomputes the forward from the inputs, so no output is saved.
    betas, rotations, v_template, shapedirs, posedirs, J_regressor, weights, parents = inputs
    ctx.save_for_backward(betas, rotations, v_template, shapedirs, posedirs, J_regressor, weights)
    ctx.parents = parents


def _backward(ctx, grad_vertices, grad_joints, grad_transforms):
    betas, rotations, *model = ctx.saved_tensors
    # An output that did not reach the loss has a None gradient: the kernel wants zeros.
    grads = [torch.zeros_like(out) if g is None else g.contiguous() for g, out in (
        (grad_vertices, betas.new_empty(betas.shape[0], model[0].shape[0], 3)),
        (grad_joints, betas.new_empty(betas.shape[0], 16, 3)),
        (grad_transforms, betas.new_empty(betas.shape[0], 16, 4, 4)))]
    g_betas, g_rotations = torch.ops.handops.mano_skinning_backward(*grads, betas, rotations, *model, ctx.parents)
    return g_betas, g_rotations, None, None, None, None, None, None


torch.library.register_autograd("handops::mano_skinning", _backward, setup_context=_setup_context)


def _reference_forward(betas, rotations, v_template, shapedirs, posedirs, J_regressor, weights, parents):
    model = _model_from(v_template, shapedirs, posedirs, J_regressor, weights, parents)
    return tuple(t.contiguous() for t in mano_forward_reference(model, betas, rotations))


def _reference_backward(grad_vertices, grad_joints, grad_transforms, betas, rotations, v_template, shapedirs, posedirs,
                        J_regressor, weights, parents):
    model = _model_from(v_template, shapedirs, posedirs, J_regressor, weights, parents)
    with torch.enable_grad():
        inputs = [betas.detach().requires_grad_(True), rotations.detach().requires_grad_(True)]
        outputs = mano_forward_reference(model, *inputs)
        grads = torch.autograd.grad(outputs, inputs, (grad_vertices, grad_joints, grad_transforms), allow_unused=True)
    return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs))


torch.library.register_kernel("handops::mano_skinning", None, _reference_forward)
torch.library.register_kernel("handops::mano_skinning_backward", None, _reference_backward)
if not _extension.HAS_EXTENSION:
    torch.library.register_kernel("handops::mano_skinning", "cpu", _reference_forward)
    torch.library.register_kernel("handops::mano_skinning_backward", "cpu", _reference_backward)
