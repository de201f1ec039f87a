"""SyntheticHands: determinism, geometry, visibility, splits, cache, the occlusion knob; viz and the preview CLI."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import handops
from handops.mano import OPENPOSE_FROM_MANO
from handops_models import viz
from handops_models.data import preview, render
from handops_models.data.sample import SAMPLE_KEYS, check_sample
from handops_models.data.synthetic import SyntheticHands, split_subjects

ALL_KEYS = tuple(SAMPLE_KEYS)


def assert_same_sample(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def batch():
    """40 samples at 64 px without occluders (the geometry tests), as numpy arrays."""
    ds = SyntheticHands(40, image_size=64, seed=3, occlusion=0.0, truncation=0.3, progress=False)
    return ds, ds.generate(range(40))


def test_samples_follow_the_convention():
    for size in (48, 64):
        ds = SyntheticHands(6, image_size=size, seed=1, progress=False)
        for i in range(len(ds)):
            s = check_sample(ds[i], required=ALL_KEYS)
            assert s["image"].shape == (3, size, size)
            assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
            assert s["vertices"].shape == (912, 3)
            assert s["is_left"] is False and s["subject"] in ds.subjects
            # images are multiples of 1/255 (what the uint8 cache stores)
            assert torch.equal(s["image"], (s["image"] * 255).round() / 255)
            assert float(s["image"].std()) > 0.02  # not a blank picture


def test_determinism_per_seed_and_index():
    ds = SyntheticHands(30, image_size=48, seed=5, progress=False)
    alone = ds[7]
    in_batch = ds.__getitems__([29, 7, 2])[1]
    other = SyntheticHands(30, image_size=48, seed=5, progress=False)
    assert_same_sample(alone, in_batch)
    assert_same_sample(alone, other[7])
    assert_same_sample(ds[-1], ds[29])
    # the seed matters, and so does the index
    assert not torch.equal(alone["image"], SyntheticHands(30, image_size=48, seed=6, progress=False)[7]["image"])
    assert not torch.equal(alone["keypoints3d"], ds[8]["keypoints3d"])


def test_samples_do_not_depend_on_the_batch():
    ds = SyntheticHands(48, image_size=64, seed=8, occlusion=0.6, left_prob=0.3, progress=False)
    whole = ds.generate(range(48))
    parts = [ds.generate(list(range(48))[a:b][::-1]) for a, b in ((0, 1), (1, 6), (6, 29), (29, 48))]
    for key in ("image", "visibility", "keypoints2d", "vertices", "bbox"):
        got = np.concatenate([p[key][::-1] for p in parts])
        np.testing.assert_array_equal(got, whole[key], err_msg=key)


def test_dataloader_workers_give_the_same_samples():
    ds = SyntheticHands(8, image_size=32, seed=2, progress=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    for i in range(8):
        s = ds[i]
        b = batches[i // 4]
        for key in ("image", "keypoints2d", "visibility", "vertices"):
            assert torch.equal(b[key][i % 4], s[key]), key


def test_keypoints3d_project_onto_keypoints2d(batch):
    ds, b = batch
    h = np.einsum("bij,bkj->bki", b["K"].astype(np.float64), b["keypoints3d"].astype(np.float64))
    np.testing.assert_allclose(h[..., :2] / h[..., 2:], b["keypoints2d"], atol=1e-3)
    assert (b["keypoints3d"][..., 2] > 0.1).all()
    # fingertips are mesh vertices; bbox is the keypoints' tight box
    tips = handops.mano.synthetic_model(0).fingertip_ids.numpy()
    np.testing.assert_array_equal(b["keypoints3d"][:, [4, 8, 12, 16, 20]], b["vertices"][:, tips])
    np.testing.assert_allclose(b["bbox"][:, :2], b["keypoints2d"].min(1))
    np.testing.assert_allclose(b["bbox"][:, 2:], b["keypoints2d"].max(1))
    # the hand fills a good part of the picture (keypoint box side / image side)
    side = (b["bbox"][:, 2:] - b["bbox"][:, :2]).max(1) / 64
    assert np.median(side) > 0.3


def test_rasteriser_matches_brute_force_ray_casting(batch):
    ds, b = batch
    faces = handops.mano.synthetic_model(0).faces.numpy()
    frags = render.rasterize(torch.from_numpy(b["vertices"][:3]), torch.from_numpy(faces), torch.from_numpy(b["K"][:3]), 64)
    ys, xs = np.mgrid[0:64, 0:64]
    for n in range(3):
        rays = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3) @ np.linalg.inv(b["K"][n].astype(np.float64)).T
        depth = _ray_depth(b["vertices"][n], faces, rays).reshape(64, 64)
        got = frags.depth[n].numpy()
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(depth))
        hit = np.isfinite(depth)
        assert hit.sum() > 100
        np.testing.assert_allclose(got[hit], depth[hit], atol=2e-4)


def test_rasteriser_big_and_border_faces_on_a_non_square_image():
    """Faces larger than the image, leaving it on every side, overlapping at several depths, both
    windings (no culling), on a 20 x 31 picture: coverage and depth as ray casting, in any batch."""
    rng = np.random.default_rng(0)
    verts = np.concatenate([rng.uniform(-1.5, 1.5, (24, 2)), rng.uniform(1.0, 3.0, (24, 1))], 1)
    faces = np.arange(24).reshape(8, 3)
    K = np.array([[20.0, 0, 15.0], [0, 20.0, 9.5], [0, 0, 1]])
    v, f, k = torch.from_numpy(verts).float(), torch.from_numpy(faces), torch.from_numpy(K).float()
    frags = render.rasterize(torch.stack([v, v * 1.1]), f, torch.stack([k, k]), (20, 31), cull_backfaces=False)
    alone = render.rasterize(v[None], f, k[None], (20, 31), cull_backfaces=False)
    assert torch.equal(frags.depth[:1], alone.depth) and torch.equal(frags.face[:1], alone.face)
    ys, xs = np.mgrid[0:20, 0:31]
    rays = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3) @ np.linalg.inv(K).T
    depth = _ray_depth(v.numpy(), faces, rays).reshape(20, 31)
    got = frags.depth[0].numpy()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(depth))
    assert np.isfinite(depth).mean() > 0.3
    np.testing.assert_allclose(got[np.isfinite(depth)], depth[np.isfinite(depth)], rtol=1e-4)
    # barycentrics of covered pixels are convex weights
    bary = frags.bary[frags.mask]
    assert (bary >= -1e-4).all() and torch.allclose(bary.sum(-1), torch.ones(len(bary)), atol=1e-5)


def test_mixed_hands_are_the_same_in_any_batch():
    ds = SyntheticHands(10, image_size=40, seed=4, left_prob=0.5, occlusion=0.5, progress=False)
    both = ds.generate(range(10))
    assert 0 < both["is_left"].sum() < 10
    for i in (0, 3, 9):
        one = ds.generate([i])
        for key in ("image", "visibility", "keypoints2d", "vertices"):
            np.testing.assert_array_equal(one[key][0], both[key][i], err_msg=key)


def _ray_depth(vertices: np.ndarray, faces: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Camera-z of the nearest intersection of rays from the origin (directions [R, 3]) with the
    triangles (Moller-Trumbore, float64, both sides); inf where a ray misses."""
    tri = vertices.astype(np.float64)[faces]
    e1, e2, o = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], -tri[:, 0]
    best = np.full(len(rays), np.inf)
    for start in range(0, len(rays), 256):
        d = rays[start:start + 256, None, :]  # [r, 1, 3]
        p = np.cross(d, e2[None])
        det = (p * e1[None]).sum(-1)
        inv = 1.0 / np.where(np.abs(det) > 1e-18, det, np.inf)
        u = (p * o[None]).sum(-1) * inv
        q = np.cross(o, e1)[None]
        v = (d * q).sum(-1) * inv
        t = (q * e2[None]).sum(-1) * inv
        ok = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0) & np.isfinite(inv)
        z = np.where(ok, t * d[..., 2], np.inf)
        best[start:start + 256] = z.min(1)
    return best


