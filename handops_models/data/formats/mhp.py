"""Large-scale Multiview 3D Hand Pose dataset, "MHP" (Gomez-Donoso, Orts-Escolano and Cazorla, Image and Vision
Computing 2019, arXiv:1707.03742, http://www.rovit.ua.es/dataset/mhpdataset/).

Layout read (the download's folders as the authors' ``utils`` script reads them: it globs ``*_webcam_[0-9]*`` in
``annotated_frames/data_<s>``, reads ``<f>_joints.txt`` beside the image, unpickles ``calibrations/data_<s>/
webcam_<v>/rvec.pkl`` and ``tvec.pkl`` and projects with ``cv2.projectPoints(points, rvec, tvec, K, dist)``, writing
``projections_2d/data_<s>/<f>_jointsCam_<v>.txt``; checked against third-party loaders that read the same folders,
e.g. github.com/mikeshihyaolin/dataset_parsing and MHP parsers found by code search)::

    <root>/annotated_frames/data_<s>/<f>_webcam_<v>.jpg      640 x 480 colour images, s = 1..21, v = 1..4
    <root>/annotated_frames/data_<s>/<f>_joints.txt          per frame: lines "<NAME> x y z", the 21 points below
                                                              then a 22nd line, the palm normal (ignored)
    <root>/calibrations/data_<s>/webcam_<v>/rvec.pkl         pickled numpy [3, 1] (or [3]) Rodrigues vector
    <root>/calibrations/data_<s>/webcam_<v>/tvec.pkl         pickled numpy [3, 1] (or [3]) translation

Not read: ``projections_2d/`` (the 2-D keypoints of every view: the projection below, which this loader computes),
``bounding_boxes/`` (``bbox`` is the keypoints' tight box, as in every format here) and ``augmented_samples/``.

Cameras. One intrinsic matrix and one distortion for all views and sequences (the authors' script hard-codes
them): fx = 614.878, fy = 615.479, cx = 313.219, cy = 231.288 and OpenCV's (k1, k2, p1, p2, k3) = (0.092701,
-0.175877, -0.0035687, -0.00302299, 0) (``MHP_K``, ``MHP_DIST_COEFFS``; ``K`` / ``dist_coeffs`` override them).
The 3-D points are in the Leap Motion's frame; ``cv2.projectPoints`` with (rvec, tvec) maps them to the camera as
``X_cam = R(rvec) X + tvec`` (R by Rodrigues' formula), then divides by z, applies the distortion and K.

Samples: one per (sequence, frame, view) image. ``keypoints3d`` = ``world_scale * (R X + t)`` (metres: Leap
Motion reports millimetres, so ``world_scale=0.001``). With ``undistort=True`` (default) the image is resampled to
the distortion-free pinhole camera with the same K (bilinear; the lens moves pixels by up to ~7 px at the corners,
< 1.5 px in the central half; a band of up to ~5 px along the top and left edges has no source pixel and is black),
so ``keypoints2d = project(keypoints3d, K)`` exactly as the sample convention says.
With ``undistort=False`` the image is the JPEG as stored and ``keypoints2d`` the distorted projection (what
``projections_2d`` holds, floats); ``K @ X`` then misses them by the lens distortion (the amounts above).
``visibility`` marks keypoints inside the image (MHP has no occlusion labels). No ``subject`` (sequences are not
mapped to persons) and no ``is_left`` (the files do not say).

Keypoints. The points are named after the NYU hand dataset's convention (F1 = little, F2 = ring, F3 = middle,
F4 = index, TH = thumb; KNU1_B the finger's base, KNU3_A its tip); the authors' script reads lines 0-20 of a joint
file by position and writes its 2-D files with these names in this order::

    line  0 F4_KNU1_A   1 F4_KNU1_B   2 F4_KNU2_A   3 F4_KNU3_A        index   PIP, MCP, DIP, tip
    line  4 F3_KNU1_A   5 F3_KNU1_B   6 F3_KNU2_A   7 F3_KNU3_A        middle
    line  8 F1_KNU1_A   9 F1_KNU1_B  10 F1_KNU2_A  11 F1_KNU3_A        little
    line 12 F2_KNU1_A  13 F2_KNU1_B  14 F2_KNU2_A  15 F2_KNU3_A        ring
    line 16 TH_KNU1_A  17 TH_KNU1_B  18 TH_KNU2_A  19 TH_KNU3_A        thumb   MCP, CMC, IP, tip
    line 20 PALM_POSITION                                              palm centre
    (line 21: the palm normal, a direction)

mapped to the OpenPose order of ``handops.hand_tree()`` by ``MHP_TO_OPENPOSE`` (OpenPose index -> file line)::

    0 wrist <- 20 PALM_POSITION
    thumb  1-4  <- 17, 16, 18, 19        index  5-8  <- 1, 0, 2, 3       middle 9-12 <- 5, 4, 6, 7
    ring  13-16 <- 13, 12, 14, 15        little 17-20 <- 9, 8, 10, 11

A line whose label is one of these names but at another line is an error (a reordered file); other labels are
accepted and read by position, as the authors' script does (it ignores the labels).

Uncertain (the dataset ships no document of these; the choices follow the authors' script and the public loaders
that agree with each other, and are not verified on the real files here):
* MHP has no wrist: keypoint 0 is the Leap Motion palm centre, which lies between the wrist and the finger bases
  (as in the public loaders that map it); a wrist error on MHP is not comparable with other datasets'.
* The finger identities (F4 = index ... F1 = little) and the base-to-tip order KNU1_B, KNU1_A, KNU2_A, KNU3_A come
  from the NYU naming and the third-party loaders, whose skeletons join KNU1_B to the palm.
* That the 3-D files' lines follow the 2-D files' names (the script implies it; their own labels are undocumented).
* World units (mm, from the Leap Motion) and hence ``world_scale``; the one K and distortion for every webcam.
* One public parser skips webcam 4 as badly labelled; ``views`` leaves views out.
* The image count 82,760 (= 4 x 20,690 frames) is the thesis'; the Chapter 4 split cuts 60,000 / 10,000 and gives
  the test split whatever remains.

Splits (:func:`mhp_split`). The thesis' numbers are image counts: Chapter 4 uses 60,000 / 10,000 / 12,760
images (``protocol="ch4"``), Chapters 3 and 5 70 / 15 / 15 % at random (``protocol="ch3"`` or ``"ch5"``, the same
split). Whole sequences cannot give these sizes (21 sequences of unequal length; "at random" is per item), so the
split is by image: a permutation seeded by ``seed`` of the sorted index of every image found (all sequences and
views, whatever ``views`` / ``sequences`` keep afterwards, so the partition does not depend on them). The
thesis' own permutation is not published: the sizes are reproduced, the membership is not. Views of one instant
and neighbouring video frames then fall in different splits, which makes test images near-duplicates of training
ones; ``unit="frame"`` keeps the 4 views of an instant together (same Chapter 4 sizes, since 60,000 and 10,000 are
multiples of 4; 70/15/15 to within a frame), and a clean held-out evaluation selects whole sequences with
``sequences=`` and ``protocol=None``.

Read at construction: the folder listings (each image must have its ``<f>_joints.txt``) and every calibration
pickle (with a restricted unpickler that builds numeric numpy arrays only; any other global is refused); when a
sample is requested: the joint file and the image. Errors name the file.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from handops.geometry import axis_angle_to_matrix, project
from handops_models.data.formats._common import (
    FormatError, as_array, bbox_from_keypoints, check_intrinsics, in_image, make_sample, read_image, require_file,
)

__all__ = [
    "MHPHands", "mhp_split", "read_mhp_joints", "load_pickled_array", "distort", "undistort_image",
    "MHP_K", "MHP_DIST_COEFFS", "MHP_JOINT_NAMES", "MHP_TO_OPENPOSE", "MHP_NUM_IMAGES", "MHP_PROTOCOLS",
]

MHP_K = np.array([[614.878, 0.0, 313.219], [0.0, 615.479, 231.288], [0.0, 0.0, 1.0]])
MHP_DIST_COEFFS = np.array([0.092701, -0.175877, -0.0035687, -0.00302299, 0.0])  # k1, k2, p1, p2, k3
MHP_NUM_IMAGES = 82760  # thesis: 60,000 + 10,000 + 12,760
MHP_VIEWS = (1, 2, 3, 4)

MHP_JOINT_NAMES = (
    "F4_KNU1_A", "F4_KNU1_B", "F4_KNU2_A", "F4_KNU3_A",
    "F3_KNU1_A", "F3_KNU1_B", "F3_KNU2_A", "F3_KNU3_A",
    "F1_KNU1_A", "F1_KNU1_B", "F1_KNU2_A", "F1_KNU3_A",
    "F2_KNU1_A", "F2_KNU1_B", "F2_KNU2_A", "F2_KNU3_A",
    "TH_KNU1_A", "TH_KNU1_B", "TH_KNU2_A", "TH_KNU3_A",
    "PALM_POSITION",
)
# OpenPose index -> line of the joint file
MHP_TO_OPENPOSE = (20, 17, 16, 18, 19, 1, 0, 2, 3, 5, 4, 6, 7, 13, 12, 14, 15, 9, 8, 10, 11)

# protocol -> ("counts", (train, val, None = the rest)) or ("fractions", (train, val, test))
MHP_PROTOCOLS = {
    "ch4": ("counts", (60000, 10000, None)),
    "ch3": ("fractions", (0.70, 0.15, 0.15)),
    "ch5": ("fractions", (0.70, 0.15, 0.15)),
}
_SPLITS = ("train", "val", "test")

_GRIDS: dict[tuple, torch.Tensor] = {}  # undistortion grids by (K, distortion, height, width)
_IMAGE = re.compile(r"(\d+)_webcam_(\d+)\.jpg")
_SEQUENCE = re.compile(r"data_(\d+)")


# ----------------------------------------------------------------------------------------------
# Safe reading of the calibration pickles.


class _Refused(pickle.UnpicklingError):
    pass


def _numpy_attr(submodule: str, name: str):
    for prefix in ("numpy._core", "numpy.core"):  # numpy >= 2 / 1.x
        try:
            return getattr(__import__(f"{prefix}.{submodule}", fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {submodule}.{name}")  # pragma: no cover


class _Guarded:
    """A callable a pickle may name; slotted, so that a BUILD opcode cannot alter it."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise _Refused(f"refused to set {name!r} on {type(self).__name__}")


