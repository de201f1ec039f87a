"""handops.mano.load / save: round trips, smplx compatibility, official-format pickles without chumpy,
refusal of malicious pickles, clear errors and the left-hand shapedirs fix."""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import struct
import subprocess
import sys
import types
from dataclasses import fields

import numpy as np
import pytest
import torch

from handops.mano import MANO_PARENTS, OFFICIAL_FINGERTIP_IDS, ManoModel, load, save
from mano_helpers import random_mano_model

sp = pytest.importorskip("scipy.sparse")  # to write official-format files (reading needs no scipy)


def assert_models_equal(a: ManoModel, b: ManoModel):
    for f in fields(ManoModel):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype, f.name
            assert torch.equal(x, y), f.name
        else:
            assert x == y, f.name


def test_random_mano_model_is_plausible():
    m = random_mano_model(3)
    assert m.num_vertices == 778 and m.num_betas == 10 and m.is_right
    assert torch.allclose(m.weights.sum(1), torch.ones(778, dtype=torch.float64))
    assert torch.allclose(m.J_regressor.sum(1), torch.ones(16, dtype=torch.float64))
    assert (m.J_regressor == 0).float().mean() > 0.9  # sparse like the real one
    assert m.parents.tolist() == list(MANO_PARENTS)
    assert m.fingertip_ids.tolist() == list(OFFICIAL_FINGERTIP_IDS)
    eye = torch.eye(45, dtype=torch.float64)
    assert torch.allclose(m.hands_components @ m.hands_components.T, eye, atol=1e-12)
    small = random_mano_model(3, num_vertices=40, num_betas=4, is_right=False)
    assert small.num_vertices == 40 and small.num_betas == 4 and not small.is_right
    assert len(set(small.fingertip_ids.tolist())) == 5
    assert_models_equal(random_mano_model(7), random_mano_model(7))


# ----------------------------------------------------------------------------------------------
# Round trips.


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
@pytest.mark.parametrize("num_vertices, is_right", [(778, True), (778, False), (50, True), (50, False)])
def test_save_load_round_trip(tmp_path, suffix, num_vertices, is_right):
    model = random_mano_model(1, num_vertices=num_vertices, is_right=is_right)
    path = save(model, tmp_path / f"hand{suffix}")  # no side in the name: the stored flag decides
    assert path == tmp_path / f"hand{suffix}" and path.exists()
    assert_models_equal(load(path), model)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_save_to_directory_uses_official_names(tmp_path):
    assert save(random_mano_model(0), tmp_path) == tmp_path / "MANO_RIGHT.pkl"
    assert save(random_mano_model(0, is_right=False), tmp_path) == tmp_path / "MANO_LEFT.pkl"
    assert load(tmp_path / "MANO_RIGHT.pkl").is_right and not load(tmp_path / "MANO_LEFT.pkl").is_right


def test_saved_pickle_is_chumpy_free_and_official_like(tmp_path):
    model = random_mano_model(2)
    path = save(model, tmp_path / "MANO_RIGHT.pkl")
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")  # plain pickle: needs nothing beyond numpy and scipy
    assert isinstance(data["J_regressor"], sp.csc_matrix) and data["J_regressor"].shape == (16, 778)
    assert data["kintree_table"].shape == (2, 16) and data["kintree_table"][0, 0] == 4294967295
    assert data["kintree_table"][0, 1:].tolist() == list(MANO_PARENTS[1:])
    assert data["f"].dtype == np.uint32
    assert all(isinstance(data[k], np.ndarray) for k in ("v_template", "shapedirs", "posedirs", "weights"))
    assert data["fingertip_ids"].tolist() == list(OFFICIAL_FINGERTIP_IDS) and data["is_right"] is True


def test_save_rejects_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.pkl or \.npz"):
        save(random_mano_model(0), tmp_path / "hand.json")


# ----------------------------------------------------------------------------------------------
# smplx reads what save writes.


@pytest.fixture
def smplx():
    return pytest.importorskip("smplx")


