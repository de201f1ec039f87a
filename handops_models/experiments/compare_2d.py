"""The thesis' 2-D comparisons on SyntheticHands: Tables 3.1, 4.1, 5.1 and 5.2 with bootstrap intervals.

    python -m handops_models.experiments.compare_2d --out runs/compare_2d            (about 2 hours on 2 cores)
    python -m handops_models.experiments.compare_2d --out /tmp/smoke --smoke          (every recipe, a few steps)

Every network trains with ``python -m handops_models train`` (one process each, its log in
``OUT/runs/<name>-s<seed>/train.log``) on the same ``SyntheticHands`` training split with occluders; its
validation split picks each stage's best checkpoint; the test split (subjects never seen in training) is
used for the tables only, never for a choice. The budget is matched by construction: every network
trains ``--total-epochs`` epochs in all, shared among its recipe's stages in the thesis' proportions
(``recipes.with_total_epochs``), so the CPM and Hourglass baselines get as many epochs as AGMN, R-MGMN or
SiaPose spend in all their stages.

Metrics on the test split, per image (``metrics.pck_per_image``): PCK at the thesis' thresholds 0.01-0.10
of the crop side, and at the coarse thresholds 0.05, 0.10, 0.15, 0.20, the ones that mean something on a
tiny network's 16x16 maps (8-pixel cells on a 128-pixel crop: 0.06 of the crop is under one cell).
The claims are judged on the coarse mPCK (the mean over those four thresholds), the primary metric fixed
before any result was seen, with a paired percentile bootstrap over test images (2,000 resamples, 95%):
a claim "reproduces" when the whole interval of (structured - baseline) is above 0, is "contradicted" when
it is below 0, and is "not resolved" otherwise. With several seeds each image's score is the mean over the
seeds' models, so the interval is over images, and the per-seed values are listed too.

Written to ``OUT``: ``results.json`` (every number), ``tables.md`` (the tables and the claims), the PNGs
``pck_curves.png`` and ``claims.png``; ``--docs DIR`` copies the Markdown and PNGs there (the README's).
A rerun with the same ``--out`` skips finished trainings, resumes interrupted ones and re-evaluates.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from handops_models.experiments.runs import train_run, write_outputs

__all__ = ["Entry", "ENTRIES", "CLAIMS", "main"]


@dataclass(frozen=True)
class Entry:
    """One trained network of the study: its name, the CLI's ``--model`` and ``--heads``; ``scales_lr``: False
    keeps the thesis' learning rate instead of multiplying it by ``--lr-scale``."""

    name: str
    label: str
    model: str
    heads: int | None = None
    scales_lr: bool = True


ENTRIES = (  # in training order: the rows most claims need first
    Entry("cpm", "CPM baseline", "cpm"),
    Entry("agmn", "AGMN finetuned", "agmn"),
    Entry("siapose10", "10-head SiaPose", "siapose", 10),
    Entry("siapose1", "1-head SiaPose", "siapose", 1),
    Entry("sharedgcn", "SharedWeight GCN", "sharedgcn"),
    Entry("siapose5", "5-head SiaPose", "siapose", 5),
    Entry("rmgmn", "R-MGMN", "rmgmn"),
    Entry("rsiapose10", "10-head R-SiaPose", "rsiapose", 10),
    Entry("hourglass", "SHG baseline", "hourglass", scales_lr=False),  # the thesis' 7.5e-4 (x10 would be 7.5e-3)
)

# Stage checkpoints evaluated besides the final networks: (row name, entry, stage, label).
STAGE_ROWS = (
    ("agmn_separate", "agmn", "pairwise", "AGMN Sep. Trained"),
    ("agmn_unary", "agmn", "unary", "AGMN unary stage alone"),
)

# (claim, structured row, baseline row): the thesis' comparisons, judged on the coarse mPCK.
CLAIMS = (
    ("AGMN > CPM (Table 4.1)", "agmn", "cpm"),
    ("R-MGMN > CPM (Table 3.1)", "rmgmn", "cpm"),
    ("SiaPose > its baseline (10-head vs CPM, Table 5.2)", "siapose10", "cpm"),
    ("5 heads > 1 head", "siapose5", "siapose1"),
    ("10 heads > 5 heads", "siapose10", "siapose5"),
    ("edge-aware > SharedWeight GCN (1 head each)", "siapose1", "sharedgcn"),
    ("R-SiaPose > SiaPose (10 heads)", "rsiapose10", "siapose10"),
)

