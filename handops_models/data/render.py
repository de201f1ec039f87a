"""A small batched software renderer (torch on the CPU, no OpenGL, no GPU needed).

Two halves:

* **Meshes** — :func:`rasterize` is a z-buffered triangle rasteriser vectorised over all faces of a
  batch of meshes at once: every (front-facing) face enumerates the pixel centres of its own bounding
  box (a small window per face, no fixed tile), tests them with edge functions, interpolates 1/z
  (perspective-correct depth and barycentrics) and the nearest surface per pixel wins through
  ``scatter_reduce(..., "amin")`` (ties: the lowest face id); :func:`rasterize_pixels` returns the
  covered pixels only. :func:`vertex_normals`, :func:`interpolate` (:func:`interpolate_pixels`) and
  :func:`shade` turn the fragments into a smooth-shaded picture (wrapped
  Lambert diffuse, ambient, Blinn-Phong specular, one directional light).
* **2-D helpers** — :func:`polygon` (ellipses, rectangles, bars, triangles and blobs as polygons, drawn
  by Pillow's ``ImageDraw``), :func:`stripes` (a batch of stripe / checker textures) and
  :func:`blur3` (a separable 3-tap blur); the synthetic backgrounds and occluders are built from them.

Conventions: camera coordinates x right, y down, z forward (metres); pixel (0, 0) is the centre of the
top-left pixel, so a point projects to (u, v) = (K X)[:2] / (K X)[2] and pixel (x, y) covers
[x - 0.5, x + 0.5] x [y - 0.5, y + 0.5]. Images are [B, H, W] / [B, H, W, C] (channels last) inside
this module. Every output pixel is a function of its own sample's inputs only (element-wise arithmetic,
gathers and min-reductions), so rendering a sample alone or inside any batch gives the same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "Fragments", "PixelFragments", "project", "rasterize", "rasterize_pixels", "vertex_normals", "interpolate",
    "interpolate_at", "interpolate_pixels", "shade",
    "pixel_grid", "polygon", "stripes", "blur3", "SHAPES",
]

SHAPES = ("ellipse", "rectangle", "triangle", "blob")


@dataclass
class Fragments:
    """The visible surface per pixel: ``depth`` [B, H, W] camera z in metres (``inf`` where no face
    covers the pixel), ``face`` [B, H, W] int64 face index (-1 for background), ``bary`` [B, H, W, 3]
    perspective-correct barycentric weights of the face's three vertices (0 for background)."""

    depth: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.face >= 0


@dataclass
class PixelFragments:
    """The covered pixels only: ``pixels`` [m] ascending flat indices into B * H * W, and per pixel the
    visible ``face`` [m] (int64), perspective-correct ``bary`` [m, 3] and camera ``depth`` [m];
    ``shape`` = (B, H, W)."""

    pixels: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    shape: tuple

    def dense(self) -> Fragments:
        n = self.shape[0] * self.shape[1] * self.shape[2]
        dev = self.pixels.device
        depth = torch.full((n,), math.inf, device=dev)
        face = torch.full((n,), -1, dtype=torch.long, device=dev)
        bary = torch.zeros(n, 3, device=dev)
        depth[self.pixels], face[self.pixels], bary[self.pixels] = self.depth, self.face, self.bary
        return Fragments(depth.view(self.shape), face.view(self.shape), bary.view(*self.shape, 3))


