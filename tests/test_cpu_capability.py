"""The instruction-set dispatch of the C++ kernels (csrc/cpu/cpu_capability.h) and the build's portability.

The portable build compiles everything for AVX2 + FMA and the direct correlation of tree_marginals once
more per instruction set; the variant is chosen at load time (HANDOPS_CPU_CAPABILITY lowers it). All
variants add each output's terms in the same order with fused multiply-adds, so their results must be
bitwise equal; every other op runs the same (baseline) code whatever the variant.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import handops
from handops import _extension
from handops._reference.tree_marginals import tree_marginals_reference

pytestmark = pytest.mark.skipif(not handops.HAS_EXTENSION, reason="the C++ extension handops._C is not built")

ORDER = _extension.CPU_CAPABILITIES


def _expected_supported() -> str:
    """What /proc/cpuinfo says this CPU supports, in the extension's terms."""
    flags = _extension._cpu_flags()
    if flags is None or _extension.BUILD_INFO.get("cpu_capabilities") == ["default"]:
        pytest.skip("no /proc/cpuinfo, or a build without SIMD variants")
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq", "avx2", "fma"} <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "default"


def _available() -> list[str]:
    supported = _extension.cpu_capability()[1]
    return list(ORDER[: ORDER.index(supported) + 1])


@pytest.fixture
def restore_capability():
    before = _extension.cpu_capability()[0]
    yield
    _extension._set_cpu_capability(before)


def test_the_best_supported_variant_is_chosen():
    in_use, supported = _extension.cpu_capability()
    assert supported == _expected_supported()
    forced = os.environ.get("HANDOPS_CPU_CAPABILITY", "").lower()
    expected = forced if forced and ORDER.index(forced) < ORDER.index(supported) else supported
    assert in_use == expected
    config = handops.show_config(mode="dict")
    assert config["cpu"]["capability"] == in_use and config["cpu"]["supported"] == supported
    assert f"instruction set in use: {in_use}" in handops.show_config(mode="str")


