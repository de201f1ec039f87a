"""Options of the op benchmarks under pytest-benchmark (``pytest benchmarks --benchmark-only``).

Only ``pytest benchmarks ...`` loads this file: the main suite collects ``tests/`` alone (pyproject's testpaths).
"""


def pytest_addoption(parser):
    parser.addoption(
        "--bench-sizes",
        choices=("quick", "full"),
        default="quick",
        help="quick (default): each benchmark's quick sizes (BenchmarkSpec.quick_argv); "
        "full: the sizes its command line times by default, as python -m benchmarks.run_all does",
    )