def project(points: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole projection of ``points`` [B, N, 3] with ``K`` [B, 3, 3]: (uv [B, N, 2] pixels, z [B, N])."""
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be [B, N, 3], got {list(points.shape)}")
    if K.shape != (points.shape[0], 3, 3):
        raise ValueError(f"K must be [B, 3, 3] with B = {points.shape[0]}, got {list(K.shape)}")
    h = torch.einsum("bij,bnj->bni", K.to(points.dtype), points)
    z = h[..., 2]
    return h[..., :2] / z[..., None], z


def _size(size) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, size, cull_backfaces: bool = True,
              near: float = 1e-3) -> Fragments:
    """Z-buffered rasterisation of a batch of meshes sharing ``faces``: dense :class:`Fragments`
    (see :func:`rasterize_pixels` for the arguments and the method)."""
    return rasterize_pixels(vertices, faces, K, size, cull_backfaces, near).dense()


def rasterize_pixels(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, size, cull_backfaces: bool = True,
                     near: float = 1e-3) -> PixelFragments:
    """Z-buffered rasterisation of a batch of meshes sharing ``faces``: the covered pixels only.

    Args:
        vertices: [B, V, 3] camera coordinates (metres, z forward).
        faces: [F, 3] vertex indices, wound counter-clockwise seen from outside (outward normals).
        K: [B, 3, 3] intrinsics.
        size: image height = width (int) or (height, width).
        cull_backfaces: skip faces whose outward normal points away from the camera (exact for closed
            surfaces, halves the work).
        near: faces with a vertex closer than ``near`` (m) are dropped (no clipping).

    How: each kept face becomes four planes over the image, its three screen-space barycentrics
    lambda_k(x, y) and 1/z(x, y) (both affine in screen space). Faces are grouped by the sides of their
    pixel bounding box (window sides 1, 2, 3, 4, 6, 8, 12, ... pixels) and every face of a group evaluates its planes
    on its own window by broadcasting (no per-pixel gathers). A pixel centre is inside when all three
    lambda >= 0 (pixels on a shared edge are claimed by both faces and settled by the depth test). The
    depth test is one ``scatter_reduce(..., "amin")`` over int64 keys ``float32 bits of z << 32 | face``
    (positive floats order like their bit patterns), so the nearest face wins and ties go to the
    lowest face index; the winners' perspective-correct barycentrics are evaluated once per pixel.
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be [B, V, 3], got {list(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {list(faces.shape)}")
    height, width = _size(size)
    batch, dev = vertices.shape[0], vertices.device
    v = vertices.float()
    uv, z = project(v, K.float())
    faces = faces.to(dev, torch.long)
    n_faces = faces.shape[0]
    flat = faces.reshape(-1)
    tri_z = z.index_select(1, flat).view(batch, n_faces, 3)
    keep = (tri_z > near).all(-1)
    tri_uv = uv.index_select(1, flat).view(batch, n_faces, 3, 2)
    if cull_backfaces:
        # with every vertex in front of the camera, a face is front-facing (outward normal towards the
        # camera) exactly when its projected winding is clockwise on the screen (y pointing down)
        d1, d2 = tri_uv[:, :, 1] - tri_uv[:, :, 0], tri_uv[:, :, 2] - tri_uv[:, :, 0]
        keep &= d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0] < 0
    lo = torch.ceil(tri_uv.amin(2))
    hi = torch.floor(tri_uv.amax(2))
    keep &= (hi[..., 0] >= 0) & (hi[..., 1] >= 0) & (lo[..., 0] <= width - 1) & (lo[..., 1] <= height - 1)
    keep &= (hi >= lo).all(-1)
    sel = keep.view(-1).nonzero()[:, 0]
    b_idx = torch.div(sel, n_faces, rounding_mode="floor")
    f_idx = sel - b_idx * n_faces
    tuv = tri_uv.view(-1, 3, 2).index_select(0, sel)
    tz = tri_z.view(-1, 3).index_select(0, sel)
    lo = lo.view(-1, 2).index_select(0, sel)
    hi = hi.view(-1, 2).index_select(0, sel)
    planes = _face_planes(tuv, tz)  # [n, 4, 3]: (a, b, c) of lambda_0..2 and 1/z
    good = torch.isfinite(planes).all(-1).all(-1)
    n_pix = batch * height * width
    none = torch.iinfo(torch.int64).max
    key = torch.full((n_pix,), none, dtype=torch.int64, device=dev)
    lo = lo.clamp(min=0).long()
    ext = (hi.long() - lo + 1).clamp(min=1)  # [n, 2] window (w, h) that covers the clipped box
    # window sides 1, 2, 3, 4, 6, 8, 12, 16, 24, ...: at most 1.5 x the box per axis
    sizes = [1, 2, 3]
    while sizes[-1] < max(height, width):
        sizes += [2 * sizes[-2], 2 * sizes[-1]]
    table = torch.tensor(sizes, device=dev)
    cls = torch.searchsorted(table, ext)  # [n, 2] index of the smallest size >= the box side
    code = torch.where(good, cls[:, 0] * len(sizes) + cls[:, 1], -1)
    order = torch.argsort(code, stable=True)
    codes, counts = torch.unique_consecutive(code[order], return_counts=True)
    # sorted copies, so that each group is a contiguous slice
    planes_s, lo_s, b_s = planes[order], lo[order], b_idx[order]
    pos = 0
    for c, n in zip(codes.tolist(), counts.tolist()):
        if c >= 0:
            sl = slice(pos, pos + n)
            _raster_group(order[sl], sizes[c // len(sizes)], sizes[c % len(sizes)], planes_s[sl], lo_s[sl], b_s[sl],
                          height, width, key)
        pos += n
    fg = (key != none).nonzero()[:, 0]
    k = key.index_select(0, fg)
    g = k & 0xFFFFFFFF
    depth = (k >> 32).to(torch.int32).view(torch.float32)
    px = (fg % width).float()
    py = torch.div(fg, width, rounding_mode="floor").remainder(height).float()
    pl = planes.index_select(0, g)[:, :3]  # [m, 3, 3]
    vals = pl[..., 0] * px[:, None] + pl[..., 1] * py[:, None] + pl[..., 2]
    persp = vals * (1.0 / tz.index_select(0, g))  # lambda_k / z_k
    return PixelFragments(fg, f_idx.index_select(0, g), persp / persp.sum(-1, keepdim=True), depth,
                          (batch, height, width))


def _face_planes(tuv: torch.Tensor, tz: torch.Tensor) -> torch.Tensor:
    """[n, 4, 3] coefficients (a, b, c) with value = a x + b y + c of each face's barycentrics
    lambda_0, lambda_1, lambda_2 (screen space) and of 1/z; infinite for degenerate faces."""
    x, y = tuv[..., 0], tuv[..., 1]  # [n, 3]
    x0, x1, x2 = x.unbind(-1)
    y0, y1, y2 = y.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    inv = 1.0 / area
    # lambda_0 is the edge function of (v1, v2), normalised: ((x2 - x1)(y - y1) - (y2 - y1)(x - x1)) / area
    a = torch.stack([-(y2 - y1), -(y0 - y2), -(y1 - y0)], -1) * inv[:, None]
    b = torch.stack([x2 - x1, x0 - x2, x1 - x0], -1) * inv[:, None]
    c = torch.stack([(y2 - y1) * x1 - (x2 - x1) * y1, (y0 - y2) * x2 - (x0 - x2) * y2,
                     (y1 - y0) * x0 - (x1 - x0) * y0], -1) * inv[:, None]
    iz = 1.0 / tz
    lam = torch.stack([a, b, c], -1)  # [n, 3 (lambda_k), 3 (a, b, c)]
    inv_z = (lam * iz[:, :, None]).sum(1, keepdim=True)  # 1/z is sum_k lambda_k / z_k
    return torch.cat([lam, inv_z], 1)


def _raster_group(ids, wx, wy, pl, lo, b, height, width, key) -> None:
    """Rasterises faces (global ids ``ids`` [n], planes ``pl`` [n, 4, 3], window corners ``lo`` [n, 2],
    images ``b`` [n]) on windows of ``wx`` x ``wy`` pixels, reducing their keys into ``key``."""
    dev = pl.device
    # windows are shifted inside the image (the extra pixels fail the inside test), so no bounds test
    x0 = lo[:, 0].clamp(max=max(width - wx, 0))
    y0 = lo[:, 1].clamp(max=max(height - wy, 0))
    x = x0[:, None] + torch.arange(min(wx, width), device=dev)  # [n, wx]
    y = y0[:, None] + torch.arange(min(wy, height), device=dev)  # [n, wy]
    # plane values on the window: [n, 4, wy, wx]
    row = pl[:, :, 0, None] * x.float()[:, None, :] + pl[:, :, 2, None]  # [n, 4, wx]
    col = pl[:, :, 1, None] * y.float()[:, None, :]  # [n, 4, wy]
    vals = row[:, :, None, :] + col[:, :, :, None]
    inside = vals[:, :3].amin(1) >= 0
    zc = 1.0 / vals[:, 3]  # positive inside the triangle (every vertex is in front of the camera)
    k = (zc.view(torch.int32).to(torch.int64) << 32) | ids[:, None, None]
    k = torch.where(inside, k, torch.iinfo(torch.int64).max)
    pix = ((b * height)[:, None] + y)[:, :, None] * width + x[:, None, :]
    key.scatter_reduce_(0, pix.reshape(-1), k.reshape(-1), "amin")


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted outward vertex normals [B, V, 3] of meshes [B, V, 3] sharing ``faces`` [F, 3]."""
    faces = faces.to(vertices.device, torch.long)
    tri = vertices[:, faces]
    fn = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    vn = torch.zeros_like(vertices)
    for k in range(3):
        vn.index_add_(1, faces[:, k], fn)
    return vn / vn.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Per-vertex ``attributes`` [B, V, C] interpolated at every pixel: [B, H, W, C] (0 on background)."""
    batch, height, width = frags.face.shape
    out = attributes.new_zeros(batch * height * width, attributes.shape[-1])
    fg = frags.face.reshape(-1).ge(0).nonzero()[:, 0]
    if len(fg):
        out[fg] = interpolate_at(attributes, faces, frags, fg)
    return out.view(batch, height, width, -1)


def interpolate_at(attributes: torch.Tensor, faces: torch.Tensor, frags: Fragments, pixels: torch.Tensor) -> torch.Tensor:
    """``attributes`` [B, V, C] interpolated at the flat pixel indices ``pixels`` [m] (into B*H*W,
    all covered by a face): [m, C]."""
    batch, height, width = frags.face.shape
    n_vert, channels = attributes.shape[1], attributes.shape[2]
    faces = faces.to(attributes.device, torch.long)
    fid = frags.face.reshape(-1).index_select(0, pixels)
    bidx = torch.div(pixels, height * width, rounding_mode="floor")
    corner = faces.index_select(0, fid) + (bidx * n_vert)[:, None]  # [m, 3] rows of the flat attributes
    values = attributes.reshape(-1, channels).index_select(0, corner.reshape(-1)).view(-1, 3, channels)
    return (values * frags.bary.reshape(-1, 3).index_select(0, pixels)[:, :, None]).sum(1)


def interpolate_pixels(attributes: torch.Tensor, faces: torch.Tensor, frags: PixelFragments) -> torch.Tensor:
    """Per-vertex ``attributes`` [B, V, C] interpolated at the covered pixels of ``frags``: [m, C]."""
    batch, height, width = frags.shape
    n_vert, channels = attributes.shape[1], attributes.shape[2]
    faces = faces.to(attributes.device, torch.long)
    bidx = torch.div(frags.pixels, height * width, rounding_mode="floor")
    corner = faces.index_select(0, frags.face) + (bidx * n_vert)[:, None]
    values = attributes.reshape(-1, channels).index_select(0, corner.reshape(-1)).view(-1, 3, channels)
    return (values * frags.bary[:, :, None]).sum(1)


def shade(normals: torch.Tensor, albedo: torch.Tensor, light_dir: torch.Tensor, ambient: torch.Tensor,
          diffuse: torch.Tensor, specular: torch.Tensor, shininess: float = 24.0, wrap: float = 0.3) -> torch.Tensor:
    """Colours [..., 3] from unnormalised ``normals`` [B, ..., 3] and ``albedo`` [B, ..., 3], with one
    directional light per image: ``light_dir`` [B, 3] (towards the light, camera coordinates),
    ``ambient`` / ``diffuse`` / ``specular`` [B] strengths. Diffuse is wrapped Lambert
    max(0, (n.l + wrap) / (1 + wrap)) (soft, skin-like terminator), specular is Blinn-Phong for a
    viewer looking along +z."""
    batch = normals.shape[0]
    extra = normals.dim() - 2
    view = (batch,) + (1,) * extra
    n = normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    l = light_dir / light_dir.norm(dim=-1, keepdim=True)
    l = l.view(*view, 3)
    ndl = (n * l).sum(-1, keepdim=True)
    lam = ((ndl + wrap) / (1 + wrap)).clamp(min=0)
    half = l + torch.tensor([0.0, 0.0, -1.0], device=n.device)
    half = half / half.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    spec = (n * half).sum(-1, keepdim=True).clamp(min=0) ** shininess
    out = albedo * (ambient.view(*view, 1) + diffuse.view(*view, 1) * lam) + specular.view(*view, 1) * spec
    return out


# --------------------------------------------------------------------------------------------------
# 2-D drawing


def pixel_grid(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (x [1, H, W], y [1, H, W]) in pixels."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device),
                          torch.arange(width, dtype=torch.float32, device=device), indexing="ij")
    return x[None], y[None]


def polygon(kind: str, centre, half, angle: float, jitter=None) -> list[tuple[float, float]]:
    """Corner points [(x, y), ...] in pixels of one shape for ``ImageDraw.polygon``: an "ellipse"
    (24-gon), a "rectangle", a "triangle" (apex at +half[0] along the rotated x axis, base of
    half-width half[1]) or a "blob" (a 9-gon whose radii are scaled by ``1 + jitter[k]``, jitter [9]),
    with half-axes ``half`` = (a, b) rotated by ``angle`` radians about ``centre`` = (x, y)."""
    a, b = float(half[0]), float(half[1])
    if kind == "ellipse":
        t = [2 * math.pi * k / 24 for k in range(24)]
        local = [(a * math.cos(u), b * math.sin(u)) for u in t]
    elif kind == "rectangle":
        local = [(-a, -b), (a, -b), (a, b), (-a, b)]
    elif kind == "triangle":
        local = [(a, 0.0), (-a, b), (-a, -b)]
    elif kind == "blob":
        jitter = [0.0] * 9 if jitter is None else jitter
        local = [(a * (1 + jitter[k]) * math.cos(2 * math.pi * k / 9), b * (1 + jitter[k]) * math.sin(2 * math.pi * k / 9))
                 for k in range(9)]
    else:
        raise ValueError(f"kind must be one of {SHAPES}, got {kind!r}")
    c, s = math.cos(angle), math.sin(angle)
    cx, cy = float(centre[0]), float(centre[1])
    return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in local]


def stripes(grid: tuple[torch.Tensor, torch.Tensor], period: torch.Tensor, angle: torch.Tensor, phase: torch.Tensor,
            checker: torch.Tensor, sharpness: torch.Tensor) -> torch.Tensor:
    """Texture weights [B, H, W] in [0, 1]: sin stripes of ``period`` pixels at ``angle`` (radians),
    times perpendicular stripes where ``checker`` [B] is 1 (a checkerboard), sharpened by
    ``sharpness`` (1 = sinusoidal, large = hard-edged). All parameters [B]."""
    x, y = grid
    view = (-1, 1, 1)
    c, s = torch.cos(angle).view(view), torch.sin(angle).view(view)
    k = (2 * math.pi / period.clamp(min=1.0)).view(view)
    p1 = torch.sin(k * (c * x + s * y) + phase.view(view))
    p2 = torch.sin(k * (-s * x + c * y) + 0.7 * phase.view(view))
    chk = checker.view(view).float()
    p = p1 * (1 - chk) + p1 * p2 * chk
    return 0.5 + 0.5 * (p * sharpness.view(view)).clamp(-1.0, 1.0)


def blur3(image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Separable 3-tap blur of ``image`` [B, H, W, C]: taps (w, 1 - 2w, w) along rows and columns with
    ``weight`` w [B] in [0, 1/3] (0 = identity); borders replicate."""
    w = weight.view(-1, 1, 1, 1)
    pad = torch.cat([image[:, :, :1], image, image[:, :, -1:]], 2)
    image = (1 - 2 * w) * pad[:, :, 1:-1] + w * (pad[:, :, :-2] + pad[:, :, 2:])
    pad = torch.cat([image[:, :1], image, image[:, -1:]], 1)
    return (1 - 2 * w) * pad[:, 1:-1] + w * (pad[:, :-2] + pad[:, 2:])