class _Reconstruct(_Guarded):
    __slots__ = ()

    def __call__(self, subtype, shape, dtype):
        if subtype is not np.ndarray:
            raise _Refused(f"refused to reconstruct {subtype!r} (only numpy.ndarray)")
        return _numpy_attr("multiarray", "_reconstruct")(subtype, shape, dtype)


class _Latin1Encode(_Guarded):
    __slots__ = ()

    def __call__(self, text, encoding):  # how Python 3 writes bytes at protocols 0-2
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _Refused(f"refused _codecs.encode(..., {encoding!r}) (only 'latin1')")
        return text.encode("latin1")


def _allowed() -> dict:
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _Latin1Encode()}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _Reconstruct()
        allowed[(f"{core}.multiarray", "scalar")] = _numpy_attr("multiarray", "scalar")
        allowed[(f"{core}.numeric", "_frombuffer")] = _numpy_attr("numeric", "_frombuffer")
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module, name):
        if _ArrayUnpickler._allowed is None:
            _ArrayUnpickler._allowed = _allowed()
        try:
            return _ArrayUnpickler._allowed[(module, name)]
        except KeyError:
            raise _Refused(f"refused to load global '{module}.{name}' (only numpy arrays are read)") from None


def load_pickled_array(path, what: str = "pickled array") -> np.ndarray:
    """A numeric numpy array from a pickle (Python 2 or 3), read by an unpickler that resolves only numpy's array
    reconstruction; anything else (``os.system``, ...) is refused before it is called. Errors name the file."""
    path = require_file(path, what)
    try:
        with open(path, "rb") as f:
            value = _ArrayUnpickler(f, encoding="latin1").load()  # Python-2 str -> str, as numpy expects
    except _Refused as e:
        raise FormatError(f"{path}: {e}") from None
    except Exception as e:  # truncated or malformed streams fail in many ways
        raise FormatError(f"{path}: not a readable pickled numpy array ({type(e).__name__}: {e})") from None
    if not isinstance(value, np.ndarray) or not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_) \
            or np.iscomplexobj(value):
        kind = type(value).__name__ + (f" of dtype {value.dtype}" if isinstance(value, np.ndarray) else "")
        raise FormatError(f"{path}: must hold a numeric numpy array, got {kind}")
    return value


