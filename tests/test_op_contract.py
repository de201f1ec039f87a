"""The contract every handops op keeps, checked for every op from one table (in the spirit of
torchvision's op tester and torch.testing's optests).

A new op joins by adding one ``OpCase`` to ``CASES``: how to make small sample inputs, how to call the
public function, the reference (the spec), the registered op's canonical arguments, which inputs are
differentiable, whether half precision is accepted and which Triton module runs it on CUDA. The
per-op test files keep only what is specific to their op (conventions, numerics, errors).

Each test below names the wrong implementation it rules out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import handops
from handops._reference.edge_conv import edge_conv_reference
from handops._reference.mano import mano_keypoints_jacobian_reference, mano_skinning_reference
from handops._reference.tree_marginals import tree_map_reference, tree_marginals_reference
from handops.ops.mano_skinning import SkinningModel, mano_keypoints_jacobian, mano_skinning
from mano_helpers import random_mano_model

TREE = handops.Tree([-1, 0, 0, 1])
GRAPH = handops.Graph(3, [(0, 1), (1, 2), (2, 0), (1, 1)])
SKINNING = SkinningModel.from_mano(random_mano_model(0, num_vertices=12))
KEYPOINTS = (0, 16 + 11, 7, 16, 7)  # joints and vertices, one repeated


@dataclass(frozen=True)
class OpCase:
    name: str
    op: Callable  # torch.ops.handops.<name>, for opcheck
    make: Callable[[torch.dtype, int], tuple]  # (dtype, batch) -> inputs (tensors first)
    call: Callable  # the public function of the inputs -> tensor or tuple of tensors
    reference: Callable  # the reference of the inputs -> the same outputs
    canonical: Callable  # the inputs -> the registered op's arguments
    differentiable: tuple[int, ...] = ()  # indices of the inputs with gradients
    half: bool = True  # float16 / bfloat16 inputs accepted (computed in float32)
    triton: str | None = None  # the handops._triton module whose OPS[op] runs it on CUDA
    # Bitwise equal for every thread count; False where BLAS (at::mm, whose reductions split by thread
    # count) does the work: then equal to rounding only.
    bitwise_threads: bool = True


def _rand(gen, *shape, dtype, offset=0.0):
    return (torch.rand(*shape, generator=gen, dtype=torch.float64) + offset).to(dtype)


# --- tree_marginals (adaptive kernels and a per-image mixture), tree_map -------------------------

def _tree_inputs(dtype, batch, models=None):
    gen = torch.Generator().manual_seed(0)
    unary = _rand(gen, batch, TREE.num_nodes, 6, 5, dtype=dtype, offset=0.05)
    if models is None:
        return unary, _rand(gen, batch, TREE.num_messages, 3, 5, dtype=dtype, offset=0.05)
    pairwise = _rand(gen, batch, models, TREE.num_messages, 3, 5, dtype=dtype, offset=0.05)
    return unary, pairwise, _rand(gen, batch, models, dtype=dtype)


def _tree_reference(unary, pairwise, weights=None):
    if weights is None:
        pairwise, weights = pairwise[:, None], unary.new_ones(unary.shape[0], 1)
    return tree_marginals_reference(unary, pairwise, weights, TREE)[0]


def _tree_canonical(unary, pairwise, weights=None):
    if weights is None:
        pairwise, weights = pairwise[:, None], unary.new_ones(unary.shape[0], 1)
    return unary, pairwise, weights, TREE.flat_messages(), list(TREE.level_sizes)


# --- edge_conv: two heads with bias ---------------------------------------------------------------

def _edge_inputs(dtype, batch):
    gen = torch.Generator().manual_seed(1)
    x = _rand(gen, batch, GRAPH.num_nodes, 6, 5, dtype=dtype)
    weight = (2 * _rand(gen, 2, GRAPH.num_edges, 3, 5, dtype=torch.float64) - 1).to(dtype)
    bias = (2 * _rand(gen, 2, GRAPH.num_edges, dtype=torch.float64) - 1).to(dtype)
    return x, weight, bias


def _edge_per_head_inputs(dtype, batch):
    """Per-head form: head h reads its own maps x[:, h] (SIA-GCN layers 2..5)."""
    gen = torch.Generator().manual_seed(3)
    x = _rand(gen, batch, 2, GRAPH.num_nodes, 6, 5, dtype=dtype)
    weight = (2 * _rand(gen, 2, GRAPH.num_edges, 3, 5, dtype=torch.float64) - 1).to(dtype)
    bias = (2 * _rand(gen, 2, GRAPH.num_edges, dtype=torch.float64) - 1).to(dtype)
    return x, weight, bias


def _edge_per_head_canonical(x, weight, bias):
    """The registered op sees the disjoint union of one graph copy per head (handops.ops.edge_conv)."""
    batch, heads, nodes, height, width = x.shape
    edges = heads * GRAPH.num_edges
    return (x.reshape(batch, heads * nodes, height, width), weight.reshape(1, edges, *weight.shape[-2:]),
            bias.reshape(1, edges), GRAPH.copies(heads).flat_edges())


# --- MANO: skinning (axis-angle pose, transl, keypoints) and its keypoint Jacobian ---------------

def _mano_inputs(dtype, batch):
    gen = torch.Generator().manual_seed(2)
    betas = torch.randn(batch, 10, generator=gen, dtype=torch.float64).to(dtype)
    pose = torch.randn(batch, 16, 3, generator=gen, dtype=torch.float64).to(dtype)
    transl = torch.randn(batch, 3, generator=gen, dtype=torch.float64).to(dtype)
    return betas, pose, transl


def _mano_canonical(betas, pose, transl):
    m = SKINNING.to(betas.dtype, betas.device)
    return (betas, pose, transl, *m.tensors(), list(m.parents), list(KEYPOINTS))


CASES = [
    OpCase("tree_marginals", torch.ops.handops.tree_marginals, _tree_inputs,
           lambda u, p: handops.tree_marginals(u, p, TREE), _tree_reference, _tree_canonical, (0, 1), triton="tree_marginals"),
    OpCase("tree_marginals_shared", torch.ops.handops.tree_marginals, lambda d, b: (_tree_inputs(d, b)[0], _tree_inputs(d, 1)[1][0]),
           lambda u, p: handops.tree_marginals(u, p, TREE), lambda u, p: _tree_reference(u, p.expand(u.shape[0], *p.shape)),
           lambda u, p: (u, p[None, None], u.new_ones(u.shape[0], 1), TREE.flat_messages(), list(TREE.level_sizes)), (0, 1),
           triton="tree_marginals"),
    OpCase("tree_marginals_mixture", torch.ops.handops.tree_marginals, lambda d, b: _tree_inputs(d, b, models=2),
           lambda u, p, w: handops.tree_marginals(u, p, TREE, weights=w), _tree_reference, _tree_canonical, (0, 1, 2),
           triton="tree_marginals"),
    OpCase("tree_map", torch.ops.handops.tree_map, _tree_inputs, lambda u, p: handops.tree_map(u, p, TREE),
           lambda u, p: tree_map_reference(u, p, TREE), lambda u, p: (u, p, TREE.flat_messages(), list(TREE.level_sizes)),
           triton="tree_marginals"),
    OpCase("edge_conv", torch.ops.handops.edge_conv, _edge_inputs, lambda x, w, b: handops.edge_conv(x, w, GRAPH, b),
           lambda x, w, b: edge_conv_reference(x, w, b, GRAPH), lambda x, w, b: (x, w, b, GRAPH.flat_edges()), (0, 1, 2),
           triton="edge_conv"),
    OpCase("edge_conv_per_head", torch.ops.handops.edge_conv, _edge_per_head_inputs, lambda x, w, b: handops.edge_conv(x, w, GRAPH, b),
           lambda x, w, b: edge_conv_reference(x, w, b, GRAPH), _edge_per_head_canonical, (0, 1, 2), triton="edge_conv"),
    OpCase("mano_skinning", torch.ops.handops.mano_skinning, _mano_inputs,
           lambda b, p, t: mano_skinning(SKINNING, b, p, t, KEYPOINTS),
           lambda b, p, t: mano_skinning_reference(*_mano_canonical(b, p, t)), _mano_canonical, (0, 1, 2), half=False,
           triton="mano_skinning", bitwise_threads=False),
    OpCase("mano_keypoints_jacobian", torch.ops.handops.mano_keypoints_jacobian, _mano_inputs,
           lambda b, p, t: mano_keypoints_jacobian(SKINNING, b, p, t, KEYPOINTS),
           lambda b, p, t: mano_keypoints_jacobian_reference(*_mano_canonical(b, p, t)), _mano_canonical, half=False),
]
DIFFERENTIABLE = [case for case in CASES if case.differentiable]
ids = lambda case: case.name  # noqa: E731


def as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def assert_same_outputs(got, want, rtol=1e-12, atol=1e-12):
    got, want = as_tuple(got), as_tuple(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        if w.is_floating_point():
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol)
        else:
            assert torch.equal(g, w)


def loss_of(out, seed=7):
    """A random linear functional of every floating output: exercises every output's gradient."""
    gen = torch.Generator().manual_seed(seed)
    return sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in as_tuple(out) if o.is_floating_point())


