"""Training targets (heatmaps, AGMN pairwise kernels, rotation angle, pose clusters) and sample transforms."""

import math

import pytest
import torch
import torch.nn.functional as F

import handops
from handops._reference.tree_marginals import message_conv, tree_marginals_reference
from handops_models.data import targets as T
from handops_models.data import transforms as X
from handops_models.data.sample import check_sample

STRIDE = 8


def grid_hand(seed=0, lo=10, hi=36):
    """Keypoints [21, 2] (image pixels) whose heatmap coordinates are integers in [lo, hi]: a random hand
    grown along the tree with bones of at most 4 heatmap pixels per axis."""
    gen = torch.Generator().manual_seed(seed)
    tree = handops.hand_tree()
    uv = torch.zeros(21, 2)
    uv[0] = torch.tensor([23.0, 30.0])
    for child in range(1, 21):
        parent = tree.parents[child]
        while True:
            step = torch.randint(-4, 5, (2,), generator=gen).float()
            cand = uv[parent] + step
            if step.abs().sum() > 0 and bool(((cand >= lo) & (cand <= hi)).all()):
                break
        uv[child] = cand
    return T.heatmap_to_image(uv, STRIDE), uv


# ------------------------------------------------------------------------------------------ heatmaps

def test_coordinate_mapping_round_trip_and_pixel_centres():
    x = torch.tensor([[3.5, 3.5], [0.0, 0.0], [367.0, 11.5]])
    uv = T.image_to_heatmap(x, 8)
    assert torch.allclose(uv[0], torch.zeros(2))  # centre of the first 8x8 block is input pixel 3.5
    assert torch.allclose(uv[1], torch.full((2,), -3.5 / 8))
    assert torch.allclose(T.heatmap_to_image(uv, 8), x)
    assert torch.allclose(T.image_to_heatmap(x, 8, centre_aligned=False), x / 8)


