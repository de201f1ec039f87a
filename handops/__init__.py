"""handops: fused, differentiable PyTorch ops for structured hand pose estimation."""

from handops import _extension
from handops._config import show_config
from handops import geometry, mano
from handops.graph import Graph, hand_graph
from handops.mano import ManoLayer, calibrate_shape, fit_keypoints2d
from handops.ops.edge_conv import edge_conv
from handops.ops.tree_marginals import tree_map, tree_marginals
from handops.tree import HAND_KEYPOINT_NAMES, Tree, hand_tree

__version__ = "0.1.0"
HAS_EXTENSION = _extension.HAS_EXTENSION

__all__ = [
    "geometry", "Tree", "hand_tree", "HAND_KEYPOINT_NAMES", "tree_marginals", "tree_map",
    "Graph", "hand_graph", "edge_conv", "mano", "ManoLayer", "fit_keypoints2d", "calibrate_shape",
    "HAS_EXTENSION", "show_config", "__version__",
]