def grads_of(case, inputs):
    leaves = [t.detach().clone().requires_grad_(i in case.differentiable) for i, t in enumerate(inputs)]
    out = case.call(*leaves)
    return out, torch.autograd.grad(loss_of(out), [leaves[i] for i in case.differentiable])


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_matches_the_reference(case):
    """The compiled kernel computes the spec (rules out any kernel that drifted from the reference)."""
    inputs = case.make(torch.float64, 2)
    assert_same_outputs(case.call(*inputs), case.reference(*inputs), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_opcheck(case):
    """Schema, fake (meta) kernel, autograd registration and dispatch agree (torch.library.opcheck):
    rules out a fake kernel with the wrong output shapes or an op that mutates its inputs."""
    inputs = case.make(torch.float64, 2)
    leaves = [t.clone().requires_grad_(i in case.differentiable) for i, t in enumerate(inputs)]
    torch.library.opcheck(case.op, case.canonical(*leaves))


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=ids)
def test_gradcheck(case):
    """The analytic backward against finite differences in float64 (rules out a wrong adjoint)."""
    inputs = case.make(torch.float64, 2)
    leaves = [t.clone().requires_grad_(i in case.differentiable) for i, t in enumerate(inputs)]
    assert torch.autograd.gradcheck(lambda *xs: case.call(*xs), leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_torch_compile_fullgraph(case):
    """torch.compile(fullgraph=True) traces the op without a graph break and gives eager's values
    and gradients (rules out a Python-side computation that dynamo cannot trace)."""
    inputs = case.make(torch.float32, 2)
    compiled = torch.compile(case.call, fullgraph=True, backend="eager")
    if not case.differentiable:
        assert_same_outputs(compiled(*inputs), case.call(*inputs), rtol=1e-6, atol=1e-6)
        return
    leaves = [t.clone().requires_grad_(i in case.differentiable) for i, t in enumerate(inputs)]
    out = compiled(*leaves)
    grads = torch.autograd.grad(loss_of(out), [leaves[i] for i in case.differentiable])
    want_out, want_grads = grads_of(case, inputs)
    assert_same_outputs(out, want_out, rtol=1e-6, atol=1e-6)
    assert_same_outputs(grads, want_grads, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_empty_batch(case):
    """B = 0 gives empty outputs and empty gradients (rules out a kernel that crashes or divides by B)."""
    inputs = case.make(torch.float64, 0)
    full = as_tuple(case.call(*case.make(torch.float64, 2)))
    leaves = [t.clone().requires_grad_(i in case.differentiable) for i, t in enumerate(inputs)]
    out = as_tuple(case.call(*leaves))
    assert [o.shape[1:] for o in out] == [o.shape[1:] for o in full] and all(o.shape[0] == 0 for o in out)
    if case.differentiable:
        grads = torch.autograd.grad(loss_of(out), [leaves[i] for i in case.differentiable], allow_unused=True)
        assert all(g is None or g.shape == leaves[i].shape for g, i in zip(grads, case.differentiable))


def strided_copy(t: torch.Tensor) -> torch.Tensor:
    """The same values through a non-contiguous view: every other entry of a wider buffer along the
    last dimension (stride 2)."""
    wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
    wide[..., ::2] = t
    return wide[..., ::2]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_non_contiguous_and_expanded_inputs(case):
    """Strided views and expanded (stride-0) batches give the results of their contiguous copies
    (rules out a kernel that reads memory as if it were dense)."""
    inputs = case.make(torch.float64, 3)
    strided = [strided_copy(t) for t in inputs]
    assert all(not t.is_contiguous() for t in strided if t.numel() > 1)
    got, got_grads = grads_of(case, strided) if case.differentiable else (case.call(*strided), ())
    want, want_grads = grads_of(case, inputs) if case.differentiable else (case.call(*inputs), ())
    assert_same_outputs(got, want)
    assert_same_outputs(tuple(got_grads), tuple(want_grads))
    # One image expanded over the batch (stride 0) equals the image repeated.
    expanded = [t[:1].expand(t.shape) for t in inputs]
    repeated = [t[:1].repeat(t.shape[0], *([1] * (t.dim() - 1))) for t in inputs]
    assert_same_outputs(case.call(*expanded), case.call(*repeated))


@pytest.mark.parametrize("case", [c for c in CASES if c.half], ids=ids)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(case, dtype):
    """Half inputs return half outputs computed in float32 (rules out computing in half precision,
    whose 3-digit products underflow the tree ops' messages)."""
    inputs = [t.to(dtype) for t in case.make(torch.float32, 2)]
    got = as_tuple(case.call(*inputs))
    want = as_tuple(case.call(*[t.float() for t in inputs]))
    for g, w in zip(got, want):
        if not w.is_floating_point():
            continue
        assert g.dtype == dtype
        torch.testing.assert_close(g, w.to(dtype), rtol=0, atol=0)  # the float32 result, rounded once


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_thread_count_does_not_change_the_result(case):
    """1 and 2 threads give bitwise equal outputs and gradients (rules out a reduction whose order
    depends on the work split, e.g. shared-kernel gradients summed per thread in thread order)."""
    threads = torch.get_num_threads()
    for batch in (1, 5):  # one image splits the work by message, several by image
        inputs = case.make(torch.float32, batch)
        results = []
        try:
            for n in (1, 2):
                torch.set_num_threads(n)
                results.append(grads_of(case, inputs) if case.differentiable else (case.call(*inputs), ()))
        finally:
            torch.set_num_threads(threads)
        (out1, grads1), (out2, grads2) = results
        tol = 0 if case.bitwise_threads else 1e-5
        assert_same_outputs(out1, out2, rtol=tol, atol=tol)
        assert_same_outputs(tuple(grads1), tuple(grads2), rtol=tol, atol=tol)


@pytest.mark.parametrize("case", [c for c in CASES if c.triton], ids=ids)
def test_triton_kernels_match_the_registered_op(case):
    """What CUDA tensors run (``handops._triton.<module>.OPS``), here in the Triton interpreter on CPU
    tensors, against the C++ op with the same arguments, forward and backward (rules out a GPU kernel
    that drifted from the CPU one or from the schema)."""
    pytest.importorskip("triton")
    from handops.ops._dispatch import triton_module

    module = triton_module(case.triton)
    inputs = case.make(torch.float64, 2)
    args = case.canonical(*inputs)
    got, want = as_tuple(module.OPS[case.op._qualified_op_name.split("::")[1]](*args)), as_tuple(case.op(*args))
    for g, w in zip(got, want):  # by-products (the tree ops' messages) included
        if w.is_floating_point():
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
        else:
            assert torch.equal(g, w)