def _vector3(path: Path, what: str) -> np.ndarray:
    a = load_pickled_array(path, what)
    if a.size != 3 or a.shape not in ((3,), (3, 1), (1, 3)):
        raise FormatError(f"{path}: {what} must hold 3 values ([3, 1] or [3]), got shape {list(a.shape)}")
    return as_array(a.reshape(3), (3,), path, what)


# ----------------------------------------------------------------------------------------------
# Joint files, distortion.


def read_mhp_joints(path) -> np.ndarray:
    """The 21 points [21, 3] of a ``<f>_joints.txt`` in the file's order (``MHP_JOINT_NAMES``)."""
    path = require_file(path, "joint file")
    rows, labels = [], []
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = [(n, line.split()) for n, line in enumerate(f, 1)]
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not a text file ({e})") from None
    for number, fields in lines:
        if not fields:
            continue
        if len(fields) != 4:
            raise FormatError(f"{path}: line {number} must be '<name> x y z', got {' '.join(fields)!r}")
        try:
            rows.append([float(x) for x in fields[1:]])
        except ValueError:
            raise FormatError(f"{path}: line {number} is not '<name> x y z' with numbers: "
                              f"{' '.join(fields)!r}") from None
        labels.append(fields[0])
    if len(rows) not in (21, 22):
        raise FormatError(f"{path}: must hold 21 joint lines and the palm normal (22 lines), got {len(rows)}")
    for i, label in enumerate(labels[:21]):
        if label in MHP_JOINT_NAMES and label != MHP_JOINT_NAMES[i]:
            raise FormatError(f"{path}: joint line {i + 1} is {label}, expected {MHP_JOINT_NAMES[i]} (the order of "
                              f"the authors' files)")
    return as_array(rows[:21], (21, 3), path, "joints")


