"""MHPHands (Large-scale Multiview 3D Hand Pose dataset) on a fixture written here in the dataset's own layout:
two sequences, three frames, every one of the 4 webcams, the joints of a known hand (the synthetic MANO hand, whose
joints are in the OpenPose order) written in the files' order and names, and calibration pickles. Each test names
the plausible wrong implementation it rules out."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

import handops
from handops.mano import synthetic_model
from handops_models.data import HandCrop, check_sample
from handops_models.data.formats import MHPHands
from handops_models.data.formats._common import read_image
from handops_models.data.formats.mhp import MHP_DIST_COEFFS, MHP_K, mhp_split, undistort_image

WIDTH, HEIGHT = 640, 480
FX, FY, CX, CY = 614.878, 615.479, 313.219, 231.288  # the authors' camera matrix, written out independently
K1, K2, P1, P2, K3 = 0.092701, -0.175877, -0.0035687, -0.00302299, 0.0
ALL_KEYS = ("image", "keypoints2d", "visibility", "keypoints3d", "K", "bbox")

# The joint file's line order (the authors' utils script writes its 2-D files in this order; the 3-D files match).
FILE_ORDER = ["F4_KNU1_A", "F4_KNU1_B", "F4_KNU2_A", "F4_KNU3_A", "F3_KNU1_A", "F3_KNU1_B", "F3_KNU2_A", "F3_KNU3_A",
              "F1_KNU1_A", "F1_KNU1_B", "F1_KNU2_A", "F1_KNU3_A", "F2_KNU1_A", "F2_KNU1_B", "F2_KNU2_A", "F2_KNU3_A",
              "TH_KNU1_A", "TH_KNU1_B", "TH_KNU2_A", "TH_KNU3_A", "PALM_POSITION"]
# The names' meaning, stated here from the naming (not taken from the loader): NYU finger numbering F1 = little ...
# F4 = index; per finger base -> tip: KNU1_B, KNU1_A, KNU2_A, KNU3_A; OpenPose finger bases 1, 5, 9, 13, 17.
_FINGER_BASE = {"TH": 1, "F4": 5, "F3": 9, "F2": 13, "F1": 17}
_ALONG = {"KNU1_B": 0, "KNU1_A": 1, "KNU2_A": 2, "KNU3_A": 3}


def openpose_index(name: str) -> int:
    if name == "PALM_POSITION":
        return 0
    finger, joint = name.split("_", 1)
    return _FINGER_BASE[finger] + _ALONG[joint]


def rodrigues(rvec) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (unit-axis form, written here independently of handops.geometry)."""
    rvec = np.asarray(rvec, dtype=np.float64).reshape(3)
    theta = np.linalg.norm(rvec)
    k = rvec / theta
    S = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * S + (1 - np.cos(theta)) * S @ S


def pinhole(points) -> np.ndarray:
    return np.stack([FX * points[:, 0] / points[:, 2] + CX, FY * points[:, 1] / points[:, 2] + CY], 1)


def lens(points) -> np.ndarray:
    """OpenCV's projectPoints with distortion, for camera-frame points (written here independently)."""
    x, y = points[:, 0] / points[:, 2], points[:, 1] / points[:, 2]
    r2 = x * x + y * y
    radial = 1 + K1 * r2 + K2 * r2 ** 2 + K3 * r2 ** 3
    xd = x * radial + 2 * P1 * x * y + P2 * (r2 + 2 * x * x)
    yd = y * radial + P1 * (r2 + 2 * y * y) + 2 * P2 * x * y
    return np.stack([FX * xd + CX, FY * yd + CY], 1)


def known_hand(seed: int) -> np.ndarray:
    """OpenPose-order joints [21, 3] (metres, hand frame) of the synthetic right hand, nearly flat."""
    rng = np.random.default_rng(seed)
    layer = handops.ManoLayer(synthetic_model(0), use_pca=False, flat_hand_mean=True)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))[None]  # noqa: E731
    out = layer(t(np.zeros(10)), t(rng.normal(scale=0.3, size=3)), t(rng.normal(scale=0.05, size=45)))
    return out.joints[0].numpy()


