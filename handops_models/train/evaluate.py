"""Evaluating trained checkpoints: PCK in the layout of Table 4.1, AUC, EPE, a JSON and a PCK-curve PNG.

    results = evaluate_checkpoints(["runs/agmn/final.pt", "runs/cpm/final.pt"], "synthetic", None, "test", out)

Each checkpoint is read by ``load_checkpoint`` (``torch.load(weights_only=True)``: nothing in the file runs)
and evaluated by the training loop's ``evaluate_model`` on the split at the network's own input size, so
PCK is normalised by the crop side (Eq. 5.5). Reported per checkpoint:

    pck          at the thesis' thresholds 0.01-0.06 of the crop side (Tables 3.1, 4.1, 5.1), and mpck their mean
    pck_coarse   at 0.05, 0.1, 0.15, 0.2: the thresholds that mean something for the tiny configs, whose
                 maps have 8-pixel cells on a 128-pixel crop (0.06 of 128 is under one cell)
    curve        PCK at 0, 0.005, ..., 0.2 (``CURVE_THRESHOLDS``), plotted in the PNG
    auc          normalised area under that curve from 0 to 0.06 and from 0 to 0.2 (``metrics.auc``)
    epe_px       mean end-point error in crop pixels, and epe_fraction = epe_px / crop side
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from handops_models.metrics import THESIS_THRESHOLDS, auc, plot_pck_curves, results_table
from handops_models.train.checkpoint import load_checkpoint
from handops_models.train.loop import TINY_THRESHOLDS, Settings, evaluate_model

__all__ = ["CURVE_THRESHOLDS", "resolve_checkpoint", "load_network", "evaluate_network", "evaluate_checkpoints"]

CURVE_THRESHOLDS = tuple(round(0.005 * i, 4) for i in range(41))  # 0 .. 0.2
AUC_RANGES = (0.06, 0.2)


def resolve_checkpoint(path) -> Path:
    """A checkpoint file, or a training run's folder (its ``final.pt``)."""
    path = Path(path)
    if path.is_dir():
        final = path / "final.pt"
        if not final.is_file():
            raise FileNotFoundError(f"{path}: a folder without final.pt (is the run finished? pass a checkpoint file, "
                                    f"e.g. {path}/last.pt or {path}/<stage>/best.pt)")
        return final
    return path


def load_network(path, expect_model: str | None = None, device: str = "cpu"):
    """(network in eval mode on ``device``, checkpoint dict) from a checkpoint file or run folder."""
    path = resolve_checkpoint(path)
    checkpoint = load_checkpoint(path, expect_model=expect_model)
    network = checkpoint["model"].to(device).eval()
    return network, checkpoint


def evaluate_network(network, dataset, settings: Settings) -> dict:
    """The metrics of the module docstring for ``network`` on ``dataset`` (plain data)."""
    s = dataclasses.replace(settings, thresholds=THESIS_THRESHOLDS, extra_thresholds=CURVE_THRESHOLDS)
    r = evaluate_model(network, dataset, s)
    curve = [r["pck_coarse"][f"{t:g}"] for t in CURVE_THRESHOLDS]
    areas = {}
    for high in AUC_RANGES:
        n = CURVE_THRESHOLDS.index(high) + 1
        areas[f"{high:g}"] = auc(CURVE_THRESHOLDS[:n], curve[:n])
    return {
        "pck": r["pck"], "mpck": r["mpck"],
        "pck_coarse": {f"{t:g}": r["pck_coarse"][f"{t:g}"] for t in TINY_THRESHOLDS},
        "curve": curve, "auc": areas,
        "epe_px": r["epe_px"], "epe_fraction": r["epe_px"] / network.input_size,
        "num_images": r["num_images"], "input_size": network.input_size,
    }


def _labels(paths: list[Path], models: list[str], labels) -> list[str]:
    if labels:
        if len(labels) != len(paths):
            raise ValueError(f"--labels gives {len(labels)} names for {len(paths)} checkpoints")
        out = list(labels)
    else:
        out = [f"{m} ({p})" for m, p in zip(models, paths)]
    if len(set(out)) != len(out):
        raise ValueError(f"two checkpoints have the same label: {out}; pass --labels")
    return out


def evaluate_checkpoints(paths, data: str, root, split: str, out_dir, *, settings: Settings, size: int | None = None,
                         expect_model: str | None = None, labels=None, data_options: dict | None = None,
                         log=print) -> dict:
    """Evaluate every checkpoint on ``split`` of ``data``; print the tables, write ``eval_<data>_<split>.json``
    and ``eval_<data>_<split>_pck.png`` to ``out_dir``; return the JSON's content."""
    from handops_models.train.data import make_split

    paths = [resolve_checkpoint(p) for p in paths]
    networks, checkpoints = [], []
    for p in paths:
        network, checkpoint = load_network(p, expect_model, settings.device)
        networks.append(network)
        checkpoints.append(checkpoint)
    names = _labels(paths, [c["network"]["model"] for c in checkpoints], labels)
    datasets: dict[int, object] = {}
    results = []
    for name, path, network, checkpoint in zip(names, paths, networks, checkpoints):
        if network.input_size not in datasets:
            datasets[network.input_size] = make_split(data, root, network.input_size, split, size, **(data_options or {}))
        log(f"evaluating {name} on {data} {split} ({len(datasets[network.input_size])} images at "
            f"{network.input_size}x{network.input_size})")
        metrics = evaluate_network(network, datasets[network.input_size], settings)
        results.append({"label": name, "checkpoint": str(path), "model": checkpoint["network"]["model"],
                        "config": checkpoint["network"]["config"], "stage": checkpoint["stage_name"],
                        "epoch": checkpoint["epoch"], "step": checkpoint["step"], **metrics})
    n = {r["num_images"] for r in results}
    title = f"PCK (%) on {data} {split}, {'/'.join(map(str, sorted(n)))} images; thresholds: fractions of the crop side"
    table = results_table({r["label"]: [r["pck"][f"{t:g}"] for t in THESIS_THRESHOLDS] for r in results},
                          THESIS_THRESHOLDS, title=title, print_table=False)
    coarse = results_table({r["label"]: [r["pck_coarse"][f"{t:g}"] for t in TINY_THRESHOLDS] for r in results},
                           TINY_THRESHOLDS, title="PCK (%) at the coarse thresholds (tiny maps: 8-pixel cells)",
                           print_table=False)
    summary = "\n".join(f"{r['label']}: AUC 0-0.06 {r['auc']['0.06']:.4f}  AUC 0-0.2 {r['auc']['0.2']:.4f}  "
                        f"EPE {r['epe_px']:.2f} px ({100 * r['epe_fraction']:.2f}% of the crop)" for r in results)
    log(f"{table}\n\n{coarse}\n\n{summary}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"eval_{data}_{split}"
    plot = plot_pck_curves({r["label"]: (CURVE_THRESHOLDS, r["curve"]) for r in results}, out_dir / f"{stem}_pck.png",
                           title=f"PCK on {data} {split}", xlabel="threshold (fraction of the crop side)")
    report = {"data": data, "root": None if root is None else str(root), "split": split,
              "thresholds": list(THESIS_THRESHOLDS), "coarse_thresholds": list(TINY_THRESHOLDS),
              "curve_thresholds": list(CURVE_THRESHOLDS), "results": results, "table": table, "plot": str(plot)}
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(report, indent=1))
    log(f"wrote {path} and {plot}")
    report["json"] = str(path)
    return report
