"""How far ``handops.fit_keypoints2d`` gets: energy and 3-D joint error against iterations, Adam and LM.

The yardstick is an independent optimiser of the same objective (thesis Eq. 6.4,
``E = sum_k w_k |x_k - P(J_k + r)|_2``): float64 L-BFGS with gradients from autograd (not the LM
Jacobian), on the smoothed energy ``E_eps = sum_k w_k sqrt(|x_k - P(J_k + r)|^2 + eps^2)`` with eps
lowered step by step (``REFERENCE_EPS``) and each level run to convergence. Like the fit, it runs a
translation stage first (at the first eps) and then moves pose and translation together, from the
same start; the two follow the same path, so the comparison is about convergence and not about
which of Eq. 6.4's local minima (a palm's tilt, a bone towards or away from the camera) is reached;
except for the ``starts=8`` series, which keeps the best of eight starts per image and so may end below
the reference (lower is fine: the target is E <= 1.01 E_opt).

The problems are the benchmark's (``benchmarks.bench_mano.make_fit_problem``: synthetic hands, 1 px
keypoint noise, a network-like start 0.1 rad / 0.15 rad off, the translation unknown), in float64.

    python -m benchmarks.fit_convergence [--images 16] [--max-iterations 100]

prints a table and saves ``<out>/fit_convergence.png`` (``--out``, default ./handops-bench-results;
``--update-docs`` redraws the README's ``docs/fit_convergence.png`` instead).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.bench_mano import make_fit_problem, make_poses
from handops.mano import ManoLayer, fit_keypoints2d, synthetic_model
from handops.geometry import project

# The reference's smoothing levels (pixels): from well above the keypoint noise (1 px) down to where
# sqrt(d^2 + eps^2) - d <= eps changes a 21-keypoint energy of a few pixels by less than 1e-4 relative.
REFERENCE_EPS = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
PLOT = "fit_convergence.png"  # in the output folder (benchmarks.harness.output_dir), or docs/ with --update-docs


@dataclass
class Problem:
    """A batch of fitting problems in float64: the fit's inputs and the truth (joints [B, 21, 3], camera frame)."""

    layer: ManoLayer
    keypoints2d: torch.Tensor
    camera_K: torch.Tensor
    betas: torch.Tensor
    init: dict[str, torch.Tensor]
    weights: torch.Tensor
    true_joints: torch.Tensor


def make_problems(images: int = 16, seed: int = 100) -> Problem:
    """The first ``images`` problems of the MANO benchmark (made in float32 as there), cast to float64."""
    model = synthetic_model(0)
    layer32 = ManoLayer(model, use_pca=False, flat_hand_mean=True).to(torch.float32)
    keypoints, camera_K, betas, init = make_fit_problem(images, layer32, model, seed)
    truth = make_poses(images, model, seed)  # the poses make_fit_problem drew
    with torch.no_grad():
        joints = layer32(truth["betas"], truth["global_orient"], truth["hand_pose"], truth["transl"], with_vertices=False).joints
    layer = ManoLayer(model, use_pca=False, flat_hand_mean=True)
    return Problem(layer, keypoints.double(), camera_K.double(), betas.double(), {k: v.double() for k, v in init.items()},
                   torch.ones(images, 21, dtype=torch.float64), joints.double())


def energy(problem: Problem, global_orient, hand_pose, transl, eps: float = 0.0) -> torch.Tensor:
    """[B]: sum_k w_k sqrt(|x_k - P(J_k + r)|^2 + eps^2), Eq. 6.4 itself for eps = 0 (autograd through the layer)."""
    joints = problem.layer(problem.betas, global_orient, hand_pose, transl, with_vertices=False).joints
    squared = (project(joints, problem.camera_K) - problem.keypoints2d).square().sum(-1)
    return (problem.weights * (squared + eps * eps).sqrt()).sum(-1)