def _margins(model, betas: np.ndarray) -> np.ndarray:
    """The documented self-occlusion margin per OpenPose keypoint: 1.25 x the local tube radius + 4 mm,
    the radius being the mean distance of the joint's ring of vertices (at this subject's shape) to the
    joint, and half the distal ring's radius for a fingertip."""
    jr = model.J_regressor.numpy()
    v_shaped = model.v_template.numpy() + model.shapedirs.numpy() @ betas.astype(np.float64)
    mano_r = np.zeros(16)
    for j in range(16):
        ring = np.nonzero(jr[j])[0]
        mano_r[j] = np.linalg.norm(v_shaped[ring] - jr[j] @ v_shaped, axis=1).mean()
    radius = np.array([mano_r[m] if m < 16 else 0.0 for m in OPENPOSE_FROM_MANO])
    tips = [4, 8, 12, 16, 20]  # each fingertip follows its finger's distal joint in the OpenPose order
    radius[tips] = 0.5 * radius[[t - 1 for t in tips]]
    return 1.25 * radius + 0.004


def test_visibility_agrees_with_an_independent_depth_test(batch):
    ds, b = batch
    model = handops.mano.synthetic_model(0)
    faces = model.faces.numpy()
    at_pixel = np.zeros_like(b["visibility"])  # the definition: depth at the keypoint's pixel centre
    on_ray = np.zeros_like(b["visibility"])  # physics: depth along the ray through the keypoint itself
    for n in range(len(b["image"])):
        margin = _margins(model, b["betas"][n])
        kp = b["keypoints3d"][n].astype(np.float64)
        px = np.floor(b["keypoints2d"][n] + 0.5)
        inside = ((px >= 0) & (px <= 63)).all(1)
        rays = np.concatenate([px, np.ones((21, 1))], 1) @ np.linalg.inv(b["K"][n].astype(np.float64)).T
        at_pixel[n] = inside & (kp[:, 2] <= _ray_depth(b["vertices"][n], faces, rays) + margin)
        on_ray[n] = inside & (kp[:, 2] <= _ray_depth(b["vertices"][n], faces, kp / kp[:, 2:]) + margin)
    got = b["visibility"]
    assert 0.3 < got.mean() < 0.95
    assert (~at_pixel).sum() > 50  # enough hidden keypoints for the comparison to mean something
    assert (got == at_pixel).mean() > 0.995, (got != at_pixel).sum()
    assert (got == on_ray).mean() > 0.9, (got != on_ray).sum()
    # self-occlusion is decided (not everything in the image is visible); outside the image is hidden
    px = np.floor(b["keypoints2d"] + 0.5)
    in_image = ((px >= 0) & (px <= 63)).all(-1)
    assert (in_image & ~got).sum() > 30 and (~in_image).sum() > 0 and not got[~in_image].any()


