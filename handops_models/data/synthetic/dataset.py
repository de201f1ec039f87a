"""The dataset: arguments, the subject splits, the shard cache, access, and the pipeline that generates a
batch (:meth:`SyntheticHands._generate`, a sequence of the stages of the other modules of this package)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from handops_models.data import render
from handops_models.data.synthetic.backgrounds import BACKGROUND_NUMBERS, backgrounds
from handops_models.data.synthetic.camera import place_camera
from handops_models.data.synthetic.finishing import finish_pictures, noise_bank, sample_finish
from handops_models.data.synthetic.hand_model import hand_model, mano_meshes
from handops_models.data.synthetic.occluders import OCCLUDER_NUMBERS, occluder_shapes, sample_occluder_counts
from handops_models.data.synthetic.orientation import sample_global_orient
from handops_models.data.synthetic.poses import POSE_MODES, sample_hand_poses
from handops_models.data.synthetic.shading import render_hands, sample_look
from handops_models.data.synthetic.stream import SPLITS, Cursor, sample_streams
from handops_models.data.synthetic.textures import texture_arrays, texture_bank
from handops_models.data.synthetic.visibility import keypoint_visibility

_ARRAY_KEYS = ("image", "keypoints2d", "visibility", "keypoints3d", "vertices", "pose", "betas", "K", "subject",
               "bbox", "is_left")


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


def source_files() -> list[Path]:
    """Every source file the samples depend on, in a fixed order: each module of this package, the
    rasteriser (``render``) and the hand model (``handops.mano.synthetic``)."""
    import handops.mano.synthetic as model_source

    package = Path(__file__).parent
    return sorted(package.rglob("*.py")) + [Path(render.__file__), Path(model_source.__file__)]


def source_digest(files) -> str:
    """sha256 of the names and contents of ``files`` (paths, in order) and the numpy / torch versions."""
    h = hashlib.sha256()
    for path in files:
        data = Path(path).read_bytes()
        h.update(f"{Path(path).name} {len(data)}\n".encode())
        h.update(data)
    h.update(f"numpy {np.__version__} torch {torch.__version__}".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    return source_digest(source_files())


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


class SyntheticHands(torch.utils.data.Dataset):
    """Rendered synthetic hands (see the package docstring for everything that is drawn).

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
        size_cue: False (default): every hand's box fills a random fraction (``fill``) of the picture whatever
            its size, so no picture shows a hand's absolute size (a hand scaled by s and seen from s times
            the distance projects the same). True: the drawn fill is multiplied by the subject's hand length
            over the mean shape's (at the flat pose), as from a camera at a fixed distance: the picture shows
            the size, through the fill's noise; the fill can then reach ``fill[1]`` times the largest ratio
            (about 1.27 for betas within 2.5 std), so a big hand may overflow the picture a little. The random
            draws are the same either way.
        model_seed: seed of ``handops.mano.synthetic_model``.
        self_occlusion_scale, self_occlusion_tolerance: the visibility margin (see ``visibility``).
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
                 threads: int | None = 1, uniform_view: float = 0.3, size_cue: bool = False):
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
        if not isinstance(size_cue, (bool, np.bool_)):
            raise ValueError(f"size_cue must be True or False, got {size_cue!r}")
        self.size_cue = bool(size_cue)
        if pose_mode not in POSE_MODES:
            raise ValueError(f"pose_mode must be one of {POSE_MODES}, got {pose_mode!r}")
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
        self._radii = {right: hand_model(self.model_seed, right).radii(self.subject_betas) for right in (True, False)}
        self._size_ratio = _hand_length_ratio(self.model_seed, self.subject_betas) if self.size_cue else None
        self._noise_bank = noise_bank(self.seed, self.image_size)
        with _torch_threads(self.threads):  # built here, so that DataLoader workers inherit it
            self._textures = texture_bank(self.seed, self.image_size)
        self._texture_arrays = texture_arrays(self.seed, self.image_size)

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
            "split_fractions": list(self.split_fractions), **({"size_cue": True} if self.size_cue else {}),
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

    def generate(self, indices) -> dict[str, np.ndarray]:
        """The samples ``indices`` as a batch of numpy arrays: image uint8 [B, 3, S, S], the other keys
        as in the sample convention (float32 / bool, subject int64)."""
        with _torch_threads(self.threads):
            return self._generate(indices)

    def _generate(self, indices) -> dict[str, np.ndarray]:
        """The pipeline. Every stage draws its numbers from the samples' streams as it runs, so the order of
        the stage calls is part of what a sample is (tests/test_data_synthetic_pinned.py pins it)."""
        idx = [self._check_index(i) for i in indices]
        if not idx:
            raise ValueError("generate needs at least one index")
        S = self.image_size
        U, Z = sample_streams(self.seed, self.split, idx)

        # scene: who and which hand, its pose and orientation, the camera
        subjects, is_left = self._sample_subjects(U)
        betas = self.subject_betas[subjects]
        hand_pose = sample_hand_poses(self.pose_mode, self.model_seed, is_left, U, Z)
        global_orient = sample_global_orient(U, Z, self.uniform_view)
        verts, joints = mano_meshes(self.model_seed, is_left, betas, global_orient, hand_pose)
        view = place_camera(U, verts, joints, S, self.fill, self.truncation,
                            None if self._size_ratio is None else self._size_ratio[subjects])

        # appearance: the shaded hand over a background, occluders, the camera's finish
        look = sample_look(U)
        hands = render_hands(self.model_seed, is_left, view.vertices, view.K, look, S)
        occluder_counts = sample_occluder_counts(U, self.occlusion)
        background_numbers = U.take(BACKGROUND_NUMBERS)
        occluder_numbers = U.take(OCCLUDER_NUMBERS)
        finish = sample_finish(U, len(self._noise_bank))
        canvas = backgrounds(background_numbers, look.skin, S, self._textures, self._texture_arrays)
        canvas.reshape(-1, 3)[hands.pixel] = hands.rgb
        occluders = occluder_shapes(occluder_numbers, view.keypoints2d, view.bbox, S, len(self._textures))
        image, occluder_alpha = finish_pictures(canvas, occluders, occluder_counts, finish, self._noise_bank,
                                                self._texture_arrays)

        visibility = keypoint_visibility(view.keypoints2d, view.keypoints3d, hands, occluder_alpha,
                                         self._visibility_margin(subjects, is_left))
        pose = np.concatenate([global_orient, hand_pose], 1).astype(np.float32)
        return {
            "image": image, "keypoints2d": view.keypoints2d, "visibility": visibility,
            "keypoints3d": view.keypoints3d, "vertices": view.vertices, "pose": pose,
            "betas": betas.astype(np.float32), "K": view.K, "subject": subjects.astype(np.int64),
            "bbox": view.bbox, "is_left": is_left,
        }

    def _sample_subjects(self, U: Cursor) -> tuple[np.ndarray, np.ndarray]:
        """Each sample's subject [B] int (uniform over the split's subjects) and ``is_left`` [B] bool."""
        pick = np.minimum((U.take() * len(self.subjects)).astype(int), len(self.subjects) - 1)
        return np.asarray(self.subjects)[pick], U.take() < self.left_prob

    def _visibility_margin(self, subjects: np.ndarray, is_left: np.ndarray) -> np.ndarray:
        """[B, 21] metres: the self-occlusion margin of each keypoint (its tube radius, scaled, plus the tolerance)."""
        radius = np.where(is_left[:, None], self._radii[False][subjects], self._radii[True][subjects])
        return self.self_occlusion_scale * radius + self.self_occlusion_tolerance


def _hand_length_ratio(model_seed: int, betas: np.ndarray) -> np.ndarray:
    """[N] each shape's hand length (wrist to middle fingertip, flat pose) over the mean shape's (betas 0)."""
    shapes = np.concatenate([np.zeros((1, betas.shape[1])), betas])
    flat = np.zeros((len(shapes), 3))
    _, joints = mano_meshes(model_seed, np.zeros(len(shapes), bool), shapes, flat, np.zeros((len(shapes), 45)))
    length = np.linalg.norm(joints[:, 12] - joints[:, 0], axis=1)  # OpenPose: 0 wrist, 12 middle fingertip
    return length[1:] / length[0]


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
