"""One training step of AGMN, R-MGMN and SiaPose, with the handops ops and with the thesis-style structured part.

    python -m benchmarks.bench_training_step                    # tiny at B=32 and paper at B=2, CPU
    python -m benchmarks.bench_training_step --quick            # few repeats, no paper-size thesis-style steps

A step is what a training loop does per batch: ``outputs = model(images)``, ``model.loss(outputs,
targets)`` on targets from fixed random keypoints inside the image, ``backward()`` and an Adam step
(gradients zeroed first). Each network is timed two ways, side by side in one run (``--impls``):

    handops    ``model.structured_impl = "handops"`` (the default): the fused ops (``handops.tree_marginals``,
               ``handops.edge_conv``)
    reference  ``model.structured_impl = "reference"``: ``handops._reference``, one message (AGMN, R-MGMN)
               or one head's grouped convolution (SiaPose) at a time, as the thesis' code runs them

Networks (``--models``): AGMN (one tree model per image from the pairwise branch), R-MGMN (a pool of 20
tree models mixed by the classifier's weights, one ``tree_marginals`` call) and 10-head SiaPose with a CPM
estimator (5 edge-aware layers per head: 5 ``edge_conv`` calls, 50 per-head layers in the reference).
Configs (``--configs``): ``tiny`` at B=``--tiny-batch`` (32) and ``paper`` at B=``--paper-batch`` (2).

Timing. Both implementations start from the same weights (one model and its deep copy) on the same batch,
each with its own Adam. Each takes one warm-up step; its time sets the number of timed steps n:
``--budget-s`` divided by it, within [1, ``--max-repeats``] (``--repeats`` fixes n). The timed steps of
the two alternate (handops, reference, handops, ...) so that a change in the machine's load hits both;
the table gives the median of each and n. A step whose warm-up takes ``--single-step-s`` (90 s) or more,
as the paper-size thesis-style steps can be on a loaded 2-core CPU (about 35 s on a quiet one), is timed
once, by its warm-up: the rule of ``harness.TimingPolicy.single_call_s`` (its one-time costs, a second or
two, are noise next to that; the table says "1 (warm-up)"). ``--quick``: one timed step each, and no
paper-size thesis-style steps.

Structured share. The structured call (``handops_models.nets.structured.tree_marginals`` or
``edge_conv``, wherever a network module imported it) is wrapped for every step: its forward is
timed around the call, and its backward by a pair of identity autograd Functions, one on its inputs and
one on its output. On the CPU the autograd engine runs the ready node of highest sequence number first,
so the backward nodes the call created (numbered between the two markers) run consecutively: from the
output marker's backward to the input marker's backward is exactly the call's backward. The share is
(forward + backward of every structured call in the step) / step time, the median over the timed steps.
The markers are two views per call, nothing next to the step. tests/test_bench_training_step.py checks the
bracketing with sleeping backward nodes made before, beside and after the call; timed alone on the inputs
captured from a step, the op takes the same time as in place (SiaPose tiny, B=4, thesis-style: 0.74-0.77 s
alone, 0.72-0.77 s in the step).

Appends one row per (network, config, implementation) to ``<out>/training_step.csv`` and draws
``<out>/training_step.png`` (``--out``, default ./handops-bench-results); ``--update-docs`` also appends
the rows to the tracked ``benchmarks/results/training_step.csv`` and copies the plot to the README's
``docs/training_step_benchmark.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

import handops
from benchmarks import harness

OP = "training_step"
MODELS = ("agmn", "rmgmn", "siapose")
CONFIGS = ("tiny", "paper")
IMPLS = ("handops", "reference")
MODEL_LABELS = {"agmn": "AGMN", "rmgmn": "R-MGMN", "siapose": "SiaPose (10 heads, CPM)"}
# Build overrides: the thesis' 10-head SiaPose on a CPM estimator (the preset already is; stated here).
MODEL_OVERRIDES: dict[str, dict[str, object]] = {"siapose": {"heads": 10, "estimator": "cpm"}}


# ---------------------------------------------------------------------------------------------- timers
class StructuredTimer:
    """Seconds spent in the structured calls of one step: forward (around the call) and backward (between
    the backward of a marker on the call's output and that of a marker on its inputs)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.forward_s = 0.0
        self.backward_s = 0.0
        self.calls = 0
        self.backward_calls = 0
        self._backward_start: dict[int, float] = {}

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s

    def backward_started(self, call: int) -> None:
        self._backward_start[call] = time.perf_counter()

    def backward_finished(self, call: int) -> None:
        start = self._backward_start.pop(call, None)
        if start is not None:
            self.backward_s += time.perf_counter() - start
            self.backward_calls += 1


class _OutputMarker(torch.autograd.Function):
    """Identity on the structured call's output; its backward runs first of the call's backward."""

    @staticmethod
    def forward(ctx, timer: StructuredTimer, call: int, out: torch.Tensor) -> torch.Tensor:
        ctx.timer, ctx.call = timer, call
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ctx.timer.backward_started(ctx.call)
        return None, None, grad


class _InputMarker(torch.autograd.Function):
    """Identity on the structured call's differentiable inputs; its backward runs last of the call's backward."""

    @staticmethod
    def forward(ctx, timer: StructuredTimer, call: int, *tensors: torch.Tensor):
        ctx.timer, ctx.call = timer, call
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        ctx.timer.backward_finished(ctx.call)
        return (None, None, *grads)


def _timed(fn: Callable, timer: StructuredTimer) -> Callable:
    """``fn`` (a structured call returning one tensor) with its forward and backward added to ``timer``."""

    def timed(*args, **kwargs):
        if not torch.is_grad_enabled():
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            timer.forward_s += time.perf_counter() - start
            timer.calls += 1
            return out
        start = time.perf_counter()
        call = timer.calls
        timer.calls += 1
        slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
        args = list(args)
        if slots:
            marked = _InputMarker.apply(timer, call, *(args[i] for i in slots))
            for i, t in zip(slots, marked):
                args[i] = t
        out = fn(*args, **kwargs)
        if slots and out.requires_grad:
            out = _OutputMarker.apply(timer, call, out)
        timer.forward_s += time.perf_counter() - start
        return out

    return timed


@contextlib.contextmanager
def timing_structured_calls(timer: StructuredTimer):
    """Within the block, every network module's reference to ``structured.tree_marginals`` or
    ``structured.edge_conv`` (the names AGMN, R-MGMN and SiaPose imported) is the timed wrapper."""
    from handops_models.nets import structured

    originals = {name: getattr(structured, name) for name in ("tree_marginals", "edge_conv")}
    patched = []
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("handops_models.nets"):
            continue
        for name, original in originals.items():
            if getattr(module, name, None) is original:
                setattr(module, name, _timed(original, timer))
                patched.append((module, name, original))
    try:
        yield
    finally:
        for module, name, original in patched:
            setattr(module, name, original)


# ---------------------------------------------------------------------------------------------- one case
@dataclass
class StepResult:
    """The timed steps of one (network, config, implementation)."""

    impl: str
    warmup_s: float
    step_s: list[float] = field(default_factory=list)
    structured_s: list[float] = field(default_factory=list)
    skipped: str = ""  # why it was not measured ("" when it was)
    by_warmup: bool = False  # a step of --single-step-s or more: timed once, by its warm-up

    @property
    def repeats(self) -> int:
        return len(self.step_s)

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.step_s)

    @property
    def structured_ms(self) -> float:
        return 1e3 * statistics.median(self.structured_s)

    @property
    def share(self) -> float:
        return statistics.median(s / t for s, t in zip(self.structured_s, self.step_s))


