"""HUMBI hands (Yu et al., CVPR 2020, https://humbi-data.net/).

Layout read (checked against the official MATLAB toolkit github.com/zhixuany/HUMBI: ``README.md`` "Hand" and
"Camera Calibration", ``hand/config.m``, ``hand/read_hand_recon.m``, ``hand/extractCameraParameters.m``,
``hand/reproject.m``, ``hand/visualize.m``)::

    <root>/subject_<n>/hand/intrinsic.txt                  per-camera K
    <root>/subject_<n>/hand/extrinsic.txt                  per-camera centre C and rotation R
    <root>/subject_<n>/hand/<frame %08d>/reconstruction/keypoints_<l|r>.txt    21 x 3 world keypoints
    <root>/subject_<n>/hand/<frame %08d>/reconstruction/vertices_<l|r>.txt     778 x 3 world MANO vertices
    <root>/subject_<n>/hand/<frame %08d>/reconstruction/mano_params_<l|r>.txt  36 MANO parameters
    <root>/subject_<n>/hand/<frame %08d>/image_cropped/<left|right>/list.txt   rows: cam, xmin, xmax, ymin, ymax
    <root>/subject_<n>/hand/<frame %08d>/image_cropped/<left|right>/image%07d.png  crops (250 x 250), by camera

Calibration files (README): three header lines (ignored), then per camera a line ``0 <camera id>`` followed by
the 3 x 3 K (intrinsic.txt) or by the 1 x 3 camera centre C and the 3 x 3 rotation R (extrinsic.txt). The toolkit
projects with ``M = K R [I | -C]``, so camera coordinates are ``X_cam = R (X_world - C)``. A crop's box is on the
original 1920 x 1080 image; the toolkit maps an original pixel p to the crop by ``(p - [xmin, ymin]) / [sx, sy]``
with ``sx = (xmax - xmin + 1) / crop width`` (likewise sy), which this loader folds into the crop's ``K``.

One sample per (subject, frame, side, camera listed in that side's ``list.txt``). ``keypoints3d`` and
``vertices`` are the reconstruction in the camera's coordinates; ``keypoints2d`` their projection with the crop's
``K``; ``visibility`` marks keypoints inside the crop (HUMBI has no occlusion labels); ``bbox`` the keypoints'
tight box; ``subject`` the number n of ``subject_<n>``; ``is_left`` the side. The README says the 21 keypoints
follow OpenPose's hand keypoint figure, the order of ``handops.hand_tree()``: no reordering.

Assumptions (the toolkit does not state them):
* world units are metres (``world_scale`` converts otherwise);
* ``mano_params`` (README: values 1-3 translation, 4-26 pose = 3 global rotation + the first 20 PCA components,
  27-36 shape) use the official MANO loader's default ``flat_hand_mean=False``: hand axis-angle =
  ``coeffs @ hands_components[:20] + hands_mean`` (``flat_hand_mean=True`` drops the mean); the global rotation
  is in world axes and becomes ``R @ rot`` in the camera. ``pose`` (full axis-angle, flat-hand-mean semantics,
  camera axes) therefore needs the side's MANO model (``mano_right`` / ``mano_left``); without it ``pose`` is
  absent. ``betas`` are values 27-36 as written.

The calibration files and every ``list.txt`` are read and validated at construction; reconstructions and images
when a sample is requested (a missing ``vertices`` / ``mano_params`` file leaves its keys out; a missing keypoint
file or image raises). HUMBI has no official split; ``subjects`` selects subject numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from handops.geometry import axis_angle_to_matrix, matrix_to_axis_angle, project
from handops_models.data.formats._common import (
    FormatError, bbox_from_keypoints, check_intrinsics, in_image, load_text_matrix, make_sample, mano_arrays, read_image,
    require_file,
)

__all__ = ["HUMBIHands", "read_humbi_calibration"]

_SIDES = {"left": "l", "right": "r"}


def _calibration_blocks(path: Path, rows_per_camera: int) -> dict[int, np.ndarray]:
    """{camera id: [rows_per_camera - 1, 3]} from a HUMBI intrinsic.txt (4 rows) / extrinsic.txt (5 rows)."""
    require_file(path, "camera calibration file")
    with open(path, "r", encoding="utf-8") as f:
        lines = [line.replace(",", " ").split() for line in f]
    lines = [fields for fields in lines[3:] if fields]  # three header lines
    if not lines or len(lines) % rows_per_camera:
        raise FormatError(f"{path}: after the 3 header lines, expected blocks of {rows_per_camera} lines (a "
                          f"'0 <camera id>' line and {rows_per_camera - 1} rows of 3 numbers), got {len(lines)} lines")
    cameras = {}
    for start in range(0, len(lines), rows_per_camera):
        head = lines[start]
        try:
            head_values = [float(x) for x in head]
            rows = [[float(x) for x in r] for r in lines[start + 1:start + rows_per_camera]]
        except ValueError as e:
            raise FormatError(f"{path}: camera block at data line {start + 1} is not numeric") from e
        if len(head_values) != 2 or head_values[0] != 0 or head_values[1] != int(head_values[1]):
            raise FormatError(f"{path}: data line {start + 1} must be '0 <camera id>', got {' '.join(head)!r}")
        if any(len(r) != 3 for r in rows):
            raise FormatError(f"{path}: camera {int(head_values[1])}: rows must hold 3 numbers each")
        cam = int(head_values[1])
        if cam in cameras:
            raise FormatError(f"{path}: camera {cam} appears twice")
        cameras[cam] = np.asarray(rows, dtype=np.float64)
    return cameras


def read_humbi_calibration(hand_dir: Path) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{camera id: (K [3, 3], R [3, 3], C [3])} of one subject's ``hand/`` folder."""
    intr = _calibration_blocks(Path(hand_dir) / "intrinsic.txt", 4)
    extr = _calibration_blocks(Path(hand_dir) / "extrinsic.txt", 5)
    if set(intr) != set(extr):
        raise FormatError(f"{hand_dir}: intrinsic.txt and extrinsic.txt list different cameras "
                          f"({sorted(set(intr) ^ set(extr))} in only one)")
    for c, K in intr.items():
        check_intrinsics(K, Path(hand_dir) / "intrinsic.txt", f"camera {c}: K")
    return {c: (intr[c], extr[c][1:4], extr[c][0]) for c in intr}


