"""Shared benchmark plumbing: the declarative spec of an op benchmark, and the loop that runs it.

An op benchmark (``bench_*.py``) declares a :class:`BenchmarkSpec`: its providers, the cases (inputs
shared by every provider), the modes and the workload (the call to time). The harness does the rest,
one way for every op:

* :func:`run_benchmark` is the command line: it sweeps every (case, mode, provider) with a progress bar,
  times each with :func:`time_median`, appends the CSV (:func:`append_csv`), draws the plot
  (:func:`plot`) and returns the markdown table(s) (:func:`markdown_table`);
* ``benchmarks/test_benchmarks.py`` runs the same (case, mode, provider) jobs, :func:`measurement_jobs`,
  under pytest-benchmark (``pytest benchmarks --benchmark-only``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

import handops

__all__ = [
    "Case",
    "BenchmarkSpec",
    "Measurement",
    "TimingPolicy",
    "CpuContention",
    "run_benchmark",
    "measurement_jobs",
    "benchmark_parser",
    "device_name",
    "synchronized",
    "time_median",
    "gaussian_blobs",
    "markdown_table",
    "append_csv",
    "output_dir",
    "add_output_arguments",
    "output_paths",
    "publish",
    "plot",
    "contention_warning",
    "run_with_threads",
    "handops_backend",
]

# Where a run writes its CSV rows and plots: --out, else $HANDOPS_BENCH_OUT (set by run_all --out), else
# ./handops-bench-results under the working directory: never a tracked file (.gitignore lists the default).
OUT_ENV, UPDATE_DOCS_ENV = "HANDOPS_BENCH_OUT", "HANDOPS_BENCH_UPDATE_DOCS"
DEFAULT_OUT = "handops-bench-results"
# What the README shows, written only with --update-docs: the figures (docs/<op>_benchmark.png) and the
# tracked record of the runs behind its tables (benchmarks/results/<op>.csv).
REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "docs"
TRACKED_RESULTS_DIR = Path(__file__).resolve().parent / "results"


def output_dir(out: Path | str | None = None) -> Path:
    """The folder a run writes to: ``out``, else ``$HANDOPS_BENCH_OUT``, else ./handops-bench-results."""
    return Path(out or os.environ.get(OUT_ENV) or DEFAULT_OUT).resolve()


def __getattr__(name: str):
    if name == "RESULTS_DIR":  # the old constant, for benchmark modules that still read it: the output folder
        return output_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_output_arguments(parser: argparse.ArgumentParser, plot: bool = True) -> None:
    """--out, --update-docs, --csv (and --plot): see :func:`output_paths`."""
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the CSV and plot (default ${OUT_ENV}, else ./{DEFAULT_OUT})")
    parser.add_argument("--update-docs", action="store_true", default=os.environ.get(UPDATE_DOCS_ENV) == "1",
                        help="also redraw the README's figure in docs/ and append the rows to the tracked "
                             "benchmarks/results/<op>.csv (on purpose only)")
    parser.add_argument("--csv", type=Path, default=None, help="the CSV to append to (default <out>/<op>.csv)")
    if plot:
        parser.add_argument("--plot", type=Path, default=None, help="the PNG to write (default <out>/<op>.png)")


def output_paths(args: argparse.Namespace, op: str) -> tuple[Path, Path | None]:
    """(the CSV, the PNG or None) of a run, from :func:`add_output_arguments`' flags."""
    out = output_dir(args.out)
    csv_path = args.csv if args.csv is not None else out / f"{op}.csv"
    if not hasattr(args, "plot"):
        return csv_path, None
    return csv_path, (args.plot if args.plot is not None else out / f"{op}.png")


def publish(op: str, measurements: Sequence[Measurement], device: torch.device, extra: dict[str, str],
            plot_path: Path | None = None, figure: str | None = None) -> list[Path]:
    """--update-docs: appends the rows to benchmarks/results/<op>.csv and copies the plot to docs/<figure>."""
    import shutil

    written = [TRACKED_RESULTS_DIR / f"{op}.csv"]
    append_csv(written[0], op, measurements, device, extra)
    if plot_path is not None:
        written.append(DOCS_DIR / (figure or f"{op}_benchmark.png"))
        shutil.copyfile(plot_path, written[-1])
    return written


@dataclass(frozen=True)
class Measurement:
    """The median time of one provider in one mode at one batch size; ``shape`` holds the other sizes (CSV columns)."""

    provider: str
    mode: str
    batch: int
    median_ms: float
    repeats: int
    shape: dict[str, int] = field(default_factory=dict)
    group: str = ""  # the table (and plot panels) it belongs to: its case's group


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


