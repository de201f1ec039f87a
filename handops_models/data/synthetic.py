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
  directional light (wrapped Lambert, ambient, a little Blinn-Phong specular, tinted; evaluated at the
  vertices with smooth normals and interpolated perspective-correctly over the faces, which span a few
  pixels each), then over the whole picture a slight 3-tap lens blur, exposure and sensor noise.
* **Background** (Pillow) — a gradient plus low-frequency colour noise, sometimes a global texture,
  and 3..10 random ellipses, rectangles, triangles, blobs and thin bars, plain, translucent or filled
  with crops of a seeded texture bank (stripes, checkers, rings, blotches); some are skin-coloured
  distractors; with probability 0.4 the background is out of focus (a box blur with the variance of a
  Gaussian of sigma 0.6..2 px).
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
call, one rasterisation and one per-vertex shading of the whole batch, every background / occluder
parameter derived for the batch at once; what stays per sample is what must not depend on the batch
(Pillow drawing of the shapes inside their boxes, the float32 camera stage in numpy). It runs its small
torch ops on one thread (``threads``); DataLoader workers use the other cores. About 1.6-2 ms a sample
at 128 x 128 on one core of this project's machine (``python -m benchmarks.bench_synthetic_data``).

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


@functools.lru_cache(maxsize=4)
def _texture_arrays(seed: int, image_size: int) -> np.ndarray:
    """The texture bank as one read-only uint8 array [count, 2S, 2S, 3]."""
    bank = np.stack([np.asarray(t) for t in _texture_bank(seed, image_size)])
    bank.setflags(write=False)
    return bank


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

        def check_non_negative(name, value):
            # "not (in range)": NaN compares False with everything, so it fails too (a "< 0" test let it through)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= float(value) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
            return float(value)

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
        self.self_occlusion_scale = check_non_negative("self_occlusion_scale", self_occlusion_scale)
        self.self_occlusion_tolerance = check_non_negative("self_occlusion_tolerance", self_occlusion_tolerance)  # metres
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
        self._noise_bank = torch.randn(4, pad, pad, 3, generator=gen).numpy()
        with _torch_threads(self.threads):  # built here, so that DataLoader workers inherit it
            self._textures = _texture_bank(self.seed, self.image_size)
        self._texture_arrays = _texture_arrays(self.seed, self.image_size)

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
        coords = np.ascontiguousarray(verts.transpose(0, 2, 1))  # [B, 3, V]: fast (exact) reductions
        v_lo, v_hi = coords.min(2), coords.max(2)
        lo_xy, hi_xy = v_lo[:, :2], v_hi[:, :2]
        centre = np.concatenate([(lo_xy + hi_xy) / 2, verts[:, :, 2:].mean(1)], 1)
        extent = (hi_xy - lo_xy).max(1)
        depth = focal * extent / (frac * S)
        # foreshortened views (fingers towards the camera) would bring the camera very close: keep the
        # hand's 3-D size within 1.4 image sides
        size3 = (v_hi - v_lo).max(1)
        depth = np.maximum(depth, focal * size3 / (1.4 * S))
        depth = np.maximum(depth, 0.12 + (centre[:, 2] - v_lo[:, 2]))
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
        # the vertices (Gouraud) and interpolate the colours at the covered pixels only
        hand_pix, hand_rgb, hand_depth = [], [], []
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
            b_local = fg // (S * S)
            hand_pix.append(sel[b_local] * (S * S) + (fg - b_local * (S * S)))  # flat pixels of the whole batch
            hand_rgb.append((rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())
            hand_depth.append(frags.depth.numpy())
        if len(hand_pix) > 1:  # both sides: merge into ascending pixel order
            hand_pix, hand_rgb, hand_depth = (np.concatenate(a) for a in (hand_pix, hand_rgb, hand_depth))
            order = np.argsort(hand_pix, kind="stable")
            hand_pix, hand_rgb, hand_depth = hand_pix[order], hand_rgb[order], hand_depth[order]
        else:
            (hand_pix,), (hand_rgb,), (hand_depth,) = hand_pix, hand_rgb, hand_depth

        # ---- per sample (Pillow): background; then (batched) the hand over it
        occluded = U.take() < self.occlusion
        second = U.take() < 0.35
        bg_u = U.take(_BG_NUMBERS)
        occ_u = U.take(_OCC_NUMBERS * _OCCLUDERS)
        blur = _lerp(U.take(), 0.0, 0.22)
        canvas = self._backgrounds(bg_u, skin)  # [B, S, S, 3] uint8
        canvas.reshape(-1, 3)[hand_pix] = hand_rgb

        # ---- per sample (numpy, float32): occluders, lens blur, exposure and sensor noise
        exposure = _lerp(U.take(), 0.8, 1.15)
        noise_sigma = _lerp(U.take(), 0.0, 0.03) * 255
        bank = np.minimum((U.take() * len(self._noise_bank)).astype(int), len(self._noise_bank) - 1)
        offs = (U.take(2) * (_NOISE_PAD + 1)).astype(int).clip(0, _NOISE_PAD)
        occ = self._occluder_shapes(occ_u, kp2d, bbox)
        image_u8 = np.empty((batch, 3, S, S), dtype=np.uint8)
        occ_alpha = np.zeros((batch, S, S), dtype=np.uint8)
        for n in range(batch):
            x = canvas[n].astype(np.float32)
            count = int(occluded[n]) * (1 + int(second[n]))
            if count:
                occ_alpha[n] = self._draw_occluders(x, occ, n, count)
            noise = self._noise_bank[bank[n], offs[n, 1]:offs[n, 1] + S, offs[n, 0]:offs[n, 0] + S]
            _finish(x, float(blur[n]), float(exposure[n]), float(noise_sigma[n]), noise, image_u8[n])

        # ---- visibility (the z-buffer at the keypoints' pixels: a search in the sorted covered pixels)
        px = np.floor(kp2d + 0.5).astype(np.int64)
        inside = (px >= 0).all(-1) & (px < S).all(-1) & (kp3d[..., 2] > 0)
        cx, cy = px[..., 0].clip(0, S - 1), px[..., 1].clip(0, S - 1)
        b_ix = np.arange(batch)[:, None]
        flat = (b_ix * S + cy) * S + cx
        at = np.minimum(np.searchsorted(hand_pix, flat), max(len(hand_pix) - 1, 0))
        zbuf = np.where(hand_pix[at] == flat, hand_depth[at], np.inf) if len(hand_pix) else np.full(flat.shape, np.inf)
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
        """Colours [m, 3] of the covered pixels of ``frags`` (PixelFragments) of hands of one model: every
        vertex is shaded (smooth vertex normals, palm-side albedo), the colours are interpolated."""
        normals = render.vertex_normals(verts, hand.faces)
        f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
        s, p = f(skin)[:, None], f(palm_skin)[:, None]
        palmar = torch.from_numpy(hand.palmar)[None, :, None]
        albedo = s + palmar * (p - s)  # [b, V, 3]
        rgb = render.shade(normals, albedo, f(light), f(ambient), f(diffuse), f(specular)) * f(tint)[:, None]
        return render.interpolate_pixels(rgb, hand.faces, frags)

    def _backgrounds(self, u: np.ndarray, skin: np.ndarray) -> np.ndarray:
        """[B, S, S, 3] uint8 clutter from the background numbers ``u`` [B, _BG_NUMBERS]: a gradient plus
        low-frequency colour noise (a 5 x 5 grid upsampled bicubically), sometimes blended with a texture;
        3..10 shapes (plain, translucent or textured, some skin-coloured); sometimes out of focus. Every
        parameter is derived for the whole batch at once; Pillow draws the shapes of each sample."""
        from PIL import Image, ImageDraw, ImageFilter

        S, B = self.image_size, len(u)
        c0, c1 = _colour(u[:, 0:3], u[:, 3]), _colour(u[:, 4:7], u[:, 7])
        ang = 2 * np.pi * u[:, 8]
        g = np.linspace(-0.5, 0.5, 5)
        ramp = np.clip(g[None, None, :] * np.cos(ang)[:, None, None] + g[None, :, None] * np.sin(ang)[:, None, None]
                       + 0.5, 0, 1)  # [B, 5 (y), 5 (x)]
        w = _lerp(u[:, 9], 0.0, 0.6)[:, None, None, None]
        cells = (c0[:, None, None] + ramp[..., None] * (c1 - c0)[:, None, None]) * (1 - w) + u[:, 10:85].reshape(B, 5, 5, 3) * w
        texture_all, crop_all, blend = u[:, 85] < 0.3, u[:, 86:89], _lerp(u[:, 89], 0.3, 0.8)
        n_shapes = 3 + (u[:, 90] * 8).astype(int)
        blurred, sigma = u[:, 91] < 0.4, _lerp(u[:, 92], 0.6, 2.0)
        # shape slots [B, 10, 31]
        sl = u[:, 93:93 + _BG_SHAPES * 31].reshape(B, _BG_SHAPES, 31)
        pts = _polygons(sl[..., 3:19].reshape(-1, 16), sl[..., 0:2].reshape(-1, 2) * S,
                        S * _lerp(sl[..., 2].reshape(-1), 0.05, 0.35), bar_prob=0.25).reshape(B, _BG_SHAPES, -1, 2)
        colour = _colour(sl[..., 19:22].reshape(-1, 3), sl[..., 22].reshape(-1)).reshape(B, _BG_SHAPES, 3)
        skin_like = sl[..., 23] < 0.12  # skin-coloured distractors
        colour = np.where(skin_like[..., None], np.clip(skin[:, None] * _lerp(sl[..., 24], 0.75, 1.1)[..., None], 0, 1),
                          colour)
        textured, translucent = sl[..., 25] < 0.4, sl[..., 26] < 0.2
        alpha = np.where(translucent, _lerp(sl[..., 27], 0.35, 0.8), 1.0)
        crop = self._crop_corners(sl[..., 28:31])
        fill = [tuple(c) for c in (colour.reshape(-1, 3) * 255).astype(int).tolist()]
        alpha_u8 = (255 * alpha).astype(int).reshape(-1).tolist()
        box = _boxes(pts, S).tolist()  # [B][10][4] x0, y0, x1, y1 clipped to the image
        bank = self._textures
        out = np.empty((B, S, S, 3), dtype=np.uint8)
        A = _upsampler(S)
        A255 = A * 255.0
        cells_x = cells.transpose(0, 2, 1, 3).reshape(B, 5, 15)  # [B, 5 (x), 5 (y) * 3]
        for n in range(B):
            # bicubic upsampling, separable: along x, then along y (float64, one sample at a time)
            along_x = (A @ cells_x[n]).reshape(S, 5, 3).transpose(1, 0, 2).reshape(5, 3 * S)  # [5 (y), S (x) * 3]
            base = (A255 @ along_x).reshape(S, S, 3)  # [y, x, c], 0..255
            if texture_all[n]:
                t, cx, cy = self._crop_corners(crop_all[n])
                base *= 1 - blend[n]
                base += self._texture_arrays[t, cy:cy + S, cx:cx + S] * blend[n]
            np.clip(base, 0, 255, out=base)
            base += 0.5
            img = Image.fromarray(base.astype(np.uint8))
            draw, draw_alpha = ImageDraw.Draw(img), ImageDraw.Draw(img, "RGBA")
            for s in range(n_shapes[n]):
                i = n * _BG_SHAPES + s
                if textured[n, s]:
                    x0, y0, x1, y1 = box[n][s]
                    if x1 <= x0 or y1 <= y0:
                        continue
                    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
                    ImageDraw.Draw(mask).polygon((pts[n, s] - (x0, y0)).ravel().tolist(), fill=alpha_u8[i])
                    t, cx, cy = int(crop[0][n, s]), int(crop[1][n, s]), int(crop[2][n, s])
                    img.paste(bank[t].crop((cx + x0, cy + y0, cx + x1, cy + y1)), (x0, y0), mask)
                elif translucent[n, s]:
                    draw_alpha.polygon(pts[n, s].ravel().tolist(), fill=fill[i] + (alpha_u8[i],))
                else:
                    draw.polygon(pts[n, s].ravel().tolist(), fill=fill[i])
            if blurred[n]:  # one box blur of the Gaussian's variance: (r^2 + r) / 3 = sigma^2
                img = img.filter(ImageFilter.BoxBlur(float((np.sqrt(1 + 12 * sigma[n] ** 2) - 1) / 2)))
            out[n] = np.asarray(img)
        return out

    def _crop_corners(self, u: np.ndarray):
        """(texture, x0, y0) int arrays of S x S bank crops chosen by the uniforms ``u`` [..., 3]."""
        S, count = self.image_size, len(self._textures)
        return (np.minimum((u[..., 0] * count).astype(int), count - 1), (u[..., 1] * S).astype(int),
                (u[..., 2] * S).astype(int))

    def _occluder_shapes(self, u: np.ndarray, kp2d: np.ndarray, bbox: np.ndarray) -> dict:
        """The parameters of the occluder slots [B, _OCCLUDERS] from their numbers ``u`` (batched): each
        centred near a random keypoint, sized from the keypoint box; polygons in twice the resolution."""
        B = len(u)
        sl = u.reshape(B, _OCCLUDERS, _OCC_NUMBERS)
        size = np.maximum((bbox[:, 2:] - bbox[:, :2]).max(1), 8.0).astype(np.float64)  # [B]
        anchor = kp2d[np.arange(B)[:, None], np.minimum((sl[..., 0] * 21).astype(int), 20)]  # [B, k, 2]
        centre = anchor + 0.12 * size[:, None, None] * (2 * sl[..., 1:3] - 1)
        pts2 = _polygons(sl[..., 4:20].reshape(-1, 16), (2 * centre + 0.5).reshape(-1, 2),
                         (2 * size[:, None] * _lerp(sl[..., 3], 0.14, 0.32)).reshape(-1), bar_prob=0.3)
        pts2 = pts2.reshape(B, _OCCLUDERS, -1, 2)
        return {"centre": centre, "size": size, "pts2": pts2, "box": _boxes(pts2 / 2, self.image_size),
                "textured": sl[..., 20] < 0.5, "colour": _colour(sl[..., 21:24].reshape(-1, 3), sl[..., 24].reshape(-1))
                .reshape(B, _OCCLUDERS, 3), "crop": self._crop_corners(sl[..., 25:28]), "shade_dir": 2 * np.pi * sl[..., 28]}

    def _draw_occluders(self, x: np.ndarray, occ: dict, n: int, count: int) -> np.ndarray:
        """Composites the first ``count`` occluders of sample ``n`` over ``x`` [S, S, 3] (float32, 0..255, in
        place): anti-aliased masks (drawn at twice the size over each shape's box), textured or plain,
        shaded by a gradient. Returns their coverage [S, S] uint8."""
        from PIL import Image, ImageDraw

        S = self.image_size
        alpha = np.zeros((S, S), dtype=np.float32)
        size = occ["size"][n]
        for k in range(count):
            x0, y0, x1, y1 = (int(v) for v in occ["box"][n, k])
            if x1 <= x0 or y1 <= y0:
                continue
            mask = Image.new("L", (2 * (x1 - x0), 2 * (y1 - y0)), 0)
            ImageDraw.Draw(mask).polygon((occ["pts2"][n, k] - (2 * x0, 2 * y0)).ravel().tolist(), fill=255)
            a = np.asarray(mask.reduce(2), dtype=np.float32) * np.float32(1 / 255)
            if occ["textured"][n, k]:
                t, cx, cy = (c[n, k] for c in occ["crop"])
                fill = self._texture_arrays[t, cy + y0:cy + y1, cx + x0:cx + x1].astype(np.float32)
            else:
                fill = (occ["colour"][n, k] * 255).astype(np.float32)[None, None]
            c, s = np.cos(occ["shade_dir"][n, k]), np.sin(occ["shade_dir"][n, k])
            gx = ((np.arange(x0, x1) - occ["centre"][n, k, 0]) * c / (0.5 * size)).astype(np.float32)
            gy = ((np.arange(y0, y1) - occ["centre"][n, k, 1]) * s / (0.5 * size)).astype(np.float32)
            shade = 0.95 + 0.3 * np.clip(gy[:, None] + gx[None, :], -1, 1)
            fill = np.minimum(fill * shade[..., None], 255.0)
            region = x[y0:y1, x0:x1]
            region += (fill - region) * a[..., None]
            alpha[y0:y1, x0:x1] += a * (1 - alpha[y0:y1, x0:x1])
        return (alpha * 255 + 0.5).astype(np.uint8)


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


@functools.lru_cache(maxsize=8)
def _upsampler(size: int) -> np.ndarray:
    """[size, 5] float64 bicubic (align_corners=False) interpolation matrix from 5 samples to ``size``."""
    eye = torch.eye(5, dtype=torch.float64).view(5, 1, 5, 1)
    up = torch.nn.functional.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=False)
    return up[:, 0, :, 0].t().contiguous().numpy()


