"""Appearance: the seeded texture bank that background shapes and occluders fill themselves with, and
random colours."""

from __future__ import annotations

import functools

import numpy as np
import torch

from handops_models.data import render


def random_colour(u3: np.ndarray, sat: np.ndarray) -> np.ndarray:
    """Random colours [B, 3] from uniforms ``u3`` [B, 3]: uniform RGB pulled towards its grey by 1 - ``sat`` [B]."""
    grey = u3.mean(1, keepdims=True)
    return grey + (u3 - grey) * sat[:, None]


@functools.lru_cache(maxsize=4)
def texture_bank(seed: int, image_size: int) -> tuple:
    """RGB Pillow images of 2S x 2S pixels (48 at S = 128, fewer for large S): stripes, checkers, rings
    and blotches in random colour pairs; background shapes and occluders fill themselves with random
    crops of them. A function of (seed, S) only."""
    from PIL import Image

    S2 = 2 * image_size
    count = int(np.clip(48 * (128 / image_size) ** 2, 8, 48))
    rng = np.random.default_rng([seed, 23])
    grid = render.pixel_grid(S2, S2)
    bank = []
    for k in range(count):
        kind = k % 4
        if kind in (0, 1):  # stripes / checker
            t = render.stripes(grid, torch.tensor([rng.uniform(3, 16)]), torch.tensor([rng.uniform(0, np.pi)]),
                               torch.tensor([rng.uniform(0, 6.3)]), torch.tensor([kind == 1]),
                               torch.tensor([rng.uniform(1, 8)]))[0]
        elif kind == 2:  # rings (wood, targets)
            x, y = grid
            r = torch.sqrt((x[0] - rng.uniform(0, S2)) ** 2 + (y[0] - rng.uniform(0, S2)) ** 2)
            t = 0.5 + 0.5 * torch.sin(r * 2 * np.pi / rng.uniform(4, 14) + torch.sin(x[0] / 9.0))
        else:  # blotches
            cells = torch.from_numpy(rng.random((1, 1, 10, 10))).float()
            t = torch.nn.functional.interpolate(cells, size=(S2, S2), mode="bicubic", align_corners=False)[0, 0]
            t = ((t - 0.5) * rng.uniform(1.5, 4) + 0.5).clamp(0, 1)
        c0 = random_colour(rng.random((1, 3)), rng.random(1))[0]
        c1 = random_colour(rng.random((1, 3)), rng.random(1))[0]
        rgb = torch.from_numpy(c0).float() + t[..., None] * torch.from_numpy(c1 - c0).float()
        bank.append(Image.fromarray((rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()))
    return tuple(bank)


@functools.lru_cache(maxsize=4)
def texture_arrays(seed: int, image_size: int) -> np.ndarray:
    """The texture bank as one read-only uint8 array [count, 2S, 2S, 3]."""
    bank = np.stack([np.asarray(t) for t in texture_bank(seed, image_size)])
    bank.setflags(write=False)
    return bank


def crop_corners(u: np.ndarray, count: int, image_size: int):
    """(texture, x0, y0) int arrays [...] of S x S crops of a bank of ``count`` textures (2S x 2S) chosen
    by the uniforms ``u`` [..., 3]."""
    S = image_size
    return (np.minimum((u[..., 0] * count).astype(int), count - 1), (u[..., 1] * S).astype(int),
            (u[..., 2] * S).astype(int))
