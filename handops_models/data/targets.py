"""Training targets of the thesis networks: keypoint heatmaps, AGMN pairwise kernels, the rotation angle
and the R-MGMN pose clusters.

Coordinates. Keypoints are image pixels (x, y) with (0, 0) the centre of the top-left pixel (the
convention of :mod:`handops_models.data.sample`). A network with output stride ``s`` (368 / 8 = 46) gives
heatmap cell (row r, col c) the block of input pixels ``[c s, (c + 1) s) x [r s, (r + 1) s)``, whose
centre is input pixel ``c s + (s - 1) / 2``. So

    heatmap coordinate  u = (x - (s - 1) / 2) / s,     image coordinate  x = s u + (s - 1) / 2

(:func:`image_to_heatmap`, :func:`heatmap_to_image`). With ``centre_aligned=False`` the mapping is the
plain ``u = x / s`` many CPM implementations use (a shift of (s - 1) / (2 s) cells, 0.44 for s = 8).
Heatmap and kernel arrays are indexed [row, col] = [y, x].

Unary targets (thesis Eq. 3.25 / 4.12: "a Gaussian peak at the keypoint's ground-truth location",
standard deviation 1 heatmap pixel in Sec. 4.5.1):

    S_k[r, c] = exp(-((c - u_k)^2 + (r - v_k)^2) / (2 sigma^2))      (peak value 1)

``normalize=True`` divides each map by its sum (the targets of Eq. 3.26 / 4.15 are "the normalised
version of S_k^*"). Masking: a keypoint whose ``visibility`` is False gets an all-zero map; one outside
the map just gets its (truncated, possibly vanishing) Gaussian. :func:`target_mask` (optionally also
"inside the input image") says which keypoints have a target, for the ``visibility`` argument or a loss.

Pairwise targets (Eq. 4.14): channel m of ``handops.hand_tree().messages[m] = (i, j)`` is a Gaussian on
a (kh, kw) kernel centred at ``c + (kp_j - kp_i)`` in heatmap pixels, c = (kh // 2, kw // 2) the kernel
centre: the convention of ``handops.tree_marginals`` (mass at offset d from the centre says "j lies at
i + d"), so the message ``i -> j`` of a Gaussian unary at i peaks at j.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from handops.tree import Tree, hand_tree

__all__ = [
    "image_to_heatmap", "heatmap_to_image", "keypoint_heatmaps", "target_mask", "pairwise_targets",
    "rotation_target", "rotate_keypoints", "pose_features", "PoseClusters", "fit_pose_clusters",
    "assign_pose_clusters", "pose_cluster_weights", "WRIST", "MIDDLE_MCP",
]

WRIST, MIDDLE_MCP = 0, 9  # the thesis' keypoints 1 and 10 of Eq. 3.23 (1-based), 0-based here


def _as_points(x, name: str, last: int = 2) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got {t.dtype}")
    if t.dim() < 2 or t.shape[-1] != last:
        raise ValueError(f"{name} must have shape [..., K, {last}], got {list(t.shape)}")
    t = t.to(torch.get_default_dtype()) if not t.is_floating_point() else t
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds NaN or Inf")
    return t


def _check_stride_sigma(stride: int, sigma: float) -> None:
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive number (heatmap pixels), got {sigma!r}")


def _size2(size, name: str) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be a positive int or (height, width), got {size}")
    return size


def image_to_heatmap(points, stride: int = 8, centre_aligned: bool = True) -> torch.Tensor:
    """Image pixels [..., 2] (x, y) -> heatmap pixels: ``(p - (stride - 1) / 2) / stride`` (or ``p / stride``)."""
    points = torch.as_tensor(points)
    points = points if points.is_floating_point() else points.to(torch.get_default_dtype())
    offset = (stride - 1) / 2 if centre_aligned else 0.0
    return (points - offset) / stride


def heatmap_to_image(points, stride: int = 8, centre_aligned: bool = True) -> torch.Tensor:
    """Heatmap pixels [..., 2] (u, v) -> image pixels: ``stride u + (stride - 1) / 2`` (or ``stride u``)."""
    points = torch.as_tensor(points)
    points = points if points.is_floating_point() else points.to(torch.get_default_dtype())
    offset = (stride - 1) / 2 if centre_aligned else 0.0
    return points * stride + offset


def _gaussians(centres: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """exp(-|grid - centre|^2 / (2 sigma^2)) on an [H, W] grid for centres [..., 2] (col, row) -> [..., H, W]."""
    height, width = size
    cols = torch.arange(width, dtype=centres.dtype, device=centres.device)
    rows = torch.arange(height, dtype=centres.dtype, device=centres.device)
    gx = torch.exp(-((cols - centres[..., 0:1]) ** 2) / (2 * sigma**2))  # [..., W]
    gy = torch.exp(-((rows - centres[..., 1:2]) ** 2) / (2 * sigma**2))  # [..., H]
    return gy[..., :, None] * gx[..., None, :]  # separable


def _visibility(visibility, shape: torch.Size, device) -> torch.Tensor:
    if visibility is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    vis = torch.as_tensor(visibility, device=device)
    if vis.dtype != torch.bool:
        raise TypeError(f"visibility must be a bool tensor, got {vis.dtype}")
    if vis.shape != shape:
        raise ValueError(f"visibility must have shape {list(shape)}, got {list(vis.shape)}")
    return vis


def target_mask(keypoints, visibility=None, image_size=None) -> torch.Tensor:
    """[..., K] bool: the keypoints [..., K, 2] that get a target: ``visibility`` (default all) and, with
    ``image_size`` (int or (H, W) input pixels), inside the image ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
    Pass it as ``visibility`` to :func:`keypoint_heatmaps` to zero the maps of outside keypoints too."""
    keypoints = _as_points(keypoints, "keypoints")
    mask = _visibility(visibility, keypoints.shape[:-1], keypoints.device).clone()
    if image_size is not None:
        height, width = _size2(image_size, "image_size")
        x, y = keypoints[..., 0], keypoints[..., 1]
        mask &= (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
    return mask


def keypoint_heatmaps(keypoints, size=46, stride: int = 8, sigma: float = 1.0, visibility=None,
                      normalize: bool = False, centre_aligned: bool = True) -> torch.Tensor:
    """Gaussian heatmaps [..., K, H, W] of keypoints [..., K, 2] in image pixels (module docstring).

    Args:
        size: the heatmap size, an int or (H, W) (46 for a 368 input and stride 8).
        sigma: standard deviation in heatmap pixels (the thesis uses 1).
        visibility: [..., K] bool; a False keypoint gets a zero map.
        normalize: divide every non-zero map by its sum (each then sums to 1).
    """
    keypoints = _as_points(keypoints, "keypoints")
    _check_stride_sigma(stride, sigma)
    size = _size2(size, "size")
    vis = _visibility(visibility, keypoints.shape[:-1], keypoints.device)
    maps = _gaussians(image_to_heatmap(keypoints, stride, centre_aligned), size, float(sigma))
    maps = maps * vis[..., None, None].to(maps.dtype)
    if normalize:
        total = maps.sum(dim=(-2, -1), keepdim=True)
        maps = torch.where(total > 0, maps / torch.where(total > 0, total, torch.ones_like(total)), maps)
    return maps


def pairwise_targets(keypoints, tree: Tree | None = None, kernel_size=45, stride: int = 8, sigma: float = 1.0,
                     visibility=None, normalize: bool = False, centre_aligned: bool = True) -> torch.Tensor:
    """AGMN pairwise ground truth Q^* (Eq. 4.14) [..., M, kh, kw] for keypoints [..., K, 2] in image pixels.

    Channel m, message ``(i, j) = tree.messages[m]`` (default ``handops.hand_tree()``, M = 40), is
    ``exp(-|p - (c + r_m)|^2 / (2 sigma^2))`` over kernel positions p = (col, row), c = (kw // 2, kh // 2),
    ``r_m = u_j - u_i`` the offset of j from i in heatmap pixels (``(kp_j - kp_i) / stride``; the choice of
    ``centre_aligned`` cancels out); ``kernel_size`` is odd. A message with an invisible end (``visibility``) gets a zero kernel;
    an offset beyond the kernel gives a truncated Gaussian. ``normalize`` makes each non-zero kernel sum to 1.
    """
    keypoints = _as_points(keypoints, "keypoints")
    _check_stride_sigma(stride, sigma)
    kh, kw = _size2(kernel_size, "kernel_size")
    if kh % 2 == 0 or kw % 2 == 0:  # the offsets are measured from a centre pixel, as tree_marginals requires
        raise ValueError(f"kernel_size must be odd (a centre pixel, as handops.tree_marginals requires), got {kh}x{kw}")
    tree = hand_tree() if tree is None else tree
    if not isinstance(tree, Tree):
        raise TypeError(f"tree must be a handops.Tree, got {type(tree).__name__}")
    if keypoints.shape[-2] != tree.num_nodes:
        raise ValueError(f"keypoints have {keypoints.shape[-2]} points but the tree has {tree.num_nodes} nodes")
    vis = _visibility(visibility, keypoints.shape[:-1], keypoints.device)
    src = torch.tensor([i for i, _ in tree.messages], dtype=torch.long, device=keypoints.device)
    dst = torch.tensor([j for _, j in tree.messages], dtype=torch.long, device=keypoints.device)
    uv = image_to_heatmap(keypoints, stride, centre_aligned)
    offsets = uv[..., dst, :] - uv[..., src, :]  # [..., M, 2] (dx, dy)
    centre = torch.tensor([kw // 2, kh // 2], dtype=uv.dtype, device=uv.device)
    kernels = _gaussians(centre + offsets, (kh, kw), float(sigma))
    kernels = kernels * (vis[..., src] & vis[..., dst])[..., None, None].to(kernels.dtype)
    if normalize:
        total = kernels.sum(dim=(-2, -1), keepdim=True)
        kernels = torch.where(total > 0, kernels / torch.where(total > 0, total, torch.ones_like(total)), kernels)
    return kernels


def rotation_target(keypoints, degrees: bool = True) -> torch.Tensor:
    """The rotation net's ground truth alpha^* of Eq. 3.23 [...] for keypoints [..., 21, 2] (image pixels).

    alpha^* is the signed angle from the upward unit vector v2 = (0, -1) (image y points down) to
    ``v1 = x_10 - x_1`` (wrist -> middle-finger MCP, keypoints 0 and 9 here), in (-180, 180] degrees
    (radians with ``degrees=False``): ``alpha^* = atan2(v1_x, -v1_y)``. Positive means the hand points
    clockwise of up on screen (90: to the right, -90: to the left, 180: down); rotating the image
    counter-clockwise by alpha^* (``transforms.Rotate(alpha^*)``) makes the hand upright.
    """
    keypoints = _as_points(keypoints, "keypoints")
    if keypoints.shape[-2] <= MIDDLE_MCP:
        raise ValueError(f"keypoints must hold the 21 hand keypoints, got {keypoints.shape[-2]}")
    v1 = keypoints[..., MIDDLE_MCP, :] - keypoints[..., WRIST, :]
    angle = torch.atan2(v1[..., 0], -v1[..., 1])
    angle = torch.where(angle <= -math.pi, angle + 2 * math.pi, angle)
    return torch.rad2deg(angle) if degrees else angle


def rotate_keypoints(keypoints, angle, centre=None, degrees: bool = True) -> torch.Tensor:
    """Keypoints [..., K, 2] rotated counter-clockwise on screen by ``angle`` [...] about ``centre`` [..., 2]
    (default the wrist): ``x' = c_x + dx cos a + dy sin a``, ``y' = c_y - dx sin a + dy cos a`` (y down)."""
    keypoints = _as_points(keypoints, "keypoints")
    angle = torch.as_tensor(angle, dtype=keypoints.dtype, device=keypoints.device)
    angle = torch.deg2rad(angle) if degrees else angle
    centre = keypoints[..., WRIST, :] if centre is None else torch.as_tensor(centre, dtype=keypoints.dtype)
    d = keypoints - centre[..., None, :]
    cos, sin = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    x = centre[..., None, 0] + d[..., 0] * cos + d[..., 1] * sin
    y = centre[..., None, 1] - d[..., 0] * sin + d[..., 1] * cos
    return torch.stack([x, y], -1)


def pose_features(keypoints, angles=None, tree: Tree | None = None, degrees: bool = True) -> torch.Tensor:
    """The K-means feature of Sec. 3.4.3 [N, 2(K-1)]: the keypoints [N, K, 2] rotated upright by ``angles``
    [N] (default the Eq. 3.23 target, as a perfect rotation net gives), then ``kp[child] - kp[parent]`` for
    every edge of ``tree`` (default the hand tree) in ``tree.edges`` order, concatenated as (dx, dy) pairs."""
    keypoints = _as_points(keypoints, "keypoints")
    if keypoints.dim() != 3:
        raise ValueError(f"keypoints must be [N, K, 2], got {list(keypoints.shape)}")
    tree = hand_tree() if tree is None else tree
    if keypoints.shape[1] != tree.num_nodes:
        raise ValueError(f"keypoints have {keypoints.shape[1]} points but the tree has {tree.num_nodes} nodes")
    if angles is None:
        angles, degrees = rotation_target(keypoints, degrees=False), False
    upright = rotate_keypoints(keypoints, angles, degrees=degrees)
    parent = torch.tensor([p for p, _ in tree.edges], dtype=torch.long)
    child = torch.tensor([c for _, c in tree.edges], dtype=torch.long)
    return (upright[:, child] - upright[:, parent]).flatten(1)


@dataclass
class PoseClusters:
    """L cluster centres [L, D] of pose features (:func:`pose_features`) and their K-means inertia
    (sum of squared distances of the fitted points to their centres)."""

    centres: torch.Tensor
    inertia: float

    def labels(self, keypoints, angles=None) -> torch.Tensor:
        """[N] int64 index of the nearest centre."""
        return assign_pose_clusters(keypoints, self.centres, angles)

    def weights(self, keypoints, temperature: float, angles=None) -> torch.Tensor:
        """[N, L] soft weights (:func:`pose_cluster_weights`)."""
        return pose_cluster_weights(keypoints, self.centres, temperature, angles)


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)


def _kmeans_once(x: torch.Tensor, num: int, iters: int, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    n = x.shape[0]
    # k-means++ seeding
    centres = [x[int(torch.randint(n, (1,), generator=gen))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, num):
        total = float(d2.sum())
        if total <= 0:
            idx = int(torch.randint(n, (1,), generator=gen))
        else:
            idx = int(torch.multinomial(d2 / total, 1, generator=gen))
        centres.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    c = torch.stack(centres)
    labels = None
    for _ in range(iters):
        dist = _sq_dists(x, c)
        new_labels = dist.argmin(1)
        if labels is not None and bool((new_labels == labels).all()):
            break
        labels = new_labels
        for k in range(num):
            members = labels == k
            if bool(members.any()):
                c[k] = x[members].mean(0)
            else:  # an empty cluster takes the point farthest from its centre
                far = int(dist.gather(1, labels[:, None]).squeeze(1).argmax())
                c[k] = x[far]
    inertia = float(_sq_dists(x, c).min(1).values.sum())
    return c, inertia


def fit_pose_clusters(keypoints, num_clusters: int = 20, seed: int = 0, iters: int = 100, restarts: int = 4,
                      angles=None) -> PoseClusters:
    """K-means (k-means++ seeding, Lloyd iterations, ``restarts`` runs, the lowest inertia kept) on the
    Sec. 3.4.3 features of keypoints [N, 21, 2] (thesis: L = 20 clusters); deterministic given ``seed``
    (a torch.Generator; computed and returned in float64)."""
    feats = pose_features(keypoints, angles).double()
    if not isinstance(num_clusters, int) or not 1 <= num_clusters <= feats.shape[0]:
        raise ValueError(f"num_clusters must be an int in [1, N={feats.shape[0]}], got {num_clusters!r}")
    if iters < 1 or restarts < 1:
        raise ValueError(f"iters and restarts must be >= 1, got {iters}, {restarts}")
    gen = torch.Generator().manual_seed(int(seed))
    best = None
    for _ in range(restarts):
        c, inertia = _kmeans_once(feats, num_clusters, iters, gen)
        if best is None or inertia < best[1]:
            best = (c, inertia)
    return PoseClusters(best[0], best[1])


def _centres(centres, feats: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(centres, dtype=feats.dtype, device=feats.device)
    if c.dim() != 2 or c.shape[1] != feats.shape[1]:
        raise ValueError(f"centres must be [L, {feats.shape[1]}], got {list(c.shape)}")
    return c


def assign_pose_clusters(keypoints, centres, angles=None) -> torch.Tensor:
    """[N] int64 label of the nearest centre [L, D] (squared Euclidean) for keypoints [N, 21, 2]."""
    feats = pose_features(keypoints, angles)
    return _sq_dists(feats, _centres(centres, feats)).argmin(1)


def pose_cluster_weights(keypoints, centres, temperature: float, angles=None) -> torch.Tensor:
    """[N, L] soft labels ``softmax_l(-|f - c_l|^2 / temperature)`` (squared pixels); rows sum to 1 and
    tend to the one-hot labels of :func:`assign_pose_clusters` as ``temperature -> 0``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    feats = pose_features(keypoints, angles)
    return torch.softmax(-_sq_dists(feats, _centres(centres, feats)) / temperature, dim=1)
