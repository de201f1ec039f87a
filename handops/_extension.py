"""Loads the compiled extension ``handops._C``, or declares the op schemas from Python without it.

``handops._C`` (built from ``csrc/``) declares every schema in one ``TORCH_LIBRARY(handops, m)``
block and registers the C++ CPU kernels. Without it (``HANDOPS_NO_EXTENSION=1`` at install time, or a
failed build; or ``HANDOPS_NO_EXTENSION=1`` at run time, which skips loading a built one) the same
schemas are declared here and the ops run their pure-PyTorch references, after one warning.

An extension that exists but cannot run here is an ImportError that says what to do, raised before
the loader sees it where that can be known: built against another torch (setup.py records the
version in ``handops/_build_info.py``), a portable build on a CPU without AVX2 and FMA, an unknown
``HANDOPS_CPU_CAPABILITY``; and any other failure of the loader itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings

import torch

__all__ = ["HAS_EXTENSION", "SCHEMAS", "BUILD_INFO", "COMPILER", "EXTENSION_PATH", "CPU_CAPABILITIES", "cpu_capability"]

CPU_CAPABILITIES = ("default", "avx2", "avx512")  # csrc/cpu/cpu_capability.h, lowest first
REBUILD = "pip install --no-build-isolation -e .  (from a checkout; for an sdist: pip install --no-build-isolation --force-reinstall --no-deps <the sdist>)"

# Must match csrc/handops.cpp exactly (tests/test_tree_marginals.py::test_python_schemas_match_the_extension compares them).
SCHEMAS = {
    "tree_marginals": "tree_marginals(Tensor unary, Tensor pairwise, Tensor weights, int[] messages, int[] level_sizes) -> (Tensor, Tensor, Tensor)",
    "tree_marginals_backward": (
        "tree_marginals_backward(Tensor grad, Tensor unary, Tensor pairwise, Tensor weights, Tensor messages, Tensor scales, "
        "int[] messages_schedule, int[] level_sizes) -> (Tensor, Tensor, Tensor)"
    ),
    "tree_map": "tree_map(Tensor unary, Tensor pairwise, int[] messages, int[] level_sizes) -> (Tensor, Tensor)",
    "edge_conv": "edge_conv(Tensor x, Tensor weight, Tensor? bias, int[] edges) -> Tensor",
    "edge_conv_backward": "edge_conv_backward(Tensor grad, Tensor x, Tensor weight, int[] edges) -> (Tensor, Tensor, Tensor)",
    "mano_skinning": (
        "mano_skinning(Tensor betas, Tensor pose, Tensor? transl, Tensor v_template, Tensor shapedirs, Tensor posedirs, Tensor J_template, "
        "Tensor J_shapedirs, Tensor weights, int[] parents, int[] keypoint_ids) -> (Tensor, Tensor, Tensor, Tensor)"
    ),
    "mano_skinning_backward": (
        "mano_skinning_backward(Tensor? grad_vertices, Tensor? grad_keypoints, Tensor? grad_joints, Tensor? grad_transforms, Tensor betas, Tensor pose, Tensor v_template, "
        "Tensor shapedirs, Tensor posedirs, Tensor J_template, Tensor J_shapedirs, Tensor weights, int[] parents, int[] keypoint_ids) -> (Tensor, Tensor, Tensor)"
    ),
    "mano_keypoints_jacobian": (
        "mano_keypoints_jacobian(Tensor betas, Tensor pose, Tensor? transl, Tensor v_template, Tensor shapedirs, Tensor posedirs, "
        "Tensor J_template, Tensor J_shapedirs, Tensor weights, int[] parents, int[] keypoint_ids) -> (Tensor, Tensor)"
    ),
}


def _find_extension() -> str | None:
    """The path of the built extension, or None where there is none (or a test blocked it)."""
    if "handops._C" in sys.modules and sys.modules["handops._C"] is None:  # as if never built
        return None
    try:
        spec = importlib.util.find_spec("handops._C")
    except (ImportError, ValueError):
        return None
    return None if spec is None else (spec.origin or "handops._C")


def _recorded_build_info() -> dict | None:
    """What setup.py recorded beside the extension (handops/_build_info.py), or None for an older build."""
    try:
        from handops._build_info import BUILD_INFO as info
    except ImportError:
        return None
    return dict(info)


def torch_mismatch_message(built: str, running: str, path: str) -> str:
    public = built.split("+")[0]
    return (
        f"handops: the C++ extension {path} was built against torch {built}, but torch {running} is "
        "imported, and an extension only runs with the torch it was built against. Either install the "
        f'torch it was built for (pip install "torch=={public}"'
        + (f", the {built.split('+', 1)[1]} build" if "+" in built else "")
        + f"), or rebuild handops against this torch: {REBUILD}. Build with --no-build-isolation: an "
        "isolated build compiles against whatever torch pip downloads into it."
    )


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux), or None where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _check_before_loading(path: str, info: dict | None) -> None:
    if info is not None and info.get("torch_version") and info["torch_version"] != str(torch.__version__):
        raise ImportError(torch_mismatch_message(info["torch_version"], str(torch.__version__), path))
    if info is not None and info.get("build") == "portable":
        flags = _cpu_flags()
        if flags is not None and not {"avx2", "fma"} <= flags:
            raise ImportError(
                f"handops: the C++ extension {path} is a portable build, which needs a CPU with AVX2 and FMA; "
                "this one lacks them. Rebuild for this machine (HANDOPS_NATIVE=1 pip install --no-build-isolation "
                "-e .), or set HANDOPS_NO_EXTENSION=1 to run the pure-PyTorch references."
            )
    requested = os.environ.get("HANDOPS_CPU_CAPABILITY", "")
    if requested and requested.lower() not in CPU_CAPABILITIES:
        raise ImportError(f"handops: HANDOPS_CPU_CAPABILITY={requested!r} is none of {', '.join(CPU_CAPABILITIES)}")


def _load():
    """(HAS_EXTENSION, BUILD_INFO, COMPILER, EXTENSION_PATH, why there is no extension or None)."""
    path = _find_extension()
    reason = None
    if os.environ.get("HANDOPS_NO_EXTENSION", "0") == "1":
        reason = "HANDOPS_NO_EXTENSION=1 is set"
    elif path is None:
        reason = "handops._C was not built"
    if reason is not None:
        info = _recorded_build_info() if path is not None else None
        return False, info or {}, None, path, reason
    info = _recorded_build_info()
    _check_before_loading(path, info)
    try:
        from handops import _C
    except (ImportError, OSError) as error:
        raise ImportError(
            f"handops: the C++ extension {path} exists but failed to load: {error}\n"
            f"It was built against torch {(info or {}).get('torch_version', '(not recorded: an older build)')}; "
            f"torch {torch.__version__} is imported. Rebuild it: {REBUILD}. "
            "Or set HANDOPS_NO_EXTENSION=1 to run the pure-PyTorch references instead (much slower). "
            "handops.show_config() (with HANDOPS_NO_EXTENSION=1) prints what a bug report needs."
        ) from error
    built_json, compiler = _C._build_info() if hasattr(_C, "_build_info") else ("{}", None)
    built = json.loads(built_json) or info or {}
    if built.get("torch_version") and built["torch_version"] != str(torch.__version__):
        raise ImportError(torch_mismatch_message(built["torch_version"], str(torch.__version__), path))
    return True, built, compiler, path, None


HAS_EXTENSION, BUILD_INFO, COMPILER, EXTENSION_PATH, _NO_EXTENSION_REASON = _load()

if not HAS_EXTENSION:
    _lib = torch.library.Library("handops", "DEF")
    for _schema in SCHEMAS.values():
        _lib.define(_schema)
    warnings.warn(
        f"handops: the C++ extension is not available ({_NO_EXTENSION_REASON}); every op runs its pure-PyTorch "
        "reference on the CPU, which is much slower. "
        + ("Unset HANDOPS_NO_EXTENSION to load it." if EXTENSION_PATH else "Reinstall without HANDOPS_NO_EXTENSION=1 to build it."),
        RuntimeWarning,
        stacklevel=2,
    )


def cpu_capability() -> tuple[str, str] | None:
    """(the instruction set the C++ kernels use, the best this CPU supports), e.g. ("avx2", "avx512"); None without the extension."""
    if not HAS_EXTENSION:
        return None
    from handops import _C

    return tuple(_C._cpu_capability()) if hasattr(_C, "_cpu_capability") else None


def _set_cpu_capability(name: str) -> None:
    """Selects the kernel variant for this process (tests; users set HANDOPS_CPU_CAPABILITY before import)."""
    from handops import _C

    _C._set_cpu_capability(name)
