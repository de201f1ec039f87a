"""Benchmark of handops.ManoLayer against smplx.MANO, and of 2-D keypoint fitting with each.

Both load the project's synthetic hand (``synthetic_model(0)``, saved as MANO_RIGHT.pkl): no real
MANO data is needed. Inputs are float32, axis-angle, flat hand mean, no PCA.

Providers:
    handops  handops.ManoLayer (whatever backend this install runs)
    smplx    smplx.MANO

Modes: ``forward`` (under no_grad), ``forward+backward`` (gradients of betas, global_orient,
hand_pose and transl from ``(vertices * g).sum() + (mano_joints * h).sum()``, g and h fixed and
random) and, for handops only, ``joints_only`` (with_vertices=False, the same gradients from the
21 joints; its smplx column is smplx's full forward+backward: smplx has no joints-only path).

Fitting (mode ``fit``): N synthetic images (keypoints of known poses, 1 px noise), the thesis
schedule (200 Adam steps at 1e-2 on the translation, then 60 at 1e-3 on pose and translation):
``handops.mano.fit_keypoints2d`` against the same two-stage loop written with smplx, and
``fit_keypoints2d(..., solver="lm")`` (provider ``handops_lm``: Levenberg-Marquardt, 2 + 6 iterations).
The fit is not a case of the sweep (one timed call per provider, reporting images per second and the
error it reached, in a table of its own): the spec declares it as its ``supplement``.

    python -m benchmarks.bench_mano [--batch-sizes 1 64 256 1024] [--quick] [--fit-images 1024] [--skip-fit]
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

import handops
from benchmarks import harness
from handops.mano import fit_keypoints2d, save, synthetic_model
from handops.geometry import project
from handops.mano import OPENPOSE_FROM_MANO

OP = "mano"
MODES = ("forward", "forward+backward", "joints_only")
PROVIDER_MODES = {"handops": MODES, "smplx": ("forward", "forward+backward")}
DTYPE = torch.float32
# OpenPose keypoint k is entry OPENPOSE_FROM_MANO[k] of [16 MANO joints, 5 fingertip vertices (thumb .. little)].
FIT_COLUMNS = ("fit_steps", "images_per_s", "reprojection_px")


def load_models(seed: int = 0):
    """(handops.ManoLayer, smplx.MANO, ManoModel) on the synthetic hand, both float32."""
    import smplx

    model = synthetic_model(seed)
    with tempfile.TemporaryDirectory() as directory:
        save(model, directory)  # a directory: MANO_RIGHT.pkl, as smplx looks for it
        theirs = smplx.MANO(model_path=directory, is_rhand=True, use_pca=False, flat_hand_mean=True, dtype=DTYPE)
    ours = handops.ManoLayer(model, use_pca=False, flat_hand_mean=True).to(DTYPE)
    return ours, theirs, model


def make_poses(batch: int, model, seed: int = 0) -> dict[str, torch.Tensor]:
    """betas [B, 10], global_orient [B, 3] (palm towards a camera looking along +z), hand_pose [B, 45]
    (random in the span of the first 6 PCA components), transl [B, 3] about (0, 0, 0.5) m; float32."""
    gen = torch.Generator().manual_seed(seed)
    betas = 0.5 * torch.randn(batch, 10, generator=gen, dtype=torch.float64)
    orient = torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64) + 0.2 * torch.randn(batch, 3, generator=gen, dtype=torch.float64)
    pose = 0.8 * torch.randn(batch, 6, generator=gen, dtype=torch.float64) @ model.hands_components[:6]
    transl = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64) + 0.03 * torch.randn(batch, 3, generator=gen, dtype=torch.float64)
    return {k: v.to(DTYPE) for k, v in dict(betas=betas, global_orient=orient, hand_pose=pose, transl=transl).items()}


def camera(batch: int) -> torch.Tensor:
    """[B, 3, 3] intrinsics: f = 500 px, principal point (128, 128)."""
    k = torch.tensor([[500.0, 0.0, 128.0], [0.0, 500.0, 128.0], [0.0, 0.0, 1.0]], dtype=DTYPE)
    return k.expand(batch, 3, 3).clone()


def smplx_keypoints(smplx_model, fingertip_ids: torch.Tensor, betas, global_orient, hand_pose, transl) -> torch.Tensor:
    """The 21 OpenPose keypoints [B, 21, 3] from smplx: its 16 joints and the fingertip vertices."""
    out = smplx_model(betas=betas, global_orient=global_orient, hand_pose=hand_pose, transl=transl)
    return torch.cat([out.joints, out.vertices[:, fingertip_ids]], 1)[:, list(OPENPOSE_FROM_MANO)]


def _handops_layer(models, inputs: dict[str, torch.Tensor], with_vertices: bool = True):
    """(vertices or None, the joints the loss uses) from ManoLayer: 16 MANO joints with vertices, else the 21 keypoints."""
    ours, _ = models
    out = ours(inputs["betas"], inputs["global_orient"], inputs["hand_pose"], inputs["transl"], with_vertices=with_vertices)
    return (out.vertices, out.mano_joints) if with_vertices else (None, out.joints)


def _smplx_layer(models, inputs: dict[str, torch.Tensor], with_vertices: bool = True):
    """(vertices, 16 joints) from smplx.MANO, which always computes the vertices."""
    _, theirs = models
    out = theirs(**inputs)
    return out.vertices, out.joints


PROVIDERS = {"handops": _handops_layer, "smplx": _smplx_layer}


def _workload(provider, inputs: tuple, mode: str) -> Callable[[], object]:
    """The call to time: a no-grad forward, or forward + gradients of the four inputs."""
    models, poses = inputs
    if mode == "forward":

        def forward():
            with torch.no_grad():
                return provider(models, poses)

        return forward
    leaves = {k: v.detach().requires_grad_(True) for k, v in poses.items()}
    with_vertices = mode != "joints_only"
    gen = torch.Generator().manual_seed(1)
    vertices, joints = provider(models, leaves, with_vertices)
    grad_v = None if vertices is None else torch.randn(vertices.shape, generator=gen, dtype=DTYPE)
    grad_j = torch.randn(joints.shape, generator=gen, dtype=DTYPE)

    def forward_backward():
        vertices, joints = provider(models, leaves, with_vertices)
        loss = (joints * grad_j).sum() + (0 if vertices is None else (vertices * grad_v).sum())
        return torch.autograd.grad(loss, list(leaves.values()))

    return forward_backward


def make_fit_problem(images: int, layer, model, seed: int = 100):
    """(keypoints2d [N, 21, 2] with 1 px noise, camera_K, betas, init, truth): init is a network-like
    guess, the true pose plus noise (0.1 rad root, 0.15 rad per joint) and a translation of (0, 0, 0.6) m."""
    truth = make_poses(images, model, seed)
    K = camera(images)
    with torch.no_grad():
        joints = layer(truth["betas"], truth["global_orient"], truth["hand_pose"], truth["transl"], with_vertices=False).joints
    gen = torch.Generator().manual_seed(seed + 1)
    keypoints = project(joints, K) + torch.randn(images, 21, 2, generator=gen, dtype=DTYPE)
    init = {
        "global_orient": truth["global_orient"] + 0.1 * torch.randn(images, 3, generator=gen, dtype=DTYPE),
        "hand_pose": truth["hand_pose"] + 0.15 * torch.randn(images, 45, generator=gen, dtype=DTYPE),
        "transl": torch.tensor([0.0, 0.0, 0.6], dtype=DTYPE).expand(images, 3).clone(),
    }
    return keypoints, K, truth["betas"], init


def fit_smplx(smplx_model, fingertip_ids, keypoints2d, camera_K, betas, init, iterations=(200, 60), learning_rates=(1e-2, 1e-3)):
    """The thesis schedule with smplx: sum over keypoints of |x_k - P(J_k)|_2 (unit weights), Adam on the
    translation, then on pose and translation. Returns (global_orient, hand_pose, transl, per-image mean px)."""
    global_orient, hand_pose, transl = (init[k].clone() for k in ("global_orient", "hand_pose", "transl"))

    def reprojection():
        joints = smplx_keypoints(smplx_model, fingertip_ids, betas, global_orient, hand_pose, transl)
        return (project(joints, camera_K) - keypoints2d).norm(dim=-1).sum(-1)  # [N]

    stages = [([transl], iterations[0], learning_rates[0]), ([global_orient, hand_pose, transl], iterations[1], learning_rates[1])]
    for params, steps, lr in stages:
        for p in params:
            p.requires_grad_(True)
        optimiser = torch.optim.Adam(params, lr=lr)
        for _ in range(steps):
            optimiser.zero_grad(set_to_none=True)
            reprojection().sum().backward()
            optimiser.step()
        for p in params:
            p.requires_grad_(False)
    with torch.no_grad():
        return global_orient, hand_pose, transl, reprojection() / 21


@functools.cache
def _loaded_models():
    """:func:`load_models`, once per process: every case, the title and the fit share them."""
    return load_models()


def _csv_shape() -> dict[str, object]:
    """The CSV's size columns: V and S, and the fit's columns (empty in the layer rows)."""
    model = _loaded_models()[2]
    return {"V": int(model.v_template.shape[0]), "S": 10, **dict.fromkeys(FIT_COLUMNS, "")}


def _cases(args: argparse.Namespace) -> list[harness.Case]:
    """Per batch size: ((ManoLayer, smplx.MANO), the poses), on the CPU."""

    def inputs_of(batch: int) -> Callable[[torch.device], tuple]:
        def make_on(device: torch.device) -> tuple:  # the CPU (SPEC.devices): the poses stay there
            ours, theirs, model = _loaded_models()
            return (ours, theirs), make_poses(batch, model)

        return make_on

    return [harness.Case(batch, inputs_of(batch), _csv_shape()) for batch in args.batch_sizes]


def _fit(args: argparse.Namespace) -> tuple[list[harness.Measurement], str]:
    """Times one fit of ``--fit-images`` images per provider (none with --skip-fit); the measurements and a table."""
    if args.skip_fit:
        return [], ""
    ours, theirs, model = _loaded_models()
    shape = _csv_shape()
    keypoints, K, betas, init = make_fit_problem(args.fit_images, ours, model)
    iterations = tuple(args.fit_iterations)
    with torch.no_grad():
        start = smplx_keypoints(theirs, model.fingertip_ids, betas, init["global_orient"], init["hand_pose"], init["transl"])
        start_px = float((project(start, K) - keypoints).norm(dim=-1).mean())
    fits = {
        "handops": lambda n, steps: fit_keypoints2d(ours, keypoints[:n], K[:n], betas[:n], init={k: v[:n] for k, v in init.items()},
                                                    iterations=steps).reprojection_error,
        "smplx": lambda n, steps: fit_smplx(theirs, model.fingertip_ids, keypoints[:n], K[:n], betas[:n],
                                            {k: v[:n] for k, v in init.items()}, steps)[3],
        # Levenberg-Marquardt with the analytic Jacobian, its default iterations (None) or --lm-iterations.
        "handops_lm": lambda n, steps: fit_keypoints2d(ours, keypoints[:n], K[:n], betas[:n], init={k: v[:n] for k, v in init.items()},
                                                       solver="lm", iterations=steps).reprojection_error,
    }
    schedules = {"handops": iterations, "smplx": iterations, "handops_lm": tuple(args.lm_iterations)}
    measurements, rows = [], []
    providers = [p for p in args.providers if p in fits] + (["handops_lm"] if "handops" in args.providers else [])
    for provider in tqdm(providers, desc=f"{OP} fit", unit="fit"):
        fits[provider](2, (1, 1))  # warm-up: the fit is timed once, so keep first-call costs out of it
        began = time.perf_counter()
        error_px = float(fits[provider](args.fit_images, schedules[provider]).mean())
        seconds = time.perf_counter() - began
        rate = args.fit_images / seconds
        steps = "+".join(str(n) for n in schedules[provider])
        method = "LM" if provider == "handops_lm" else "Adam"
        fit_shape = {**shape, "fit_steps": f"{method} {steps}", "images_per_s": f"{rate:.1f}", "reprojection_px": f"{error_px:.3f}"}
        measurements.append(harness.Measurement(provider, "fit", args.fit_images, 1e3 * seconds, 1, fit_shape))
        rows.append(f"| {provider} | {method} {steps} | {seconds:.2f} | {rate:.0f} | {error_px:.3f} |")
    header = (f"Fitting {args.fit_images} images, Adam {iterations[0]} steps (translation) + {iterations[1]} "
              f"(pose + translation); mean reprojection error at the start {start_px:.2f} px, keypoint noise 1 px\n\n"
              "| provider | solver, iterations per stage | time (s) | images / s | mean reprojection error (px) |\n|---|---|---:|---:|---:|")
    return measurements, header + "\n" + "\n".join(rows)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(batch_sizes=[1, 64, 256, 1024], device="cpu")  # --size and --kernel do not apply here
    parser.add_argument("--fit-images", type=int, default=1024, help="images fitted at once (default 1024)")
    parser.add_argument("--fit-iterations", type=int, nargs=2, default=[200, 60], metavar=("TRANSL", "POSE"),
                        help="Adam steps of the two stages (default 200 60, the thesis schedule)")
    parser.add_argument("--lm-iterations", type=int, nargs=2, default=[2, 6], metavar=("TRANSL", "POSE"),
                        help="Levenberg-Marquardt iterations of the two stages (default 2 6, the solver's default)")
    parser.add_argument("--skip-fit", action="store_true", help="time the layers only")


SPEC = harness.BenchmarkSpec(
    op=OP,
    description=__doc__.splitlines()[0],
    providers=PROVIDERS,
    modes=MODES,
    cases=_cases,
    workload=_workload,
    title=lambda args: f"{OP}: synthetic hand (V={_csv_shape()['V']}), float32",
    measures=lambda provider, case, mode: mode in PROVIDER_MODES[provider],
    add_arguments=_add_arguments,
    devices=("cpu",),  # smplx and the fit run where the inputs are
    notes=("(joints_only: handops with with_vertices=False; its smplx column is smplx's full forward+backward)",),
    # The joints_only row sets handops' joints-only path against smplx's full forward+backward.
    borrowed_cells={("smplx", "joints_only"): "forward+backward"},
    supplement=_fit,
    quick_argv=("--batch-sizes", "1", "64"),
    requires=("smplx",),
)


def run(argv: Sequence[str] | None = None) -> str:
    """Measures every case and the fit, appends the CSV, writes the plot; returns the markdown tables."""
    return harness.run_benchmark(SPEC, argv)


if __name__ == "__main__":
    print(run())
