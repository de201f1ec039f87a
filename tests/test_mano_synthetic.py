"""The procedural MANO hand: model checks, mesh sanity, smplx compatibility and shape semantics."""

import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from handops.mano import MANO_PARENTS, ManoModel, synthetic_model
from handops.mano.synthetic import FINGER_JOINTS, SHAPE_COMPONENTS, _forward, hand_length_width

FIELDS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces", "parents",
          "hands_components", "hands_mean", "fingertip_ids")


@pytest.fixture(scope="module", params=[True, False], ids=["right", "left"])
def model(request):
    return synthetic_model(0, is_right=request.param)


@pytest.fixture(scope="module")
def right():
    return synthetic_model(0)


def _joints(m: ManoModel) -> np.ndarray:
    return (m.J_regressor @ m.v_template).numpy()


def _to_right(m: ManoModel, x: np.ndarray) -> np.ndarray:
    """Positions in the right-hand frame (the left hand is mirrored x -> -x)."""
    return x if m.is_right else x * np.array([-1.0, 1.0, 1.0])


# ---------------------------------------------------------------- model checks


def test_shapes_and_checks(model):
    assert isinstance(model, ManoModel)
    v = model.num_vertices
    assert 700 <= v <= 1000
    assert model.num_betas == 10
    assert model.parents.tolist() == list(MANO_PARENTS)
    assert torch.allclose(model.J_regressor.sum(1), torch.ones(16, dtype=torch.float64))
    assert (model.J_regressor >= 0).all() and ((model.J_regressor > 0).sum(1) <= 40).all()  # sparse, convex
    assert torch.allclose(model.weights.sum(1), torch.ones(v, dtype=torch.float64))
    assert (model.weights >= 0).all()
    c = model.hands_components
    assert torch.allclose(c @ c.T, torch.eye(45, dtype=torch.float64), atol=1e-10)
    assert model.posedirs.abs().max() > 1e-4 and model.posedirs.abs().max() < 0.01
    assert model.hands_mean.abs().max() < 0.5


def test_deterministic_per_seed():
    a, b, c = synthetic_model(3), synthetic_model(3), synthetic_model(4)
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.v_template, c.v_template)
    # other seeds vary details only slightly
    assert (a.v_template - synthetic_model(0).v_template).norm(dim=1).max() < 0.01


def test_left_is_mirror_of_right(right):
    left = synthetic_model(0, is_right=False)
    assert torch.allclose(left.v_template * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64), right.v_template)
    assert torch.equal(left.faces, right.faces[:, [0, 2, 1]])
    # the mirrored pose gives the mirrored mesh
    pose = 2.0 * right.hands_components[0].numpy() + 0.5 * right.hands_components[2].numpy()
    vr, _ = _forward(right, hand_pose=pose)
    vl, _ = _forward(left, hand_pose=(pose.reshape(15, 3) * [1.0, -1.0, -1.0]).reshape(45))
    assert np.allclose(vl * [-1.0, 1.0, 1.0], vr, atol=1e-12)


# ---------------------------------------------------------------- mesh


def _components(faces: np.ndarray, n: int) -> list[np.ndarray]:
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, c in faces:
        for x, y in ((a, b), (b, c)):
            parent[find(x)] = find(y)
    roots = np.array([find(i) for i in range(n)])
    return [faces[roots[faces[:, 0]] == r] for r in np.unique(roots)]


def test_mesh_closed_and_outward(model):
    f = model.faces.numpy()
    v = model.v_template.numpy()
    assert len(np.unique(f)) == len(v)  # no unused vertices
    assert (f[:, 0] != f[:, 1]).all() and (f[:, 1] != f[:, 2]).all() and (f[:, 0] != f[:, 2]).all()
    undirected = Counter(tuple(sorted(e)) for t in f for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))
    assert set(undirected.values()) == {2}  # every edge borders exactly two faces: closed, manifold
    directed = Counter((t[a], t[b]) for t in f for a, b in ((0, 1), (1, 2), (2, 0)))
    assert max(directed.values()) == 1  # consistent winding
    areas = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    assert areas.min() > 1e-9
    parts = _components(f, len(v))
    assert len(parts) == 6  # palm and five fingers, each closed
    for pf in parts:  # positive signed volume: normals point outwards
        vol = np.einsum("ij,ij->i", v[pf[:, 0]], np.cross(v[pf[:, 1]], v[pf[:, 2]])).sum() / 6
        assert vol > 1e-6