def _check_smplx_buffers(layer, model: ManoModel):
    # smplx casts every array to float32 (through numpy) on load.
    v, p = model.num_vertices, model.posedirs.shape[-1]
    assert torch.equal(layer.v_template, model.v_template.float())
    assert torch.equal(layer.shapedirs, model.shapedirs.float())
    assert torch.equal(layer.posedirs, model.posedirs.reshape(v * 3, p).T.float())
    assert torch.equal(layer.J_regressor, model.J_regressor.float())
    assert torch.equal(layer.lbs_weights, model.weights.float())
    assert torch.equal(layer.faces_tensor, model.faces)
    assert layer.parents[1:].tolist() == list(MANO_PARENTS[1:])


@pytest.mark.parametrize("is_right", [True, False])
@pytest.mark.parametrize("num_vertices", [778, 60])
def test_smplx_loads_saved_directory(smplx, tmp_path, is_right, num_vertices):
    model = random_mano_model(4, num_vertices=num_vertices, is_right=is_right)
    save(model, tmp_path)
    layer = smplx.MANO(model_path=str(tmp_path), is_rhand=is_right, use_pca=False, flat_hand_mean=True)
    _check_smplx_buffers(layer, model)
    out = layer()
    assert out.vertices.shape == (1, num_vertices, 3)
    # Zero pose and shape with a flat mean: the rest mesh (weights rows sum to 1).
    assert torch.allclose(out.vertices[0], model.v_template.float(), atol=1e-6)
    betas = torch.randn(2, 10)
    pose = 0.3 * torch.randn(2, 45)
    out = layer(betas=betas, hand_pose=pose, global_orient=torch.zeros(2, 3))
    assert out.vertices.shape == (2, num_vertices, 3) and torch.isfinite(out.vertices).all()


def test_smplx_loads_saved_file_path_with_pca(smplx, tmp_path):
    model = random_mano_model(5)
    path = save(model, tmp_path / "MANO_RIGHT.pkl")
    layer = smplx.MANO(model_path=str(path), is_rhand=True, use_pca=True, num_pca_comps=6, flat_hand_mean=False)
    assert layer.is_rhand  # smplx takes the side from 'RIGHT' in the file name
    _check_smplx_buffers(layer, model)
    assert torch.equal(layer.hand_components, model.hands_components[:6].float())
    assert torch.equal(layer.hand_mean, model.hands_mean.float())
    out = layer(hand_pose=torch.randn(3, 6), global_orient=torch.zeros(3, 3), betas=torch.zeros(3, 10))
    assert out.vertices.shape == (3, 778, 3)


def test_smplx_loads_saved_npz(smplx, tmp_path):
    model = random_mano_model(6)
    save(model, tmp_path / "MANO_RIGHT.npz")
    layer = smplx.MANO(model_path=str(tmp_path), is_rhand=True, use_pca=False, flat_hand_mean=True, ext="npz")
    _check_smplx_buffers(layer, model)
    assert layer().vertices.shape == (1, 778, 3)


# ----------------------------------------------------------------------------------------------
# Official-format pickles (Python 2, chumpy Ch, scipy csc) read without chumpy.


class _Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2's cPickle did: str/bytes as (SHORT_)BINSTRING, and globals under
    their old module names (numpy.core.multiarray, scipy.sparse.csc, __builtin__)."""

    renames = {"numpy._core.multiarray": "numpy.core.multiarray", "scipy.sparse._csc": "scipy.sparse.csc"}
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = pickle.whichmodule(obj, name)
        if module in self.renames:
            self.write(pickle.GLOBAL + f"{self.renames[module]}\n{name}\n".encode("ascii"))
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _fake_chumpy():
    """Modules chumpy and chumpy.ch with a Ch class that pickles like chumpy's (state: its __dict__)."""
    chumpy, ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            # What chumpy.Ch(x).__getstate__() returns for a plain array.
            self.__dict__.update(x=np.asarray(x, np.float64), _dirty_vars={"x"}, _itr=None, _make_dense=False,
                                 _make_sparse=False, _depends_on_deps={})

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch.Ch, chumpy.ch, chumpy.Ch = Ch, ch, Ch
    return chumpy, ch, Ch


