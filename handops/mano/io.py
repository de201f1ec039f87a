"""Reading and writing MANO model files without chumpy and without trusting the pickle.

Official files (MANO_RIGHT.pkl, MANO_LEFT.pkl) are Python-2 pickles of a dict:

    v_template        [V, 3]        numpy array
    shapedirs         [V, 3, 10]    chumpy ``Ch`` wrapping a numpy array
    posedirs          [V, 3, 135]   numpy array
    J_regressor       [16, V]       scipy.sparse.csc_matrix
    weights           [V, 16]       numpy array
    f                 [F, 3]        uint32 numpy array
    kintree_table     [2, 16]       row 0 the parents (4294967295 = 2**32 - 1 for the root), row 1 the joint ids
    hands_components  [45, 45]      pose PCA basis, rows are components
    hands_mean        [45]
    (plus J, hands_coeffs, bs_style, bs_type, which handops does not need)

``load`` reads them (and ``.npz`` files with the same keys) with a restricted unpickler: the only
globals a file may name are numpy's array/dtype/scalar reconstruction, scipy's csc/csr matrix
classes, chumpy's ``Ch`` class, the builtins ``set``/``frozenset`` (a pickled ``Ch`` carries a
set) and, in guarded forms, ``copyreg._reconstructor`` (protocol 0/1) and ``_codecs.encode``
(latin1 only: how Python 3 writes bytes at protocol 2). Sparse matrices and ``Ch`` objects are
never built: stand-ins keep their pickled state and the arrays are taken from it (so reading needs
neither chumpy nor scipy; writing a ``.pkl`` needs scipy for the csc J_regressor). Any other
global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises
``pickle.UnpicklingError`` before it is called.

``save`` writes a chumpy-free pickle (or ``.npz``) with the official keys, so ``smplx.MANO`` reads
it, plus ``fingertip_ids``, ``is_right`` and ``handops_format``.

Left-hand shape blend shapes: the official MANO_LEFT.pkl ships the *right* hand's shapedirs, while
its template is the right template mirrored in x. So for a left model the x coordinate of every
shape component has the wrong sign (https://github.com/vchoutas/smplx/issues/48; the fix used by
smplx users, manopth users and DexYCB is ``shapedirs[:, 0, :] *= -1``). ``load`` applies that fix to
left models by default (``fix_left_shapedirs=True``), except for files written by ``save``, which
hold the shapedirs exactly as the saved model had them.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from handops.mano.model import OFFICIAL_FINGERTIP_IDS, ManoModel

__all__ = ["load", "save"]

# Marks files written by `save` (their shapedirs are stored as the model holds them).
_HANDOPS_FORMAT = 1
# The root's parent in official kintree tables (-1 stored as uint32).
_ROOT_PARENT = 2**32 - 1
_OFFICIAL_NUM_VERTICES = 778


# ----------------------------------------------------------------------------------------------
# Stand-ins for the classes a MANO pickle names besides numpy's.


class _Refused(pickle.UnpicklingError):
    """The pickle names something a MANO file may not."""


def _state_dict(state, key: str, what: str) -> dict:
    """A pickled object's state as one dict (pickled with slots, it is (dict, slot dict))."""
    if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
        state = {**(state[0] or {}), **(state[1] or {})}
    if not isinstance(state, dict):
        raise ValueError(f"'{key}' is {what} with an unexpected pickled state ({type(state).__name__})")
    return state


class _ChumpyStandIn:
    """Takes the place of chumpy's ``Ch``: keeps the pickled state (a dict whose 'x' is the array)."""

    __slots__ = ("state",)

    def __setstate__(self, state):
        self.state = state

    def array(self, key: str) -> np.ndarray:
        state = _state_dict(self.state, key, "a chumpy object")
        if "x" in state:  # a plain Ch keeps its value in the term 'x'
            return _plain_array(state["x"], key)
        arrays = [v for v in state.values() if isinstance(v, np.ndarray) and v.dtype != object]
        if len(arrays) == 1:
            return arrays[0]
        raise ValueError(
            f"'{key}' is a chumpy object holding no single plain array (state keys {sorted(map(str, state))}); "
            "only chumpy arrays, not chumpy expressions, can be read without chumpy"
        )


