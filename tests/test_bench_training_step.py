"""The training-step benchmark: a smoke run at tiny sizes (table, CSV rows, plot), and the in-step timer of
the structured part (it brackets exactly the structured call's backward)."""

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import bench_training_step as bench
from benchmarks import harness


def test_training_step_benchmark_smoke(tmp_path, monkeypatch):
    """Tiny configs at B=2, one timed step each; R-MGMN's thesis-style step (20 tree models, message by
    message: tens of seconds even at tiny size on a loaded CPU) is skipped. With --update-docs the rows
    also go to the tracked record and the plot to the README's figure (both redirected here)."""
    docs, record, out = tmp_path / "docs", tmp_path / "results", tmp_path / "out"
    monkeypatch.setattr(harness, "DOCS_DIR", docs)
    monkeypatch.setattr(harness, "TRACKED_RESULTS_DIR", record)
    docs.mkdir()
    csv_path, png_path = out / "training_step.csv", out / "training_step.png"
    argv = ["--configs", "tiny", "--tiny-batch", "2", "--quick", "--skip", "rmgmn:tiny:reference",
            "--out", str(out), "--update-docs"]
    table = bench.run(argv)

    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == bench.HEADER
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert list(rows) == ["AGMN", "R-MGMN", "SiaPose (10 heads, CPM)"]
    ratio = header.index("thesis-style / handops")
    for name in ("AGMN", "SiaPose (10 heads, CPM)"):
        cells = rows[name]
        assert cells[1:3] == ["tiny", "2"]
        assert float(cells[ratio]) > 0  # numeric
        assert float(cells[3].replace(",", "")) > 0 and float(cells[4].replace(",", "")) > 0
        for share in cells[6:8]:
            assert 0 < float(share.split("%")[0]) < 100
        assert cells[8] == "1 / 1"
    rmgmn = rows["R-MGMN"]
    assert rmgmn[4] == "skipped (--skip)" and rmgmn[ratio] == "-" and rmgmn[8] == "1 / -"
    assert float(rmgmn[3].replace(",", "")) > 0

    with open(csv_path, newline="") as f:
        written = list(csv.DictReader(f))
    assert {(r["model"], r["provider"]) for r in written} == {
        ("agmn", "handops"), ("agmn", "reference"), ("rmgmn", "handops"), ("siapose", "handops"), ("siapose", "reference")}
    assert all(r["op"] == "training_step" and r["config"] == "tiny" and r["B"] == "2" and r["repeats"] == "1"
               for r in written)
    assert all(float(r["median_ms"]) > float(r["structured_ms"]) > 0 for r in written)
    assert png_path.stat().st_size > 0
    assert (docs / "training_step_benchmark.png").read_bytes() == png_path.read_bytes()
    with open(record / "training_step.csv", newline="") as f:
        published = list(csv.DictReader(f))
    assert [{k: v for k, v in r.items() if k != "timestamp"} for r in published] == [
        {k: v for k, v in r.items() if k != "timestamp"} for r in written]  # stamped when each file is written


class _Sleep(torch.autograd.Function):
    """x * 2 whose backward sleeps ``seconds``."""

    @staticmethod
    def forward(ctx, x, seconds):
        ctx.seconds = seconds
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        time.sleep(ctx.seconds)
        return grad * 2, None


def test_structured_timer_brackets_only_the_calls_backward():
    """Backward nodes made before the call (also on a branch that skips it) and after it run outside the
    interval the markers time: only the call's own 0.05 s is counted, not the 0.3 s sleeps around it."""
    timer = bench.StructuredTimer()
    structured = bench._timed(lambda x, w: _Sleep.apply(x, 0.05) * w, timer)
    x = torch.rand(3, requires_grad=True)
    w = torch.rand(3, requires_grad=True)
    before = _Sleep.apply(x, 0.3)
    side = _Sleep.apply(x, 0.3)  # made before the call, feeds the loss directly
    out = structured(before, w)
    after = _Sleep.apply(out, 0.3) + _Sleep.apply(x, 0.3)  # the second: made after the call, independent of it
    (after.sum() + side.sum()).backward()
    assert timer.calls == timer.backward_calls == 1
    assert 0.05 <= timer.backward_s < 0.3

    # The markers are identities: same values and gradients as the bare call.
    x2, w2 = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    (_Sleep.apply(x2, 0.0) * w2 * torch.arange(3.0)).sum().backward()
    x3, w3 = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    timed = bench._timed(lambda a, b: _Sleep.apply(a, 0.0) * b, bench.StructuredTimer())
    (timed(x3, w3) * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x3.grad, x2.grad)
    torch.testing.assert_close(w3.grad, w2.grad)


def test_timing_structured_calls_patches_the_networks_and_restores():
    from handops_models.nets import agmn, rmgmn, siapose, structured

    with bench.timing_structured_calls(bench.StructuredTimer()):
        assert agmn.tree_marginals is not structured.tree_marginals
        assert rmgmn.tree_marginals is not structured.tree_marginals
        assert siapose.edge_conv is not structured.edge_conv
    assert agmn.tree_marginals is structured.tree_marginals and rmgmn.tree_marginals is structured.tree_marginals
    assert siapose.edge_conv is structured.edge_conv


def test_repeats_policy():
    args = bench.parse_args([])
    assert bench.repeats_for(100.0, args) == 1 and bench.repeats_for(0.001, args) == args.max_repeats
    assert bench.repeats_for(4.0, bench.parse_args(["--budget-s", "12"])) == 3
    assert bench.repeats_for(100.0, bench.parse_args(["--repeats", "5"])) == 5
    assert bench.parse_args(["--quick"]).repeats == 1
    with pytest.raises(SystemExit):
        bench.parse_args(["--skip", "agmn:huge:reference"])


@pytest.mark.parametrize("how", [["-m", "benchmarks.bench_training_step"], ["benchmarks/bench_training_step.py"]])
def test_entry_points(how):
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, *how, "--help"], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout
