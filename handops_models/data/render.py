"""A small batched software renderer (torch on the CPU, no OpenGL, no GPU needed).

Two halves:

* **Meshes** — :func:`rasterize` is a z-buffered triangle rasteriser vectorised over all faces of a
  batch of meshes at once: every (front-facing) face enumerates the pixel centres of its own bounding
  box (a small window per face, no fixed tile), tests them with edge functions, interpolates 1/z
  (perspective-correct depth and barycentrics) and the nearest surface per pixel wins through
  ``scatter_reduce(..., "amax")`` on 1/z (ties: the lowest face id); :func:`rasterize_pixels` returns
  the covered pixels only. :func:`vertex_normals`, :func:`interpolate` (:func:`interpolate_pixels`) and
  :func:`shade` turn the fragments into a smooth-shaded picture (wrapped
  Lambert diffuse, ambient, Blinn-Phong specular, one directional light).
* **2-D helpers** — :func:`pixel_grid` and :func:`stripes` (a batch of stripe / checker textures), which
  the synthetic backgrounds' texture bank is built from.

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

from handops.geometry import project

__all__ = [
    "Fragments", "PixelFragments", "rasterize", "rasterize_pixels", "vertex_normals", "interpolate",
    "interpolate_at", "interpolate_pixels", "shade",
    "pixel_grid", "stripes",
]



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
    pixel bounding box (window sides 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, ... pixels) and every face of a
    group evaluates its planes on its own window by broadcasting (arrays [window y, window x, faces], the
    faces the contiguous inner dimension; no per-pixel gathers). A pixel centre is inside when all three
    lambda >= 0 (pixels on a shared edge are claimed by both faces and settled by the depth test). The
    depth test is one ``scatter_reduce(..., "amax")`` over int64 keys ``float32 bits of 1/z << 32 |
    (2^32 - 1 - face)`` (positive floats order like their bit patterns; candidates outside their face
    carry the low word only), so the nearest face wins and ties go to the lowest face index; the winners' perspective-correct barycentrics are evaluated once per
    pixel.
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be [B, V, 3], got {list(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {list(faces.shape)}")
    if K.shape != (vertices.shape[0], 3, 3):
        raise ValueError(f"K must be [B, 3, 3] with B = {vertices.shape[0]}, got {list(K.shape)}")
    height, width = _size(size)
    batch, n_vert, dev = vertices.shape[0], vertices.shape[1], vertices.device
    uv, z = project(vertices.float(), K.float(), return_depth=True)  # z: camera depth (K's last row is 0, 0, 1)
    faces = faces.to(dev, torch.long)
    n_faces = faces.shape[0]
    # corner coordinates as contiguous rows over the batch's faces (b * F + f): rows[c][k], c in (x, y, z)
    pts = torch.cat([uv, z[..., None]], -1).view(-1, 3)  # [B * V, 3]
    corner_idx = faces.t()[:, None, :] + (torch.arange(batch, device=dev) * n_vert)[None, :, None]  # [3, B, F]
    corners = pts.index_select(0, corner_idx.reshape(-1)).view(3, batch * n_faces, 3).permute(2, 0, 1).contiguous()
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = (c.unbind(0) for c in corners.unbind(0))
    keep = (z0 > near) & (z1 > near) & (z2 > near)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    if cull_backfaces:
        # with every vertex in front of the camera, a face is front-facing (outward normal towards the
        # camera) exactly when its projected winding is clockwise on the screen (y pointing down)
        keep &= area < -1e-12
    else:
        keep &= area.abs() > 1e-12  # degenerate faces (no finite planes) cover nothing
    lo_x = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2))
    lo_y = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2))
    hi_x = torch.floor(torch.maximum(torch.maximum(x0, x1), x2))
    hi_y = torch.floor(torch.maximum(torch.maximum(y0, y1), y2))
    keep &= (hi_x >= 0) & (hi_y >= 0) & (lo_x <= width - 1) & (lo_y <= height - 1) & (hi_x >= lo_x) & (hi_y >= lo_y)
    sel = keep.nonzero()[:, 0]
    lo_x, lo_y = lo_x.index_select(0, sel).clamp(min=0), lo_y.index_select(0, sel).clamp(min=0)
    # window (w, h) that covers the box clipped to the image
    ext_x = (hi_x.index_select(0, sel).clamp(max=width - 1) - lo_x + 1).to(torch.int32)
    ext_y = (hi_y.index_select(0, sel).clamp(max=height - 1) - lo_y + 1).to(torch.int32)
    sizes = [1, 2, 3, 4, 6, 8]  # then doubling: at most 1.5 x the box per axis
    while sizes[-1] < max(height, width):
        sizes += [2 * s for s in sizes[-2:]]
    table = torch.tensor(sizes, dtype=torch.int32, device=dev)
    cls_x, cls_y = torch.searchsorted(table, ext_x), torch.searchsorted(table, ext_y)
    order = torch.argsort(cls_x * len(sizes) + cls_y, stable=True)
    counts = torch.bincount(cls_x * len(sizes) + cls_y, minlength=len(sizes) ** 2).tolist()
    # every per-face quantity in group order (contiguous [n] rows; a group is a slice)
    fs = sel.index_select(0, order)  # b * F + f
    lo_x, lo_y = lo_x.index_select(0, order), lo_y.index_select(0, order)
    # windows (at most the image) are shifted inside the image (their extra pixels fail the inside test),
    # so no bounds test
    wx = table.index_select(0, cls_x.index_select(0, order)).clamp(max=width)
    wy = table.index_select(0, cls_y.index_select(0, order)).clamp(max=height)
    x0, x1, x2, y0, y1, y2, z0, z1, z2 = (c.index_select(0, fs) for c in (x0, x1, x2, y0, y1, y2, z0, z1, z2))
    planes = _face_planes(x0, x1, x2, y0, y1, y2, z0, z1, z2)  # [12, n]: (a, b, c) of lambda_0..2 and 1/z
    wx0 = torch.minimum(lo_x, (width - wx).float())
    wy0 = torch.minimum(lo_y, (height - wy).float())
    image = torch.div(fs, n_faces, rounding_mode="floor")
    face = fs - image * n_faces
    base = (image * height + wy0.long()) * width + wx0.long()
    low = 0xFFFFFFFF - face  # the low key word
    # a covered pixel's key is >= 2^32 (positive depth bits); a pixel no face covers keeps a key < 2^32
    key = torch.zeros(batch * height * width, dtype=torch.int64, device=dev)
    arange = torch.arange(max(height, width), device=dev)
    pos = 0
    for c, n in enumerate(counts):
        if n:
            sl = slice(pos, pos + n)
            _raster_group(min(sizes[c // len(sizes)], width), min(sizes[c % len(sizes)], height), planes[:, sl], wx0[sl], wy0[sl], low[sl],
                          base[sl], width, key, arange)
        pos += n
    fg = (key > 0xFFFFFFFF).nonzero()[:, 0]
    k = key.index_select(0, fg)
    win_face = 0xFFFFFFFF - (k & 0xFFFFFFFF)
    depth = 1.0 / (k >> 32).to(torch.int32).view(torch.float32)
    b_idx = torch.div(fg, height * width, rounding_mode="floor")
    row_of = torch.empty(batch * n_faces, dtype=torch.long, device=dev)
    row_of[fs] = torch.arange(len(fs), device=dev)
    row = row_of.index_select(0, b_idx * n_faces + win_face)
    # perspective-correct barycentrics: lambda_k / z_k, normalised (each a plane of the face)
    in_image = fg - b_idx * (height * width)
    py = torch.div(in_image, width, rounding_mode="floor")
    px = (in_image - py * width).float()
    py = py.float()
    persp = []
    for kk, zk in enumerate((z0, z1, z2)):
        iz = 1.0 / zk
        a, b, c = ((planes[3 * kk + j] * iz).index_select(0, row) for j in range(3))
        persp.append(a * px + b * py + c)
    inv_total = 1.0 / (persp[0] + persp[1] + persp[2])
    bary = torch.stack([p * inv_total for p in persp], 1)
    return PixelFragments(fg, win_face, bary, depth, (batch, height, width))


def _face_planes(x0, x1, x2, y0, y1, y2, z0, z1, z2) -> torch.Tensor:
    """[12, n] coefficients (a, b, c) (rows 3 k + 0, 1, 2) with value = a x + b y + c of each face's
    barycentrics lambda_0, lambda_1, lambda_2 (screen space, k = 0, 1, 2) and of 1/z (k = 3), from the
    corners' screen coordinates and depths [n]; infinite for degenerate faces."""
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    inv = 1.0 / area
    # lambda_0 is the edge function of (v1, v2), normalised: ((x2 - x1)(y - y1) - (y2 - y1)(x - x1)) / area
    lam = [[-(y2 - y1) * inv, (x2 - x1) * inv, ((y2 - y1) * x1 - (x2 - x1) * y1) * inv],
           [-(y0 - y2) * inv, (x0 - x2) * inv, ((y0 - y2) * x2 - (x0 - x2) * y2) * inv],
           [-(y1 - y0) * inv, (x1 - x0) * inv, ((y1 - y0) * x0 - (x1 - x0) * y0) * inv]]
    iz = (1.0 / z0, 1.0 / z1, 1.0 / z2)
    inv_z = [lam[0][j] * iz[0] + lam[1][j] * iz[1] + lam[2][j] * iz[2] for j in range(3)]  # 1/z = sum_k lambda_k / z_k
    return torch.stack(lam[0] + lam[1] + lam[2] + inv_z)