def official_dict(model: ManoModel, wrap=lambda a: a, sparse=sp.csc_matrix) -> dict:
    """The entries of an official MANO pickle for ``model`` (shapedirs and J passed through ``wrap``)."""
    parents = np.array(MANO_PARENTS, dtype=np.int64)
    parents[0] = 4294967295
    v_template = model.v_template.numpy()
    return {
        "hands_components": model.hands_components.numpy(),
        "f": model.faces.numpy().astype(np.uint32),
        "J_regressor": sparse(model.J_regressor.numpy()),
        "kintree_table": np.stack([parents, np.arange(16)]),
        "J": wrap(model.J_regressor.numpy() @ v_template),
        "bs_style": "lbs",
        "hands_coeffs": np.random.default_rng(0).normal(size=(20, 45)),
        "weights": model.weights.numpy(),
        "posedirs": model.posedirs.numpy(),
        "hands_mean": model.hands_mean.numpy(),
        "v_template": v_template,
        "shapedirs": wrap(model.shapedirs.numpy()),
        "bs_type": "lrotmin",
    }


def write_official_pickle(path, model: ManoModel, monkeypatch, sparse=sp.csc_matrix):
    """Write ``model`` as MANO's Python-2 pickle, with a fake chumpy importable only while writing."""
    chumpy, ch, Ch = _fake_chumpy()
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "chumpy", chumpy)
        mp.setitem(sys.modules, "chumpy.ch", ch)
        with open(path, "wb") as f:
            _Py2Pickler(f, protocol=2).dump(official_dict(model, wrap=Ch, sparse=sparse))
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules
    return path


def test_official_pickle_loads_without_chumpy(tmp_path, monkeypatch):
    assert importlib.util.find_spec("chumpy") is None  # the real chumpy is not there to help
    model = random_mano_model(8)
    path = write_official_pickle(tmp_path / "MANO_RIGHT.pkl", model, monkeypatch)
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x02" and b"cchumpy.ch\nCh\n" in raw and b"cscipy.sparse.csc\ncsc_matrix\n" in raw
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"c__builtin__\nset\n" in raw
    assert_models_equal(load(path), model)  # 778 vertices, no fingertip entry: the official ids


def test_official_pickle_with_csr_regressor(tmp_path, monkeypatch):
    model = random_mano_model(9)
    path = write_official_pickle(tmp_path / "MANO_RIGHT.pkl", model, monkeypatch, sparse=sp.csr_matrix)
    assert torch.equal(load(path).J_regressor, model.J_regressor)


def test_chumpy_expression_is_refused_clearly(tmp_path, monkeypatch):
    model = random_mano_model(9)
    chumpy, ch, Ch = _fake_chumpy()
    expr = Ch(0)
    expr.__dict__ = {"a": model.shapedirs.numpy(), "b": model.shapedirs.numpy()}  # no 'x', two operands
    data = official_dict(model)
    data["shapedirs"] = expr
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "chumpy", chumpy)
        mp.setitem(sys.modules, "chumpy.ch", ch)
        (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(ValueError, match="'shapedirs' is a chumpy object holding no single plain array"):
        load(tmp_path / "MANO_RIGHT.pkl")


def test_reading_needs_no_scipy(tmp_path, monkeypatch):
    model = random_mano_model(14)
    path = write_official_pickle(tmp_path / "MANO_RIGHT.pkl", model, monkeypatch)
    with monkeypatch.context() as mp:
        for name in [m for m in sys.modules if m == "scipy" or m.startswith("scipy.")]:
            mp.delitem(sys.modules, name)
        mp.setitem(sys.modules, "scipy", None)  # makes `import scipy...` fail
        mp.setitem(sys.modules, "scipy.sparse", None)
        assert_models_equal(load(path), model)
        assert_models_equal(load(save(model, tmp_path / "again.npz")), model)
        with pytest.raises(ImportError, match="writing a .pkl needs scipy"):
            save(model, tmp_path / "again.pkl")


@pytest.mark.parametrize("corrupt, match", [
    (lambda st: st.update(indices=st["indices"] + 10_000), "malformed sparse csc matrix of shape \\[16, 778\\]"),
    (lambda st: st.update(indptr=st["indptr"][:-1]), "malformed sparse csc matrix"),
    (lambda st: st.pop("indptr"), "lacks \\['indptr'\\]"),
])
def test_malformed_sparse_regressor(tmp_path, corrupt, match):
    class Csc:  # pickles under scipy's name with a state we can corrupt
        pass

    Csc.__module__, Csc.__qualname__ = "scipy.sparse._csc", "csc_matrix"
    matrix = sp.csc_matrix(random_mano_model(0).J_regressor.numpy())
    state = {"_shape": matrix.shape, "maxprint": 50, "data": matrix.data, "indices": matrix.indices,
             "indptr": matrix.indptr}
    corrupt(state)
    fake = Csc()
    fake.__dict__.update(state)
    data = {**official_dict(random_mano_model(0)), "J_regressor": fake}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys.modules["scipy.sparse._csc"], "csc_matrix", Csc)
        raw = pickle.dumps(data, protocol=2)
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(raw)
    with pytest.raises(ValueError, match=f"'J_regressor' .*{match}"):
        load(tmp_path / "MANO_RIGHT.pkl")


