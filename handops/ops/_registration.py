"""The one way an op registers its backends besides the C++ kernel (which ``csrc/cpu`` registers itself).

For ``handops::<op>``:

* every device without a kernel of its own, and the CPU when the extension is not built: the
  reference (``handops/_reference``, the spec);
* CUDA: ``handops._triton.<module>.OPS[op]`` (each Triton module maps registered op names to
  functions taking the op's schema arguments), after the op's value ``check``; the reference where
  triton is not installed.

An op's autograd goes through :func:`handops.ops._dispatch.register_autograd`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from handops import _extension
from handops.ops._dispatch import triton_module

__all__ = ["register_backends"]


def register_backends(op: str, reference: Callable, triton: str | None = None, check: Callable | None = None) -> Callable:
    """Registers ``reference`` and the Triton kernel of ``handops::op`` (see the module docstring).

    Args:
        op: the registered name, e.g. ``"tree_marginals_backward"``.
        reference: a function of the op's schema arguments returning its outputs.
        triton: the ``handops._triton`` module holding ``OPS[op]``, or None for an op without GPU kernels.
        check: called with the schema arguments before the Triton kernel (the reference checks for itself).
    Returns:
        The CUDA function, as registered.
    """

    def cuda(*args):
        module = triton_module(triton) if triton is not None else None
        if module is None:
            return reference(*args)
        if check is not None:
            check(*args)
        return module.OPS[op](*args)

    torch.library.register_kernel(f"handops::{op}", None, reference)
    torch.library.register_kernel(f"handops::{op}", "cuda", cuda)
    if not _extension.HAS_EXTENSION:
        torch.library.register_kernel(f"handops::{op}", "cpu", reference)
    return cuda
