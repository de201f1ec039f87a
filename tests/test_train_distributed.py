"""torchrun on the CPU: 2 processes, gloo, DistributedDataParallel through run_recipe.

The network is a very small AGMN (tests/train_script.py) through its whole recipe: unary, pairwise with
the unary frozen, fine-tuning; one 2-step epoch each, global batch 8 (4 per rank), so DDP is re-wrapped
at each stage with another set of trainable parameters and crosses two stage boundaries (best.pt loaded
on rank 0 and broadcast). Launched with ``python -m torch.distributed.run --nproc_per_node=2`` in a
subprocess with a timeout (and a 120 s collective timeout in the workers), so a hang fails the test.

Tolerance of the single-process comparison: DDP all-reduces the gradients and divides by the world size,
so each rank steps with the mean of the two half-batch gradients; the loss is a per-batch mean over images
(``sum / B``), so the mean of the two half-batch means is the full-batch mean, and the gradients agree up
to rounding (the sums are grouped differently). The comparison runs in float64, where that rounding is
~1e-16 relative; Adam's first steps are close to sign(gradient) x lr, so a gradient within rounding of 0
could move a parameter by up to lr, and a float32 run does differ by ~2e-5 after 6 steps at lr 1e-4. In
float64 the largest difference seen is ~6e-17 while training moved the parameters by ~2e-4: the test
allows 1e-12.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train_script

SCRIPT = Path(__file__).with_name("train_script.py")
REPO = Path(__file__).resolve().parents[1]
STEPS = 6  # 3 stages x 1 epoch x (16 images / global batch 8)
COMMON = ["--model", "agmn", "--batch-size", "8"]
FLOAT64 = ["--dtype", "float64", "--record-start"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _torchrun(args, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(SCRIPT), *COMMON, *args]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _kill_workers(out: Path):
    for pid_file in (out / "test_dump").glob("pid*"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _run(args, out: Path, timeout: float = 150.0):
    log = out.parent / f"{out.name}.log"
    proc = _torchrun(["--out", str(out), *args], log)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _kill_workers(out)
        proc.wait()
        pytest.fail(f"torchrun did not finish in {timeout} s (a hang?):\n{log.read_text()[-4000:]}")
    assert rc == 0, log.read_text()[-4000:]


def _dump(out: Path, rank: int) -> dict:
    return torch.load(out / "test_dump" / f"rank{rank}.pt", weights_only=True)


def _step(last: Path):
    try:
        return int(torch.load(last, map_location="cpu", weights_only=True)["step"])
    except FileNotFoundError:
        return None


def _different(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    """The same recipe in float64 under torchrun (2 ranks) and in one process with the whole global batch."""
    root = tmp_path_factory.mktemp("ddp")
    _run(FLOAT64, root / "ddp")
    threads = torch.get_num_threads()
    try:
        train_script.main([*COMMON, "--dtype", "float64", "--out", str(root / "single")])
    finally:
        torch.set_num_threads(threads)
    return root


def test_ranks_identical_and_equal_to_one_process_on_the_global_batch(equivalence):
    """Rules out: gradients not all-reduced (the ranks drift apart); ranks that train from their own initial
    weights (each rank's seed gives other initial weights; DDP must broadcast rank 0's); both ranks taking
    the same half of the batch, or a per-rank data order (the result differs from one process on the whole
    batch); a stage whose frozen/trainable split is lost when DDP is re-wrapped, or a stage that does not
    start from the previous stage's best weights on every rank."""
    ddp, single = equivalence / "ddp", equivalence / "single"
    r0, r1, one = _dump(ddp, 0), _dump(ddp, 1), _dump(single, 0)
    assert r0["world_size"] == 2 and one["world_size"] == 1
    assert not _different(r0["state_dict"], r1["state_dict"]), "the two ranks ended with different parameters"
    start0 = torch.load(ddp / "test_dump" / "start0.pt", weights_only=True)
    start1 = torch.load(ddp / "test_dump" / "start1.pt", weights_only=True)
    assert _different(start0, start1), "per-rank seeds should give the ranks different initial weights"
    worst, moved = 0.0, []
    for k, v in one["state_dict"].items():
        assert v.dtype == torch.float64
        worst = max(worst, float((r0["state_dict"][k] - v).abs().max()))
        moved.append(float((v - start0[k]).abs().max()))
    assert worst <= 1e-12, f"DDP and one process differ by {worst}"
    assert max(moved) > 1e-4 and sum(m > 0 for m in moved) > len(moved) // 2, "training barely moved the weights"


