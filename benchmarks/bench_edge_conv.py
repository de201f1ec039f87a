"""Benchmark of handops.edge_conv (hand graph, 61 edge kernels) against two pure-PyTorch providers.

Providers (each maps x [B, K, H, W] and weight [Hd, E, kh, kw] to [B, Hd, K, H, W]):
    handops            handops.edge_conv, every head in one call (weight [E, kh, kw] for one head)
    literal_reference  handops._reference: gather, grouped conv2d, aggregate (thesis Eq. 5.2 literally)
    fft_alternative    benchmarks.alternatives.edge_conv_fft head by head, outputs stacked

Modes: ``forward`` (under no_grad) and ``forward+backward`` (gradients of ``(y * g).sum()`` with
respect to x and weight, g fixed and random). One table per head count.

The literal reference takes seconds per call at 10 heads, so a call whose warm-up alone takes
``SINGLE_CALL_S`` is timed once (see :class:`harness.TimingPolicy`): the default run takes a few minutes.

    python -m benchmarks.bench_edge_conv [--batch-sizes 1 8 32] [--heads 1 10] [--quick] [--providers ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

import handops
from benchmarks import harness
from benchmarks.alternatives import edge_conv_fft
from handops._reference.edge_conv import edge_conv_reference

OP = "edge_conv"
MODES = ("forward", "forward+backward")
BASELINE = "handops"
SINGLE_CALL_S = 2.0


def _handops(x: torch.Tensor, weight: torch.Tensor, graph: handops.Graph) -> torch.Tensor:
    """One call for all heads; a single head through the op's one-layer form [E, kh, kw]."""
    if weight.shape[0] == 1:
        return handops.edge_conv(x, weight[0], graph)[:, None]
    return handops.edge_conv(x, weight, graph)


def _literal_reference(x: torch.Tensor, weight: torch.Tensor, graph: handops.Graph) -> torch.Tensor:
    """The reference as it is: one gather, then a grouped conv2d and an aggregation per head."""
    return edge_conv_reference(x, weight, None, graph)


def _fft_alternative(x: torch.Tensor, weight: torch.Tensor, graph: handops.Graph) -> torch.Tensor:
    """edge_conv_fft head by head: each head transforms the node maps again."""
    return torch.stack([edge_conv_fft(x, head_weight, graph) for head_weight in weight], dim=1)


PROVIDERS: dict[str, Callable[[torch.Tensor, torch.Tensor, handops.Graph], torch.Tensor]] = {
    "handops": _handops,
    "literal_reference": _literal_reference,
    "fft_alternative": _fft_alternative,
}


def make_heatmaps(batch: int, height: int, width: int, graph: handops.Graph, seed: int = 0) -> torch.Tensor:
    """x [B, K, H, W] on the CPU: one Gaussian blob per node (sigma 1.5-3 px, random centre) + 1% noise."""
    gen = torch.Generator().manual_seed(seed)
    maps = harness.gaussian_blobs(batch * graph.num_nodes, (height, width), (1.5, 3.0), (0, 0), (height - 1, width - 1), gen)
    maps = maps + 0.01 * torch.rand(maps.shape, generator=gen)
    return maps.view(batch, graph.num_nodes, height, width)


def make_weights(heads: int, kernel: int, graph: handops.Graph, seed: int = 1) -> torch.Tensor:
    """weight [Hd, E, k, k] on the CPU: small random kernels, N(0, 0.01^2) entries."""
    gen = torch.Generator().manual_seed(seed)
    return 0.01 * torch.randn(heads, graph.num_edges, kernel, kernel, generator=gen)


def _workload(provider, x, weight, graph, mode: str) -> Callable[[], object]:
    """The call to time: a no-grad forward, or forward + gradients w.r.t. x and weight."""
    if mode == "forward":

        def forward():
            with torch.no_grad():
                return provider(x, weight, graph)

        return forward
    x, weight = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
    out_shape = (x.shape[0], weight.shape[0], *x.shape[1:])
    grad_out = torch.randn(out_shape, generator=torch.Generator().manual_seed(2)).to(x.device)

    def forward_backward():
        out = provider(x, weight, graph)
        return torch.autograd.grad((out * grad_out).sum(), (x, weight))

    return forward_backward



