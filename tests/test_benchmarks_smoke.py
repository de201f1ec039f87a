"""The benchmark harness runs end to end at tiny sizes: table, CSV rows and plot."""

import csv

from benchmarks import bench_tree_marginals


def test_tree_marginals_benchmark_smoke(tmp_path):
    csv_path, png_path = tmp_path / "tree.csv", tmp_path / "tree.png"
    tiny = ["--size", "12", "--kernel", "5", "--quick", "--csv", str(csv_path), "--plot", str(png_path)]
    table = bench_tree_marginals.run(["--batch-sizes", "1", "2"] + tiny)

    providers = list(bench_tree_marginals.PROVIDERS)
    for provider in providers:
        assert f"{provider} (ms)" in table
    assert "thesis_reference / handops" in table and "fft_levels / handops" in table

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(bench_tree_marginals.MODES) * len(providers)
    assert {r["provider"] for r in rows} == set(providers)
    assert {(r["B"], r["H"], r["kh"]) for r in rows} == {("1", "12", "5"), ("2", "12", "5")}
    assert all(float(r["median_ms"]) > 0 and int(r["repeats"]) >= 1 for r in rows)
    assert png_path.stat().st_size > 0

    # A second run appends to the same CSV under the same header.
    bench_tree_marginals.run(["--batch-sizes", "1", "--providers", "fft_levels"] + tiny)
    with open(csv_path, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows) + len(bench_tree_marginals.MODES)
