"""Appearance, first stage: the hand's skin and light, and the rendered hand pixels.

Skin tones from very light to dark (palm side lighter), smooth shading with one directional light
(wrapped Lambert, ambient, a little Blinn-Phong specular, tinted), evaluated at the vertices with smooth
normals and interpolated perspective-correctly over the covered pixels (faces span a few pixels each).
The hands are rasterised by :mod:`handops_models.data.render`, batched per handedness (the mirrored
model has re-wound faces).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from handops_models.data import render
from handops_models.data.synthetic.hand_model import HandModel, hand_model
from handops_models.data.synthetic.stream import Cursor, lerp

# skin tones from very light to dark (sRGB in [0, 1]), interpolated piecewise linearly
_SKIN = np.array([[0.96, 0.80, 0.70], [0.90, 0.70, 0.57], [0.80, 0.58, 0.44], [0.66, 0.46, 0.32],
                  [0.50, 0.33, 0.22], [0.33, 0.21, 0.14]])


@dataclass
class HandLook:
    """Skin and light of B hands (float64): skin, palm_skin [B, 3] sRGB albedo of the back and the palm;
    light [B, 3] the light's direction; ambient, diffuse, specular [B] weights; tint [B, 3] light colour."""

    skin: np.ndarray
    palm_skin: np.ndarray
    light: np.ndarray
    ambient: np.ndarray
    diffuse: np.ndarray
    specular: np.ndarray
    tint: np.ndarray

    def select(self, rows: np.ndarray) -> HandLook:
        """The looks of the samples ``rows`` (an index array)."""
        return HandLook(*(getattr(self, field.name)[rows] for field in fields(self)))


@dataclass
class HandPixels:
    """The covered pixels of a batch of B S x S pictures, ascending: pixel [m] int64 flat index into
    [B, S, S], rgb [m, 3] uint8 colour, depth [m] float32 camera z of the surface seen there."""

    pixel: np.ndarray
    rgb: np.ndarray
    depth: np.ndarray

    def depth_at(self, flat: np.ndarray) -> np.ndarray:
        """The z-buffer at the flat pixels ``flat`` [...] (inf where no hand covers the pixel)."""
        if len(self.pixel) == 0:
            return np.full(flat.shape, np.inf)
        at = np.minimum(np.searchsorted(self.pixel, flat), len(self.pixel) - 1)
        return np.where(self.pixel[at] == flat, self.depth[at], np.inf)


def sample_look(U: Cursor) -> HandLook:
    """Draws a skin tone (with a little per-channel jitter, the palm lighter) and a light for each sample."""
    tone = U.take() * (len(_SKIN) - 1)
    k0 = np.minimum(tone.astype(int), len(_SKIN) - 2)
    skin = _SKIN[k0] + (tone - k0)[:, None] * (_SKIN[k0 + 1] - _SKIN[k0])
    skin = np.clip(skin * (1 + 0.06 * (2 * U.take(3) - 1)), 0, 1)
    palm_skin = np.clip(skin + (1 - skin) * np.array([0.28, 0.22, 0.22]), 0, 1)
    light = np.stack([lerp(U.take(), -1.0, 1.0), lerp(U.take(), -1.0, 1.0), -lerp(U.take(), 0.4, 1.4)], 1)
    ambient = lerp(U.take(), 0.25, 0.5)
    diffuse = lerp(U.take(), 0.55, 0.85)
    specular = lerp(U.take(), 0.0, 0.12)
    tint = 1 + 0.08 * (2 * U.take(3) - 1)
    return HandLook(skin=skin, palm_skin=palm_skin, light=light, ambient=ambient, diffuse=diffuse,
                    specular=specular, tint=tint)


def _shade(hand: HandModel, verts: torch.Tensor, frags, look: HandLook) -> torch.Tensor:
    """Colours [m, 3] of the covered pixels of ``frags`` (PixelFragments) of hands ``verts`` [b, V, 3] of one
    model: every vertex is shaded (smooth vertex normals, palm-side albedo), the colours are interpolated."""
    normals = render.vertex_normals(verts, hand.faces)
    f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    s, p = f(look.skin)[:, None], f(look.palm_skin)[:, None]
    palmar = torch.from_numpy(hand.palmar)[None, :, None]
    albedo = s + palmar * (p - s)  # [b, V, 3]
    rgb = render.shade(normals, albedo, f(look.light), f(look.ambient), f(look.diffuse), f(look.specular))
    rgb = rgb * f(look.tint)[:, None]
    return render.interpolate_pixels(rgb, hand.faces, frags)


def render_hands(model_seed: int, is_left: np.ndarray, verts: np.ndarray, K: np.ndarray, look: HandLook,
                 image_size: int) -> HandPixels:
    """Rasterises and shades B hands (``is_left`` [B] bool, ``verts`` [B, V, 3] float32 camera frame,
    ``K`` [B, 3, 3]) into S x S pictures; returns their covered pixels."""
    S = image_size
    pixel, rgb, depth = [], [], []
    for left in (False, True):
        sel = np.nonzero(is_left == left)[0]
        if len(sel) == 0:
            continue
        hand = hand_model(model_seed, not left)
        vt = torch.from_numpy(verts[sel])
        frags = render.rasterize_pixels(vt, hand.faces, torch.from_numpy(K[sel]), S)
        colours = _shade(hand, vt, frags, look.select(sel))
        fg = frags.pixels.numpy()
        b_local = fg // (S * S)
        pixel.append(sel[b_local] * (S * S) + (fg - b_local * (S * S)))  # flat pixels of the whole batch
        rgb.append((colours.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())
        depth.append(frags.depth.numpy())
    if len(pixel) > 1:  # both sides: merge into ascending pixel order
        pixel, rgb, depth = (np.concatenate(a) for a in (pixel, rgb, depth))
        order = np.argsort(pixel, kind="stable")
        return HandPixels(pixel[order], rgb[order], depth[order])
    return HandPixels(pixel[0], rgb[0], depth[0])