def _peaked(batch, size, kernel, dtype, seed):
    """AGMN-like inputs: Gaussian heatmaps and kernels (messages through tiny, denormal-prone values)."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float64)
    centres = torch.rand(batch, 21, 2, generator=gen, dtype=torch.float64) * (size - 1)
    sigma = 1 + 1.5 * torch.rand(batch, 21, 1, 1, generator=gen, dtype=torch.float64)
    d2 = (coords[:, None] - centres[..., 0, None, None]) ** 2 + (coords[None, :] - centres[..., 1, None, None]) ** 2
    unary = torch.exp(-d2 / (2 * sigma**2))
    k = torch.arange(kernel, dtype=torch.float64) - kernel // 2
    offsets = (torch.rand(batch, 40, 2, generator=gen, dtype=torch.float64) - 0.5) * kernel / 2
    k2 = (k[:, None] - offsets[..., 0, None, None]) ** 2 + (k[None, :] - offsets[..., 1, None, None]) ** 2
    pairwise = torch.exp(-k2 / 8)
    return unary.to(dtype), pairwise.to(dtype)


def _random(batch, size, kernel, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 21, size, size, generator=gen, dtype=torch.float64).to(dtype),
            torch.rand(batch, 40, kernel, kernel, generator=gen, dtype=torch.float64).to(dtype))


# Sizes that exercise partial blocks of every variant (rows 4 and 6, columns 8 to 48), kernels larger
# than the map (the kernel adjoint's correlation) and the AGMN size.
CASES = [(_random, 2, 7, 5), (_random, 1, 13, 9), (_random, 2, 19, 25), (_peaked, 2, 46, 45), (_peaked, 1, 33, 45)]


def _forward_backward(make, batch, size, kernel, dtype, seed):
    unary, pairwise = make(batch, size, kernel, dtype, seed)
    unary.requires_grad_(), pairwise.requires_grad_()
    out = handops.tree_marginals(unary, pairwise, handops.hand_tree())
    weight = torch.rand(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64).to(dtype)
    (out * weight).sum().backward()
    return out.detach(), unary.grad, pairwise.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_variant_gives_bitwise_equal_results(dtype, restore_capability):
    available = _available()
    if len(available) < 2:
        pytest.skip("only one kernel variant runs on this CPU")
    for seed, (make, batch, size, kernel) in enumerate(CASES):
        results = {}
        for name in available:
            _extension._set_cpu_capability(name)
            results[name] = _forward_backward(make, batch, size, kernel, dtype, seed)
        best = available[-1]
        for name in available[:-1]:
            for a, b in zip(results[name], results[best]):
                assert torch.equal(a, b), f"{make.__name__} {size}x{size}, kernel {kernel}: {name} differs from {best}"


@pytest.mark.parametrize("name", ORDER)
def test_every_variant_agrees_with_the_reference(name, restore_capability):
    if name not in _available():
        pytest.skip(f"this CPU does not run {name}")
    _extension._set_cpu_capability(name)
    for seed, (make, batch, size, kernel) in enumerate(CASES[:3]):
        unary, pairwise = make(batch, size, kernel, torch.float64, seed)
        out = handops.tree_marginals(unary, pairwise, handops.hand_tree())
        expected = tree_marginals_reference(unary, pairwise[:, None], unary.new_ones(batch, 1), handops.hand_tree())[0]
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-12)


def test_denormals_are_flushed_only_inside_the_correlation():
    unary, pairwise = _peaked(1, 46, 45, torch.float32, 0)
    handops.tree_marginals(unary, pairwise, handops.hand_tree())
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 denormal
    assert (tiny * 1.0).item() != 0.0  # the MXCSR is restored after each correlation


def test_an_unsupported_or_unknown_variant_is_refused(restore_capability):
    with pytest.raises(ValueError, match="unknown CPU capability"):
        _extension._set_cpu_capability("sse2")
    if _extension.cpu_capability()[1] != "avx512":
        with pytest.raises(ValueError, match="does not support"):
            _extension._set_cpu_capability("avx512")


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    for key, value in env.items():
        if value is None:
            full.pop(key)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_the_environment_variable_forces_a_lower_variant():
    code = "import handops; from handops import _extension as e; print(e.cpu_capability()[0]); handops.show_config()"
    forced = _run(code, HANDOPS_CPU_CAPABILITY="AVX2")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines()[0] == "avx2"
    assert "instruction set in use: avx2" in forced.stdout and "HANDOPS_CPU_CAPABILITY=AVX2" in forced.stdout
    automatic = _run(code, HANDOPS_CPU_CAPABILITY=None)
    assert automatic.stdout.splitlines()[0] == _extension.cpu_capability()[1]
    wrong = _run("import handops", HANDOPS_CPU_CAPABILITY="avx-2")
    assert wrong.returncode != 0 and "HANDOPS_CPU_CAPABILITY='avx-2' is none of default, avx2, avx512" in wrong.stderr


# --- the binary: AVX-512 instructions only where the AVX-512 path runs -----------------------------

_LEGACY_PREFIXES = {"f0", "f2", "f3", "2e", "36", "3e", "26", "64", "65", "66", "67"}


def _evex_functions(path: str) -> dict[str, int]:
    """Function name -> number of EVEX-encoded (AVX-512) instructions, from objdump's disassembly."""
    listing = subprocess.run(["objdump", "-d", "-w", "-C", "--section=.text", path], capture_output=True, text=True,
                             check=True).stdout
    counts: dict[str, int] = {}
    function = None
    header = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    for line in listing.splitlines():
        match = header.match(line)
        if match:
            function = match.group(1)
            continue
        parts = line.split("\t")
        if function is None or len(parts) < 3:
            continue
        raw = parts[1].split()
        i = 0
        while i < len(raw) and raw[i] in _LEGACY_PREFIXES:
            i += 1
        if i < len(raw) and raw[i] == "62":  # EVEX (in 64-bit mode 0x62 is nothing else)
            counts[function] = counts.get(function, 0) + 1
    return counts


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_avx512_instructions_only_in_the_avx512_variant():
    """A portable build runs on AVX2 machines: no AVX-512 instruction outside handops::direct::cpu_avx512
    (an inline function or template compiled for AVX-512 and merged into shared code would break that)."""
    if _extension.BUILD_INFO.get("build") != "portable":
        pytest.skip(f"a {_extension.BUILD_INFO.get('build') or 'unrecorded'} build, not the portable one")
    counts = _evex_functions(_extension.EXTENSION_PATH)
    inside = {f: n for f, n in counts.items() if "cpu_avx512" in f}
    outside = {f: n for f, n in counts.items() if "cpu_avx512" not in f}
    assert inside, "the AVX-512 variant holds no AVX-512 instruction: is it compiled for AVX-512?"
    assert not outside, f"AVX-512 instructions outside the AVX-512 variant: {outside}"
