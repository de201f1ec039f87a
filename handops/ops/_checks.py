"""Argument checks every public op shares: tensor kind, dtype and rank, and the value checks of the kernels."""

from __future__ import annotations

import os

import torch

__all__ = ["FLOAT_DTYPES", "describe", "check_tensor", "check_values"]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def describe(t: torch.Tensor) -> str:
    """``shape [..], dtype .., device ..``: the tail of every error message about a tensor."""
    return f"shape {list(t.shape)}, dtype {t.dtype}, device {t.device}"


def check_tensor(name: str, t, ranks: tuple[int, ...]) -> None:
    """A floating-point torch.Tensor of one of ``ranks`` dimensions, else a TypeError/ValueError naming it."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.dim() not in ranks:
        wanted = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{name} must be {wanted}, got {describe(t)}")


def check_values(**tensors: torch.Tensor) -> None:
    """Every entry non-negative and finite, else an error naming the tensor (the C++ kernels' own check).

    Off CUDA a ValueError says what was wrong. On CUDA reading the answer back would synchronise with
    the host on every call and break CUDA graph capture, so unless the environment sets
    ``HANDOPS_SYNC_CHECKS=1`` (read per call) one fused test per tensor is queued with
    ``torch._assert_async`` instead: no sync, capturable, and bad input fails as a device-side assert at
    the next synchronisation (which ends the CUDA context; rerun with ``HANDOPS_SYNC_CHECKS=1`` for the
    ValueError).
    """
    for name, t in tensors.items():
        if not t.numel():
            continue
        if t.is_cuda and os.environ.get("HANDOPS_SYNC_CHECKS") != "1":
            torch._assert_async((torch.isfinite(t) & (t >= 0)).all(), f"handops: {name} must be finite and non-negative")
            continue
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} must be finite, but it holds NaN or Inf entries ({describe(t)})")
        if bool((t < 0).any()):
            raise ValueError(f"{name} must be non-negative, but its minimum is {t.min().item():.4g} ({describe(t)})")
