"""Builds handops and its C++ extension ``handops._C`` against the installed torch.

    pip install --no-build-isolation .          # C++ CPU kernels (OpenMP, -O3)
    HANDOPS_NO_EXTENSION=1 pip install --no-build-isolation .   # pure Python: ops run their references
    HANDOPS_NATIVE=0 pip install ...            # portable build without -march=native

CUDA sources would be built only when torch is a CUDA build; the GPU kernels are Triton today, so
there are none.
"""

import glob
import os

from setuptools import find_packages, setup

ext_modules, cmdclass = [], {}
if os.environ.get("HANDOPS_NO_EXTENSION", "0") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    # -ffp-contract=fast: a*b+c becomes one FMA (ISO -std=c++17 turns contraction off otherwise).
    cxx_flags = ["-O3", "-fopenmp", "-fno-math-errno", "-ffp-contract=fast"]
    if os.environ.get("HANDOPS_NATIVE", "1") == "1":
        cxx_flags.append("-march=native")  # the widest SIMD the build machine has
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    ext_modules.append(
        CppExtension(
            "handops._C",
            sources,
            include_dirs=[os.path.abspath("csrc")],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    )
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(
    packages=find_packages(include=["handops", "handops.*", "handops_models", "handops_models.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