def test_occlusion_knob_only_hides_keypoints():
    kwargs = dict(num_samples=48, image_size=64, seed=11, progress=False)
    clear = SyntheticHands(occlusion=0.0, **kwargs).generate(range(48))
    some = SyntheticHands(occlusion=0.5, **kwargs).generate(range(48))
    full = SyntheticHands(occlusion=1.0, **kwargs).generate(range(48))
    for other in (some, full):  # the same hands and cameras; occluders only take visibility away
        np.testing.assert_array_equal(other["keypoints2d"], clear["keypoints2d"])
        assert not (other["visibility"] & ~clear["visibility"]).any()
    assert clear["visibility"].mean() > some["visibility"].mean() > full["visibility"].mean()
    assert clear["visibility"].mean() - full["visibility"].mean() > 0.08
    changed = (full["image"] != clear["image"]).any(1).reshape(48, -1).mean(1)
    assert (changed > 0.004).all()  # every sample has a visible occluder (>= 16 pixels)


def test_size_cue_makes_a_hands_picture_size_follow_its_length():
    """Without the cue a hand's box fills a drawn share of the picture whatever its size (the pinned samples);
    with it the same draws give each box side times the subject's hand length over the mean hand's, so a
    bigger hand looks bigger. Dividing by the ratio, or scaling by a ratio of another hand (the mean's, or a
    neighbour's), fails the ratio check."""
    from handops_models.data.synthetic.dataset import _hand_length_ratio
    from handops_models.metrics import hand_width_length
    from handops_models.nets.mesh import make_mano_layer

    kwargs = dict(num_samples=64, image_size=64, seed=5, num_subjects=40, occlusion=0.0, truncation=0.0, progress=False)
    plain, cued = SyntheticHands(**kwargs), SyntheticHands(size_cue=True, **kwargs)
    a, b = plain.generate(range(64)), cued.generate(range(64))
    np.testing.assert_array_equal(a["pose"], b["pose"])  # the same draws: only the camera distance differs
    np.testing.assert_array_equal(a["subject"], b["subject"])
    # the ratio is the subject's hand length over the mean shape's (metrics.hand_width_length, independently)
    layer = make_mano_layer("synthetic:0")
    lengths = hand_width_length(layer, torch.as_tensor(plain.subject_betas, dtype=torch.float64))[1]
    mean_length = hand_width_length(layer, torch.zeros(1, 10, dtype=torch.float64))[1]
    ratio = (lengths / mean_length).numpy()
    np.testing.assert_allclose(_hand_length_ratio(0, plain.subject_betas), ratio, rtol=1e-9)
    assert ratio.std() > 0.05  # the subjects differ in size
    # box side in the picture: the depth scales by 1 / ratio unless a near-camera floor holds it
    side = lambda x: (x["bbox"][:, 2:] - x["bbox"][:, :2]).max(1)  # noqa: E731
    measured = side(b) / side(a)
    expected = ratio[a["subject"]]
    close = np.abs(measured / expected - 1) < 0.03
    assert close.mean() > 0.8, (measured, expected)
    assert np.corrcoef(side(b), ratio[b["subject"]])[0, 1] > np.corrcoef(side(a), ratio[a["subject"]])[0, 1] + 0.2
    assert plain.cache_key() != cued.cache_key() and "size_cue" not in plain.config()


