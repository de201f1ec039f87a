"""``SyntheticHands``: rendered MANO-format hands with exact annotations, generated on the CPU.

Every sample is drawn from its own random stream, seeded by (seed, split, index), so a sample is the
same whatever the access order, the batch it is generated in or the DataLoader worker generating it.
The hand is the project's procedural MANO-format model ``handops.mano.synthetic_model(model_seed)``
evaluated by ``handops.ManoLayer`` (never a downloaded model) and drawn by the software rasteriser of
:mod:`handops_models.data.render`.

What a sample holds (the dictionary of :mod:`handops_models.data.sample`):

* **Subject** — ``num_subjects`` identities, each with its own betas ~ N(0, 1) (clipped to +-2.5) drawn
  from (seed, subject). ``split`` divides the *subjects* (never the samples) by a seeded permutation in
  the proportions ``split_fractions`` (train, val, test); each split has at least one subject, so test
  subjects are never seen in training. A sample picks one of its split's subjects uniformly.
* **Pose** — ``pose_mode="anatomical"`` (default): per long finger a curl level (the hand's overall
  curl, or with probability 0.35 the finger's own: pointing, pinching, counting gestures) mapped to
  flexion angles inside anatomical ranges (MCP -15..90 deg, PIP 0..105, DIP 0..80 and correlated
  with PIP), MCP abduction (spread, less when flexed), a little twist, and a thumb with CMC flexion,
  abduction and opposition and MCP / IP flexion. The flexion axes are the per-joint directions of the
  model's first pose component (``hands_components[0]`` curls every finger, see
  ``handops.mano.synthetic``), abduction axes are ``bone x (little MCP -> index MCP)`` so a positive
  angle moves a finger towards the thumb. ``pose_mode="pca"``: the mean pose plus N(0, 1)
  coefficients on the first eight (designed) pose components. The stored ``pose`` is the flat
  axis-angle (global orientation first), i.e. ``ManoLayer(..., use_pca=False, flat_hand_mean=True)``.
* **Orientation and camera** — with probability ``uniform_view`` (0.3) a uniformly random rotation,
  otherwise the palm or the back of the hand faces the camera, tilted by |N(0, 35 deg)| (at most 80)
  in a random direction; always followed by a uniformly random in-plane rotation. Then a
  pinhole camera with a random field of view (30..60 deg), principal point jittered by up to 2 % of
  the image, and a distance chosen so that the hand's box spans ``fill`` (default 0.45..0.85) of the
  image side (measured orthographically on the mesh; the perspective makes it a little larger), far
  enough that the hand's 3-D size spans at most 1.4 image sides (foreshortened views) and never
  nearer than 12 cm to the closest vertex; the hand centre lands near the image centre, or
  (probability ``truncation``) pushed towards a border so that part of it leaves the image.
* **Appearance** — skin tones from very light to dark (palm side lighter), smooth shading with one
  directional light (wrapped Lambert, ambient, a little Blinn-Phong specular, tinted), then over the
  whole picture a slight 3-tap lens blur, exposure and sensor noise.
* **Background** (Pillow) — a gradient plus low-frequency colour noise, sometimes a global texture,
  and 3..10 random ellipses, rectangles, triangles, blobs and thin bars, plain, translucent or filled
  with crops of a seeded texture bank (stripes, checkers, rings, blotches); some are skin-coloured
  distractors; with probability 0.4 the background is out of focus (Gaussian blur).
* **Occluders** — with probability ``occlusion`` one or (35 %) two objects (ellipse, box, triangle,
  blob or a long bar, plain or textured, shaded by a gradient, anti-aliased) in front of the hand,
  centred near a random keypoint and sized from the keypoint box.
* **Visibility** — a keypoint is visible when its pixel (rounded position) is inside the image, not
  covered by an occluder (coverage > 0.5) and not hidden by the hand itself: keypoint depth <=
  z-buffer depth at that pixel + ``margin``, where ``margin = self_occlusion_scale * r +
  self_occlusion_tolerance`` and ``r`` is the keypoint's local tube radius (the mean distance of its
  joint ring of vertices to the joint, at the subject's shape; for a fingertip, a vertex on the rounded
  cap that a slanted view ray enters a little earlier, half the radius of the distal ring). Joints lie
  inside the fingers, about ``r`` behind the surface seen over them; a finger or palm in front of the
  joint puts the surface much further ahead. Defaults 1.25 and 4 mm. The depth is the z-buffer's at the
  keypoint's pixel centre, so near a silhouette or a depth edge the answer is the one of that pixel.
* **Left hands** — ``left_prob`` (default 0: every sample is a right hand, ``is_left`` False) draws
  the mirrored model (``synthetic_model(model_seed, is_right=False)``) for that share of samples.

Images are quantised to multiples of 1/255 (the cache stores uint8), so a cached sample equals a fresh
one exactly. MANO runs in float64 over a batch and is rounded to float32; rendering uses only the
float32 values, so the per-sample output does not depend on the batch it was generated in (up to a
float64-rounding tie, which in practice never happens).

Speed: generation is batched (``generate`` / ``__getitems__``, which DataLoader uses): one float64 MANO
call, one rasterisation of the whole batch, per-sample Pillow drawing. It runs its small torch ops on
one thread (``threads``); DataLoader workers use the other cores. About 5 ms a sample at 128 x 128 on
one core of this project's machine (``python -m benchmarks.bench_synthetic_data``).

Caching: with ``cache_dir`` the dataset writes its samples once, as shards of ``shard_size`` samples
(one ``.npy`` per array: uint8 images, float32 annotations), into a folder named by a hash of every
generator parameter, the source of the generator (this module, ``render``, ``handops.mano.synthetic``)
and the numpy / torch versions, so a stale cache is never read; shards are written atomically and
read back memory-mapped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

import handops
from handops_models.data import render

__all__ = ["SyntheticHands", "split_subjects", "SPLITS"]

SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_POSE_MODES = ("anatomical", "pca")
_N_UNIFORM, _N_NORMAL = 768, 64
_ARRAY_KEYS = ("image", "keypoints2d", "visibility", "keypoints3d", "vertices", "pose", "betas", "K", "subject",
               "bbox", "is_left")
_DISTAL_OF_TIP = (15, 3, 6, 12, 9)  # MANO distal joint of each fingertip_ids entry (thumb, index, middle, ring, little)
_NOISE_PAD = 32  # the noise bank is this much larger than the image; a sample picks a random window
_BG_SHAPES = 10  # background shape slots
_BG_NUMBERS = 420  # uniforms per sample for the background
_OCC_NUMBERS = 40  # uniforms per occluder slot
_OCCLUDERS = 2  # occluder slots

# skin tones from very light to dark (sRGB in [0, 1]), interpolated piecewise linearly
_SKIN = np.array([[0.96, 0.80, 0.70], [0.90, 0.70, 0.57], [0.80, 0.58, 0.44], [0.66, 0.46, 0.32],
                  [0.50, 0.33, 0.22], [0.33, 0.21, 0.14]])


def split_subjects(num_subjects: int, seed: int = 0, split_fractions=(0.8, 0.1, 0.1)) -> dict[str, tuple[int, ...]]:
    """The subject ids of each split: a seeded permutation cut in the proportions ``split_fractions``
    (train, val, test), every split non-empty. Disjoint, and together all of ``range(num_subjects)``."""
    if not isinstance(num_subjects, int) or isinstance(num_subjects, bool) or num_subjects < 3:
        raise ValueError(f"num_subjects must be an int >= 3 (one subject per split at least), got {num_subjects!r}")
    fr = tuple(float(f) for f in split_fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or sum(fr) <= 0:
        raise ValueError(f"split_fractions must be three non-negative numbers (train, val, test), got {split_fractions!r}")
    total = sum(fr)
    n_val = max(1, int(round(num_subjects * fr[1] / total)))
    n_test = max(1, int(round(num_subjects * fr[2] / total)))
    n_train = num_subjects - n_val - n_test
    if n_train < 1:
        n_train, n_val, n_test = 1, max(1, (num_subjects - 1) // 2), num_subjects - 1 - max(1, (num_subjects - 1) // 2)
    perm = np.random.default_rng([int(seed), 11]).permutation(num_subjects)
    cuts = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
    return {k: tuple(sorted(int(s) for s in v)) for k, v in cuts.items()}


# --------------------------------------------------------------------------------------------------
# the model and what the sampler derives from it (once per process and handedness)


class _Hand:
    """The MANO layer of one handedness and the quantities the sampler needs from the model."""

    def __init__(self, model_seed: int, is_right: bool):
        model = handops.mano.synthetic_model(model_seed, is_right=is_right)
        self.model = model
        self.layer = handops.ManoLayer(model, use_pca=False, flat_hand_mean=True)
        self.faces = model.faces.clone()
        self.comps = model.hands_components.numpy().copy()
        self.mean = model.hands_mean.numpy().copy()
        vt = model.v_template.numpy()
        jr = model.J_regressor.numpy()
        joints = jr @ vt  # rest joints [16, 3]
        tips = model.fingertip_ids.numpy()
        parents = model.parents.numpy()
        # bone direction of each non-root joint: towards its child, or the fingertip for distal joints
        tip_of = {3: tips[1], 6: tips[2], 9: tips[4], 12: tips[3], 15: tips[0]}
        d = np.zeros((15, 3))
        for j in range(1, 16):
            children = [c for c in range(16) if parents[c] == j]
            target = joints[children[0]] if children else vt[tip_of[j]]
            d[j - 1] = _unit(target - joints[j])
        self.bone = d
        self.flex = _unit(self.comps[0].reshape(15, 3))  # hands_components[0] curls every joint
        toward_thumb = _unit(joints[1] - joints[7])  # little MCP -> index MCP
        self.abd = _unit(np.cross(d, toward_thumb))
        self.thumb_side = _unit(np.cross(d[12], self.flex[12]))
        opp = self.comps[2].reshape(15, 3)[12]
        self.thumb_opp = _unit(opp)
        # ring radius geometry: for the joints' vertex rings, radius(betas) from the shaped template
        self.ring = [np.nonzero(jr[j])[0] for j in range(16)]
        self.shapedirs = model.shapedirs.numpy()
        self.v_template = vt
        self.jr = jr
        # palm-side weight per vertex (palm faces -y in the model frame, for both hands)
        vn = render.vertex_normals(model.v_template[None].float(), model.faces)[0].numpy()
        self.palmar = np.clip(-vn[:, 1] * 1.4, 0.0, 1.0).astype(np.float32)

    def radii(self, betas: np.ndarray) -> np.ndarray:
        """[N, 21] local tube radius per OpenPose keypoint for betas [N, 10]: the mean distance of a
        joint's ring of vertices to the joint; for a fingertip (a vertex on the rounded cap) half the
        radius of its finger's distal ring."""
        from handops._reference.mano import OPENPOSE_FROM_MANO

        v = self.v_template[None] + np.einsum("vcs,ns->nvc", self.shapedirs[:, :, : betas.shape[1]], betas)
        j = np.einsum("jv,nvc->njc", self.jr, v)
        r = np.zeros((len(betas), 21))
        for k in range(16):
            r[:, k] = np.linalg.norm(v[:, self.ring[k]] - j[:, k, None], axis=-1).mean(-1)
        r = np.concatenate([r[:, :16], 0.5 * r[:, list(_DISTAL_OF_TIP)]], 1)
        return r[:, list(OPENPOSE_FROM_MANO)]


