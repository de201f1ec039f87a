"""Evaluation metrics of the thesis: PCK / mPCK / AUC and EPE for 2-D keypoints (Ch. 3-5), MPJPE, MPVPE,
PA-MPJPE and the shape-calibration errors for meshes (Ch. 6), a results table and PCK curves.

2-D: ``pred``, ``gt`` [N, K, 2] pixels. PCK (Eq. 5.5): for an image whose square crop (bounding box) has
side s, a keypoint is correct at threshold delta when ``|pred - gt|_2 <= delta * s``; ``PCK(delta) =
N(delta) / K``. Over a data set the correct keypoints are pooled: ``PCK = sum correct / sum counted``
(with ``visible`` only visible keypoints are counted); with every keypoint counted this is the mean of
the per-image Eq. 5.5. mPCK is the mean PCK over the thresholds (0.01, ..., 0.06 in Tables 3.1 and 5.1).

3-D (Sec. 6.4.1): inputs in metres, results in millimetres. MPJPE / MPVPE are the mean Euclidean
distances after subtracting each hand's root (joint 0, the wrist); PA-MPJPE after the similarity
(scale, rotation, translation) Procrustes alignment of each prediction to its ground truth.
Shape calibration (Sec. 6.4.1): MSE of the betas; W-error and L-error, the mean absolute difference of
hand width (index MCP to ring MCP joint) and hand length (wrist joint to middle fingertip) between the
two shapes at the flat pose (identity rotations, no translation), through a ``handops.ManoLayer``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

__all__ = [
    "THESIS_THRESHOLDS", "keypoint_distances", "pck", "mpck", "auc", "pck_auc", "epe", "mpjpe", "mpvpe",
    "procrustes_align", "pa_mpjpe", "betas_mse", "hand_width_length", "shape_errors", "scale_direction",
    "without_scale", "results_table",
    "plot_pck_curves", "pck_per_image", "bootstrap_interval", "root_relative_errors",
]

THESIS_THRESHOLDS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06)
INDEX_MCP, RING_MCP, WRIST, MIDDLE_TIP = 5, 13, 0, 12  # OpenPose order of handops.hand_tree()


def _pair(pred, gt, dims: int, name: str = "pred") -> tuple[torch.Tensor, torch.Tensor]:
    pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
    for label, t in ((name, pred), ("gt", gt)):
        if not t.is_floating_point():
            raise TypeError(f"{label} must be a floating-point tensor, got {t.dtype}")
        if t.dim() != 3 or t.shape[-1] != dims:
            raise ValueError(f"{label} must have shape [N, J, {dims}], got {list(t.shape)}")
        if t.shape[0] == 0 or t.shape[1] == 0:  # every metric averages over the points: undefined, not NaN
            raise ValueError(f"{label} must hold at least one point (N, J >= 1 in [N, J, {dims}]), got {list(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{label} holds NaN or Inf")
    if pred.shape != gt.shape:
        raise ValueError(f"{name} {list(pred.shape)} and gt {list(gt.shape)} differ in shape")
    dtype = torch.promote_types(pred.dtype, gt.dtype)
    return pred.to(dtype), gt.to(dtype)


def _mask(visible, shape) -> torch.Tensor | None:
    if visible is None:
        return None
    vis = torch.as_tensor(visible)
    if vis.dtype != torch.bool:
        raise TypeError(f"visible must be a bool tensor, got {vis.dtype}")
    if vis.shape != shape:
        raise ValueError(f"visible must have shape {list(shape)}, got {list(vis.shape)}")
    if not bool(vis.any()):
        raise ValueError("visible marks no keypoint; the metric is undefined")
    return vis


def keypoint_distances(pred, gt) -> torch.Tensor:
    """[N, K] Euclidean distances of [N, K, D] keypoints."""
    pred, gt = _pair(pred, gt, torch.as_tensor(pred).shape[-1])
    return (pred - gt).norm(dim=-1)


def _thresholds(thresholds) -> torch.Tensor:
    t = torch.as_tensor(thresholds, dtype=torch.float64).reshape(-1)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"thresholds must be non-negative finite numbers, got {thresholds}")
    return t


def pck(pred, gt, bbox_size, thresholds=THESIS_THRESHOLDS, visible=None) -> torch.Tensor:
    """PCK (Eq. 5.5) [T] float64 in [0, 1] at each normalised threshold.

    Args:
        pred, gt: [N, K, 2] pixels.
        bbox_size: [N] side s of each image's square bounding box (the crop), pixels, > 0.
        thresholds: [T] normalised thresholds delta; correct means ``distance <= delta * s``.
        visible: [N, K] bool, count only these keypoints (pooled over the data set).
    """
    pred, gt = _pair(pred, gt, 2)
    size = torch.as_tensor(bbox_size, dtype=torch.float64).reshape(-1)
    if size.numel() != pred.shape[0]:
        raise ValueError(f"bbox_size must have {pred.shape[0]} entries, one per image, got {size.numel()}")
    if not bool((size > 0).all()) or not bool(torch.isfinite(size).all()):
        raise ValueError("bbox_size must be positive and finite")
    t = _thresholds(thresholds)
    vis = _mask(visible, pred.shape[:2])
    dist = (pred - gt).double().norm(dim=-1)  # [N, K]
    correct = dist[None] <= t[:, None, None] * size[None, :, None]  # [T, N, K]
    if vis is None:
        return correct.double().mean(dim=(1, 2))
    return (correct & vis).double().sum(dim=(1, 2)) / vis.sum()


def pck_per_image(pred, gt, bbox_size, thresholds=THESIS_THRESHOLDS) -> torch.Tensor:
    """[N, T] float64: each image's Eq. 5.5 PCK at each threshold (every keypoint counted).

    Its mean over the images is :func:`pck` without ``visible``; the per-image values are what a bootstrap
    over test images resamples (:func:`bootstrap_interval`).
    """
    pred, gt = _pair(pred, gt, 2)
    size = torch.as_tensor(bbox_size, dtype=torch.float64).reshape(-1)
    if size.numel() != pred.shape[0] or not bool((size > 0).all()) or not bool(torch.isfinite(size).all()):
        raise ValueError(f"bbox_size must have {pred.shape[0]} positive finite entries, one per image")
    t = _thresholds(thresholds)
    dist = (pred - gt).double().norm(dim=-1)  # [N, K]
    return (dist[:, None, :] <= t[None, :, None] * size[:, None, None]).double().mean(dim=2)


def bootstrap_interval(scores, baseline=None, samples: int = 2000, level: float = 0.95, seed: int = 0, groups=None):
    """Percentile bootstrap over images of a mean score, or of a paired difference of two.

    ``scores`` [N] (one value per test image, e.g. a row mean of :func:`pck_per_image`); with ``baseline``
    [N] (the same images scored by another model) the statistic is ``mean(scores - baseline)`` and both are
    resampled with the same image indices (a paired bootstrap: the images' difficulty cancels).
    ``groups`` [N] (e.g. subject ids): a cluster bootstrap, resampling whole groups with replacement (the
    statistic is the mean over the drawn groups' images), for images that are not independent (a subject's
    images share its shape: the effective sample size is nearer the number of subjects).
    Returns (estimate, low, high): the statistic on all images and the ``(1 -+ level) / 2`` percentiles of
    ``samples`` resampled statistics.
    """
    x = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    if baseline is not None:
        b = torch.as_tensor(baseline, dtype=torch.float64).reshape(-1)
        if b.shape != x.shape:
            raise ValueError(f"a paired bootstrap needs one baseline score per image: {x.numel()} vs {b.numel()}")
        x = x - b
    if x.numel() < 2 or not bool(torch.isfinite(x).all()):
        raise ValueError(f"bootstrap_interval needs at least 2 finite scores, got {x.numel()}")
    if not 0 < level < 1 or samples < 10:
        raise ValueError(f"need 0 < level < 1 and samples >= 10, got level={level}, samples={samples}")
    generator = torch.Generator().manual_seed(seed)
    stats = torch.empty(samples, dtype=torch.float64)
    if groups is not None:
        labels = torch.as_tensor(groups).reshape(-1)
        if labels.numel() != x.numel():
            raise ValueError(f"groups must label every score: {labels.numel()} labels for {x.numel()} scores")
        _, index = torch.unique(labels, return_inverse=True)
        count = int(index.max()) + 1
        if count < 2:
            raise ValueError("a cluster bootstrap needs at least 2 groups")
        sums = torch.zeros(count, dtype=torch.float64).index_add_(0, index, x)
        sizes = torch.zeros(count, dtype=torch.float64).index_add_(0, index, torch.ones_like(x))
        for s in range(samples):
            drawn = torch.randint(0, count, (count,), generator=generator)
            stats[s] = sums[drawn].sum() / sizes[drawn].sum()
        low, high = torch.quantile(stats, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
        return float(x.mean()), low, high
    for start in range(0, samples, 256):  # chunks bound the index matrix's memory
        n = min(256, samples - start)
        idx = torch.randint(0, x.numel(), (n, x.numel()), generator=generator)
        stats[start:start + n] = x[idx].mean(dim=1)
    low, high = torch.quantile(stats, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return float(x.mean()), low, high


def mpck(pred, gt, bbox_size, thresholds=THESIS_THRESHOLDS, visible=None) -> float:
    """Mean of :func:`pck` over ``thresholds`` (the thesis' mPCK, in [0, 1])."""
    return float(pck(pred, gt, bbox_size, thresholds, visible).mean())


def auc(thresholds, values) -> float:
    """Normalised area under a curve: ``trapezoid(values, thresholds) / (thresholds[-1] - thresholds[0])``.

    ``thresholds`` [T >= 2] strictly increasing; ``values`` [T] fractions in [0, 1] (a PCK curve), so the
    result is in [0, 1].
    """
    t = _thresholds(thresholds)
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if t.numel() < 2 or v.numel() != t.numel():
        raise ValueError(f"auc needs at least two thresholds and one value each, got {t.numel()} and {v.numel()}")
    if not bool(((v >= 0) & (v <= 1)).all()):  # NaN fails both comparisons
        raise ValueError(f"values must be fractions in [0, 1] (a PCK curve, as pck returns), got {v.tolist()}")
    if not bool((t[1:] > t[:-1]).all()):
        raise ValueError("thresholds must be strictly increasing")
    return float(torch.trapezoid(v, t) / (t[-1] - t[0]))


def pck_auc(pred, gt, bbox_size, low: float = 0.0, high: float = 0.1, steps: int = 101, visible=None) -> float:
    """:func:`auc` of the PCK curve at ``steps`` evenly spaced thresholds in [low, high]."""
    if not 0 <= low < high or steps < 2:
        raise ValueError(f"need 0 <= low < high and steps >= 2, got {low}, {high}, {steps}")
    t = torch.linspace(low, high, steps, dtype=torch.float64)
    return auc(t, pck(pred, gt, bbox_size, t, visible))


def epe(pred, gt, visible=None) -> float:
    """Mean end-point error: mean Euclidean distance over the (visible) keypoints [N, K, 2], pixels."""
    pred, gt = _pair(pred, gt, 2)
    vis = _mask(visible, pred.shape[:2])
    dist = (pred - gt).double().norm(dim=-1)
    return float(dist.mean() if vis is None else dist[vis].mean())


def root_relative_errors(pred, gt, pred_root, gt_root) -> torch.Tensor:
    """[N] float64, mm: each hand's mean ``|(p_i - p_root) - (g_i - g_root)|`` over its points [N, P, 3] (metres),
    roots [N, 3]: the per-image MPJPE / MPVPE that a bootstrap over test images resamples."""
    pred_root = torch.as_tensor(pred_root, dtype=pred.dtype).reshape(pred.shape[0], 1, 3)
    gt_root = torch.as_tensor(gt_root, dtype=gt.dtype).reshape(gt.shape[0], 1, 3)
    return ((pred - pred_root) - (gt - gt_root)).double().norm(dim=-1).mean(dim=1) * 1000


def _root_relative_error(pred, gt, pred_root, gt_root) -> float:
    return float(root_relative_errors(pred, gt, pred_root, gt_root).mean())


def mpjpe(pred, gt, root: int = 0) -> float:
    """MPJPE (Sec. 6.4.1), mm: ``mean |(p_j - p_root) - (g_j - g_root)|`` for joints [N, J, 3] in metres."""
    pred, gt = _pair(pred, gt, 3)
    if not 0 <= root < pred.shape[1]:
        raise ValueError(f"root must index a joint in [0, {pred.shape[1]}), got {root}")
    return _root_relative_error(pred, gt, pred[:, root], gt[:, root])


def mpvpe(pred_vertices, gt_vertices, pred_root, gt_root) -> float:
    """MPVPE (Sec. 6.4.1), mm: vertices [N, V, 3] (metres) made root-relative with each hand's root joint
    ``pred_root``, ``gt_root`` [N, 3] (the wrist of the predicted / ground-truth joints)."""
    pred, gt = _pair(pred_vertices, gt_vertices, 3, "pred_vertices")
    for name, r in (("pred_root", pred_root), ("gt_root", gt_root)):
        if tuple(torch.as_tensor(r).shape) not in ((pred.shape[0], 3), (pred.shape[0], 1, 3)):
            raise ValueError(f"{name} must be [N, 3] with N = {pred.shape[0]}, got {list(torch.as_tensor(r).shape)}")
    return _root_relative_error(pred, gt, pred_root, gt_root)


def procrustes_align(pred, gt) -> torch.Tensor:
    """``s R pred + t`` [N, J, 3] minimising ``|s R pred + t - gt|^2`` per hand (Umeyama: SVD of the
    cross-covariance, a reflection refused by the sign of the smallest singular value)."""
    pred, gt = _pair(pred, gt, 3)
    x, y = pred.double(), gt.double()
    mx, my = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
    xc, yc = x - mx, y - my
    cov = yc.transpose(1, 2) @ xc  # [N, 3, 3] = sum_j y_j x_j^T
    u, sig, vt = torch.linalg.svd(cov)
    d = torch.ones_like(sig)
    d[:, -1] = torch.sign(torch.linalg.det(u @ vt))
    d[:, -1] = torch.where(d[:, -1] == 0, torch.ones_like(d[:, -1]), d[:, -1])
    rot = u @ torch.diag_embed(d) @ vt
    var = (xc**2).sum(dim=(1, 2))
    scale = (sig * d).sum(1) / torch.where(var > 0, var, torch.ones_like(var))
    aligned = scale[:, None, None] * xc @ rot.transpose(1, 2) + my
    return aligned.to(pred.dtype)


def pa_mpjpe(pred, gt) -> float:
    """PA-MPJPE, mm: mean joint error after :func:`procrustes_align` (scale, rotation, translation)."""
    pred, gt = _pair(pred, gt, 3)
    return float((procrustes_align(pred, gt).double() - gt.double()).norm(dim=-1).mean() * 1000)


def betas_mse(pred_betas, gt_betas) -> float:
    """MSE_mano (Sec. 6.4.1): ``mean((pred - gt)^2)`` over hands and shape components, [N, S]."""
    p, g = torch.as_tensor(pred_betas), torch.as_tensor(gt_betas)
    if p.dim() != 2 or p.shape != g.shape or p.numel() == 0:
        raise ValueError(f"betas must both be [N, S] with N, S >= 1, got {list(p.shape)} and {list(g.shape)}")
    return float(((p.double() - g.double()) ** 2).mean())


def hand_width_length(layer, betas) -> tuple[torch.Tensor, torch.Tensor]:
    """(width, length) [N] metres at the flat pose (identity rotations, so no mean pose is added):
    width = |index MCP - ring MCP| (OpenPose joints 5, 13), length = |wrist - middle fingertip| (0, 12)."""
    betas = torch.as_tensor(betas)
    if betas.dim() != 2 or not betas.is_floating_point():
        raise ValueError(f"betas must be a floating-point [N, S] tensor, got {betas.dtype} {list(betas.shape)}")
    n = betas.shape[0]
    eye = torch.eye(3, dtype=betas.dtype)
    with torch.no_grad():
        joints = layer(betas, eye.expand(n, 3, 3), eye.expand(n, 15, 3, 3), with_vertices=False).joints
    width = (joints[:, INDEX_MCP] - joints[:, RING_MCP]).norm(dim=-1)
    length = (joints[:, WRIST] - joints[:, MIDDLE_TIP]).norm(dim=-1)
    return width, length


def shape_errors(layer, pred_betas, gt_betas) -> dict[str, float]:
    """{"mse_betas", "w_error_mm", "l_error_mm"}: :func:`betas_mse` and the mean absolute hand width and
    length differences (mm) of :func:`hand_width_length` (thesis Table 6.3)."""
    mse = betas_mse(pred_betas, gt_betas)
    wp, lp = hand_width_length(layer, torch.as_tensor(pred_betas))
    wg, lg = hand_width_length(layer, torch.as_tensor(gt_betas))
    return {
        "mse_betas": mse,
        "w_error_mm": float((wp - wg).abs().double().mean() * 1000),
        "l_error_mm": float((lp - lg).abs().double().mean() * 1000),
    }


def scale_direction(layer) -> tuple[torch.Tensor, float]:
    """The shape direction that only scales the hand: (u [S] unit float64, relative residual).

    ``u = d / |d|`` where d minimises ``|(S d - J0(S d)) - (T - J0(T))|`` (S the shape blend shapes
    [V*3, S], T the template, J0 the wrist regressor): the betas change closest to a uniform scaling of the
    rest hand about its wrist; the residual is that fit's error over ``|T - J0(T)|`` (0: an exact scaling). Under a pinhole camera a hand scaled by s and seen from s times the distance projects to
    the same picture, so crops whose camera distance follows the hand's size (SyntheticHands frames every hand
    to fill a random fraction of the crop) show nothing of a shape's component along ``u``. (Exactly: scaling
    the hand of shape b by s gives the shape ``s b + (s - 1) |d| u``, which differs from moving along ``u``
    alone by ``(s - 1) b``; for the procedural hand that changes the scale-blind errors by about 0.01 mm.)
    """
    model = getattr(layer, "model", None)
    if model is None or not hasattr(model, "shapedirs"):
        raise ValueError(f"scale_direction takes a handops.ManoLayer (its .model's blend shapes), got {type(layer).__name__}")
    shapedirs = model.shapedirs.double()  # [V, 3, S]
    regressor0 = model.J_regressor.double()[0]  # [V]: the wrist (MANO joint 0)
    template = model.v_template.double()
    centred_dirs = (shapedirs - torch.einsum("v,vcs->cs", regressor0, shapedirs)).reshape(-1, shapedirs.shape[-1])
    centred_template = (template - regressor0 @ template).reshape(-1, 1)
    d = torch.linalg.lstsq(centred_dirs, centred_template).solution[:, 0]
    residual = float((centred_dirs @ d - centred_template[:, 0]).norm() / centred_template.norm())
    return d / d.norm(), residual


def without_scale(betas, direction) -> torch.Tensor:
    """``betas - (betas . u) u`` [N, S]: the shape with its component along the unit ``direction`` u
    (:func:`scale_direction`) at the population mean 0 (SyntheticHands draws betas ~ N(0, I))."""
    if isinstance(direction, tuple):
        raise ValueError("direction must be the unit [S] tensor u; scale_direction returns (u, residual): pass its [0]")
    betas = torch.as_tensor(betas)
    u = torch.as_tensor(direction).to(betas)
    if betas.dim() != 2 or u.shape != betas.shape[1:]:
        raise ValueError(f"betas must be [N, S] and the direction [S], got {list(betas.shape)} and {list(u.shape)}")
    return betas - (betas @ u)[:, None] * u


def _format(v: float) -> str:
    return f"{v:.2f}"


def results_table(results: Mapping, thresholds=THESIS_THRESHOLDS, improvement: tuple[str, str] | None = None,
                  title: str | None = None, print_table: bool = True) -> str:
    """A Table 3.1 / 4.1-style PCK table: rows methods, columns PCK at each threshold and mPCK, in percent.

    Args:
        results: method name -> PCK values [T] (fractions in [0, 1], as :func:`pck` returns), or
            section name (a data set) -> such a mapping, each section printed under its name.
        improvement: (method, baseline): add the row "Improvement" = method - baseline (per section).
        title: a first line.
    Columns are tab-free, aligned; values have two decimals. Returns the table (printed unless
    ``print_table=False``).
    """
    t = _thresholds(thresholds).tolist()
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping of method -> PCK values")
    sections = results if all(isinstance(v, Mapping) for v in results.values()) else {None: results}
    header = ["Threshold of PCK, sigma"] + [f"{x:g}" for x in t] + ["mPCK"]
    body: list[list[str] | str] = []
    for name, methods in sections.items():
        if name is not None:
            body.append(str(name))
        rows = {}
        for method, values in methods.items():
            v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
            if v.numel() != len(t):
                raise ValueError(f"{method!r} has {v.numel()} PCK values for {len(t)} thresholds")
            if bool((v < 0).any()) or bool((v > 1).any()):
                raise ValueError(f"{method!r}: PCK values must be fractions in [0, 1]")
            rows[method] = torch.cat([v, v.mean()[None]]) * 100
            body.append([str(method)] + [_format(x) for x in rows[method].tolist()])
        if improvement is not None:
            method, baseline = improvement
            if method not in rows or baseline not in rows:
                raise ValueError(f"improvement names {improvement}, but the methods are {list(rows)}")
            body.append(["Improvement"] + [_format(x) for x in (rows[method] - rows[baseline]).tolist()])
    lines_cells = [header] + [r for r in body if isinstance(r, list)]
    widths = [max(len(r[c]) for r in lines_cells) for c in range(len(header))]

    def line(cells):
        return "  ".join(cells[0].ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))

    out = [] if title is None else [title]
    out.append(line(header))
    out.append("-" * len(out[-1]))
    for r in body:
        out.append(line(r) if isinstance(r, list) else r)
    text = "\n".join(out)
    if print_table:
        print(text)
    return text


def plot_pck_curves(curves: Mapping, path, thresholds=None, title: str = "PCK", xlabel: str = "normalised threshold",
                    dpi: int = 100) -> Path:
    """Write a PNG of PCK curves (matplotlib's Agg canvas; the global backend is left alone).

    ``curves``: method -> values [T] (fractions) on the shared ``thresholds`` [T], or method ->
    (thresholds, values). The y axis is in percent. Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty mapping of method -> PCK values")
    fig = Figure(figsize=(5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        if isinstance(curve, Sequence) and len(curve) == 2 and not isinstance(curve[0], (int, float)):
            x, y = curve
        else:
            if thresholds is None:
                raise ValueError(f"{name!r} gives only values; pass thresholds or (thresholds, values)")
            x, y = thresholds, curve
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if x.numel() != y.numel():
            raise ValueError(f"{name!r}: {x.numel()} thresholds but {y.numel()} values")
        ax.plot(x.numpy(), (y * 100).numpy(), marker="o", markersize=3, label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PCK (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path
