"""Appearance, second stage: the cluttered backgrounds (Pillow), one S x S picture per sample.

A gradient plus low-frequency colour noise, sometimes a global texture, and 3..10 random ellipses,
rectangles, triangles, blobs and thin bars, plain, translucent or filled with crops of the texture bank;
some are skin-coloured distractors; with probability 0.4 the background is out of focus (a box blur with
the variance of a Gaussian of sigma 0.6..2 px). Every parameter is derived for the whole batch at once;
Pillow draws the shapes of each sample inside their boxes.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from handops_models.data.synthetic.shapes import pixel_boxes, polygons
from handops_models.data.synthetic.stream import lerp
from handops_models.data.synthetic.textures import crop_corners, random_colour

BACKGROUND_NUMBERS = 420  # uniforms per sample for the background
_SHAPE_SLOTS = 10  # background shapes at most
_SLOT_NUMBERS = 31  # uniforms per shape slot


@functools.lru_cache(maxsize=8)
def _upsampler(size: int) -> np.ndarray:
    """[size, 5] float64 bicubic (align_corners=False) interpolation matrix from 5 samples to ``size``."""
    eye = torch.eye(5, dtype=torch.float64).view(5, 1, 5, 1)
    up = torch.nn.functional.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=False)
    return up[:, 0, :, 0].t().contiguous().numpy()


def backgrounds(u: np.ndarray, skin: np.ndarray, image_size: int, textures: tuple,
                texture_arrays: np.ndarray) -> np.ndarray:
    """[B, S, S, 3] uint8 clutter from the background numbers ``u`` [B, BACKGROUND_NUMBERS] and the hands'
    skin colours ``skin`` [B, 3] (for the skin-coloured distractors). ``textures`` is the texture bank
    (Pillow images, 2S x 2S), ``texture_arrays`` the same as one array [count, 2S, 2S, 3]."""
    from PIL import Image, ImageDraw, ImageFilter

    S, B = image_size, len(u)
    count = len(textures)
    # the base: a gradient between two colours blended with a 5 x 5 grid of random colours, upsampled
    c0, c1 = random_colour(u[:, 0:3], u[:, 3]), random_colour(u[:, 4:7], u[:, 7])
    ang = 2 * np.pi * u[:, 8]
    g = np.linspace(-0.5, 0.5, 5)
    ramp = np.clip(g[None, None, :] * np.cos(ang)[:, None, None] + g[None, :, None] * np.sin(ang)[:, None, None]
                   + 0.5, 0, 1)  # [B, 5 (y), 5 (x)]
    w = lerp(u[:, 9], 0.0, 0.6)[:, None, None, None]
    gradient = c0[:, None, None] + ramp[..., None] * (c1 - c0)[:, None, None]
    cells = gradient * (1 - w) + u[:, 10:85].reshape(B, 5, 5, 3) * w
    texture_all, crop_all, blend = u[:, 85] < 0.3, u[:, 86:89], lerp(u[:, 89], 0.3, 0.8)
    n_shapes = 3 + (u[:, 90] * 8).astype(int)
    blurred, sigma = u[:, 91] < 0.4, lerp(u[:, 92], 0.6, 2.0)
    # shape slots [B, 10, 31]
    sl = u[:, 93:93 + _SHAPE_SLOTS * _SLOT_NUMBERS].reshape(B, _SHAPE_SLOTS, _SLOT_NUMBERS)
    pts = polygons(sl[..., 3:19].reshape(-1, 16), sl[..., 0:2].reshape(-1, 2) * S,
                   S * lerp(sl[..., 2].reshape(-1), 0.05, 0.35), bar_prob=0.25).reshape(B, _SHAPE_SLOTS, -1, 2)
    colour = random_colour(sl[..., 19:22].reshape(-1, 3), sl[..., 22].reshape(-1)).reshape(B, _SHAPE_SLOTS, 3)
    skin_like = sl[..., 23] < 0.12  # skin-coloured distractors
    colour = np.where(skin_like[..., None], np.clip(skin[:, None] * lerp(sl[..., 24], 0.75, 1.1)[..., None], 0, 1),
                      colour)
    textured, translucent = sl[..., 25] < 0.4, sl[..., 26] < 0.2
    alpha = np.where(translucent, lerp(sl[..., 27], 0.35, 0.8), 1.0)
    crop = crop_corners(sl[..., 28:31], count, S)
    fill = [tuple(c) for c in (colour.reshape(-1, 3) * 255).astype(int).tolist()]
    alpha_u8 = (255 * alpha).astype(int).reshape(-1).tolist()
    box = pixel_boxes(pts, S).tolist()  # [B][10][4] x0, y0, x1, y1 clipped to the image
    out = np.empty((B, S, S, 3), dtype=np.uint8)
    A = _upsampler(S)
    A255 = A * 255.0
    cells_x = cells.transpose(0, 2, 1, 3).reshape(B, 5, 15)  # [B, 5 (x), 5 (y) * 3]
    for n in range(B):
        # bicubic upsampling, separable: along x, then along y (float64, one sample at a time)
        along_x = (A @ cells_x[n]).reshape(S, 5, 3).transpose(1, 0, 2).reshape(5, 3 * S)  # [5 (y), S (x) * 3]
        base = (A255 @ along_x).reshape(S, S, 3)  # [y, x, c], 0..255
        if texture_all[n]:
            t, cx, cy = crop_corners(crop_all[n], count, S)
            base *= 1 - blend[n]
            base += texture_arrays[t, cy:cy + S, cx:cx + S] * blend[n]
        np.clip(base, 0, 255, out=base)
        base += 0.5
        img = Image.fromarray(base.astype(np.uint8))
        draw, draw_alpha = ImageDraw.Draw(img), ImageDraw.Draw(img, "RGBA")
        for s in range(n_shapes[n]):
            i = n * _SHAPE_SLOTS + s
            if textured[n, s]:
                x0, y0, x1, y1 = box[n][s]
                if x1 <= x0 or y1 <= y0:
                    continue
                mask = Image.new("L", (x1 - x0, y1 - y0), 0)
                ImageDraw.Draw(mask).polygon((pts[n, s] - (x0, y0)).ravel().tolist(), fill=alpha_u8[i])
                t, cx, cy = int(crop[0][n, s]), int(crop[1][n, s]), int(crop[2][n, s])
                img.paste(textures[t].crop((cx + x0, cy + y0, cx + x1, cy + y1)), (x0, y0), mask)
            elif translucent[n, s]:
                draw_alpha.polygon(pts[n, s].ravel().tolist(), fill=fill[i] + (alpha_u8[i],))
            else:
                draw.polygon(pts[n, s].ravel().tolist(), fill=fill[i])
        if blurred[n]:  # one box blur of the Gaussian's variance: (r^2 + r) / 3 = sigma^2
            img = img.filter(ImageFilter.BoxBlur(float((np.sqrt(1 + 12 * sigma[n] ** 2) - 1) / 2)))
        out[n] = np.asarray(img)
    return out