def test_each_rank_reads_its_half_of_each_global_batch(equivalence):
    """Rules out every rank reading the whole global batch (right result, twice the work) and overlapping or
    missing samples: per step, rank 0's 4 images then rank 1's 4 are the single process's 8."""
    r0, r1, one = (_dump(equivalence / "ddp", 0), _dump(equivalence / "ddp", 1), _dump(equivalence / "single", 0))
    assert len(r0["read"]) == len(r1["read"]) == 4 * STEPS and len(one["read"]) == 8 * STEPS
    for s in range(STEPS):
        assert r0["read"][4 * s:4 * s + 4] + r1["read"][4 * s:4 * s + 4] == one["read"][8 * s:8 * s + 8]


def test_per_rank_seeds_and_rank_zero_writes(equivalence):
    """Rank 0 draws what the single process draws, rank 1 draws something else; only rank 0 writes the log
    (one metrics.jsonl line per epoch, not one per rank) and both ranks return the same best scores.
    Rules out every rank seeding alike (identical augmentations on every rank) and every rank writing."""
    ddp = equivalence / "ddp"
    r0, r1, one = _dump(ddp, 0), _dump(ddp, 1), _dump(equivalence / "single", 0)
    assert r0["seed"] == one["seed"] == 0 and r1["seed"] != 0
    assert r0["first_draw"] == one["first_draw"] != r1["first_draw"]
    assert len((ddp / "metrics.jsonl").read_text().splitlines()) == 3
    assert r0["best"] == r1["best"] and set(r0["best"]) == {"unary", "pairwise", "finetune"}
    assert _step(ddp / "last.pt") == STEPS
    assert all((ddp / stage / "best.pt").is_file() for stage in ("unary", "pairwise", "finetune"))


def test_killed_torchrun_resumes_exactly(equivalence, tmp_path):
    """The run of the tests above, with the launcher and both workers SIGKILLed once last.pt reports step >= 3
    (in the second stage; last.pt every step), then resumed under torchrun: each rank ends with the
    parameters of the uninterrupted run (torch.equal) and with the same torch, numpy and Python RNG states
    (equal draws after training). Rules out: a resume that gives every rank rank 0's RNG states (rank 1's
    random augmentations would change); ranks that resume from different points or lose the optimizer
    state; a resume that deadlocks (a collective that one rank skips)."""
    out = tmp_path / "killed"
    log = tmp_path / "killed.log"
    proc = _torchrun([*FLOAT64, "--out", str(out), "--checkpoint-every", "1", "--delay", "0.05"], log)
    deadline = time.monotonic() + 120
    try:
        while True:
            step = _step(out / "last.pt")
            if step is not None and step >= 3:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the run ended (rc {proc.returncode}) or stalled before step 3:\n{log.read_text()[-4000:]}")
            time.sleep(0.01)
    finally:  # the launcher first (so it does not react), then the workers: a machine going down
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        _kill_workers(out)
    resumed_from = _step(out / "last.pt")
    assert 3 <= resumed_from < STEPS, "the kill came too late"
    rngs = torch.load(out / "last.pt", weights_only=True)["extra"]["rng_ranks"]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])
    _run([*FLOAT64, "--resume"], out)
    assert _step(out / "last.pt") == STEPS
    assert f"[rank 0] resuming from {out / 'last.pt'}" in log.read_text()  # the resume's log (same file)
    for rank in (0, 1):
        whole, resumed = _dump(equivalence / "ddp", rank), _dump(out, rank)
        different = _different(whole["state_dict"], resumed["state_dict"])
        assert not different, f"rank {rank}: {len(different)} tensors differ after the resume, e.g. {different[:3]}"
        assert resumed["end_draws"] == whole["end_draws"], f"rank {rank}: other RNG states after the resume"
    assert _dump(out, 0)["end_draws"] != _dump(out, 1)["end_draws"]


def test_single_process_checkpoint_resumes_under_torchrun(equivalence, tmp_path):
    """3 steps in one process (``--max-steps 3``, stopped in the second stage), then ``--resume`` under torchrun
    with 2 processes: the same global batches, so the end agrees with the one-process run to rounding
    (1e-12 in float64) and the ranks agree exactly. Rules out a resume tied to the number of processes (the
    position counted in per-rank batches, or a refusal of a checkpoint without per-rank RNG states)."""
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        train_script.main([*COMMON, "--dtype", "float64", "--out", str(out), "--max-steps", "3"])
    finally:
        torch.set_num_threads(threads)
    assert _step(out / "last.pt") == 3
    _run(["--dtype", "float64", "--resume"], out)
    one, r0, r1 = _dump(equivalence / "single", 0), _dump(out, 0), _dump(out, 1)
    assert not _different(r0["state_dict"], r1["state_dict"])
    worst = max(float((r0["state_dict"][k] - v).abs().max()) for k, v in one["state_dict"].items())
    assert worst <= 1e-12, worst


