"""The fused MANO ops ``handops::mano_skinning`` and ``handops::mano_keypoints_jacobian`` (thesis Sec. 2.5).

Dispatch: CPU tensors run the C++ kernels (``csrc/cpu/mano_skinning.cpp``: Rodrigues, shape blend, chain,
pose correctives and skinning in one pass, an analytic backward, an analytic keypoint Jacobian); CUDA
tensors run the Triton kernels of ``handops/_triton/mano_skinning.py`` where triton is installed; any
other device, or an install without the extension, runs ``handops/_reference/mano.py`` (the backward then
comes from autograd through that reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from handops._reference.mano import mano_keypoints_jacobian_reference, mano_skinning_reference
from handops.mano.model import ManoModel
from handops.ops._dispatch import register_autograd
from handops.ops._registration import register_backends

__all__ = ["SkinningModel", "mano_skinning", "mano_keypoints_jacobian"]


@dataclass(frozen=True, eq=False)  # identity equality: the cache below keys on the instance
class SkinningModel:
    """The model tensors the ops take: a MANO model with its joint regressor applied once.

    v_template [V, 3], shapedirs [V, 3, S], posedirs [V, 3, 135], weights [V, 16] for the vertices kept,
    J_template [16, 3] = J_regressor v_template and J_shapedirs [16, 3, S] = J_regressor shapedirs of the
    full model (so the joints are exact whichever vertices are kept), parents (16 ints).
    """

    v_template: torch.Tensor
    shapedirs: torch.Tensor
    posedirs: torch.Tensor
    J_template: torch.Tensor
    J_shapedirs: torch.Tensor
    weights: torch.Tensor
    parents: tuple[int, ...]
    _casts: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_mano(cls, model: ManoModel, vertex_ids: torch.Tensor | None = None) -> SkinningModel:
        """The skinning tensors of ``model``, keeping only ``vertex_ids`` (all vertices when None)."""
        j_template = model.J_regressor @ model.v_template
        j_shapedirs = torch.einsum("jv,vks->jks", model.J_regressor, model.shapedirs)
        keep = slice(None) if vertex_ids is None else vertex_ids
        return cls(model.v_template[keep].contiguous(), model.shapedirs[keep].contiguous(), model.posedirs[keep].contiguous(),
                   j_template, j_shapedirs, model.weights[keep].contiguous(), tuple(int(p) for p in model.parents))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.v_template, self.shapedirs, self.posedirs, self.J_template, self.J_shapedirs, self.weights)

    def to(self, dtype: torch.dtype, device: torch.device | str) -> SkinningModel:
        """A copy in ``dtype`` on ``device``, cached: layers call this every forward."""
        if self.v_template.dtype == dtype and self.v_template.device == torch.device(device):
            return self
        key = (dtype, str(device))
        if key not in self._casts:
            self._casts[key] = SkinningModel(*(t.to(dtype=dtype, device=device) for t in self.tensors()), self.parents)
        return self._casts[key]


def _check_pose(betas, pose, transl, model, name):
    if betas.dim() != 2:
        raise ValueError(f"{name}: betas must be [B, S], got {list(betas.shape)}")
    batch = betas.shape[0]
    if betas.shape[1] > model.shapedirs.shape[-1]:
        raise ValueError(f"{name}: betas has {betas.shape[1]} coefficients but the model only {model.shapedirs.shape[-1]}")
    if not (pose.shape == (batch, 16, 3) or pose.shape == (batch, 16, 3, 3)):
        raise ValueError(f"{name}: pose must be [B, 16, 3] axis-angle or [B, 16, 3, 3] matrices with B = {batch}, "
                         f"got {list(pose.shape)}")
    if transl is not None and transl.shape != (batch, 3):
        raise ValueError(f"{name}: transl must be [B, 3] with B = {batch}, got {list(transl.shape)}")


def mano_skinning(model: SkinningModel, betas: torch.Tensor, pose: torch.Tensor, transl: torch.Tensor | None = None,
                  keypoint_ids: tuple[int, ...] = ()):
    """MANO: shape blend, joints, Rodrigues, the chain, pose correctives and linear blend skinning in one op.

    Args:
        model: a :class:`SkinningModel` (cast to the dtype and device of ``betas``).
        betas: [B, S] with S <= the model's shape components, float32 or float64.
        pose: [B, 16, 3] axis-angle or [B, 16, 3, 3] rotation matrices, the root first.
        transl: [B, 3] or None.
        keypoint_ids: which points to gather as ``keypoints``: id < 16 a joint, else 16 + a vertex id.
    Returns:
        vertices [B, V, 3], keypoints [B, n, 3], joints [B, 16, 3] (MANO order), transforms [B, 16, 4, 4]
        (the relative A_k), transl added, equal to ``mano_skinning_reference``. Differentiable in betas,
        pose and transl; the model tensors are constants.
    """
    _check_pose(betas, pose, transl, model, "mano_skinning")
    m = model.to(betas.dtype, betas.device)
    return _mano_skinning_op(betas, pose.to(betas), None if transl is None else transl.to(betas), *m.tensors(),
                             list(m.parents), list(keypoint_ids))


def mano_keypoints_jacobian(model: SkinningModel, betas: torch.Tensor, pose: torch.Tensor, transl: torch.Tensor | None,
                            keypoint_ids: tuple[int, ...]):
    """keypoints [B, n, 3] and d keypoints / d pose [B, n, 3, 48] for an axis-angle pose [B, 16, 3] (analytic
    on the CPU). The translation's Jacobian is the identity and is not returned. Not differentiable."""
    _check_pose(betas, pose, transl, model, "mano_keypoints_jacobian")
    if pose.dim() != 3:
        raise ValueError(f"mano_keypoints_jacobian: pose must be [B, 16, 3] axis-angle, got {list(pose.shape)}")
    m = model.to(betas.dtype, betas.device)
    return torch.ops.handops.mano_keypoints_jacobian(betas, pose.to(betas), None if transl is None else transl.to(betas),
                                                     *m.tensors(), list(m.parents), list(keypoint_ids))