def distort(xy: torch.Tensor, dist_coeffs) -> torch.Tensor:
    """OpenCV's lens model on normalised coordinates [..., 2] (x / z, y / z): (k1, k2, p1, p2[, k3])."""
    k1, k2, p1, p2, k3 = (list(map(float, dist_coeffs)) + [0.0])[:5]
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], -1)


def _distorted_pixels(points: torch.Tensor, K: torch.Tensor, dist_coeffs) -> torch.Tensor:
    """Pixels [N, 2] of camera points [N, 3] through the lens (as ``cv2.projectPoints`` with zero rvec, tvec)."""
    xy = distort(points[:, :2] / points[:, 2:], dist_coeffs)
    return torch.cat([xy, torch.ones_like(xy[:, :1])], 1) @ K[:2].T


def _undistort_grid(K: np.ndarray, dist_coeffs, height: int, width: int) -> torch.Tensor:
    """grid_sample grid [1, H, W, 2] (align_corners=True) that takes each pinhole pixel from the distorted image."""
    K64 = torch.as_tensor(K, dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    rays = torch.linalg.solve(K64, pixels.T).T  # K^-1 [u, v, 1] (z = 1)
    source = _distorted_pixels(rays, K64, dist_coeffs).reshape(height, width, 2)
    scale = torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)], dtype=torch.float64)
    return (source * scale - 1).float()[None]


