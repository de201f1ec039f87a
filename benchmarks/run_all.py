"""The main benchmark job: runs every benchmark module and prints all their tables.

    python -m benchmarks.run_all [--quick] [--threads N] [--only tree_marginals edge_conv mano synthetic_data]
    python benchmarks/run_all.py

A benchmark module plugs in with one entry in ``BENCHMARKS``: its name and its ``run(argv) -> str``
(measure, append the CSV, write the plot, return the markdown table). An op benchmark's ``run`` is
``harness.run_benchmark(SPEC, argv)``; ``pytest benchmarks --benchmark-only`` times the same specs' jobs.
"""

from __future__ import annotations

import argparse
import importlib
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
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run every handops benchmark and print the tables.")
    parser.add_argument("--quick", action="store_true", help="few repeats, for a smoke run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for every benchmark")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args(argv)

    common = (["--quick"] if args.quick else []) + (["--threads", str(args.threads)] if args.threads else [])
    tables = []
    for name in args.only:
        module = importlib.import_module(BENCHMARKS[name])  # imported lazily: one broken benchmark stays local
        tables.append(module.run(common))
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
