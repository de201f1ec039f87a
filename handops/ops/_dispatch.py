"""What the ops share for dispatch and autograd: the optional Triton modules, torch.func support and the
guard that turns a second derivative into an error."""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Callable

import torch


@functools.cache
def triton_module(name: str) -> ModuleType | None:
    """``handops._triton.<name>``, or None where triton is not installed (the op then runs its reference)."""
    try:
        return importlib.import_module(f"handops._triton.{name}")
    except ImportError:
        return None


class _FirstDerivativeOnly(torch.autograd.Function):
    """The identity on a backward's gradients; differentiating them raises.

    The backward ops have no derivative of their own, and without an autograd kernel PyTorch's fallback
    differentiates them as zero, so ``create_graph=True`` would give silently wrong second derivatives.
    """

    generate_vmap_rule = True  # the identity vmaps trivially; jacrev runs backwards under vmap

    @staticmethod
    def forward(op_name, *grads):
        return tuple(g.view_as(g) for g in grads)  # zero-copy new tensors, so that this node is recorded

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.op_name = inputs[0]

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(
            f"{ctx.op_name} has no second derivative: its backward is a fused kernel that autograd cannot "
            "differentiate. Use the reference in handops._reference for double backward (create_graph=True), "
            "or keep this op out of the differentiated part of the first gradient."
        )


def _first_derivative_only(op_name: str, grads: tuple) -> tuple:
    """``grads`` (tensors or None) from ``op_name``'s backward, made to raise if differentiated."""
    if not torch.is_grad_enabled():  # no create_graph: nothing will differentiate them
        return grads
    present = [g for g in grads if g is not None]
    wrapped = iter(_FirstDerivativeOnly.apply(op_name, *present))
    return tuple(None if g is None else next(wrapped) for g in grads)


def register_autograd(name: str, backward: Callable, setup_context: Callable) -> Callable:
    """``torch.library.register_autograd`` for ``handops::name``, plus two things it leaves out.

    A second derivative (``create_graph=True``, then differentiating the gradient) raises a RuntimeError
    naming the op instead of silently being zero. And torch.func transforms (``grad``, ``vjp``,
    ``jacrev``) work: the autograd.Function that torch.library builds has no ``setup_context``, which
    torch.func requires, so under a transform the returned callable applies an equivalent Function that
    has one (``backward`` then runs under ``vmap`` for ``jacrev``: the backward ops batch by PyTorch's
    per-sample loop). Returns the callable for the public functions: the op itself outside torch.func.
    """
    op_name = f"handops.{name}"
    op = getattr(torch.ops.handops, name).default

    def guarded_backward(ctx, *grads):
        return _first_derivative_only(op_name, backward(ctx, *grads))

    def no_jvp(ctx, *tangents):
        raise RuntimeError(f"{op_name} has no forward-mode derivative (jvp, jacfwd, hessian): use torch.func.jacrev or vjp")

    torch.library.register_autograd(f"handops::{name}", guarded_backward, setup_context=setup_context)
    function = type(f"{name}_function", (torch.autograd.Function,), {
        "forward": staticmethod(lambda *args: op(*args)),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(guarded_backward),
        "jvp": staticmethod(no_jvp),
        "generate_vmap_rule": True,
    })

    def call(*args):
        # The op itself unless a torch.func transform is active (torch.compile traces the op: its graphs
        # use the registered autograd, and dynamo cannot evaluate the interpreter stack to a constant).
        if torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is None:
            return op(*args)
        return function.apply(*args)

    return call
