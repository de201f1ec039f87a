"""CMU Panoptic hand keypoint data (Simon et al., CVPR 2017, http://domedb.perception.cs.cmu.edu/handdb.html).

Layouts read (checked against public loaders of the three downloads, e.g. mmpose's Panoptic-hand converter and
several PyTorch loaders of ``hand_labels`` / ``hand143_panopticdb`` found through code search):

* ``hand_labels/`` (manual annotations): ``manual_train/`` and ``manual_test/``, each a flat folder of image and
  annotation pairs ``<name>.jpg`` + ``<name>.json``. The JSON holds ``hand_pts`` ([21][3]: x, y, flag; flag 1 =
  annotated / visible, 0 = not) and ``is_left`` (0/1 or a boolean); other keys (``head_size``, ``is_mpii``, ...)
  are ignored.
* ``hand_labels_synth/``: sub-folders ``synth1`` ... ``synth4`` of the same per-image pairs.
* ``hand143_panopticdb/``: one JSON ``hands_v143_14817.json`` (any ``hands_v*.json``) ``{"root": [entry, ...]}``,
  each entry with ``img_paths`` (relative to the folder, e.g. ``imgs/00000000.jpg``) and ``joint_self``
  ([21][3]: x, y, flag); these have no hand side, so ``is_left`` is absent.
* any other folder holding ``<name>.json`` + ``<name>.jpg`` / ``.png`` pairs directly.

The Panoptic keypoint order (wrist, thumb 1-4, index 1-4, middle, ring, little, each base to tip) is the OpenPose
order of ``handops.hand_tree()``, so keypoints are passed through unchanged. Pixel coordinates are used as written.

Sample keys: ``image`` (the full uncropped image), ``keypoints2d``, ``visibility`` (flag == 1 and inside the
image), ``bbox`` (tight box of all 21 keypoints, flagged or not, per ``handops_models.data.sample``) and
``is_left`` where the file says; no 3-D data, subject or camera exist in these sets.

Indexing is lazy: the constructor lists the folders (and checks that every JSON has its image beside it); a
per-image JSON is read and validated when its sample is requested, and a malformed one raises ``ValueError``
naming the file. The single ``hands_v*.json`` of ``hand143_panopticdb`` is read and validated at construction.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from handops_models.data.formats._common import (
    FormatError, as_array, bbox_from_keypoints, in_image, load_json, make_sample, read_image,
)

__all__ = ["PanopticHands"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class PanopticHands(Dataset):
    """CMU Panoptic hand keypoints.

    Args:
        root: a ``hand_labels``, ``hand_labels_synth`` or ``hand143_panopticdb`` folder (or any folder of
            ``<name>.json`` / ``<name>.jpg`` pairs).
        split: for ``hand_labels``: ``"train"`` (``manual_train``), ``"test"`` (``manual_test``) or None (both);
            for ``hand_labels_synth``: a sub-folder name (``"synth2"``) or None (every ``synth*`` folder); other
            layouts have no split and need None.
    """

    def __init__(self, root: str | Path, split: str | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: Panoptic hand folder not found")
        self.split = split
        self._entries: list[tuple[Path, Path | None, object]] = []  # (image, json or None, inline points)
        combined = sorted(self.root.glob("hands_v*.json"))
        if combined:
            self.layout = "hand143_panopticdb"
            self._no_split(split)
            self._index_combined(combined[0])
            return
        if (self.root / "manual_train").is_dir() or (self.root / "manual_test").is_dir():
            self.layout = "hand_labels"
            folders = {"train": ["manual_train"], "test": ["manual_test"], None: ["manual_train", "manual_test"]}
            if split not in folders:
                raise ValueError(f"split must be 'train', 'test' or None for hand_labels, got {split!r}")
            names = folders[split]
        elif any(p.is_dir() for p in self.root.glob("synth*")):
            self.layout = "hand_labels_synth"
            found = sorted(p.name for p in self.root.glob("synth*") if p.is_dir())
            if split is not None and split not in found:
                raise ValueError(f"split must be one of {found} or None for {self.root}, got {split!r}")
            names = found if split is None else [split]
        else:
            self.layout = "folder"
            self._no_split(split)
            names = ["."]
        for name in names:
            folder = self.root / name
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: folder of split {split!r} not found")
            self._index_folder(folder)
        if not self._entries:
            raise FileNotFoundError(f"{self.root}: no Panoptic hand annotations (<name>.json) found in {names}")

    def _no_split(self, split):
        if split is not None:
            raise ValueError(f"{self.root} ({self.layout}) has no splits; pass split=None, got {split!r}")

    def _index_folder(self, folder: Path):
        files = {p.name: p for p in folder.iterdir() if p.is_file()}
        for name in sorted(files):
            if not name.endswith(".json"):
                continue
            stem = name[:-5]
            image = next((files[stem + s] for s in _IMAGE_SUFFIXES if stem + s in files), None)
            if image is None:
                raise FileNotFoundError(f"{files[name]}: its image {folder / (stem + '.jpg')} not found")
            self._entries.append((image, files[name], None))

    def _index_combined(self, path: Path):
        data = load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("root"), list):
            raise FormatError(f"{path}: must be an object with a 'root' list of annotations")
        for i, entry in enumerate(data["root"]):
            where = f"{path}: root[{i}]"
            if not isinstance(entry, dict) or "img_paths" not in entry or "joint_self" not in entry:
                raise FormatError(f"{where} must be an object with 'img_paths' and 'joint_self'")
            points = as_array(entry["joint_self"], (21, 3), where, "joint_self")
            image = self.root / str(entry["img_paths"])
            if not image.is_file():
                raise FileNotFoundError(f"{where}: image {image} not found")
            self._entries.append((image, None, points))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> dict:
        image_path, json_path, points = self._entries[index]
        is_left = None
        if json_path is not None:
            ann = load_json(json_path)
            if not isinstance(ann, dict) or "hand_pts" not in ann:
                raise FormatError(f"{json_path}: must be an object with 'hand_pts'")
            points = as_array(ann["hand_pts"], (21, 3), json_path, "hand_pts")
            if "is_left" in ann:
                flag = ann["is_left"]
                if isinstance(flag, str) or flag not in (0, 1):
                    raise FormatError(f"{json_path}: is_left must be 0, 1, true or false, got {flag!r}")
                is_left = bool(flag)
        image = read_image(image_path)
        kp2d = points[:, :2]
        visible = (points[:, 2] == 1) & in_image(kp2d, image.shape[2], image.shape[1])
        return make_sample(image=image, keypoints2d=kp2d, visibility=visible, bbox=bbox_from_keypoints(kp2d),
                           is_left=is_left)