@dataclass
class CaseResult:
    model: str
    config: str
    batch: int
    shape: dict[str, int]
    results: dict[str, StepResult]


def make_batch(model, batch: int, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images uniform in [0, 1) and keypoints uniform inside the image (a margin of one stride)."""
    gen = torch.Generator().manual_seed(seed)
    size, margin = model.input_size, model.stride
    images = torch.rand(batch, 3, size, size, generator=gen)
    keypoints = margin + (size - 1 - 2 * margin) * torch.rand(batch, model.num_keypoints, 2, generator=gen)
    return images, {"keypoints2d": keypoints}


def _step(model, optimizer, images, targets) -> None:
    optimizer.zero_grad(set_to_none=True)
    outputs = model(images)
    total, _ = model.loss(outputs, targets)
    total.backward()
    optimizer.step()


def _case_shape(model) -> dict[str, int]:
    config = model.config
    kernel = getattr(config, "kernel_size", 0)
    return {"input_size": model.input_size, "map_size": model.map_size, "kernel": kernel,
            "parameters": sum(p.numel() for p in model.parameters())}


def repeats_for(warmup_s: float, args: argparse.Namespace) -> int:
    """The number of timed steps: fixed by --repeats, else --budget-s / warm-up time within [1, --max-repeats]."""
    if args.repeats is not None:
        return args.repeats
    return max(1, min(args.max_repeats, int(args.budget_s // max(warmup_s, 1e-9))))


def measure_case(model_name: str, config: str, batch: int, impls: Sequence[str], args: argparse.Namespace,
                 skip: Callable[[str], str] = lambda impl: "", progress: tqdm | None = None) -> CaseResult:
    """Warm-up, then alternating timed steps of ``model_name`` at ``config`` and B=``batch`` per implementation."""
    from handops_models.nets import build_model

    torch.manual_seed(args.seed)
    base = build_model(model_name, config, **MODEL_OVERRIDES.get(model_name, {}))
    base.train()
    images, targets = make_batch(base, batch, args.seed)
    shape = _case_shape(base)
    models, optimizers, results = {}, {}, {}
    for i, impl in enumerate(impls):
        reason = skip(impl)
        if reason:
            results[impl] = StepResult(impl, math.nan, skipped=reason)
            continue
        model = base if i == len(impls) - 1 else copy.deepcopy(base)  # same initial weights for every impl
        model.structured_impl = impl
        models[impl], optimizers[impl] = model, torch.optim.Adam(model.parameters(), lr=args.lr)
    del base

    def describe(impl: str, what: str) -> None:
        if progress is not None:
            progress.set_postfix_str(f"{model_name} {config} B={batch} {impl} {what}")

    timer = StructuredTimer()

    def timed_step(impl: str) -> tuple[float, float]:
        timer.reset()
        start = time.perf_counter()
        _step(models[impl], optimizers[impl], images, targets)
        elapsed = time.perf_counter() - start
        if timer.calls == 0 or timer.backward_calls != timer.calls:
            raise RuntimeError(f"{model_name}: {timer.calls} structured calls timed, {timer.backward_calls} "
                               "backward passes: the structured part was not found or not differentiated")
        return elapsed, timer.total_s

    counts = {}
    with timing_structured_calls(timer):
        for impl in models:
            describe(impl, "warm-up")
            warmup_s, structured_s = timed_step(impl)
            results[impl] = StepResult(impl, warmup_s)
            if args.repeats is None and warmup_s >= args.single_step_s:
                # harness.TimingPolicy.single_call_s: its one-time costs are noise next to this step
                results[impl].step_s.append(warmup_s)
                results[impl].structured_s.append(structured_s)
                results[impl].by_warmup = True
                counts[impl] = 0
            else:
                counts[impl] = repeats_for(warmup_s, args)
        for r in range(max(counts.values(), default=0)):
            for impl in models:
                if r < counts[impl]:
                    describe(impl, f"step {r + 1}/{counts[impl]}")
                    elapsed, structured_s = timed_step(impl)
                    results[impl].step_s.append(elapsed)
                    results[impl].structured_s.append(structured_s)
    models.clear()
    optimizers.clear()
    gc.collect()
    return CaseResult(model_name, config, batch, shape, {impl: results[impl] for impl in impls})


# ---------------------------------------------------------------------------------------------- the run
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Training-step time of AGMN, R-MGMN and SiaPose: handops vs the "
                                                 "thesis-style structured part.")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--tiny-batch", type=int, default=32, help="batch size of the tiny configs (default 32)")
    parser.add_argument("--paper-batch", type=int, default=2, help="batch size of the paper configs (default 2)")
    parser.add_argument("--budget-s", type=float, default=20.0,
                        help="seconds of timed steps per network, config and implementation (default 20)")
    parser.add_argument("--max-repeats", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=None,
                        help="a fixed number of timed steps after the warm-up (overrides --budget-s and --single-step-s)")
    parser.add_argument("--single-step-s", type=float, default=90.0,
                        help="a step whose warm-up takes this long is timed once, by the warm-up (default 90 s: the "
                             "paper-size thesis-style steps on a loaded CPU; 'inf' always repeats)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="MODEL:CONFIG:IMPL",
                        help="cases not to measure, e.g. rmgmn:paper:reference (shown as skipped)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="1 timed step each, and no paper-size thesis-style steps (35 s or more each on a 2-core CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave torch's default)")
    harness.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1 if args.repeats is None else args.repeats
    for name in ("tiny_batch", "paper_batch", "max_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    for item in args.skip:
        parts = item.split(":")
        if len(parts) != 3 or parts[0] not in MODELS or parts[1] not in CONFIGS or parts[2] not in IMPLS:
            parser.error(f"--skip takes MODEL:CONFIG:IMPL with MODEL in {MODELS}, CONFIG in {CONFIGS}, "
                         f"IMPL in {IMPLS}; got {item!r}")
    return args


def run(argv: Sequence[str] | None = None) -> str:
    """Measures every case, appends the CSV, writes the plot; returns the markdown table."""
    args = parse_args(argv)
    return harness.run_with_threads(args.threads, lambda: _benchmark(args))


def _skip_reason(args: argparse.Namespace, model: str, config: str, impl: str) -> str:
    if f"{model}:{config}:{impl}" in args.skip:
        return "skipped (--skip)"
    if args.quick and config == "paper" and impl == "reference":
        return "skipped (--quick)"
    return ""


def _benchmark(args: argparse.Namespace) -> str:
    device = torch.device("cpu")
    cases = [(model, config) for config in args.configs for model in args.models]
    batch_of = {"tiny": args.tiny_batch, "paper": args.paper_batch}
    results: list[CaseResult] = []
    started = time.perf_counter()
    with harness.CpuContention() as contention, tqdm(cases, desc=OP, unit="case") as progress:
        for model, config in progress:
            results.append(measure_case(model, config, batch_of[config], args.impls, args,
                                        skip=lambda impl: _skip_reason(args, model, config, impl), progress=progress))
    wall_s = time.perf_counter() - started

    measurements = [
        harness.Measurement(impl, "train_step", case.batch, r.median_ms, r.repeats,
                            {"model": case.model, "config": case.config, **case.shape,
                             "warmup_ms": f"{1e3 * r.warmup_s:.1f}", "timed_by_warmup": int(r.by_warmup),
                             "structured_ms": f"{r.structured_ms:.4f}",
                             "structured_share": f"{r.share:.4f}"})
        for case in results for impl, r in case.results.items() if not r.skipped
    ]
    extra = {"handops_version": handops.__version__, "handops_backend": harness.handops_backend(device, "tree_marginals")}
    csv_path, plot_path = harness.output_paths(args, OP)
    harness.append_csv(csv_path, OP, measurements, device, extra)
    title = f"{OP}: one Adam step, {harness.device_name(device)}, {torch.get_num_threads()} threads"
    plot(plot_path, results, args.impls, title)
    if args.update_docs:
        harness.publish(OP, measurements, device, extra, plot_path)  # docs/training_step_benchmark.png
    return markdown(results, args, title, contention, wall_s)


# ---------------------------------------------------------------------------------------------- output
def _ms(ms: float) -> str:
    return f"{ms:.3g}" if ms < 100 else f"{ms:,.0f}"


def _share(r: StepResult) -> str:
    return f"{100 * r.share:.3g}% ({_ms(r.structured_ms)} ms)"


def table_rows(results: Sequence[CaseResult], impls: Sequence[str]) -> list[list[str]]:
    """The table's cells: model, config, B, handops ms, thesis-style ms, ratio, the two shares, repeats."""
    rows = []
    for case in results:
        h, r = case.results.get("handops"), case.results.get("reference")
        cells = [MODEL_LABELS[case.model], case.config, str(case.batch)]
        for res in (h, r):
            cells.append("-" if res is None else res.skipped or _ms(res.median_ms))
        measured = [res for res in (h, r) if res is not None and not res.skipped]
        cells.append(f"{r.median_ms / h.median_ms:.2f}" if len(measured) == 2 else "-")
        for res in (h, r):
            cells.append("-" if res is None or res.skipped else _share(res))
        cells.append(" / ".join("-" if res is None or res.skipped else "1 (warm-up)" if res.by_warmup else str(res.repeats)
                                for res in (h, r)))
        rows.append(cells)
    return rows


HEADER = ["model", "config", "B", "handops step (ms)", "thesis-style step (ms)", "thesis-style / handops",
          "structured share, handops", "structured share, thesis-style", "repeats (handops / thesis-style)"]


def markdown(results: Sequence[CaseResult], args: argparse.Namespace, title: str,
             contention: harness.CpuContention, wall_s: float) -> str:
    backend = harness.handops_backend(torch.device("cpu"), "tree_marginals")
    lines = [f"### {title}, handops backend: {backend}",
             "Step: forward, model.loss on targets of fixed random keypoints, backward, Adam. thesis-style: the same "
             "network with structured_impl='reference' (handops._reference, one message or one head at a time). "
             "Times are medians of the timed steps after one warm-up step each; structured share: the structured "
             "calls' forward + backward within the step (timed in place), their median in brackets. "
             f"'1 (warm-up)': a step of {args.single_step_s:g} s or more, timed once by its warm-up step.",
             f"(whole run: {wall_s:.0f} s)"]
    warning = harness.contention_warning(contention)
    if warning:
        lines.append(warning)
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(HEADER) - 2)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(results, args.impls)]
    return "\n".join(lines) + "\n"


