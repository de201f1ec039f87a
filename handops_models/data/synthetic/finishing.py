"""Appearance, last stage: the occluders composited over each picture, then the camera's finish over the
whole picture (a slight 3-tap lens blur, exposure, sensor noise), rounded to uint8.

The sensor noise is a random window of a seeded bank of Gaussian noise pictures, slightly larger than the
image, drawn once per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from handops_models.data.synthetic.occluders import OccluderShapes, draw_occluders
from handops_models.data.synthetic.stream import Cursor, lerp

_NOISE_PAD = 32  # the noise bank is this much larger than the image; a sample picks a random window
_NOISE_PICTURES = 4


@dataclass
class Finish:
    """The camera's finish of B pictures: blur [B] lens blur side weight; exposure [B] gain; noise_sigma [B]
    noise standard deviation (0..255 scale); bank [B] int noise picture; offset [B, 2] int (x, y) window corner."""

    blur: np.ndarray
    exposure: np.ndarray
    noise_sigma: np.ndarray
    bank: np.ndarray
    offset: np.ndarray


def noise_bank(seed: int, image_size: int) -> np.ndarray:
    """[4, S + 32, S + 32, 3] float32 standard normal noise pictures, a function of (seed, S)."""
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    pad = image_size + _NOISE_PAD
    return torch.randn(_NOISE_PICTURES, pad, pad, 3, generator=gen).numpy()


def sample_finish(U: Cursor, bank_size: int) -> Finish:
    """Draws each sample's lens blur, exposure, noise level and noise window."""
    blur = lerp(U.take(), 0.0, 0.22)
    exposure = lerp(U.take(), 0.8, 1.15)
    noise_sigma = lerp(U.take(), 0.0, 0.03) * 255
    bank = np.minimum((U.take() * bank_size).astype(int), bank_size - 1)
    offset = (U.take(2) * (_NOISE_PAD + 1)).astype(int).clip(0, _NOISE_PAD)
    return Finish(blur=blur, exposure=exposure, noise_sigma=noise_sigma, bank=bank, offset=offset)


def _finish(x: np.ndarray, w: float, exposure: float, sigma: float, noise: np.ndarray, out: np.ndarray) -> None:
    """The camera on one picture ``x`` [S, S, 3] float32 (0..255, overwritten): a separable 3-tap lens blur
    (w, 1 - 2w, w) (borders replicate), exposure, sensor noise ``sigma * noise``; rounded into ``out``
    [3, S, S] uint8."""
    w, c = np.float32(w), np.float32(1 - 2 * w)
    we, ce = np.float32(w * exposure), np.float32((1 - 2 * w) * exposure)
    side = x * w
    h = x * c
    h[:, 1:] += side[:, :-1]
    h[:, :-1] += side[:, 1:]
    h[:, 0] += side[:, 0]
    h[:, -1] += side[:, -1]
    np.multiply(h, we, out=side)
    np.multiply(h, ce, out=x)
    x[1:] += side[:-1]
    x[:-1] += side[1:]
    x[0] += side[0]
    x[-1] += side[-1]
    np.multiply(noise, np.float32(sigma), out=side)
    x += side
    np.clip(x, 0, 255, out=x)
    x += np.float32(0.5)
    np.copyto(out, x.transpose(2, 0, 1), casting="unsafe")


def finish_pictures(canvas: np.ndarray, occluders: OccluderShapes, occluder_counts: np.ndarray, finish: Finish,
                    noise: np.ndarray, texture_arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The final images [B, 3, S, S] uint8 and the occluders' coverage [B, S, S] uint8 of the pictures
    ``canvas`` [B, S, S, 3] uint8 (background and hand): per sample (float32) its ``occluder_counts`` [B]
    first occluders, then the finish with the ``noise`` bank [count, S + 32, S + 32, 3]."""
    batch, S = len(canvas), canvas.shape[1]
    image_u8 = np.empty((batch, 3, S, S), dtype=np.uint8)
    occluder_alpha = np.zeros((batch, S, S), dtype=np.uint8)
    for n in range(batch):
        x = canvas[n].astype(np.float32)
        if occluder_counts[n]:
            occluder_alpha[n] = draw_occluders(x, occluders, n, int(occluder_counts[n]), texture_arrays)
        x0, y0 = finish.offset[n]
        window = noise[finish.bank[n], y0:y0 + S, x0:x0 + S]
        _finish(x, float(finish.blur[n]), float(finish.exposure[n]), float(finish.noise_sigma[n]), window, image_u8[n])
    return image_u8, occluder_alpha
