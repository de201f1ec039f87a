"""Shared benchmark plumbing: timing, the CSV log, the markdown table and the plot.

A benchmark module measures ``Measurement`` s (one provider, mode and batch size each) and hands
them to :func:`markdown_table`, :func:`append_csv` and :func:`plot`.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "Measurement",
    "TimingPolicy",
    "CpuContention",
    "device_name",
    "time_median",
    "gaussian_blobs",
    "markdown_table",
    "append_csv",
    "plot",
    "benchmark_parser",
    "run_with_threads",
    "handops_backend",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Measurement:
    """The median time of one provider in one mode at one batch size; ``shape`` holds the other sizes."""

    provider: str
    mode: str
    batch: int
    median_ms: float
    repeats: int
    shape: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TimingPolicy:
    """Warm up for ``warmup_s`` (at least one call), then repeat until ``budget_s`` is spent,
    within [min_repeats, max_repeats]: fast providers get many repeats, slow ones few.

    A call whose first (warm-up) run takes ``single_call_s`` or longer is timed once, by that run:
    its one-time costs are noise next to seconds of work, and repeating it would stretch a
    benchmark by minutes. The default (infinity) always repeats.
    """

    warmup_s: float = 0.2
    budget_s: float = 2.0
    min_repeats: int = 3
    max_repeats: int = 30
    single_call_s: float = math.inf

    @classmethod
    def quick(cls) -> TimingPolicy:
        return cls(warmup_s=0.0, budget_s=0.05, min_repeats=1, max_repeats=3)


class CpuContention:
    """Share of wall time some task waited for a CPU (Linux pressure stall information), over a ``with`` block.

    Near 0 when the benchmark has the machine to itself; on a shared machine other processes make the
    timings unreliable, so benchmarks print it next to their tables. None where /proc/pressure is missing.
    """

    _PSI = Path("/proc/pressure/cpu")

    def __init__(self) -> None:
        self.share: float | None = None

    @classmethod
    def _stalled_us(cls) -> int | None:
        try:
            some = cls._PSI.read_text().splitlines()[0]  # "some avg10=... total=<microseconds>"
            return int(some.rsplit("total=", 1)[1])
        except (OSError, IndexError, ValueError):
            return None

    def __enter__(self) -> CpuContention:
        self._start, self._stalled = time.perf_counter(), self._stalled_us()
        return self

    def __exit__(self, *exc) -> None:
        stalled = self._stalled_us()
        if stalled is not None and self._stalled is not None:
            self.share = (stalled - self._stalled) * 1e-6 / max(time.perf_counter() - self._start, 1e-9)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_median(fn: Callable[[], object], device: torch.device, policy: TimingPolicy) -> tuple[float, int]:
    """(median milliseconds per call of ``fn``, number of timed calls)."""

    def timed_call() -> float:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # kernels run asynchronously; time them, not their launch
        return time.perf_counter() - start

    warmup_end = time.perf_counter() + policy.warmup_s
    first = timed_call()
    if first >= policy.single_call_s:
        return 1e3 * first, 1
    while time.perf_counter() < warmup_end:
        timed_call()
    times: list[float] = []
    while len(times) < policy.max_repeats and (len(times) < policy.min_repeats or sum(times) < policy.budget_s):
        times.append(timed_call())
    return 1e3 * statistics.median(times), len(times)


def gaussian_blobs(
    count: int,
    size: tuple[int, int],
    sigma: tuple[float, float],
    centre_lo: tuple[float, float],
    centre_hi: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """[count, rows, cols] maps ``exp(-|p - centre|^2 / (2 s^2))``, heatmap-like benchmark inputs:
    per map a random centre in [centre_lo, centre_hi] (row, col) and a random s in [sigma[0], sigma[1]]."""
    rows, cols = size
    r = torch.arange(rows, dtype=torch.float32).view(1, rows, 1)
    c = torch.arange(cols, dtype=torch.float32).view(1, 1, cols)
    cr = centre_lo[0] + (centre_hi[0] - centre_lo[0]) * torch.rand(count, 1, 1, generator=generator)
    cc = centre_lo[1] + (centre_hi[1] - centre_lo[1]) * torch.rand(count, 1, 1, generator=generator)
    s = sigma[0] + (sigma[1] - sigma[0]) * torch.rand(count, 1, 1, generator=generator)
    return torch.exp(-((r - cr) ** 2 + (c - cc) ** 2) / (2 * s**2))


def markdown_table(measurements: Sequence[Measurement], providers: Sequence[str], baseline: str) -> str:
    """Rows (B, mode); a time column per provider and a ``provider / baseline`` ratio column per other provider."""
    times = {(m.batch, m.mode, m.provider): m.median_ms for m in measurements}
    rows = list(dict.fromkeys((m.batch, m.mode) for m in measurements))
    others = [p for p in providers if p != baseline] if baseline in providers else []
    header = ["B", "mode"] + [f"{p} (ms)" for p in providers] + [f"{p} / {baseline}" for p in others]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    for batch, mode in rows:
        cells = [str(batch), mode]
        cells += [_format_ms(times.get((batch, mode, p))) for p in providers]
        for p in others:
            num, den = times.get((batch, mode, p)), times.get((batch, mode, baseline))
            cells.append("-" if num is None or den is None else f"{num / den:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def append_csv(path: Path, op: str, measurements: Sequence[Measurement], device: torch.device, extra: dict[str, str]) -> None:
    """Appends one row per measurement, writing the header first when the file is new.

    Columns: timestamp, device, threads, torch_version, ``extra`` (e.g. handops_version), op,
    provider, mode, B, the ``shape`` entries, median_ms, repeats.
    """
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    context = {
        "timestamp": stamp,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    rows = [
        {**context, **extra, "op": op, "provider": m.provider, "mode": m.mode, "B": m.batch, **m.shape,
         "median_ms": f"{m.median_ms:.4f}", "repeats": m.repeats}
        for m in measurements
    ]
    if not rows:
        return
    columns = list(rows[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    is_new = not path.exists() or path.stat().st_size == 0
    if not is_new:
        with open(path, newline="") as existing:
            header = next(csv.reader(existing), [])
        if header != columns:
            raise ValueError(f"{path} has columns {header}, this benchmark writes {columns}; pass another --csv path")
    with open(path, "a", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        if is_new:
            writer.writeheader()
        writer.writerows(rows)


def plot(path: Path, measurements: Sequence[Measurement], providers: Sequence[str], modes: Sequence[str], title: str) -> None:
    """Time vs B per provider, log-log, one panel per mode; written as a PNG by the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * len(modes), 4), layout="constrained")
    FigureCanvasAgg(figure)  # render without pyplot or a display
    for axes, mode in zip(figure.subplots(1, len(modes), squeeze=False)[0], modes):
        for provider in providers:
            points = sorted((m.batch, m.median_ms) for m in measurements if m.provider == provider and m.mode == mode)
            if points:
                axes.plot(*zip(*points), marker="o", label=provider)
        axes.set_xscale("log", base=2)
        batches = sorted({m.batch for m in measurements})
        axes.set_xticks(batches, labels=[str(b) for b in batches])
        axes.minorticks_off()
        axes.set_yscale("log")
        axes.set_xlabel("batch size B")
        axes.set_ylabel("median time (ms)")
        axes.set_title(mode)
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(os.fspath(path), dpi=120)