def test_cli_under_torchrun_matches_one_process(tmp_path):
    """The documented command, ``torchrun --nproc_per_node=2 -m handops_models train ...`` (a small CPM
    config file, 2 epochs of 2 steps), against ``python -m handops_models train`` with the same arguments
    run here in one process: final.pt agrees to float32 tolerance (1e-5: the float64 test above is the
    sharp one; in float32, Adam's near-sign first steps turn gradient rounding into ~1e-7 here), rank 0
    alone wrote the run's files, and config.json records 2 processes. Rules out a CLI that does not set up
    the process group (each rank would train alone on its half: another result) or lets every rank write."""
    import json

    from handops_models.nets.configs import config_to_dict
    from handops_models.train import cli

    config = tmp_path / "small.json"
    config.write_text(json.dumps(config_to_dict(train_script.SMALL_CPM)))
    args = ["train", "--model", "cpm", "--config", str(config), "--data", "synthetic", "--train-size", "16",
            "--val-size", "4", "--batch-size", "8", "--epochs-scale", "0.02", "--no-progress"]
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "handops_models", *args, "--out", str(ddp)]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main([*args, "--out", str(single)]) == 0
    finally:
        torch.set_num_threads(threads)
    a = torch.load(ddp / "final.pt", weights_only=True)["network"]["state_dict"]
    b = torch.load(single / "final.pt", weights_only=True)["network"]["state_dict"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-5, worst
    assert json.loads((ddp / "config.json").read_text())["settings"]["world_size"] == 2
    assert len((ddp / "metrics.jsonl").read_text().splitlines()) == 2
    assert (proc.stdout + proc.stderr).count("unary epoch 1:") == 1  # one log line per epoch: rank 0 logs, rank 1 does not


def test_helpers_without_torchrun(monkeypatch):
    """Without torchrun's variables nothing is initialised and every helper answers for rank 0 of 1; a partial
    or inconsistent torchrun environment is a clear error, not a hang in the rendezvous."""
    from handops_models.train import distributed as D

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert D.torchrun_env() is None
    ctx = D.setup(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.device, ctx.backend, ctx.is_main, ctx.distributed) == (0, 1, "cpu", None, True,
                                                                                               False)
    assert not D.is_distributed() and D.is_main() and D.rank() == 0 and D.world_size() == 1
    assert D.all_reduce_mean([1.5, 2.0]) == [1.5, 2.0] and D.all_reduce_mean(3.0) == 3.0
    assert D.all_gather_objects({"a": 1}) == [{"a": 1}]
    D.barrier(), D.teardown()
    assert D.rank_seed(7, 0) == 7 and D.rank_seed(7, 1) == 7 + D.RANK_SEED_STRIDE
    assert D.seed_everything(5, 1) == 5 + D.RANK_SEED_STRIDE
    draws = torch.rand(3), np.random.rand(), random.random()
    torch.manual_seed(5 + D.RANK_SEED_STRIDE), np.random.seed(5 + D.RANK_SEED_STRIDE), random.seed(5 + D.RANK_SEED_STRIDE)
    assert torch.equal(draws[0], torch.rand(3)) and draws[1:] == (np.random.rand(), random.random())
    with pytest.raises(RuntimeError, match="LOCAL_RANK is not set"):
        D.torchrun_env({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    with pytest.raises(RuntimeError, match="outside WORLD_SIZE"):
        D.torchrun_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"})


def test_setup_from_a_torchrun_environment_one_process(monkeypatch):
    """setup() reads torchrun's variables and initialises gloo on the CPU (here a world of one process, in
    this process); teardown() destroys the group."""
    from handops_models.train import distributed as D

    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ctx = D.setup(device="cpu", timeout_s=30)
    try:
        assert (ctx.rank, ctx.world_size, ctx.backend, ctx.device) == (0, 1, "gloo", "cpu")
        assert D.is_distributed() and D.is_main()
        assert D.all_reduce_mean([2.0]) == [2.0] and D.all_gather_objects(3) == [3]
    finally:
        D.teardown()
    assert not D.is_distributed()
