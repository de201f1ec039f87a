"""DexYCB (Chao et al., CVPR 2021, https://dex-ycb.github.io/) in the layout of its toolkit.

Files read (checked against github.com/NVlabs/dex-ycb-toolkit: ``dex_ycb_toolkit/dex_ycb.py``,
``dex_ycb_toolkit/sequence_loader.py``, ``dex_ycb_toolkit/layers/mano_layer.py`` and the README's label
description)::

    <root>/<subject>/<sequence>/meta.yml                      serials, num_frames, mano_sides, mano_calib, ...
    <root>/<subject>/<sequence>/<serial>/color_%06d.jpg       640 x 480 colour images
    <root>/<subject>/<sequence>/<serial>/labels_%06d.npz      seg, pose_y, pose_m [1, 51], joint_3d [1, 21, 3],
                                                              joint_2d [1, 21, 2]
    <root>/calibration/intrinsics/<serial>_640x480.yml        color: {fx, fy, ppx, ppy}
    <root>/calibration/mano_<mano_calib[0]>/mano.yml          betas: [10]

Subjects are the toolkit's ten folders (``20200709-subject-01`` ... ``20201022-subject-10``, or the older
``20200709-weiy`` ... names); the ``subject`` key is the subject's index 0-9 in that list. Splits follow the
toolkit's ``DexYCBDataset``: ``setup`` s0 (seen subjects, views and objects; sequence ``i % 5 == 4`` held out),
s1 (unseen subjects: train 0-5, 9 / val 6 / test 7, 8), s2 (unseen cameras: train serials 0-5 / val 6 / test 7),
s3 (unseen objects: sequences ``i // 5`` in (3, 19) val, (7, 11, 15) test), ``split`` train / val / test; or
``setup="all"`` for every sequence and camera found. Sequence positions are taken in each subject's sorted
sequence list, as the toolkit does (it expects 100 per subject; this loader accepts fewer). Subjects of the
split that are missing under ``root`` are skipped; none at all is an error.

Labels: ``joint_3d`` (metres, camera coordinates) and ``joint_2d`` (pixels) are in the toolkit's joint order
(wrist, thumb mcp-pip-dip-tip, index, middle, ring, little), the OpenPose order of ``handops.hand_tree()``: no
reordering. A frame whose hand is not annotated has ``joint_3d`` all -1 (``pose_m`` all 0): its sample has only
``image``, ``K``, ``subject``, ``is_left`` and ``betas`` (``drop_unannotated=True`` reads every label file at
construction and leaves such frames out). ``visibility`` marks keypoints inside the image (DexYCB has no
per-keypoint occlusion labels); ``bbox`` is the keypoints' tight box.

MANO: ``pose_m[0, 0:48]`` is the global axis-angle (3) followed by 45 PCA coefficients of the hand pose, and
``pose_m[0, 48:51]`` the translation; the toolkit poses manopth's ``ManoLayer(use_pca=True, ncomps=45,
flat_hand_mean=False)``, i.e. hand axis-angle = ``coeffs @ hands_components + hands_mean``. The ``pose`` key
(full axis-angle, flat-hand-mean semantics) is ``[pose_m[0:3], coeffs @ hands_components + hands_mean]`` of the
hand side's MANO model, so it needs ``mano_right`` / ``mano_left`` (``handops.mano.ManoModel`` or the path of
``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl``); without the side's model ``pose`` is absent. ``betas`` come from the
subject's ``mano.yml``. With these, ``ManoLayer(flat_hand_mean=True)(betas, pose[:3], pose[3:], transl=
pose_m[48:51]).joints`` is ``joint_3d``.

YAML files are read with ``yaml.safe_load`` (PyYAML); ``.npz`` files with ``allow_pickle=False``. meta.yml,
intrinsics and mano.yml are read at construction; images and labels when a sample is requested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from handops_models.data.formats._common import (
    FormatError, as_array, bbox_from_keypoints, check_intrinsics, in_image, load_npz, load_yaml, make_sample, mano_arrays, read_image,
)

__all__ = ["DexYCB", "DEXYCB_SUBJECTS", "DEXYCB_SERIALS"]

DEXYCB_SUBJECTS = tuple(f"{d}-subject-{i:02d}" for i, d in enumerate(
    ["20200709", "20200813", "20200820", "20200903", "20200908", "20200918", "20200928", "20201002", "20201015",
     "20201022"], 1))
_OLD_SUBJECTS = ("20200709-weiy", "20200813-ceppner", "20200820-amousavian", "20200903-ynarang", "20200908-yux",
                 "20200918-ftozetoramos", "20200928-ahanda", "20201002-dieterf", "20201015-ychao",
                 "20201022-lmanuelli")
DEXYCB_SERIALS = ("836212060125", "839512060362", "840412060917", "841412060263", "932122060857", "932122060861",
                  "932122061900", "932122062010")

_ALL = list(range(10)), list(range(8)), None  # subjects, serials, sequence rule (None: all)


def _split_rule(setup: str, split: str):
    """(subject indices, serial indices, sequence predicate or None) of the toolkit's setups."""
    every_subject, every_serial = list(range(10)), list(range(8))
    rules = {
        "s0": {"train": (every_subject, every_serial, lambda i: i % 5 != 4),
               "val": ([0, 1], every_serial, lambda i: i % 5 == 4),
               "test": ([2, 3, 4, 5, 6, 7, 8, 9], every_serial, lambda i: i % 5 == 4)},
        "s1": {"train": ([0, 1, 2, 3, 4, 5, 9], every_serial, None),
               "val": ([6], every_serial, None), "test": ([7, 8], every_serial, None)},
        "s2": {"train": (every_subject, [0, 1, 2, 3, 4, 5], None),
               "val": (every_subject, [6], None), "test": (every_subject, [7], None)},
        "s3": {"train": (every_subject, every_serial, lambda i: i // 5 not in (3, 7, 11, 15, 19)),
               "val": (every_subject, every_serial, lambda i: i // 5 in (3, 19)),
               "test": (every_subject, every_serial, lambda i: i // 5 in (7, 11, 15))},
    }
    if setup == "all":
        return _ALL
    if setup not in rules:
        raise ValueError(f"setup must be 's0', 's1', 's2', 's3' or 'all', got {setup!r}")
    if split not in rules[setup]:
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return rules[setup][split]


def _intrinsics(path: Path) -> np.ndarray:
    data = load_yaml(path)
    color = data.get("color") if isinstance(data, dict) else None
    if not isinstance(color, dict) or any(k not in color for k in ("fx", "fy", "ppx", "ppy")):
        raise FormatError(f"{path}: must hold color: {{fx, fy, ppx, ppy}}")
    try:
        fx, fy, cx, cy = (float(color[k]) for k in ("fx", "fy", "ppx", "ppy"))
    except (TypeError, ValueError) as e:
        raise FormatError(f"{path}: color fx, fy, ppx, ppy must be numbers") from e
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    check_intrinsics(K, path, "color K")
    return K


class DexYCB(Dataset):
    """DexYCB colour frames with their hand labels, one sample per (sequence, camera, frame).

    Args:
        root: the DexYCB folder (``$DEX_YCB_DIR``: the subject folders and ``calibration/``).
        setup: ``"s0"`` ... ``"s3"`` (the toolkit's setups) or ``"all"``.
        split: ``"train"``, ``"val"`` or ``"test"`` (ignored for ``setup="all"``).
        mano_right, mano_left: MANO models (``ManoModel`` or file path) for the ``pose`` key; None leaves it out
            for that side.
        drop_unannotated: read every label file now and leave out frames without a hand annotation.
    """

    def __init__(self, root: str | Path, setup: str = "s0", split: str = "train", mano_right=None, mano_left=None,
                 drop_unannotated: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: DexYCB folder not found")
        self.setup, self.split = setup, split
        subject_ind, serial_ind, sequence_rule = _split_rule(setup, split)
        self._mano = {"right": None if mano_right is None else mano_arrays(mano_right, "mano_right"),
                      "left": None if mano_left is None else mano_arrays(mano_left, "mano_left")}
        serials = {DEXYCB_SERIALS[i] for i in serial_ind}
        self._K: dict[str, np.ndarray] = {}
        self._betas: dict[str, np.ndarray] = {}
        self._sequences: list[tuple[Path, int, str, str]] = []  # (folder, subject index, side, calib name)
        self._frames: list[tuple[int, str, int]] = []  # (sequence, serial, frame)
        found_subject = False
        for s in subject_ind:
            folder = next((self.root / n for n in (DEXYCB_SUBJECTS[s], _OLD_SUBJECTS[s]) if (self.root / n).is_dir()),
                          None)
            if folder is None:
                continue
            found_subject = True
            sequences = sorted(p for p in folder.iterdir() if p.is_dir())
            for position, seq in enumerate(sequences):
                if sequence_rule is not None and not sequence_rule(position):
                    continue
                self._add_sequence(seq, s, serials)
        if not found_subject:
            wanted = [DEXYCB_SUBJECTS[s] for s in subject_ind]
            raise FileNotFoundError(f"{self.root}: none of the subject folders of {setup}/{split} found ({wanted})")
        if drop_unannotated:
            self._frames = [f for f in self._frames if self._annotated(f)]

    def _add_sequence(self, seq: Path, subject: int, serials: set[str]):
        meta_path = seq / "meta.yml"
        meta = load_yaml(meta_path)
        if not isinstance(meta, dict):
            raise FormatError(f"{meta_path}: must be a mapping")
        for key in ("serials", "num_frames", "mano_sides", "mano_calib"):
            if key not in meta:
                raise FormatError(f"{meta_path}: lacks '{key}'")
        side, calib = meta["mano_sides"], meta["mano_calib"]
        if not isinstance(side, list) or len(side) != 1 or side[0] not in ("right", "left"):
            raise FormatError(f"{meta_path}: mano_sides must be one of [right] / [left], got {side!r}")
        if not isinstance(calib, list) or len(calib) != 1 or not isinstance(calib[0], str):
            raise FormatError(f"{meta_path}: mano_calib must be a list of one name, got {calib!r}")
        num_frames = meta["num_frames"]
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 0:
            raise FormatError(f"{meta_path}: num_frames must be a non-negative integer, got {num_frames!r}")
        name = calib[0]
        if name not in self._betas:
            mano_yml = self.root / "calibration" / f"mano_{name}" / "mano.yml"
            data = load_yaml(mano_yml)
            if not isinstance(data, dict) or "betas" not in data:
                raise FormatError(f"{mano_yml}: lacks 'betas'")
            self._betas[name] = as_array(data["betas"], (10,), mano_yml, "betas")
        index = len(self._sequences)
        self._sequences.append((seq, subject, side[0], name))
        for serial in map(str, meta["serials"]):
            if serial not in serials:
                continue
            if serial not in self._K:
                self._K[serial] = _intrinsics(self.root / "calibration" / "intrinsics" / f"{serial}_640x480.yml")
            if not (seq / serial).is_dir():
                raise FileNotFoundError(f"{seq / serial}: camera folder listed in {meta_path} not found")
            self._frames += [(index, serial, f) for f in range(num_frames)]

    def _label_path(self, frame: tuple[int, str, int]) -> Path:
        seq, serial, f = frame
        return self._sequences[seq][0] / serial / f"labels_{f:06d}.npz"

    def _labels(self, frame: tuple[int, str, int]):
        path = self._label_path(frame)
        labels = load_npz(path)
        for key in ("pose_m", "joint_3d", "joint_2d"):
            if key not in labels:
                raise FormatError(f"{path}: lacks '{key}'")
        pose_m = as_array(labels["pose_m"], (1, 51), path, "pose_m")[0]
        joint_3d = as_array(labels["joint_3d"], (1, 21, 3), path, "joint_3d")[0]
        joint_2d = as_array(labels["joint_2d"], (1, 21, 2), path, "joint_2d")[0]
        return path, pose_m, joint_3d, joint_2d

    def _annotated(self, frame) -> bool:
        return not bool((self._labels(frame)[2] == -1).all())

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> dict:
        frame = self._frames[index]
        seq_index, serial, f = frame
        seq, subject, side, calib = self._sequences[seq_index]
        path, pose_m, joint_3d, joint_2d = self._labels(frame)
        image = read_image(seq / serial / f"color_{f:06d}.jpg")
        values = dict(image=image, K=self._K[serial], subject=subject, is_left=side == "left",
                      betas=self._betas[calib])
        if not (joint_3d == -1).all():
            if (joint_3d[:, 2] <= 0).any():
                raise FormatError(f"{path}: joint_3d must lie in front of the camera (z > 0)")
            values.update(keypoints3d=joint_3d, keypoints2d=joint_2d, bbox=bbox_from_keypoints(joint_2d),
                          visibility=in_image(joint_2d, image.shape[2], image.shape[1]))
            if self._mano[side] is not None:
                components, mean = self._mano[side]
                values["pose"] = np.concatenate([pose_m[:3], pose_m[3:48] @ components + mean])
        return make_sample(**values)
