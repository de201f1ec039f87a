"""Shared helpers of the real-format loaders: safe file reading with errors that name the file, array
validation, boxes and MANO pose conversions (projection and rotations: :mod:`handops.geometry`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "FormatError", "require_file", "load_json", "load_npz", "load_yaml", "load_text_matrix", "read_image",
    "as_array", "check_intrinsics", "bbox_from_keypoints", "in_image", "mano_arrays", "make_sample",
]


class FormatError(ValueError):
    """A dataset file is missing or does not hold what its format says."""


def require_file(path: Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    return path


def load_json(path: Path):
    path = require_file(path, "annotation file")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from e


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, read with ``allow_pickle=False`` (object arrays are refused)."""
    path = require_file(path, "label file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as e:  # object arrays need pickle: refused
        raise FormatError(f"{path}: holds an array that needs pickle to load, which is refused ({e})") from e
    except Exception as e:  # zipfile.BadZipFile, OSError, ...
        raise FormatError(f"{path}: not a readable .npz archive ({e})") from e


def load_yaml(path: Path):
    """A YAML file read with ``yaml.safe_load`` (plain data only; no python object tags)."""
    try:
        import yaml
    except ImportError as e:  # pragma: no cover - PyYAML is present where the tests run
        raise ImportError(f"reading {path} needs PyYAML: pip install pyyaml") from e
    path = require_file(path, "YAML file")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise FormatError(f"{path}: not valid (safe) YAML ({e})") from e


def load_text_matrix(path: Path, what: str = "numeric text file") -> np.ndarray:
    """A whitespace- or comma-separated numeric text file as a float64 [rows, cols] array (ragged rows refused)."""
    path = require_file(path, what)
    rows = []
    with open(path, "r", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.replace(",", " ").split()
            if not fields:
                continue
            try:
                rows.append([float(x) for x in fields])
            except ValueError as e:
                raise FormatError(f"{path}: line {number} is not numeric: {line.strip()!r}") from e
    if not rows:
        raise FormatError(f"{path}: holds no numbers")
    if len({len(r) for r in rows}) != 1:
        raise FormatError(f"{path}: rows have different lengths {sorted({len(r) for r in rows})}")
    return np.asarray(rows, dtype=np.float64)


def read_image(path: Path) -> torch.Tensor:
    """An image file as float32 [3, H, W] in [0, 1] (Pillow; grey and RGBA become RGB)."""
    from PIL import Image, UnidentifiedImageError

    path = require_file(path, "image")
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise FormatError(f"{path}: not a readable image ({e})") from e
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)


def as_array(value, shape: tuple[int, ...], source, name: str) -> np.ndarray:
    """``value`` as a finite float64 array of exactly ``shape``; else FormatError naming ``source`` and ``name``."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        a = None
    if a is None or a.dtype == object or a.shape != tuple(shape):
        got = _describe_shape(value) if a is None or a.dtype == object else " x ".join(map(str, a.shape)) or "a scalar"
        raise FormatError(f"{source}: {name} must be {' x '.join(map(str, shape))}, got {got}")
    if not np.isfinite(a).all():
        raise FormatError(f"{source}: {name} holds NaN or Inf")
    return a


def check_intrinsics(K: np.ndarray, source, name: str = "K") -> None:
    """Refuses camera matrices K [3, 3] or [N, 3, 3] (finite) that are not ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``
    with fx, fy > 0: :func:`project` with any other K (an all-zero one, say) gives NaN or meaningless pixels."""
    ok = (K[..., 0, 0] > 0) & (K[..., 1, 1] > 0) & (K[..., 1, 0] == 0) & (K[..., 2, :] == (0, 0, 1)).all(-1)
    if not ok.all():
        entry = int(np.flatnonzero(~ok)[0]) if K.ndim == 3 else None
        bad = K if entry is None else K[entry]
        raise FormatError(f"{source}: {'' if entry is None else f'entry {entry}: '}{name} must be a camera matrix "
                          f"[[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got {bad.tolist()}")


def _describe_shape(value) -> str:
    if isinstance(value, (list, tuple)):
        lengths = sorted({len(v) if isinstance(v, (list, tuple)) else 0 for v in value})
        return f"{len(value)} rows of lengths {lengths}"
    return type(value).__name__


def bbox_from_keypoints(kp2d: np.ndarray) -> np.ndarray:
    return np.array([kp2d[:, 0].min(), kp2d[:, 1].min(), kp2d[:, 0].max(), kp2d[:, 1].max()])


def in_image(kp2d: np.ndarray, width: int, height: int) -> np.ndarray:
    """Keypoints on the image: pixel centres run from 0 to size - 1, so the image covers [-0.5, size - 0.5)."""
    x, y = kp2d[:, 0], kp2d[:, 1]
    return (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)


def mano_arrays(model, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(hands_components [45, 45], hands_mean [45]) as float64 numpy from a ``handops.mano.ManoModel`` or a MANO
    file path (read with ``handops.mano.load``)."""
    from handops.mano import ManoModel, load

    if isinstance(model, (str, Path)):
        model = load(model)
    if not isinstance(model, ManoModel):
        raise TypeError(f"{name} must be a handops.mano.ManoModel or a MANO file path, got {type(model).__name__}")
    return model.hands_components.double().numpy(), model.hands_mean.double().numpy()


def make_sample(**values) -> dict:
    """numpy / python values -> the sample dict's types (float32 and bool tensors, python int and bool);
    None values are left out."""
    sample = {}
    for key, v in values.items():
        if v is None:
            continue
        if key in ("subject",):
            sample[key] = int(v)
        elif key in ("is_left",):
            sample[key] = bool(v)
        elif key == "visibility":
            sample[key] = torch.as_tensor(np.asarray(v, dtype=bool))
        elif isinstance(v, torch.Tensor):
            sample[key] = v
        else:
            sample[key] = torch.as_tensor(np.asarray(v, dtype=np.float32))
    return sample
