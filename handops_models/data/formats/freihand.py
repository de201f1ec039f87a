"""FreiHAND (Zimmermann et al., ICCV 2019, https://lmb.informatik.uni-freiburg.de/projects/freihand/).

Files read (checked against the official toolbox github.com/lmb-freiburg/freihand: ``utils/fh_utils.py``,
``utils/model.py``, ``utils/mano_utils.py``, ``view_samples.py``, ``pred.py``), ``<set>`` being ``training`` or
``evaluation``::

    <root>/<set>_K.json       [N][3][3] camera intrinsics
    <root>/<set>_xyz.json     [N][21][3] keypoints, metres, camera coordinates   (evaluation: release v2 only)
    <root>/<set>_mano.json    [N][1][61] MANO fits                               (evaluation: release v2 only)
    <root>/<set>_verts.json   [N][778][3] MANO vertices, metres (read only with ``with_vertices=True``;
                              any V x 3 is accepted)
    <root>/<set>/rgb/%08d.jpg 224 x 224 images

The training ``rgb`` folder holds 4 versions of each of the N = 32560 annotated samples (green screen,
homogenised, sample- and auto-coloured backgrounds): image ``i`` shows annotation ``i % N``. The dataset has one
sample per image present in ``<set>/rgb`` (a partial download works); an image number >= 4 N (training) or >= N
(evaluation) is refused. FreiHAND holds right hands only (``is_left`` is False).

Keypoint order: the toolbox's 21 keypoints are wrist, thumb 1-4 (MCP to tip), index 1-4, middle, ring, little
(``mano_utils.get_keypoints_from_mesh_ch`` maps MANO's joints to exactly these places), which is the OpenPose
order of ``handops.hand_tree()``: no reordering. ``keypoints2d`` is the projection of ``keypoints3d`` with K (as
the toolbox's ``projectPoints``); ``visibility`` only marks keypoints inside the image (FreiHAND has no
occlusion labels); ``bbox`` is the keypoints' tight box.

MANO (``<set>_mano.json``): per the toolbox's ``split_theta`` the 61 values are ``pose`` [0:48] (3 global
axis-angle + 45 hand axis-angle, no PCA), ``shape`` [48:58] and ``uv_root`` [58:60] + ``scale`` [60] (the
image position and scale of the root keypoint 9, from which the toolbox recovers the translation); they are *not*
a 3-D translation, and no translation is given here (``keypoints3d`` / ``vertices`` carry the position). The
toolbox poses its model with ``use_mean_pose=True``, i.e. ``flat_hand_mean=False``: the 45 hand values are
relative to MANO's mean pose ``hands_mean``. The ``pose`` key of ``handops_models.data.sample`` is the full
axis-angle (``flat_hand_mean=True`` semantics), so it is ``[theta[0:3], theta[3:48] + hands_mean]``; that needs
the right MANO model's ``hands_mean``, passed as ``mano_model`` (a ``handops.mano.ManoModel`` or the path of
``MANO_RIGHT.pkl``). Without ``mano_model`` the ``pose`` key is absent (``betas`` is always given where the MANO
file exists). Global orientation is already in camera coordinates (the fits are per camera).

The JSON files are read and validated at construction (one file per annotation kind; ``<set>_verts.json`` is
large, about 1 GB for training, hence opt-in); images are read when a sample is requested.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from handops.geometry import project
from handops_models.data.formats._common import (
    FormatError, bbox_from_keypoints, check_intrinsics, in_image, load_json, make_sample, mano_arrays, read_image,
)

__all__ = ["FreiHAND", "FREIHAND_TRAINING_SIZE", "FREIHAND_EVALUATION_SIZE", "FREIHAND_VERSIONS"]

FREIHAND_TRAINING_SIZE = 32560
FREIHAND_EVALUATION_SIZE = 3960
FREIHAND_VERSIONS = ("gs", "hom", "sample", "auto")  # training image i + N * k is version k of annotation i


def _stack(data, path: Path, inner: tuple[int, ...], name: str) -> np.ndarray:
    """A JSON list of equally shaped entries -> float64 [N, *inner]; the first bad entry is named."""
    if not isinstance(data, list) or not data:
        raise FormatError(f"{path}: must be a non-empty list of {name} entries")
    try:
        a = np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError):
        a = None
    if a is None or a.shape[1:] != inner:
        for i, entry in enumerate(data):
            try:
                e = np.asarray(entry, dtype=np.float64)
            except (ValueError, TypeError):
                e = None
            if e is None or e.shape != inner:
                got = "a ragged or non-numeric value" if e is None else " x ".join(map(str, e.shape)) or "a scalar"
                raise FormatError(f"{path}: entry {i}: {name} must be {' x '.join(map(str, inner))}, got {got}")
        raise FormatError(f"{path}: {name} entries must be {' x '.join(map(str, inner))}")  # pragma: no cover
    if not np.isfinite(a).all():
        raise FormatError(f"{path}: {name} holds NaN or Inf")
    return a


class FreiHAND(Dataset):
    """FreiHAND images with their annotations.

    Args:
        root: the folder holding ``training_*.json``, ``training/``, ``evaluation_*.json``, ``evaluation/``.
        split: ``"training"`` or ``"evaluation"`` (``"train"`` / ``"test"`` are accepted aliases).
        mano_model: the right MANO model (``ManoModel`` or file path) whose ``hands_mean`` turns FreiHAND's
            mean-relative hand pose into the full axis-angle ``pose``; None leaves ``pose`` out.
        with_vertices: read ``<set>_verts.json`` (large) and give ``vertices``.
    """

    def __init__(self, root: str | Path, split: str = "training", mano_model=None, with_vertices: bool = False):
        self.root = Path(root)
        aliases = {"training": "training", "train": "training", "evaluation": "evaluation", "test": "evaluation"}
        if split not in aliases:
            raise ValueError(f"split must be 'training' or 'evaluation', got {split!r}")
        self.split = aliases[split]
        s = self.split
        self.K = _stack(load_json(self.root / f"{s}_K.json"), self.root / f"{s}_K.json", (3, 3), "K")
        check_intrinsics(self.K, self.root / f"{s}_K.json")
        n = len(self.K)
        self.num_annotations = n

        def optional(kind: str, inner: tuple[int, ...], name: str, required: bool):
            path = self.root / f"{s}_{kind}.json"
            if not path.is_file() and not required:
                return None
            a = _stack(load_json(path), path, inner, name)
            if len(a) != n:
                raise FormatError(f"{path}: has {len(a)} entries but {s}_K.json has {n}")
            return a

        training = s == "training"
        self.xyz = optional("xyz", (21, 3), "xyz", training)
        self.mano = optional("mano", (1, 61), "mano", training)
        self.verts = None
        if with_vertices:
            self.verts = self._verts(n)
        self._pose_mean = None
        if mano_model is not None:
            _, self._pose_mean = mano_arrays(mano_model, "mano_model")

        rgb = self.root / s / "rgb"
        if not rgb.is_dir():
            raise FileNotFoundError(f"{rgb}: image folder not found")
        limit = n * (len(FREIHAND_VERSIONS) if training else 1)
        numbers = []
        for p in rgb.iterdir():
            m = re.fullmatch(r"(\d{8})\.jpg", p.name)
            if m is None:
                continue
            k = int(m.group(1))
            if k >= limit:
                raise FormatError(f"{p}: image number {k} has no annotation ({s} has {n} annotations"
                                  + (f", {len(FREIHAND_VERSIONS)} image versions each)" if training else ")"))
            numbers.append(k)
        if not numbers:
            raise FileNotFoundError(f"{rgb}: no %08d.jpg images found")
        self._images = sorted(numbers)

    def _verts(self, n: int) -> np.ndarray:
        path = self.root / f"{self.split}_verts.json"
        data = load_json(path)
        if not isinstance(data, list) or not data:
            raise FormatError(f"{path}: must be a non-empty list of vertex arrays")
        first = np.asarray(data[0], dtype=np.float64) if isinstance(data[0], list) else None
        if first is None or first.ndim != 2 or first.shape[1] != 3:
            raise FormatError(f"{path}: entry 0: verts must be V x 3")
        a = _stack(data, path, first.shape, "verts")
        if len(a) != n:
            raise FormatError(f"{path}: has {len(a)} entries but {self.split}_K.json has {n}")
        return a

    def __len__(self) -> int:
        return len(self._images)

    def annotation_index(self, index: int) -> int:
        """The annotation row of sample ``index`` (its image number modulo the annotation count)."""
        return self._images[index] % self.num_annotations

    def __getitem__(self, index: int) -> dict:
        number = self._images[index]
        i = number % self.num_annotations
        image = read_image(self.root / self.split / "rgb" / f"{number:08d}.jpg")
        K = self.K[i]
        values = dict(image=image, K=K, is_left=False)
        if self.xyz is not None:
            xyz = self.xyz[i]
            if (xyz[:, 2] <= 0).any():
                raise FormatError(f"{self.root / (self.split + '_xyz.json')}: entry {i}: keypoints must lie in "
                                  f"front of the camera (z > 0), got z min {xyz[:, 2].min():.4g}")
            kp2d = project(torch.as_tensor(xyz, dtype=torch.float64), torch.as_tensor(K, dtype=torch.float64)).numpy()
            values.update(keypoints3d=xyz, keypoints2d=kp2d, bbox=bbox_from_keypoints(kp2d),
                          visibility=in_image(kp2d, image.shape[2], image.shape[1]))
        if self.mano is not None:
            theta = self.mano[i, 0]
            values["betas"] = theta[48:58]
            if self._pose_mean is not None:
                values["pose"] = np.concatenate([theta[:3], theta[3:48] + self._pose_mean])
        if self.verts is not None:
            values["vertices"] = self.verts[i]
        return make_sample(**values)