def undistort_image(image: torch.Tensor, K, dist_coeffs, grid: torch.Tensor | None = None) -> torch.Tensor:
    """[3, H, W] image of a camera with lens distortion -> the same view through the pinhole camera with the same K."""
    height, width = image.shape[1:]
    if grid is None:
        grid = _undistort_grid(np.asarray(K, dtype=np.float64), dist_coeffs, height, width)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    return out.clamp_(0, 1)


# ----------------------------------------------------------------------------------------------
# Splits.


def _cut_sizes(total: int, protocol: str) -> tuple[int, int, int]:
    kind, values = MHP_PROTOCOLS[protocol]
    if kind == "counts":
        n_train, n_val, _ = values
        if total <= n_train + n_val:
            raise ValueError(f"protocol {protocol!r} cuts {n_train} training and {n_val} validation images and "
                             f"gives the test split the rest ({MHP_NUM_IMAGES - n_train - n_val} on the full "
                             f"dataset of {MHP_NUM_IMAGES}); only {total} images were found")
        return n_train, n_val, total - n_train - n_val
    n_train, n_val = round(values[0] * total), round(values[1] * total)
    return n_train, n_val, total - n_train - n_val


def mhp_split(index, protocol: str, seed: int = 0, unit: str = "image") -> dict[str, np.ndarray]:
    """{"train", "val", "test": sorted positions into ``index``} of one of the thesis' protocols.

    Args:
        index: the images, a sequence of (sequence, frame, view) integer triples (``MHPHands.full_index``).
        protocol: ``"ch4"`` (60,000 / 10,000 / the rest) or ``"ch3"`` / ``"ch5"`` (70 / 15 / 15 %, rounded, the
            test split taking the remainder).
        seed: the permutation's seed (the thesis' is not published).
        unit: ``"image"`` (the thesis: each image drawn on its own) or ``"frame"`` (the views of one (sequence,
            frame) stay together; frames are added to a split while its image count stays within the target).
    The permutation is of the index sorted, so the split does not depend on the order the files were listed in.
    """
    if protocol not in MHP_PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(MHP_PROTOCOLS)}, got {protocol!r}")
    if unit not in ("image", "frame"):
        raise ValueError(f"unit must be 'image' or 'frame', got {unit!r}")
    keys = np.asarray(index, dtype=np.int64).reshape(-1, 3)
    if len(np.unique(keys, axis=0)) != len(keys):
        raise ValueError("index holds an image twice")
    order = np.lexsort(keys.T[::-1])  # sorted by sequence, frame, view
    sizes = _cut_sizes(len(keys), protocol)
    rng = np.random.default_rng([int(seed), 15])
    if unit == "image":
        perm = order[rng.permutation(len(keys))]
        cuts = np.cumsum(sizes)[:2]
        parts = np.split(perm, cuts)
    else:
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, (np.diff(sorted_keys[:, :2], axis=0) != 0).any(1)])
        groups = np.split(order, starts[1:])
        counts = np.array([len(g) for g in groups])
        perm = rng.permutation(len(groups))
        cumulative = np.cumsum(counts[perm])
        n_train = int(np.searchsorted(cumulative, sizes[0], side="right"))
        n_val = int(np.searchsorted(cumulative, sizes[0] + sizes[1], side="right")) - n_train
        frame_parts = np.split(perm, [n_train, n_train + n_val])
        parts = [np.concatenate([groups[g] for g in p]) if len(p) else np.zeros(0, np.int64) for p in frame_parts]
    return {name: np.sort(p) for name, p in zip(_SPLITS, parts)}


