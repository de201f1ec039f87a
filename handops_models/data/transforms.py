"""Sample transforms: the thesis' 2.2x square hand crop, resizing and the training augmentations.

Every transform is a callable object ``t(sample, generator=None) -> sample`` on the sample dictionary of
:mod:`handops_models.data.sample` (a new dict is returned, the input is not modified). Only the keys
present are transformed. Random transforms draw from ``generator`` when one is passed, else from their
own ``torch.Generator`` seeded with ``seed`` (a fixed sequence per seed), else from torch's global RNG.
:class:`Compose` hands its generator to each transform in turn.

Geometry. A geometric transform is a 2-D affine map ``A`` (3x3, image pixels in -> out, (0, 0) the centre
of the top-left pixel) and an orthogonal 3-D map ``Q`` of camera coordinates (identity, an in-plane
rotation about the optical axis, or the mirror x -> -x). It updates

    keypoints2d <- A keypoints2d,    keypoints3d, vertices <- Q X,    K <- A K Q^T,

so that ``K' (Q X) = A (K X)``: projection still holds exactly. ``bbox`` becomes the tight box of the new
``keypoints2d`` (of the transformed old box corners when there are no keypoints), ``visibility`` is
and-ed with "inside the new image" ([-0.5, W - 0.5] x [-0.5, H - 0.5]), ``pose`` (MANO axis-angle,
global orientation first) gets ``R_global <- Q R_global`` for a rotation and every joint mirrored,
``(a1, a2, a3) -> (a1, -a2, -a3)``, for the mirror, which also toggles ``is_left``. The image is resampled
bilinearly (``grid_sample``, zeros outside the source), a flip is exact.

* :class:`HandCrop`: thesis Sec. 3.5.1 / 4.5.1 / 5.4, "a square bounding box which is 2.2 times the size
  of the hand": side ``scale * max(w, h)`` of the keypoints' tight box (``bbox`` without keypoints),
  centred on the box, resized to ``output_size``. Output pixel j covers ``[j - 0.5, j + 0.5]``, so
  ``x' = (x - e) / s - 0.5`` with e = centre - side / 2 the crop's left edge and s = side / output_size:
  the principal point shifts by the crop and K's first two rows are scaled by 1 / s (with the half pixel).
* :class:`Resize`: ``x' = (x + 0.5) W' / W - 0.5`` per axis.
* :class:`Rotate` / :class:`RandomRotation`: counter-clockwise on screen by ``angle`` degrees about the image
  centre ((W - 1) / 2, (H - 1) / 2), ``x' = c + R (x - c)``, ``R = [[cos, sin], [-sin, cos]]`` (y down), and
  Q the same rotation of camera (x, y) about the optical axis; K stays upper triangular when fx = fy and
  there is no skew (else K' = A K Q^T is a general, still exact, 3x3 camera). ``Rotate(rotation_target)``
  makes a hand upright (``targets.rotation_target`` is then 0).
* :class:`Scale` / :class:`RandomScale`: zoom by ``factor`` about the image centre, same output size.
* :class:`HorizontalFlip` / :class:`RandomHorizontalFlip`: ``x -> W - 1 - x``, Q = diag(-1, 1, 1), so
  ``K' = K`` with ``c_x -> W - 1 - c_x`` and the skew negated; a right hand becomes a left hand.
* :class:`ColorJitter`: brightness, contrast, saturation and hue, image only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from handops.geometry import axis_angle_to_matrix, matrix_to_axis_angle

__all__ = [
    "Transform", "Compose", "HandCrop", "Resize", "Rotate", "RandomRotation", "Scale", "RandomScale",
    "HorizontalFlip", "RandomHorizontalFlip", "ColorJitter", "apply_affine",
]

_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))


def _image_size(sample: dict, who: str) -> tuple[int, int]:
    if "image" not in sample:
        raise ValueError(f"{who} needs sample['image'] to know the image size")
    image = sample["image"]
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"sample['image'] must be a [3, H, W] tensor, got {getattr(image, 'shape', type(image))}")
    return int(image.shape[1]), int(image.shape[2])


def _warp_image(image: torch.Tensor, a: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling: output pixel p takes the input at A^{-1} p (zeros outside), [3, H', W']."""
    height, width = image.shape[1:]
    out_h, out_w = out_size
    inv = torch.linalg.inv(a)
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64),
                            indexing="ij")
    src = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ inv.T  # [H', W', 3]
    gx = 2 * src[..., 0] / max(width - 1, 1) - 1 if width > 1 else src[..., 0] * 0
    gy = 2 * src[..., 1] / max(height - 1, 1) - 1 if height > 1 else src[..., 1] * 0
    grid = torch.stack([gx, gy], -1)[None]  # float64: sub-1e-6 pixel positions for float32 images
    out = F.grid_sample(image[None].double(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    return out.clamp(0, 1).to(image.dtype)


def _pose(pose: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """MANO axis-angle [48] under the camera map Q (rotation or mirror times rotation), see the docstring."""
    aa = pose.double().view(16, 3).clone()
    if float(torch.linalg.det(q)) < 0:
        aa = aa * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
        q = q @ _MIRROR  # the rotation left after the mirror: Q = (Q M) M
    aa[0] = matrix_to_axis_angle(q @ axis_angle_to_matrix(aa[:1])[0])
    return aa.reshape(48).to(pose.dtype)


def _box(points: torch.Tensor) -> torch.Tensor:
    return torch.cat([points.min(0).values, points.max(0).values])


def apply_affine(sample: dict, a: torch.Tensor, out_size: tuple[int, int], q: torch.Tensor | None = None,
                 image: torch.Tensor | None = None) -> dict:
    """The geometric update of the module docstring for a 3x3 affine ``a`` (input pixels -> output pixels),
    an orthogonal ``q`` (default identity) and the output size (H', W'); ``image`` replaces the resampling
    (an exact flip, say). Returns a new dict."""
    a = torch.as_tensor(a, dtype=torch.float64)
    q = torch.eye(3, dtype=torch.float64) if q is None else torch.as_tensor(q, dtype=torch.float64)
    if a.shape != (3, 3) or q.shape != (3, 3):
        raise ValueError(f"a and q must be 3x3, got {list(a.shape)} and {list(q.shape)}")
    out = dict(sample)
    out_h, out_w = out_size
    if "image" in sample:
        out["image"] = image if image is not None else _warp_image(sample["image"], a, out_size)
    if "keypoints2d" in sample:
        kp = sample["keypoints2d"]
        new = (kp.double() @ a[:2, :2].T + a[:2, 2]).to(kp.dtype)
        out["keypoints2d"] = new
        if "visibility" in sample:
            inside = (new[:, 0] >= -0.5) & (new[:, 0] <= out_w - 0.5) & (new[:, 1] >= -0.5) & (new[:, 1] <= out_h - 0.5)
            out["visibility"] = sample["visibility"] & inside
        if "bbox" in sample:
            out["bbox"] = _box(new).to(sample["bbox"].dtype)
    elif "bbox" in sample:
        x0, y0, x1, y1 = sample["bbox"].double().tolist()
        corners = torch.tensor([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=torch.float64)
        out["bbox"] = _box(corners @ a[:2, :2].T + a[:2, 2]).to(sample["bbox"].dtype)
    if "K" in sample:
        out["K"] = (a @ sample["K"].double() @ q.T).to(sample["K"].dtype)
    for key in ("keypoints3d", "vertices"):
        if key in sample:
            out[key] = (sample[key].double() @ q.T).to(sample[key].dtype)
    if "pose" in sample:
        out["pose"] = _pose(sample["pose"], q)
    if "is_left" in sample and float(torch.linalg.det(q)) < 0:
        out["is_left"] = not sample["is_left"]
    return out


def _generator(seed) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


class Transform:
    """Base class: ``__call__(sample, generator=None)`` checks the sample is a dict and calls ``apply`` on a
    shallow copy with ``generator`` or the transform's own one (``seed``: int or torch.Generator)."""

    def __init__(self, seed=None):
        self.generator = _generator(seed)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        if not isinstance(sample, dict):
            raise TypeError(f"a transform takes a sample dict, got {type(sample).__name__}")
        return self.apply(dict(sample), generator if generator is not None else self.generator)

    def apply(self, sample: dict, generator: torch.Generator | None) -> dict:  # pragma: no cover
        raise NotImplementedError

    def _uniform(self, low: float, high: float, generator) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "generator")
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Applies ``transforms`` in order, handing each the same generator (its own ``seed``'s, or the call's)."""

    def __init__(self, transforms, seed=None):
        super().__init__(seed)
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose needs callables, got {type(t).__name__}")

    def apply(self, sample, generator):
        for t in self.transforms:
            sample = t(sample, generator) if isinstance(t, Transform) else t(sample)
        return sample


class HandCrop(Transform):
    """The thesis' square crop of ``scale`` (2.2) times the hand's size, resized to ``output_size`` (368)."""

    def __init__(self, output_size: int = 368, scale: float = 2.2, min_side: float = 1.0):
        super().__init__()
        if not (isinstance(output_size, int) and output_size >= 1):
            raise ValueError(f"output_size must be a positive int, got {output_size!r}")
        if not scale > 0 or not min_side > 0:
            raise ValueError(f"scale and min_side must be positive, got {scale!r}, {min_side!r}")
        self.output_size, self.scale, self.min_side = output_size, float(scale), float(min_side)

    def crop_box(self, sample: dict) -> tuple[float, float, float]:
        """(centre x, centre y, side) of the square crop in input pixels."""
        if "keypoints2d" in sample:
            x0, y0, x1, y1 = _box(sample["keypoints2d"].double()).tolist()
        elif "bbox" in sample:
            x0, y0, x1, y1 = sample["bbox"].double().tolist()
        else:
            raise ValueError("HandCrop needs sample['keypoints2d'] or sample['bbox'] to place the crop")
        side = max(self.scale * max(x1 - x0, y1 - y0), self.min_side)
        return (x0 + x1) / 2, (y0 + y1) / 2, side

    def apply(self, sample, generator):
        cx, cy, side = self.crop_box(sample)
        s = side / self.output_size
        a = torch.tensor([[1 / s, 0, -(cx - side / 2) / s - 0.5], [0, 1 / s, -(cy - side / 2) / s - 0.5], [0, 0, 1]],
                         dtype=torch.float64)
        return apply_affine(sample, a, (self.output_size, self.output_size))


class Resize(Transform):
    """Resize to ``size`` (int: square, or (H, W)): ``x' = (x + 0.5) W' / W - 0.5`` per axis."""

    def __init__(self, size):
        super().__init__()
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be a positive int or (H, W), got {size}")
        self.size = (int(size[0]), int(size[1]))

    def apply(self, sample, generator):
        height, width = _image_size(sample, "Resize")
        sy, sx = self.size[0] / height, self.size[1] / width
        a = torch.tensor([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], dtype=torch.float64)
        return apply_affine(sample, a, self.size)


def _about_centre(m2: torch.Tensor, height: int, width: int) -> torch.Tensor:
    c = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64)
    a = torch.eye(3, dtype=torch.float64)
    a[:2, :2] = m2
    a[:2, 2] = c - m2 @ c
    return a


def _rotate(sample: dict, degrees: float) -> dict:
    height, width = _image_size(sample, "Rotate")
    t = math.radians(degrees)
    r2 = torch.tensor([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]], dtype=torch.float64)
    q = torch.eye(3, dtype=torch.float64)
    q[:2, :2] = r2
    return apply_affine(sample, _about_centre(r2, height, width), (height, width), q)


class Rotate(Transform):
    """Rotate counter-clockwise on screen by ``angle`` degrees about the image centre (module docstring)."""

    def __init__(self, angle: float):
        super().__init__()
        if not math.isfinite(angle):
            raise ValueError(f"angle must be finite, got {angle!r}")
        self.angle = float(angle)

    def apply(self, sample, generator):
        return _rotate(sample, self.angle)


class RandomRotation(Transform):
    """Rotate by an angle uniform in [-max_degrees, max_degrees] with probability ``p``."""

    def __init__(self, max_degrees: float = 180.0, p: float = 1.0, seed=None):
        super().__init__(seed)
        if not (max_degrees >= 0 and 0 <= p <= 1):
            raise ValueError(f"need max_degrees >= 0 and p in [0, 1], got {max_degrees!r}, {p!r}")
        self.max_degrees, self.p = float(max_degrees), float(p)

    def apply(self, sample, generator):
        angle = self._uniform(-self.max_degrees, self.max_degrees, generator)
        if self._uniform(0, 1, generator) >= self.p:
            return sample
        return _rotate(sample, angle)


def _scale(sample: dict, factor: float) -> dict:
    height, width = _image_size(sample, "Scale")
    m2 = torch.eye(2, dtype=torch.float64) * factor
    return apply_affine(sample, _about_centre(m2, height, width), (height, width))


class Scale(Transform):
    """Zoom by ``factor`` (> 1 enlarges) about the image centre, keeping the image size."""

    def __init__(self, factor: float):
        super().__init__()
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"factor must be positive, got {factor!r}")
        self.factor = float(factor)

    def apply(self, sample, generator):
        return _scale(sample, self.factor)


class RandomScale(Transform):
    """Zoom by a factor drawn log-uniformly from [low, high]."""

    def __init__(self, low: float = 0.8, high: float = 1.2, seed=None):
        super().__init__(seed)
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low <= high, got {low!r}, {high!r}")
        self.low, self.high = float(low), float(high)

    def apply(self, sample, generator):
        return _scale(sample, math.exp(self._uniform(math.log(self.low), math.log(self.high), generator)))


def _flip(sample: dict) -> dict:
    height, width = _image_size(sample, "HorizontalFlip")
    a = torch.tensor([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    image = sample["image"].flip(-1)
    return apply_affine(sample, a, (height, width), _MIRROR, image=image)


class HorizontalFlip(Transform):
    """Mirror left-right: ``x -> W - 1 - x``, 3-D x -> -x, ``is_left`` toggled (module docstring)."""

    def apply(self, sample, generator):
        return _flip(sample)


class RandomHorizontalFlip(Transform):
    """:class:`HorizontalFlip` with probability ``p``."""

    def __init__(self, p: float = 0.5, seed=None):
        super().__init__(seed)
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def apply(self, sample, generator):
        return _flip(sample) if self._uniform(0, 1, generator) < self.p else sample


class ColorJitter(Transform):
    """Random colour changes of ``image`` (other keys untouched), in this order, each factor drawn uniformly:

    brightness ``b in [1 - brightness, 1 + brightness]``: ``I <- b I``; contrast ``c``: ``I <- c I + (1 - c) mean(gray)``;
    saturation ``s``: ``I <- s I + (1 - s) gray`` (gray = 0.299 R + 0.587 G + 0.114 B); hue ``h in [-hue, hue]``
    (fraction of a turn): the chroma of YIQ rotated by ``2 pi h``. The result is clamped to [0, 1].
    """

    _YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.05,
                 seed=None):
        super().__init__(seed)
        for name, v, top in (("brightness", brightness, math.inf), ("contrast", contrast, math.inf),
                             ("saturation", saturation, math.inf), ("hue", hue, 0.5)):
            if not 0 <= v <= top:
                raise ValueError(f"{name} must be in [0, {top}], got {v!r}")
        self.brightness, self.contrast, self.saturation, self.hue = map(float, (brightness, contrast, saturation, hue))

    def apply(self, sample, generator):
        b = self._uniform(max(0.0, 1 - self.brightness), 1 + self.brightness, generator)
        c = self._uniform(max(0.0, 1 - self.contrast), 1 + self.contrast, generator)
        s = self._uniform(max(0.0, 1 - self.saturation), 1 + self.saturation, generator)
        h = self._uniform(-self.hue, self.hue, generator)
        if "image" not in sample:
            return sample
        image = sample["image"]
        x = image.double() * b
        gray = (self._YIQ[0][:, None, None] * x).sum(0, keepdim=True)
        x = c * x + (1 - c) * gray.mean()
        gray = (self._YIQ[0][:, None, None] * x).sum(0, keepdim=True)
        x = s * x + (1 - s) * gray
        if h != 0:
            t = 2 * math.pi * h
            rot = torch.tensor([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]],
                               dtype=torch.float64)
            m = torch.linalg.inv(self._YIQ) @ rot @ self._YIQ
            x = torch.einsum("ij,jhw->ihw", m, x)
        sample["image"] = x.clamp(0, 1).to(image.dtype)
        return sample
