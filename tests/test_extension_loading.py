"""Loading handops._C: the torch it was built against, a loader failure, and what show_config reports.

Each case runs in a fresh interpreter (an extension loads once per process); the broken installs are
copies of the package in a temporary folder, put first on PYTHONPATH.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import handops
from handops import _extension

PACKAGE = Path(handops.__file__).resolve().parent
needs_extension = pytest.mark.skipif(not handops.HAS_EXTENSION, reason="the C++ extension handops._C is not built")


def _python(code: str, pythonpath: Path | None = None, **env) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env)
    if pythonpath is not None:
        full["PYTHONPATH"] = os.pathsep.join([str(pythonpath), full.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300,
                          cwd=pythonpath or None)


def _copy_package(tmp_path: Path, with_extension: bool = True, with_build_info: bool = True) -> Path:
    root = tmp_path / "site"
    shutil.copytree(PACKAGE, root / "handops", ignore=shutil.ignore_patterns("__pycache__", "_C*.so", "_C*.pyd"))
    if with_extension:
        os.symlink(_extension.EXTENSION_PATH, root / "handops" / Path(_extension.EXTENSION_PATH).name)
    if not with_build_info:
        (root / "handops" / "_build_info.py").unlink(missing_ok=True)
    return root


@needs_extension
def test_the_build_records_the_torch_it_was_built_against():
    assert _extension.BUILD_INFO["torch_version"] == str(torch.__version__)
    assert _extension.BUILD_INFO["build"] in ("portable", "native", "default")
    from handops._build_info import BUILD_INFO  # written by setup.py beside the extension

    assert BUILD_INFO == _extension.BUILD_INFO  # the extension compiles the same record in


@needs_extension
def test_another_torch_is_refused_with_what_to_do():
    built = _extension.BUILD_INFO["torch_version"]
    result = _python("import torch; torch.__version__ = '2.99.1'; import handops")
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: handops: the C++ extension")
    assert f"was built against torch {built}, but torch 2.99.1 is imported" in message
    assert f'pip install "torch=={built.split("+")[0]}"' in message
    assert "pip install --no-build-isolation -e ." in message


@needs_extension
def test_another_torch_is_refused_by_the_extension_itself_without_the_record(tmp_path):
    """An install without handops/_build_info.py: the check runs on what the extension compiled in."""
    site = _copy_package(tmp_path, with_build_info=False)
    result = _python("import torch; torch.__version__ = '2.99.1'; import handops", site)
    assert result.returncode != 0
    assert "but torch 2.99.1 is imported" in result.stderr
    fine = _python("import handops; assert handops.HAS_EXTENSION; print(handops.show_config(mode='dict')['torch'])", site)
    assert fine.returncode == 0, fine.stderr
    assert str(torch.__version__) in fine.stdout


def test_a_broken_extension_is_a_clear_import_error(tmp_path):
    site = _copy_package(tmp_path, with_extension=False)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (site / "handops" / f"_C{suffix}").write_bytes(b"not a shared object")
    result = _python("import handops", site)
    assert result.returncode != 0
    assert "handops: the C++ extension" in result.stderr and "exists but failed to load" in result.stderr
    assert "Rebuild it: pip install --no-build-isolation -e ." in result.stderr
    assert "HANDOPS_NO_EXTENSION=1" in result.stderr
    # The way out the message names: the references, after one warning.
    escaped = _python("import warnings; warnings.simplefilter('error', RuntimeWarning)\n"
                      "try:\n    import handops\nexcept RuntimeWarning as w:\n    print(w)", site, HANDOPS_NO_EXTENSION="1")
    assert "HANDOPS_NO_EXTENSION=1 is set" in escaped.stdout, escaped.stderr
    ok = _python("import handops; assert not handops.HAS_EXTENSION; handops.show_config()", site, HANDOPS_NO_EXTENSION="1")
    assert ok.returncode == 0, ok.stderr
    assert "C++ extension: not loaded (HANDOPS_NO_EXTENSION=1 is set)" in ok.stdout


def test_show_config_reports_what_a_bug_report_needs():
    text = handops.show_config(mode="str")
    config = handops.show_config(mode="dict")
    assert text.startswith(f"handops {handops.__version__} ")
    assert f"torch {torch.__version__}" in text
    assert config["torch"]["version"] == str(torch.__version__)
    assert config["threads"]["torch"] == torch.get_num_threads()
    assert "triton:" in text and "GPU (Triton) kernels" in text
    modules = config["gpu_kernels"]
    assert set(modules) == {"edge_conv", "mano_skinning", "tree_marginals"}
    if config["triton"]["importable"]:
        assert "tree_marginals" in modules["tree_marginals"]["ops"] and modules["tree_marginals"]["kernels"]
        assert "mano_skinning_backward" in modules["mano_skinning"]["ops"]
    if handops.HAS_EXTENSION:
        assert config["torch"]["built_against"] == str(torch.__version__)
        assert config["cpu"]["capability"] in _extension.CPU_CAPABILITIES
        assert config["threads"]["openmp"]["max_threads"] >= 1
        assert config["extension"]["cxx_flags"] and "-O3" in text
    with pytest.raises(ValueError, match="mode"):
        handops.show_config(mode="yaml")


def test_show_config_prints(capsys):
    assert handops.show_config() is None
    assert capsys.readouterr().out.startswith(f"handops {handops.__version__} ")
