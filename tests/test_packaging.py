"""handops as a dependency: the sdist holds everything a build needs, and installs and runs elsewhere.

``test_sdist_installs_into_a_fresh_venv_and_runs`` does what a user does: a fresh virtual environment
with only torch==2.13.0 (and the build tools setuptools, wheel and ninja, since the build is not
isolated), ``pip install --no-build-isolation <the sdist>``, then every op from a folder outside the
checkout against its reference. It builds the whole extension once more (a few minutes on two cores),
so it is marked slow; CI runs it (``python -m pytest`` selects every test).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the CPU wheel on this machine's disk (an unpinned torch is a CUDA download)


def _build_sdist(out: Path) -> Path:
    """The sdist, built by setuptools' PEP 517 backend in a clean copy of nothing but the checkout's
    tracked and untracked-but-not-ignored files (what ``python -m build --sdist --no-isolation`` does)."""
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    env = dict(os.environ, HANDOPS_NO_EXTENSION="1")  # an sdist needs no torch
    name = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out / name.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    return _build_sdist(tmp_path_factory.mktemp("sdist"))


def test_sdist_holds_every_source_and_header_and_no_build_output(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    tracked = subprocess.run(["git", "ls-files", "csrc"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    on_disk = [str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*") if p.suffix in (".h", ".cpp")]
    assert set(tracked) | set(on_disk) <= names, sorted((set(tracked) | set(on_disk)) - names)
    for needed in ("setup.py", "pyproject.toml", "README.md", "handops/__init__.py", "handops/_triton/_common.py",
                   "handops_models/__init__.py", "csrc/cpu/tree_schedule.h", "csrc/cpu/lane_fft.h"):
        assert needed in names
    leftovers = [n for n in names if n.endswith((".so", ".o", ".pyc")) or n.endswith("_build_info.py")]
    assert not leftovers


CHECK_OPS = textwrap.dedent(
    """
    import sys
    import torch
    import handops
    from handops._reference.edge_conv import edge_conv_reference
    from handops._reference.mano import mano_skinning_reference
    from handops._reference.tree_marginals import tree_map_reference, tree_marginals_reference
    from handops.ops.mano_skinning import SkinningModel, mano_skinning

    assert handops.HAS_EXTENSION, "the extension did not load"
    assert "site-packages" in handops.__file__, handops.__file__
    handops.show_config()
    gen = torch.Generator().manual_seed(0)
    tree = handops.hand_tree()
    unary = torch.rand(2, 21, 12, 12, generator=gen, dtype=torch.float64)
    pairwise = torch.rand(2, 40, 7, 7, generator=gen, dtype=torch.float64)
    out = handops.tree_marginals(unary, pairwise, tree)
    expected = tree_marginals_reference(unary, pairwise[:, None], unary.new_ones(2, 1), tree)[0]
    torch.testing.assert_close(out, expected)
    max_marginals, config = handops.tree_map(unary, pairwise, tree)
    ref_max, ref_config = tree_map_reference(unary, pairwise, tree)
    torch.testing.assert_close(max_marginals, ref_max)
    assert torch.equal(config, ref_config)
    graph = handops.hand_graph()
    weight = torch.randn(2, graph.num_edges, 5, 5, generator=gen, dtype=torch.float64)
    bias = torch.randn(2, graph.num_edges, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(handops.edge_conv(unary, weight, graph, bias), edge_conv_reference(unary, weight, bias, graph))
    model = SkinningModel.from_mano(handops.mano.synthetic_model(0)).to(torch.float64, "cpu")
    betas = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    pose = 0.3 * torch.randn(3, 16, 3, generator=gen, dtype=torch.float64)
    transl = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    keypoints = (0, 5, 16 + 100)
    got = mano_skinning(model, betas, pose, transl, keypoints)
    ref = mano_skinning_reference(betas, pose, transl, *model.tensors(), list(model.parents), list(keypoints))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)
    print("ops ok:", handops.show_config(mode="dict")["cpu"]["capability"])
    """
)


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow  # a fresh venv with torch (~30 s) and a full build of the extension (a few minutes)
def test_sdist_installs_into_a_fresh_venv_and_runs(sdist, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", HANDOPS_NO_EXTENSION="0")
    env.pop("HANDOPS_NATIVE", None)
    env.pop("HANDOPS_CPU_CAPABILITY", None)
    _run([python, "-m", "pip", "install", "-q", TORCH, "setuptools", "wheel", "ninja"], env=env, cwd=tmp_path)
    _run([python, "-m", "pip", "install", "-q", "--no-cache-dir", "--no-build-isolation", str(sdist)], env=env, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "check_ops.py").write_text(CHECK_OPS)
    result = _run([python, "check_ops.py"], env=env, cwd=elsewhere)
    assert "ops ok:" in result.stdout
    forced = _run([python, "check_ops.py"], env=dict(env, HANDOPS_CPU_CAPABILITY="avx2"), cwd=elsewhere)
    assert "ops ok: avx2" in forced.stdout or "ops ok: default" in forced.stdout
