"""The benchmark harness runs end to end at tiny sizes: table, CSV rows and plot."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_tree_marginals


def test_tree_marginals_benchmark_smoke(tmp_path):
    csv_path, png_path = tmp_path / "tree.csv", tmp_path / "tree.png"
    tiny = ["--size", "12", "--kernel", "5", "--quick", "--csv", str(csv_path), "--plot", str(png_path)]
    table = bench_tree_marginals.run(["--batch-sizes", "1"] + tiny)

    providers = list(bench_tree_marginals.PROVIDERS)
    for provider in providers:
        assert f"{provider} (ms)" in table
    assert "thesis_reference / handops" in table and "fft_levels / handops" in table

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(bench_tree_marginals.MODES) * len(providers)
    assert {r["provider"] for r in rows} == set(providers)
    assert {(r["B"], r["H"], r["W"], r["kh"], r["kw"]) for r in rows} == {("1", "12", "12", "5", "5")}
    assert all(float(r["median_ms"]) > 0 and int(r["repeats"]) >= 1 for r in rows)
    assert png_path.stat().st_size > 0

    # A second run appends to the same CSV under the same header.
    bench_tree_marginals.run(["--batch-sizes", "1", "--providers", "fft_levels"] + tiny)
    with open(csv_path, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows) + len(bench_tree_marginals.MODES)


@pytest.mark.parametrize(
    "how", [["-m", "benchmarks.run_all"], ["benchmarks/run_all.py"], ["benchmarks/bench_tree_marginals.py"]]
)
def test_entry_points_start_as_module_and_script(how):
    """``python -m`` and ``python path.py`` both find the packages (--help measures nothing)."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, *how, "--help"], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout
