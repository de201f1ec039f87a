"""torch.distributed for training: set up from torchrun's environment, per-rank seeds, rank-0 checks, teardown.

    ctx = setup()                           # reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
    seed_everything(seed)                   # seed + rank offset (rank 0 gets ``seed`` itself)
    settings.device = ctx.device            # "cuda:<LOCAL_RANK>" under NCCL, "cpu" under gloo
    run_recipe(model, recipe, train, val, out, settings)
    teardown()

Nothing here is home-made: torchrun (``python -m torch.distributed.run``) starts the processes and runs the
rendezvous (single node: ``--nproc_per_node=N``; several nodes: ``--nnodes``, ``--rdzv-backend=c10d``,
``--rdzv-endpoint=HOST:PORT``) and sets the environment variables; :func:`setup` hands them to
``torch.distributed.init_process_group("env://")`` with gloo on the CPU and NCCL on GPUs (each process on
the GPU ``LOCAL_RANK``). Without torchrun's variables :func:`setup` initialises nothing and training is a
single process; every helper here then answers for one process (rank 0 of 1).

Per-rank seeds: :func:`rank_seed` is ``seed + 1_000_003 * rank``. Rank 0 gets ``seed`` itself, so rank 0 of
a distributed run draws what a single process seeded with ``seed`` draws (DistributedDataParallel
broadcasts rank 0's initial weights to the others); the other ranks draw different random augmentations.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistContext", "torchrun_env", "setup", "teardown", "is_distributed", "rank", "world_size", "is_main",
           "barrier", "rank_seed", "seed_everything", "all_reduce_mean", "all_gather_objects"]

RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size``, its rank on this node, its device and the
    process group's backend (None: a single process, no process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def torchrun_env(environ=None) -> dict | None:
    """torchrun's variables as ints (rank, world_size, local_rank) and strings (master_addr, master_port), or
    None when the process was not started by torchrun (no RANK / WORLD_SIZE). Missing or malformed values
    among the rest are a clear error rather than a hang in the rendezvous."""
    env = os.environ if environ is None else environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None
    out = {}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in env:
            raise RuntimeError(f"torch.distributed: {key} is not set but RANK/WORLD_SIZE are; start the processes with "
                               f"torchrun (python -m torch.distributed.run), which sets RANK, WORLD_SIZE, LOCAL_RANK, "
                               f"MASTER_ADDR and MASTER_PORT")
        out[key.lower()] = env[key]
    try:
        for key in ("rank", "world_size", "local_rank"):
            out[key] = int(out[key])
        int(out["master_port"])
    except ValueError as e:
        raise RuntimeError(f"torch.distributed: malformed torchrun environment {out}: {e}") from e
    if not 0 <= out["rank"] < out["world_size"]:
        raise RuntimeError(f"torch.distributed: RANK {out['rank']} is outside WORLD_SIZE {out['world_size']}")
    return out


def setup(device: str | None = None, backend: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Initialise the default process group from torchrun's environment (module docstring).

    ``device``: "cpu", "cuda" or None (CUDA when available). On CUDA each process takes the GPU
    ``LOCAL_RANK`` (``torch.cuda.set_device``) and the backend is NCCL; on the CPU it is gloo. ``backend``
    overrides the choice. ``timeout_s``: how long a collective waits for the other ranks before failing.
    Without torchrun's variables nothing is initialised and the context is rank 0 of 1 on ``device``.
    Calling it again in an initialised process returns the context without re-initialising.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = torch.device(device).type
    if device_type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for but CUDA is not available")
    env = torchrun_env()
    if env is None:
        return DistContext(device=str(device))
    local_rank = env["local_rank"]
    if device_type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(f"LOCAL_RANK {local_rank} but this node has {count} GPU(s): start at most {count} "
                               f"processes per node (torchrun --nproc_per_node={count})")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    backend = backend or ("nccl" if device_type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=env["rank"], world_size=env["world_size"],
                                timeout=timedelta(seconds=timeout_s))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=str(device),
                       backend=dist.get_backend())


def teardown() -> None:
    """Destroy the default process group (a no-op without one)."""
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one process that writes checkpoints, logs and plots."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def rank_seed(seed: int, rank_: int | None = None) -> int:
    """This rank's seed: ``seed + 1_000_003 * rank`` (rank 0: ``seed``)."""
    r = rank() if rank_ is None else int(rank_)
    return int(seed) + RANK_SEED_STRIDE * r


def seed_everything(seed: int, rank_: int | None = None) -> int:
    """Seed torch (CPU and CUDA), numpy's global generator and Python's ``random`` with :func:`rank_seed`;
    returns the seed used."""
    s = rank_seed(seed, rank_)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)
    return s


def _collective_device() -> torch.device:
    """Where a tensor must live for a collective of the default group: the current GPU under NCCL."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values):
    """The mean over ranks of a float or a list of floats (one collective; unchanged in a single process)."""
    single = not isinstance(values, (list, tuple))
    floats = [float(values)] if single else [float(v) for v in values]
    if not is_distributed() or not floats:
        return floats[0] if single else floats
    t = torch.tensor(floats, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    out = (t / dist.get_world_size()).tolist()
    return out[0] if single else out


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