@functools.lru_cache(maxsize=8)
def _hand(model_seed: int, is_right: bool) -> _Hand:
    return _Hand(model_seed, is_right)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    import handops.mano.synthetic as model_source

    h = hashlib.sha256()
    for module in (inspect.getmodule(_source_hash), render, model_source):
        h.update(inspect.getsource(module).encode())
    h.update(f"numpy {np.__version__} torch {torch.__version__}".encode())
    return h.hexdigest()


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """torch.set_num_threads(threads) inside the block (None: unchanged), restored afterwards."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@functools.lru_cache(maxsize=4)
def _texture_bank(seed: int, image_size: int) -> tuple:
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
        c0, c1 = _colour(rng.random((1, 3)), rng.random(1))[0], _colour(rng.random((1, 3)), rng.random(1))[0]
        rgb = torch.from_numpy(c0).float() + t[..., None] * torch.from_numpy(c1 - c0).float()
        bank.append(Image.fromarray((rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()))
    return tuple(bank)


class _Cursor:
    """Named consumption of a per-sample random matrix [B, n]: ``take(k)`` returns the next k columns."""

    def __init__(self, values: np.ndarray):
        self.values, self.pos = values, 0

    def take(self, k: int | None = None) -> np.ndarray:
        n = 1 if k is None else k
        if self.pos + n > self.values.shape[1]:
            raise RuntimeError("synthetic sampler ran out of random numbers (raise _N_UNIFORM / _N_NORMAL)")
        out = self.values[:, self.pos:self.pos + n]
        self.pos += n
        return out[:, 0] if k is None else out


def _lerp(u, lo, hi):
    return lo + (hi - lo) * u


# --------------------------------------------------------------------------------------------------
# the dataset


class SyntheticHands(torch.utils.data.Dataset):
    """Rendered synthetic hands (see the module docstring for everything that is drawn).

    Args:
        num_samples: dataset length (samples of this split).
        image_size: square image side S in pixels (>= 16).
        num_subjects: identities over all splits (>= 3); ``split`` takes its share of them.
        seed: the generator seed (subjects, splits, samples).
        split: "train", "val" or "test".
        occlusion: probability in [0, 1] that a sample has occluders in front of the hand.
        cache_dir: a folder for the shard cache (None: generate every sample on access).
        split_fractions: (train, val, test) proportions of the subjects.
        pose_mode: "anatomical" (joint ranges) or "pca" (the model's pose components).
        truncation: probability in [0, 1] that the hand is pushed towards a border, partly outside.
        fill: (lo, hi) range of the hand's (mesh) box side as a fraction of S.
        left_prob: probability in [0, 1] of a left hand (default 0: right hands only).
        uniform_view: probability in [0, 1] of a uniformly random orientation (else a framed view).
        model_seed: seed of ``handops.mano.synthetic_model``.
        self_occlusion_scale, self_occlusion_tolerance: the visibility margin (see module docstring).
        shard_size: samples per cache shard.
        progress: show a tqdm bar while filling the cache.
        threads: torch intra-op threads while generating (None: leave torch's setting). Generation
            runs many small tensor ops, which one thread does best (a second thread mostly waits, and on
            a busy machine badly); use DataLoader workers to generate on several cores.

    ``dataset[i]`` is a sample dict; ``dataset.__getitems__(indices)`` (used by DataLoader) generates
    a whole batch at once; ``dataset.generate(indices)`` returns the batch as numpy arrays.
    """

    def __init__(self, num_samples: int, image_size: int = 128, num_subjects: int = 50, seed: int = 0,
                 split: str = "train", occlusion: float = 0.3, cache_dir: str | os.PathLike | None = None,
                 split_fractions=(0.8, 0.1, 0.1), pose_mode: str = "anatomical", truncation: float = 0.1,
                 fill=(0.45, 0.85), left_prob: float = 0.0, model_seed: int = 0, self_occlusion_scale: float = 1.25,
                 self_occlusion_tolerance: float = 0.004, shard_size: int = 1000, progress: bool = True,
                 threads: int | None = 1, uniform_view: float = 0.3):
        def check_int(name, value, low):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
            return int(value)

        def check_prob(name, value):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
            return float(value)

        self.num_samples = check_int("num_samples", num_samples, 0)
        self.image_size = check_int("image_size", image_size, 16)
        self.num_subjects = check_int("num_subjects", num_subjects, 3)
        self.seed = check_int("seed", seed, 0)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.occlusion = check_prob("occlusion", occlusion)
        self.truncation = check_prob("truncation", truncation)
        self.left_prob = check_prob("left_prob", left_prob)
        self.uniform_view = check_prob("uniform_view", uniform_view)
        if pose_mode not in _POSE_MODES:
            raise ValueError(f"pose_mode must be one of {_POSE_MODES}, got {pose_mode!r}")
        self.pose_mode = pose_mode
        try:
            lo, hi = (float(f) for f in fill)
        except (TypeError, ValueError):
            raise ValueError(f"fill must be a (lo, hi) pair of fractions, got {fill!r}") from None
        if not 0.05 <= lo <= hi <= 1.5:
            raise ValueError(f"fill must satisfy 0.05 <= lo <= hi <= 1.5, got {fill!r}")
        self.fill = (lo, hi)
        self.model_seed = check_int("model_seed", model_seed, 0)
        if not isinstance(self_occlusion_scale, (int, float)) or self_occlusion_scale < 0:
            raise ValueError(f"self_occlusion_scale must be a number >= 0, got {self_occlusion_scale!r}")
        if not isinstance(self_occlusion_tolerance, (int, float)) or self_occlusion_tolerance < 0:
            raise ValueError(f"self_occlusion_tolerance must be a number >= 0 (metres), got {self_occlusion_tolerance!r}")
        self.self_occlusion_scale = float(self_occlusion_scale)
        self.self_occlusion_tolerance = float(self_occlusion_tolerance)
        self.shard_size = check_int("shard_size", shard_size, 1)
        self.split_fractions = tuple(float(f) for f in split_fractions)
        self.subjects = split_subjects(self.num_subjects, self.seed, self.split_fractions)[split]
        self.progress = bool(progress)
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ValueError(f"threads must be None or an int >= 1, got {threads!r}")
        self.threads = threads

        # per-subject betas (a function of (seed, subject) only) and keypoint radii
        self.subject_betas = np.stack([
            np.clip(np.random.default_rng([self.seed, 7, s]).standard_normal(10), -2.5, 2.5)
            for s in range(self.num_subjects)])
        self._radii = {right: _hand(self.model_seed, right).radii(self.subject_betas) for right in (True, False)}
        gen = torch.Generator().manual_seed(self.seed * 7919 + 17)
        pad = self.image_size + _NOISE_PAD
        self._noise_bank = torch.randn(4, pad, pad, 3, generator=gen)
        with _torch_threads(self.threads):  # built here, so that DataLoader workers inherit it
            self._textures = _texture_bank(self.seed, self.image_size)

        self.cache_dir = None
        self._shards: dict[int, dict[str, np.ndarray]] = {}
        if cache_dir is not None:
            self.cache_dir = Path(cache_dir) / f"synthetic_{self.cache_key()[:20]}"
            self.prepare()

    # ---------------------------------------------------------------------------------------------
    # parameters, cache

    def config(self) -> dict:
        """Every parameter that determines the samples (and the cache layout)."""
        return {
            "num_samples": self.num_samples, "image_size": self.image_size, "num_subjects": self.num_subjects,
            "seed": self.seed, "split": self.split, "occlusion": self.occlusion, "truncation": self.truncation,
            "left_prob": self.left_prob, "uniform_view": self.uniform_view, "pose_mode": self.pose_mode, "fill": list(self.fill),
            "model_seed": self.model_seed, "self_occlusion_scale": self.self_occlusion_scale,
            "self_occlusion_tolerance": self.self_occlusion_tolerance, "shard_size": self.shard_size,
            "split_fractions": list(self.split_fractions),
        }

    def cache_key(self) -> str:
        """sha256 of the configuration and of the generator's source (and numpy / torch versions)."""
        text = json.dumps(self.config(), sort_keys=True) + _source_hash()
        return hashlib.sha256(text.encode()).hexdigest()

    def _shard_path(self, shard: int, key: str) -> Path:
        return self.cache_dir / f"shard_{shard:05d}_{key}.npy"

    def _shard_complete(self, shard: int) -> bool:
        return all(self._shard_path(shard, k).exists() for k in _ARRAY_KEYS)

    def prepare(self) -> None:
        """Write every missing cache shard (no-op without ``cache_dir``)."""
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        meta = self.cache_dir / "config.json"
        if not meta.exists():
            tmp = meta.with_name(f"config.json.tmp{os.getpid()}")
            tmp.write_text(json.dumps({**self.config(), "source": _source_hash()}, indent=1, sort_keys=True))
            os.replace(tmp, meta)
        n_shards = math.ceil(self.num_samples / self.shard_size)
        missing = [s for s in range(n_shards) if not self._shard_complete(s)]
        if not missing:
            return
        from tqdm.auto import tqdm

        todo = sum(min(self.shard_size, self.num_samples - s * self.shard_size) for s in missing)
        with tqdm(total=todo, desc="synthetic hands -> cache", unit="sample", disable=not self.progress) as bar:
            for s in missing:
                lo, hi = s * self.shard_size, min(self.num_samples, (s + 1) * self.shard_size)
                parts = []
                for b in range(lo, hi, 128):
                    parts.append(self.generate(range(b, min(hi, b + 128))))
                    bar.update(min(hi, b + 128) - b)
                for k in _ARRAY_KEYS:
                    arr = np.concatenate([p[k] for p in parts])
                    path = self._shard_path(s, k)
                    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npy")
                    np.save(tmp, arr)
                    os.replace(tmp, path)

    def _shard(self, shard: int) -> dict[str, np.ndarray]:
        if shard not in self._shards:
            if not self._shard_complete(shard):
                self.prepare()
            self._shards[shard] = {k: np.load(self._shard_path(shard, k), mmap_mode="r") for k in _ARRAY_KEYS}
        return self._shards[shard]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_shards"] = {}  # memory maps are reopened in each worker
        return state

    # ---------------------------------------------------------------------------------------------
    # access

    def __len__(self) -> int:
        return self.num_samples

    def _check_index(self, index) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        i = int(index)
        if i < 0:
            i += self.num_samples
        if not 0 <= i < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return i

    def __getitem__(self, index) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices) -> list[dict]:
        idx = [self._check_index(i) for i in indices]
        if self.cache_dir is not None:
            out = []
            for i in idx:
                shard = self._shard(i // self.shard_size)
                j = i % self.shard_size
                out.append(_to_sample({k: v[j:j + 1] for k, v in shard.items()}, 0))
            return out
        batch = self.generate(idx)
        return [_to_sample(batch, n) for n in range(len(idx))]

    # ---------------------------------------------------------------------------------------------
    # generation

    def _random(self, indices) -> tuple[_Cursor, _Cursor]:
        code = _SPLIT_CODE[self.split]
        us, zs = [], []
        for i in indices:
            rng = np.random.default_rng([self.seed, code, int(i)])
            us.append(rng.random(_N_UNIFORM))
            zs.append(rng.standard_normal(_N_NORMAL))
        return _Cursor(np.stack(us)), _Cursor(np.stack(zs))

    def generate(self, indices) -> dict[str, np.ndarray]:
        """The samples ``indices`` as a batch of numpy arrays: image uint8 [B, 3, S, S], the other keys
        as in the sample convention (float32 / bool, subject int64)."""
        with _torch_threads(self.threads):
            return self._generate(indices)

    def _generate(self, indices) -> dict[str, np.ndarray]:
        idx = [self._check_index(i) for i in indices]
        batch = len(idx)
        if batch == 0:
            raise ValueError("generate needs at least one index")
        S = self.image_size
        U, Z = self._random(idx)

        # ---- identity and handedness
        subjects = np.asarray(self.subjects)[np.minimum((U.take() * len(self.subjects)).astype(int), len(self.subjects) - 1)]
        is_left = U.take() < self.left_prob
        betas = self.subject_betas[subjects]

        # ---- pose (both samplers consume their numbers always: the stream layout stays fixed)
        hand_pose = np.zeros((batch, 45))
        start = U.pos, Z.pos
        for left in (False, True):  # the same numbers for either hand
            U.pos, Z.pos = start
            sampler = _anatomical_pose if self.pose_mode == "anatomical" else _pca_pose
            hp = sampler(_hand(self.model_seed, not left), U, Z)
            sel = is_left == left
            hand_pose[sel] = hp[sel]
        # orientation: uniform (share uniform_view), else the palm or the back of the hand towards the
        # camera, tilted by |N(0, 35 deg)|; then any in-plane angle
        uniform = Z.take(4)
        uniform = uniform / np.linalg.norm(uniform, axis=1, keepdims=True)
        facing = np.where((U.take() < 0.5)[:, None], _Q_PALM_TO_CAMERA, _Q_BACK_TO_CAMERA)
        tilt_dir = 2 * np.pi * U.take()
        tilt = np.minimum(np.abs(Z.take()) * np.radians(35.0), np.radians(80.0))
        q_tilt = _quat_axis_angle(np.stack([np.cos(tilt_dir), np.sin(tilt_dir), np.zeros(batch)], 1), tilt)
        q_roll = _quat_axis_angle(np.tile([0.0, 0.0, 1.0], (batch, 1)), 2 * np.pi * U.take())
        framed = _quat_mul(q_roll, _quat_mul(q_tilt, facing))
        quat = np.where((U.take() < self.uniform_view)[:, None], uniform, framed)
        quat = quat * np.where(quat[:, :1] < 0, -1.0, 1.0)
        vec = quat[:, 1:]
        sin_half = np.linalg.norm(vec, axis=1, keepdims=True)
        global_orient = 2.0 * np.arctan2(sin_half, quat[:, :1]) * vec / np.maximum(sin_half, 1e-12)

        # ---- MANO (float64, one call per handedness)
        V = _hand(self.model_seed, True).model.num_vertices
        verts = np.zeros((batch, V, 3))
        joints = np.zeros((batch, 21, 3))
        for left in (False, True):
            sel = np.nonzero(is_left == left)[0]
            if len(sel) == 0:
                continue
            layer = _hand(self.model_seed, not left).layer
            t = lambda a: torch.as_tensor(a[sel], dtype=torch.float64)  # noqa: E731
            with torch.no_grad():
                out = layer(t(betas), t(global_orient), t(hand_pose))
            verts[sel] = out.vertices.numpy()
            joints[sel] = out.joints.numpy()

        # ---- camera
        fov = np.radians(_lerp(U.take(), 30.0, 60.0))
        focal = (S / 2.0) / np.tan(fov / 2.0)
        frac = _lerp(U.take(), *self.fill)
        pp = (S - 1) / 2.0 + 0.02 * S * (2 * U.take(2) - 1)
        jitter = 0.08 * S * (2 * U.take(2) - 1)
        trunc = U.take() < self.truncation
        t_dir = 2 * np.pi * U.take()
        t_amount = _lerp(U.take(), 0.3, 0.5) * S
        lo_xy, hi_xy = verts[:, :, :2].min(1), verts[:, :, :2].max(1)
        centre = np.concatenate([(lo_xy + hi_xy) / 2, verts[:, :, 2:].mean(1)], 1)
        extent = (hi_xy - lo_xy).max(1)
        depth = focal * extent / (frac * S)
        # foreshortened views (fingers towards the camera) would bring the camera very close: keep the
        # hand's 3-D size within 1.4 image sides
        size3 = (verts.max(1) - verts.min(1)).max(1)
        depth = np.maximum(depth, focal * size3 / (1.4 * S))
        depth = np.maximum(depth, 0.12 + (centre[:, 2] - verts[:, :, 2].min(1)))
        target = pp + jitter + trunc[:, None] * t_amount[:, None] * np.stack([np.cos(t_dir), np.sin(t_dir)], 1)
        transl = np.concatenate([(target - pp) * depth[:, None] / focal[:, None], depth[:, None]], 1) - centre
        verts32 = (verts + transl[:, None]).astype(np.float32)
        kp3d = (joints + transl[:, None]).astype(np.float32)
        K = np.zeros((batch, 3, 3), dtype=np.float32)
        K[:, 0, 0] = K[:, 1, 1] = focal
        K[:, :2, 2] = pp
        K[:, 2, 2] = 1.0
        kp_h = np.einsum("bij,bkj->bki", K.astype(np.float64), kp3d.astype(np.float64))
        kp2d = (kp_h[..., :2] / kp_h[..., 2:]).astype(np.float32)
        bbox = np.concatenate([kp2d.min(1), kp2d.max(1)], 1).astype(np.float32)

        # ---- appearance parameters
        tone = U.take() * (len(_SKIN) - 1)
        k0 = np.minimum(tone.astype(int), len(_SKIN) - 2)
        skin = _SKIN[k0] + (tone - k0)[:, None] * (_SKIN[k0 + 1] - _SKIN[k0])
        skin = np.clip(skin * (1 + 0.06 * (2 * U.take(3) - 1)), 0, 1)
        palm_skin = np.clip(skin + (1 - skin) * np.array([0.28, 0.22, 0.22]), 0, 1)
        light = np.stack([_lerp(U.take(), -1.0, 1.0), _lerp(U.take(), -1.0, 1.0), -_lerp(U.take(), 0.4, 1.4)], 1)
        ambient = _lerp(U.take(), 0.25, 0.5)
        diffuse = _lerp(U.take(), 0.55, 0.85)
        specular = _lerp(U.take(), 0.0, 0.12)
        tint = 1 + 0.08 * (2 * U.take(3) - 1)

        # ---- render the hands (batched per handedness: the mirrored model has re-wound faces), shade
        # the covered pixels only
        hand_u8 = np.zeros((batch, S, S, 3), dtype=np.uint8)
        depth_buf = np.full((batch, S, S), np.inf, dtype=np.float32)
        for left in (False, True):
            sel = np.nonzero(is_left == left)[0]
            if len(sel) == 0:
                continue
            hand = _hand(self.model_seed, not left)
            vt = torch.from_numpy(verts32[sel])
            frags = render.rasterize_pixels(vt, hand.faces, torch.from_numpy(K[sel]), S)
            rgb = self._shade_hands(hand, vt, frags, *(a[sel] for a in (skin, palm_skin, light, ambient, diffuse,
                                                                          specular, tint)))
            fg = frags.pixels.numpy()
            group = np.zeros((len(sel) * S * S, 3), dtype=np.uint8)
            group[fg] = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
            hand_u8[sel] = group.reshape(len(sel), S, S, 3)
            group_depth = np.full(len(sel) * S * S, np.inf, dtype=np.float32)
            group_depth[fg] = frags.depth.numpy()
            depth_buf[sel] = group_depth.reshape(len(sel), S, S)

        # ---- per sample (Pillow): background, the hand pasted through its mask, occluders, lens blur
        from PIL import Image, ImageFilter

        hand_mask = np.isfinite(depth_buf).astype(np.uint8) * 255
        occluded = U.take() < self.occlusion
        second = U.take() < 0.35
        bg_u = U.take(_BG_NUMBERS)
        occ_u = U.take(_OCC_NUMBERS * _OCCLUDERS)
        blur = _lerp(U.take(), 0.0, 0.22)
        image = np.empty((batch, S, S, 3), dtype=np.uint8)
        occ_alpha = np.zeros((batch, S, S), dtype=np.uint8)
        for n in range(batch):
            canvas = self._background(_Row(bg_u[n]), skin[n])
            canvas.paste(Image.fromarray(hand_u8[n]), (0, 0), Image.fromarray(hand_mask[n]))
            count = int(occluded[n]) * (1 + int(second[n]))
            if count:
                rgb, occ_alpha[n] = self._occluders(_Row(occ_u[n]), count, kp2d[n], bbox[n])
                canvas.paste(Image.fromarray(rgb), (0, 0), Image.fromarray(occ_alpha[n]))
            w = float(blur[n])
            taps = (w, 1 - 2 * w, w)
            canvas = canvas.filter(ImageFilter.Kernel((3, 3), [a * b for a in taps for b in taps], scale=1))
            image[n] = np.asarray(canvas)

        # ---- exposure and sensor noise (batched)
        exposure = torch.from_numpy(_lerp(U.take(), 0.8, 1.15)).float()
        noise_sigma = torch.from_numpy(_lerp(U.take(), 0.0, 0.03) * 255).float()
        bank = np.minimum((U.take() * len(self._noise_bank)).astype(int), len(self._noise_bank) - 1)
        offs = (U.take(2) * (_NOISE_PAD + 1)).astype(int).clip(0, _NOISE_PAD)
        noise = torch.stack([self._noise_bank[bank[n], offs[n, 1]:offs[n, 1] + S, offs[n, 0]:offs[n, 0] + S]
                             for n in range(batch)])
        img = torch.from_numpy(image).float() * exposure.view(-1, 1, 1, 1) + noise_sigma.view(-1, 1, 1, 1) * noise
        image_u8 = (img.clamp_(0, 255) + 0.5).to(torch.uint8).permute(0, 3, 1, 2).contiguous().numpy()

        # ---- visibility
        px = np.floor(kp2d + 0.5).astype(np.int64)
        inside = (px >= 0).all(-1) & (px < S).all(-1) & (kp3d[..., 2] > 0)
        cx, cy = px[..., 0].clip(0, S - 1), px[..., 1].clip(0, S - 1)
        b_ix = np.arange(batch)[:, None]
        zbuf = depth_buf[b_ix, cy, cx]
        radius = np.where(is_left[:, None], self._radii[False][subjects], self._radii[True][subjects])
        margin = self.self_occlusion_scale * radius + self.self_occlusion_tolerance
        not_self = kp3d[..., 2] <= zbuf + margin
        not_occ = occ_alpha[b_ix, cy, cx] <= 127
        visibility = inside & not_self & not_occ

        pose = np.concatenate([global_orient, hand_pose], 1).astype(np.float32)
        return {
            "image": image_u8, "keypoints2d": kp2d, "visibility": visibility, "keypoints3d": kp3d,
            "vertices": verts32, "pose": pose, "betas": betas.astype(np.float32), "K": K,
            "subject": subjects.astype(np.int64), "bbox": bbox, "is_left": is_left,
        }

    def _shade_hands(self, hand: _Hand, verts, frags, skin, palm_skin, light, ambient, diffuse, specular, tint):
        """Colours [m, 3] of the covered pixels of ``frags`` (PixelFragments) of hands of one model."""
        normals = render.vertex_normals(verts, hand.faces)
        palmar = torch.from_numpy(hand.palmar)[None].expand(len(verts), -1)
        values = render.interpolate_pixels(torch.cat([normals, palmar[..., None]], -1), hand.faces, frags)  # [m, 4]
        b = torch.div(frags.pixels, self.image_size ** 2, rounding_mode="floor")
        f = lambda a: torch.from_numpy(np.asarray(a)).float().index_select(0, b)  # noqa: E731
        s, p = f(skin), f(palm_skin)
        albedo = s + values[:, 3:] * (p - s)
        rgb = render.shade(values[:, :3], albedo, f(light), f(ambient), f(diffuse), f(specular))
        return rgb * f(tint)

    def _texture_crop(self, u: np.ndarray):
        """An S x S crop of a bank texture chosen by the three uniforms ``u`` (texture, x, y)."""
        S = self.image_size
        bank = self._textures
        tex = bank[min(int(u[0] * len(bank)), len(bank) - 1)]
        x0, y0 = int(u[1] * S), int(u[2] * S)
        return tex.crop((x0, y0, x0 + S, y0 + S))

    def _shape(self, r: "_Row", centre, scale: float, bar_prob: float):
        """A random polygon (ellipse, rectangle, triangle, blob or a long thin bar) around ``centre``
        with half-axes ~ ``scale`` pixels."""
        kind = render.SHAPES[min(int(r.take() * 4), 3)]
        half = (scale * _lerp(r.take(), 0.4, 1.0), scale * _lerp(r.take(), 0.4, 1.0))
        if r.take() < bar_prob:
            kind, half = "rectangle", (scale * _lerp(r.take(), 1.2, 2.5), scale * _lerp(r.take(), 0.06, 0.2))
        else:
            r.take(2)
        jitter = list(0.35 * (2 * r.take(9) - 1))
        return render.polygon(kind, centre, half, np.pi * r.take(), jitter)

    def _background(self, r: "_Row", skin: np.ndarray):
        """An S x S RGB Pillow image of clutter: gradient, colour noise, sometimes a texture, 3..10 shapes, sometimes
        out of focus."""
        from PIL import Image, ImageDraw, ImageFilter

        S = self.image_size
        # base: a linear gradient plus low-frequency colour noise, on a 5 x 5 grid upsampled bicubically
        c0, c1 = _colour(r.take(3)[None], r.take(1))[0], _colour(r.take(3)[None], r.take(1))[0]
        ang = 2 * np.pi * r.take()
        g = np.linspace(-0.5, 0.5, 5)
        ramp = np.clip(g[None, :] * np.cos(ang) + g[:, None] * np.sin(ang) + 0.5, 0, 1)
        w = _lerp(r.take(), 0.0, 0.6)
        cells = (c0 + ramp[..., None] * (c1 - c0)) * (1 - w) + r.take(75).reshape(5, 5, 3) * w
        canvas = Image.fromarray((cells * 255 + 0.5).astype(np.uint8)).resize((S, S), Image.BICUBIC)
        texture_all = r.take() < 0.3
        crop_u, blend = r.take(3), _lerp(r.take(), 0.3, 0.8)
        if texture_all:
            canvas = Image.blend(canvas, self._texture_crop(crop_u), float(blend))
        draw = ImageDraw.Draw(canvas)
        n_shapes = 3 + int(r.take() * 8)
        for slot in range(_BG_SHAPES):
            centre = r.take(2) * S
            pts = self._shape(r, centre, S * _lerp(r.take(), 0.05, 0.35), bar_prob=0.25)
            colour = _colour(r.take(3)[None], r.take(1))[0]
            if r.take() < 0.12:  # skin-coloured distractor
                colour = np.clip(skin * _lerp(r.take(), 0.75, 1.1), 0, 1)
            else:
                r.take()
            textured, translucent = r.take() < 0.4, r.take() < 0.2
            alpha = _lerp(r.take(), 0.35, 0.8) if translucent else 1.0
            crop_u = r.take(3)
            if slot >= n_shapes:
                continue
            if textured or translucent:
                mask = Image.new("L", (S, S), 0)
                ImageDraw.Draw(mask).polygon(pts, fill=int(255 * alpha))
                if textured:
                    canvas.paste(self._texture_crop(crop_u), (0, 0), mask)
                else:
                    canvas.paste(tuple(int(255 * c) for c in colour), (0, 0, S, S), mask)
            else:
                draw.polygon(pts, fill=tuple(int(255 * c) for c in colour))
        if r.take() < 0.4:
            canvas = canvas.filter(ImageFilter.GaussianBlur(_lerp(r.take(), 0.6, 2.0)))
        else:
            r.take()
        return canvas

    def _occluders(self, r: "_Row", count: int, kp2d: np.ndarray, bbox: np.ndarray):
        """(rgb [S, S, 3] uint8, alpha [S, S] uint8) of ``count`` objects in front of the hand, each
        centred near a random keypoint, anti-aliased (drawn at twice the size), textured and shaded."""
        from PIL import Image, ImageDraw

        S = self.image_size
        size = max(float((bbox[2:] - bbox[:2]).max()), 8.0)
        rgb = np.zeros((S, S, 3), dtype=np.float32)
        alpha = np.zeros((S, S), dtype=np.float32)
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
        for k in range(_OCCLUDERS):
            anchor = kp2d[min(int(r.take() * 21), 20)]
            centre = anchor + 0.12 * size * (2 * r.take(2) - 1)
            pts = self._shape(r, 2 * centre + 0.5, 2 * size * _lerp(r.take(), 0.14, 0.32), bar_prob=0.3)
            textured = r.take() < 0.5
            colour = _colour(r.take(3)[None], r.take(1))[0]
            crop_u = r.take(3)
            shade_dir = 2 * np.pi * r.take()
            if k >= count:
                continue
            mask = Image.new("L", (2 * S, 2 * S), 0)
            ImageDraw.Draw(mask).polygon(pts, fill=255)
            a = np.asarray(mask.reduce(2), dtype=np.float32) / 255.0
            fill = np.asarray(self._texture_crop(crop_u), dtype=np.float32) / 255.0 if textured else colour[None, None].astype(np.float32)
            g = ((xx - centre[0]) * np.cos(shade_dir) + (yy - centre[1]) * np.sin(shade_dir)) / (0.5 * size)
            fill = np.clip(fill * (0.95 + 0.3 * np.clip(g, -1, 1))[..., None], 0, 1)
            rgb = rgb * (1 - a[..., None]) + fill * a[..., None]
            alpha = alpha + a * (1 - alpha)
        # un-premultiply: colour where covered (alpha 0 pixels keep 0)
        return (np.clip(rgb / np.maximum(alpha, 1e-6)[..., None], 0, 1) * 255 + 0.5).astype(np.uint8), \
            (alpha * 255 + 0.5).astype(np.uint8)


class _Row:
    """``_Cursor`` for one sample: consecutive numbers of a 1-D array."""

    def __init__(self, values: np.ndarray):
        self.values, self.pos = values, 0

    def take(self, k: int | None = None):
        n = 1 if k is None else k
        if self.pos + n > len(self.values):
            raise RuntimeError("synthetic sampler ran out of random numbers (raise _BG_NUMBERS / _OCC_NUMBERS)")
        out = self.values[self.pos:self.pos + n]
        self.pos += n
        return float(out[0]) if k is None else out


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products of quaternions (w, x, y, z) [B, 4] (or [4]): the rotation b, then a."""
    a, b = np.broadcast_arrays(np.atleast_2d(a), np.atleast_2d(b))
    aw, ax, ay, az = a.T
    bw, bx, by, bz = b.T
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], 1)


def _quat_axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Quaternions [B, 4] of rotations by ``angle`` [B] about unit ``axis`` [B, 3]."""
    return np.concatenate([np.cos(angle / 2)[:, None], np.sin(angle / 2)[:, None] * axis], 1)


# MANO frame (fingers +x, palm normal -y) to camera frame (x right, y down, z forward) with the fingers
# up in the image (-y) and the palm (normal -z, towards the camera) or the back of the hand facing it.
# Columns R x, R y, R z: palm: (0, -1, 0), (0, 0, 1), (-1, 0, 0); back: (0, -1, 0), (0, 0, -1), (1, 0, 0).
def _quat_from_matrix(m: np.ndarray) -> np.ndarray:
    """The unit quaternion (w >= 0) of a rotation matrix [3, 3] (Shepperd's method)."""
    t = np.trace(m)
    k = int(np.argmax([t, m[0, 0], m[1, 1], m[2, 2]]))
    if k == 0:
        r = np.sqrt(1 + t)
        q = [r / 2, (m[2, 1] - m[1, 2]) / (2 * r), (m[0, 2] - m[2, 0]) / (2 * r), (m[1, 0] - m[0, 1]) / (2 * r)]
    else:
        i, j, l = k - 1, k % 3, (k + 1) % 3
        r = np.sqrt(1 + m[i, i] - m[j, j] - m[l, l])
        q = [0.0] * 4
        q[0] = (m[l, j] - m[j, l]) / (2 * r)
        q[1 + i] = r / 2
        q[1 + j] = (m[j, i] + m[i, j]) / (2 * r)
        q[1 + l] = (m[l, i] + m[i, l]) / (2 * r)
    q = np.array(q)
    return q if q[0] >= 0 else -q


_Q_PALM_TO_CAMERA = _quat_from_matrix(np.array([[0.0, 0, -1], [-1, 0, 0], [0, 1, 0]]))
_Q_BACK_TO_CAMERA = _quat_from_matrix(np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]))