def test_subject_splits_never_share_a_subject():
    parts = split_subjects(20, seed=4)
    assert sorted(sum(parts.values(), ())) == list(range(20))
    assert all(len(p) > 0 for p in parts.values())
    assert split_subjects(20, seed=4) == parts and split_subjects(20, seed=5) != parts
    seen = {}
    for split in ("train", "val", "test"):
        ds = SyntheticHands(40, image_size=32, num_subjects=20, seed=4, split=split, progress=False)
        assert ds.subjects == parts[split]
        b = ds.generate(range(40))
        seen[split] = set(b["subject"].tolist())
        assert seen[split] <= set(parts[split])
        for s in seen[split]:  # a subject has one shape
            rows = b["betas"][b["subject"] == s]
            assert (rows == rows[0]).all()
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["val"] and not seen["val"] & seen["test"]
    assert len(seen["train"]) > 5  # samples spread over the subjects


def test_cache_round_trip_equals_fresh(tmp_path):
    kwargs = dict(num_samples=21, image_size=40, seed=9, shard_size=8, progress=False)
    cached = SyntheticHands(cache_dir=tmp_path, **kwargs)
    fresh = SyntheticHands(**kwargs)
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1 and len(list(folders[0].glob("shard_*_image.npy"))) == 3
    for i in (0, 7, 8, 20):
        assert_same_sample(cached[i], fresh[i])
    assert [s["subject"] for s in cached.__getitems__([3, 12])] == [fresh[3]["subject"], fresh[12]["subject"]]
    # reopening reads the shards (no generation); another parameter gets another folder
    reopened = SyntheticHands(cache_dir=tmp_path, **kwargs)
    reopened.generate = None  # would fail if called
    assert_same_sample(reopened[20], fresh[20])
    SyntheticHands(cache_dir=tmp_path, occlusion=0.9, **kwargs)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
    assert cached.cache_key() != SyntheticHands(occlusion=0.9, **kwargs).cache_key()


