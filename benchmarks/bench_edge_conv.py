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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import handops
from benchmarks import harness
from benchmarks.alternatives import edge_conv_fft
from handops._reference.edge_conv import edge_conv_reference

OP = "edge_conv"
MODES = ("forward", "forward+backward")
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


def _workload(provider, inputs: tuple, mode: str) -> Callable[[], object]:
    """The call to time: a no-grad forward, or forward + gradients w.r.t. x and weight."""
    x, weight, graph = inputs
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


def _heads_label(heads: int) -> str:
    """'1 head', '10 heads'."""
    return f"{heads} head{'s' if heads != 1 else ''}"


def _cases(args: argparse.Namespace) -> list[harness.Case]:
    """Per head count (a table each), per batch size: (x, weight, graph) on the device."""
    graph = handops.hand_graph()

    def inputs_of(heads: int, batch: int) -> Callable[[torch.device], tuple]:
        def make_on(device: torch.device) -> tuple:
            x = make_heatmaps(batch, args.size, args.size, graph)
            return x.to(device), make_weights(heads, args.kernel, graph).to(device), graph

        return make_on

    return [
        harness.Case(
            batch,
            inputs_of(heads, batch),
            {"heads": heads, "H": args.size, "W": args.size, "kh": args.kernel, "kw": args.kernel},
            group=_heads_label(heads),
            heading=f"{_heads_label(heads)}, weight [{heads}, {graph.num_edges}, {args.kernel}, {args.kernel}]:",
        )
        for heads in args.heads
        for batch in args.batch_sizes
    ]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heads", type=int, nargs="+", default=[1, 10], help="head counts Hd (default 1 10)")


SPEC = harness.BenchmarkSpec(
    op=OP,
    description=__doc__.splitlines()[0],
    providers=PROVIDERS,
    modes=MODES,
    cases=_cases,
    workload=_workload,
    title=lambda args: f"{OP}: hand graph, H=W={args.size}, {args.kernel}x{args.kernel} kernels",
    add_arguments=_add_arguments,
    timing=harness.TimingPolicy(single_call_s=SINGLE_CALL_S),
    quick_argv=("--batch-sizes", "1", "--heads", "1"),
)


def run(argv: Sequence[str] | None = None) -> str:
    """Measures every case, appends the CSV, writes the plot; returns the markdown tables (one per head count)."""
    return harness.run_benchmark(SPEC, argv)


if __name__ == "__main__":
    print(run())