def plot(path: Path, results: Sequence[CaseResult], impls: Sequence[str], title: str) -> None:
    """Bars of the median step time per network (log scale), one panel per config. Each bar's hatched
    bottom is the structured part; the label above a bar gives the time and the structured share, the
    tick label the ratio thesis-style / handops."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    configs = list(dict.fromkeys(case.config for case in results))
    if not configs:
        return
    figure = Figure(figsize=(max(6.5, 5.0 * len(configs)), 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    colours = {"handops": "tab:blue", "reference": "tab:orange"}
    labels = {"handops": "handops", "reference": "thesis-style (handops._reference)"}
    width = 0.38
    for axes, config in zip(figure.subplots(1, len(configs), squeeze=False)[0], configs):
        cases = [case for case in results if case.config == config]
        tallest = 0.0
        ticks = []
        for i, case in enumerate(cases):
            for j, impl in enumerate(impls):
                res = case.results[impl]
                x = i + (j - (len(impls) - 1) / 2) * width
                if res.skipped:
                    axes.text(x, 0.03, res.skipped, rotation=90, ha="center", va="bottom", fontsize=7,
                              color="grey", transform=axes.get_xaxis_transform())
                    continue
                total = res.median_ms / 1e3
                structured = min(res.structured_ms / 1e3, total)
                tallest = max(tallest, total)
                axes.bar(x, total, width, color=colours.get(impl), label=labels.get(impl) if i == 0 else None)
                axes.bar(x, structured, width, fill=False, hatch="///", edgecolor="black", linewidth=0,
                         label="structured part" if i == 0 and j == 0 else None)
                axes.text(x, total * 1.08, f"{total:.3g} s\n{100 * res.share:.2g}%", ha="center", va="bottom", fontsize=7)
            label = MODEL_LABELS[case.model].replace(" (", "\n(")
            h, r = case.results.get("handops"), case.results.get("reference")
            if h is not None and r is not None and not h.skipped and not r.skipped:
                label += f"\nratio {r.median_ms / h.median_ms:.1f}x"
            ticks.append(label)
        axes.set_xticks(range(len(cases)), labels=ticks, fontsize=8)
        axes.set_yscale("log")
        if tallest > 0:
            axes.set_ylim(top=tallest * 6)
        axes.set_ylabel("median step time (s)")
        axes.set_title(f"{config}, B={cases[0].batch}" if cases else config)
        axes.grid(True, axis="y", alpha=0.3)
        axes.legend(fontsize=7, loc="upper left", ncols=3)
    figure.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(str(path), dpi=120)


def main(argv: Sequence[str] | None = None) -> None:
    print(run(argv))


if __name__ == "__main__":
    main()
