"""``handops.show_config()``: what a bug report needs, in the spirit of ``torch.__config__.show()``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import platform
import sys

import torch

__all__ = ["config", "show_config"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _triton() -> tuple[bool, str]:
    try:
        import triton
    except Exception as error:  # noqa: BLE001 - any failure means the GPU kernels cannot run
        return False, f"not importable ({type(error).__name__}: {error})"
    return True, str(getattr(triton, "__version__", "unknown version"))


def _gpu_kernels(triton_ok: bool) -> dict[str, dict]:
    """Per handops._triton module: the ops it implements (OPS) and its Triton kernels (KERNELS)."""
    import handops._triton as package

    out = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")):
        if not triton_ok:
            out[module] = {"ops": None, "kernels": None, "error": "triton is not importable"}
            continue
        try:
            mod = importlib.import_module(f"handops._triton.{module}")
        except Exception as error:  # noqa: BLE001
            out[module] = {"ops": None, "kernels": None, "error": f"{type(error).__name__}: {error}"}
            continue
        kernels = [getattr(getattr(k, "fn", k), "__name__", str(k)) for k in getattr(mod, "KERNELS", ())]
        out[module] = {"ops": sorted(getattr(mod, "OPS", {})), "kernels": kernels, "error": None}
    return out


def config() -> dict:
    """Everything :func:`show_config` prints, as a dictionary."""
    import handops
    from handops import _extension

    capability = _extension.cpu_capability()
    openmp = None
    if _extension.HAS_EXTENSION:
        from handops import _C

        if hasattr(_C, "_openmp"):
            version, threads = _C._openmp()
            openmp = {"version": version, "max_threads": threads}
    triton_ok, triton_version = _triton()
    info = dict(_extension.BUILD_INFO)
    return {
        "handops": {"version": handops.__version__, "path": os.path.dirname(handops.__file__)},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": {
            "version": str(torch.__version__),
            "built_against": info.get("torch_version"),
            "cuda": torch.version.cuda,
            "path": os.path.dirname(torch.__file__),
        },
        "extension": {
            "loaded": _extension.HAS_EXTENSION,
            "path": _extension.EXTENSION_PATH,
            "why_not": getattr(_extension, "_NO_EXTENSION_REASON", None),
            "build": info.get("build"),
            "cxx_flags": info.get("cxx_flags"),
            "compiler": _extension.COMPILER,
            "cpu_capabilities": info.get("cpu_capabilities"),
        },
        "cpu": {
            "model": _cpu_model(),
            "capability": capability[0] if capability else None,
            "supported": capability[1] if capability else None,
            "HANDOPS_CPU_CAPABILITY": os.environ.get("HANDOPS_CPU_CAPABILITY"),
            "torch_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "threads": {
            "torch": torch.get_num_threads(),
            "openmp": openmp,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "triton": {"importable": triton_ok, "version": triton_version if triton_ok else None, "detail": triton_version},
        "cuda": {
            "available": torch.cuda.is_available(),
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [],
        },
        "gpu_kernels": _gpu_kernels(triton_ok),
    }


def _format(c: dict) -> str:
    ext, cpu, torch_ = c["extension"], c["cpu"], c["torch"]
    lines = [
        f"handops {c['handops']['version']} ({c['handops']['path']})",
        f"python {c['python']} on {c['platform']}",
        f"torch {torch_['version']} (CUDA {torch_['cuda']}), handops._C built against torch {torch_['built_against'] or 'unknown'}",
    ]
    if ext["loaded"]:
        lines.append(f"C++ extension: {ext['path']}")
    else:
        lines.append(f"C++ extension: not loaded ({ext['why_not']}): the CPU runs the pure-PyTorch references")
    if ext["build"] or ext["cxx_flags"]:
        lines.append(
            f"  build: {ext['build']}, flags {' '.join(ext['cxx_flags'] or [])}, compiler {ext['compiler'] or 'unknown'}, "
            f"kernel variants {', '.join(ext['cpu_capabilities'] or [])}"
        )
    lines.append(f"CPU: {cpu['model']}")
    if cpu["capability"]:
        forced = f", HANDOPS_CPU_CAPABILITY={cpu['HANDOPS_CPU_CAPABILITY']}" if cpu["HANDOPS_CPU_CAPABILITY"] else ""
        lines.append(f"  instruction set in use: {cpu['capability']} (this CPU supports {cpu['supported']}{forced}); torch's: {cpu['torch_capability']}")
    t = c["threads"]
    omp = t["openmp"]
    lines.append(
        f"threads: torch {t['torch']}, OpenMP "
        + (f"{omp['max_threads']} (OpenMP {omp['version']})" if omp else "n/a")
        + f", OMP_NUM_THREADS={t['OMP_NUM_THREADS'] or 'unset'}"
    )
    lines.append(f"triton: {c['triton']['version'] if c['triton']['importable'] else c['triton']['detail']}")
    cuda = c["cuda"]
    lines.append(f"CUDA available: {cuda['available']}" + (f" ({', '.join(cuda['devices'])})" if cuda["devices"] else ""))
    where = "run on CUDA tensors" if cuda["available"] and c["triton"]["importable"] else "would run on CUDA tensors (none here)"
    lines.append(f"GPU (Triton) kernels, by module ({where}):")
    for module, entry in c["gpu_kernels"].items():
        if entry["error"]:
            lines.append(f"  {module}: unavailable ({entry['error']}): CUDA tensors run the references")
        else:
            lines.append(f"  {module}: ops {', '.join(entry['ops'])}; {len(entry['kernels'])} kernels")
    return "\n".join(lines)


def show_config(mode: str = "stdout"):
    """Prints handops' configuration: paste it into bug reports.

    handops and torch versions, the torch the C++ extension was built against, its build flags, the
    instruction set its kernels use (``HANDOPS_CPU_CAPABILITY`` lowers it), the thread counts, whether
    triton is importable and which GPU (Triton) kernels are available.

    Args:
        mode: ``"stdout"`` prints the report; ``"str"`` returns it; ``"dict"`` returns :func:`config`.
    """
    if mode == "dict":
        return config()
    text = _format(config())
    if mode == "str":
        return text
    if mode != "stdout":
        raise ValueError(f"mode must be 'stdout', 'str' or 'dict', got {mode!r}")
    print(text)
    return None
