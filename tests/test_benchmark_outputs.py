"""Where the benchmarks write: an untracked output folder, and the README's docs/ only with --update-docs.

The main job must leave a checkout's ``git status`` as it found it.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_tree_marginals, harness

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch-sizes", "1", "--size", "12", "--kernel", "5", "--quick", "--providers", "handops", "direct_levels"]
needs_git = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(harness.OUT_ENV, raising=False)
    monkeypatch.delenv(harness.UPDATE_DOCS_ENV, raising=False)


def test_default_output_is_a_folder_under_the_working_directory(tmp_path, monkeypatch, clean_env):
    monkeypatch.chdir(tmp_path)
    assert harness.output_dir() == tmp_path / "handops-bench-results"
    assert harness.RESULTS_DIR == tmp_path / "handops-bench-results"  # the old name, for older modules
    monkeypatch.setenv(harness.OUT_ENV, str(tmp_path / "elsewhere"))
    assert harness.output_dir() == tmp_path / "elsewhere"
    assert harness.output_dir(tmp_path / "given") == tmp_path / "given"

    table = bench_tree_marginals.run(TINY)
    assert "handops (ms)" in table
    out = tmp_path / "elsewhere"
    assert (out / "tree_marginals.png").stat().st_size > 0
    with open(out / "tree_marginals.csv", newline="") as f:
        assert {r["provider"] for r in csv.DictReader(f)} == {"handops", "direct_levels"}
    bench_tree_marginals.run(TINY + ["--out", str(tmp_path / "given")])
    assert (tmp_path / "given" / "tree_marginals.csv").exists()


def test_update_docs_writes_the_readme_figure_and_the_tracked_record(tmp_path, monkeypatch, clean_env):
    docs, record = tmp_path / "docs", tmp_path / "results"
    docs.mkdir(), record.mkdir()
    monkeypatch.setattr(harness, "DOCS_DIR", docs)
    monkeypatch.setattr(harness, "TRACKED_RESULTS_DIR", record)
    bench_tree_marginals.run(TINY + ["--out", str(tmp_path / "out")])
    assert not any(docs.iterdir()) and not any(record.iterdir())  # not without --update-docs
    bench_tree_marginals.run(TINY + ["--out", str(tmp_path / "out"), "--update-docs"])
    assert (docs / "tree_marginals_benchmark.png").read_bytes() == (tmp_path / "out" / "tree_marginals.png").read_bytes()
    with open(record / "tree_marginals.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2 * len(bench_tree_marginals.PASSES) * len(bench_tree_marginals.INPUTS)


@needs_git
def test_the_output_folder_and_the_build_record_are_ignored_by_git():
    for path in ("handops-bench-results/tree_marginals.csv", "benchmarks/handops-bench-results/x.png", "handops/_build_info.py"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


@needs_git
def test_the_main_job_leaves_git_status_unchanged(tmp_path):
    """python -m benchmarks.run_all from the checkout's root, its default output folder included."""
    before = _git_status()
    env = {k: v for k, v in os.environ.items() if k not in (harness.OUT_ENV, harness.UPDATE_DOCS_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = ROOT / "handops-bench-results"
    existed = out.exists()
    try:
        result = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--quick", "--only", "synthetic_data"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "| fresh | 200 |" in result.stdout and str(out) in result.stdout
        assert (out / "synthetic_data.csv").exists()
        assert _git_status() == before
    finally:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