def _lbfgs(objective, x: torch.Tensor, max_iterations: int, history: int = 30, rtol: float = 1e-13) -> torch.Tensor:
    """Minimises each row's objective(x) [B] over x [B, P] independently: L-BFGS (two-loop recursion) with a
    backtracking Armijo line search per row. A row stops when an iteration lowers it by less than
    ``rtol`` relative (three times in a row) or no step along its direction lowers it."""
    batch = x.shape[0]

    def value_and_grad(x):
        x = x.detach().requires_grad_(True)
        value = objective(x)
        return value.detach(), torch.autograd.grad(value.sum(), x)[0]  # rows are independent

    f, g = value_and_grad(x)
    s_hist, y_hist = [], []
    quiet = torch.zeros(batch, dtype=torch.long)
    for _ in range(max_iterations):
        active = quiet < 3
        if not bool(active.any()):
            break
        # Two-loop recursion, batched; a pair with s.y <= 0 contributes nothing (rho = 0).
        q = -g
        alphas = []
        for s, y in reversed(list(zip(s_hist, y_hist))):
            sy = (s * y).sum(-1)
            rho = torch.where(sy > 0, 1 / sy.clamp_min(1e-300), torch.zeros_like(sy))
            a = rho * (s * q).sum(-1)
            q = q - a[:, None] * y
            alphas.append((a, rho, s, y))
        if s_hist:
            s, y = s_hist[-1], y_hist[-1]
            sy, yy = (s * y).sum(-1), (y * y).sum(-1)
            q = q * torch.where(sy > 0, sy / yy.clamp_min(1e-300), torch.ones_like(sy))[:, None]
        for a, rho, s, y in reversed(alphas):
            b = rho * (y * q).sum(-1)
            q = q + (a - b)[:, None] * s
        slope = (g * q).sum(-1)
        direction = torch.where((slope < 0)[:, None], q, -g)  # not a descent direction: steepest descent
        slope = (g * direction).sum(-1)
        step = torch.where(active, torch.ones_like(f), torch.zeros_like(f))
        if not s_hist:  # the first step: about 1e-3 of the parameters' scale
            step = step * (1e-3 / direction.abs().amax(-1).clamp_min(1e-300))
        accepted = ~active
        new_x, new_f = x.clone(), f.clone()
        for _ in range(60):
            trial = x + step[:, None] * direction
            with torch.no_grad():
                trial_f = objective(trial)
            ok = ~accepted & torch.isfinite(trial_f) & (trial_f <= f + 1e-4 * step * slope)
            new_x = torch.where(ok[:, None], trial, new_x)
            new_f = torch.where(ok, trial_f, new_f)
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            step = torch.where(accepted, step, 0.5 * step)
        moved = accepted & active
        new_g = value_and_grad(new_x)[1]
        s_hist.append(torch.where(moved[:, None], new_x - x, torch.zeros_like(x)))
        y_hist.append(torch.where(moved[:, None], new_g - g, torch.zeros_like(g)))
        s_hist, y_hist = s_hist[-history:], y_hist[-history:]
        small = (f - new_f) <= rtol * f.abs()
        quiet = torch.where(~active | small | ~moved, quiet + 1, torch.zeros_like(quiet))  # a stopped row stays stopped
        x, f, g = new_x, new_f, torch.where(moved[:, None], new_g, g)
    return x


def reference_fit(problem: Problem, eps_levels: Sequence[float] = REFERENCE_EPS, max_iterations: int = 2000):
    """The independent optimum: (global_orient [B, 3], hand_pose [B, 45], transl [B, 3], Eq. 6.4 energy [B]).

    Translation alone at eps_levels[0], then pose and translation at every level in turn, each to
    convergence (``_lbfgs``). The translation is optimised in decimetres so that one unit of every
    parameter moves a keypoint by a similar number of pixels (better conditioned for L-BFGS)."""
    batch = problem.keypoints2d.shape[0]
    orient, hand = problem.init["global_orient"], problem.init["hand_pose"]
    transl = problem.init["transl"] * 10

    def translation_only(eps):
        return lambda t: energy(problem, orient, hand, t / 10, eps)

    transl = _lbfgs(translation_only(eps_levels[0]), transl, max_iterations)
    x = torch.cat([orient, hand, transl], 1)
    for eps in eps_levels:
        x = _lbfgs(lambda x, eps=eps: energy(problem, x[:, :3], x[:, 3:48], x[:, 48:] / 10, eps), x, max_iterations)
    with torch.no_grad():
        final = energy(problem, x[:, :3], x[:, 3:48], x[:, 48:] / 10)
    return x[:, :3].detach(), x[:, 3:48].detach(), x[:, 48:].detach() / 10, final