def _always(provider: str, case: Case, mode: str) -> bool:
    return True


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class Case:
    """One set of inputs, timed for every provider in every mode.

    ``make_inputs(device)`` builds them when the case is measured: the tuple the spec's workload takes.
    ``kind`` names them within a table: the case's rows read "<kind> <mode>" (e.g. "peaked forward").
    Cases of one ``group`` share a table, headed by ``heading``, and plot panels titled "<group>, <mode>".
    ``shape`` holds the sizes other than B, written as CSV columns.
    """

    batch: int
    make_inputs: Callable[[torch.device], tuple]
    shape: Mapping[str, object] = field(default_factory=dict)
    kind: str = ""
    group: str = ""
    heading: str = ""

    @property
    def label(self) -> str:
        """What the progress bar and the pytest ids call the case, e.g. "10 heads B=8" or "B=1 peaked"."""
        return " ".join(part for part in (self.group, f"B={self.batch}", self.kind) if part)

    def row_mode(self, mode: str) -> str:
        """The mode as the table, the CSV and the plot name it: prefixed by the case's kind."""
        return f"{self.kind} {mode}" if self.kind else mode


@dataclass(frozen=True)
class BenchmarkSpec:
    """What an op benchmark declares; :func:`run_benchmark` (and ``benchmarks/test_benchmarks.py``) does the rest.

    op: the op's name: CSV ``op`` column, default CSV and plot file names, the backend looked up.
    description: the command line's help text.
    providers: name -> the implementation that the workload calls (the first is the default column order).
    modes: what is timed per case and provider, e.g. ("forward", "forward+backward").
    cases: the cases the parsed command line asks for, in sweep order.
    workload: (provider, case inputs, mode) -> the zero-argument call to time; its set-up is not timed.
    title: the parsed command line -> the table and plot title (the device's name is appended).
    baseline: the provider the ratio columns divide by.
    measures: (provider name, case, mode) -> whether that provider is timed there (e.g. only where it is exact).
    add_arguments: adds the op's own flags (e.g. --heads) or defaults to :func:`benchmark_parser`'s.
    timing: the timing policy without --quick.
    devices: the device types the benchmark runs on (None: any).
    notes: lines printed under the title, explaining the table.
    borrowed_cells: (provider, mode) -> the mode whose time that provider shows in that row of the table
        (a provider without such a mode of its own; the CSV and the plot keep only what was measured).
    supplement: a measurement outside the sweep (bench_mano's fitting), run after it: parsed command line ->
        (its measurements, appended to the CSV; its markdown, printed after the tables).
    quick_argv: the flags of the quick sizes that ``pytest benchmarks`` times by default.
    requires: modules a provider needs (pytest skips the benchmark without them).
    """

    op: str
    description: str
    providers: Mapping[str, Callable]
    modes: Sequence[str]
    cases: Callable[[argparse.Namespace], Sequence[Case]]
    workload: Callable[[Callable, tuple, str], Callable[[], object]]
    title: Callable[[argparse.Namespace], str]
    baseline: str = "handops"
    measures: Callable[[str, Case, str], bool] = _always
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    timing: TimingPolicy = TimingPolicy()
    devices: tuple[str, ...] | None = None
    notes: Sequence[str] = ()
    borrowed_cells: Mapping[tuple[str, str], str] = field(default_factory=dict)
    supplement: Callable[[argparse.Namespace], tuple[list[Measurement], str]] | None = None
    quick_argv: Sequence[str] = ()
    requires: Sequence[str] = ()