def _colour(u3: np.ndarray, sat: np.ndarray) -> np.ndarray:
    """Random colours [B, 3]: uniform RGB pulled towards its grey by 1 - sat."""
    grey = u3.mean(1, keepdims=True)
    return grey + (u3 - grey) * sat[:, None]


def _anatomical_pose(hand: _Hand, U: _Cursor, Z: _Cursor) -> np.ndarray:
    """[B, 45] axis-angle hand poses inside anatomical joint ranges (see the module docstring)."""
    batch = U.values.shape[0]
    deg = np.pi / 180
    pose = np.zeros((batch, 15, 3))
    overall = U.take() ** 0.8
    own = U.take(4) < 0.35
    own_curl = U.take(4)
    curl = np.clip(np.where(own, own_curl, overall[:, None] + 0.12 * Z.take(4)), 0, 1)
    spread = _lerp(U.take(), -0.2, 1.0)
    # long fingers in MANO joint order: index (1, 2, 3), middle (4, 5, 6), little (7, 8, 9), ring (10, 11, 12)
    abd_pattern = {1: 14.0, 4: 2.0, 7: -22.0, 10: -9.0}
    for f_i, base in enumerate((1, 4, 10, 7)):  # index, middle, ring, little (curl columns)
        c = curl[:, f_i]
        mcp = np.clip(_lerp(c, -10, 85) + 8 * Z.take(), -15, 90)
        pip = np.clip(_lerp(c, 0, 100) + 8 * Z.take(), 0, 105)
        dip = np.clip(0.7 * pip + 6 * Z.take(), 0, 80)
        abd = (abd_pattern[base] * spread + 4 * Z.take()) * (1 - 0.7 * c)
        twist = 4 * Z.take()
        for k, angle in enumerate((mcp, pip, dip)):
            j = base + k
            pose[:, j - 1] = (angle * deg)[:, None] * hand.flex[j - 1]
        pose[:, base - 1] += (abd * deg)[:, None] * hand.abd[base - 1] + (twist * deg)[:, None] * hand.bone[base - 1]
    # thumb (13 CMC, 14 MCP, 15 IP)
    t_curl = np.clip(np.where(U.take() < 0.4, U.take(), overall), 0, 1)
    opp = _lerp(U.take(), 0.0, 1.0)
    cmc_flex = np.clip(_lerp(t_curl, -10, 35) + 6 * Z.take(), -15, 45)
    cmc_side = _lerp(U.take(), -15, 25)
    mcp = np.clip(_lerp(t_curl, 0, 55) + 8 * Z.take(), -5, 60)
    ip = np.clip(_lerp(t_curl, -5, 70) + 8 * Z.take(), -10, 80)
    pose[:, 12] = ((cmc_flex * deg)[:, None] * hand.flex[12] + (cmc_side * deg)[:, None] * hand.thumb_side
                   + (opp * 45 * deg)[:, None] * hand.thumb_opp)
    pose[:, 13] = (mcp * deg)[:, None] * hand.flex[13]
    pose[:, 14] = (ip * deg)[:, None] * hand.flex[14]
    # the PCA sampler's coefficients: drawn in both modes, so that the stream layout is the same
    Z.take(8)
    return pose.reshape(batch, 45)


