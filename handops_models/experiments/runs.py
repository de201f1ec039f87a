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


def _same_arguments(run: Path, arguments: list[str]) -> None:
    """Refuses a run folder whose config.json records other training arguments (a study rerun with another
    budget or data option must not reuse networks trained for the old one)."""
    path = run / "config.json"
    if not path.is_file():
        return
    stored = json.loads(path.read_text()).get("argv", [])
    if "--out" in stored:  # the run's own folder and the resume flag are not settings
        i = stored.index("--out")
        stored = stored[:i] + stored[i + 2:]
    stored = [a for a in stored if a != "--resume"]
    if stored != ["train", *arguments]:
        raise RuntimeError(f"{run} holds a run trained with other arguments:\n  {' '.join(stored)}\nnow:\n  "
                           f"{' '.join(['train', *arguments])}\nuse another --out (or remove that run) to train anew")


def train_run(arguments: list[str], run: Path, smoke: bool = False) -> float | None:
    """``python -m handops_models train <arguments> --out run`` in a child process, its output appended to
    ``run/train.log``. A finished run (its final.pt complete; with ``smoke``, any final.pt: a smoke run stops
    early by design) is not trained again (returns None); an interrupted one resumes from its last.pt. Either
    must have been started with the same arguments (its config.json's argv), else a RuntimeError.
    Returns the seconds it took; a failed run is a RuntimeError naming its log."""
    run = Path(run)
    final = run / "final.pt"
    _same_arguments(run, arguments)
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