def _polygons(u: np.ndarray, centre: np.ndarray, scale: np.ndarray, bar_prob: float) -> np.ndarray:
    """Corner points [N, 24, 2] of N random shapes from their numbers ``u`` [N, 16]: an ellipse
    (24-gon), a rectangle, a triangle or a blob (a 9-gon with jittered radii), or with probability
    ``bar_prob`` a long thin bar, with half-axes ~ ``scale`` [N] pixels, rotated, around ``centre`` [N, 2]
    (corners of the polygons with fewer sides are repeated)."""
    kind = np.minimum((u[:, 0] * 4).astype(int), 3)
    a, b = scale * _lerp(u[:, 1], 0.4, 1.0), scale * _lerp(u[:, 2], 0.4, 1.0)
    bar = u[:, 3] < bar_prob
    kind = np.where(bar, 1, kind)
    a = np.where(bar, scale * _lerp(u[:, 4], 1.2, 2.5), a)
    b = np.where(bar, scale * _lerp(u[:, 5], 0.06, 0.2), b)
    templates, blob_idx = _shape_templates()
    local = templates[kind]  # [N, 24, 2]
    radius = np.where((kind == 3)[:, None], 1 + 0.35 * (2 * u[:, 6:15][:, blob_idx] - 1), 1.0)  # [N, 24]
    lx, ly = local[..., 0] * a[:, None] * radius, local[..., 1] * b[:, None] * radius
    angle = np.pi * u[:, 15]
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return np.stack([centre[:, 0:1] + c * lx - s * ly, centre[:, 1:2] + s * lx + c * ly], -1)