def test_sparse_duplicates_add_up(tmp_path):
    # A non-canonical matrix (each entry stored twice, halved): scipy sums duplicates; so does the reader.
    dense = random_mano_model(0).J_regressor.numpy()
    m = sp.csc_matrix(dense)
    cols = [slice(m.indptr[j], m.indptr[j + 1]) for j in range(m.shape[1])]
    data = np.concatenate([np.tile(m.data[c] / 2, 2) for c in cols])
    indices = np.concatenate([np.tile(m.indices[c], 2) for c in cols])
    dup = sp.csc_matrix((data, indices, 2 * m.indptr), shape=m.shape)
    assert np.array_equal(dup.toarray(), dense) and dup.nnz == 2 * m.nnz
    entries = {**official_dict(random_mano_model(0)), "J_regressor": dup}
    assert np.array_equal(load(_write_plain(tmp_path / "MANO_RIGHT.pkl", entries)).J_regressor.numpy(), dense)


def test_official_npz_with_pickled_sparse_regressor(tmp_path):
    # An .npz converted from the official pickle: J_regressor a 0-d object array holding the csc matrix.
    model = random_mano_model(10)
    data = {k: np.asarray(v) if not sp.issparse(v) else np.array(v, dtype=object)
            for k, v in official_dict(model).items()}
    path = tmp_path / "MANO_RIGHT.npz"
    np.savez(path, **data)
    assert_models_equal(load(path), model)


# ----------------------------------------------------------------------------------------------
# Malicious pickles are refused and nothing in them runs.


class _SystemPayload:
    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


class _EvalPayload(_SystemPayload):
    def __reduce__(self):
        return eval, (f"open({self.sentinel!r}, 'w').close()",)


class _PopenPayload(_SystemPayload):
    def __reduce__(self):
        return subprocess.Popen, (["touch", self.sentinel],)


@pytest.mark.parametrize("payload, refused", [(_SystemPayload, "system"), (_EvalPayload, "builtins.eval"),
                                              (_PopenPayload, "subprocess.Popen")])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("where", ["top", "inside"])
def test_malicious_pickle_is_refused(tmp_path, payload, refused, protocol, where):
    sentinel = tmp_path / "pwned"
    evil = payload(sentinel)
    obj = evil if where == "top" else {**official_dict(random_mano_model(0, num_vertices=20)), "shapedirs": evil}
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    with pytest.raises(pickle.UnpicklingError, match=rf"refused to load global '[\w.]*{refused}'|Python 3: {refused}"):
        load(path)
    assert not sentinel.exists()


@pytest.mark.parametrize("module, name", [("numpy", "load"), ("chumpy.ch", "os"), ("builtins", "getattr"),
                                          ("scipy.sparse", "load_npz"), ("torch", "load"), ("copyreg", "__newobj__"),
                                          ("numpy.core.multiarray", "fromfile"), ("__builtin__", "eval")])
def test_other_globals_are_refused(tmp_path, module, name):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R.")
    with pytest.raises(pickle.UnpicklingError, match=f"'{module}.{name}'"):
        load(path)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_plain_pickles_of_any_protocol_load(tmp_path, protocol):
    # E.g. an official file converted in Python 3 with pickle.dump(..., protocol=2): bytes become
    # _codecs.encode(text, 'latin1'), which is allowed in exactly that form.
    model = random_mano_model(13)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(official_dict(model), protocol=protocol))
    assert_models_equal(load(path), model)