def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = harness.benchmark_parser(__doc__.split("\n")[0], OP, list(PROVIDERS))
    parser.add_argument("--heads", type=int, nargs="+", default=[1, 10], help="head counts Hd (default 1 10)")
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> str:
    """Measures every case, appends the CSV, writes the plot; returns the markdown table(s)."""
    args = parse_args(argv)
    return harness.run_with_threads(args.threads, lambda: _benchmark(args))


def _benchmark(args: argparse.Namespace) -> str:
    device, graph = torch.device(args.device), handops.hand_graph()
    policy = harness.TimingPolicy.quick() if args.quick else harness.TimingPolicy(single_call_s=SINGLE_CALL_S)
    jobs = [(h, b, mode, p) for h in args.heads for b in args.batch_sizes for mode in MODES for p in args.providers]

    measurements, heatmaps, weights = [], {}, {}
    with harness.CpuContention() as contention, tqdm(jobs, desc=OP, unit="measurement") as progress:
        for heads, batch, mode, provider in progress:
            progress.set_postfix_str(f"Hd={heads} B={batch} {mode} {provider}")
            if batch not in heatmaps:  # one input per size, shared by every provider
                heatmaps[batch] = make_heatmaps(batch, args.size, args.size, graph).to(device)
            if heads not in weights:
                weights[heads] = make_weights(heads, args.kernel, graph).to(device)
            call = _workload(PROVIDERS[provider], heatmaps[batch], weights[heads], graph, mode)
            median_ms, repeats = harness.time_median(call, device, policy)
            shape = {"heads": heads, "H": args.size, "W": args.size, "kh": args.kernel, "kw": args.kernel}
            measurements.append(harness.Measurement(provider, mode, batch, median_ms, repeats, shape))

    backend = harness.handops_backend(device, OP)
    extra = {"handops_version": handops.__version__, "handops_backend": backend}
    harness.append_csv(args.csv, OP, measurements, device, extra)
    title = f"{OP}: hand graph, H=W={args.size}, {args.kernel}x{args.kernel} kernels, {harness.device_name(device)}"
    # The harness plots one panel per mode: make that one panel per (Hd, mode).
    labelled = [dataclasses.replace(m, mode=_label(m.shape["heads"], m.mode)) for m in measurements]
    panels = [_label(h, mode) for h in args.heads for mode in MODES]
    harness.plot(args.plot, labelled, args.providers, panels, title)

    notes = [f"### {title}, {torch.get_num_threads()} threads, handops backend: {backend}"]
    if backend == "reference" and "handops" in args.providers:
        notes.append("(handops has no compiled kernel here: its column times the reference behind the op)")
    if device.type == "cpu" and contention.share is not None and contention.share > 0.1:
        share = f"{100 * contention.share:.0f}%"
        notes.append(f"(warning: tasks waited for a CPU {share} of the run: other processes skew these timings)")
    tables = []
    for heads in args.heads:
        of_heads = [m for m in measurements if m.shape["heads"] == heads]
        heading = f"{_label(heads)}, weight [{heads}, {graph.num_edges}, {args.kernel}, {args.kernel}]:"
        tables.append(heading + "\n\n" + harness.markdown_table(of_heads, args.providers, BASELINE))
    return "\n".join(notes) + "\n\n" + "\n\n".join(tables) + "\n"


def _label(heads: int, mode: str | None = None) -> str:
    """'1 head', '10 heads', or with a mode: '10 heads, forward'."""
    text = f"{heads} head{'s' if heads != 1 else ''}"
    return text if mode is None else f"{text}, {mode}"


def main(argv: Sequence[str] | None = None) -> None:
    print(run(argv))


if __name__ == "__main__":
    main()
