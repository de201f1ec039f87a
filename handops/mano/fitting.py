"""Optimisation-augmented inference (thesis Eq. 6.4) and shape personalisation (Eq. 6.6-6.7).

``fit_keypoints2d`` fits MANO pose and root translation of a whole batch of images to 2-D keypoints;
``calibrate_shape`` finds one shape per subject from the per-image predictions of K images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from handops.geometry import project
from handops.mano.layer import ManoLayer

# `project` is no longer defined here (handops.geometry.project is); it stays importable from this module for the
# callers that import it from here (benchmarks/), and means the same for points in front of the camera.
__all__ = ["FitResult", "fit_keypoints2d", "calibrate_shape"]

# Projections divide by max(z, PROJECTION_MIN_DEPTH): a keypoint that a step moves to or behind the camera gives a
# large finite residual and gradient instead of inf or nan (the start must be in front; see _check_in_front).
PROJECTION_MIN_DEPTH = 1e-6

# LM: the first damping (relative to diag(H)); the smoothing levels eps (pixels) of the continuation, from above a
# network's keypoint noise down to where sqrt(d^2 + eps^2) - d <= eps is negligible against a few-pixel energy; the
# relative decrease of E_eps below which a level counts as settled; the damping at which a rejected step counts as
# "nothing lowers E_eps any more".
LM_INITIAL_DAMPING = 0.1
LM_SMOOTHING = 3.0
LM_SMOOTHING_MIN = 1e-5
LM_SMOOTHING_FACTOR = 0.3
LM_LEVEL_TOLERANCE = 1e-4
LM_STALLED_DAMPING = 1e3

# Multi-start (``starts > 1``): start i >= 1 adds START_SPREAD radians times row i - 1 of a fixed normal draw
# (generator seeded with START_SEED, the same offsets for every image) to the start's root orientation and hand
# pose: somewhat above a network's pose error (0.1-0.15 rad in the benchmark), enough to reach the other side of
# a palm's tilt or a bone's depth ambiguity. On the 16 convergence problems (benchmarks/fit_convergence.py)
# 8 starts reached 15/16 within 1% of the independent optimum at 0.05 and 0.1 rad, 16/16 at 0.2 and 0.3 rad.
START_SPREAD = 0.2
START_SEED = 0


@dataclass
class FitResult:
    """global_orient [B, 3] and hand_pose [B, 45] axis-angle (hand_pose as ``ManoLayer`` takes it,
    i.e. relative to the layer's mean pose), transl [B, 3] metres, joints [B, 21, 3] (camera frame),
    reprojection_error [B]: the weighted mean pixel distance ``energy / sum_k w_k``;
    energy [B]: Eq. 6.4 itself, ``sum_k w_k |x_k - P(J_k + r)|_2`` at the result;
    iterations [B, 2] (int64): the iterations each stage ran for each image;
    converged [B] (bool): the stopping rule (``tolerance``) ended the last stage before its iteration cap
    (always False without a tolerance);
    smoothing [B]: LM's last smoothing level eps in pixels (0 for Adam, which fits Eq. 6.4 unsmoothed)."""

    global_orient: torch.Tensor
    hand_pose: torch.Tensor
    transl: torch.Tensor
    joints: torch.Tensor
    reprojection_error: torch.Tensor
    energy: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    smoothing: torch.Tensor


def _reprojection(joints, transl, keypoints2d, camera_K, weights):
    """Per image: sum_k w_k |x_k - P(J_k + r)|_2 (Eq. 6.4 with per-keypoint confidences) and the weighted mean."""
    pixels = project(joints + transl[:, None], camera_K, min_depth=PROJECTION_MIN_DEPTH)
    distance = (pixels - keypoints2d).norm(dim=-1)  # [B, 21]
    energy = (weights * distance).sum(-1)
    return energy, energy / weights.sum(-1)


def _initial_translation(layer, betas, global_orient, hand_pose, keypoints2d, camera_K, weights):
    """Depth from the ratio of 3-D to 2-D keypoint spread (focal length times size), x and y by back-projecting
    the weighted keypoint centroid: close enough for the translation stage to converge."""
    with torch.no_grad():
        joints = layer(betas, global_orient, hand_pose.view(-1, 15, 3), with_vertices=False).joints
        w = weights / weights.sum(-1, keepdim=True)
        centre3 = (w[..., None] * joints).sum(1)
        centre2 = (w[..., None] * keypoints2d).sum(1)
        spread3 = (w * (joints[..., :2] - centre3[:, None, :2]).norm(dim=-1)).sum(-1)
        spread2 = (w * (keypoints2d - centre2[:, None]).norm(dim=-1)).sum(-1)
        focal = 0.5 * (camera_K[:, 0, 0] + camera_K[:, 1, 1])
        # The depth is that of the keypoints' centre: at least 5 cm plus the hand's own depth extent in front of
        # the camera, so that no keypoint starts at or behind it.
        extent = (joints[..., 2] - centre3[:, None, 2]).abs().amax(-1)
        depth = torch.maximum((focal * spread3 / spread2.clamp_min(1e-6)).clamp(max=10.0), 0.05 + extent)
        x = (centre2[:, 0] - camera_K[:, 0, 2]) / camera_K[:, 0, 0] * depth
        y = (centre2[:, 1] - camera_K[:, 1, 2]) / camera_K[:, 1, 1] * depth
        return torch.stack([x, y, depth], -1) - centre3


def _fit_dtype(keypoints2d):
    """float64 stays float64; float16, bfloat16 and float32 inputs are fitted in float32 (half precision cannot
    resolve a pixel at a few hundred pixels, nor the normal equations)."""
    return torch.float64 if keypoints2d.dtype == torch.float64 else torch.float32


def _check_fit_inputs(layer, keypoints2d, camera_K, betas, init, weights, solver, iterations, tolerance):
    if not isinstance(layer, ManoLayer):
        raise TypeError(f"layer must be a handops.ManoLayer, got {type(layer).__name__}")
    if solver not in ("adam", "lm"):
        raise ValueError(f"solver must be 'adam' (the thesis schedule) or 'lm' (Levenberg-Marquardt), got {solver!r}")
    if not (isinstance(iterations, tuple) and len(iterations) == 2 and all(isinstance(n, int) and n >= 0 for n in iterations)):
        raise ValueError(f"iterations must be two non-negative ints (translation stage, pose stage), got {iterations!r}")
    if tolerance is not None and not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise ValueError(f"tolerance must be None or a relative energy decrease in [0, 1), got {tolerance!r}")
    for name, t in (("keypoints2d", keypoints2d), ("camera_K", camera_K), ("betas", betas)):
        if not (isinstance(t, torch.Tensor) and t.is_floating_point()):
            raise TypeError(f"{name} must be a floating-point tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if keypoints2d.dim() != 3 or keypoints2d.shape[1:] != (21, 2):
        raise ValueError(f"keypoints2d must be [B, 21, 2] pixels, got {list(keypoints2d.shape)}")
    batch = keypoints2d.shape[0]
    if camera_K.shape != (batch, 3, 3):
        raise ValueError(f"camera_K must be [B, 3, 3] = [{batch}, 3, 3], got {list(camera_K.shape)}")
    if betas.dim() != 2 or betas.shape[0] != batch:
        raise ValueError(f"betas must be [B, S] with B = {batch}, got {list(betas.shape)}")
    init = dict(init or {})
    unknown = set(init) - {"global_orient", "hand_pose", "transl"}
    if unknown:
        raise ValueError(f"init may hold global_orient, hand_pose and transl, got {sorted(unknown)}")
    for name, size in (("global_orient", 3), ("hand_pose", 45), ("transl", 3)):
        if name in init and init[name].shape != (batch, size):
            raise ValueError(f"init[{name!r}] must be [B, {size}] = [{batch}, {size}], got {list(init[name].shape)}")
    weights = keypoints2d.new_ones(batch, 21) if weights is None else weights.to(keypoints2d)
    if weights.shape != (batch, 21) or bool((weights < 0).any()):
        raise ValueError(f"weights must be [B, 21] non-negative, got {list(weights.shape)}")
    for name, t in (("keypoints2d", keypoints2d), ("camera_K", camera_K), ("betas", betas), ("weights", weights),
                    *((f"init[{k!r}]", v) for k, v in init.items())):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or Inf entries")
    unweighted = (weights.sum(-1) == 0).nonzero().flatten().tolist()
    if unweighted:
        raise ValueError(f"weights of image(s) {unweighted} are all zero: Eq. 6.4 is then 0 for any pose, "
                         "so there is nothing to fit (drop those images)")
    # A pinhole camera: fx, fy > 0 and a last row (0, 0, 1); anything else (all zeros, say) has no projection.
    last_row = camera_K.new_tensor([0.0, 0.0, 1.0])
    bad = ((camera_K[:, 0, 0] <= 0) | (camera_K[:, 1, 1] <= 0) | (camera_K[:, 2] != last_row).any(-1)).nonzero().flatten()
    if bad.numel():
        raise ValueError(f"camera_K of image(s) {bad.tolist()} is not a pinhole intrinsic matrix "
                         f"[[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0: got {camera_K[bad[0]].tolist()}")
    return init, weights


def _check_in_front(layer, betas, global_orient, hand_pose, transl, given):
    """The fit needs every keypoint of the start in front of the camera: behind it the projection flips and no
    descent direction leads back (the energy is treated as infinite there)."""
    with torch.no_grad():
        joints = layer(betas, global_orient, hand_pose.view(-1, 15, 3), transl, with_vertices=False).joints
    behind = (joints[..., 2] <= 1e-4).any(-1).nonzero().flatten()
    if behind.numel():
        source = "init['transl']" if given else "the initial translation estimated from the keypoints"
        raise ValueError(f"{source} puts keypoints of image(s) {behind.tolist()} at or behind the camera "
                         f"(smallest depth {float(joints[behind[0], :, 2].min()):.4g} m): every keypoint needs z > 0")


def fit_keypoints2d(layer: ManoLayer, keypoints2d: torch.Tensor, camera_K: torch.Tensor, betas: torch.Tensor,
                    init: dict | None = None, weights: torch.Tensor | None = None, solver: str = "adam",
                    iterations: tuple[int, int] | None = None, learning_rates: tuple[float, float] = (1e-2, 1e-3),
                    tolerance: float | None = None, starts: int = 1, progress: bool = False) -> FitResult:
    """Thesis Eq. 6.4 for a batch of images: minimise ``E = sum_k w_k |x_k - P(J_k(theta, beta) + r)|_2`` over the
    pose theta and the root translation r, in two stages: the translation alone, then pose and translation.

    Args:
        layer: a :class:`ManoLayer`; keypoints2d [B, 21, 2] pixels (x, y) in OpenPose order;
        camera_K [B, 3, 3] pinhole intrinsics (fx, fy > 0, last row 0 0 1); betas [B, S] (fixed);
        init: dict with any of global_orient [B, 3], hand_pose [B, 45] (a network's prediction; default the
        layer's mean pose) and transl [B, 3] (default from the keypoints' spread; every keypoint of the start
        must lie in front of the camera); weights [B, 21] per-keypoint confidence or visibility (no image may
        have all weights zero).
        solver: ``"adam"``: the thesis schedule, ``iterations`` Adam steps per stage (default (200, 60))
        at ``learning_rates``. The translation stage leaves the joints fixed, so they are computed once
        and only the projection is iterated (the same iterates, at a fraction of the cost).
        ``"lm"``: Levenberg-Marquardt with the analytic Jacobian of ``handops::mano_keypoints_jacobian``
        (``iterations`` per stage, default (2, 6): an early stop) on the smoothed energy
        ``E_eps = sum_k w_k sqrt(|e_k|^2 + eps^2)`` with eps lowered from ``LM_SMOOTHING`` (3 px) to
        ``LM_SMOOTHING_MIN`` (1e-5 px, where E_eps - E <= 1e-5 sum_k w_k) by ``LM_SMOOTHING_FACTOR`` each time
        a level settles; see ``_fit_lm``.
        iterations: the most iterations per stage (translation, pose); non-negative.
        tolerance: the stopping rule: a stage ends for an image once an iteration lowers its energy by less
        than ``tolerance`` times the energy (for LM: an accepted step at the last smoothing level, or no step
        lowering it at any damping; for Adam: any step, an increase included). None (the default) runs every
        iteration, as the thesis schedule does.
        starts: multi-start (default 1: the given start only). Each image is fitted from its start and from
        ``starts - 1`` deterministic perturbations of it (``START_SPREAD`` rad times a fixed normal draw on the
        root orientation and the hand pose, the same for every image; the translation starts where the given
        start's does), all in one batch of B * starts, each with the full ``iterations`` and ``tolerance``; the
        fit with the lowest Eq. 6.4 energy is kept per image, and its iterations and convergence are reported.
        Eq. 6.4 has several local minima; see the README's fitting section for what this buys.
        progress: a tqdm bar per stage.

    Returns a :class:`FitResult`: the parameters, the joints, and per image the final energy, the iterations
    used per stage and whether the stopping rule ended the fit. An empty batch gives empty results. float16 and
    bfloat16 inputs are fitted in float32 and the results are float32; float64 stays float64.
    """
    iterations = tuple(iterations) if iterations is not None else ((2, 6) if solver == "lm" else (200, 60))
    init, weights = _check_fit_inputs(layer, keypoints2d, camera_K, betas, init, weights, solver, iterations, tolerance)
    if not (isinstance(starts, int) and not isinstance(starts, bool) and starts >= 1):
        raise ValueError(f"starts must be a positive int (1: the given start only), got {starts!r}")
    batch, dtype = keypoints2d.shape[0], _fit_dtype(keypoints2d)
    keypoints2d, camera_K, betas, weights = (t.to(dtype) for t in (keypoints2d, camera_K, betas, weights))
    global_orient = init.get("global_orient", keypoints2d.new_zeros(batch, 3)).to(dtype).clone()
    hand_pose = init.get("hand_pose", keypoints2d.new_zeros(batch, 45)).to(dtype).clone()
    transl = init.get("transl")
    if batch == 0:
        transl = keypoints2d.new_zeros(0, 3)
    elif transl is None:
        transl = _initial_translation(layer, betas, global_orient, hand_pose, keypoints2d, camera_K, weights)
    transl = transl.to(dtype).clone()
    if batch:
        _check_in_front(layer, betas, global_orient, hand_pose, transl, "transl" in init)
    if starts > 1 and batch:
        return _multi_start(layer, keypoints2d, camera_K, betas, weights, global_orient, hand_pose, transl, solver,
                            iterations, learning_rates, tolerance, starts, progress)
    used = torch.zeros(batch, 2, dtype=torch.long, device=keypoints2d.device)
    converged = torch.zeros(batch, dtype=torch.bool, device=keypoints2d.device)
    smoothing = keypoints2d.new_zeros(batch)
    if batch and solver == "lm":
        global_orient, hand_pose, transl, smoothing = _fit_lm(layer, keypoints2d, camera_K, betas, weights, global_orient,
                                                              hand_pose, transl, iterations, tolerance, used, converged, progress)
    elif batch:
        _fit_adam(layer, keypoints2d, camera_K, betas, weights, global_orient, hand_pose, transl, iterations,
                  learning_rates, tolerance, used, converged, progress)
    with torch.no_grad():
        joints = layer(betas, global_orient, hand_pose.view(batch, 15, 3), with_vertices=False).joints
        energy, mean_error = _reprojection(joints, transl, keypoints2d, camera_K, weights)
    return FitResult(global_orient, hand_pose, transl, joints + transl[:, None], mean_error, energy, used, converged, smoothing)


def _multi_start(layer, keypoints2d, camera_K, betas, weights, global_orient, hand_pose, transl, solver, iterations,
                 learning_rates, tolerance, starts, progress):
    """``starts`` fits per image in one batch (start-major: rows s * B + b), the lowest Eq. 6.4 energy kept."""
    batch = keypoints2d.shape[0]
    generator = torch.Generator().manual_seed(START_SEED)
    offsets = torch.cat([torch.zeros(1, 48, dtype=torch.float64),
                         START_SPREAD * torch.randn(starts - 1, 48, generator=generator, dtype=torch.float64)])
    offsets = offsets.to(global_orient)[:, None].expand(starts, batch, 48).reshape(starts * batch, 48)
    repeat = lambda t: t.repeat(starts, *([1] * (t.dim() - 1)))  # noqa: E731
    init = {"global_orient": repeat(global_orient) + offsets[:, :3], "hand_pose": repeat(hand_pose) + offsets[:, 3:],
            "transl": repeat(transl)}
    fit = fit_keypoints2d(layer, repeat(keypoints2d), repeat(camera_K), repeat(betas), init=init, weights=repeat(weights),
                          solver=solver, iterations=iterations, learning_rates=learning_rates, tolerance=tolerance,
                          starts=1, progress=progress)
    energy = torch.nan_to_num(fit.energy.view(starts, batch), nan=float("inf"))
    best = energy.argmin(0) * batch + torch.arange(batch, device=energy.device)  # the first start wins ties
    return FitResult(*(getattr(fit, name)[best] for name in FitResult.__dataclass_fields__))


def _settled(before, after, tolerance):
    """[B] bool: the energy fell by less than ``tolerance`` relative (or rose)."""
    return before - after < tolerance * before.abs()


def _fit_adam(layer, keypoints2d, camera_K, betas, weights, global_orient, hand_pose, transl, iterations, learning_rates,
              tolerance, used, converged, progress):
    """The thesis schedule, updating the three tensors (and ``used``, ``converged``) in place. With a tolerance, an
    image whose energy fell by less than that (relative) in a step keeps its parameters from then on."""
    batch = keypoints2d.shape[0]

    def joints_of():
        return layer(betas, global_orient, hand_pose.view(batch, 15, 3), with_vertices=False).joints

    with torch.no_grad():
        # Stage 1 moves the translation only: K (J_k + r) = K J_k + K r with K J_k computed once.
        fixed = joints_of() @ camera_K.transpose(1, 2)

    def translation_stage_energy():
        uvw = fixed + (camera_K * transl[:, None, :]).sum(-1)[:, None]
        distance = (uvw[..., :2] / uvw[..., 2:].clamp_min(PROJECTION_MIN_DEPTH) - keypoints2d).norm(dim=-1)
        return (weights * distance).sum(-1)

    def full_energy():
        return _reprojection(joints_of(), transl, keypoints2d, camera_K, weights)[0]

    stages = [([transl], iterations[0], learning_rates[0], translation_stage_energy),
              ([global_orient, hand_pose, transl], iterations[1], learning_rates[1], full_energy)]
    for stage, (params, steps, lr, energy_of) in enumerate(stages):
        for p in params:
            p.requires_grad_(True)
        optimiser = torch.optim.Adam(params, lr=lr, fused=params[0].device.type in ("cpu", "cuda"))
        active = torch.ones(batch, dtype=torch.bool, device=keypoints2d.device)
        previous = None
        for _ in tqdm(range(steps), desc="fit_keypoints2d (adam)", disable=not progress, leave=False):
            optimiser.zero_grad(set_to_none=True)
            energy = energy_of()
            if tolerance is not None and previous is not None:
                # energy is that of the last step's result: judge that step; a stopped image keeps its parameters.
                stopped = active & _settled(previous, energy.detach(), tolerance)
                converged |= stopped if stage == 1 else torch.zeros_like(stopped)
                active &= ~stopped
                if not bool(active.any()):
                    break
            energy.sum().backward()  # images are independent: the sum's gradient is each image's own
            kept = [p.detach().clone() for p in params]
            optimiser.step()
            with torch.no_grad():
                for p, old in zip(params, kept):
                    p.copy_(torch.where(active[:, None], p, old))
            used[:, stage] += active.long()
            previous = energy.detach()
        for p in params:
            p.requires_grad_(False)


def _projection_jacobian(points, camera_K):
    """Pixels [B, N, 2] of points [B, N, 3] and d pixel / d point [B, N, 2, 3]: with q = K X,
    u_i = q_i / q_2, so du_i/dX = (K_i - u_i K_2) / q_2. Points at or behind the camera give z <= 0."""
    pixels, z = project(points, camera_K, min_depth=PROJECTION_MIN_DEPTH, return_depth=True)
    rows = camera_K[:, None, :2, :] - pixels[..., None] * camera_K[:, None, 2:, :]  # [B, N, 2, 3]
    return pixels, rows / z[..., None, None].clamp_min(PROJECTION_MIN_DEPTH), z


def _smoothed_energy(points, keypoints2d, camera_K, weights, eps):
    """[B]: E_eps = sum_k w_k sqrt(|P(X_k) - x_k|^2 + eps^2) for eps [B]; inf for a keypoint at or behind the camera."""
    pixels, z = project(points, camera_K, min_depth=PROJECTION_MIN_DEPTH, return_depth=True)
    squared = (pixels - keypoints2d).square().sum(-1)
    energy = (weights * (squared + eps[:, None].square()).sqrt()).sum(-1)
    return torch.where((z > 1e-4).all(-1), energy, torch.full_like(energy, float("inf")))


def _lm_normal_equations(residual, rows, weights, eps, radial):
    """H [B, P, P] and g [B, P] of the quadratic model of E_eps in the parameter step d, from residuals e_k [B, 21, 2]
    Jacobian rows G_k [B, 21, 2, P] and radial [B]: g = sum_k G_k^T w_k e_k / f_k with f_k = sqrt(|e_k|^2 + eps^2), and
    H = sum_k G_k^T W_k G_k with W_k = w_k / f_k (I - radial e_k e_k^T / f_k^2).

    radial = 0 gives IRLS's majoriser (curvature w_k / f_k in every direction: robust far from the optimum);
    radial = 1 the exact Hessian of sqrt(|e|^2 + eps^2) in e (Gauss-Newton in the projection), whose curvature
    along e_k is only w_k eps^2 / f_k^3: a keypoint far from its target is then nearly a linear (constant-force)
    term instead of a spring as stiff as the nearest one, which is what lets keypoints at zero residual release."""
    f = (residual.square().sum(-1) + eps[:, None].square()).sqrt()  # [B, 21], >= eps > 0
    unit = residual / f[..., None]
    eye = torch.eye(2, dtype=residual.dtype, device=residual.device)
    outer = unit[..., :, None] * unit[..., None, :]
    metric = (weights / f)[..., None, None] * (eye - radial[:, None, None, None] * outer)  # [B, 21, 2, 2]
    hessian = torch.einsum("bkip,bkij,bkjq->bpq", rows, metric, rows)
    gradient = torch.einsum("bkip,bki->bp", rows, (weights / f)[..., None] * residual)
    return hessian, gradient


def _damped_step(hessian, gradient, lam):
    """Solves (H + lam D) d = -g with D = diag(H) floored at 1e-6 of its largest entry (Marquardt's scaling);
    returns d and the model's predicted decrease -(g.d + d.H.d / 2). A failed factorisation gives d = 0."""
    diagonal = hessian.diagonal(dim1=1, dim2=2)
    damping = diagonal.clamp_min(1e-6 * diagonal.amax(-1, keepdim=True).clamp_min(1e-30))
    factor, info = torch.linalg.cholesky_ex(hessian + torch.diag_embed(lam[:, None] * damping))
    step = -torch.cholesky_solve(gradient[..., None], factor)[..., 0]
    step = torch.where((info == 0)[:, None], step, torch.zeros_like(step))
    predicted = -(gradient * step).sum(-1) - 0.5 * (step * (hessian @ step[..., None])[..., 0]).sum(-1)
    return step, predicted


def _fit_lm(layer, keypoints2d, camera_K, betas, weights, global_orient, hand_pose, transl, iterations, tolerance, used,
            converged, progress):
    """Levenberg-Marquardt on Eq. 6.4 by smoothing continuation; returns (global_orient, hand_pose, transl, eps [B]).

    Eq. 6.4 is a sum of unsquared norms: at its minimum many keypoints sit exactly on their targets (a finger can
    reach its keypoints whatever the palm does), where |e| has a kink. IRLS with weights w / max(|e|, floor) makes
    such keypoints springs 1/floor stiff, and they release only geometrically slowly when the palm must move. So
    the iterations minimise the smooth E_eps = sum_k w_k sqrt(|e_k|^2 + eps^2) >= E instead, for eps from 3 px
    down to 1e-5 px: per image and iteration, (H + lam D) d = -g (``_lm_normal_equations``, ``_damped_step``),
    p + d is kept only if E_eps decreases, and lam follows Nielsen's rule from the ratio of the actual to the
    predicted decrease. A level is settled when a kept step lowers E_eps by less than LM_LEVEL_TOLERANCE
    (relative) or no step does at damping LM_STALLED_DAMPING; eps then shrinks by LM_SMOOTHING_FACTOR. Since
    E_eps only falls as eps does, E_eps at the current level never increases from one iteration to the next.

    Stage 1 moves the translation alone at the first level; stage 2 moves the 48 pose values of the op (root
    first, the layer's mean pose included) and the translation. Both use IRLS's majoriser at the first level
    (the start may be tens of pixels off, where the exact curvature is too flat to take long steps) and
    stage 2 the exact Hessian of the smoothed norms below it.
    """
    from handops.ops.mano_skinning import mano_keypoints_jacobian, mano_skinning

    batch = keypoints2d.shape[0]
    model, ids = layer.fingertips, layer.fingertip_keypoint_ids
    with torch.no_grad():
        mean = layer.pose_mean.to(hand_pose).view(1, 15, 3) if not layer.flat_hand_mean else 0
        pose = torch.cat([global_orient[:, None], hand_pose.view(batch, 15, 3) + mean], 1)
        lam = keypoints2d.new_full((batch,), LM_INITIAL_DAMPING)
        nu = keypoints2d.new_full((batch,), 2.0)
        eps = keypoints2d.new_full((batch,), LM_SMOOTHING)

        for stage, steps in enumerate(iterations):
            full = stage == 1
            active = torch.ones(batch, dtype=torch.bool, device=keypoints2d.device)
            for _ in tqdm(range(steps), desc=f"fit_keypoints2d (lm, stage {stage + 1})", disable=not progress, leave=False):
                if full:
                    points, jacobian = mano_keypoints_jacobian(model, betas, pose, transl, ids)
                else:  # the translation's Jacobian is the identity
                    points = mano_skinning(model, betas, pose, transl, ids)[1]
                pixels, dpix, _ = _projection_jacobian(points, camera_K)
                rows = torch.cat([dpix @ jacobian, dpix], -1) if full else dpix  # [B, 21, 2, 51 or 3]
                # IRLS's majoriser until the first level settles (the start is far off), then the exact curvature.
                radial = (eps < LM_SMOOTHING).to(eps) if full else torch.zeros_like(eps)
                hessian, gradient = _lm_normal_equations(pixels - keypoints2d, rows, weights, eps, radial)
                step, predicted = _damped_step(hessian, gradient, lam)
                if full:
                    candidate_pose, candidate_transl = pose + step[:, :48].view(batch, 16, 3), transl + step[:, 48:]
                else:
                    candidate_pose, candidate_transl = pose, transl + step
                before = _smoothed_energy(points, keypoints2d, camera_K, weights, eps)
                after = _smoothed_energy(mano_skinning(model, betas, candidate_pose, candidate_transl, ids)[1],
                                         keypoints2d, camera_K, weights, eps)
                gain = (before - after) / predicted.clamp_min(1e-30)
                better = active & (gain > 0)
                # Nielsen's damping update: shrink by up to 3 on a good step, grow by 2, 4, 8, ... on failures.
                grown = torch.where(better, lam * torch.clamp(1 - (2 * gain - 1) ** 3, min=1 / 3), lam * nu).clamp(1e-9, 1e9)
                lam = torch.where(active, grown, lam)
                nu = torch.where(better, torch.full_like(nu, 2.0), torch.where(active, 2 * nu, nu))
                pose = torch.where(better[:, None, None], candidate_pose, pose)
                transl = torch.where(better[:, None], candidate_transl, transl)
                used[:, stage] += active.long()
                # A level is settled by a small kept decrease.
                small = better & _settled(before, after, LM_LEVEL_TOLERANCE)
                # Stalled: failing at a damping that leaves no useful step.
                stalled = active & ~better & (lam >= LM_STALLED_DAMPING)
                final = eps <= LM_SMOOTHING_MIN if full else torch.ones_like(active)
                if full:
                    refine = active & ~final & (small | stalled)
                    eps = torch.where(refine, (eps * LM_SMOOTHING_FACTOR).clamp_min(LM_SMOOTHING_MIN), eps)
                    lam = torch.where(refine & stalled, torch.full_like(lam, LM_INITIAL_DAMPING), lam)
                if tolerance is not None:
                    done = active & final & ((better & _settled(before, after, tolerance)) | stalled)
                    if full:
                        converged |= done
                    active &= ~done
                    if not bool(active.any()):
                        break
        hand = pose[:, 1:] - mean
    return pose[:, 0].clone(), hand.reshape(batch, 45).to(hand_pose.dtype), transl, eps


def calibrate_shape(layer: ManoLayer, betas: torch.Tensor, poses: torch.Tensor, confidences: torch.Tensor | None = None,
                    temperature: float = 0.33, iterations: int = 1000) -> torch.Tensor:
    """One shape for one subject from K images (thesis Eq. 6.6-6.7).

        w = softmax(confidences / temperature)   (1/K each when confidences is None)
        beta~ = argmin_b sum_k w_k |M(b, theta_k) - M(beta_k, theta_k)|_F

    Args:
        betas: [K, S] per-image shape predictions; poses: [K, 48] axis-angle per image (global
        orientation first, hand pose as the layer takes it); confidences: [K] or None.
    Returns:
        [S] the calibrated shape.

    MANO's vertices are affine in the shape for a fixed pose, so each image's mesh is
    M_k(b) = a_k + D_k b exactly; the sum of (unsquared) Frobenius norms is minimised by iteratively
    reweighted least squares on that affine form (each step a S x S solve), until the shape changes by less
    than 1e-10 relative or ``iterations`` steps. IRLS converges only linearly when the minimum lies at or next
    to one image's shape (images that agree closely, see the tests): 50 steps left such a case 5e-5 above it.
    """
    if betas.dim() != 2:
        raise ValueError(f"betas must be [K, S], got {list(betas.shape)}")
    count, num_betas = betas.shape
    if count == 0:
        raise ValueError("calibrate_shape needs at least one image")
    if poses.shape != (count, 48):
        raise ValueError(f"poses must be [K, 48] axis-angle (global orientation first) with K = {count}, got {list(poses.shape)}")
    if confidences is None:
        w = betas.new_full((count,), 1.0 / count)
    else:
        if confidences.shape != (count,):
            raise ValueError(f"confidences must be [K] = [{count}], got {list(confidences.shape)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        w = torch.softmax(confidences.to(betas) / temperature, dim=0)

    with torch.no_grad():
        def meshes(shape):  # [K, S] -> [K, V*3]
            return layer(shape, poses[:, :3], poses[:, 3:].reshape(count, 15, 3)).vertices.reshape(count, -1)

        targets = meshes(betas)
        base = meshes(betas.new_zeros(count, num_betas))
        # D_k columns: the mesh change per unit of each shape component (exact: M is affine in b).
        basis = torch.stack([meshes(torch.eye(num_betas, dtype=betas.dtype, device=betas.device)[s].expand(count, -1)) - base
                             for s in range(num_betas)], -1)  # [K, V*3, S]
        residual_of = lambda b: base + basis @ b - targets  # noqa: E731  [K, V*3]
        gram = torch.einsum("kvs,kvt->kst", basis, basis)
        rhs = torch.einsum("kvs,kv->ks", basis, targets - base)
        shape = torch.linalg.solve((w[:, None, None] * gram).sum(0), (w[:, None] * rhs).sum(0))  # squared-norm start
        for _ in range(iterations):
            norms = residual_of(shape).norm(dim=-1).clamp_min(1e-12)
            c = w / norms
            new = torch.linalg.solve((c[:, None, None] * gram).sum(0), (c[:, None] * rhs).sum(0))
            if torch.allclose(new, shape, rtol=1e-10, atol=1e-12):
                shape = new
                break
            shape = new
    return shape