class _SparseStandIn:
    """Takes the place of a scipy compressed sparse matrix: keeps its pickled state."""

    __slots__ = ("state",)
    layout = ""

    def __setstate__(self, state):
        self.state = state

    def array(self, key: str) -> np.ndarray:
        """The dense matrix, built with numpy alone (reading needs no scipy)."""
        state = _state_dict(self.state, key, "a sparse matrix")
        shape = state.get("_shape", state.get("shape"))
        missing = [k for k in ("data", "indices", "indptr") if k not in state] + (["_shape"] if shape is None else [])
        if missing:
            raise ValueError(f"'{key}' is a sparse {self.layout} matrix whose pickled state lacks {missing}")
        data = _plain_array(state["data"], key)
        indices = _plain_array(state["indices"], key)
        indptr = _plain_array(state["indptr"], key)
        try:
            rows, cols = (int(n) for n in shape)
        except (TypeError, ValueError):
            raise ValueError(f"'{key}' is a sparse {self.layout} matrix with a malformed shape {shape!r}") from None
        # csc: indptr runs over columns and indices are rows; csr the other way round.
        outer, inner = (cols, rows) if self.layout == "csc" else (rows, cols)
        ok = (
            data.ndim == indices.ndim == indptr.ndim == 1 and rows >= 0 and cols >= 0
            and np.issubdtype(indices.dtype, np.integer) and np.issubdtype(indptr.dtype, np.integer)
            and len(indptr) == outer + 1 and len(data) == len(indices) == (indptr[-1] if len(indptr) else -1)
            and indptr[0] == 0 and np.all(np.diff(indptr) >= 0)
            and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < inner))
        )
        if not ok:
            raise ValueError(f"'{key}' is a malformed sparse {self.layout} matrix of shape [{rows}, {cols}]")
        dense = np.zeros((outer, inner), dtype=np.result_type(data.dtype, np.float64))
        np.add.at(dense, (np.repeat(np.arange(outer), np.diff(indptr)), indices), data)  # duplicates add, as in scipy
        return dense.T if self.layout == "csc" else dense


class _CscStandIn(_SparseStandIn):
    __slots__ = ()
    layout = "csc"


class _CsrStandIn(_SparseStandIn):
    __slots__ = ()
    layout = "csr"


_STAND_INS = (_ChumpyStandIn, _CscStandIn, _CsrStandIn)