def benchmark_parser(spec: BenchmarkSpec) -> argparse.ArgumentParser:
    """The command line of an op benchmark: the flags every one shares, then the spec's own."""
    parser = argparse.ArgumentParser(description=spec.description)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--size", type=int, default=46, help="heatmap height = width (default 46)")
    parser.add_argument("--kernel", type=int, default=45, help="odd kernel height = width (default 45)")
    parser.add_argument("--providers", nargs="+", choices=list(spec.providers), default=list(spec.providers))
    parser.add_argument("--quick", action="store_true", help="one warm-up call and at most 3 repeats (smoke tests)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_output_arguments(parser)
    spec.add_arguments(parser)
    return parser


def measurement_jobs(spec: BenchmarkSpec, cases: Sequence[Case], providers: Sequence[str]) -> list[tuple[Case, str, str]]:
    """Every (case, mode, provider) to time, in sweep order: case by case, mode by mode, provider by provider."""
    return [
        (case, mode, provider)
        for case in cases
        for mode in spec.modes
        for provider in providers
        if spec.measures(provider, case, mode)
    ]


def run_benchmark(spec: BenchmarkSpec, argv: Sequence[str] | None = None) -> str:
    """The command line of an op benchmark: times every job, appends the CSV, writes the plot; returns the markdown."""
    args = benchmark_parser(spec).parse_args(argv)
    return run_with_threads(args.threads, lambda: _run(spec, args))


def _sweep(spec: BenchmarkSpec, cases: Sequence[Case], providers: Sequence[str], device: torch.device,
           policy: TimingPolicy) -> list[Measurement]:
    """Times every job of :func:`measurement_jobs` with a progress bar; one set of inputs per case."""
    measurements: list[Measurement] = []
    inputs_of, inputs = None, ()
    with tqdm(measurement_jobs(spec, cases, providers), desc=spec.op, unit="measurement") as progress:
        for case, mode, provider in progress:
            progress.set_postfix_str(f"{case.label} {mode} {provider}")
            if case is not inputs_of:  # the inputs are shared by every provider and mode of the case
                inputs_of, inputs = case, ()  # let the last case's tensors go before making the next
                inputs = case.make_inputs(device)
            call = spec.workload(spec.providers[provider], inputs, mode)
            median_ms, repeats = time_median(call, device, policy)
            mode_name = case.row_mode(mode)
            measurements.append(Measurement(provider, mode_name, case.batch, median_ms, repeats, dict(case.shape), case.group))
    return measurements


def _run(spec: BenchmarkSpec, args: argparse.Namespace) -> str:
    """The sweep and the spec's supplement, then the CSV rows, the plot and the markdown (notes, tables, supplement)."""
    device = torch.device(args.device)
    if spec.devices is not None and device.type not in spec.devices:
        raise ValueError(f"the {spec.op} benchmark runs on {' or '.join(spec.devices)}, not {device.type}")
    policy = TimingPolicy.quick() if args.quick else spec.timing
    cases = spec.cases(args)

    with CpuContention() as contention:
        measurements = _sweep(spec, cases, args.providers, device, policy)
        supplement, supplement_text = spec.supplement(args) if spec.supplement is not None else ([], "")

    backend = handops_backend(device, spec.op)
    extra = {"handops_version": handops.__version__, "handops_backend": backend}
    csv_path, plot_path = output_paths(args, spec.op)
    append_csv(csv_path, spec.op, measurements + supplement, device, extra)
    title = f"{spec.title(args)}, {device_name(device)}"
    # One plot panel per (group, mode): "10 heads, forward".
    in_panels = [dataclasses.replace(m, mode=f"{m.group}, {m.mode}" if m.group else m.mode) for m in measurements]
    plot(plot_path, in_panels, args.providers, list(dict.fromkeys(m.mode for m in in_panels)), title)
    if args.update_docs:
        publish(spec.op, measurements + supplement, device, extra, plot_path)

    notes = [f"### {title}, {torch.get_num_threads()} threads, handops backend: {backend}", *spec.notes]
    if backend == "reference" and "handops" in args.providers:
        notes.append("(handops has no compiled kernel here: its column times the reference behind the op)")
    warning = contention_warning(contention) if device.type == "cpu" else None
    notes += [warning] if warning else []
    headings = {case.group: case.heading for case in cases}
    tables = []
    for group in dict.fromkeys(m.group for m in measurements):
        rows = [m for m in measurements if m.group == group]
        rows += [dataclasses.replace(m, provider=provider, mode=mode)
                 for (provider, mode), source in spec.borrowed_cells.items()
                 for m in rows if m.provider == provider and m.mode == source]
        table = markdown_table(rows, args.providers, spec.baseline)
        tables.append(f"{headings[group]}\n\n{table}" if headings[group] else table)
    text = "\n".join(notes) + "\n\n" + "\n\n".join(tables) + "\n"
    return text + (f"\n{supplement_text}\n" if supplement_text else "")


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


def contention_warning(contention: CpuContention) -> str | None:
    """The line to print under a table when other processes held the CPUs for over 10% of the run."""
    if contention.share is None or contention.share <= 0.1:
        return None
    return f"(warning: tasks waited for a CPU {100 * contention.share:.0f}% of the run: other processes skew these timings)"


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


def synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``fn`` followed by a wait for ``device``: CUDA kernels run asynchronously; time them, not their launch."""
    if device.type != "cuda":
        return fn

    def call_and_wait() -> object:
        result = fn()
        torch.cuda.synchronize(device)
        return result

    return call_and_wait


def time_median(fn: Callable[[], object], device: torch.device, policy: TimingPolicy) -> tuple[float, int]:
    """(median milliseconds per call of ``fn``, number of timed calls)."""
    call = synchronized(fn, device)

    def timed_call() -> float:
        start = time.perf_counter()
        call()
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
    from handops.ops._dispatch import triton_module

    if device.type == "cpu":
        return "cpp" if handops.HAS_EXTENSION else "reference"
    if device.type == "cuda":
        return "triton" if triton_module(op) is not None else "reference"
    return "reference"
