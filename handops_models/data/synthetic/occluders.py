"""Appearance, third stage: the occluders in front of the hand.

With probability ``occlusion`` one or (35 %) two objects (ellipse, box, triangle, blob or a long bar, plain
or textured, shaded by a gradient, anti-aliased) in front of the hand, centred near a random keypoint and
sized from the keypoint box. Their coverage also hides the keypoints under them (the visibility stage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handops_models.data.synthetic.shapes import pixel_boxes, polygons
from handops_models.data.synthetic.stream import Cursor, lerp
from handops_models.data.synthetic.textures import crop_corners, random_colour

OCCLUDER_SLOTS = 2  # occluders at most
_SLOT_NUMBERS = 40  # uniforms per occluder slot
OCCLUDER_NUMBERS = OCCLUDER_SLOTS * _SLOT_NUMBERS  # uniforms per sample for the occluders


@dataclass
class OccluderShapes:
    """The occluder slots of B samples (k = OCCLUDER_SLOTS): centre [B, k, 2] pixels; size [B] the keypoint
    box side (pixels, >= 8); polygons2 [B, k, 24, 2] corners in twice the resolution; box [B, k, 4] int
    pixel boxes; textured [B, k] bool; colour [B, k, 3] plain colour in [0, 1]; crop (texture, x0, y0)
    int arrays [B, k] of the texture bank; shade_dir [B, k] the shading gradient's angle."""

    centre: np.ndarray
    size: np.ndarray
    polygons2: np.ndarray
    box: np.ndarray
    textured: np.ndarray
    colour: np.ndarray
    crop: tuple
    shade_dir: np.ndarray


def sample_occluder_counts(U: Cursor, occlusion: float) -> np.ndarray:
    """[B] int: 0 occluders (probability 1 - ``occlusion``), else 1 or (35 %) 2."""
    occluded = U.take() < occlusion
    second = U.take() < 0.35
    return occluded.astype(int) * (1 + second.astype(int))


def occluder_shapes(u: np.ndarray, kp2d: np.ndarray, bbox: np.ndarray, image_size: int,
                    texture_count: int) -> OccluderShapes:
    """The parameters of the occluder slots from their numbers ``u`` [B, OCCLUDER_NUMBERS] (batched): each
    centred near a random keypoint of ``kp2d`` [B, 21, 2], sized from the keypoint box ``bbox`` [B, 4]."""
    B = len(u)
    sl = u.reshape(B, OCCLUDER_SLOTS, _SLOT_NUMBERS)
    size = np.maximum((bbox[:, 2:] - bbox[:, :2]).max(1), 8.0).astype(np.float64)  # [B]
    anchor = kp2d[np.arange(B)[:, None], np.minimum((sl[..., 0] * 21).astype(int), 20)]  # [B, k, 2]
    centre = anchor + 0.12 * size[:, None, None] * (2 * sl[..., 1:3] - 1)
    pts2 = polygons(sl[..., 4:20].reshape(-1, 16), (2 * centre + 0.5).reshape(-1, 2),
                    (2 * size[:, None] * lerp(sl[..., 3], 0.14, 0.32)).reshape(-1), bar_prob=0.3)
    pts2 = pts2.reshape(B, OCCLUDER_SLOTS, -1, 2)
    colour = random_colour(sl[..., 21:24].reshape(-1, 3), sl[..., 24].reshape(-1)).reshape(B, OCCLUDER_SLOTS, 3)
    crop = crop_corners(sl[..., 25:28], texture_count, image_size)
    return OccluderShapes(centre=centre, size=size, polygons2=pts2, box=pixel_boxes(pts2 / 2, image_size),
                          textured=sl[..., 20] < 0.5, colour=colour, crop=crop, shade_dir=2 * np.pi * sl[..., 28])


def draw_occluders(x: np.ndarray, occ: OccluderShapes, n: int, count: int, texture_arrays: np.ndarray) -> np.ndarray:
    """Composites the first ``count`` occluders of sample ``n`` over ``x`` [S, S, 3] (float32, 0..255, in
    place): anti-aliased masks (drawn at twice the size over each shape's box), textured (crops of
    ``texture_arrays`` [count, 2S, 2S, 3]) or plain, shaded by a gradient. Returns their coverage [S, S] uint8."""
    from PIL import Image, ImageDraw

    S = x.shape[0]
    alpha = np.zeros((S, S), dtype=np.float32)
    size = occ.size[n]
    for k in range(count):
        x0, y0, x1, y1 = (int(v) for v in occ.box[n, k])
        if x1 <= x0 or y1 <= y0:
            continue
        mask = Image.new("L", (2 * (x1 - x0), 2 * (y1 - y0)), 0)
        ImageDraw.Draw(mask).polygon((occ.polygons2[n, k] - (2 * x0, 2 * y0)).ravel().tolist(), fill=255)
        a = np.asarray(mask.reduce(2), dtype=np.float32) * np.float32(1 / 255)
        if occ.textured[n, k]:
            t, cx, cy = (c[n, k] for c in occ.crop)
            fill = texture_arrays[t, cy + y0:cy + y1, cx + x0:cx + x1].astype(np.float32)
        else:
            fill = (occ.colour[n, k] * 255).astype(np.float32)[None, None]
        c, s = np.cos(occ.shade_dir[n, k]), np.sin(occ.shade_dir[n, k])
        gx = ((np.arange(x0, x1) - occ.centre[n, k, 0]) * c / (0.5 * size)).astype(np.float32)
        gy = ((np.arange(y0, y1) - occ.centre[n, k, 1]) * s / (0.5 * size)).astype(np.float32)
        shade = 0.95 + 0.3 * np.clip(gy[:, None] + gx[None, :], -1, 1)
        fill = np.minimum(fill * shade[..., None], 255.0)
        region = x[y0:y1, x0:x1]
        region += (fill - region) * a[..., None]
        alpha[y0:y1, x0:x1] += a * (1 - alpha[y0:y1, x0:x1])
    return (alpha * 255 + 0.5).astype(np.uint8)