def _pca_pose(hand: _Hand, U: _Cursor, Z: _Cursor) -> np.ndarray:
    """[B, 45] the mean pose plus N(0, 1) coefficients on the first eight pose components."""
    _anatomical_pose(hand, U, Z)  # consumes the same numbers; its last 8 normals are the coefficients
    coef = Z.values[:, Z.pos - 8:Z.pos]
    return hand.mean[None] + coef @ hand.comps[:8]


def _to_sample(batch: dict[str, np.ndarray], n: int) -> dict:
    """Sample ``n`` of a numpy batch as the sample dict of ``handops_models.data.sample``."""
    t = lambda a: torch.from_numpy(np.array(a[n]))  # noqa: E731
    return {
        # numpy (one thread): a torch op on a [3, S, S] tensor may go parallel, which only costs here
        "image": torch.from_numpy(np.asarray(batch["image"][n], dtype=np.float32) / np.float32(255.0)),
        "keypoints2d": t(batch["keypoints2d"]),
        "visibility": t(batch["visibility"]),
        "keypoints3d": t(batch["keypoints3d"]),
        "vertices": t(batch["vertices"]),
        "pose": t(batch["pose"]),
        "betas": t(batch["betas"]),
        "K": t(batch["K"]),
        "subject": int(batch["subject"][n]),
        "bbox": t(batch["bbox"]),
        "is_left": bool(batch["is_left"][n]),
    }
