"""The real-format loaders of handops_models.data.formats on tiny fixture folders written here in each dataset's
own layout (2-4 samples, small images); MANO-bearing formats get consistent 3-D/2-D data from the synthetic hand."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import handops
from handops.mano import synthetic_model
from handops_models.data import check_sample
from handops_models.data.formats import DexYCB, FreiHAND, HUMBIHands, PanopticHands
from handops.geometry import project

RIGHT = synthetic_model(0)
LEFT = synthetic_model(0, is_right=False)
ALL_KEYS_3D = ("image", "keypoints2d", "visibility", "keypoints3d", "K", "bbox", "is_left")


def _write_image(path, width, height, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def _random_pose(rng):
    """A full (flat-hand-mean) axis-angle pose [48]: a moderate global rotation and finger articulation."""
    return np.concatenate([rng.normal(scale=0.6, size=3), rng.normal(scale=0.25, size=45)])


def _mano(model, pose, betas, transl=None):
    """OpenPose-order joints [21, 3] and vertices [V, 3] of a full axis-angle pose (float64 numpy)."""
    layer = handops.ManoLayer(model, use_pca=False, flat_hand_mean=True)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))[None]  # noqa: E731
    out = layer(t(betas), t(pose[:3]), t(pose[3:]), None if transl is None else t(transl))
    return out.joints[0].numpy(), out.vertices[0].numpy()


def _joints_of_sample(model, sample, transl=None):
    joints, _ = _mano(model, sample["pose"].double().numpy(), sample["betas"].double().numpy(), transl)
    return joints


def _pixels(points, K):
    """handops.geometry.project on numpy arrays (float64): [N, 3] camera points -> [N, 2] pixels."""
    return project(torch.as_tensor(points, dtype=torch.float64), torch.as_tensor(K, dtype=torch.float64)).numpy()


def _check_projection(sample):
    kp = _pixels(sample["keypoints3d"].double().numpy(), sample["K"].double().numpy())
    np.testing.assert_allclose(sample["keypoints2d"].double().numpy(), kp, atol=2e-3)


def _check_box(sample):
    kp = sample["keypoints2d"]
    torch.testing.assert_close(sample["bbox"], torch.cat([kp.min(0).values, kp.max(0).values]))


# --------------------------------------------------------------------------------------------------
# CMU Panoptic


def _panoptic_points(rng, width, height):
    pts = np.column_stack([rng.uniform(2, width - 3, 21), rng.uniform(2, height - 3, 21), np.ones(21)])
    pts[3, 2] = 0  # not annotated / hidden
    pts[7, 0] = width + 5.0  # flagged visible but outside the image
    return pts


def write_panoptic_hand_labels(root):
    """hand_labels/: manual_train (2 pairs) and manual_test (1 pair) of <name>.jpg + <name>.json."""
    rng = np.random.default_rng(1)
    written = {}
    for folder, names in (("manual_train", ["Ricki_unit_8.flv_000003_l", "Ricki_unit_8.flv_000004_r"]),
                          ("manual_test", ["Berry_roof_story.flv_000053_l"])):
        for k, name in enumerate(names):
            pts = _panoptic_points(rng, 40, 30)
            is_left = name.endswith("_l")
            _write_image(root / folder / f"{name}.jpg", 40, 30, seed=k)
            with open(root / folder / f"{name}.json", "w") as f:
                json.dump({"hand_pts": pts.tolist(), "is_mpii": 0, "is_left": int(is_left), "head_size": 12.5}, f)
            written[f"{folder}/{name}"] = (pts, is_left)
    return written


def test_panoptic_hand_labels(tmp_path):
    written = write_panoptic_hand_labels(tmp_path)
    assert list(handops.hand_tree().parents) == [-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19]
    train, test, both = (PanopticHands(tmp_path, s) for s in ("train", "test", None))
    assert (len(train), len(test), len(both)) == (2, 1, 3)
    assert train.layout == "hand_labels"
    order = sorted(k for k in written if k.startswith("manual_train"))
    order += sorted(k for k in written if k.startswith("manual_test"))
    for i, sample in enumerate(both):
        check_sample(sample, required=("image", "keypoints2d", "visibility", "bbox", "is_left"))
        assert "keypoints3d" not in sample and "K" not in sample and "subject" not in sample
        pts, is_left = written[order[i]]
        np.testing.assert_allclose(sample["keypoints2d"].numpy(), pts[:, :2], atol=1e-5)
        expected_vis = pts[:, 2] == 1
        expected_vis[7] = False  # outside the 40 px wide image
        assert sample["visibility"].tolist() == expected_vis.tolist()
        assert sample["is_left"] is is_left
        assert sample["image"].shape == (3, 30, 40)
        _check_box(sample)
    with pytest.raises(ValueError, match="split must be"):
        PanopticHands(tmp_path, "val")


def test_panoptic_errors_name_the_file(tmp_path):
    write_panoptic_hand_labels(tmp_path)
    bad = tmp_path / "manual_test" / "Berry_roof_story.flv_000053_l.json"
    data = json.loads(bad.read_text())
    data["hand_pts"] = data["hand_pts"][:20]
    bad.write_text(json.dumps(data))
    ds = PanopticHands(tmp_path, "test")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: hand_pts must be 21 x 3, got 20 x 3")):
        ds[0]
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: not valid JSON")):
        ds[0]
    (tmp_path / "manual_train" / "Ricki_unit_8.flv_000003_l.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("Ricki_unit_8.flv_000003_l.json: its image")):
        PanopticHands(tmp_path, "train")


def test_panoptic_combined_panopticdb(tmp_path):
    rng = np.random.default_rng(2)
    entries = []
    for i in range(2):
        pts = _panoptic_points(rng, 36, 28)
        _write_image(tmp_path / "imgs" / f"{i:08d}.jpg", 36, 28, seed=10 + i)
        entries.append({"img_paths": f"imgs/{i:08d}.jpg", "joint_self": pts.tolist(), "img_width": 36,
                        "img_height": 28, "objpos": [18, 14]})
    (tmp_path / "hands_v143_14817.json").write_text(json.dumps({"root": entries}))
    ds = PanopticHands(tmp_path)
    assert ds.layout == "hand143_panopticdb" and len(ds) == 2
    for sample, entry in zip(ds, entries):
        check_sample(sample, required=("image", "keypoints2d", "visibility", "bbox"))
        assert "is_left" not in sample  # the multiview set has no hand side
        np.testing.assert_allclose(sample["keypoints2d"].numpy(), np.array(entry["joint_self"])[:, :2], atol=1e-5)
        assert not sample["visibility"][3] and not sample["visibility"][7] and sample["visibility"][0]
    entries[1]["joint_self"] = entries[1]["joint_self"] + [[1.0, 2.0]]
    (tmp_path / "hands_v143_14817.json").write_text(json.dumps({"root": entries}))
    wrong = "root[1]: joint_self must be 21 x 3, got 22 rows of lengths [2, 3]"
    with pytest.raises(ValueError, match=re.escape(wrong)):
        PanopticHands(tmp_path)


# --------------------------------------------------------------------------------------------------
# FreiHAND


def _freihand_annotation(rng, K, mean):
    pose = _random_pose(rng)
    betas = rng.normal(size=10)
    transl = np.array([rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02), 0.5])
    xyz, verts = _mano(RIGHT, pose, betas, transl)
    # the 61 values: pose relative to MANO's mean (flat_hand_mean=False), shape, uv_root, scale
    uv_root = _pixels(xyz[9:10], K)[0]
    scale = 0.5 * (K[0, 0] + K[1, 1]) / xyz[9, 2]
    theta = np.concatenate([pose[:3], pose[3:] - mean, betas, uv_root, [scale]])
    return dict(K=K, xyz=xyz, verts=verts, pose=pose, betas=betas, mano=[theta.tolist()])


def write_freihand(root, n=2, versions=2):
    """training_{K,xyz,mano,verts}.json for n annotations, training/rgb with n * versions images; evaluation likewise
    with n annotations (release v2 files) and n images."""
    rng = np.random.default_rng(3)
    mean = RIGHT.hands_mean.numpy()
    out = {}
    for split, count in (("training", n * versions), ("evaluation", n)):
        anns = []
        for i in range(n):
            K = np.array([[120.0 + 10 * i, 0, 16.0], [0, 121.0 + 10 * i, 15.0], [0, 0, 1]])
            anns.append(_freihand_annotation(rng, K, mean))
        for kind in ("K", "xyz", "mano", "verts"):
            (root / f"{split}_{kind}.json").write_text(json.dumps([np.asarray(a[kind]).tolist() for a in anns]))
        (root / f"{split}_scale.json").write_text(json.dumps([0.03] * n))
        for k in range(count):
            _write_image(root / split / "rgb" / f"{k:08d}.jpg", 32, 32, seed=20 + k)
        out[split] = anns
    return out


def test_freihand_training(tmp_path):
    written = write_freihand(tmp_path)
    ds = FreiHAND(tmp_path, "training", mano_model=RIGHT, with_vertices=True)
    assert len(ds) == 4 and ds.num_annotations == 2
    assert [ds.annotation_index(i) for i in range(4)] == [0, 1, 0, 1]
    for i, sample in enumerate(ds):
        check_sample(sample, required=ALL_KEYS_3D + ("pose", "betas", "vertices"))
        ann = written["training"][i % 2]
        assert sample["is_left"] is False
        np.testing.assert_allclose(sample["keypoints3d"].numpy(), ann["xyz"], atol=1e-6)
        np.testing.assert_allclose(sample["K"].numpy(), ann["K"], atol=1e-6)
        np.testing.assert_allclose(sample["vertices"].numpy(), ann["verts"], atol=1e-6)
        np.testing.assert_allclose(sample["betas"].numpy(), ann["betas"], atol=1e-6)
        # pose holds the full axis-angle: FreiHAND's mean-relative hand pose plus hands_mean
        np.testing.assert_allclose(sample["pose"].numpy(), ann["pose"], atol=1e-6)
        joints = _joints_of_sample(RIGHT, sample)
        np.testing.assert_allclose(joints - joints[9], ann["xyz"] - ann["xyz"][9], atol=1e-5)
        _check_projection(sample)
        _check_box(sample)
        assert sample["visibility"].tolist() == [
            bool(-0.5 <= u < 31.5 and -0.5 <= v < 31.5) for u, v in sample["keypoints2d"].tolist()]
    # images 0 and 2 are two versions of annotation 0: same labels, different pictures
    assert torch.equal(ds[0]["keypoints2d"], ds[2]["keypoints2d"])
    assert not torch.equal(ds[0]["image"], ds[2]["image"])
    plain = FreiHAND(tmp_path, "train")[1]
    assert "pose" not in plain and "vertices" not in plain and "betas" in plain


def test_freihand_evaluation(tmp_path):
    written = write_freihand(tmp_path)
    ds = FreiHAND(tmp_path, "evaluation", mano_model=RIGHT)
    assert len(ds) == 2
    for sample, ann in zip(ds, written["evaluation"]):
        check_sample(sample, required=ALL_KEYS_3D + ("pose", "betas"))
        np.testing.assert_allclose(sample["pose"].numpy(), ann["pose"], atol=1e-6)
        _check_projection(sample)
    # the v1 evaluation release has only K and scale: image and K only
    for kind in ("xyz", "mano", "verts"):
        (tmp_path / f"evaluation_{kind}.json").unlink()
    sample = FreiHAND(tmp_path, "evaluation")[0]
    assert sorted(sample) == ["K", "image", "is_left"]
    check_sample(sample, required=("image", "K"))


def test_freihand_errors_name_the_file(tmp_path):
    write_freihand(tmp_path)
    path = tmp_path / "training_xyz.json"
    xyz = json.loads(path.read_text())
    xyz[1] = xyz[1][:20]
    path.write_text(json.dumps(xyz))
    with pytest.raises(ValueError, match=re.escape(f"{path}: entry 1: xyz must be 21 x 3, got 20 x 3")):
        FreiHAND(tmp_path)
    (tmp_path / "training_K.json").unlink()
    missing = f"{tmp_path / 'training_K.json'}: annotation file not found"
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        FreiHAND(tmp_path)
    write_freihand(tmp_path)
    mano = json.loads((tmp_path / "training_mano.json").read_text())
    mano[0] = [mano[0][0][:60]]
    (tmp_path / "training_mano.json").write_text(json.dumps(mano))
    with pytest.raises(ValueError, match=re.escape("training_mano.json: entry 0: mano must be 1 x 61, got 1 x 60")):
        FreiHAND(tmp_path)
    write_freihand(tmp_path)
    _write_image(tmp_path / "training" / "rgb" / "00000008.jpg", 32, 32, seed=0)  # 4 versions x 2 annotations
    with pytest.raises(ValueError, match=re.escape("00000008.jpg: image number 8 has no annotation")):
        FreiHAND(tmp_path)


def test_freihand_zero_K_is_a_format_error(tmp_path):
    # An all-zero K used to project every keypoint to NaN; it names the file and the entry instead.
    write_freihand(tmp_path)
    path = tmp_path / "training_K.json"
    K = json.loads(path.read_text())
    K[1] = np.zeros((3, 3)).tolist()
    path.write_text(json.dumps(K))
    with pytest.raises(ValueError, match=re.escape(f"{path}: entry 1: K must be a camera matrix [[fx, s, cx], [0, fy, cy], "
                                                   "[0, 0, 1]] with fx, fy > 0, got [[0.0, 0.0, 0.0]")):
        FreiHAND(tmp_path)


# --------------------------------------------------------------------------------------------------
# DexYCB

_DEX_SERIALS = ("836212060125", "932122062010")  # serial indices 0 and 7 of the toolkit


def write_dexycb(root, num_frames=2):
    """Subjects 0 (right hand) and 7 (left hand), one sequence each, cameras of serial index 0 and 7, num_frames
    frames; frame 1 of subject 0 / serial 0 has no hand annotation (joint_3d all -1, pose_m all 0)."""
    rng = np.random.default_rng(4)
    written = {}
    for k, serial in enumerate(_DEX_SERIALS):
        intr = {"color": {"fx": 60.0 + k, "fy": 61.0 + k, "ppx": 20.0, "ppy": 15.0},
                "depth": {"fx": 1.0, "fy": 1.0, "ppx": 0.0, "ppy": 0.0}}
        path = root / "calibration" / "intrinsics" / f"{serial}_640x480.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(intr))
    for subject, seq_name, side, model in (("20200709-subject-01", "20200709_141754", "right", RIGHT),
                                           ("20201002-subject-08", "20201002_104827", "left", LEFT)):
        calib = f"{subject.split('-', 1)[1]}_{side}"
        betas = rng.normal(size=10)
        mano_yml = root / "calibration" / f"mano_{calib}" / "mano.yml"
        mano_yml.parent.mkdir(parents=True, exist_ok=True)
        mano_yml.write_text(yaml.safe_dump({"betas": betas.tolist()}))
        seq = root / subject / seq_name
        seq.mkdir(parents=True)
        meta = {"serials": list(_DEX_SERIALS), "num_frames": num_frames, "ycb_ids": [2, 5], "ycb_grasp_ind": 0,
                "mano_sides": [side], "mano_calib": [calib], "extrinsics": "20200702_151821"}
        (seq / "meta.yml").write_text(yaml.safe_dump(meta))
        comps, mean = model.hands_components.numpy(), model.hands_mean.numpy()
        for k, serial in enumerate(_DEX_SERIALS):
            K = np.array([[60.0 + k, 0, 20.0], [0, 61.0 + k, 15.0], [0, 0, 1]])
            for f in range(num_frames):
                pose = _random_pose(rng)
                transl = np.array([rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02), 0.6])
                joints, _ = _mano(model, pose, betas, transl)
                coeffs = (pose[3:] - mean) @ comps.T  # manopth: hand = coeffs @ comps + mean (comps orthonormal)
                pose_m = np.concatenate([pose[:3], coeffs, transl])[None].astype(np.float32)
                joint_3d = joints[None].astype(np.float32)
                joint_2d = _pixels(joints, K)[None].astype(np.float32)
                annotated = not (side == "right" and k == 0 and f == 1)
                if not annotated:
                    pose_m, joint_3d, joint_2d = np.zeros_like(pose_m), -np.ones_like(joint_3d), -np.ones_like(joint_2d)
                (seq / serial).mkdir(exist_ok=True)
                np.savez(seq / serial / f"labels_{f:06d}.npz", seg=np.zeros((4, 4), np.uint8),
                         pose_y=np.zeros((2, 3, 4), np.float32), pose_m=pose_m, joint_3d=joint_3d, joint_2d=joint_2d)
                _write_image(seq / serial / f"color_{f:06d}.jpg", 40, 30, seed=f + 2 * k)
                written[(subject, serial, f)] = dict(pose=pose, betas=betas, transl=transl, joints=joints, K=K,
                                                     annotated=annotated, side=side)
    return written


def test_dexycb_splits_and_values(tmp_path):
    written = write_dexycb(tmp_path)
    sizes = {(setup, split): len(DexYCB(tmp_path, setup, split)) for setup, split in
             (("s1", "train"), ("s1", "test"), ("s2", "train"), ("s2", "test"), ("all", None))}
    assert sizes == {("s1", "train"): 4, ("s1", "test"): 4, ("s2", "train"): 4, ("s2", "test"): 4, ("all", None): 8}
    assert {DexYCB(tmp_path, "s1", "test")[i]["subject"] for i in range(4)} == {7}
    assert {DexYCB(tmp_path, "s1", "train")[i]["subject"] for i in range(4)} == {0}
    with pytest.raises(FileNotFoundError, match="none of the subject folders"):
        DexYCB(tmp_path, "s1", "val")  # subject 6 only
    ds = DexYCB(tmp_path, "all", mano_right=RIGHT, mano_left=LEFT)
    seen_unannotated = 0
    for i, sample in enumerate(ds):
        seq, serial, f = ds._frames[i]
        subject = ds._sequences[seq][0].parent.name
        ref = written[(subject, serial, f)]
        assert sample["is_left"] is (ref["side"] == "left")
        np.testing.assert_allclose(sample["betas"].numpy(), ref["betas"], atol=1e-6)
        np.testing.assert_allclose(sample["K"].numpy(), ref["K"], atol=1e-6)
        if not ref["annotated"]:
            seen_unannotated += 1
            check_sample(sample, required=("image", "K", "betas"))
            assert "keypoints2d" not in sample and "pose" not in sample
            continue
        check_sample(sample, required=ALL_KEYS_3D + ("pose", "betas", "subject"))
        np.testing.assert_allclose(sample["keypoints3d"].numpy(), ref["joints"], atol=1e-6)
        np.testing.assert_allclose(sample["pose"].numpy(), ref["pose"], atol=1e-5)
        model = LEFT if ref["side"] == "left" else RIGHT
        np.testing.assert_allclose(_joints_of_sample(model, sample, ref["transl"]), ref["joints"], atol=1e-5)
        _check_projection(sample)
        _check_box(sample)
    assert seen_unannotated == 1
    assert len(DexYCB(tmp_path, "all", drop_unannotated=True)) == 7
    assert "pose" not in DexYCB(tmp_path, "all")[0]


def test_dexycb_errors_name_the_file(tmp_path):
    write_dexycb(tmp_path)
    label = tmp_path / "20200709-subject-01" / "20200709_141754" / "836212060125" / "labels_000000.npz"
    np.savez(label, pose_m=np.zeros((1, 51), np.float32), joint_3d=np.zeros((1, 20, 3), np.float32),
             joint_2d=np.zeros((1, 21, 2), np.float32))
    ds = DexYCB(tmp_path, "s2", "train")
    with pytest.raises(ValueError, match=re.escape(f"{label}: joint_3d must be 1 x 21 x 3, got 1 x 20 x 3")):
        ds[0]
    np.savez(label, pose_m=np.zeros((1, 51), np.float32), joint_3d=np.array([None, 1], dtype=object),
             joint_2d=np.zeros((1, 21, 2), np.float32))
    with pytest.raises(ValueError, match=re.escape(f"{label}: holds an array that needs pickle")):
        ds[0]
    image = label.parent / "color_000001.jpg"
    image.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{image}: image not found")):
        ds[1]
    intr = tmp_path / "calibration" / "intrinsics" / "932122062010_640x480.yml"
    intr.write_text(yaml.safe_dump({"color": {"fx": 1.0, "fy": 1.0}}))
    with pytest.raises(ValueError, match=re.escape(f"{intr}: must hold color: {{fx, fy, ppx, ppy}}")):
        DexYCB(tmp_path, "s2", "test")
    intr.write_text(yaml.safe_dump({"color": {"fx": 0.0, "fy": 1.0, "ppx": 2.0, "ppy": 3.0}}))
    with pytest.raises(ValueError, match=re.escape(f"{intr}: color K must be a camera matrix")):
        DexYCB(tmp_path, "s2", "test")
    intr.write_text("color: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ValueError, match=re.escape(f"{intr}: not valid (safe) YAML")):
        DexYCB(tmp_path, "s2", "test")
    meta = tmp_path / "20201002-subject-08" / "20201002_104827" / "meta.yml"
    meta.write_text(yaml.safe_dump({"serials": [], "num_frames": 2, "mano_sides": ["both"], "mano_calib": ["x"]}))
    with pytest.raises(ValueError, match=re.escape(f"{meta}: mano_sides must be one of")):
        DexYCB(tmp_path, "s1", "test")


# --------------------------------------------------------------------------------------------------
# HUMBI

_HUMBI_CROP = 25  # crop size of the fixture (the real crops are 250 x 250)


def _look_at(C, target):
    """World-to-camera rotation of a camera at C looking at target (rows: camera x, y, z axes in world)."""
    z = (target - C) / np.linalg.norm(target - C)
    x = np.cross([0.0, -1.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def write_humbi(root, subject=3, frame=1):
    """subject_<n>/hand with cameras 0 and 5; one frame; right hand seen by both cameras, left by camera 5."""
    rng = np.random.default_rng(5)
    hand = root / f"subject_{subject}" / "hand"
    hand.mkdir(parents=True)
    cams = {0: np.array([0.1, -0.2, -1.5]), 5: np.array([1.2, 0.3, -0.9])}
    Ks = {c: np.array([[1500.0 + 20 * c, 0, 960.0], [0, 1500.0 + 20 * c, 540.0], [0, 0, 1]]) for c in cams}
    Rs = {c: _look_at(C, np.zeros(3)) for c, C in cams.items()}
    intr = ["Numcam: 107", f"numframes: {len(cams)}", f"numP: {len(cams)}"]
    extr = list(intr)
    for c in cams:
        intr += [f"0 {c}"] + [" ".join(f"{v:.10f}" for v in row) for row in Ks[c]]
        extr += [f"0 {c}", " ".join(f"{v:.10f}" for v in cams[c])] + [" ".join(f"{v:.12f}" for v in r) for r in Rs[c]]
    (hand / "intrinsic.txt").write_text("\n".join(intr) + "\n")
    (hand / "extrinsic.txt").write_text("\n".join(extr) + "\n")
    frame_dir = hand / f"{frame:08d}"
    written = {}
    for side, model, seen_by in (("right", RIGHT, [0, 5]), ("left", LEFT, [5])):
        s = side[0]
        comps, mean = model.hands_components.numpy(), model.hands_mean.numpy()
        coeffs = rng.normal(scale=0.5, size=20)
        pose = np.concatenate([rng.normal(scale=0.6, size=3), coeffs @ comps[:20] + mean])  # world axes
        betas = rng.normal(size=10)
        transl = np.array([0.05 if s == "r" else -0.05, 0.0, 0.0])
        joints, verts = _mano(model, pose, betas, transl)
        recon = frame_dir / "reconstruction"
        recon.mkdir(parents=True, exist_ok=True)
        np.savetxt(recon / f"keypoints_{s}.txt", joints, fmt="%.10f")
        np.savetxt(recon / f"vertices_{s}.txt", verts, fmt="%.10f")
        np.savetxt(recon / f"mano_params_{s}.txt", np.concatenate([transl, pose[:3], coeffs, betas]), fmt="%.12f")
        crops = frame_dir / "image_cropped" / side
        rows = []
        for c in seen_by:
            uv = _pixels((joints - cams[c]) @ Rs[c].T, Ks[c])
            xmin, ymin = np.floor(uv.min(0)) - 7
            size = np.ceil((uv.max(0) - uv.min(0)).max()) + 14
            rows.append(f"{c} {xmin:.0f} {xmin + size - 1:.0f} {ymin:.0f} {ymin + size - 1:.0f}")
            _write_image(crops / f"image{c:07d}.png", _HUMBI_CROP, _HUMBI_CROP, seed=c)
            written[(side, c)] = dict(joints=joints, verts=verts, pose=pose, betas=betas, R=Rs[c], C=cams[c],
                                      K=Ks[c], box=(xmin, ymin, size), model=model)
        (crops / "list.txt").write_text("\n".join(rows) + "\n")
    return written


def test_humbi_values(tmp_path):
    written = write_humbi(tmp_path)
    ds = HUMBIHands(tmp_path, mano_right=RIGHT, mano_left=LEFT)
    assert len(ds) == 3
    assert len(HUMBIHands(tmp_path, sides=("left",))) == 1
    for i, sample in enumerate(ds):
        _, _, side, cam, _ = ds._entries[i]
        ref = written[(side, cam)]
        check_sample(sample, required=ALL_KEYS_3D + ("pose", "betas", "vertices", "subject"))
        assert sample["subject"] == 3 and sample["is_left"] is (side == "left")
        assert sample["image"].shape == (3, _HUMBI_CROP, _HUMBI_CROP)
        kp_cam = (ref["joints"] - ref["C"]) @ ref["R"].T
        np.testing.assert_allclose(sample["keypoints3d"].numpy(), kp_cam, atol=1e-6)
        np.testing.assert_allclose(sample["vertices"].numpy(), (ref["verts"] - ref["C"]) @ ref["R"].T, atol=1e-6)
        # the toolkit's crop mapping: original-image reprojection minus the box corner, divided by the box scale
        xmin, ymin, size = ref["box"]
        uv = _pixels(kp_cam, ref["K"])
        np.testing.assert_allclose(sample["keypoints2d"].numpy(), (uv - [xmin, ymin]) / (size / _HUMBI_CROP),
                                   atol=2e-3)
        _check_projection(sample)
        _check_box(sample)
        np.testing.assert_allclose(sample["betas"].numpy(), ref["betas"], atol=1e-6)
        # pose: full axis-angle in camera axes; root-relative joints match the camera-frame reconstruction
        joints = _joints_of_sample(ref["model"], sample)
        np.testing.assert_allclose(joints - joints[0], kp_cam - kp_cam[0], atol=1e-5)
        np.testing.assert_allclose(sample["pose"][3:].numpy(), ref["pose"][3:], atol=1e-5)
    assert "pose" not in HUMBIHands(tmp_path)[0]


def test_humbi_errors_name_the_file(tmp_path):
    write_humbi(tmp_path)
    frame = tmp_path / "subject_3" / "hand" / "00000001"
    kp = frame / "reconstruction" / "keypoints_r.txt"
    kp.write_text("\n".join(kp.read_text().splitlines()[:20]) + "\n")
    ds = HUMBIHands(tmp_path, sides=("right",))
    with pytest.raises(ValueError, match=re.escape(f"{kp}: keypoints must be 21 x 3, got 20 x 3")):
        ds[0]
    params = frame / "reconstruction" / "mano_params_l.txt"
    params.write_text("\n".join(params.read_text().splitlines()[:35]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{params}: MANO parameters must be 36 values")):
        HUMBIHands(tmp_path, sides=("left",))[0]
    image = frame / "image_cropped" / "left" / "image0000005.png"
    image.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{image}: image not found")):
        HUMBIHands(tmp_path, sides=("left",))[0]
    listing = frame / "image_cropped" / "left" / "list.txt"
    listing.write_text("9 0 10 0 10\n")
    with pytest.raises(ValueError, match=re.escape(f"{listing}: camera 9 is not in")):
        HUMBIHands(tmp_path)
    intr = tmp_path / "subject_3" / "hand" / "intrinsic.txt"
    lines = intr.read_text().splitlines()
    intr.write_text("\n".join(lines[:-1] + ["0 0 0"]) + "\n")  # camera 5's K with a zero bottom row
    with pytest.raises(ValueError, match=re.escape(f"{intr}: camera 5: K must be a camera matrix")):
        HUMBIHands(tmp_path)
    intr.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{intr}: after the 3 header lines")):
        HUMBIHands(tmp_path)
    with pytest.raises(FileNotFoundError, match="subject_4"):
        HUMBIHands(tmp_path, subjects=[4])
