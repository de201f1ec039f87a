"""Numbers the C++ kernels repeat from the Python references must equal them: one value, written twice.

Rules out the drift this project had (the Rodrigues series threshold was 1e-6 in the reference and 1e-4
in the kernels): the C++ sources are read as text, since the compiled constants are not exported.
"""

import re
from pathlib import Path

import pytest

from handops._reference.tree_marginals import MESSAGE_FLOOR, ZERO_MESSAGE_EPS_FACTOR
from handops.geometry import RODRIGUES_SERIES_BELOW

CSRC = Path(__file__).resolve().parents[1] / "csrc" / "cpu"


def cpp_constant(file: str, name: str) -> float:
    """The value of ``constexpr double <name> = <value>;`` in csrc/cpu/<file>."""
    match = re.search(rf"constexpr\s+double\s+{name}\s*=\s*([0-9.eE+-]+)\s*;", (CSRC / file).read_text())
    assert match, f"{name} is not defined as a constexpr double in csrc/cpu/{file}"
    return float(match.group(1))


@pytest.mark.parametrize(
    "file, name, value",
    [
        ("tree_marginals.cpp", "kMessageFloor", MESSAGE_FLOOR),
        ("tree_marginals.cpp", "kZeroMessageEpsFactor", ZERO_MESSAGE_EPS_FACTOR),
        ("mano_skinning.cpp", "kRodriguesSeriesBelow", RODRIGUES_SERIES_BELOW),
    ],
)
def test_cpp_constants_equal_the_python_ones(file, name, value):
    assert cpp_constant(file, name) == value


def test_triton_kernels_use_the_python_constants():
    pytest.importorskip("triton")
    from handops._triton import mano_skinning, tree_marginals

    assert mano_skinning._SERIES_BELOW.value == RODRIGUES_SERIES_BELOW
    assert tree_marginals._FLOOR.value == MESSAGE_FLOOR