def _numpy_attr(submodule: str, name: str):
    # numpy >= 2 keeps these in numpy._core; numpy 1.x in numpy.core. Pickles name either.
    for prefix in ("numpy._core", "numpy.core"):
        try:
            module = __import__(f"{prefix}.{submodule}", fromlist=[name])
            return getattr(module, name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {submodule}.{name}")


class _Guard:
    """A callable a pickle may name in place of a stdlib function. Being an instance of a slotted class,
    it cannot be altered by a BUILD opcode aimed at it (a plain function's attributes could be)."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise _Refused(f"refused to set {name!r} on {type(self).__name__} in a MANO file")


class _SafeReconstructor(_Guard):
    __slots__ = ()

    def __call__(self, cls, base, state):
        # Protocol 0/1 pickles build plain objects with copyreg._reconstructor(cls, object, None);
        # allow that only for the stand-ins.
        if cls not in _STAND_INS or base is not object or state is not None:
            raise _Refused(f"refused copyreg._reconstructor({cls!r}, {base!r}, ...) in a MANO file")
        return object.__new__(cls)


class _Latin1Encode(_Guard):
    __slots__ = ()

    def __call__(self, text, encoding):
        # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, 'latin1'); allow that
        # one use (other codecs would look modules up by a name the file chooses).
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _Refused(f"refused _codecs.encode(..., {encoding!r}) in a MANO file (only 'latin1')")
        return text.encode("latin1")


_safe_reconstructor = _SafeReconstructor()
_latin1_encode = _Latin1Encode()


def _allowed_globals() -> dict:
    reconstruct = _numpy_attr("multiarray", "_reconstruct")
    scalar = _numpy_attr("multiarray", "scalar")
    frombuffer = _numpy_attr("numeric", "_frombuffer")  # protocol-5 numpy pickles
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "set"): set,
        ("__builtin__", "frozenset"): frozenset,
        ("builtins", "object"): object,
        ("__builtin__", "object"): object,
        ("copyreg", "_reconstructor"): _safe_reconstructor,
        ("copy_reg", "_reconstructor"): _safe_reconstructor,
        ("_codecs", "encode"): _latin1_encode,
        ("chumpy.ch", "Ch"): _ChumpyStandIn,
        ("chumpy", "Ch"): _ChumpyStandIn,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    # scipy >= 1.8 keeps the classes in scipy.sparse._csc/_csr; older pickles name scipy.sparse.csc/csr.
    for module in ("scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc"):
        allowed[(module, "csc_matrix")] = allowed[(module, "csc_array")] = _CscStandIn
    for module in ("scipy.sparse", "scipy.sparse.csr", "scipy.sparse._csr"):
        allowed[(module, "csr_matrix")] = allowed[(module, "csr_array")] = _CsrStandIn
    return allowed


_ALLOWED = None


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a MANO file needs (see the module docstring)."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")  # Python-2 str -> str, as numpy expects
        self._source = source

    def find_class(self, module, name):
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed_globals()
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            # Name Python-2 globals (protocol < 3) by their Python 3 names too: '__builtin__.eval' is builtins.eval.
            import _compat_pickle

            py3 = _compat_pickle.NAME_MAPPING.get((module, name))
            py3 = py3 or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
            also = "" if py3 == (module, name) else f" (Python 3: {py3[0]}.{py3[1]})"
            raise _Refused(
                f"refused to load global '{module}.{name}'{also} from {self._source}: a MANO file may only name numpy "
                "array reconstruction, scipy csc/csr matrices and chumpy Ch arrays"
            ) from None


# ----------------------------------------------------------------------------------------------
# Reading.


def _plain_array(value, key: str) -> np.ndarray:
    """The numeric ndarray behind ``value`` (ndarray, number, chumpy or sparse stand-in)."""
    if isinstance(value, _STAND_INS):
        return value.array(key)
    if isinstance(value, np.ndarray) and value.dtype == object:
        if value.shape == ():  # e.g. a sparse matrix stored as a 0-d object array in an .npz
            return _plain_array(value.item(), key)
        raise ValueError(f"'{key}' must be a numeric array, got an object array of shape {list(value.shape)}")
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise ValueError(f"'{key}' must be a numeric array, got {type(value).__name__} of dtype {arr.dtype}")
    return arr


def _unpickle(file, source: str):
    """Unpickle ``file`` with the restricted unpickler; every failure is an UnpicklingError naming ``source``."""
    try:
        return _RestrictedUnpickler(file, source).load()
    except _Refused as e:
        if source in str(e):
            raise
        raise _Refused(f"{source}: {e}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError) as e:
        # Truncated or malformed streams (or ones aimed at the allowed objects) fail in many ways.
        raise pickle.UnpicklingError(f"{source} is not a well-formed MANO pickle: {type(e).__name__}: {e}") from e


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        data = _unpickle(f, str(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a MANO pickle must hold a dict of arrays, got {type(data).__name__}")
    return data


def _read_npz(path: Path) -> dict:
    # np.load(allow_pickle=True) would unpickle object arrays without restriction; read the members
    # ourselves and send object arrays through the restricted unpickler.
    data = {}
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path} is not an .npz archive: {e}") from e
    with zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            key = member[: -len(".npy")]
            with zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    _, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    _, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    dtype = None  # unknown header version: let numpy read it, without pickles
                if dtype is not None and dtype.hasobject:
                    data[key] = _unpickle(f, f"{path}:{member}")
                    continue
            with zf.open(member) as f:
                data[key] = np.lib.format.read_array(f, allow_pickle=False)
    return data


def _is_right_from_name(path: Path) -> bool | None:
    name = path.name.upper()
    left, right = "LEFT" in name, "RIGHT" in name
    return None if left == right else right


def _parents(kintree: np.ndarray, source: Path) -> np.ndarray:
    parents = kintree[0].astype(np.int64)
    if parents[0] in (_ROOT_PARENT, -1):
        parents[0] = -1
    bad = [i for i, p in enumerate(parents.tolist()) if (i == 0 and p != -1) or (i > 0 and not 0 <= p < i)]
    if bad:
        raise ValueError(
            f"{source}: 'kintree_table'[0] must list each joint's parent (root {_ROOT_PARENT} or -1, every other "
            f"joint's parent before it), got {kintree[0].tolist()}"
        )
    return parents


def load(path, *, fix_left_shapedirs: bool = True, is_right: bool | None = None) -> ManoModel:
    """Read a MANO model from an official ``.pkl``/``.npz`` file or one written by :func:`save`.

    Args:
        path: the model file.
        fix_left_shapedirs: for left-hand models, negate the x coordinate of every shape blend
            shape (``shapedirs[:, 0, :] *= -1``), the known MANO_LEFT fix (module docstring). Never
            applied to right models or to files written by :func:`save`.
        is_right: the hand side; when None it is the file's ``is_right`` entry, else the file name
            ('LEFT' or 'RIGHT' in it, case-insensitive, not both), else right (MANO's default).

    Fingertip ids are the file's ``fingertip_ids`` entry when it has one, else the official ids
    for the official 778-vertex mesh.

    Raises:
        FileNotFoundError: no such file.
        pickle.UnpicklingError: the pickle names a global outside the allowed set (nothing runs).
        ValueError: a missing entry, an array of the wrong shape or kind (the message names it and
            what was expected), or an unknown suffix.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, f"no MANO model file at {str(path)!r}", str(path))
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        data = _read_pickle(path)
    elif suffix == ".npz":
        data = _read_npz(path)
    else:
        raise ValueError(f"{path}: a MANO model file must end in .pkl or .npz, got {path.suffix!r}")

    described = {
        "v_template": "[V, 3] rest-pose vertices",
        "shapedirs": "[V, 3, S] shape blend shapes",
        "posedirs": "[V, 3, 135] pose blend shapes",
        "J_regressor": "[16, V] joint regressor",
        "weights": "[V, 16] skinning weights",
        "f": "[F, 3] faces",
        "kintree_table": "[2, 16] kinematic tree",
        "hands_components": "[45, 45] pose PCA components",
        "hands_mean": "[45] mean pose",
    }
    arrays = {}
    for key, what in described.items():
        if key not in data:
            raise ValueError(f"{path}: no '{key}' entry (expected {what}); entries found: {sorted(map(str, data))}")
    try:
        for key in list(described) + [k for k in ("fingertip_ids", "is_right") if k in data]:
            arrays[key] = _plain_array(data[key], key)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e

    v_template = arrays["v_template"]
    if v_template.ndim != 2 or v_template.shape[1] != 3 or v_template.shape[0] < 1:
        raise ValueError(f"{path}: 'v_template' must have shape [V, 3], got {list(v_template.shape)}")
    v = v_template.shape[0]
    expected = {
        "shapedirs": (v, 3, None),
        "posedirs": (v, 3, 135),
        "J_regressor": (16, v),
        "weights": (v, 16),
        "f": (None, 3),
        "kintree_table": (2, 16),
        "hands_components": (45, 45),
        "hands_mean": (45,),
    }
    if "fingertip_ids" in arrays:
        expected["fingertip_ids"] = (5,)
    for key, shape in expected.items():
        got = arrays[key].shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            wanted = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{path}: '{key}' must have shape {wanted} (V = {v} from v_template), got {list(got)}")
    for key in ("f", "kintree_table") + (("fingertip_ids",) if "fingertip_ids" in arrays else ()):
        if not np.issubdtype(arrays[key].dtype, np.integer):
            raise ValueError(f"{path}: '{key}' must hold integers, got dtype {arrays[key].dtype}")

    if "fingertip_ids" in arrays:
        fingertip_ids = arrays["fingertip_ids"]
    elif v == _OFFICIAL_NUM_VERTICES:
        fingertip_ids = np.asarray(OFFICIAL_FINGERTIP_IDS)
    else:
        raise ValueError(
            f"{path}: no 'fingertip_ids' entry and V = {v} is not the official {_OFFICIAL_NUM_VERTICES}, "
            "so the fingertip vertices are unknown"
        )

    written_by_handops = "handops_format" in data
    if is_right is None and "is_right" in arrays:
        if arrays["is_right"].size != 1:
            raise ValueError(f"{path}: 'is_right' must be a single bool, got shape {list(arrays['is_right'].shape)}")
        is_right = bool(arrays["is_right"].item())
    if is_right is None:
        is_right = _is_right_from_name(path)
    if is_right is None:
        is_right = True

    shapedirs = arrays["shapedirs"].astype(np.float64)  # a copy: the fix below must not touch the file's array
    if not is_right and fix_left_shapedirs and not written_by_handops:
        shapedirs[:, 0, :] *= -1

    def f64(a):
        return torch.tensor(np.asarray(a, dtype=np.float64))

    try:
        return ManoModel(
            v_template=f64(v_template),
            shapedirs=f64(shapedirs),
            posedirs=f64(arrays["posedirs"]),
            J_regressor=f64(arrays["J_regressor"]),
            weights=f64(arrays["weights"]),
            faces=torch.tensor(arrays["f"].astype(np.int64)),
            parents=torch.tensor(_parents(arrays["kintree_table"], path)),
            hands_components=f64(arrays["hands_components"]),
            hands_mean=f64(arrays["hands_mean"]),
            fingertip_ids=torch.tensor(np.asarray(fingertip_ids, dtype=np.int64)),
            is_right=bool(is_right),
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


# ----------------------------------------------------------------------------------------------
# Writing.


def _file_dict(model: ManoModel, sparse_regressor: bool) -> dict:
    def np64(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().to(torch.float64).numpy().copy()

    parents = model.parents.detach().cpu().to(torch.int64).numpy().copy()
    parents[parents < 0] = _ROOT_PARENT  # as in the official files
    kintree = np.stack([parents, np.arange(len(parents), dtype=np.int64)])
    faces = model.faces.detach().cpu().numpy()
    j_regressor = np64(model.J_regressor)
    if sparse_regressor:
        try:
            import scipy.sparse as sp
        except ImportError as e:
            raise ImportError("save: writing a .pkl needs scipy (J_regressor is a scipy csc_matrix, as in the "
                              "official files); install scipy or save as .npz") from e

        j_regressor = sp.csc_matrix(j_regressor)
    return {
        "v_template": np64(model.v_template),
        "shapedirs": np64(model.shapedirs),
        "posedirs": np64(model.posedirs),
        "J_regressor": j_regressor,
        "J": np64(model.J_regressor) @ np64(model.v_template),  # rest joints, as in the official files
        "weights": np64(model.weights),
        "f": faces.astype(np.uint32),  # the official dtype
        "kintree_table": kintree,
        "hands_components": np64(model.hands_components),
        "hands_mean": np64(model.hands_mean),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "fingertip_ids": model.fingertip_ids.detach().cpu().to(torch.int64).numpy().copy(),
        "is_right": bool(model.is_right),
        "handops_format": _HANDOPS_FORMAT,
    }


def save(model: ManoModel, path) -> Path:
    """Write ``model`` to ``path`` (``.pkl`` or ``.npz``) and return the path written.

    If ``path`` is an existing directory the file is ``path/MANO_RIGHT.pkl`` or
    ``path/MANO_LEFT.pkl``, the names ``smplx.MANO(model_path=directory, is_rhand=...)`` looks for.
    (Given a file path, smplx takes the side from 'RIGHT' in the file name.)

    The pickle holds plain numpy arrays (float64), J_regressor as a scipy csc_matrix, faces as
    uint32 and kintree_table [2, 16] with 4294967295 for the root's parent, as the official files
    do, plus ``fingertip_ids``, ``is_right`` and ``handops_format``. ``.npz`` files hold the same
    entries with a dense J_regressor, so they load without pickles. :func:`load` reads either back
    exactly (left shapedirs are stored as the model holds them and not fixed again on load).
    """
    if not isinstance(model, ManoModel):
        raise TypeError(f"save expects a ManoModel, got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        path = path / f"MANO_{'RIGHT' if model.is_right else 'LEFT'}.pkl"
    suffix = path.suffix.lower()
    if suffix not in (".pkl", ".npz"):
        raise ValueError(f"save: the file name must end in .pkl or .npz, got {str(path)!r}")
    if model.faces.numel() and int(model.faces.max()) >= 2**32:
        raise ValueError("save: face indices must fit in uint32")
    data = _file_dict(model, sparse_regressor=suffix == ".pkl")
    # Write next to the target and rename, so a failed write never leaves a truncated model file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if suffix == ".pkl":
                # Protocol 4: bytes need no codecs global (protocol 2 would), and smplx reads it.
                pickle.dump(data, f, protocol=4)
            else:
                np.savez(f, **{k: np.asarray(v) for k, v in data.items()})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