def test_codecs_encode_only_latin1(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x04\x00\x00\x00textX\x06\x00\x00\x00rot_13\x86R.")
    with pytest.raises(pickle.UnpicklingError, match="only 'latin1'"):
        load(path)


def test_reconstructor_only_builds_stand_ins(tmp_path):
    # copyreg._reconstructor is allowed (protocol-0 pickles), but not for arbitrary classes.
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(b"ccopy_reg\n_reconstructor\n(cnumpy\nndarray\nc__builtin__\nobject\nNtR.")
    with pytest.raises(pickle.UnpicklingError, match="_reconstructor"):
        load(path)


@pytest.mark.parametrize("payload", [
    b"\x80\x02c_codecs\nencode\nN}X\x01\x00\x00\x00a\x88s\x86b.",  # BUILD aimed at an allowed callable
    b"\x80\x02cscipy.sparse\ncsc_matrix\nN}X\x06\x00\x00\x00layoutX\x03\x00\x00\x00csrs\x86b.",  # at a stand-in
    b"\x80\x02c__builtin__\nset\nN}X\x01\x00\x00\x00a\x88s\x86b.",  # at a builtin type
])
def test_allowed_objects_cannot_be_altered(tmp_path, payload):
    import handops.mano.io as mano_io

    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError):
        load(path)
    assert mano_io._CscStandIn.layout == "csc" and not hasattr(set, "a")


def test_truncated_pickle(tmp_path):
    path = save(random_mano_model(0), tmp_path / "MANO_RIGHT.pkl")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(pickle.UnpicklingError, match="not a well-formed MANO pickle"):
        load(path)


def test_malicious_npz_object_array_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    entries = official_dict(random_mano_model(0, num_vertices=20), sparse=np.asarray)
    data = {k: np.asarray(v) for k, v in entries.items()}
    data["J_regressor"] = np.array(_SystemPayload(sentinel), dtype=object)
    np.savez(tmp_path / "MANO_RIGHT.npz", **data)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        load(tmp_path / "MANO_RIGHT.npz")
    assert not sentinel.exists()


# ----------------------------------------------------------------------------------------------
# Clear errors.


def _write_plain(path, data):
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


@pytest.mark.parametrize("key", ["v_template", "shapedirs", "posedirs", "J_regressor", "weights", "f",
                                 "kintree_table", "hands_components", "hands_mean"])
def test_missing_key(tmp_path, key):
    data = official_dict(random_mano_model(0))
    del data[key]
    with pytest.raises(ValueError, match=rf"no '{key}' entry \(expected \["):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", data))


@pytest.mark.parametrize("key, shape, expected", [
    ("v_template", (778, 2), "[V, 3]"),
    ("shapedirs", (778, 10), "[778, 3, *]"),
    ("posedirs", (778, 3, 10), "[778, 3, 135]"),
    ("J_regressor", (15, 778), "[16, 778]"),
    ("weights", (777, 16), "[778, 16]"),
    ("f", (100, 4), "[*, 3]"),
    ("kintree_table", (16,), "[2, 16]"),
    ("hands_components", (45, 6), "[45, 45]"),
    ("hands_mean", (48,), "[45]"),
])
def test_wrong_shape(tmp_path, key, shape, expected):
    data = official_dict(random_mano_model(0))
    data[key] = np.zeros(shape, dtype=np.uint32 if key in ("f", "kintree_table") else np.float64)
    with pytest.raises(ValueError, match=re.escape(f"'{key}' must have shape {expected}")):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", data))


@pytest.mark.parametrize("key", ["v_template", "shapedirs", "posedirs", "J_regressor", "weights", "hands_components",
                                 "hands_mean"])
def test_non_finite_arrays_are_refused(tmp_path, key):
    data = official_dict(random_mano_model(0), sparse=np.array)  # a dense J_regressor, to hold the NaN
    data[key] = data[key].astype(np.float64)  # a copy
    data[key].flat[7] = np.nan
    path = _write_plain(tmp_path / "MANO_RIGHT.pkl", data)
    with pytest.raises(ValueError, match=re.escape(f"{path}: ManoModel.{key} must be finite, but it holds NaN")):
        load(path)


def test_skinning_weight_rows_must_sum_to_one(tmp_path):
    data = official_dict(random_mano_model(0))
    data["weights"] = data["weights"].copy()
    data["weights"][3] *= 0.5
    with pytest.raises(ValueError, match=r"ManoModel.weights rows .* must sum to 1, but row 3 sums to 0.5"):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", data))