def _raster_group(wx, wy, pl, x0, y0, low, base, width, key, arange) -> None:
    """Rasterises n faces on windows of ``wx`` x ``wy`` pixels with top-left pixels (``x0``, ``y0``) [n]
    (float), reducing their keys into ``key`` (amax): plane coefficients ``pl`` [12, n] (row 3 k + (0, 1, 2)
    = (a, b, c) of plane k: lambda_0..2, 1/z), key low words ``low`` [n], flat index of the top-left
    window pixel ``base`` [n]. Arrays are [wy, wx, n]: the faces are the contiguous inner dimension."""
    ar = arange.float()
    x = ar[:wx, None] + x0  # [wx, n]
    y = ar[:wy, None] + y0  # [wy, n]
    # plane k on the window: (a x + c) + b y
    val = [(pl[3 * k] * x + pl[3 * k + 2])[None] + (pl[3 * k + 1] * y)[:, None] for k in range(4)]
    inside = torch.minimum(torch.minimum(val[0], val[1]), val[2]) >= 0
    # 1/z > 0 inside the triangle (every vertex is in front of the camera): its float bits order like
    # the values, and the nearest surface has the largest 1/z. Outside, the key is the low word alone.
    k = torch.add(low, (val[3].view(torch.int32) * inside).to(torch.int64), alpha=1 << 32)
    pix = base + (arange[:wy, None] * width + arange[:wx])[:, :, None]
    key.scatter_reduce_(0, pix.view(-1), k.view(-1), "amax")


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted outward vertex normals [B, V, 3] of meshes [B, V, 3] sharing ``faces`` [F, 3]."""
    faces = faces.to(vertices.device, torch.long)
    batch, n_vert = vertices.shape[0], vertices.shape[1]
    idx = faces.t()[:, None, :] + (torch.arange(batch, device=vertices.device) * n_vert)[None, :, None]  # [3, B, F]
    idx = idx.reshape(3, -1)
    flat = vertices.reshape(-1, 3)
    p0, p1, p2 = (flat.index_select(0, idx[k]) for k in range(3))
    e1, e2 = p1 - p0, p2 - p0
    fn = torch.stack([e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1], e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
                      e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]], 1)  # [B * F, 3] face normals (2 x area)
    vn = torch.zeros_like(flat)
    for k in range(3):
        vn.index_add_(0, idx[k], fn)
    return _normalise(vn.view(batch, n_vert, 3))


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
    first = torch.div(frags.pixels, height * width, rounding_mode="floor") * n_vert  # the image's first vertex row
    corner = faces.index_select(0, frags.face)  # [m, 3]
    flat = attributes.reshape(-1, channels)
    out = flat.index_select(0, corner[:, 0] + first) * frags.bary[:, 0:1]
    for k in (1, 2):
        out += flat.index_select(0, corner[:, k] + first) * frags.bary[:, k:k + 1]
    return out


def shade(normals: torch.Tensor, albedo: torch.Tensor, light_dir: torch.Tensor, ambient: torch.Tensor,
          diffuse: torch.Tensor, specular: torch.Tensor, shininess: float = 24.0, wrap: float = 0.3) -> torch.Tensor:
    """Colours [..., 3] from unnormalised ``normals`` [B, ..., 3] and ``albedo`` [B, ..., 3], with one
    directional light per image: ``light_dir`` [B, 3] (towards the light, camera coordinates),
    ``ambient`` / ``diffuse`` / ``specular`` [B] strengths. Diffuse is wrapped Lambert
    max(0, (n.l + wrap) / (1 + wrap)) (soft, skin-like terminator), specular is Blinn-Phong for a
    viewer looking along +z. Element-wise arithmetic only (no reductions, an integer ``shininess`` by
    repeated squaring), so every value is the same whatever else is in the tensors."""
    batch = normals.shape[0]
    extra = normals.dim() - 2
    view = (batch,) + (1,) * extra
    n = _normalise(normals)
    l = _normalise(light_dir).view(*view, 3)
    ndl = _dot(n, l)
    lam = ((ndl + wrap) / (1 + wrap)).clamp(min=0)
    half = _normalise(l + torch.tensor([0.0, 0.0, -1.0], device=n.device, dtype=l.dtype))
    spec = _power(_dot(n, half).clamp(min=0), shininess)
    out = albedo * (ambient.view(*view, 1) + diffuse.view(*view, 1) * lam) + specular.view(*view, 1) * spec
    return out


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_k a[..., k] b[..., k] over the last axis of size 3, keepdim, in a fixed order."""
    return a[..., 0:1] * b[..., 0:1] + a[..., 1:2] * b[..., 1:2] + a[..., 2:3] * b[..., 2:3]


def _normalise(v: torch.Tensor) -> torch.Tensor:
    """v / |v| along the last axis (size 3), |v| clamped at 1e-12, element-wise."""
    return v / torch.sqrt(_dot(v, v)).clamp(min=1e-12)


def _power(x: torch.Tensor, p: float) -> torch.Tensor:
    """x ** p; an integer p in 1..256 by repeated squaring (exact multiplications, the same in vector
    and scalar loops)."""
    if float(p).is_integer() and 1 <= p <= 256:
        p, out, sq = int(p), None, x
        while p:
            if p & 1:
                out = sq if out is None else out * sq
            p >>= 1
            if p:
                sq = sq * sq
        return out
    return x ** p


# --------------------------------------------------------------------------------------------------
# 2-D drawing


def pixel_grid(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (x [1, H, W], y [1, H, W]) in pixels."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device),
                          torch.arange(width, dtype=torch.float32, device=device), indexing="ij")
    return x[None], y[None]


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
