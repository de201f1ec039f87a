"""Benchmark of handops.tree_marginals (adaptive kernels, hand tree) against pure-PyTorch providers.

Providers:
    handops           handops.tree_marginals (whatever backend this install dispatches to)
    thesis_reference  handops._reference: one message at a time, a grouped conv2d each
    direct_levels     benchmarks.alternatives: level-batched grouped conv2d, autograd backward
    fft_levels        benchmarks.alternatives: level-batched FFT convolutions, autograd backward

Inputs: ``peaked`` (what AGMN produces: Gaussian heatmaps and Gaussian kernels, the neighbours'
messages disagreeing with the unaries) and ``random`` (uniform). Every provider but ``fft_levels``
is exact on both; ``fft_levels`` is wrong on peaked inputs (benchmarks/alternatives.py), so it runs on
random inputs only.

Modes: ``forward`` (under no_grad) and ``forward+backward`` (gradients of ``(out * g).sum()`` with
respect to unary and pairwise, g fixed and random), each on each kind of input.

    python -m benchmarks.bench_tree_marginals [--batch-sizes 1 8 32] [--inputs peaked random] [--quick] [--providers ...]
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
from benchmarks.alternatives import tree_marginals_direct_levels, tree_marginals_fft_levels
from handops._reference.tree_marginals import tree_marginals_reference

OP = "tree_marginals"
PASSES = ("forward", "forward+backward")
INPUTS = ("peaked", "random")


def _thesis_reference(unary: torch.Tensor, pairwise: torch.Tensor, tree: handops.Tree) -> torch.Tensor:
    """The reference through the canonical shapes: pairwise [B, 1, M, kh, kw], weights ones [B, 1]."""
    weights = unary.new_ones(unary.shape[0], 1)
    return tree_marginals_reference(unary, pairwise[:, None], weights, tree)[0]


PROVIDERS: dict[str, Callable[[torch.Tensor, torch.Tensor, handops.Tree], torch.Tensor]] = {
    "handops": handops.tree_marginals,
    "thesis_reference": _thesis_reference,
    "direct_levels": tree_marginals_direct_levels,
    "fft_levels": tree_marginals_fft_levels,
}
# The inputs on which a provider computes the op's result; it is not timed on the others.
EXACT_ON = {"fft_levels": ("random",)}


def make_inputs(kind: str, batch: int, height: int, width: int, kernel: int, tree: handops.Tree, seed: int = 0):
    """unary [B, K, H, W] and pairwise [B, M, k, k] on the CPU (the same on every device).

    peaked: one Gaussian per keypoint (sigma 1-2.5 px, anywhere on the map, no noise floor, so that
    messages must move a keypoint across the map) and one Gaussian per message kernel (sigma 1.5-4 px
    around an offset within k/4 of the centre): AGMN's heatmaps and kernels.
    random: uniform in [0, 1).
    """
    gen = torch.Generator().manual_seed(seed)
    num_nodes, num_messages = tree.num_nodes, tree.num_messages
    if kind == "random":
        unary = torch.rand(batch, num_nodes, height, width, generator=gen)
        return unary, torch.rand(batch, num_messages, kernel, kernel, generator=gen)
    unary = harness.gaussian_blobs(batch * num_nodes, (height, width), (1.0, 2.5), (0, 0), (height - 1, width - 1), gen)
    half, reach = kernel // 2, kernel / 4
    centre_lo, centre_hi = (half - reach,) * 2, (half + reach,) * 2
    pairwise = harness.gaussian_blobs(batch * num_messages, (kernel, kernel), (1.5, 4.0), centre_lo, centre_hi, gen)
    return unary.view(batch, num_nodes, height, width), pairwise.view(batch, num_messages, kernel, kernel)


def _workload(provider, inputs: tuple, mode: str) -> Callable[[], object]:
    """The call to time: a no-grad forward, or forward + gradients w.r.t. unary and pairwise."""
    unary, pairwise, tree = inputs
    if mode == "forward":

        def forward():
            with torch.no_grad():
                return provider(unary, pairwise, tree)

        return forward
    unary, pairwise = unary.detach().requires_grad_(True), pairwise.detach().requires_grad_(True)
    grad_out = torch.randn(unary.shape, generator=torch.Generator().manual_seed(1)).to(unary.device)

    def forward_backward():
        out = provider(unary, pairwise, tree)
        return torch.autograd.grad((out * grad_out).sum(), (unary, pairwise))

    return forward_backward


def _cases(args: argparse.Namespace) -> list[harness.Case]:
    """Per batch size, each kind of input: (unary, pairwise, tree) on the device."""
    tree = handops.hand_tree()
    shape = {"H": args.size, "W": args.size, "kh": args.kernel, "kw": args.kernel}

    def inputs_of(kind: str, batch: int) -> Callable[[torch.device], tuple]:
        def make_on(device: torch.device) -> tuple:
            unary, pairwise = make_inputs(kind, batch, args.size, args.size, args.kernel, tree)
            return unary.to(device), pairwise.to(device), tree

        return make_on

    return [harness.Case(batch, inputs_of(kind, batch), shape, kind=kind) for batch in args.batch_sizes for kind in args.inputs]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS))


SPEC = harness.BenchmarkSpec(
    op=OP,
    description=__doc__.splitlines()[0],
    providers=PROVIDERS,
    modes=PASSES,
    cases=_cases,
    workload=_workload,
    title=lambda args: f"{OP}: H=W={args.size}, {args.kernel}x{args.kernel} kernels",
    measures=lambda provider, case, mode: case.kind in EXACT_ON.get(provider, INPUTS),
    add_arguments=_add_arguments,
    quick_argv=("--batch-sizes", "1", "--size", "24", "--kernel", "23"),  # the references take seconds at 46 and 45
)


def run(argv: Sequence[str] | None = None) -> str:
    """Measures every case, appends the CSV, writes the plot; returns the markdown table."""
    return harness.run_benchmark(SPEC, argv)


if __name__ == "__main__":
    print(run())
