"""The compare_2d study: its verdicts on made-up scores, and a smoke run of its whole pipeline."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from handops_models.experiments import compare_2d as study


def _scores(pck: torch.Tensor, thresholds: tuple) -> dict:
    return {"label": "x", "scores": pck[None, :, None].expand(1, -1, len(thresholds)).clone()}


def test_verdicts_follow_the_paired_interval():
    """Three made-up comparisons on 200 test images: a structured model better by 5 points on every image
    "reproduces", one worse by 5 points is "contradicted", one that differs by noise is "not resolved".
    Rules out an unpaired interval (the per-image spread of 0-100% would straddle 0 in the first two) and a
    verdict read from the point estimate alone."""
    thresholds = tuple(sorted(set(study.TABLE_THRESHOLDS) | set(study.COARSE_THRESHOLDS) | set(study.CURVE_THRESHOLDS)))
    g = torch.Generator().manual_seed(0)
    base = torch.rand(200, generator=g) * 0.9
    per_row = {
        "cpm": _scores(base, thresholds),
        "agmn": _scores(base + 0.05, thresholds),
        "rmgmn": _scores(base - 0.05, thresholds),
        "siapose10": _scores((base + 0.03 * torch.randn(200, generator=g)).clamp(0, 1), thresholds),
    }
    args = SimpleNamespace(bootstrap=500, seeds=[0])
    results = study._summaries(per_row, thresholds, args)
    verdicts = {c["structured"]: c for c in results["claims"]}
    assert set(verdicts) == {"agmn", "rmgmn", "siapose10"}  # the claims whose two rows exist
    assert verdicts["agmn"]["verdict"] == "reproduces" and verdicts["agmn"]["difference"] == pytest.approx(0.05)
    assert verdicts["rmgmn"]["verdict"] == "contradicted"
    assert verdicts["siapose10"]["verdict"] == "not resolved"
    low, high = results["rows"]["cpm"]["mpck_coarse_interval"]
    assert low < results["rows"]["cpm"]["mpck_coarse"] < high


def test_smoke_run_writes_tables_plots_and_reuses_finished_runs(tmp_path):
    """The whole pipeline on four networks for two steps each: every row evaluated on the test split, the
    Table 4.1 and 5.2 layouts and the claims written, PNGs written, and a second call trains nothing again
    (rules out retraining finished runs, which would double a 2-hour study after an interruption)."""
    out = tmp_path / "study"
    argv = ["--out", str(out), "--smoke", "--models", "cpm", "agmn", "siapose1", "sharedgcn", "--docs", str(tmp_path / "docs")]
    assert study.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["rows"]) == {"cpm", "agmn", "siapose1", "sharedgcn"}  # AGMN's stage rows: no stage finished
    assert all(r["num_images"] == 24 for r in results["rows"].values())
    claims = {c["claim"] for c in results["claims"]}
    assert claims == {"AGMN > CPM (Table 4.1)", "edge-aware > SharedWeight GCN (1 head each)"}
    tables = (out / "tables.md").read_text()
    assert "Table 4.1 layout" in tables and "Table 5.2 layout" in tables and "| 1-head SiaPose |" in tables
    for name in ("pck_curves.png", "claims.png"):
        assert (out / name).stat().st_size > 1000
        assert (tmp_path / "docs" / f"compare_2d_{name}").is_file()
    first = set(results["train_seconds"])
    assert first == {"cpm-s0", "agmn-s0", "siapose1-s0", "sharedgcn-s0"}
    stamps = {p: p.stat().st_mtime for p in (out / "runs").glob("*/final.pt")}
    assert study.main(argv) == 0
    assert {p: p.stat().st_mtime for p in (out / "runs").glob("*/final.pt")} == stamps


def test_compare_mesh_smoke_run_writes_its_tables_and_figures(tmp_path):
    """Chapter 6's study end to end on a few images (two steps per network): Table 6.1's six rows, Tables
    6.3 / 6.4, the K sweep, every claim with a verdict, and both figures. Says nothing about the claims."""
    import json

    from handops_models.experiments import compare_mesh

    out = tmp_path / "mesh"
    assert compare_mesh.main(["--out", str(out), "--smoke"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["table61"]) == {"baseline", "true", "calibrated"}
    rows = {"mpjpe", "mpvpe", "mpjpe_opt", "mpvpe_opt"}
    assert set(results["table61"]["baseline"]) == rows | {"mpjpe_true_shape"}
    assert all(set(results["table61"][k]) == rows for k in ("true", "calibrated"))
    assert [int(k) for k in results["k_sweep"]] == list(compare_mesh.K_VALUES)
    assert len(results["claims"]) == 12 and all(c["verdict"] for c in results["claims"])
    for name in ("hand_length.png", "calibration_k.png"):
        assert (out / name).stat().st_size > 1000
    assert "Table 6.1 layout" in (out / "tables.md").read_text()
    # the scale-blind ideal: the procedural hand's first beta is its scale; without it W and L are off
    assert results["scale_direction"]["relative_residual"] < 1e-9
    assert results["scale_blind"]["l_error_mm"]["value"] > 1.0 and results["scale_blind"]["mse_betas_scale_free"]["value"] < 1e-12
    # the pose-only rows compare two different errors (a row minus itself would be exactly 0)
    assert results["pose_only"]["baseline pose, true shape - baseline"]["interval"] != [0.0, 0.0]
    # a rerun in the same folder with other data refuses to reuse the networks trained for the first
    with pytest.raises(SystemExit, match="trained with other arguments"):
        compare_mesh.main(["--out", str(out), "--smoke", "--size-cue"])
    # the size-cue variant reuses that detector (no detector run of its own) and writes its own docs names
    cue, docs = tmp_path / "cue", tmp_path / "docs"
    detector = out / "runs" / "detector2d" / "final.pt"
    assert compare_mesh.main(["--out", str(cue), "--smoke", "--size-cue", "--detector", str(detector), "--docs", str(docs)]) == 0
    assert not (cue / "runs" / "detector2d").exists()
    assert (docs / "compare_mesh_size_cue_tables.md").is_file() and "size cue" in (cue / "tables.md").read_text()


def test_compare_mesh_checks_a_reused_detector_before_training(tmp_path):
    """--detector that is missing, or not a detector2d checkpoint, stops the study at once with its reason
    (no traceback, and no mesh network trained first)."""
    from handops_models.experiments import compare_mesh
    from handops_models.nets import build_model
    from handops_models.nets.configs import preset
    from handops_models.train.checkpoint import save_checkpoint

    out = tmp_path / "s"
    with pytest.raises(SystemExit, match="checkpoint not found"):
        compare_mesh.main(["--out", str(out), "--smoke", "--detector", str(tmp_path / "missing.pt")])
    save_checkpoint(tmp_path / "mesh.pt", build_model("mesh-identity", preset("mesh-identity", "tiny")))
    with pytest.raises(SystemExit, match="expected 'detector2d'"):
        compare_mesh.main(["--out", str(out), "--smoke", "--detector", str(tmp_path / "mesh.pt")])
    assert not (out / "runs").exists()