TABLE_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(1, 11))  # Table 4.1's 0.01-0.10; 3.1 / 5.x use the first 6
COARSE_THRESHOLDS = (0.05, 0.1, 0.15, 0.2)
CURVE_THRESHOLDS = tuple(round(0.005 * i, 4) for i in range(41))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m handops_models.experiments.compare_2d",
                                description="Train the tiny 2-D networks on SyntheticHands and reproduce the thesis' "
                                            "Tables 3.1, 4.1, 5.1 and 5.2 with bootstrap intervals.")
    p.add_argument("--out", required=True, help="the study's folder (runs, results.json, tables.md, PNGs)")
    p.add_argument("--config", default="tiny", help="the networks' preset (tiny) or ... as train --config")
    p.add_argument("--total-epochs", type=int, default=10, help="epochs per network, all stages together")
    p.add_argument("--lr-scale", type=float, default=10.0,
                   help="multiply the thesis' learning rates of the CPM-based networks (trained from scratch on a short "
                        "budget; 1e-4 learns slowly); the Hourglass keeps its 7.5e-4")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--val-size", type=int, default=200)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--models", nargs="+", default=None, choices=[e.name for e in ENTRIES],
                   help="a subset of the networks (the claims whose two rows are trained are judged)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--cache-dir", default=None, help="SyntheticHands cache (default OUT/cache)")
    p.add_argument("--docs", default=None, help="also copy tables.md and the PNGs here, prefixed compare_2d_")
    p.add_argument("--smoke", action="store_true",
                   help="a few steps per network on a few images (checks the pipeline, says nothing about the claims)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    if args.smoke:
        args.train_size, args.val_size, args.test_size, args.bootstrap = 64, 16, 24, 200
    entries = [e for e in ENTRIES if args.models is None or e.name in args.models]
    from tqdm import tqdm

    started = time.perf_counter()
    timings = _load_json(out / "timings.json")
    runs = [(e, seed) for e in entries for seed in args.seeds]
    for entry, seed in tqdm(runs, desc="compare_2d: training", unit="network"):
        key = f"{entry.name}-s{seed}"
        seconds = _train(entry, seed, args, out / "runs" / key, cache)
        if seconds is not None:
            timings[key] = seconds
            (out / "timings.json").write_text(json.dumps(timings, indent=1))
    results = _evaluate(entries, args, out, cache)
    results["train_seconds"] = timings
    results["study_seconds_this_call"] = time.perf_counter() - started
    write_outputs(out, results, _report(results, args), _plots, ("tables.md", "pck_curves.png", "claims.png"),
                  args.docs, "compare_2d_")
    return 0


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _train(entry: Entry, seed: int, args, run: Path, cache: Path) -> float | None:
    """Train one network in its own process; None when its run had finished already."""
    arguments = ["--model", entry.model, "--config", args.config, "--data", "synthetic", "--cache-dir", str(cache),
                 "--seed", str(seed), "--train-size", str(args.train_size), "--val-size", str(args.val_size),
                 "--lr-scale", str(args.lr_scale if entry.scales_lr else 1.0), "--no-progress"]
    arguments += ["--heads", str(entry.heads)] if entry.heads is not None else []
    if args.smoke:
        arguments += ["--epochs-scale", "0.01", "--max-steps", "2", "--batch-size", "8"]
    else:
        arguments += ["--total-epochs", str(args.total_epochs), "--batch-size", str(args.batch_size)]
    return train_run(arguments, run, smoke=args.smoke)


def _evaluate(entries, args, out: Path, cache: Path) -> dict:
    """Per-image PCK of every final network and stage row on the test split (cached in OUT/eval)."""
    from handops_models.metrics import pck_per_image
    from handops_models.train.data import make_split
    from handops_models.train.evaluate import load_network
    from handops_models.train.loop import Settings, evaluate_model

    thresholds = tuple(sorted(set(TABLE_THRESHOLDS) | set(COARSE_THRESHOLDS) | set(CURVE_THRESHOLDS)))
    names = {e.name for e in entries}
    rows = [(e.name, e.name, None, e.label) for e in entries]
    rows += [(row, entry, stage, label) for row, entry, stage, label in STAGE_ROWS if entry in names]
    datasets, per_row = {}, {}
    settings = Settings(batch_size=32, thresholds=(0.1,), extra_thresholds=(0.1,), device="cpu")
    for row, entry, stage, label in rows:
        per_seed = []
        for seed in args.seeds:
            run = out / "runs" / f"{entry}-s{seed}"
            path = run / (f"{stage}/best.pt" if stage else "final.pt")
            if stage and not path.is_file():  # a run stopped before that stage (--smoke)
                print(f"{label}: {path} does not exist; row left out")
                break
            cached = out / "eval" / f"{row}-s{seed}.pt"
            if cached.is_file() and cached.stat().st_mtime >= path.stat().st_mtime:
                per_seed.append(torch.load(cached, weights_only=True))
                continue
            network, _ = load_network(path)
            size = network.input_size
            if size not in datasets:
                datasets[size] = make_split("synthetic", None, size, "test", args.test_size, cache_dir=cache)
            result = evaluate_model(network, datasets[size], settings)
            gt = torch.stack([datasets[size][i]["keypoints2d"] for i in range(len(datasets[size]))])
            scores = pck_per_image(result["predictions"], gt, torch.full((len(gt),), float(size)), thresholds)
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(scores, cached)
            per_seed.append(scores)
        if len(per_seed) == len(args.seeds):
            per_row[row] = {"label": label, "scores": torch.stack(per_seed)}  # [S, N, T]
    return _summaries(per_row, thresholds, args)


def _summaries(per_row: dict, thresholds: tuple, args) -> dict:
    from handops_models.metrics import bootstrap_interval

    index = {t: i for i, t in enumerate(thresholds)}
    coarse = [index[t] for t in COARSE_THRESHOLDS]
    thesis = [index[t] for t in TABLE_THRESHOLDS[:6]]

    def image_scores(row, columns):  # [N]: each image's mean PCK over the columns and the seeds
        return per_row[row]["scores"][:, :, columns].mean(dim=(0, 2))

    rows = {}
    for row, data in per_row.items():
        s = data["scores"]
        est, low, high = bootstrap_interval(image_scores(row, coarse), samples=args.bootstrap)
        rows[row] = {
            "label": data["label"],
            "pck": {f"{t:g}": float(s[:, :, index[t]].mean()) for t in sorted(set(TABLE_THRESHOLDS) | set(COARSE_THRESHOLDS))},
            "pck_coarse": {f"{t:g}": float(s[:, :, index[t]].mean()) for t in COARSE_THRESHOLDS},
            "mpck": float(s[:, :, thesis].mean()),
            "mpck_coarse": est, "mpck_coarse_interval": [low, high],
            "mpck_coarse_per_seed": [float(x) for x in s[:, :, coarse].mean(dim=(1, 2))],
            "curve": [float(s[:, :, index[t]].mean()) for t in CURVE_THRESHOLDS],
            "num_images": int(s.shape[1]), "seeds": list(args.seeds),
        }
    claims = []
    for text, structured, baseline in CLAIMS:
        if structured not in per_row or baseline not in per_row:
            continue
        est, low, high = bootstrap_interval(image_scores(structured, coarse), image_scores(baseline, coarse),
                                            samples=args.bootstrap)
        thesis_est, thesis_low, thesis_high = bootstrap_interval(
            image_scores(structured, thesis), image_scores(baseline, thesis), samples=args.bootstrap)
        verdict = "reproduces" if low > 0 else "contradicted" if high < 0 else "not resolved"
        claims.append({"claim": text, "structured": structured, "baseline": baseline, "difference": est,
                       "interval": [low, high], "verdict": verdict,
                       "thesis_mpck_difference": thesis_est, "thesis_mpck_interval": [thesis_low, thesis_high]})
    return {"rows": rows, "claims": claims, "coarse_thresholds": list(COARSE_THRESHOLDS),
            "table_thresholds": list(TABLE_THRESHOLDS), "curve_thresholds": list(CURVE_THRESHOLDS),
            "settings": {k: v for k, v in vars(args).items() if k not in ("docs",)}}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _table(rows: dict, names: list[str], thresholds, improvements=(), title: str = "") -> str:
    present = [n for n in names if n in rows]
    if not present:
        return ""
    header = "| PCK@ | " + " | ".join(f"{t:g}" for t in thresholds) + " | mPCK | coarse mPCK (95% CI) |"
    lines = [f"**{title}**", "", header, "|---" * (len(thresholds) + 3) + "|"]

    def values(n):
        return [rows[n]["pck"][f"{t:g}"] for t in thresholds]

    for n in present:
        r = rows[n]
        v = values(n)
        lo, hi = r["mpck_coarse_interval"]
        lines.append(f"| {r['label']} | " + " | ".join(_pct(x) for x in v) + f" | {_pct(sum(v) / len(v))} | "
                     f"{_pct(r['mpck_coarse'])} ({_pct(lo)}-{_pct(hi)}) |")
        for method, baseline in improvements:
            if method == n and baseline in rows:
                d = [a - b for a, b in zip(v, values(baseline))]
                lines.append("| Improvement | " + " | ".join(_pct(x) for x in d) + f" | {_pct(sum(d) / len(d))} | "
                             f"{_pct(r['mpck_coarse'] - rows[baseline]['mpck_coarse'])} |")
    return "\n".join(lines) + "\n"


def _report(results: dict, args) -> str:
    rows = results["rows"]
    six = TABLE_THRESHOLDS[:6]
    parts = [
        "# The thesis' 2-D comparisons on SyntheticHands",
        "",
        f"Tiny networks, {args.train_size} training images with occluders, {args.total_epochs} epochs per network "
        f"(all stages together), batch {args.batch_size}, the thesis' learning rates x{args.lr_scale:g} (the "
        f"Hourglass x1), seeds {args.seeds}; test split: "
        f"{next(iter(rows.values()))['num_images'] if rows else 0} images of unseen subjects. PCK in %, thresholds "
        "as fractions of the 128-pixel crop side; the coarse mPCK (mean over 0.05, 0.1, 0.15, 0.2) has a 95% "
        "bootstrap interval over test images.",
        "",
        _table(rows, ["cpm", "rmgmn"], six, [("rmgmn", "cpm")], "Table 3.1 layout: R-MGMN"),
        _table(rows, ["cpm", "agmn_unary", "agmn_separate", "agmn"], TABLE_THRESHOLDS, [("agmn", "cpm")],
               "Table 4.1 layout: AGMN (its mPCK column: the mean over 0.01-0.10)"),
        _table(rows, ["hourglass"], six, (), "Table 5.1 layout: SHG baseline (SHG-based SiaPose is not in the study)"),
        _table(rows, ["cpm", "sharedgcn", "siapose1", "siapose5", "siapose10", "rsiapose10"], six,
               [("siapose10", "cpm"), ("rsiapose10", "cpm")], "Table 5.2 layout: CPM-based SiaPose"),
        _table(rows, list(rows), COARSE_THRESHOLDS, (), "Every network at the coarse thresholds"),
        "**The thesis' claims** (difference of the coarse mPCK, structured - baseline, in points; paired 95% "
        "bootstrap interval over test images; the thesis' mPCK at 0.01-0.06 beside it)",
        "",
        "| claim | coarse mPCK difference (95% CI) | verdict | mPCK 0.01-0.06 difference (95% CI) |",
        "|---|---|---|---|",
    ]
    for c in results["claims"]:
        lo, hi = c["interval"]
        tlo, thi = c["thesis_mpck_interval"]
        parts.append(f"| {c['claim']} | {100 * c['difference']:+.2f} ({100 * lo:+.2f} to {100 * hi:+.2f}) | {c['verdict']} | "
                     f"{100 * c['thesis_mpck_difference']:+.2f} ({100 * tlo:+.2f} to {100 * thi:+.2f}) |")
    timings = results.get("train_seconds", {})
    if timings:
        parts += ["", "Training time per network (s): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(timings.items()))
                  + f"; {sum(timings.values()) / 60:.1f} min in all."]
    return "\n".join(parts) + "\n"


def _plots(results: dict, out: Path) -> None:
    from handops_models.metrics import plot_pck_curves

    rows = {r["label"]: (CURVE_THRESHOLDS, r["curve"]) for name, r in results["rows"].items() if name != "agmn_unary"}
    plot_pck_curves(rows, out / "pck_curves.png", title="PCK on SyntheticHands test (unseen subjects)",
                    xlabel="threshold (fraction of the crop side)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    claims = results["claims"]
    fig = Figure(figsize=(7, 0.5 + 0.45 * max(1, len(claims))))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, c in enumerate(claims):
        lo, hi = c["interval"]
        colour = {"reproduces": "tab:green", "contradicted": "tab:red"}.get(c["verdict"], "tab:grey")
        ax.plot([100 * lo, 100 * hi], [i, i], color=colour, lw=3)
        ax.plot([100 * c["difference"]], [i], "o", color="black")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(claims)), [c["claim"] for c in claims], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("coarse mPCK difference, structured - baseline (points, 95% CI)")
    fig.tight_layout()
    fig.savefig(out / "claims.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
