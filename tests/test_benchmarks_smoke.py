"""The benchmark harness runs end to end at tiny sizes: table, CSV rows and plot; pytest-benchmark runs the same jobs."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import handops
from benchmarks import bench_edge_conv, bench_mano, bench_tree_marginals, harness


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
    # Every provider on every kind of input it is exact on: fft_levels on random inputs only.
    expected = {
        (p, f"{kind} {mode}")
        for p in providers
        for kind in bench_tree_marginals.EXACT_ON.get(p, bench_tree_marginals.INPUTS)
        for mode in bench_tree_marginals.PASSES
    }
    assert {(r["provider"], r["mode"]) for r in rows} == expected and len(rows) == len(expected)
    assert ("fft_levels", "peaked forward") not in expected
    assert {(r["B"], r["H"], r["W"], r["kh"], r["kw"]) for r in rows} == {("1", "12", "12", "5", "5")}
    assert all(float(r["median_ms"]) > 0 and int(r["repeats"]) >= 1 for r in rows)
    assert png_path.stat().st_size > 0

    # A second run appends to the same CSV under the same header.
    bench_tree_marginals.run(["--batch-sizes", "1", "--providers", "fft_levels"] + tiny)
    with open(csv_path, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows) + len(bench_tree_marginals.PASSES)


def test_edge_conv_benchmark_smoke(tmp_path):
    csv_path, png_path = tmp_path / "edge_conv.csv", tmp_path / "edge_conv.png"
    tiny = ["--batch-sizes", "1", "--size", "12", "--kernel", "5", "--heads", "1", "2", "--quick"]
    table = bench_edge_conv.run(tiny + ["--csv", str(csv_path), "--plot", str(png_path)])

    providers = list(bench_edge_conv.PROVIDERS)
    for provider in providers:
        assert f"{provider} (ms)" in table
    assert "literal_reference / handops" in table and "fft_alternative / handops" in table
    assert "1 head, weight [1, 61, 5, 5]" in table and "2 heads, weight [2, 61, 5, 5]" in table

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(bench_edge_conv.MODES) * len(providers)
    assert {(r["provider"], r["mode"], r["heads"]) for r in rows} == {
        (p, m, h) for p in providers for m in bench_edge_conv.MODES for h in ("1", "2")
    }
    assert {(r["op"], r["B"], r["H"], r["W"], r["kh"], r["kw"]) for r in rows} == {("edge_conv", "1", "12", "12", "5", "5")}
    assert all(float(r["median_ms"]) > 0 and int(r["repeats"]) >= 1 for r in rows)
    assert png_path.stat().st_size > 0


@pytest.mark.parametrize("heads", [1, 3])
def test_edge_conv_providers_agree(heads):
    """The three timed calls compute the same [B, Hd, K, H, W] result."""
    graph = handops.hand_graph()
    x = bench_edge_conv.make_heatmaps(2, 10, 10, graph).double()
    weight = bench_edge_conv.make_weights(heads, 5, graph).double()
    outputs = [provider(x, weight, graph) for provider in bench_edge_conv.PROVIDERS.values()]
    assert outputs[0].shape == (2, heads, 21, 10, 10)
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], rtol=1e-9, atol=1e-12)


def test_mano_benchmark_smoke(tmp_path):
    pytest.importorskip("smplx")
    csv_path, png_path = tmp_path / "mano.csv", tmp_path / "mano.png"
    tiny = ["--batch-sizes", "1", "3", "--quick", "--fit-images", "4", "--fit-iterations", "5", "2", "--lm-iterations", "2", "3"]
    table = bench_mano.run(tiny + ["--csv", str(csv_path), "--plot", str(png_path)])

    assert "handops (ms)" in table and "smplx (ms)" in table and "smplx / handops" in table
    assert "| 3 | joints_only |" in table and "Fitting 4 images" in table and "images / s" in table

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    timed = [r for r in rows if r["mode"] != "fit"]
    assert {(r["provider"], r["mode"]) for r in timed} == {
        (p, m) for p, modes in bench_mano.PROVIDER_MODES.items() for m in modes
    }
    assert len(timed) == 2 * 5 and {r["B"] for r in timed} == {"1", "3"}
    fits = {r["provider"]: r for r in rows if r["mode"] == "fit"}
    assert set(fits) == {"handops", "smplx", "handops_lm"}
    assert all(r["B"] == "4" and float(r["images_per_s"]) > 0 for r in fits.values())
    assert fits["handops"]["fit_steps"] == fits["smplx"]["fit_steps"] == "Adam 5+2" and fits["handops_lm"]["fit_steps"] == "LM 2+3"
    # Five Adam steps barely move the translation; Levenberg-Marquardt gets much closer in fewer iterations.
    assert float(fits["handops_lm"]["reprojection_px"]) < float(fits["handops"]["reprojection_px"])
    # Same energy, same start, same schedule: both fits reach the same error.
    assert float(fits["handops"]["reprojection_px"]) == pytest.approx(float(fits["smplx"]["reprojection_px"]), rel=1e-2)
    assert all(float(r["median_ms"]) > 0 and int(r["repeats"]) >= 1 for r in rows)
    assert png_path.stat().st_size > 0

    # --skip-fit appends layer timings only, under the same header.
    bench_mano.run(["--batch-sizes", "1", "--quick", "--skip-fit", "--providers", "smplx", "--csv", str(csv_path), "--plot", str(png_path)])
    with open(csv_path, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows) + 2


def test_mano_providers_agree():
    """smplx's 21 keypoints (16 joints and the fingertip vertices) are ManoLayer's joints; vertices agree too."""
    pytest.importorskip("smplx")
    ours, theirs, model = bench_mano.load_models()
    inputs = bench_mano.make_poses(3, model)
    with torch.no_grad():
        mine = ours(inputs["betas"], inputs["global_orient"], inputs["hand_pose"], inputs["transl"])
        keypoints = bench_mano.smplx_keypoints(theirs, model.fingertip_ids, **inputs)
        vertices = theirs(**inputs).vertices
    torch.testing.assert_close(keypoints, mine.joints, rtol=0, atol=1e-5)
    torch.testing.assert_close(vertices, mine.vertices, rtol=0, atol=1e-5)


def test_slow_call_is_timed_once():
    """A call whose warm-up reaches single_call_s is not repeated: the warm-up is the timing."""
    calls = []
    policy = harness.TimingPolicy(warmup_s=10.0, min_repeats=3, single_call_s=0.0)
    median_ms, repeats = harness.time_median(lambda: calls.append(1), torch.device("cpu"), policy)
    assert (len(calls), repeats) == (1, 1) and median_ms >= 0


@pytest.mark.parametrize(
    "how",
    [
        ["-m", "benchmarks.run_all"],
        ["benchmarks/run_all.py"],
        ["benchmarks/bench_tree_marginals.py"],
        ["benchmarks/bench_edge_conv.py"],
        ["benchmarks/bench_mano.py"],
    ],
)
def test_entry_points_start_as_module_and_script(how):
    """``python -m`` and ``python path.py`` both find the packages (--help measures nothing)."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, *how, "--help"], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout


