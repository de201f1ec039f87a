"""The op benchmarks under pytest-benchmark: one test per (case, mode, provider) job of every spec.

    pytest benchmarks --benchmark-only                        # quick sizes (each spec's quick_argv)
    pytest benchmarks --benchmark-only --bench-sizes full     # the sizes python -m benchmarks.run_all times
    pytest benchmarks --benchmark-only --benchmark-autosave   # keep this run under .benchmarks/
    pytest benchmarks --benchmark-only --benchmark-compare    # compare with the last kept run

The jobs are :func:`harness.measurement_jobs` of the specs that ``python -m benchmarks.run_all`` sweeps;
pytest-benchmark times them instead of :func:`harness.time_median`. Each job's group is its op, case and
mode, so every table compares the providers on the same inputs.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from benchmarks import bench_edge_conv, bench_mano, bench_tree_marginals, harness

SPECS = (bench_tree_marginals.SPEC, bench_edge_conv.SPEC, bench_mano.SPEC)


def _job_params(sizes: str) -> list:
    """pytest.param(spec, device, case, mode, provider) per job; a skipped one per spec missing a module."""
    params = []
    for spec in SPECS:
        missing = [module for module in spec.requires if importlib.util.find_spec(module) is None]
        if missing:
            skip = pytest.mark.skip(reason=f"the {spec.op} benchmark needs {', '.join(missing)}")
            params.append(pytest.param(spec, None, None, None, None, marks=skip, id=spec.op))
            continue
        args = harness.benchmark_parser(spec).parse_args(list(spec.quick_argv) if sizes == "quick" else [])
        device = torch.device(args.device)
        for case, mode, provider in harness.measurement_jobs(spec, spec.cases(args), args.providers):
            job_id = "-".join((spec.op, case.label.replace(" ", "_"), mode, provider))
            params.append(pytest.param(spec, device, case, mode, provider, id=job_id))
    return params


def pytest_generate_tests(metafunc):
    if "provider" in metafunc.fixturenames:
        jobs = _job_params(metafunc.config.getoption("bench_sizes"))
        metafunc.parametrize(("spec", "device", "case", "mode", "provider"), jobs)


_latest_inputs: dict[int, tuple] = {}


def _inputs(case: harness.Case, device: torch.device) -> tuple:
    """The case's inputs, built once for its tests (which run one after another); only the latest case's are kept."""
    if id(case) not in _latest_inputs:
        _latest_inputs.clear()
        _latest_inputs[id(case)] = case.make_inputs(device)
    return _latest_inputs[id(case)]


def test_op_benchmark(benchmark, spec, device, case, mode, provider):
    call = spec.workload(spec.providers[provider], _inputs(case, device), mode)
    benchmark.group = f"{spec.op} {case.label} {mode}"
    sizes = {name: value for name, value in case.shape.items() if value != ""}
    benchmark.extra_info.update(op=spec.op, provider=provider, mode=case.row_mode(mode), B=case.batch, **sizes)
    benchmark(harness.synchronized(call, device))
