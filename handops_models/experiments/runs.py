"""What the studies share: training a network through the CLI in its own process, resumably."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

__all__ = ["train_run", "run_complete"]


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