def test_wrong_fingertip_ids(tmp_path):
    data = {**official_dict(random_mano_model(0)), "fingertip_ids": np.arange(4)}
    with pytest.raises(ValueError, match=r"'fingertip_ids' must have shape \[5\]"):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", data))
    data["fingertip_ids"] = np.array([1, 2, 3, 4, 778])
    with pytest.raises(ValueError, match="fingertip_ids must index vertices"):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", data))


def test_unknown_fingertips_for_non_official_mesh(tmp_path):
    data = official_dict(random_mano_model(0, num_vertices=30))
    with pytest.raises(ValueError, match="no 'fingertip_ids' entry and V = 30"):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", data))


def test_bad_kintree_and_faces(tmp_path):
    data = official_dict(random_mano_model(0))
    data["kintree_table"] = data["kintree_table"].copy()
    data["kintree_table"][0, 5] = 9  # a parent after its child
    with pytest.raises(ValueError, match="'kintree_table'\\[0\\] must list each joint's parent"):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", data))
    data = official_dict(random_mano_model(0))
    data["f"] = data["f"].astype(np.float64)
    with pytest.raises(ValueError, match="'f' must hold integers"):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", data))


def test_non_numeric_entries(tmp_path):
    data = {**official_dict(random_mano_model(0)), "hands_mean": "not an array"}
    with pytest.raises(ValueError, match="'hands_mean' must be a numeric array"):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", data))
    data = {**official_dict(random_mano_model(0)), "is_right": np.array([True, False])}
    with pytest.raises(ValueError, match="'is_right' must be a single bool"):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", data))


def test_not_a_dict_and_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match="must hold a dict"):
        load(_write_plain(tmp_path / "MANO_RIGHT.pkl", [1, 2]))
    (tmp_path / "MANO_RIGHT.txt").write_text("")
    with pytest.raises(ValueError, match=r"\.pkl or \.npz"):
        load(tmp_path / "MANO_RIGHT.txt")
    (tmp_path / "MANO_RIGHT.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an .npz archive"):
        load(tmp_path / "MANO_RIGHT.npz")


def test_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "MANO_RIGHT.pkl"
    with pytest.raises(FileNotFoundError, match=str(missing)) as info:
        load(missing)
    assert info.value.filename == str(missing)


# ----------------------------------------------------------------------------------------------
# Hand side and the left-hand shapedirs fix.


def test_left_shapedirs_fix(tmp_path, monkeypatch):
    model = random_mano_model(11, is_right=False)
    path = write_official_pickle(tmp_path / "MANO_LEFT.pkl", model, monkeypatch)
    fixed = load(path)
    assert not fixed.is_right
    # The x coordinate of every shape component flips; y and z and everything else stay.
    assert torch.equal(fixed.shapedirs[:, 0, :], -model.shapedirs[:, 0, :])
    assert torch.equal(fixed.shapedirs[:, 1:, :], model.shapedirs[:, 1:, :])
    assert_models_equal(load(path, fix_left_shapedirs=False), model)
    # Files written by save hold the shapedirs as the model had them: no second flip.
    assert_models_equal(load(save(fixed, tmp_path / "saved_left.pkl")), fixed)


def test_right_model_is_never_flipped(tmp_path, monkeypatch):
    model = random_mano_model(12)
    path = write_official_pickle(tmp_path / "MANO_RIGHT.pkl", model, monkeypatch)
    assert_models_equal(load(path, fix_left_shapedirs=True), model)


@pytest.mark.parametrize("name, is_right", [("MANO_RIGHT.pkl", True), ("MANO_LEFT.pkl", False),
                                            ("mano_left.pkl", False), ("Right_hand.pkl", True), ("hand.pkl", True)])
def test_side_from_file_name(tmp_path, name, is_right):
    path = _write_plain(tmp_path / name, official_dict(random_mano_model(0)))
    assert load(path).is_right is is_right


def test_stored_flag_and_argument_decide_the_side(tmp_path):
    data = {**official_dict(random_mano_model(0)), "is_right": False}
    path = _write_plain(tmp_path / "MANO_RIGHT.pkl", data)  # the flag beats the name
    loaded = load(path)
    assert not loaded.is_right
    assert torch.equal(loaded.shapedirs[:, 0], -random_mano_model(0).shapedirs[:, 0])  # not written by save
    assert load(path, is_right=True).is_right  # the argument beats both
