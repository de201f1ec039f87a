"""Loads the compiled extension ``handops._C``, or declares the op schemas from Python without it.

``handops._C`` (built from ``csrc/``) declares every schema in one ``TORCH_LIBRARY(handops, m)``
block and registers the C++ CPU kernels. Without it (``HANDOPS_NO_EXTENSION=1`` at install time, or a
failed build) the same schemas are declared here and the ops run their pure-PyTorch references,
after one warning.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["HAS_EXTENSION", "SCHEMAS"]

# Must match csrc/handops.cpp exactly (tests/test_tree_marginals.py::test_python_schemas_match_the_extension compares them).
SCHEMAS = {
    "tree_marginals": "tree_marginals(Tensor unary, Tensor pairwise, Tensor weights, int[] messages, int[] level_sizes) -> (Tensor, Tensor, Tensor)",
    "tree_marginals_backward": (
        "tree_marginals_backward(Tensor grad, Tensor unary, Tensor pairwise, Tensor weights, Tensor messages, Tensor scales, "
        "int[] messages_schedule, int[] level_sizes) -> (Tensor, Tensor, Tensor)"
    ),
    "tree_map": "tree_map(Tensor unary, Tensor pairwise, int[] messages, int[] level_sizes) -> (Tensor, Tensor)",
    "edge_conv": "edge_conv(Tensor x, Tensor weight, Tensor? bias, int[] edges) -> Tensor",
    "edge_conv_backward": "edge_conv_backward(Tensor grad, Tensor x, Tensor weight, int[] edges) -> (Tensor, Tensor, Tensor)",
    "mano_skinning": (
        "mano_skinning(Tensor betas, Tensor pose, Tensor? transl, Tensor v_template, Tensor shapedirs, Tensor posedirs, Tensor J_template, "
        "Tensor J_shapedirs, Tensor weights, int[] parents, int[] keypoint_ids) -> (Tensor, Tensor, Tensor, Tensor)"
    ),
    "mano_skinning_backward": (
        "mano_skinning_backward(Tensor? grad_vertices, Tensor? grad_keypoints, Tensor? grad_joints, Tensor? grad_transforms, Tensor betas, Tensor pose, Tensor v_template, "
        "Tensor shapedirs, Tensor posedirs, Tensor J_template, Tensor J_shapedirs, Tensor weights, int[] parents, int[] keypoint_ids) -> (Tensor, Tensor, Tensor)"
    ),
    "mano_keypoints_jacobian": (
        "mano_keypoints_jacobian(Tensor betas, Tensor pose, Tensor? transl, Tensor v_template, Tensor shapedirs, Tensor posedirs, "
        "Tensor J_template, Tensor J_shapedirs, Tensor weights, int[] parents, int[] keypoint_ids) -> (Tensor, Tensor)"
    ),
}

try:
    from handops import _C  # noqa: F401  (registers the schemas and the CPU kernels)

    HAS_EXTENSION = True
except ImportError as error:  # pragma: no cover - exercised by the pure-Python install
    HAS_EXTENSION = False
    _lib = torch.library.Library("handops", "DEF")
    for _schema in SCHEMAS.values():
        _lib.define(_schema)
    warnings.warn(
        f"handops: the C++ extension is not available ({error}); every op runs its pure-PyTorch "
        "reference on the CPU, which is much slower. Reinstall without HANDOPS_NO_EXTENSION=1 to build it.",
        RuntimeWarning,
        stacklevel=2,
    )