def _dump_py2_array(path, array):
    """A numpy array pickled as Python 2 wrote it (numpy.core globals, the data a byte str), like the download's."""
    P = pickle
    data = np.ascontiguousarray(array, dtype="<f8").tobytes()

    def string(b):
        if len(b) < 256:
            return P.SHORT_BINSTRING + bytes([len(b)]) + b
        return P.BINSTRING + len(b).to_bytes(4, "little") + b

    def small(n):
        return P.BININT1 + bytes([n])

    shape = b"".join(small(n) for n in array.shape) + {1: P.TUPLE1, 2: P.TUPLE2}[array.ndim]
    minus1 = P.BININT + (-1).to_bytes(4, "little", signed=True)
    stream = (P.PROTO + b"\x02" + P.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + P.GLOBAL + b"numpy\nndarray\n"
              + small(0) + P.TUPLE1 + string(b"b") + P.TUPLE3 + P.REDUCE
              + P.MARK + small(1) + shape
              + P.GLOBAL + b"numpy\ndtype\n" + string(b"f8") + small(0) + small(1) + P.TUPLE3 + P.REDUCE
              + P.MARK + small(3) + string(b"<") + P.NONE + P.NONE + P.NONE + minus1 + minus1 + small(0) + P.TUPLE
              + P.BUILD + P.NEWFALSE + string(data) + P.TUPLE + P.BUILD + P.STOP)
    path.write_bytes(stream)


# (sequence, frame) -> hand seed; view 4 of (7, 5) puts the hand partly outside the image
FRAMES = {(3, 0): 1, (3, 1): 2, (7, 5): 3}
_CENTRES = {1: (-30.0, 10.0, 420.0), 2: (20.0, -25.0, 450.0), 3: (0.0, 30.0, 480.0), 4: (15.0, 0.0, 440.0)}