class HUMBIHands(Dataset):
    """HUMBI hand crops with their reconstructions.

    Args:
        root: the folder holding the ``subject_<n>`` folders (a HUMBI hand bundle, e.g. ``Hand_81_140``).
        subjects: subject numbers to keep (None: all found).
        sides: which hands, a subset of ``("left", "right")``.
        mano_right, mano_left: MANO models (``ManoModel`` or path) for the ``pose`` key; None leaves it out.
        flat_hand_mean: True if the files' PCA pose excludes MANO's mean pose (assumed False, see above).
        world_scale: metres per world unit.
    """

    def __init__(self, root: str | Path, subjects=None, sides=("left", "right"), mano_right=None, mano_left=None,
                 flat_hand_mean: bool = False, world_scale: float = 1.0):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: HUMBI folder not found")
        if not set(sides) <= set(_SIDES) or not sides:
            raise ValueError(f"sides must be a non-empty subset of ('left', 'right'), got {sides!r}")
        self.flat_hand_mean, self.world_scale = flat_hand_mean, float(world_scale)
        self._mano = {"right": None if mano_right is None else mano_arrays(mano_right, "mano_right"),
                      "left": None if mano_left is None else mano_arrays(mano_left, "mano_left")}
        found = {}
        for p in self.root.iterdir():
            m = re.fullmatch(r"subject_(\d+)", p.name)
            if m and p.is_dir():
                found[int(m.group(1))] = p
        if subjects is not None:
            missing = sorted(set(subjects) - set(found))
            if missing:
                raise FileNotFoundError(f"{self.root}: subject folders {['subject_%d' % s for s in missing]} not found")
            found = {s: found[s] for s in subjects}
        if not found:
            raise FileNotFoundError(f"{self.root}: no subject_<n> folders found")
        self._calib: dict[int, dict] = {}
        self._entries: list[tuple[int, Path, str, int, np.ndarray]] = []  # subject, frame dir, side, cam, box
        for subject in sorted(found):
            hand = found[subject] / "hand"
            if not hand.is_dir():
                raise FileNotFoundError(f"{hand}: hand folder not found")
            calib = read_humbi_calibration(hand)
            self._calib[subject] = calib
            for frame in sorted(p for p in hand.iterdir() if p.is_dir() and re.fullmatch(r"\d{8}", p.name)):
                for side in sides:
                    listing = frame / "image_cropped" / side / "list.txt"
                    if not listing.is_file():
                        continue  # this hand is seen by no camera in this frame
                    boxes = load_text_matrix(listing, "crop list")
                    if boxes.shape[1] != 5:
                        raise FormatError(f"{listing}: rows must be 'cam xmin xmax ymin ymax' (5 values), "
                                          f"got {boxes.shape[1]}")
                    for row in boxes:
                        cam = int(row[0])
                        if cam != row[0] or cam not in calib:
                            raise FormatError(f"{listing}: camera {row[0]:g} is not in {hand}/intrinsic.txt")
                        if not (row[2] > row[1] and row[4] > row[3]):
                            raise FormatError(f"{listing}: camera {cam}: box must have xmax > xmin and ymax > ymin")
                        self._entries.append((subject, frame, side, cam, row[1:]))
        if not self._entries:
            raise FileNotFoundError(f"{self.root}: no image_cropped/<side>/list.txt found for sides {tuple(sides)}")

    def __len__(self) -> int:
        return len(self._entries)

    def _read(self, path: Path, rows: int | None, what: str) -> np.ndarray:
        a = load_text_matrix(path, what)
        if a.shape[1] != 3 or (rows is not None and a.shape[0] != rows):
            wanted = f"{rows} x 3" if rows is not None else "V x 3"
            raise FormatError(f"{path}: {what} must be {wanted}, got {a.shape[0]} x {a.shape[1]}")
        return a

    def __getitem__(self, index: int) -> dict:
        subject, frame, side, cam, (xmin, xmax, ymin, ymax) = self._entries[index]
        s = _SIDES[side]
        recon = frame / "reconstruction"
        K, R, C = self._calib[subject][cam]
        image = read_image(frame / "image_cropped" / side / f"image{cam:07d}.png")
        height, width = image.shape[1:]
        sx, sy = (xmax - xmin + 1) / width, (ymax - ymin + 1) / height
        crop_K = np.array([[1 / sx, 0, -xmin / sx], [0, 1 / sy, -ymin / sy], [0, 0, 1]]) @ K

        def to_camera(points_world):
            return (points_world - C) @ R.T * self.world_scale

        kp3d = to_camera(self._read(recon / f"keypoints_{s}.txt", 21, "keypoints"))
        if (kp3d[:, 2] <= 0).any():
            raise FormatError(f"{recon / f'keypoints_{s}.txt'}: keypoints are behind camera {cam}")
        kp2d = project(torch.as_tensor(kp3d, dtype=torch.float64), torch.as_tensor(crop_K, dtype=torch.float64)).numpy()
        values = dict(image=image, K=crop_K, keypoints3d=kp3d, keypoints2d=kp2d, bbox=bbox_from_keypoints(kp2d),
                      visibility=in_image(kp2d, width, height), subject=subject, is_left=side == "left")
        vertices = recon / f"vertices_{s}.txt"
        if vertices.is_file():
            values["vertices"] = to_camera(self._read(vertices, None, "vertices"))
        params_path = recon / f"mano_params_{s}.txt"
        if params_path.is_file():
            params = self._params(params_path)
            values["betas"] = params[26:36]
            if self._mano[side] is not None:
                components, mean = self._mano[side]
                hand = params[6:26] @ components[:20] + (0 if self.flat_hand_mean else mean)
                # the global orientation in this camera's frame: R_root' = R R_root
                root_world = axis_angle_to_matrix(torch.as_tensor(params[3:6], dtype=torch.float64))
                root = matrix_to_axis_angle(torch.as_tensor(R, dtype=torch.float64) @ root_world).numpy()
                values["pose"] = np.concatenate([root, hand])
        return make_sample(**values)

    @staticmethod
    def _params(path: Path) -> np.ndarray:
        """The 36 numbers of a mano_params file, whatever its line layout (one per line or several)."""
        require_file(path, "MANO parameters")
        with open(path, "r", encoding="utf-8") as f:
            fields = f.read().replace(",", " ").split()
        try:
            values = np.array([float(x) for x in fields])
        except ValueError as e:
            raise FormatError(f"{path}: MANO parameters must be numbers") from e
        if values.shape != (36,):
            raise FormatError(f"{path}: MANO parameters must be 36 values (3 translation, 3 rotation, 20 PCA, "
                              f"10 shape), got {values.size}")
        if not np.isfinite(values).all():
            raise FormatError(f"{path}: MANO parameters hold NaN or Inf")
        return values