def benchmark_parser(description: str, op: str, providers: Sequence[str]) -> argparse.ArgumentParser:
    """The command-line flags every op benchmark shares (a module adds its own, e.g. --heads)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--size", type=int, default=46, help="heatmap height = width (default 46)")
    parser.add_argument("--kernel", type=int, default=45, help="odd kernel height = width (default 45)")
    parser.add_argument("--providers", nargs="+", choices=list(providers), default=list(providers))
    parser.add_argument("--quick", action="store_true", help="one warm-up call and at most 3 repeats (smoke tests)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--csv", type=Path, default=RESULTS_DIR / f"{op}.csv")
    parser.add_argument("--plot", type=Path, default=RESULTS_DIR / f"{op}.png")
    return parser


def run_with_threads(threads: int | None, benchmark: Callable[[], str]) -> str:
    """benchmark() with torch.set_num_threads(threads) (None: torch's default), restored afterwards."""
    default_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return benchmark()
    finally:
        torch.set_num_threads(default_threads)  # do not leak the setting into the next benchmark


def handops_backend(device: torch.device, op: str) -> str:
    """What the handops op dispatches to on ``device``: its kernels, or the reference fallback."""
    import handops
    from handops.ops._dispatch import triton_module

    if device.type == "cpu":
        return "cpp" if handops.HAS_EXTENSION else "reference"
    if device.type == "cuda":
        return "triton" if triton_module(op) is not None else "reference"
    return "reference"
