"""Checkpoint safety: atomic writes (a crash mid-write leaves the old file), weights_only reads (a pickle
with code in it is refused and nothing in it runs), clear errors for truncated files, another model or
config, and files that are not checkpoints; RNG states round trip."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import random
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from handops_models.nets import build_model
from handops_models.train import CheckpointError, load_checkpoint, save_checkpoint
from handops_models.train.checkpoint import FORMAT, capture_rng_state, restore_rng_state

from train_script import SMALL_CPM, small_model

REPO = Path(__file__).resolve().parents[1]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trained(model):
    """A model, an Adam optimizer with state (one step taken) and a scheduler."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [3], gamma=0.5)
    model(torch.rand(2, 3, model.input_size, model.input_size))["heatmaps"].sum().backward()
    optimizer.step()
    scheduler.step()
    return optimizer, scheduler


@pytest.fixture
def cpm_checkpoint(tmp_path):
    model = small_model("cpm")
    optimizer, scheduler = _trained(model)
    path = save_checkpoint(tmp_path / "last.pt", model, optimizer, scheduler, stage=1, stage_name="unary", epoch=2,
                           step=7, extra={"note": "first"})
    return path, model, optimizer


def test_round_trip(cpm_checkpoint):
    """Everything the loop needs comes back, read with weights_only; the file has the umask's mode.
    Rules out a lost field and mkstemp's private 0600 mode on the final file."""
    path, model, optimizer = cpm_checkpoint
    data = load_checkpoint(path, expect_model="cpm", expect_config=SMALL_CPM)
    assert (data["format"], data["stage"], data["stage_name"], data["epoch"], data["step"]) == (FORMAT, 1, "unary", 2, 7)
    assert data["extra"] == {"note": "first"}
    for k, v in model.state_dict().items():
        assert torch.equal(data["model"].state_dict()[k], v)
    assert data["optimizer"]["state"][0]["exp_avg"].shape == next(model.parameters()).shape
    assert data["scheduler"]["last_epoch"] == 1
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "interrupt"])
def test_crash_mid_write_keeps_the_old_file(cpm_checkpoint, monkeypatch, exc):
    """torch.save writes part of the file and fails (a full disk, or Ctrl-C): the old checkpoint is
    untouched, byte for byte, and no temporary file is left. Rules out writing in place (a truncated
    last.pt), deleting the old file before the new one is complete, and leaking the temporary file."""
    path, model, optimizer = cpm_checkpoint
    before = _digest(path)
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # half of a complete checkpoint reached the file ...
        raise exc  # ... then the write failed

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(type(exc)):
        save_checkpoint(path, model, optimizer, step=8)
    monkeypatch.undo()
    assert _digest(path) == before
    assert load_checkpoint(path)["step"] == 7
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_write_is_fsynced_then_renamed(tmp_path, monkeypatch):
    """The data reaches the disk (fsync) before the rename puts it in place, and the folder is fsynced after.
    Rules out a rename of an unsynced file (after a power cut, an empty last.pt under the final name)."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), real_replace(a, b))[1])
    save_checkpoint(tmp_path / "best.pt", small_model("cpm"))
    assert events == [("fsync", False), ("replace", "best.pt"), ("fsync", True)]


def test_process_killed_mid_write_keeps_the_old_file(cpm_checkpoint):
    """The process is SIGKILLed while the new checkpoint is half written (no exception handler runs): the old
    file is intact and loads; the stray temporary file (a dot-file, never named last.pt) does not stop the
    next save. Rules out any scheme that overwrites the target before the new file is complete."""
    path, _, _ = cpm_checkpoint
    before = _digest(path)
    code = textwrap.dedent(f"""
        import os, signal, torch
        from train_script import small_model
        from handops_models.train import save_checkpoint
        real = torch.save
        def save(obj, f, *a, **k):
            real(obj, f, *a, **k)
            f.truncate(f.tell() // 2)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save
        save_checkpoint({str(path)!r}, small_model("cpm"), step=99)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _digest(path) == before
    assert load_checkpoint(path)["step"] == 7
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "last.pt"]
    assert all(name.startswith(".last.pt.") and name.endswith(".tmp") for name in leftovers), leftovers
    save_checkpoint(path, small_model("cpm"), step=8)
    assert load_checkpoint(path)["step"] == 8


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1], ids=["empty", "10-bytes", "half", "all-but-one-byte"])
def test_truncated_file_is_a_clear_error(cpm_checkpoint, keep):
    """Rules out a raw zipfile/EOF/unpickling traceback (or, worse, a partially loaded state)."""
    path, _, _ = cpm_checkpoint
    data = path.read_bytes()
    n = {0: 0, 10: 10, 0.5: len(data) // 2, -1: len(data) - 1}[keep]
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated or damaged") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


class _Payload:
    """Unpickling this calls os.system (creates the marker file): what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("container", ["torch-zip", "plain-pickle"])
def test_pickle_with_code_is_refused_and_does_not_run(tmp_path, container):
    """A file whose unpickling would run code (os.system) is a clear error and the code does not run (the
    marker file is absent). The payload is live: unpickling it without weights_only does create the marker.
    Rules out torch.load(weights_only=False), pickle.load, or a fallback to either on error."""
    marker = tmp_path / "marker"
    payload = {"format": FORMAT, "network": _Payload(marker)}
    path = tmp_path / "evil.pt"
    if container == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # torch.load's own protocol
    pickle.loads(pickle.dumps(_Payload(marker)))  # the control: the payload runs when unpickled freely
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match="refused.*could run code") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("build", [True, False], ids=["build", "no-build (the loop's resume)"])
def test_another_model_or_config_is_a_clear_error(cpm_checkpoint, build):
    """A CPM checkpoint asked for as an AGMN, or with another config: errors naming both sides. The no-build
    path is the one run_recipe's resume takes. Rules out checks that only run when the model is built, and
    loading weights into whatever network is given (a size-mismatch traceback, or a silent partial load)."""
    path, _, _ = cpm_checkpoint
    with pytest.raises(CheckpointError, match="'cpm' network, expected 'agmn'") as info:
        load_checkpoint(path, expect_model="agmn", build=build)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match=r"num_stages: 2 \(state\) vs 3 \(expected\)"):
        load_checkpoint(path, expect_model="cpm", expect_config="tiny", build=build)
    assert load_checkpoint(path, expect_model="cpm", expect_config=SMALL_CPM, build=build)["step"] == 7


def test_tiny_agmn_checkpoint_refused_as_cpm(tmp_path):
    """The same with two real presets (tiny AGMN vs tiny CPM)."""
    path = save_checkpoint(tmp_path / "a.pt", build_model("agmn", "tiny"))
    with pytest.raises(CheckpointError, match="'agmn' network, expected 'cpm'"):
        load_checkpoint(path, expect_model="cpm", expect_config="tiny")


@pytest.mark.parametrize("content", ["weights-dict", "bare-state-dict", "tensor", "list", "format-without-network"])
def test_not_a_checkpoint_is_a_clear_error(tmp_path, content):
    """Files torch can read that are not training checkpoints. Rules out a KeyError / AttributeError deep in
    the loader, and treating a bare state dict as a checkpoint."""
    obj = {
        "weights-dict": {"weights": torch.zeros(3)},
        "bare-state-dict": small_model("cpm").state_dict(),
        "tensor": torch.zeros(3),
        "list": [1, 2, 3],
        "format-without-network": {"format": FORMAT, "step": 3},
    }[content]
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    match = "not a handops_models network state" if content == "format-without-network" else \
        "not a handops_models training checkpoint"
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    """torch's, numpy's and Python's generators, captured in a file read with weights_only and restored,
    repeat the same draws. Rules out a generator left out of the checkpoint or not restored."""
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # numpy's cached Gaussian (has_gauss) must come back too
    path = save_checkpoint(tmp_path / "c.pt", small_model("cpm"))

    def draws():
        return torch.rand(5).tolist(), np.random.randn(5).tolist(), [random.random() for _ in range(5)]

    first = draws()
    restore_rng_state(load_checkpoint(path, build=False)["rng"])
    assert draws() == first
    restore_rng_state(capture_rng_state())  # capturing does not draw