def _image(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = rng.integers(40, 200, size=3)
    return np.clip(base + 0.1 * xx[..., None] - 0.1 * yy[..., None], 0, 255).astype(np.uint8)


def write_mhp(root):
    """The fixture in MHP's layout; returns {(sequence, frame, view): expected values in OpenPose order}."""
    rng = np.random.default_rng(0)
    calib = {}
    for s in sorted({s for s, _ in FRAMES}):
        for v in range(1, 5):
            rvec = rng.normal(size=(3, 1))
            rvec *= rng.uniform(0.3, 2.5) / np.linalg.norm(rvec)
            calib[(s, v)] = rvec
    expected, tvecs = {}, {}
    for (s, f), seed in FRAMES.items():
        joints = known_hand(seed)
        world = 1000 * (joints - joints.mean(0)) + [10.0 * s, 200.0 + f, -5.0]  # Leap frame, millimetres
        folder = root / "annotated_frames" / f"data_{s}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [name + "".join(f" {float(c)!r}" for c in world[openpose_index(name)]) for name in FILE_ORDER]
        lines.append("PALM_NORMAL 0.1 -0.9 0.2")
        (folder / f"{f}_joints.txt").write_text("\n".join(lines) + "\n")
        for v in range(1, 5):
            rvec = calib[(s, v)]
            R = rodrigues(rvec)
            centre = np.array((250.0, 0.0, 450.0) if (s, f, v) == (7, 5, 4) else _CENTRES[v])
            if (s, v) not in tvecs:  # the calibration is per sequence and webcam: placed by its first frame
                tvecs[(s, v)] = tvec = (centre - R @ world.mean(0)).reshape(3, 1)
                cam_dir = root / "calibrations" / f"data_{s}" / f"webcam_{v}"
                cam_dir.mkdir(parents=True)
                if v == 1:
                    _dump_py2_array(cam_dir / "rvec.pkl", rvec)
                    _dump_py2_array(cam_dir / "tvec.pkl", tvec)
                else:
                    (cam_dir / "rvec.pkl").write_bytes(pickle.dumps(rvec, protocol=2))
                    (cam_dir / "tvec.pkl").write_bytes(pickle.dumps(tvec, protocol=2))
            tvec = tvecs[(s, v)]
            camera_mm = world @ R.T + tvec.reshape(3)
            Image.fromarray(_image(100 * s + 10 * f + v)).save(folder / f"{f}_webcam_{v}.jpg", quality=95)
            distorted = lens(camera_mm)
            proj = root / "projections_2d" / f"data_{s}"
            proj.mkdir(parents=True, exist_ok=True)
            (proj / f"{f}_jointsCam_{v}.txt").write_text("".join(
                name + "".join(f" {float(c)!r}" for c in distorted[openpose_index(name)]) + "\n"
                for name in FILE_ORDER))
            expected[(s, f, v)] = {"camera": camera_mm / 1000, "distorted": distorted, "rvec": rvec}
    return expected


@pytest.fixture(scope="module")
def mhp(tmp_path_factory):
    """Written once for the tests that only read it."""
    root = tmp_path_factory.mktemp("mhp")
    return root, write_mhp(root)


@pytest.fixture
def mhp_to_break(tmp_path):
    return tmp_path, write_mhp(tmp_path)


def test_mhp_values_every_view(mhp):
    """Rules out: world (Leap) coordinates not moved to the camera, R(rvec) transposed, tvec's millimetres kept,
    K transposed or fx/fy swapped, the dataset's joint order not remapped, visibility ignoring the image border."""
    root, expected = mhp
    ds = MHPHands(root)
    assert len(ds) == 12 and sorted(ds._entries) == sorted(expected)
    assert {v for _, _, v in ds._entries} == {1, 2, 3, 4}
    outside = 0
    for i in range(len(ds)):
        sample = ds[i]
        ref = expected[ds._entries[i]]
        check_sample(sample, required=ALL_KEYS)
        assert "subject" not in sample and "is_left" not in sample
        assert sample["image"].shape == (3, HEIGHT, WIDTH)
        np.testing.assert_allclose(sample["keypoints3d"].double().numpy(), ref["camera"], atol=1e-6)
        np.testing.assert_allclose(sample["K"].double().numpy(), [[FX, 0, CX], [0, FY, CY], [0, 0, 1]], atol=1e-4)
        # keypoints2d is the pinhole projection of keypoints3d with K (the image is undistorted to that camera)
        np.testing.assert_allclose(sample["keypoints2d"].double().numpy(), pinhole(ref["camera"]), atol=2e-3)
        kp = pinhole(ref["camera"])
        inside = (kp[:, 0] >= -0.5) & (kp[:, 0] < WIDTH - 0.5) & (kp[:, 1] >= -0.5) & (kp[:, 1] < HEIGHT - 0.5)
        assert sample["visibility"].numpy().tolist() == inside.tolist()
        outside += int((~inside).sum())
        np.testing.assert_allclose(sample["bbox"].double().numpy(),
                                   [kp[:, 0].min(), kp[:, 1].min(), kp[:, 0].max(), kp[:, 1].max()], atol=2e-3)
    assert 0 < outside < 21  # the one view with the hand half outside


def test_mhp_keypoint_order_follows_hand_tree(mhp):
    """Each finger chain of hand_tree() (wrist 0, thumb 1-4, index 5-8, middle 9-12, ring 13-16, little 17-20, base
    to tip) holds the known hand's joints. Rules out: file order passed through, KNU1_A / KNU1_B (base and PIP)
    swapped, fingers numbered thumb-first (F1 = index), chains reversed (tip first)."""
    root, expected = mhp
    ds = MHPHands(root, views=(2,))
    tree = handops.hand_tree()
    assert list(tree.parents) == [-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19]
    for i in range(len(ds)):
        s, f, v = ds._entries[i]
        kp3d = ds[i]["keypoints3d"].double().numpy()
        hand = known_hand(FRAMES[(s, f)])
        R = rodrigues(expected[(s, f, v)]["rvec"])
        # the camera-frame points are a rigid motion of the known hand in OpenPose order: same pairwise distances
        np.testing.assert_allclose(np.linalg.norm(kp3d[:, None] - kp3d[None], axis=-1),
                                   np.linalg.norm(hand[:, None] - hand[None], axis=-1), atol=1e-6)
        np.testing.assert_allclose((kp3d - kp3d.mean(0)) @ R, hand - hand.mean(0), atol=1e-6)
        # anatomy of a nearly flat hand: along each finger, away from keypoint 0 and from its own base
        for base in (1, 5, 9, 13, 17):
            chain = [base, base + 1, base + 2, base + 3]
            assert [tree.parents[c] for c in chain] == [0, base, base + 1, base + 2]
            from_root = np.linalg.norm(kp3d[chain] - kp3d[0], axis=1)
            assert np.all(np.diff(from_root) > 0), (base, from_root)
            from_base = np.linalg.norm(kp3d[chain[1:]] - kp3d[base], axis=1)
            assert np.all(np.diff(from_base) > 0)
        # thumb on the index side: the thumb tip is nearer the index base than the little finger's base is
        assert np.linalg.norm(kp3d[4] - kp3d[5]) < np.linalg.norm(kp3d[4] - kp3d[17])
        # neighbouring finger bases are neighbours: index-middle-ring-little in a row
        bases = kp3d[[5, 9, 13, 17]]
        gaps = np.linalg.norm(np.diff(bases, axis=0), axis=1)
        assert np.linalg.norm(bases[0] - bases[3]) > gaps.max()


def test_mhp_undistort_moves_lens_pixels_to_the_pinhole_camera():
    """Blobs drawn where the lens puts a point end up at its pinhole pixel after undistort_image. Rules out: the
    image left distorted, the distortion applied the wrong way (blobs would move 2x further out), x and y swapped."""
    targets = np.array([[40.0, 35.0], [600.0, 40.0], [45.0, 445.0], [598.0, 440.0], [320.0, 240.0], [160.0, 400.0]])
    rays = np.stack([(targets[:, 0] - CX) / FX, (targets[:, 1] - CY) / FY, np.ones(len(targets))], 1)
    seen = lens(rays)
    assert np.linalg.norm(seen - targets, axis=1).max() > 3  # the test has power at the corners
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    blobs = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0 ** 2)) for x, y in seen)
    image = torch.as_tensor(np.broadcast_to(blobs, (3, HEIGHT, WIDTH)).copy(), dtype=torch.float32)
    out = undistort_image(image, MHP_K, MHP_DIST_COEFFS)[0].double().numpy()
    for x, y in targets:
        x0, y0 = int(round(x)), int(round(y))
        win = out[y0 - 8:y0 + 9, x0 - 8:x0 + 9]
        wy, wx = np.mgrid[y0 - 8:y0 + 9, x0 - 8:x0 + 9]
        centroid = np.array([(win * wx).sum(), (win * wy).sum()]) / win.sum()
        np.testing.assert_allclose(centroid, [x, y], atol=0.15)