# ----------------------------------------------------------------------------------------------
# The dataset.


class MHPHands(Dataset):
    """MHP images with their 3-D keypoints in the view's camera, one sample per (sequence, frame, view).

    Args:
        root: the MHP folder (``annotated_frames/``, ``calibrations/``, ...).
        protocol: None (every image) or a thesis split protocol, ``"ch4"``, ``"ch3"`` or ``"ch5"``
            (:func:`mhp_split`).
        split: ``"train"``, ``"val"`` or ``"test"`` with a protocol; None without.
        seed: the split's seed.
        unit: ``"image"`` or ``"frame"``, what the split draws (:func:`mhp_split`).
        views: webcams to keep (1-4), after the split.
        sequences: sequence numbers (the n of ``data_<n>``) to keep, after the split; None: all found.
        undistort: resample the image to the pinhole camera K (module docstring); False keeps the stored image and
            gives the distorted keypoint projections.
        K, dist_coeffs: the cameras' intrinsics and OpenCV distortion (default ``MHP_K``, ``MHP_DIST_COEFFS``).
        world_scale: metres per unit of the joint files and calibration (Leap Motion millimetres: 0.001).
        transform: applied to each sample, e.g. ``handops_models.data.HandCrop()`` for the thesis' 2.2x square crop.
    """

    def __init__(self, root: str | Path, protocol: str | None = None, split: str | None = None, seed: int = 0,
                 unit: str = "image", views=MHP_VIEWS, sequences=None, undistort: bool = True, K=None,
                 dist_coeffs=None, world_scale: float = 0.001, transform=None):
        self.root = Path(root)
        frames_dir = self.root / "annotated_frames"
        if not frames_dir.is_dir():
            raise FileNotFoundError(f"{frames_dir}: MHP annotated_frames folder not found")
        if protocol is None and split is not None:
            raise ValueError(f"split {split!r} needs a protocol ({sorted(MHP_PROTOCOLS)}); "
                             "protocol=None is every image")
        if protocol is not None and split not in _SPLITS:
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        views = tuple(int(v) for v in views)
        if not views or not set(views) <= set(MHP_VIEWS):
            raise ValueError(f"views must be a non-empty subset of {MHP_VIEWS}, got {views!r}")
        self.protocol, self.split, self.seed, self.unit = protocol, split, seed, unit
        self.undistort, self.world_scale, self.transform = bool(undistort), float(world_scale), transform
        self.K = as_array(MHP_K if K is None else K, (3, 3), "K", "K")
        check_intrinsics(self.K, "K")
        dist = MHP_DIST_COEFFS if dist_coeffs is None else np.asarray(dist_coeffs, dtype=np.float64).reshape(-1)
        if dist.shape not in ((4,), (5,)) or not np.isfinite(dist).all():
            raise ValueError(f"dist_coeffs must be 4 or 5 finite numbers (k1, k2, p1, p2[, k3]), got {dist_coeffs!r}")
        self.dist_coeffs = np.concatenate([dist, np.zeros(5 - len(dist))])

        self._folders: dict[int, Path] = {}
        for p in frames_dir.iterdir():
            m = _SEQUENCE.fullmatch(p.name)
            if m and p.is_dir():
                self._folders[int(m.group(1))] = p
        if not self._folders:
            raise FileNotFoundError(f"{frames_dir}: no data_<n> sequence folders found")
        index = []
        self._frame_names: dict[tuple[int, int], str] = {}  # (sequence, frame) -> the frame's digits as written
        for s in sorted(self._folders):
            folder = self._folders[s]
            names = {p.name for p in folder.iterdir()}
            for name in sorted(names):
                m = _IMAGE.fullmatch(name)
                if m is None:
                    continue
                frame, view = int(m.group(1)), int(m.group(2))
                if view not in MHP_VIEWS:
                    raise FormatError(f"{folder / name}: webcam number must be 1-4, got {view}")
                if f"{m.group(1)}_joints.txt" not in names:
                    raise FileNotFoundError(f"{folder / (m.group(1) + '_joints.txt')}: joint file of "
                                            f"{folder / name} not found")
                if self._frame_names.setdefault((s, frame), m.group(1)) != m.group(1):
                    raise FormatError(f"{folder / name}: frame {frame} is also written "
                                      f"{self._frame_names[(s, frame)]!r} in {folder}")
                index.append((s, frame, view))
        if not index:
            raise FileNotFoundError(f"{frames_dir}: no <frame>_webcam_<view>.jpg images found")
        index.sort()
        self.full_index = index

        if protocol is None:
            chosen = range(len(index))
        else:
            chosen = mhp_split(index, protocol, seed, unit)[split]
        if sequences is not None:
            wanted = {int(s) for s in sequences}
            missing = sorted(wanted - set(self._folders))
            if missing:
                raise FileNotFoundError(f"{frames_dir}: sequence folders {['data_%d' % s for s in missing]} not found")
        else:
            wanted = set(self._folders)
        self._entries = [index[i] for i in chosen if index[i][2] in views and index[i][0] in wanted]

        self._calib: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for s, _, v in self._entries:
            if (s, v) not in self._calib:
                folder = self.root / "calibrations" / f"data_{s}" / f"webcam_{v}"
                rvec = _vector3(folder / "rvec.pkl", "rvec")
                tvec = _vector3(folder / "tvec.pkl", "tvec")
                R = axis_angle_to_matrix(torch.as_tensor(rvec, dtype=torch.float64)).numpy()
                self._calib[(s, v)] = (R, tvec)

    def __len__(self) -> int:
        return len(self._entries)

    def image_path(self, index: int) -> Path:
        s, frame, view = self._entries[index]
        return self._folders[s] / f"{self._frame_names[(s, frame)]}_webcam_{view}.jpg"

    def joints_path(self, index: int) -> Path:
        s, frame, _ = self._entries[index]
        return self._folders[s] / f"{self._frame_names[(s, frame)]}_joints.txt"

    def __getitem__(self, index: int) -> dict:
        s, frame, view = self._entries[index]
        joints_path = self.joints_path(index)
        world = read_mhp_joints(joints_path)[list(MHP_TO_OPENPOSE)]
        R, t = self._calib[(s, view)]
        camera = (world @ R.T + t) * self.world_scale
        if (camera[:, 2] <= 0).any():
            raise FormatError(f"{joints_path}: keypoints are behind webcam {view} (z <= 0 after calibrations/"
                              f"data_{s}/webcam_{view}); wrong calibration or joint file")
        image = read_image(self.image_path(index))
        height, width = image.shape[1:]
        points = torch.as_tensor(camera, dtype=torch.float64)
        K = torch.as_tensor(self.K, dtype=torch.float64)
        if self.undistort:
            key = (self.K.tobytes(), self.dist_coeffs.tobytes(), height, width)
            if key not in _GRIDS:  # built once per process (each DataLoader worker builds its own)
                _GRIDS[key] = _undistort_grid(self.K, self.dist_coeffs, height, width)
            image = undistort_image(image, self.K, self.dist_coeffs, _GRIDS[key])
            kp2d = project(points, K).numpy()
        else:
            kp2d = _distorted_pixels(points, K, self.dist_coeffs).numpy()
        sample = make_sample(image=image, keypoints2d=kp2d, visibility=in_image(kp2d, width, height),
                             keypoints3d=camera, K=self.K, bbox=bbox_from_keypoints(kp2d))
        return self.transform(sample) if self.transform is not None else sample
