"""Pictures of hand samples: keypoints and the skeleton, a projected mesh, grids of samples, PNG files.

Everything works on uint8 RGB arrays [H, W, 3] (what :func:`to_uint8` makes of a torch image
[3, H, W] in [0, 1], a float or uint8 array [H, W, 3] or a PIL image) and is drawn with Pillow.
Keypoints follow the sample convention of :mod:`handops_models.data.sample`: (x, y) pixels, (0, 0)
the centre of the top-left pixel, OpenPose order of ``handops.hand_tree()``. ``scale`` > 1 enlarges
the image first (nearest neighbour) so that lines stay thin on small crops; keypoints are mapped to
the enlarged pixels as (x + 0.5) * scale - 0.5.

Colours: one per finger (thumb red, index orange, middle green, ring blue, little magenta, the wrist
white); bones take the colour of their child keypoint. Visible keypoints are filled discs, hidden
ones hollow rings, and bones touching a hidden keypoint are drawn thinner.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "FINGER_COLOURS", "keypoint_colours", "to_uint8", "upscale", "draw_keypoints", "draw_mesh",
    "draw_sample", "grid", "sample_grid", "save_png",
]

FINGER_COLOURS = {
    "wrist": (255, 255, 255), "thumb": (235, 60, 50), "index": (255, 170, 0), "middle": (60, 200, 60),
    "ring": (40, 140, 255), "little": (220, 70, 220),
}


def keypoint_colours() -> list[tuple[int, int, int]]:
    """The colour of each of the 21 keypoints (by finger, from ``handops.HAND_KEYPOINT_NAMES``)."""
    import handops

    return [FINGER_COLOURS[name.split("_")[0]] for name in handops.HAND_KEYPOINT_NAMES]


def to_uint8(image) -> np.ndarray:
    """[H, W, 3] uint8 RGB from a torch [3, H, W] / [H, W, 3] float in [0, 1] or uint8 tensor, a numpy
    array of the same layouts, or a PIL image (always a new array)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a torch tensor, numpy array or PIL image, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    if image.ndim != 3:
        raise ValueError(f"image must be [3, H, W] or [H, W, 3], got shape {list(image.shape)}")
    if image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):  # channels first
        image = np.moveaxis(image, 0, -1)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, -1)
    if image.shape[-1] != 3:
        raise ValueError(f"image must have 3 (or 1) channels, got shape {list(image.shape)}")
    if image.dtype == np.uint8:
        return np.array(image)
    return (np.clip(image.astype(np.float32), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def upscale(image, scale: int) -> np.ndarray:
    """``image`` (anything :func:`to_uint8` takes) enlarged ``scale`` times by pixel repetition."""
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    arr = to_uint8(image)
    return arr if scale == 1 else np.repeat(np.repeat(arr, scale, 0), scale, 1)


def _points(points, scale: int) -> np.ndarray:
    p = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    p = p.astype(np.float64)
    return (p + 0.5) * scale - 0.5


def draw_keypoints(image, keypoints2d, visibility=None, scale: int = 1, radius: float | None = None,
                   width: int | None = None, tree=None, skeleton: bool = True) -> np.ndarray:
    """The skeleton (edges of ``tree``, default ``handops.hand_tree()``) and the keypoints on
    ``image``: [H * scale, W * scale, 3] uint8.

    Args:
        keypoints2d: [K, 2] (x, y) pixels of the original image.
        visibility: [K] bool or None (all visible); hidden keypoints are hollow rings.
        scale: enlarge the image this many times first.
        radius, width: keypoint radius and bone width in output pixels (default from the image size).
    """
    from PIL import Image, ImageDraw

    import handops

    arr = upscale(image, scale)
    pts = _points(keypoints2d, scale)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"keypoints2d must be [K, 2], got shape {list(pts.shape)}")
    k = len(pts)
    vis = np.ones(k, dtype=bool) if visibility is None else (
        visibility.detach().cpu().numpy() if isinstance(visibility, torch.Tensor) else np.asarray(visibility)).astype(bool)
    if vis.shape != (k,):
        raise ValueError(f"visibility must be [{k}], got shape {list(vis.shape)}")
    tree = handops.hand_tree() if tree is None else tree
    colours = keypoint_colours() if k == 21 else [(255, 255, 0)] * k
    side = max(arr.shape[:2])
    radius = max(1.5, side / 100) if radius is None else float(radius)
    width = max(1, int(round(side / 120))) if width is None else int(width)
    canvas = Image.fromarray(arr)
    draw = ImageDraw.Draw(canvas)
    finite = np.isfinite(pts).all(1)
    if skeleton:
        for parent, child in tree.edges:
            if not (finite[parent] and finite[child]):
                continue
            both = vis[parent] and vis[child]
            w = width if both else max(1, width // 2)
            col = colours[child] if both else tuple(int(0.6 * c) for c in colours[child])
            draw.line([tuple(pts[parent]), tuple(pts[child])], fill=col, width=w)
    for i in range(k):
        if not finite[i]:
            continue
        x, y = pts[i]
        box = [x - radius, y - radius, x + radius, y + radius]
        if vis[i]:
            draw.ellipse(box, fill=colours[i], outline=(0, 0, 0))
        else:
            draw.ellipse(box, outline=colours[i], width=max(1, width))
    return np.asarray(canvas).copy()


def draw_mesh(image, vertices, faces, K, mode: str = "wireframe", colour=(80, 220, 255), alpha: float = 0.45,
              scale: int = 1) -> np.ndarray:
    """A mesh (camera coordinates ``vertices`` [V, 3], ``faces`` [F, 3], intrinsics ``K`` [3, 3])
    projected on ``image``: [H * scale, W * scale, 3] uint8.

    ``mode="wireframe"`` draws the edges of the front-facing triangles; ``mode="filled"`` rasterises
    the mesh (z-buffered, :func:`handops_models.data.render.rasterize`) and blends a shaded copy with
    opacity ``alpha``."""
    from PIL import Image, ImageDraw

    from handops.geometry import project
    from handops_models.data import render

    if mode not in ("wireframe", "filled"):
        raise ValueError(f"mode must be 'wireframe' or 'filled', got {mode!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    arr = upscale(image, scale)
    v = torch.as_tensor(vertices, dtype=torch.float32)
    f = torch.as_tensor(faces, dtype=torch.long)
    Km = torch.as_tensor(K, dtype=torch.float32).clone()
    if v.dim() != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be [V, 3], got {list(v.shape)}")
    if Km.shape != (3, 3):
        raise ValueError(f"K must be [3, 3], got {list(Km.shape)}")
    # the intrinsics of the enlarged image: u' = (u + 0.5) s - 0.5
    Km[:2] *= scale
    Km[:2, 2] += 0.5 * scale - 0.5
    height, width = arr.shape[:2]
    if mode == "filled":
        frags = render.rasterize(v[None], f, Km[None], (height, width))
        normals = render.vertex_normals(v[None], f)
        n = render.interpolate(normals, f, frags)[0]
        light = torch.tensor([0.3, -0.5, -1.0])
        lam = ((n * light / light.norm()).sum(-1).clamp(min=0) * 0.7 + 0.3).numpy()
        mask = frags.mask[0].numpy()
        shaded = np.asarray(colour, dtype=np.float32)[None, None] * lam[..., None]
        out = arr.astype(np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * shaded[mask]
        return (out + 0.5).astype(np.uint8)
    uv, z = project(v, Km, return_depth=True)
    uv, z = uv.numpy(), z.numpy()
    tri = v[f]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    front = ((normal * tri[:, 0]).sum(-1) < 0).numpy() & (z[f.numpy()] > 0).all(1)
    edges = set()
    for a, b, c in f.numpy()[front]:
        for p, q in ((a, b), (b, c), (c, a)):
            edges.add((min(p, q), max(p, q)))
    canvas = Image.fromarray(arr)
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    rgba = tuple(colour) + (int(255 * alpha),)
    for p, q in edges:
        draw.line([tuple(uv[p]), tuple(uv[q])], fill=rgba, width=1)
    canvas = Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")
    return np.asarray(canvas).copy()


def draw_sample(sample: dict, scale: int = 2, mesh: str | None = None, faces=None, skeleton: bool = True) -> np.ndarray:
    """One sample dict (image, keypoints2d, optional visibility; vertices and K for ``mesh``) drawn:
    [S * scale, S * scale, 3] uint8. ``mesh`` is None, "wireframe" or "filled" (needs ``faces``)."""
    arr = upscale(sample["image"], scale)
    if mesh is not None:
        if faces is None or "vertices" not in sample or "K" not in sample:
            raise ValueError("mesh overlay needs faces and a sample with 'vertices' and 'K'")
        arr = draw_mesh(arr, sample["vertices"], faces, _scaled_K(sample["K"], scale), mode=mesh)
    if skeleton:
        arr = draw_keypoints(arr, _points(sample["keypoints2d"], scale), sample.get("visibility"))
    return arr


def _scaled_K(K, scale: int) -> torch.Tensor:
    Km = torch.as_tensor(K, dtype=torch.float32).clone()
    Km[:2] *= scale
    Km[:2, 2] += 0.5 * scale - 0.5
    return Km


def grid(images: Sequence, ncols: int | None = None, pad: int = 2, background=(255, 255, 255)):
    """Tiles ``images`` (anything :func:`to_uint8` takes, all the same size) into a PIL image with
    ``ncols`` columns (default ceil(sqrt(n))) and ``pad`` pixels between them."""
    from PIL import Image

    arrays = [to_uint8(im) for im in images]
    if not arrays:
        raise ValueError("grid needs at least one image")
    h, w = arrays[0].shape[:2]
    if any(a.shape[:2] != (h, w) for a in arrays):
        raise ValueError("grid needs images of one size")
    ncols = int(math.ceil(math.sqrt(len(arrays)))) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    nrows = int(math.ceil(len(arrays) / ncols))
    out = Image.new("RGB", (ncols * w + (ncols + 1) * pad, nrows * h + (nrows + 1) * pad), tuple(background))
    for i, a in enumerate(arrays):
        r, c = divmod(i, ncols)
        out.paste(Image.fromarray(a), (pad + c * (w + pad), pad + r * (h + pad)))
    return out


def sample_grid(samples: Sequence[dict], ncols: int | None = None, scale: int = 2, mesh: str | None = None,
                faces=None, raw: bool = False):
    """A PIL grid of samples with their keypoints and skeletons (and a mesh overlay); ``raw`` puts the
    plain image before each annotated one."""
    tiles = []
    for s in samples:
        if raw:
            tiles.append(upscale(s["image"], scale))
        tiles.append(draw_sample(s, scale=scale, mesh=mesh, faces=faces))
    if ncols is not None and raw:
        ncols *= 2
    return grid(tiles, ncols)


def save_png(image, path: str | os.PathLike) -> str:
    """Writes ``image`` (a PIL image or anything :func:`to_uint8` takes) as a PNG; returns the path."""
    from PIL import Image

    img = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image))
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    img.save(path, format="PNG")
    return path