@torch.library.register_fake("handops::mano_skinning")
def _mano_skinning_fake(betas, pose, transl, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights, parents,
                        keypoint_ids):
    torch._check(betas.dim() == 2 and pose.dim() in (3, 4) and v_template.dim() == 2, lambda: "mano_skinning: bad ranks")
    torch._check(len(parents) == 16, lambda: "mano_skinning: parents must list 16 joints")
    batch = betas.shape[0]
    return (betas.new_empty(batch, v_template.shape[0], 3), betas.new_empty(batch, len(keypoint_ids), 3),
            betas.new_empty(batch, 16, 3), betas.new_empty(batch, 16, 4, 4))


@torch.library.register_fake("handops::mano_skinning_backward")
def _mano_skinning_backward_fake(grad_vertices, grad_keypoints, grad_joints, grad_transforms, betas, pose, *model_and_ids):
    return betas.new_empty(betas.shape), pose.new_empty(pose.shape), betas.new_empty(betas.shape[0], 3)


@torch.library.register_fake("handops::mano_keypoints_jacobian")
def _mano_keypoints_jacobian_fake(betas, pose, transl, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights,
                                  parents, keypoint_ids):
    torch._check(pose.dim() == 3, lambda: "mano_keypoints_jacobian: pose must be [B, 16, 3] axis-angle")
    batch, count = betas.shape[0], len(keypoint_ids)
    return betas.new_empty(batch, count, 3), betas.new_empty(batch, count, 3, 48)


def _setup_context(ctx, inputs, output):
    # The backward recomputes the forward from the inputs, so no output is saved; transl only adds.
    betas, pose, transl, *model, parents, keypoint_ids = inputs
    ctx.save_for_backward(betas, pose, *model)
    ctx.parents, ctx.keypoint_ids, ctx.has_transl = parents, keypoint_ids, transl is not None
    # Outputs that do not reach the loss keep a None gradient: the kernel skips their work (the vertex
    # sweep, on the joints-only path) instead of multiplying zeros.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_vertices, grad_keypoints, grad_joints, grad_transforms):
    betas, pose, *model = ctx.saved_tensors
    g_betas, g_pose, g_transl = torch.ops.handops.mano_skinning_backward(
        grad_vertices, grad_keypoints, grad_joints, grad_transforms, betas, pose, *model, ctx.parents, ctx.keypoint_ids)
    return (g_betas, g_pose, g_transl if ctx.has_transl else None) + (None,) * 8


_mano_skinning_op = register_autograd("mano_skinning", _backward, _setup_context)


def _reference_forward(betas, pose, transl, *model_and_ids):
    return tuple(t.contiguous() for t in mano_skinning_reference(betas, pose, transl, *model_and_ids))


def _reference_backward(grad_vertices, grad_keypoints, grad_joints, grad_transforms, betas, pose, *model_and_ids):
    with torch.enable_grad():
        inputs = [betas.detach().requires_grad_(True), pose.detach().requires_grad_(True),
                  betas.new_zeros(betas.shape[0], 3).requires_grad_(True)]
        outputs = mano_skinning_reference(*inputs, *model_and_ids)
        pairs = [(o, g) for o, g in zip(outputs, (grad_vertices, grad_keypoints, grad_joints, grad_transforms)) if g is not None]
        if not pairs:
            return tuple(torch.zeros_like(t) for t in inputs)
        grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
    return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs))


def _reference_jacobian(*args):
    with torch.no_grad():
        return tuple(t.contiguous() for t in mano_keypoints_jacobian_reference(*args))


_cuda_forward = register_backends("mano_skinning", _reference_forward, triton="mano_skinning")
_cuda_backward = register_backends("mano_skinning_backward", _reference_backward, triton="mano_skinning")
register_backends("mano_keypoints_jacobian", _reference_jacobian)  # no GPU kernel: CUDA runs the reference