def test_cache_key_covers_every_source_file(tmp_path, monkeypatch):
    """The shard cache key hashes every module of the synthetic package, the rasteriser and the hand model:
    an edit of any one of them gives another key, so a stale cache is never read."""
    import handops.mano.synthetic as model_source
    from handops_models.data.synthetic import dataset

    files = dataset.source_files()
    package = Path(dataset.__file__).parent
    assert set(package.rglob("*.py")) | {Path(render.__file__), Path(model_source.__file__)} == set(files)
    copies = []
    for i, path in enumerate(files):  # one folder each: the file names are hashed too
        (tmp_path / str(i)).mkdir()
        copies.append(tmp_path / str(i) / path.name)
        copies[-1].write_bytes(path.read_bytes())
    key = dataset.source_digest(copies)
    assert key == dataset.source_digest(files)
    for copy in copies:
        text = copy.read_bytes()
        copy.write_bytes(text + b"\n# edited\n")
        assert dataset.source_digest(copies) != key, copy.name
        copy.write_bytes(text)
    # the cache key follows the source digest
    ds = SyntheticHands(4, image_size=16, progress=False)
    before = ds.cache_key()
    monkeypatch.setattr(dataset, "_source_hash", lambda: "another source")
    assert ds.cache_key() != before


def test_left_hands_and_pca_poses():
    left = SyntheticHands(12, image_size=64, seed=1, left_prob=1.0, occlusion=0.0, progress=False)
    s = check_sample(left[0], required=ALL_KEYS)
    assert s["is_left"] is True
    h = s["K"].double() @ s["keypoints3d"].double().T
    torch.testing.assert_close((h[:2] / h[2]).T.float(), s["keypoints2d"], atol=1e-3, rtol=0)
    # the mirrored model (its own, re-wound faces) is rendered front side out: visibility as for right hands
    model = handops.mano.synthetic_model(0, is_right=False)
    b = left.generate(range(12))
    expected = np.zeros_like(b["visibility"])
    for n in range(12):
        px = np.floor(b["keypoints2d"][n] + 0.5)
        rays = np.concatenate([px, np.ones((21, 1))], 1) @ np.linalg.inv(b["K"][n].astype(np.float64)).T
        inside = ((px >= 0) & (px <= 63)).all(1)
        surface = _ray_depth(b["vertices"][n], model.faces.numpy(), rays)
        expected[n] = inside & (b["keypoints3d"][n, :, 2] <= surface + _margins(model, b["betas"][n]))
    assert (b["visibility"] == expected).mean() > 0.99 and (~expected).sum() > 10
    mixed = SyntheticHands(16, image_size=48, seed=2, left_prob=0.5, progress=False).generate(range(16))
    assert 0 < mixed["is_left"].sum() < 16
    pca = SyntheticHands(4, image_size=48, seed=1, pose_mode="pca", progress=False)
    check_sample(pca[1], required=ALL_KEYS)
    assert not torch.equal(pca[1]["pose"], SyntheticHands(4, image_size=48, seed=1, progress=False)[1]["pose"])


@pytest.mark.parametrize("kwargs, word", [
    (dict(num_samples=-1), "num_samples"), (dict(num_samples=4, image_size=8), "image_size"),
    (dict(num_samples=4, split="dev"), "split"), (dict(num_samples=4, occlusion=1.5), "occlusion"),
    (dict(num_samples=4, num_subjects=2), "num_subjects"), (dict(num_samples=4, pose_mode="x"), "pose_mode"),
    (dict(num_samples=4, fill=(0.9, 0.2)), "fill"), (dict(num_samples=4, truncation=-0.1), "truncation"),
    (dict(num_samples=4, self_occlusion_scale=float("nan")), "self_occlusion_scale must be a finite number >= 0"),
    (dict(num_samples=4, self_occlusion_tolerance=float("inf")), "self_occlusion_tolerance must be a finite number"),
    (dict(num_samples=4, size_cue="yes"), "size_cue must be True or False"),
])
def test_bad_arguments_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SyntheticHands(progress=False, **kwargs)


def test_bad_index():
    ds = SyntheticHands(3, image_size=32, progress=False)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(TypeError):
        ds["0"]


