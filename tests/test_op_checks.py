"""Input checks of the ops that have no home in the kernel tests: a mixture of no models, the value checks
of the CUDA registration (run here on CPU tensors by calling the registered functions directly)."""

import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import handops
from handops.ops import _checks, _registration
from handops.ops import tree_marginals as tree_marginals_module

TREE = handops.Tree([-1, 0, 0, 1])


@pytest.mark.parametrize("pool_shape", [(0, 6, 3, 3), (2, 0, 6, 3, 3)], ids=["shared_pool", "adaptive_pool"])
def test_a_pool_of_no_models_is_an_error(pool_shape):
    # The weighted sum of L = 0 models' marginals is all zeros, which is no distribution.
    with pytest.raises(ValueError, match=r"pairwise \[.*L, M, kh, kw\] must hold at least one model \(L >= 1\)"):
        handops.tree_marginals(torch.rand(2, 4, 5, 5), torch.rand(pool_shape), TREE, weights=torch.rand(2, 0))


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


class _SaysCuda(torch.Tensor):
    """A CPU tensor that reports ``is_cuda``: it takes the CUDA branch of the checks on a machine without a GPU."""

    is_cuda = True


def _cuda_calls(monkeypatch, unary, pairwise):
    """The CUDA registration's forward and MAP functions, on _SaysCuda tensors, with a stub for the Triton kernels."""
    stub = types.SimpleNamespace(OPS={"tree_marginals": lambda *args: "ran", "tree_map": lambda *args: "ran"})
    monkeypatch.setattr(_registration, "triton_module", lambda name: stub)
    unary, pairwise = unary.as_subclass(_SaysCuda), pairwise.as_subclass(_SaysCuda)
    args = (TREE.flat_messages(), list(TREE.level_sizes))
    return [lambda: tree_marginals_module._cuda_forward(unary, pairwise[:, None], unary.new_ones(2, 1), *args),
            lambda: tree_marginals_module._cuda_map(unary, pairwise, *args)]


def test_cuda_value_checks_do_not_synchronise(monkeypatch):
    # A host read (bool(), .item(): aten._local_scalar_dense) on every GPU call stalls it and breaks CUDA graphs.
    monkeypatch.delenv("HANDOPS_SYNC_CHECKS", raising=False)
    for call in _cuda_calls(monkeypatch, torch.rand(2, 4, 5, 5), torch.rand(2, 6, 3, 3)):
        with _RecordOps() as mode:
            assert call() == "ran"
        assert "aten._local_scalar_dense.default" not in mode.ops
        assert "aten._assert_async.msg" in mode.ops


@pytest.mark.parametrize("bad", [float("nan"), -1.0])
def test_cuda_value_checks_still_refuse_bad_input(monkeypatch, bad):
    pairwise = torch.rand(2, 6, 3, 3)
    pairwise[1, 2, 0, 0] = bad
    monkeypatch.delenv("HANDOPS_SYNC_CHECKS", raising=False)
    for call in _cuda_calls(monkeypatch, torch.rand(2, 4, 5, 5), pairwise):  # the queued assert fires at once on the CPU
        with pytest.raises(RuntimeError, match="handops: pairwise must be finite and non-negative"):
            call()
    monkeypatch.setenv("HANDOPS_SYNC_CHECKS", "1")  # opt-in: the synchronous check and its ValueError
    for call in _cuda_calls(monkeypatch, torch.rand(2, 4, 5, 5), pairwise):
        with pytest.raises(ValueError, match="pairwise must be (finite|non-negative)"):
            call()


def test_cpu_value_checks_raise_value_errors():
    with pytest.raises(ValueError, match="unary must be finite, but it holds NaN"):
        _checks.check_values(unary=torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="unary must be non-negative, but its minimum is -1"):
        _checks.check_values(unary=torch.tensor([0.5, -1.0]))
