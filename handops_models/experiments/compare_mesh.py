"""Chapter 6's tables on SyntheticHands: identity-aware mesh estimation and personalisation.

    python -m handops_models.experiments.compare_mesh --out runs/ch6                    (about 30 min here)
    python -m handops_models.experiments.compare_mesh --out runs/ch6_cue --size-cue \
        --detector runs/ch6/runs/detector2d/final.pt                                     (about 20 min: no detector)
    python -m handops_models.experiments.compare_mesh --out /tmp/smoke --smoke          (the pipeline, minutes)

Trains, through ``python -m handops_models train`` (one process each, resumable), the tiny baseline (its
regressor, then its confidence predictor), the identity-aware network and the 2-D detector on the training
subjects of ``SyntheticHands(num_subjects=...)``; the test subjects are never seen in training. On the test
split:

- Table 6.1: MPJPE / MPVPE (mm, root-relative) of the baseline, ours with the true shape and ours with the
  calibrated shape (K images per subject, attention), each without and with optimisation at inference (Eq. 6.4);
- Table 6.3: the calibration's MSE of the betas, W-error and L-error (mm) over the test subjects;
- Table 6.4: the same without attention (w = 1/K);
- Fig. 6.3: hand length per test subject: the baseline's per-image values, the calibrated shape's, the truth;
- Fig. 6.4: W- and L-error against K (K larger than a subject's test images means all of them).

Beside them, what explains the numbers: the baseline's pose under the true shape (how much of its deficit is
its shape), its per-image shapes against the mean shape's, and the "scale-blind ideal", the truth with its
scale component (``metrics.scale_direction``) at the mean, which is the best any estimator can do on pictures
that do not show a hand's size. By default SyntheticHands frames every hand to a random share of its crop, so
they do not; ``--size-cue`` renders a hand's size in its picture (``SyntheticHands(size_cue=True)``), and
``--detector`` reuses a trained detector (its run must have the same subjects).

The calibration images are K images of each test subject drawn with a fixed seed from the test split (their
labels unused), as in the author's protocol. Intervals: percentile bootstraps over test *subjects* (95%,
``metrics.bootstrap_interval``): for the per-image errors a paired cluster bootstrap (a subject's images share its
shape, so they are not independent draws), for the shape errors one value per subject.
Written to OUT: results.json, tables.md, hand_length.png, calibration_k.png (``--docs DIR`` copies them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from handops_models.experiments.runs import train_run, write_outputs

__all__ = ["main", "K_VALUES"]

K_VALUES = (1, 2, 5, 10, 20, 50)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m handops_models.experiments.compare_mesh",
                                description="Chapter 6's Tables 6.1, 6.3, 6.4 and Figs. 6.3, 6.4 on SyntheticHands.")
    p.add_argument("--out", required=True)
    p.add_argument("--num-subjects", type=int, default=200, help="SyntheticHands subjects (80/10/10 by subject)")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--val-size", type=int, default=200)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--epochs", type=float, default=20, help="epochs of each mesh network stage (the thesis: 15)")
    p.add_argument("--seed", type=int, default=0,
                   help="the mesh networks' training seed (weights, data order); the data and its splits do not change")
    p.add_argument("--detector-epochs", type=float, default=5,
                   help="epochs of the 2-D detector (the slowest network here: about 2.5 min per epoch of 4,000 images)")
    p.add_argument("--lr-scale", type=float, default=10.0,
                   help="multiply the mesh networks' thesis rates (tiny nets from scratch); the detector keeps 7.5e-4")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--k", type=int, default=20, help="calibration images per subject (Tables 6.1, 6.3, 6.4)")
    p.add_argument("--solver", default="adam", choices=("adam", "lm"), help="Eq. 6.4's solver")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--size-cue", action="store_true",
                   help="SyntheticHands with a hand's size visible in its picture (a camera at a fixed distance); "
                        "by default every hand fills a random share of its crop, so no picture shows the scale")
    p.add_argument("--detector", default=None,
                   help="a trained detector2d checkpoint to use instead of training one (e.g. the default study's)")
    p.add_argument("--docs", default=None)
    p.add_argument("--smoke", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = str(Path(args.cache_dir) if args.cache_dir else out / "cache")
    if args.detector:
        args.detector = str(Path(args.detector).resolve())
    if args.smoke:
        # 128 training images: the confidence stage's batch (run_recipe refuses a smaller split up front)
        args.train_size, args.val_size, args.test_size, args.bootstrap, args.num_subjects = 128, 16, 60, 200, 50
    if args.detector:  # checked before any training, not after it
        _check_detector(args.detector, args.num_subjects)
    started = time.perf_counter()
    common = ["--config", "tiny", "--data", "synthetic", "--cache-dir", cache, "--num-subjects", str(args.num_subjects),
              "--train-size", str(args.train_size), "--val-size", str(args.val_size), "--no-progress",
              *(["--size-cue"] if args.size_cue else [])]
    schedule = (["--epochs-scale", "0.01", "--max-steps", "2", "--batch-size", "8"] if args.smoke else
                ["--epochs-scale", str(args.epochs / 15), "--lr-scale", str(args.lr_scale), "--batch-size", str(args.batch_size)])
    if args.seed:  # seed 0 is the train CLI's default (and what runs without the option recorded)
        schedule = schedule + ["--seed", str(args.seed)]
    timings = {}
    from tqdm import tqdm

    models = ("mesh-baseline", "mesh-identity") + (() if args.detector else ("detector2d",))
    for model in tqdm(models, desc="compare_mesh: training", unit="network"):
        own = schedule
        if model == "detector2d" and not args.smoke:  # the Hourglass keeps its thesis rate 7.5e-4 (x10 diverges easily)
            own = ["--epochs-scale", str(args.detector_epochs / 15), "--lr-scale", "1", "--batch-size", str(args.batch_size)]
        try:
            seconds = train_run(["--model", model, *common, *own], out / "runs" / model, smoke=args.smoke)
        except RuntimeError as e:  # a failed or mismatched run: its message, without a traceback
            raise SystemExit(f"compare_mesh: {e}") from None
        if seconds is not None:
            timings[model] = seconds
    results = _evaluate(args, out, cache)
    results["train_seconds"] = timings
    results["seconds_this_call"] = time.perf_counter() - started
    write_outputs(out, results, _report(results, args), _plots, ("tables.md", "hand_length.png", "calibration_k.png"),
                  args.docs, "compare_mesh_" + ("size_cue_" if args.size_cue else "") + (f"seed{args.seed}_" if args.seed else ""))
    return 0


def _evaluate(args, out: Path, cache: str) -> dict:
    from handops_models.metrics import bootstrap_interval, hand_width_length, scale_direction, without_scale
    from handops_models.train.data import make_split
    from handops_models.train.evaluate import load_network
    from handops_models.train.mesh_eval import calibrate_subjects, mesh_errors, subject_indices

    baseline = load_network(out / "runs" / "mesh-baseline" / "final.pt", "mesh-baseline")[0]
    identity = load_network(out / "runs" / "mesh-identity" / "final.pt", "mesh-identity")[0]
    detector = load_network(args.detector or out / "runs" / "detector2d" / "final.pt", "detector2d")[0]
    test = make_split("synthetic", None, identity.input_size, "test", args.test_size, cache_dir=cache,
                      num_subjects=args.num_subjects, size_cue=args.size_cue)
    truth = {s: test[idx[0]]["betas"].double() for s, idx in subject_indices(test).items()}
    subjects = sorted(truth)
    layer = identity.mano
    calibrated = calibrate_subjects(baseline, test, k=args.k, attention=True)
    uniform = calibrate_subjects(baseline, test, k=args.k, attention=False)
    rows = {
        "baseline": mesh_errors(baseline, test, detector=detector, solver=args.solver, progress=True),
        "true": mesh_errors(identity, test, detector=detector, solver=args.solver, progress=True),
        "calibrated": mesh_errors(identity, test, shapes=calibrated["betas"], detector=detector, solver=args.solver,
                                  progress=True),
    }

    scale, scale_residual = scale_direction(layer)

    def per_subject(betas: dict) -> dict[str, torch.Tensor]:  # [S] errors of one shape per subject
        pred = torch.stack([betas[s].double() for s in subjects])
        gt = torch.stack([truth[s] for s in subjects])
        wp, lp = hand_width_length(layer, pred)
        wg, lg = hand_width_length(layer, gt)
        return {"mse_betas": ((pred - gt) ** 2).mean(1), "w_error_mm": (wp - wg).abs() * 1000,
                "l_error_mm": (lp - lg).abs() * 1000,
                "mse_betas_scale_free": (without_scale(pred - gt, scale) ** 2).mean(1)}

    def interval(scores, base=None, groups=None):
        est, lo, hi = bootstrap_interval(scores, base, samples=args.bootstrap, groups=groups)
        return {"value": est, "interval": [lo, hi]}

    image_subjects = rows["baseline"]["subject"]  # the same test images, in the same order, in every row

    def per_image(name, metric, base=None):  # a cluster bootstrap over test subjects: their images share a shape
        return interval(rows[name][metric], None if base is None else rows[base][metric], groups=image_subjects)

    table61 = {name: {metric: per_image(name, metric) for metric in ("mpjpe", "mpvpe", "mpjpe_opt", "mpvpe_opt")}
               for name in rows}
    # the baseline's pose under the true shape: how much of "ours < baseline" is the shape, how much the pose
    table61["baseline"]["mpjpe_true_shape"] = per_image("baseline", "mpjpe_true_shape")
    pose_only = {"baseline pose, true shape - baseline": interval(rows["baseline"]["mpjpe_true_shape"],
                                                                   rows["baseline"]["mpjpe"], image_subjects),
                 "ours, true shape - baseline pose, true shape": interval(rows["true"]["mpjpe"],
                                                                       rows["baseline"]["mpjpe_true_shape"],
                                                                       image_subjects)}
    attention, no_attention = per_subject(calibrated["betas"]), per_subject(uniform["betas"])
    table63 = {m: interval(v) for m, v in attention.items()}
    # what an estimator that knows everything but the scale would score: the truth at the mean scale (a crop
    # framed to a random fill shows no scale, metrics.scale_direction)
    scale_blind = {m: interval(v) for m, v in per_subject({s: without_scale(truth[s][None], scale)[0]
                                                          for s in subjects}).items()}
    table64 = {"attention": table63, "no_attention": {m: interval(v) for m, v in no_attention.items()},
               "difference": {m: interval(attention[m], no_attention[m]) for m in attention}}
    sweep = {}
    for k in K_VALUES:
        errors = per_subject(calibrate_subjects(baseline, test, k=k, attention=True)["betas"])
        sweep[k] = {m: interval(errors[m]) for m in ("w_error_mm", "l_error_mm")}
    claims = [
        ("ours with the true shape < baseline (MPJPE, no optimisation)", per_image("true", "mpjpe", "baseline"), "below"),
        ("ours with the true shape < baseline (MPJPE, with optimisation)", per_image("true", "mpjpe_opt", "baseline"), "below"),
        ("ours with the calibrated shape < baseline (MPJPE, no optimisation)", per_image("calibrated", "mpjpe", "baseline"), "below"),
        ("ours with the calibrated shape < baseline (MPJPE, with optimisation)", per_image("calibrated", "mpjpe_opt", "baseline"), "below"),
        ("calibrated - true shape (MPJPE, no optimisation): within 1 mm", per_image("calibrated", "mpjpe", "true"), "near"),
        ("optimisation helps the baseline (MPJPE)", interval(rows["baseline"]["mpjpe_opt"], rows["baseline"]["mpjpe"], image_subjects), "below"),
        ("optimisation helps ours, true shape (MPJPE)", interval(rows["true"]["mpjpe_opt"], rows["true"]["mpjpe"], image_subjects), "below"),
        ("attention <= no attention (MSE of the betas per subject)", table64["difference"]["mse_betas"], "not above"),
        ("attention <= no attention (W-error per subject)", table64["difference"]["w_error_mm"], "not above"),
        ("attention <= no attention (L-error per subject)", table64["difference"]["l_error_mm"], "not above"),
        ("W-error < 1 mm at K = 20 (the thesis: 0.88 / 1.02)", table63["w_error_mm"], "under 1"),
        ("L-error < 2 mm at K = 20 (the thesis: 1.71 / 1.20)", table63["l_error_mm"], "under 2"),
    ]
    verdicts = []
    for text, result, kind in claims:
        lo, hi = result["interval"]
        if kind == "below":
            verdict = "reproduces" if hi < 0 else "contradicted" if lo > 0 else "not resolved"
        elif kind == "not above":
            verdict = "reproduces" if hi <= 0 else "contradicted" if lo > 0 else "not resolved (within noise)"
        elif kind.startswith("under"):
            bound = float(kind.split()[1])
            verdict = "reproduces" if hi < bound else "contradicted" if lo > bound else "not resolved"
        else:  # "near": within 1 mm
            verdict = "reproduces" if -1 < lo and hi < 1 else "not within 1 mm"
        verdicts.append({"claim": text, **result, "verdict": verdict})
    baseline_lengths = hand_width_length(layer, rows["baseline"]["betas"].double())[1] * 1000
    lengths = {
        "subjects": subjects,
        "baseline_per_image": {s: baseline_lengths[rows["baseline"]["subject"] == s].tolist() for s in subjects},
        "calibrated": (hand_width_length(layer, torch.stack([calibrated["betas"][s].double() for s in subjects]))[1] * 1000).tolist(),
        "truth": (hand_width_length(layer, torch.stack([truth[s] for s in subjects]))[1] * 1000).tolist(),
    }
    return {"table61": table61, "table63": table63, "table64": table64, "k_sweep": sweep, "claims": verdicts,
            "scale_blind": scale_blind, "pose_only": pose_only, "scale_direction": {"u": scale.tolist(), "relative_residual": scale_residual},
            "hand_length": lengths, "num_test_images": len(test), "num_test_subjects": len(subjects),
            "baseline_shape_errors": _per_image_shape_errors(layer, rows["baseline"]["betas"].double(),
                                                             torch.stack([truth[int(s)] for s in rows["baseline"]["subject"]]),
                                                             scale),
            "settings": {k: v for k, v in vars(args).items() if k != "docs"}}


def _check_detector(detector: str, num_subjects: int) -> None:
    """A reused detector must be a detector2d checkpoint from a run on the same subjects (the splits depend on
    ``num_subjects``: with another count it may have trained on this study's test subjects)."""
    import json

    from handops_models.train.checkpoint import CheckpointError, load_checkpoint
    from handops_models.train.evaluate import resolve_checkpoint

    try:
        path = resolve_checkpoint(detector)
        load_checkpoint(path, expect_model="detector2d", build=False)
    except (FileNotFoundError, CheckpointError) as e:
        raise SystemExit(f"--detector {detector}: {e}") from None
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.json").is_file():
            data = json.loads((folder / "config.json").read_text()).get("data", {})
            if data.get("name") != "synthetic" or data.get("num_subjects") != num_subjects:
                raise SystemExit(f"--detector {detector}: its run trained on {data.get('name')} with "
                                 f"{data.get('num_subjects')} subjects, this study has synthetic with {num_subjects}: "
                                 f"its training subjects may include this study's test subjects")
            return
    raise SystemExit(f"--detector {detector}: no config.json of its run next to it, so its training subjects are "
                     f"unknown; pass a checkpoint inside its run folder")


def _per_image_shape_errors(layer, pred, gt, scale) -> dict:
    """The baseline's per-image shapes against the truth, and what the mean shape (betas 0) would score."""
    from handops_models.metrics import shape_errors, without_scale

    out = {"baseline": shape_errors(layer, pred, gt), "mean_shape": shape_errors(layer, torch.zeros_like(gt), gt)}
    out["baseline"]["mse_betas_scale_free"] = float((without_scale(pred - gt, scale) ** 2).mean())
    out["mean_shape"]["mse_betas_scale_free"] = float((without_scale(gt, scale) ** 2).mean())
    return out


def _fmt(entry: dict, digits: int = 2) -> str:
    lo, hi = entry["interval"]
    return f"{entry['value']:.{digits}f} ({lo:.{digits}f} to {hi:.{digits}f})"


def _report(results: dict, args) -> str:
    t = results["table61"]
    budget = ("two steps per network (smoke)" if args.smoke else
              f"{args.epochs:g} epochs per mesh network stage, {args.detector_epochs:g} for the detector")
    data = ("the size cue (a hand's size shows in its picture)" if args.size_cue else
            "every hand fills a random share of its crop (no picture shows its size)")
    detector = f"the detector reused from {args.detector}; " if args.detector else ""
    budget += f"; training seed {args.seed}"
    lines = ["# Chapter 6 on SyntheticHands: identity-aware mesh estimation and personalisation", "",
             f"Tiny networks; {args.num_subjects} subjects, {args.train_size} training images, {budget}; {data}; "
             f"{detector}test: {results['num_test_images']} images of {results['num_test_subjects']} unseen subjects; "
             f"calibration with K = {args.k}; Eq. 6.4 with {args.solver}. 95% bootstrap intervals in brackets.", "",
             "**Table 6.1 layout** (mm, root-relative)", "",
             "| | method | MPJPE | MPVPE |", "|---|---|---|---|"]
    names = {"baseline": "Baseline", "true": "Ours, true shape", "calibrated": "Ours, calibrated shape"}
    for suffix, label in (("", "without optimisation"), ("_opt", "with optimisation")):
        for key, name in names.items():
            lines.append(f"| {label} | {name} | {_fmt(t[key]['mpjpe' + suffix])} | {_fmt(t[key]['mpvpe' + suffix])} |")
    lines += ["", "Where the baseline's deficit comes from (MPJPE, no optimisation): its pose under the true shape "
              f"scores {_fmt(t['baseline']['mpjpe_true_shape'])} mm."]
    for label, entry in results["pose_only"].items():
        lines.append(f"- {label}: {_fmt(entry)} mm")
    shapes = results["baseline_shape_errors"]
    lines += ["", "The baseline's per-image shapes (Eq. 6.5) against the mean shape's:", "",
              "| | MSE of the betas | MSE without the scale component | W-error (mm) | L-error (mm) |",
              "|---|---|---|---|---|"]
    for label, key in (("baseline, per image", "baseline"), ("the mean shape (betas 0)", "mean_shape")):
        e = shapes[key]
        lines.append(f"| {label} | {e['mse_betas']:.3f} | {e['mse_betas_scale_free']:.3f} | {e['w_error_mm']:.2f} | "
                     f"{e['l_error_mm']:.2f} |")
    t63, t64 = results["table63"], results["table64"]
    lines += ["", f"**Table 6.3 / 6.4 layout** (calibration with K = {args.k}, over test subjects)", "",
              "| | MSE of the betas | MSE without the scale component | W-error (mm) | L-error (mm) |",
              "|---|---|---|---|---|"]
    for label, row in (("no attention (w = 1/K)", t64["no_attention"]), ("with attention", t63),
                       ("difference", t64["difference"]),
                       ("*scale-blind ideal: the truth at the mean scale*", results["scale_blind"])):
        lines.append(f"| {label} | {_fmt(row['mse_betas'], 3)} | {_fmt(row['mse_betas_scale_free'], 3)} | "
                     f"{_fmt(row['w_error_mm'])} | {_fmt(row['l_error_mm'])} |")
    lines += ["", f"The scale component: the betas direction closest to a uniform scaling about the wrist "
              f"(`metrics.scale_direction`, relative residual {results['scale_direction']['relative_residual']:.1e}). "
              + ("With the size cue a picture shows the scale through the fill's noise; the last row is what an estimator "
                 "exact in everything but the scale would score." if args.size_cue else
                 "SyntheticHands frames each hand to fill a random fraction of its crop, so no picture shows it; the "
                 "last row is what an estimator exact in everything else would score."),
              "", "**W- and L-error against K** (Fig. 6.4)", "", "| K | W-error (mm) | L-error (mm) |", "|---|---|---|"]
    for k, v in results["k_sweep"].items():
        lines.append(f"| {k} | {_fmt(v['w_error_mm'])} | {_fmt(v['l_error_mm'])} |")
    lines += ["", "**The thesis' claims**", "", "| claim | value (95% CI) | verdict |", "|---|---|---|"]
    for c in results["claims"]:
        lines.append(f"| {c['claim']} | {_fmt(c)} | {c['verdict']} |")
    if results.get("train_seconds"):
        lines += ["", "Training time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["train_seconds"].items())]
    return "\n".join(lines) + "\n"


def _plots(results: dict, out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lengths = results["hand_length"]
    fig = Figure(figsize=(max(5, 0.35 * len(lengths["subjects"]) + 2), 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, s in enumerate(lengths["subjects"]):
        values = lengths["baseline_per_image"][s]
        ax.plot([i] * len(values), values, ".", color="tab:grey", alpha=0.4, label="baseline, per image" if i == 0 else None)
    x = range(len(lengths["subjects"]))
    ax.plot(x, lengths["calibrated"], "o", color="tab:blue", label="ours (calibrated)")
    ax.plot(x, lengths["truth"], "x", color="black", label="truth")
    ax.set(xlabel="test subject", ylabel="hand length (mm)", title="Hand length per test subject (Fig. 6.3)")
    ax.set_xticks(list(x), [str(s) for s in lengths["subjects"]], fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "hand_length.png", dpi=110)

    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ks = [int(k) for k in results["k_sweep"]]
    for metric, label in (("w_error_mm", "W-error"), ("l_error_mm", "L-error")):
        values = [results["k_sweep"][k][metric] for k in results["k_sweep"]]
        ax.errorbar(ks, [v["value"] for v in values],
                    yerr=[[v["value"] - v["interval"][0] for v in values], [v["interval"][1] - v["value"] for v in values]],
                    marker="o", capsize=3, label=label)
        floor = results["scale_blind"][metric]["value"]
        ax.axhline(floor, linestyle=":", color=ax.lines[-1].get_color(), label=f"{label}, scale-blind ideal")
    ax.set(xscale="log", xlabel="K (images per subject)", ylabel="error (mm)", title="Calibration error against K (Fig. 6.4)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the legend above the curves
    ax.legend(fontsize=7, ncol=2, loc="upper center")
    fig.tight_layout()
    fig.savefig(out / "calibration_k.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
