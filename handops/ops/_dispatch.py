"""What the ops share for dispatch: the optional Triton modules."""

from __future__ import annotations

import functools
import importlib
from types import ModuleType


@functools.cache
def triton_module(name: str) -> ModuleType | None:
    """``handops._triton.<name>``, or None where triton is not installed (the op then runs its reference)."""
    try:
        return importlib.import_module(f"handops._triton.{name}")
    except ImportError:
        return None