def test_proportions(model):
    v = _to_right(model, model.v_template.numpy())
    j = _to_right(model, _joints(model))
    tips = v[model.fingertip_ids.numpy()]
    assert np.abs(j[0]).max() < 1e-12  # wrist at the origin
    length, width = hand_length_width(model)
    assert 0.18 <= length <= 0.195
    assert 0.035 <= width <= 0.05
    assert 0.07 <= np.ptp(v[:, 2][v[:, 0] > 0.05]) - 0.0 <= 0.2  # palm + fingers span
    palm = np.unique(max(_components(model.faces.numpy(), len(v)), key=len))  # the largest part
    palm_width = np.ptp(v[palm, 2])
    assert 0.07 <= palm_width <= 0.09
    # fingers along +x, palm normal -y: all tips of the long fingers far along +x
    thumb, index, middle, ring, little = tips
    assert middle[0] > max(index[0], ring[0]) > little[0] > thumb[0] > 0.05
    # MCPs on a line across the palm (along z), index on the thumb side (-z)
    mcps = j[[1, 4, 10, 7]]
    assert np.all(np.diff(mcps[:, 2]) > 0.01)
    assert np.ptp(mcps[:, 0]) < 0.02 and np.ptp(mcps[:, 1]) < 0.005
    assert thumb[2] < mcps[0, 2]
    # joints ordered along each finger towards its tip
    for name, tip in zip(("thumb", "index", "middle", "ring", "little"), tips):
        ids = FINGER_JOINTS[name]
        chain = np.concatenate([j[[0, *ids]], tip[None]])
        d = tip - j[ids[0]]
        proj = (chain[1:] - j[ids[0]]) @ d
        assert np.all(np.diff(proj) > 0), name
    # every joint is inside the mesh's bounding box and close to some vertex
    for p in j:
        assert np.linalg.norm(v - p, axis=1).min() < 0.025
    assert (j >= v.min(0)).all() and (j <= v.max(0)).all()


# ---------------------------------------------------------------- smplx