# ------------------------------------------------------------------------------------------------
# viz and the preview


def test_draw_keypoints_marks_the_keypoints():
    image = torch.zeros(3, 40, 40)
    kp = torch.tensor([[5.0 + (i % 7) * 5, 5.0 + (i // 7) * 12] for i in range(21)])
    vis = torch.ones(21, dtype=torch.bool)
    vis[3] = False
    out = viz.draw_keypoints(image, kp, vis, scale=3)
    assert out.shape == (120, 120, 3) and out.dtype == np.uint8
    for i, (x, y) in enumerate(kp.numpy()):
        cx, cy = int(round((x + 0.5) * 3 - 0.5)), int(round((y + 0.5) * 3 - 0.5))
        patch = out[cy - 2:cy + 3, cx - 2:cx + 3]
        assert patch.max() > 0, i
    assert out[118:, 118:].max() == 0  # far from every keypoint and bone
    # a visible keypoint is a filled disc in its finger's colour
    cx, cy = int(round((float(kp[8, 0]) + 0.5) * 3 - 0.5)), int(round((float(kp[8, 1]) + 0.5) * 3 - 0.5))
    assert tuple(out[cy, cx]) == viz.FINGER_COLOURS["index"]


def test_draw_mesh_and_grid(tmp_path):
    ds = SyntheticHands(2, image_size=48, seed=0, occlusion=0.0, progress=False)
    s = ds[0]
    faces = handops.mano.synthetic_model(0).faces
    base = viz.to_uint8(s["image"])
    for mode in ("wireframe", "filled"):
        out = viz.draw_mesh(s["image"], s["vertices"], faces, s["K"], mode=mode, scale=2)
        assert out.shape == (96, 96, 3)
        diff = (out != viz.upscale(base, 2)).any(-1)
        assert diff.sum() > 50
        # changed pixels lie on the projected hand (near its keypoint box)
        ys, xs = np.nonzero(diff)
        box = s["bbox"].numpy() * 2
        assert xs.min() > box[0] - 30 and xs.max() < box[2] + 30
    tile = viz.draw_sample(s, scale=2, mesh="wireframe", faces=faces)
    assert tile.shape == (96, 96, 3)
    picture = viz.sample_grid([s, ds[1]], ncols=2, scale=2, raw=True)
    assert picture.size == (4 * 96 + 5 * 2, 96 + 2 * 2)
    path = viz.save_png(picture, tmp_path / "sub" / "grid.png")
    assert Image.open(path).size == picture.size
    with pytest.raises(ValueError, match="mode"):
        viz.draw_mesh(s["image"], s["vertices"], faces, s["K"], mode="solid")


def test_preview_cli_writes_a_png(tmp_path):
    out = tmp_path / "samples.png"
    preview.main(["--dataset", "synthetic", "--num", "4", "--image-size", "40", "--out", str(out), "--scale", "2"])
    img = Image.open(out)
    assert img.size == (2 * 80 + 3 * 2, 2 * 80 + 3 * 2)
    assert np.asarray(img).std() > 10
    # the module runs as a program too
    out2 = tmp_path / "cli.png"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "handops_models.data.preview", "--num", "2", "--image-size", "32",
                           "--out", str(out2)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert out2.exists() and "wrote" in done.stdout
    with pytest.raises(SystemExit):
        preview.main(["--dataset", "nonexistent", "--out", str(tmp_path / "x.png")])


def test_benchmark_smoke(tmp_path):
    from benchmarks import bench_synthetic_data

    csv_path = tmp_path / "synthetic.csv"
    table = bench_synthetic_data.run(["--num", "12", "--image-size", "32", "--batch", "5", "--workers", "0",
                                      "--csv", str(csv_path)])
    for mode in ("fresh", "cache_write", "cache_read"):
        assert f"| {mode} | 12 |" in table
    import csv

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["mode"] for r in rows] == ["fresh", "cache_write", "cache_read"]
    assert all(float(r["samples_per_s"]) > 0 and r["image_size"] == "32" for r in rows)