@functools.lru_cache(maxsize=1)
def _shape_templates():
    """Unit shapes [4, 24, 2] in render.SHAPES order (ellipse, rectangle, triangle, blob) and the blob
    corner of each of the 24 points."""
    k = np.arange(24)
    t = 2 * np.pi * k / 24
    ellipse = np.stack([np.cos(t), np.sin(t)], -1)
    rect = np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)])[k // 6]
    tri = np.array([(1.0, 0.0), (-1.0, 1.0), (-1.0, -1.0)])[k // 8]
    blob_idx = k * 9 // 24
    blob = np.stack([np.cos(2 * np.pi * blob_idx / 9), np.sin(2 * np.pi * blob_idx / 9)], -1)
    return np.stack([ellipse, rect, tri, blob]), blob_idx


def _boxes(pts: np.ndarray, size: int) -> np.ndarray:
    """Integer pixel boxes [..., 4] (x0, y0, x1, y1), x1 / y1 exclusive, covering polygons ``pts``
    [..., P, 2] (pixel coordinates) with a pixel of margin, clipped to the image."""
    lo = np.floor(pts.min(-2)) - 1
    hi = np.ceil(pts.max(-2)) + 2
    return np.clip(np.concatenate([lo, hi], -1), 0, size).astype(np.int64)


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
