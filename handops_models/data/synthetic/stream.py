"""The per-sample random stream: every number a sample uses, drawn from (seed, split, index) alone.

Each sample gets ``UNIFORM_COUNT`` uniforms and ``NORMAL_COUNT`` standard normals from its own numpy
generator; the stages of the pipeline consume them in a fixed order through a :class:`Cursor` each, so
a sample is the same whatever the batch it is generated in. A stage that does not need its numbers
(another pose mode, no occluder) still consumes them: the position of every later number stays fixed.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")
SPLIT_CODE = {"train": 0, "val": 1, "test": 2}  # the split's entry of the generator seed
UNIFORM_COUNT, NORMAL_COUNT = 768, 64  # numbers per sample (spares included)


class Cursor:
    """Named consumption of a per-sample random matrix [B, n]: ``take(k)`` returns the next k columns
    [B, k], ``take()`` the next column [B]. ``pos`` is the index of the next column."""

    def __init__(self, values: np.ndarray):
        self.values, self.pos = values, 0

    def take(self, k: int | None = None) -> np.ndarray:
        n = 1 if k is None else k
        if self.pos + n > self.values.shape[1]:
            raise RuntimeError("synthetic sampler ran out of random numbers (raise UNIFORM_COUNT / NORMAL_COUNT)")
        out = self.values[:, self.pos:self.pos + n]
        self.pos += n
        return out[:, 0] if k is None else out


def sample_streams(seed: int, split: str, indices) -> tuple[Cursor, Cursor]:
    """Cursors over the uniforms [B, UNIFORM_COUNT] and the normals [B, NORMAL_COUNT] of the samples
    ``indices`` (B ints) of ``split``."""
    code = SPLIT_CODE[split]
    uniforms, normals = [], []
    for i in indices:
        rng = np.random.default_rng([seed, code, int(i)])
        uniforms.append(rng.random(UNIFORM_COUNT))
        normals.append(rng.standard_normal(NORMAL_COUNT))
    return Cursor(np.stack(uniforms)), Cursor(np.stack(normals))


def lerp(u, lo, hi):
    """``lo + (hi - lo) * u``: a uniform ``u`` in [0, 1) mapped onto [lo, hi)."""
    return lo + (hi - lo) * u
