"""Exact resume: N steps in one go, or k steps, the process killed (SIGKILL), and a resume to N, end with
identical parameters (torch.equal on every tensor).

The network is a very small AGMN (tests/train_script.py): three stages (unary, pairwise with the unary
frozen, fine-tuning) of one 4-step epoch each, N = 12 steps; its training samples get noise from torch's,
numpy's and Python's global RNGs (``--augment``), so a resume that does not restore every RNG ends
elsewhere. The killed run writes last.pt after every step (``checkpoint_every=1``); the test polls last.pt
and kills the process as soon as it reports step >= k, so the kill lands in the middle of the next step's
data loading, or, at a stage's last step, anywhere in the validation / best.pt / last.pt writes that follow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train_script  # tests/ is on sys.path (rootdir conftest)

SCRIPT = Path(__file__).with_name("train_script.py")
REPO = Path(__file__).resolve().parents[1]
N_STEPS = 12  # 3 stages x 1 epoch x (16 images / batch 4)
COMMON = ["--model", "agmn", "--augment"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _script(args, log: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), *COMMON, *args], cwd=REPO, env=_env(),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, **kw)


def _step(last: Path):
    """last.pt's global step, or None before the first write. Any other failure to read it fails the test:
    last.pt is replaced by an atomic rename, so a reader never sees a partial file."""
    try:
        return int(torch.load(last, map_location="cpu", weights_only=True)["step"])
    except FileNotFoundError:
        return None


def _state(out: Path) -> dict:
    return torch.load(out / "test_dump" / "rank0.pt", weights_only=True)["state_dict"]


def _assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


@pytest.fixture
def in_process():
    """Run train_script.main in this process (it sets torch's thread count to 1; restored afterwards)."""
    threads = torch.get_num_threads()
    yield lambda args: train_script.main([*COMMON, *args])
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """N steps in one go, in a subprocess, checkpointing only at epoch ends (so also: writing last.pt every
    step in the other runs does not change training)."""
    out = tmp_path_factory.mktemp("reference")
    proc = _script(["--out", str(out)], out / "log.txt")
    assert proc.wait(timeout=120) == 0, (out / "log.txt").read_text()
    assert _step(out / "last.pt") == N_STEPS
    return out


def _kill_at(out: Path, k: int, timeout: float = 60.0) -> int:
    """Start the training with last.pt every step, SIGKILL it once last.pt reports step >= k; the step last.pt
    holds after the kill."""
    log = out.parent / f"{out.name}.log"
    proc = _script(["--out", str(out), "--checkpoint-every", "1", "--delay", "0.03"], log)
    last, deadline = out / "last.pt", time.monotonic() + timeout
    try:
        while True:
            step = _step(last)
            if step is not None and step >= k:
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the run ended (rc {proc.returncode}) or stalled before step {k}:\n{log.read_text()}")
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the process finished by itself: the kill came too late"
    step = _step(last)
    assert k <= step < N_STEPS, step
    return step


@pytest.mark.parametrize("k", [2, 4, 6], ids=["mid-first-stage", "at-stage-end", "mid-second-stage"])
def test_killed_and_resumed_equals_one_run(reference, tmp_path, in_process, k):
    """Rules out: a resume that restarts the epoch (or the stage) instead of skipping the batches already
    seen; a data order that depends on the process (not on (seed, stage, epoch)); an optimizer or scheduler
    state that is not restored (Adam's moments, the step count); RNG states not restored (the augmentation
    draws from torch, numpy and random); a stage that is resumed with the wrong parameters frozen, or that
    does not start from the previous stage's best.pt; a checkpoint that is written non-atomically (the
    reader here, and the resume, would meet a partial file); and writing a checkpoint that perturbs the RNGs.
    k = 4 kills at the first stage's last step, usually during its validation / best.pt / last.pt writes,
    so the resume crosses a stage boundary from a half-finished epoch end; k = 6 resumes inside stage 2."""
    out = tmp_path / "run"
    resumed_from = _kill_at(out, k)
    in_process(["--out", str(out), "--resume"])
    assert _step(out / "last.pt") == N_STEPS
    _assert_identical(_state(reference), _state(out))
    # last.pt (the last step's weights, before the last stage's best.pt is loaded) agrees too
    a = torch.load(reference / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    _assert_identical(a["network"]["state_dict"], b["network"]["state_dict"])
    assert resumed_from >= k


def test_stopped_by_max_steps_and_resumed_equals_one_run(reference, tmp_path, in_process):
    """A stop by ``max_steps`` in the middle of an epoch (the CLI's --max-steps), then a resume. Rules out a
    stop that validates into best.pt or draws from the RNGs before last.pt is written (the uninterrupted
    run never validates there)."""
    out = tmp_path / "run"
    in_process(["--out", str(out), "--max-steps", "6"])
    assert _step(out / "last.pt") == 6
    in_process(["--out", str(out), "--resume"])
    _assert_identical(_state(reference), _state(out))


def test_resume_without_checkpoint_starts_from_scratch_and_refuses_another_model(tmp_path, in_process):
    """``resume=True`` in an empty folder trains from scratch; resuming a CPM folder with an AGMN is a clear
    error naming both (rules out loading whatever last.pt holds into whatever network is given)."""
    from handops_models.train import CheckpointError

    out = tmp_path / "run"
    in_process(["--out", str(out), "--model", "cpm", "--max-steps", "1", "--resume"])
    assert _step(out / "last.pt") == 1
    with pytest.raises(CheckpointError, match="'cpm'.*'agmn'"):
        in_process(["--out", str(out), "--model", "agmn", "--resume"])
