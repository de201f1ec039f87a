"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)`` only.

A checkpoint is a dict of plain data and tensors:

    format          "handops_models.checkpoint/1"
    handops_version the version that wrote it
    network         ``handops_models.nets.model_state(model)``: registry name, config (plain data), weights
    optimizer, scheduler   their ``state_dict()``s (or None)
    stage, epoch, step     where training is: the recipe stage's index and name, the epoch and the global
                           step counted within the stage
    rng             the torch CPU (and CUDA) generator states, numpy's and Python's, as tensors and ints
    extra           anything else the loop records (best validation score, metrics history, ...)

Atomic writes: the dict is written to a temporary file in the target's folder, flushed and fsync'ed,
then renamed over the target (``os.replace``), and the folder is fsync'ed. A crash or a full disk
leaves either the old checkpoint or the new one, never a truncated file in its place.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from handops_models.nets import check_state, model_from_state, model_state

__all__ = ["FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "capture_rng_state", "restore_rng_state",
           "atomic_write"]

FORMAT = "handops_models.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged, unsafe, or for another model or configuration."""


def atomic_write(path, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600: the file would be private to its owner
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems do not fsync folders
        pass
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def capture_rng_state() -> dict:
    """Every random generator training touches, as tensors and ints (``weights_only`` can read them)."""
    mt_name, mt_keys, mt_pos, mt_has_gauss, mt_gauss = np.random.get_state()
    version, python_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(mt_keys.astype(np.int64)), "pos": int(mt_pos), "has_gauss": int(mt_has_gauss),
                  "gauss": float(mt_gauss)},
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])  # a machine with fewer GPUs


def save_checkpoint(path, model, optimizer=None, scheduler=None, *, stage: int = 0, stage_name: str = "", epoch: int = 0,
                    step: int = 0, extra: dict | None = None) -> Path:
    """Write a training checkpoint atomically (module docstring). ``model`` may be wrapped (DDP)."""
    import handops_models

    network = model.module if hasattr(model, "module") else model
    data = {
        "format": FORMAT,
        "handops_version": handops_models.__version__,
        "network": model_state(network),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "stage": int(stage), "stage_name": str(stage_name), "epoch": int(epoch), "step": int(step),
        "rng": capture_rng_state(),
        "extra": extra or {},
    }
    return atomic_write(path, lambda f: torch.save(data, f))


def load_checkpoint(path, expect_model: str | None = None, expect_config=None, build: bool = True) -> dict:
    """Read a checkpoint with ``weights_only=True`` (nothing in the file runs) and check it.

    Returns the checkpoint dict, with ``"model"`` the rebuilt network when ``build`` (on the CPU).
    ``expect_model`` / ``expect_config`` refuse a checkpoint of another network or configuration.
    Errors (:class:`CheckpointError`) name the file and what was wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global: the file wants to run code
        raise CheckpointError(f"{path}: refused: the file holds Python objects that weights_only loading does not "
                              f"allow (a pickle that could run code); only handops_models checkpoints are read ({e})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or damaged?): {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a handops_models training checkpoint (format {got!r}, expected {FORMAT!r})")
    try:
        if build:
            model = model_from_state(data.get("network"), expect_model=expect_model, expect_config=expect_config)
        else:  # the same checks, without building a network (run_recipe's resume loads into its own)
            check_state(data.get("network"), expect_model, expect_config)
            model = None
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    data["model"] = model
    return data