def test_mhp_loader_image_undistorted_or_as_stored(mhp):
    """undistort=True resamples the stored JPEG with undistort_image; undistort=False keeps it and gives the
    distorted keypoints, which equal the dataset's own projections_2d files. Rules out: the 2-D keypoints of the
    stored image computed without the lens (or with the distortion's p1 / p2 exchanged)."""
    root, expected = mhp
    plain, lensed = MHPHands(root), MHPHands(root, undistort=False)
    for i in (0, 5, 11):
        raw = read_image(plain.image_path(i))
        torch.testing.assert_close(plain[i]["image"], undistort_image(raw, MHP_K, MHP_DIST_COEFFS))
        sample = lensed[i]
        check_sample(sample, required=ALL_KEYS)
        torch.testing.assert_close(sample["image"], raw)
        s, f, v = lensed._entries[i]
        path = root / "projections_2d" / f"data_{s}" / f"{f}_jointsCam_{v}.txt"
        written = np.array([line.split()[1:] for line in path.read_text().splitlines()], dtype=np.float64)
        from_file = np.empty((21, 2))
        for line_no, name in enumerate(FILE_ORDER):
            from_file[openpose_index(name)] = written[line_no]
        np.testing.assert_allclose(sample["keypoints2d"].double().numpy(), from_file, atol=2e-3)
        assert np.abs(from_file - pinhole(expected[(s, f, v)]["camera"])).max() > 0.05  # the lens matters here


