"""Ahead-of-time compilation of a handops Triton module for sm_80 and sm_90, shared by the Triton tests.

With TRITON_INTERPRET=1 (no GPU), triton.jit yields interpreter objects that ASTSource cannot lower,
so the compilation runs in a subprocess without it. The module must expose ``KERNELS`` and
``compile_specs(dtype, *sizes)`` yielding (kernel, signature, constexprs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except Exception as exc:  # the wheel without its NVIDIA backend
        print(json.dumps({"skip": f"triton NVIDIA backend not importable: {exc!r}"}))
        sys.exit(0)
    import importlib, torch, triton
    from triton.backends.compiler import GPUTarget

    module = importlib.import_module("handops._triton." + sys.argv[1])
    cases = json.loads(sys.argv[2])  # [[dtype name, size, ...], ...]
    compiled, seen = [], set()
    for capability in (80, 90):
        target = GPUTarget("cuda", capability, 32)
        for dtype_name, *sizes in cases:
            dtype = getattr(torch, dtype_name)
            for kernel, signature, constexprs in module.compile_specs(dtype, *sizes):
                key = (kernel.fn.__name__, capability, json.dumps(signature), json.dumps(constexprs))
                if key in seen:
                    continue
                seen.add(key)
                binary = triton.compile(triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs), target=target)
                compiled.append({
                    "kernel": kernel.fn.__name__, "sm": capability, "dtype": str(dtype),
                    "constexprs": constexprs, "ptx": len(binary.asm["ptx"]), "cubin": len(binary.asm["cubin"]),
                    "target_ok": f".target sm_{capability}" in binary.asm["ptx"],
                })
    print(json.dumps({"compiled": compiled, "kernels": [k.fn.__name__ for k in module.KERNELS]}))
    """
)


def compile_for_sm80_and_sm90(module: str, cases: list[list]) -> dict:
    """Compiles every spec of ``handops._triton.<module>`` for each case [dtype name, *sizes];
    returns {"compiled": [...], "kernels": [...]} after checking every binary has PTX and a cubin
    for its target. Skips the test where triton has no NVIDIA backend."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, module, json.dumps(cases)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    for c in result["compiled"]:
        assert c["ptx"] > 0 and c["cubin"] > 0 and c["target_ok"], c
    assert {c["sm"] for c in result["compiled"]} == {80, 90}
    return result
