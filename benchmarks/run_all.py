"""The main benchmark job: runs every benchmark module and prints all their tables.

    python -m benchmarks.run_all [--quick] [--threads N] [--only tree_marginals edge_conv mano synthetic_data]
                                 [--out DIR] [--update-docs]
    python benchmarks/run_all.py

A benchmark module plugs in with one entry in ``BENCHMARKS``: its name and its ``run(argv) -> str``
(measure, append the CSV, write the plot, return the markdown table). An op benchmark's ``run`` is
``harness.run_benchmark(SPEC, argv)``; ``pytest benchmarks --benchmark-only`` times the same specs' jobs.

Outputs go to an untracked folder, ``./handops-bench-results`` under the working directory unless
``--out`` says otherwise: the job leaves a checkout's ``git status`` clean. ``--update-docs`` also
redraws the README's figures in ``docs/`` and appends the rows to the tracked ``benchmarks/results/*.csv``:
on purpose only. Both reach every module through the environment (``harness.OUT_ENV``,
``harness.UPDATE_DOCS_ENV``), which each module's ``--out`` / ``--update-docs`` default to, so that a
module's ``run(argv)`` only ever receives ``--quick`` and ``--threads``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> module exposing run(argv) -> str
BENCHMARKS = {
    "tree_marginals": "benchmarks.bench_tree_marginals",
    "edge_conv": "benchmarks.bench_edge_conv",
    "mano": "benchmarks.bench_mano",
    "synthetic_data": "benchmarks.bench_synthetic_data",
    "training_step": "benchmarks.bench_training_step",
    "mesh_pipeline": "benchmarks.bench_mesh_pipeline",
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run every handops benchmark and print the tables.")
    parser.add_argument("--quick", action="store_true", help="few repeats, for a smoke run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for every benchmark")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the CSVs and plots (default: ./handops-bench-results, not tracked)")
    parser.add_argument("--update-docs", action="store_true",
                        help="also redraw the README's figures in docs/ and append to benchmarks/results/*.csv")
    args = parser.parse_args(argv)
    from benchmarks import harness

    out = harness.output_dir(args.out)
    common = (["--quick"] if args.quick else []) + (["--threads", str(args.threads)] if args.threads else [])
    saved = {key: os.environ.get(key) for key in (harness.OUT_ENV, harness.UPDATE_DOCS_ENV)}
    os.environ[harness.OUT_ENV] = str(out)
    os.environ[harness.UPDATE_DOCS_ENV] = "1" if args.update_docs else "0"
    try:
        tables = []
        for name in args.only:
            module = importlib.import_module(BENCHMARKS[name])  # imported lazily: one broken benchmark stays local
            tables.append(module.run(common))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    print("\n\n".join(tables))
    print(f"\nCSV rows and plots: {out}" + (" (and the README's figures in docs/)" if args.update_docs else ""))


if __name__ == "__main__":
    main()