def test_mhp_hand_crop_transform(mhp):
    """transform=HandCrop() gives the thesis' square crop of 2.2 times the hand's box, projection kept."""
    root, _ = mhp
    ds = MHPHands(root, transform=HandCrop(96))
    sample = ds[0]
    check_sample(sample, required=ALL_KEYS)
    assert sample["image"].shape == (3, 96, 96)
    kp = sample["keypoints2d"].double().numpy()
    assert max(np.ptp(kp[:, 0]), np.ptp(kp[:, 1])) == pytest.approx(96 / 2.2, rel=1e-4)
    proj = handops.geometry.project(sample["keypoints3d"].double(), sample["K"].double()).numpy()
    np.testing.assert_allclose(kp, proj, atol=1e-3)


def _synthetic_index():
    """The full dataset's size: 21 sequences, 20,690 frames, 4 webcams = 82,760 images (no files)."""
    frames = [985] * 20 + [990]
    index = [(s, f, v) for s, n in enumerate(frames, 1) for f in range(n) for v in (1, 2, 3, 4)]
    assert len(index) == 82760
    return index


def test_mhp_splits_have_the_thesis_sizes():
    """Chapter 4: 60,000 / 10,000 / 12,760; Chapters 3 and 5: 70 / 15 / 15 %. Disjoint, covering, seeded and
    independent of the listing order. Rules out: whole sequences as the unit (sizes unreachable), overlapping or
    leaky splits, an unseeded or listing-order-dependent permutation."""
    index = _synthetic_index()
    keys = np.asarray(index)
    ch4 = mhp_split(index, "ch4", seed=0)
    assert [len(ch4[k]) for k in ("train", "val", "test")] == [60000, 10000, 12760]
    every = np.concatenate(list(ch4.values()))
    assert len(np.unique(every)) == len(index) == len(every)
    assert len({s for s, _, _ in keys[ch4["test"]].tolist()}) == 21  # by image: every sequence is in every split
    again = mhp_split(index, "ch4", seed=0)
    assert all(np.array_equal(ch4[k], again[k]) for k in ch4)
    other = mhp_split(index, "ch4", seed=1)
    assert not np.array_equal(ch4["test"], other["test"])
    shuffled = [index[i] for i in np.random.default_rng(5).permutation(len(index))]
    moved = mhp_split(shuffled, "ch4", seed=0)
    as_set = lambda idx, pos: {tuple(idx[i]) for i in pos}  # noqa: E731
    assert as_set(shuffled, moved["val"]) == as_set(index, ch4["val"])

    ch3, ch5 = mhp_split(index, "ch3"), mhp_split(index, "ch5")
    assert [len(ch3[k]) for k in ("train", "val", "test")] == [57932, 12414, 12414]
    assert all(np.array_equal(ch3[k], ch5[k]) for k in ch3)
    assert len(np.unique(np.concatenate(list(ch3.values())))) == 82760


def test_mhp_frame_unit_keeps_the_views_together():
    index = _synthetic_index()
    keys = np.asarray(index)
    for protocol, sizes in (("ch4", (60000, 10000, 12760)), ("ch3", (57932, 12414, 12414))):
        parts = mhp_split(index, protocol, unit="frame")
        got = [len(parts[k]) for k in ("train", "val", "test")]
        assert sum(got) == 82760 and all(abs(g - want) < 4 for g, want in zip(got, sizes))
        if protocol == "ch4":
            assert got == list(sizes)
        owner = {}
        for name, pos in parts.items():
            for s, f, _ in keys[pos].tolist():
                assert owner.setdefault((s, f), name) == name
        assert len(owner) == 20690
    with pytest.raises(ValueError, match="60000 training and 10000 validation images"):
        mhp_split(index[:70000], "ch4")
    with pytest.raises(ValueError, match="protocol must be one of"):
        mhp_split(index, "ch6")


def test_mhp_loader_splits(mhp):
    root, _ = mhp
    parts = {k: MHPHands(root, "ch3", k, seed=3) for k in ("train", "val", "test")}
    assert [len(p) for p in parts.values()] == [8, 2, 2]
    assert sorted(e for p in parts.values() for e in p._entries) == sorted(MHPHands(root)._entries)
    two_views = MHPHands(root, "ch3", "train", seed=3, views=(1, 2))
    assert set(two_views._entries) == {e for e in parts["train"]._entries if e[2] in (1, 2)}
    assert set(MHPHands(root, sequences=[7])._entries) == {(7, 5, v) for v in (1, 2, 3, 4)}
    with pytest.raises(ValueError, match="only 12 images were found"):
        MHPHands(root, "ch4", "test")
    with pytest.raises(ValueError, match="needs a protocol"):
        MHPHands(root, split="train")
    with pytest.raises(FileNotFoundError, match="data_9"):
        MHPHands(root, sequences=[9])