def _write_pkl(m: ManoModel, path) -> None:
    """A MANO pickle with the official key names, as smplx reads it."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    kintree = np.array([MANO_PARENTS, range(16)], dtype=np.int64)
    kintree[0, 0] = 4294967295
    data = {
        "v_template": m.v_template.numpy(), "shapedirs": m.shapedirs.numpy(), "posedirs": m.posedirs.numpy(),
        "J_regressor": scipy_sparse.csc_matrix(m.J_regressor.numpy()), "weights": m.weights.numpy(),
        "f": m.faces.numpy().astype(np.uint32), "kintree_table": kintree,
        "hands_components": m.hands_components.numpy(), "hands_mean": m.hands_mean.numpy(),
    }
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)


@pytest.fixture(scope="module")
def smplx_layer(model, tmp_path_factory):
    smplx = pytest.importorskip("smplx")
    path = tmp_path_factory.mktemp("mano") / ("MANO_RIGHT.pkl" if model.is_right else "MANO_LEFT.pkl")
    _write_pkl(model, path)
    layer = smplx.MANO(model_path=str(path), is_rhand=model.is_right, use_pca=False, flat_hand_mean=True,
                       dtype=torch.float64)
    assert layer.is_rhand == model.is_right
    return layer


def _run(layer, betas=None, pose=None):
    kw = {}
    if betas is not None:
        kw["betas"] = torch.as_tensor(betas, dtype=torch.float64)[None]
    if pose is not None:
        kw["hand_pose"] = torch.as_tensor(pose, dtype=torch.float64)[None]
    with torch.no_grad():
        out = layer(**kw)
    return out.vertices[0].numpy(), out.joints[0].numpy()


def test_smplx_rest_pose(model, smplx_layer):
    v, j = _run(smplx_layer)
    # smplx stores the model in float32 (utils.to_np), so agreement is to float32 precision
    assert np.allclose(v, model.v_template.numpy(), atol=1e-7)
    assert np.allclose(j, _joints(model), atol=1e-7)


def test_smplx_matches_numpy_forward(model, smplx_layer):
    rng = np.random.default_rng(0)
    betas = rng.standard_normal(10)
    pose = model.hands_components.numpy()[:6].T @ rng.standard_normal(6)
    v, j = _run(smplx_layer, betas, pose)
    v2, j2 = _forward(model, betas, pose)
    assert np.allclose(v, v2, atol=1e-6) and np.allclose(j, j2, atol=1e-6)


def test_smplx_betas_change_length_and_width(model, smplx_layer):
    def lw(betas):
        v, j = _run(smplx_layer, betas)
        return np.linalg.norm(v[model.fingertip_ids[2]] - j[0]), np.linalg.norm(j[1] - j[10])

    l0, w0 = lw(np.zeros(10))
    for k, dl, dw in ((0, 1, 1), (1, 1, 0), (2, 0, 1), (5, 1, 0)):
        b = np.zeros(10)
        b[k] = 1.0
        l1, w1 = lw(b)
        if dl:
            assert 1.02 < l1 / l0 < 1.15, SHAPE_COMPONENTS[k]
        if dw:
            assert 1.03 < w1 / w0 < 1.15, SHAPE_COMPONENTS[k]
        if not dw:
            assert abs(w1 / w0 - 1) < 1e-9, SHAPE_COMPONENTS[k]


def test_smplx_curl_bends_towards_palm(model, smplx_layer):
    v0 = model.v_template.numpy()
    tips = model.fingertip_ids.numpy()
    v, j = _run(smplx_layer, pose=2.5 * model.hands_components[0].numpy())
    # fingertips move to the palm side (-y), long fingers come back towards the wrist
    assert np.all(v[tips, 1] < v0[tips, 1] - 0.02)
    assert np.all(np.abs(v[tips[1:], 0]) < np.abs(v0[tips[1:], 0]) - 0.04)
    # nothing explodes: the mesh stays within the rest pose's extent, edges stay similar
    assert np.linalg.norm(v, axis=1).max() <= np.linalg.norm(v0, axis=1).max() + 1e-3
    f = model.faces.numpy()
    e0 = np.linalg.norm(v0[f[:, 0]] - v0[f[:, 1]], axis=1)
    e1 = np.linalg.norm(v[f[:, 0]] - v[f[:, 1]], axis=1)
    assert (e1 / e0).max() < 2.5 and (e1 / e0).min() > 0.2


def test_spread_moves_fingers_apart(model, smplx_layer):
    tips = model.fingertip_ids.numpy()
    v0 = _to_right(model, model.v_template.numpy())
    v = _to_right(model, _run(smplx_layer, pose=1.5 * model.hands_components[1].numpy())[0])
    z0, z1 = v0[tips[1:], 2], v[tips[1:], 2]  # index, middle, ring, little
    assert z1[0] < z0[0] - 0.01 and z1[3] > z0[3] + 0.01
    assert np.ptp(z1) > np.ptp(z0) + 0.03


# ---------------------------------------------------------------- shape semantics


def test_shape_semantics(right):
    l0, w0 = hand_length_width(right)
    effects = {}
    for k, name in enumerate(SHAPE_COMPONENTS):
        b = np.zeros(10)
        b[k] = 1.0
        l1, w1 = hand_length_width(right, b)
        effects[name] = (l1 / l0 - 1, w1 / w0 - 1)
        lm, wm = hand_length_width(right, -b)
        assert np.isclose(l1 - l0, l0 - lm, rtol=0.05, atol=1e-6)  # linear-ish around the mean
    assert effects["scale"][0] == pytest.approx(0.08, rel=0.01) and effects["scale"][1] == pytest.approx(0.08, rel=0.01)
    assert effects["finger_length"][0] > 0.03 and effects["finger_length"][1] == pytest.approx(0, abs=1e-9)
    assert effects["palm_width"][1] > 0.05 and abs(effects["palm_width"][0]) < 0.01
    assert effects["palm_length"][0] > 0.02
    for name in ("finger_thickness", "thumb_length", "index_length", "ring_length", "little_length", "palm_thickness"):
        assert abs(effects[name][0]) < 1e-6 and abs(effects[name][1]) < 1e-6, name
    # component 0 is the largest overall change
    norms = right.shapedirs.norm(dim=(0, 1))
    assert int(norms.argmax()) == 0
    # the named components do what they say
    v0 = right.v_template.numpy()
    sd = right.shapedirs.numpy()
    tips = right.fingertip_ids.numpy()
    thumb_tip, index_tip, ring_tip, little_tip = tips[0], tips[1], tips[3], tips[4]
    assert sd[thumb_tip, :, 4] @ (v0[thumb_tip] - _joints(right)[13]) > 0  # thumb gets longer
    for k, tip in ((6, index_tip), (7, ring_tip), (8, little_tip)):
        assert sd[tip, 0, k] > 0.002
    # thickness widens the fingers (the index PIP ring of vertices moves away from its centre)
    ring = np.flatnonzero(right.J_regressor[2].numpy())
    c = v0[ring].mean(0)
    assert np.all(np.einsum("ij,ij->i", v0[ring] - c, sd[ring, :, 3]) > 0)


def test_pose_space_order(right):
    c = right.hands_components.numpy().reshape(45, 15, 3)
    # component 0 flexes every finger joint by a similar amount about -z-ish axes (right hand)
    long = [j - 1 for f in ("index", "middle", "ring", "little") for j in FINGER_JOINTS[f]]
    assert np.all(c[0, long, 2] < -0.1)
    # hands_mean: a relaxed, slightly curled pose (fingertips a bit towards the palm)
    v0 = right.v_template.numpy()
    v, _ = _forward(right, hand_pose=right.hands_mean.numpy())
    tips = right.fingertip_ids.numpy()
    assert np.all(v[tips, 1] < v0[tips, 1]) and np.all(v[tips, 1] > v0[tips, 1] - 0.06)


def test_render(tmp_path):
    pytest.importorskip("matplotlib")
    from handops.mano.synthetic import render

    out = tmp_path / "hand.png"
    render(str(out))
    assert out.stat().st_size > 10_000