def root_relative_error_mm(joints: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """[B]: mean 3-D distance (mm) of the 21 joints to the truth after moving both wrists to the origin."""
    return 1e3 * ((joints - joints[:, :1]) - (truth - truth[:, :1])).norm(dim=-1).mean(-1)


def curves(problem: Problem, optimum: torch.Tensor, solver: str, caps: Sequence[int], first_stage: int,
           tolerance: float | None, **options) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """For each cap n of the pose stage: (n, energy / optimum - 1 [B], root-relative joint error in mm [B]).
    The fit is deterministic, so a fit capped at n is the iterate after n iterations."""
    rows = []
    for n in caps:
        fit = fit_keypoints2d(problem.layer, problem.keypoints2d, problem.camera_K, problem.betas, init=problem.init,
                              weights=problem.weights, solver=solver, iterations=(first_stage, n), tolerance=tolerance, **options)
        rows.append((n, fit.energy / optimum - 1, root_relative_error_mm(fit.joints, problem.true_joints)))
    return rows


def plot(series: dict[str, list], reference_mm: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in series.items():
        caps = [max(n, 0.8) for n, _, _ in rows]
        left.plot(caps, [float(r.median()) for _, r, _ in rows], marker="o", label=f"{name} (median)")
        right.plot(caps, [float(e.median()) for _, _, e in rows], marker="o", label=name)
    right.axhline(reference_mm, color="k", ls="--", lw=1, label="independent optimum")
    left.set(xscale="log", yscale="log", xlabel="pose-stage iterations", ylabel="E / E_optimum - 1",
             title="Eq. 6.4 energy above the independent optimum")
    right.set(xscale="log", xlabel="pose-stage iterations", ylabel="mm", title="3-D joint error (root-relative, median)")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="folder for the plot (default ./handops-bench-results)")
    parser.add_argument("--plot", type=Path, default=None, help="the PNG to write (default <out>/fit_convergence.png)")
    parser.add_argument("--update-docs", action="store_true", help="write the README's docs/fit_convergence.png (on purpose only)")
    args = parser.parse_args(argv)
    from benchmarks import harness

    if args.plot is None:
        args.plot = harness.DOCS_DIR / PLOT if args.update_docs else harness.output_dir(args.out) / PLOT
    problem = make_problems(args.images)
    began = time.perf_counter()
    orient, hand, transl, optimum = reference_fit(problem)
    reference_seconds = time.perf_counter() - began
    with torch.no_grad():
        joints = problem.layer(problem.betas, orient, hand, transl, with_vertices=False).joints
    reference = float(root_relative_error_mm(joints, problem.true_joints).median())
    series = {
        "LM, tolerance 1e-6, 8 starts": curves(problem, optimum, "lm", (0, 2, 6, 10, 20, 30, 50, 75, 100), 20, 1e-6, starts=8),
        "LM, tolerance 1e-6": curves(problem, optimum, "lm", (0, 2, 6, 10, 20, 30, 50, 75, 100), 20, 1e-6),
        "LM default (2 + n)": curves(problem, optimum, "lm", (0, 2, 6, 10, 20, 30, 50, 75, 100), 2, None),
        "Adam (200 + n, lr 1e-3)": curves(problem, optimum, "adam", (0, 20, 60, 100, 200, 400), 200, None),
    }
    print(f"{args.images} problems; independent optimum (L-BFGS, smoothing continuation) in {reference_seconds:.0f} s, "
          f"median root-relative joint error {reference:.2f} mm")
    print(f"optimum energies (Eq. 6.4): {[round(e, 6) for e in optimum.tolist()]}\n")
    print("| solver | pose-stage cap | within 1% of the optimum | median E / E_opt - 1 | max | median joint error (mm) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in series.items():
        for n, rel, mm in rows:
            print(f"| {name} | {n} | {int((rel < 0.01).sum())}/{rel.numel()} | {float(rel.median()):.4f} | "
                  f"{float(rel.max()):.3f} | {float(mm.median()):.2f} |")
    plot(series, reference, args.plot)
    print(f"\nsaved {args.plot}")


if __name__ == "__main__":
    main()
