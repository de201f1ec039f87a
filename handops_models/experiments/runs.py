"""What the studies share: training a network through the CLI in its own process, resumably."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["train_run", "run_complete", "write_outputs"]


def run_complete(final: Path) -> bool:
    """Whether ``final`` (a run's final.pt) records a finished recipe."""
    from handops_models.train.checkpoint import load_checkpoint

    return bool(load_checkpoint(final, build=False).get("extra", {}).get("complete", False))


def train_run(arguments: list[str], run: Path, smoke: bool = False) -> float | None:
    """``python -m handops_models train <arguments> --out run`` in a child process, its output appended to
    ``run/train.log``. A finished run (its final.pt complete; with ``smoke``, any final.pt: a smoke run stops
    early by design) is not trained again (returns None); an interrupted one resumes from its last.pt.
    Returns the seconds it took; a failed run is a RuntimeError naming its log."""
    run = Path(run)
    final = run / "final.pt"
    if final.is_file() and (smoke or run_complete(final)):
        return None
    command = [sys.executable, "-m", "handops_models", "train", *arguments, "--out", str(run)]
    if (run / "last.pt").is_file():
        command.append("--resume")
    run.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    with open(run / "train.log", "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"training in {run} failed with exit status {code}: see {run / 'train.log'}")
    return time.perf_counter() - begin


def write_outputs(out: Path, results: dict, report: str, plots, files: tuple[str, ...], docs=None, prefix: str = "") -> None:
    """A study's outputs: ``results.json``, ``tables.md`` (``report``, also printed), the PNGs that ``plots(results,
    out)`` draws, and with ``docs`` a copy of ``files`` there, each named ``prefix + name``."""
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "tables.md").write_text(report)
    print(report)
    plots(results, out)
    if docs:
        docs = Path(docs)
        docs.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copyfile(out / name, docs / f"{prefix}{name}")
        print(f"copied {', '.join(files)} to {docs}")