def test_mhp_errors_name_the_file(mhp_to_break, tmp_path_factory):
    """Missing and malformed files raise errors that name the file; a calibration pickle naming anything but numpy
    arrays is refused before it runs."""
    root, _ = mhp_to_break
    frames = root / "annotated_frames" / "data_3"
    joints = frames / "1_joints.txt"
    good = joints.read_text()
    lines = good.splitlines()

    joints.write_text("\n".join(lines[:5] + ["F3_KNU1_A 1.0 2.0"] + lines[6:]) + "\n")
    ds = MHPHands(root, sequences=[3], views=(1,))
    with pytest.raises(ValueError, match=re.escape(f"{joints}: line 6 must be '<name> x y z'")):
        ds[1]
    joints.write_text("\n".join(lines[:20]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{joints}: must hold 21 joint lines")):
        ds[1]
    joints.write_text("\n".join([lines[1], lines[0]] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{joints}: joint line 1 is F4_KNU1_B, expected F4_KNU1_A")):
        ds[1]
    joints.write_text("\n".join(lines[:14] + ["F2_KNU2_A nan 1 2"] + lines[15:]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{joints}: joints holds NaN or Inf")):
        ds[1]
    joints.write_text(good)
    reference = ds[1]["keypoints3d"]
    joints.write_text("\n".join(["J%d %s" % (i, " ".join(line.split()[1:])) for i, line in enumerate(lines)]) + "\n")
    torch.testing.assert_close(ds[1]["keypoints3d"], reference)  # other labels: read by position, like the toolkit
    joints.write_text(good)

    image = frames / "0_webcam_1.jpg"
    image.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=re.escape(f"{image}: not a readable image")):
        ds[0]
    image.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{image}: image not found")):
        ds[0]

    joints.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{joints}: joint file of {frames / '1_webcam_1.jpg'}")):
        MHPHands(root)
    joints.write_text(good)

    cam = root / "calibrations" / "data_7" / "webcam_2"
    (cam / "rvec.pkl").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{cam / 'rvec.pkl'}: rvec not found")):
        MHPHands(root)
    assert len(MHPHands(root, views=(1, 3, 4))) == 8  # a view left out needs no calibration (one image deleted)
    (cam / "rvec.pkl").write_bytes(pickle.dumps(np.zeros(4), protocol=2))
    with pytest.raises(ValueError, match=re.escape(f"{cam / 'rvec.pkl'}: rvec must hold 3 values")):
        MHPHands(root)
    (cam / "rvec.pkl").write_bytes(pickle.dumps(np.zeros(3), protocol=2)[:-6])
    with pytest.raises(ValueError, match=re.escape(f"{cam / 'rvec.pkl'}: not a readable pickled numpy array")):
        MHPHands(root)
    marker = tmp_path_factory.mktemp("evil") / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (cam / "rvec.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError, match=re.escape(f"{cam / 'rvec.pkl'}: refused to load global 'io.open'")):
        MHPHands(root)
    assert not marker.exists()
    (cam / "rvec.pkl").write_bytes(pickle.dumps(np.zeros(3), protocol=2))

    tvec = root / "calibrations" / "data_7" / "webcam_3" / "tvec.pkl"
    tvec.write_bytes(pickle.dumps(np.array([0.0, 0.0, -5000.0]), protocol=2))
    behind = MHPHands(root, sequences=[7], views=(3,))
    with pytest.raises(ValueError, match=re.escape(f"{root / 'annotated_frames' / 'data_7' / '5_joints.txt'}: "
                                                   "keypoints are behind webcam 3")):
        behind[0]
    with pytest.raises(FileNotFoundError, match="annotated_frames folder not found"):
        MHPHands(root / "nowhere")
