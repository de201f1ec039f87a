"""End-to-end inference throughput of chapter 6's identity-aware pipeline, with and without optimisation.

    python -m benchmarks.bench_mesh_pipeline                       # tiny and paper shapes, batch 32, CPU
    python -m benchmarks.bench_mesh_pipeline --configs tiny --quick

One call is one batch through the pipeline (``handops_models.nets.mesh_inference``), with untrained weights
(the work does not depend on them; the fit always runs its full schedule):

    regressor   the identity-aware network alone: ``MeshNet.predict(images, betas)`` (ResNet, 3 regressor
                iterations, ManoLayer)
    adam        + the 2-D detector (Stacked Hourglass, BCE) + Eq. 6.4 with the thesis' schedule (200 translation
                steps, then 60 pose-and-translation steps, Adam)
    lm          + the detector + Eq. 6.4 by handops' Levenberg-Marquardt (its default iterations)

Configs: ``tiny`` (ResNet-18 x0.25 at 128; 2-stack Hourglass at 128) and ``paper`` (ResNet-50 at 224; the
8-stack Hourglass at 256, fed the images resized). The synthetic MANO-format hand (912 vertices) stands in
for MANO (778). The thesis' figure for its optimisation step alone: 50k HUMBI images in 8 minutes on one
Titan RTX, about 104 images/s. The table's time is per batch; images/s = batch / time.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from benchmarks import harness
from handops_models.nets import build_model
from handops_models.nets.mesh_inference import refine_with_keypoints

OP = "mesh_pipeline"
MODES = ("inference",)


def _regressor(nets, images, K, betas):
    return nets["mesh"].predict(images, betas)


def _adam(nets, images, K, betas):
    return refine_with_keypoints(nets["mesh"], images, K, nets["detector"], betas, solver="adam")


def _lm(nets, images, K, betas):
    return refine_with_keypoints(nets["mesh"], images, K, nets["detector"], betas, solver="lm")


PROVIDERS = {"regressor": _regressor, "adam": _adam, "lm": _lm}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(batch_sizes=[32])
    parser.add_argument("--configs", nargs="+", default=["tiny", "paper"], choices=("tiny", "paper"))


def _cases(args: argparse.Namespace) -> list[harness.Case]:
    def inputs_of(config: str, batch: int):
        def make(device: torch.device) -> tuple:
            torch.manual_seed(0)
            nets = {"mesh": build_model("mesh-identity", config).to(device).eval(),
                    "detector": build_model("detector2d", config).to(device).eval()}
            size = nets["mesh"].input_size
            g = torch.Generator().manual_seed(1)
            images = torch.rand(batch, 3, size, size, generator=g).to(device)
            K = torch.tensor([[1.5 * size, 0, (size - 1) / 2], [0, 1.5 * size, (size - 1) / 2], [0, 0, 1.0]])
            betas = torch.randn(batch, 10, generator=g).to(device)
            return nets, images, K.expand(batch, 3, 3).to(device), betas

        return make

    return [harness.Case(batch, inputs_of(config, batch), {"config": config}, group=config,
                         heading=f"{config} shapes")
            for config in args.configs for batch in args.batch_sizes]


def _workload(provider, inputs: tuple, mode: str):
    nets, images, K, betas = inputs
    return lambda: provider(nets, images, K, betas)


SPEC = harness.BenchmarkSpec(
    op=OP,
    description=__doc__.splitlines()[0],
    providers=PROVIDERS,
    modes=MODES,
    cases=_cases,
    workload=_workload,
    title=lambda args: f"{OP}: identity-aware mesh pipeline, float32",
    baseline="regressor",
    add_arguments=_add_arguments,
    timing=harness.TimingPolicy(warmup_s=0.0, budget_s=10.0, min_repeats=1, max_repeats=5, single_call_s=20.0),
    notes=("time per batch; images/s = batch / time; the thesis' optimisation step: about 104 images/s on a Titan RTX",),
    quick_argv=("--configs", "tiny", "--batch-sizes", "4"),
)


def run(argv: Sequence[str] | None = None) -> str:
    return harness.run_benchmark(SPEC, argv)


if __name__ == "__main__":
    print(run())