def _pytest_benchmarks(*flags: str) -> subprocess.CompletedProcess:
    """``python -m pytest benchmarks <flags>`` from the repository root (no .pytest_cache written)."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", *flags]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_pytest_benchmark_collects_every_job_at_quick_sizes():
    """One test per (case, mode, provider) of each spec at its quick sizes: fft_levels on random inputs only."""
    ids = [line.split("[", 1)[1][:-1] for line in _pytest_benchmarks("--collect-only").stdout.splitlines()
           if line.startswith("benchmarks/test_benchmarks.py::test_op_benchmark[")]
    assert len(ids) == len(set(ids))
    by_op = {op: [i for i in ids if i.startswith(op + "-")] for op in ("tree_marginals", "edge_conv", "mano")}
    tree_providers, passes = list(bench_tree_marginals.PROVIDERS), bench_tree_marginals.PASSES
    assert len(by_op["tree_marginals"]) == len(passes) * (2 * len(tree_providers) - 1)  # B=1, peaked and random
    assert "tree_marginals-B=1_random-forward-fft_levels" in ids and "tree_marginals-B=1_peaked-forward-fft_levels" not in ids
    assert len(by_op["edge_conv"]) == len(bench_edge_conv.MODES) * len(bench_edge_conv.PROVIDERS)  # B=1, one head
    assert "edge_conv-1_head_B=1-forward+backward-literal_reference" in ids
    if importlib.util.find_spec("smplx") is not None:
        modes_per_batch = sum(len(modes) for modes in bench_mano.PROVIDER_MODES.values())
        assert len(by_op["mano"]) == 2 * modes_per_batch and "mano-B=64-joints_only-handops" in ids
        assert "mano-B=64-joints_only-smplx" not in ids
    assert len(ids) == sum(len(of_op) for of_op in by_op.values())


def test_pytest_benchmark_times_and_groups_by_op_case_mode(tmp_path):
    """Under --benchmark-only each job is timed and grouped by op, case and mode, with its sizes in extra_info."""
    report = tmp_path / "benchmarks.json"
    _pytest_benchmarks("--benchmark-only", "-k", "edge_conv and handops", "--benchmark-json", str(report),
                       "--benchmark-min-rounds", "1", "--benchmark-max-time", "0.001")
    timed = json.loads(report.read_text())["benchmarks"]
    assert {b["group"] for b in timed} == {"edge_conv 1 head B=1 forward", "edge_conv 1 head B=1 forward+backward"}
    assert all(b["stats"]["min"] > 0 for b in timed)
    assert {(b["extra_info"]["provider"], b["extra_info"]["heads"], b["extra_info"]["H"]) for b in timed} == {("handops", 1, 46)}