def test_heatmap_peak_at_keypoint_value_and_sum():
    kp, uv = grid_hand(1)
    maps = T.keypoint_heatmaps(kp, size=46, stride=STRIDE, sigma=1.0)
    assert maps.shape == (21, 46, 46)
    flat = maps.flatten(1).argmax(1)
    assert torch.equal(torch.stack([flat % 46, flat // 46], 1), uv.long())  # (col, row) = (u, v)
    assert torch.allclose(maps.amax((-2, -1)), torch.ones(21))
    # an interior sampled Gaussian sums to 2 pi sigma^2
    assert torch.allclose(maps.sum((-2, -1)), torch.full((21,), 2 * math.pi), rtol=1e-4)
    norm = T.keypoint_heatmaps(kp, sigma=1.0, normalize=True)
    assert torch.allclose(norm.sum((-2, -1)), torch.ones(21), atol=1e-6)
    assert torch.allclose(norm, maps / maps.sum((-2, -1), keepdim=True), atol=1e-7)


def test_heatmap_subpixel_centroid_batch_and_rectangular():
    gen = torch.Generator().manual_seed(2)
    kp = 60 + 250 * torch.rand(3, 21, 2, generator=gen)
    maps = T.keypoint_heatmaps(kp, size=(46, 50), stride=STRIDE, sigma=1.5)
    assert maps.shape == (3, 21, 46, 50)
    cols, rows = torch.arange(50.0), torch.arange(46.0)
    total = maps.sum((-2, -1))
    centroid = torch.stack([(maps.sum(-2) * cols).sum(-1) / total, (maps.sum(-1) * rows).sum(-1) / total], -1)
    assert torch.allclose(centroid, T.image_to_heatmap(kp, STRIDE), atol=1e-3)
    plain = T.keypoint_heatmaps(kp, size=(46, 50), sigma=1.5, centre_aligned=False)
    flat = plain[0, 0].argmax()
    assert torch.equal(torch.stack([flat % 50, flat // 50]), (kp[0, 0] / 8).round().long())


def test_heatmap_invisible_is_zero_and_mask():
    kp, _ = grid_hand(3)
    vis = torch.ones(21, dtype=torch.bool)
    vis[[4, 7]] = False
    maps = T.keypoint_heatmaps(kp, visibility=vis, normalize=True)
    assert bool((maps[[4, 7]] == 0).all()) and bool((maps[0] > 0).any())
    assert torch.equal(T.target_mask(kp, vis), vis)
    far = kp.clone()
    far[0] = torch.tensor([-500.0, -500.0])  # far outside: its Gaussian vanishes on the map
    assert float(T.keypoint_heatmaps(far)[0].max()) < 1e-30
    edge = kp.clone()
    edge[1] = torch.tensor([367.6, 100.0])  # just outside a 368-pixel image: masked out with image_size
    mask = T.target_mask(edge, vis, image_size=368)
    assert not bool(mask[1]) and not bool(mask[4]) and int(mask.sum()) == 18
    assert bool((T.keypoint_heatmaps(edge, visibility=mask)[1] == 0).all())


def test_heatmap_bad_input():
    with pytest.raises(ValueError, match=r"\[\.\.\., K, 2\]"):
        T.keypoint_heatmaps(torch.zeros(21, 3))
    with pytest.raises(ValueError, match="sigma"):
        T.keypoint_heatmaps(torch.zeros(21, 2), sigma=0)
    with pytest.raises(ValueError, match="stride"):
        T.keypoint_heatmaps(torch.zeros(21, 2), stride=0)
    with pytest.raises(TypeError, match="bool"):
        T.keypoint_heatmaps(torch.zeros(21, 2), visibility=torch.ones(21))
    with pytest.raises(ValueError, match="visibility"):
        T.keypoint_heatmaps(torch.zeros(21, 2), visibility=torch.ones(20, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        T.keypoint_heatmaps(torch.full((21, 2), float("nan")))


# ------------------------------------------------------------------------------------------ pairwise

def test_pairwise_kernel_peak_at_centre_plus_offset():
    kp, uv = grid_hand(4)
    tree = handops.hand_tree()
    q = T.pairwise_targets(kp, tree, kernel_size=45, stride=STRIDE, sigma=1.0)
    assert q.shape == (40, 45, 45)
    for m, (i, j) in enumerate(tree.messages):
        d = (uv[j] - uv[i]).long()
        flat = int(q[m].argmax())
        assert (flat // 45, flat % 45) == (22 + int(d[1]), 22 + int(d[0])), (i, j)  # [row, col]
    # the offset is a difference: the coordinate convention cancels
    assert torch.allclose(q, T.pairwise_targets(kp, centre_aligned=False), atol=1e-6)
    # the reverse message has the mirrored kernel
    m, r = tree.message_index(5, 6), tree.message_index(6, 5)
    assert torch.allclose(q[m], q[r].flip(-2, -1), atol=1e-6)


def test_pairwise_convention_message_peaks_at_child_with_reference():
    """The proof the brief asks for: unary = Gaussian heatmap of i only, kernel = the target of (i, j);
    handops' reference message i -> j peaks at keypoint j, for every one of the 40 messages."""
    kp, uv = grid_hand(5)
    tree = handops.hand_tree()
    q = T.pairwise_targets(kp[None], tree)[0]
    for m, (i, j) in enumerate(tree.messages):
        only_i = torch.zeros(21, dtype=torch.bool)
        only_i[i] = True
        h = T.keypoint_heatmaps(kp, visibility=only_i)[i]
        msg = message_conv(h[None], q[m][None])[0]
        flat = int(msg.argmax())
        assert (flat % 46, flat // 46) == (int(uv[j, 0]), int(uv[j, 1])), (i, j)


@pytest.mark.parametrize("fractional", [False, True])
def test_pairwise_targets_make_tree_marginals_recover_the_hand(fractional):
    """Only the wrist observed (others uniform): with the ground-truth kernels, every marginal of
    handops.tree_marginals (and of the reference) peaks at its keypoint."""
    kp, uv = grid_hand(6)
    if fractional:
        kp = kp + (torch.rand(21, 2, generator=torch.Generator().manual_seed(7)) - 0.5) * 0.6 * STRIDE
    unary = torch.ones(1, 21, 46, 46, dtype=torch.float64)
    unary[0, 0] = T.keypoint_heatmaps(kp.double())[0]
    q = T.pairwise_targets(kp.double()[None])
    marg = handops.tree_marginals(unary, q, handops.hand_tree())
    ref = tree_marginals_reference(unary, q[:, None], torch.ones(1, 1, dtype=torch.float64), handops.hand_tree())[0]
    assert torch.allclose(marg, ref, atol=1e-8)
    flat = marg[0].flatten(1).argmax(1)
    peak = torch.stack([flat % 46, flat // 46], 1).double()
    target = T.image_to_heatmap(kp.double(), STRIDE)
    assert float((peak - target).abs().max()) <= (0.5 + 1e-6 if not fractional else 1.0)
    if not fractional:
        assert torch.equal(peak.long(), uv.long())


def test_pairwise_visibility_and_errors():
    kp, _ = grid_hand(8)
    vis = torch.ones(21, dtype=torch.bool)
    vis[6] = False
    tree = handops.hand_tree()
    q = T.pairwise_targets(kp, visibility=vis, normalize=True)
    for m, (i, j) in enumerate(tree.messages):
        assert bool((q[m] == 0).all()) == (6 in (i, j))
    nonzero = q.sum((-2, -1)) > 0
    assert torch.allclose(q.sum((-2, -1))[nonzero], torch.ones(int(nonzero.sum())), atol=1e-6)
    with pytest.raises(ValueError, match="nodes"):
        T.pairwise_targets(torch.zeros(20, 2))
    with pytest.raises(TypeError, match="Tree"):
        T.pairwise_targets(kp, tree=[0, 1])
    # an even size has no centre: refused here rather than later by tree_marginals
    with pytest.raises(ValueError, match=r"kernel_size must be odd .* got 14x14"):
        T.pairwise_targets(kp, kernel_size=14)
    with pytest.raises(ValueError, match=r"kernel_size must be odd .* got 45x44"):
        T.pairwise_targets(kp, kernel_size=(45, 44))


# ------------------------------------------------------------------------------------------ rotation

def _hand_with_direction(v):
    kp = torch.zeros(21, 2)
    kp[:] = torch.tensor([100.0, 100.0])
    kp[T.MIDDLE_MCP] = kp[T.WRIST] + torch.tensor(v)
    return kp


@pytest.mark.parametrize("direction, angle", [((0.0, -10.0), 0.0), ((10.0, 0.0), 90.0), ((-10.0, 0.0), -90.0),
                                              ((0.0, 10.0), 180.0), ((5.0, -5.0), 45.0), ((-3.0, 3.0), -135.0)])
def test_rotation_target_hand_made(direction, angle):
    kp = _hand_with_direction(direction)
    assert float(T.rotation_target(kp)) == pytest.approx(angle, abs=1e-5)
    assert float(T.rotation_target(kp, degrees=False)) == pytest.approx(math.radians(angle), abs=1e-6)


def test_rotation_target_batch_and_rotate_keypoints_makes_upright():
    gen = torch.Generator().manual_seed(9)
    kp = torch.rand(6, 21, 2, generator=gen) * 300
    angle = T.rotation_target(kp)
    assert angle.shape == (6,) and bool((angle > -180).all() & (angle <= 180).all())
    upright = T.rotate_keypoints(kp, angle)
    assert torch.allclose(T.rotation_target(upright), torch.zeros(6), atol=1e-3)
    # a rotation keeps distances
    assert torch.allclose(torch.cdist(upright, upright), torch.cdist(kp, kp), atol=1e-3)
    with pytest.raises(ValueError, match="21"):
        T.rotation_target(torch.zeros(5, 2))


# ------------------------------------------------------------------------------------------ clusters

def _planted(num_per=30, seed=10):
    """Three base hands, each copied with a random rotation, translation and 0.3 px noise."""
    gen = torch.Generator().manual_seed(seed)
    tree = handops.hand_tree()
    bases = []
    for _ in range(3):
        b = torch.zeros(21, 2)
        for child in range(1, 21):
            b[child] = b[tree.parents[child]] + (torch.rand(2, generator=gen) - 0.5) * 60
        bases.append(b)
    kps, labels = [], []
    for k, b in enumerate(bases):
        for _ in range(num_per):
            ang = float(torch.rand((), generator=gen)) * 360 - 180
            shift = torch.rand(2, generator=gen) * 200
            noisy = b + 0.3 * torch.randn(21, 2, generator=gen)
            kps.append(T.rotate_keypoints(noisy, ang, centre=torch.zeros(2)) + shift)
            labels.append(k)
    perm = torch.randperm(len(kps), generator=gen)
    return torch.stack(kps)[perm], torch.tensor(labels)[perm]


def test_pose_features_are_rotation_and_translation_invariant():
    kp, _ = _planted(2)
    f = T.pose_features(kp)
    assert f.shape == (6, 40)
    moved = T.rotate_keypoints(kp, torch.tensor([30.0] * 6), centre=torch.tensor([5.0, -7.0])) + 11.0
    assert torch.allclose(T.pose_features(moved), f, atol=1e-3)


def test_clusters_recover_planted_clusters_deterministically():
    kp, truth = _planted()
    fit = T.fit_pose_clusters(kp, num_clusters=3, seed=0)
    assert fit.centres.shape == (3, 40)
    labels = fit.labels(kp)
    # a perfect match up to the permutation of cluster ids
    for k in range(3):
        assert len(set(labels[truth == k].tolist())) == 1
    assert len(set(labels.tolist())) == 3
    again = T.fit_pose_clusters(kp, num_clusters=3, seed=0)
    assert torch.equal(again.centres, fit.centres) and again.inertia == fit.inertia
    assert torch.equal(T.assign_pose_clusters(kp, fit.centres), labels)
    w = fit.weights(kp, temperature=100.0)
    assert w.shape == (90, 3) and torch.allclose(w.sum(1), torch.ones(90, dtype=w.dtype))
    assert torch.equal(w.argmax(1), labels)
    hard = T.pose_cluster_weights(kp, fit.centres, temperature=1e-3)
    assert torch.allclose(hard, F.one_hot(labels, 3).to(hard.dtype), atol=1e-6)
    # three centres explain almost all of the spread of one
    assert fit.inertia < 0.05 * T.fit_pose_clusters(kp, num_clusters=1).inertia


def test_clusters_bad_input():
    kp, _ = _planted(2)
    with pytest.raises(ValueError, match="num_clusters"):
        T.fit_pose_clusters(kp, num_clusters=7)
    with pytest.raises(ValueError, match="centres"):
        T.assign_pose_clusters(kp, torch.zeros(3, 39))
    with pytest.raises(ValueError, match="temperature"):
        T.pose_cluster_weights(kp, torch.zeros(3, 40), temperature=0)


# ------------------------------------------------------------------------------------------ transforms

def make_sample(height=400, width=360, seed=0, fx=520.0, fy=480.0):
    """A sample whose keypoints2d are the projections of keypoints3d; channel 0 of the image is the ramp
    x / (W - 1), channel 1 the ramp y / (H - 1) (so image and keypoints can be checked to move together)."""
    gen = torch.Generator().manual_seed(seed)
    K = torch.tensor([[fx, 0.0, 170.0], [0.0, fy, 210.0], [0.0, 0.0, 1.0]])
    k3 = torch.cat([(torch.rand(21, 2, generator=gen) - 0.5) * 0.12, 0.5 + 0.05 * torch.rand(21, 1, generator=gen)], 1)
    verts = torch.cat([(torch.rand(50, 2, generator=gen) - 0.5) * 0.12, 0.5 + 0.05 * torch.rand(50, 1, generator=gen)], 1)
    proj = k3 @ K.T
    kp = proj[:, :2] / proj[:, 2:]
    xs = torch.arange(width, dtype=torch.float32) / (width - 1)
    ys = torch.arange(height, dtype=torch.float32) / (height - 1)
    image = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                         torch.rand(height, width, generator=gen)])
    sample = {
        "image": image, "keypoints2d": kp, "visibility": torch.ones(21, dtype=torch.bool), "keypoints3d": k3,
        "vertices": verts, "pose": (torch.rand(48, generator=gen) - 0.5), "betas": torch.randn(10, generator=gen),
        "K": K, "subject": 3, "bbox": torch.cat([kp.min(0).values, kp.max(0).values]), "is_left": False,
    }
    return check_sample(sample)


def project(K, X):
    p = X.double() @ K.double().T
    return p[:, :2] / p[:, 2:]


def sample_image(image, points):
    """Bilinear values [3, P] of image at pixel positions points [P, 2]."""
    h, w = image.shape[1:]
    g = torch.stack([2 * points[:, 0] / (w - 1) - 1, 2 * points[:, 1] / (h - 1) - 1], -1)
    return F.grid_sample(image[None].double(), g[None, None].double(), align_corners=True)[0, :, 0]


def check_geometry(before, after, atol=2e-3):
    check_sample(after)
    # the vertices project where the same 2-D affine map takes their old projections
    moved = transform_points(before, after, project(before["K"], before["vertices"]))
    assert torch.allclose(project(after["K"], after["vertices"]), moved, atol=atol)
    assert torch.allclose(project(after["K"], after["keypoints3d"]), after["keypoints2d"].double(), atol=atol)
    kp = after["keypoints2d"]
    assert torch.allclose(after["bbox"], torch.cat([kp.min(0).values, kp.max(0).values]))
    # image and keypoints moved together: the ramps at the new keypoint read the old coordinates
    h, w = after["image"].shape[1:]
    inside = (kp[:, 0] > 1) & (kp[:, 0] < w - 2) & (kp[:, 1] > 1) & (kp[:, 1] < h - 2)
    old = before["keypoints2d"].double()
    hb, wb = before["image"].shape[1:]
    ramps = sample_image(after["image"], kp[inside].double())[:2].T
    assert torch.allclose(ramps, old[inside] / torch.tensor([wb - 1.0, hb - 1.0], dtype=torch.float64), atol=atol)


def transform_points(before, after, points):
    """The 2-D affine map the transform applied, fitted on the keypoints (for the vertex check)."""
    a = torch.linalg.lstsq(torch.cat([before["keypoints2d"].double(), torch.ones(21, 1, dtype=torch.float64)], 1),
                           after["keypoints2d"].double()).solution  # [3, 2]
    return torch.cat([points, torch.ones(len(points), 1, dtype=torch.float64)], 1) @ a


def test_hand_crop_geometry_and_size():
    s = make_sample()
    out = X.HandCrop(368, 2.2)(s)
    assert out["image"].shape == (3, 368, 368)
    check_geometry(s, out)
    box = out["bbox"]
    side = float(max(box[2] - box[0], box[3] - box[1]))
    assert side == pytest.approx(368 / 2.2, rel=1e-4)
    assert float((box[0] + box[2]) / 2) == pytest.approx(183.5, abs=1e-3)
    assert float((box[1] + box[3]) / 2) == pytest.approx(183.5, abs=1e-3)
    K = out["K"]
    assert float(K[0, 1]) == 0 and float(K[1, 0]) == 0
    scale = 368 / (2.2 * float(max(s["bbox"][2] - s["bbox"][0], s["bbox"][3] - s["bbox"][1])))
    assert float(K[0, 0]) == pytest.approx(520 * scale, rel=1e-5)
    assert float(K[1, 1]) == pytest.approx(480 * scale, rel=1e-5)
    assert bool(out["visibility"].all())
    assert out["subject"] == 3 and torch.equal(out["betas"], s["betas"]) and torch.equal(out["pose"], s["pose"])
    assert s["image"].shape == (3, 400, 360)  # the input is left alone


def test_tight_crop_marks_outside_keypoints_invisible_and_missing_keys():
    s = make_sample()
    out = X.HandCrop(64, scale=0.5)(s)
    kp = out["keypoints2d"]
    outside = (kp < -0.5).any(1) | (kp > 63.5).any(1)
    assert bool(outside.any()) and torch.equal(out["visibility"], ~outside)
    # only keypoints2d: the crop still places and maps them, and adds nothing
    small = X.HandCrop(368)({"keypoints2d": s["keypoints2d"]})
    assert set(small) == {"keypoints2d"} and torch.allclose(small["keypoints2d"], out_crop_kp(s), atol=1e-4)
    # only a bbox
    boxed = X.HandCrop(100)({"bbox": s["bbox"]})
    assert float(boxed["bbox"][2] - boxed["bbox"][0]) <= 100 / 2.2 + 1e-3
    with pytest.raises(ValueError, match="keypoints2d"):
        X.HandCrop(368)({"K": s["K"]})


def out_crop_kp(s):
    return X.HandCrop(368)(s)["keypoints2d"]


@pytest.mark.parametrize("angle", [90.0, -37.0, 163.0])
def test_rotation_geometry(angle):
    s = make_sample(seed=1, fx=500.0, fy=500.0)
    out = X.Rotate(angle)(s)
    check_geometry(s, out)
    c = torch.tensor([(360 - 1) / 2, (400 - 1) / 2])
    d_old, d_new = s["keypoints2d"] - c, out["keypoints2d"] - c
    t = math.radians(angle)
    assert torch.allclose(d_new[:, 0], d_old[:, 0] * math.cos(t) + d_old[:, 1] * math.sin(t), atol=1e-3)
    assert torch.allclose(d_new[:, 1], -d_old[:, 0] * math.sin(t) + d_old[:, 1] * math.cos(t), atol=1e-3)
    # fx = fy, no skew: K stays an upper-triangular pinhole camera
    assert torch.allclose(out["K"][:2, :2], torch.eye(2) * 500, atol=1e-3)


def test_rotate_90_is_rot90_on_a_square_image_and_ccw():
    s = make_sample(300, 300, seed=2)
    out = X.Rotate(90)({"image": s["image"], "keypoints2d": s["keypoints2d"]})
    assert torch.allclose(out["image"], torch.rot90(s["image"], 1, (1, 2)), atol=1e-5)
    # a point right of the centre goes above it
    p = X.Rotate(90)({"image": s["image"], "keypoints2d": torch.tensor([[249.5] + [149.5]] * 21)})["keypoints2d"]
    assert torch.allclose(p[0], torch.tensor([149.5, 49.5]), atol=1e-4)


def test_rotate_by_target_makes_hand_upright():
    s = make_sample(seed=3)
    alpha = float(T.rotation_target(s["keypoints2d"]))
    out = X.Rotate(alpha)(s)
    assert float(T.rotation_target(out["keypoints2d"])) == pytest.approx(0.0, abs=1e-3)


def test_rotation_and_flip_pose_agree_with_mano():
    """The pose updates are the real ones: MANO with the new pose gives the transformed mesh (root-relative
    for a rotation, which also moves the root); a flipped right hand is the left model with the new pose."""
    right = handops.ManoLayer(handops.mano.synthetic_model(0), use_pca=False, flat_hand_mean=True)
    left = handops.ManoLayer(handops.mano.synthetic_model(0, is_right=False), use_pca=False, flat_hand_mean=True)
    gen = torch.Generator().manual_seed(4)
    pose = ((torch.rand(48, generator=gen) - 0.5) * 1.2).double()
    betas = torch.randn(1, 10, generator=gen, dtype=torch.float64)
    o = right(betas, pose[None, :3], pose[None, 3:])
    shift = torch.tensor([0.0, 0.0, 0.6], dtype=torch.float64)
    base = {"image": torch.zeros(3, 200, 240), "pose": pose.float(), "vertices": (o.vertices[0] + shift).float(),
            "keypoints3d": (o.joints[0] + shift).float(), "is_left": False}
    rot = X.Rotate(50.0)(base)
    p = rot["pose"].double()
    o2 = right(betas, p[None, :3], p[None, 3:])
    rel = lambda v, j: v - j[:1]  # noqa: E731
    assert torch.allclose(rel(o2.vertices[0], o2.joints[0]).float(), rel(rot["vertices"], rot["keypoints3d"]), atol=1e-5)
    flip = X.HorizontalFlip()(base)
    assert flip["is_left"] is True
    p = flip["pose"].double()
    o3 = left(betas, p[None, :3], p[None, 3:])
    assert torch.allclose((o3.vertices[0] + shift).float(), flip["vertices"], atol=1e-5)
    assert torch.allclose((o3.joints[0] + shift).float(), flip["keypoints3d"], atol=1e-5)


def test_flip_geometry_and_involution():
    s = make_sample(seed=5)
    out = X.HorizontalFlip()(s)
    check_geometry(s, out)
    assert torch.allclose(out["keypoints2d"][:, 0], 359 - s["keypoints2d"][:, 0])
    assert torch.equal(out["keypoints2d"][:, 1], s["keypoints2d"][:, 1])
    assert torch.equal(out["image"], s["image"].flip(-1))
    assert out["is_left"] is True
    assert float(out["K"][0, 2]) == pytest.approx(359 - 170.0) and float(out["K"][0, 0]) == pytest.approx(520.0)
    assert torch.allclose(out["keypoints3d"][:, 0], -s["keypoints3d"][:, 0])
    back = X.HorizontalFlip()(out)
    for key in ("image", "keypoints2d", "keypoints3d", "vertices", "K", "bbox", "pose"):
        assert torch.allclose(back[key], s[key], atol=1e-5), key
    assert back["is_left"] is False


def test_scale_and_resize_geometry():
    s = make_sample(seed=6)
    out = X.Scale(1.5)(s)
    check_geometry(s, out)
    c = torch.tensor([179.5, 199.5])
    assert torch.allclose(out["keypoints2d"] - c, 1.5 * (s["keypoints2d"] - c), atol=1e-3)
    assert float(out["K"][0, 0]) == pytest.approx(780.0)
    r = X.Resize((200, 120))(s)
    assert r["image"].shape == (3, 200, 120)
    check_geometry(s, r, atol=3e-3)
    assert torch.allclose(r["keypoints2d"][:, 0], (s["keypoints2d"][:, 0] + 0.5) / 3 - 0.5, atol=1e-4)


def test_color_jitter_changes_only_the_image():
    s = make_sample(seed=7)
    out = X.ColorJitter(0.4, 0.4, 0.4, 0.05, seed=1)(s)
    check_sample(out)
    assert not torch.equal(out["image"], s["image"])
    for key in s:
        if key != "image":
            assert out[key] is s[key]
    bright = X.ColorJitter(0.5, 0.0, 0.0, 0.0, seed=2)
    gen = torch.Generator().manual_seed(11)
    b = 0.5 + float(torch.rand((), generator=gen, dtype=torch.float64))  # the factor it will draw
    got = bright({"image": s["image"] * 0.5}, torch.Generator().manual_seed(11))["image"]
    assert torch.allclose(got, (s["image"] * 0.5 * b).clamp(0, 1), atol=1e-6)
    # a hue rotation keeps the luma Y = 0.299 R + 0.587 G + 0.114 B (mid-range colours: no clamping)
    mid = 0.4 + 0.2 * s["image"]
    hued = X.ColorJitter(0.0, 0.0, 0.0, 0.1)({"image": mid}, torch.Generator().manual_seed(1))["image"]
    luma = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    assert not torch.allclose(hued, mid, atol=1e-3)
    assert torch.allclose((hued * luma).sum(0), (mid * luma).sum(0), atol=1e-5)
    with pytest.raises(ValueError, match="hue"):
        X.ColorJitter(hue=0.7)


def augment(seed):
    return X.Compose([X.RandomHorizontalFlip(0.5), X.RandomRotation(30), X.RandomScale(0.8, 1.2),
                      X.ColorJitter(), X.HandCrop(96)], seed=seed)


def test_compose_is_deterministic_and_keeps_projection():
    s = make_sample(seed=8)
    a, b, c = augment(0)(s), augment(0)(s), augment(1)(s)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["image"], c["image"])
    # the same generator passed at call time overrides the transform's own
    d = augment(5)(s, torch.Generator().manual_seed(3))
    e = augment(6)(s, torch.Generator().manual_seed(3))
    assert torch.equal(d["keypoints2d"], e["keypoints2d"]) and torch.equal(d["image"], e["image"])
    # a seeded transform continues its sequence
    t = augment(0)
    first, second = t(s), t(s)
    assert not torch.equal(first["image"], second["image"])
    for out in (a, c, d, first, second):
        check_sample(out)
        assert out["image"].shape == (3, 96, 96)
        assert torch.allclose(project(out["K"], out["keypoints3d"]), out["keypoints2d"].double(), atol=2e-3)
    tiny = {"image": torch.zeros(3, 32, 32), "bbox": torch.tensor([10.0, 10.0, 20.0, 20.0]), "is_left": False}
    flips = [augment(k)(tiny)["is_left"] for k in range(12)]
    assert True in flips and False in flips


def test_transform_errors():
    with pytest.raises(ValueError, match="image"):
        X.Rotate(10)({"keypoints2d": torch.zeros(21, 2)})
    with pytest.raises(TypeError, match="dict"):
        X.HorizontalFlip()(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="p must"):
        X.RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match="low"):
        X.RandomScale(1.2, 0.8)
    with pytest.raises(TypeError, match="callables"):
        X.Compose([1])
