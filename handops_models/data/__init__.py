"""Hand data: synthetic hands, the real datasets' formats, training targets and transforms.

Every dataset yields the sample dictionary of :mod:`handops_models.data.sample`.
"""

from handops_models.data.formats import DexYCB, FreiHAND, HUMBIHands, MHPHands, PanopticHands
from handops_models.data.sample import SAMPLE_KEYS, check_sample
from handops_models.data.synthetic import SyntheticHands, split_subjects
from handops_models.data.targets import (
    assign_pose_clusters,
    fit_pose_clusters,
    keypoint_heatmaps,
    pairwise_targets,
    pose_cluster_weights,
    rotation_target,
)
from handops_models.data.transforms import (
    ColorJitter,
    Compose,
    HandCrop,
    HorizontalFlip,
    RandomHorizontalFlip,
    RandomRotation,
    RandomScale,
    Resize,
    Rotate,
    Scale,
)

__all__ = [
    "SAMPLE_KEYS", "check_sample", "SyntheticHands", "split_subjects",
    "PanopticHands", "FreiHAND", "DexYCB", "HUMBIHands", "MHPHands",
    "keypoint_heatmaps", "pairwise_targets", "rotation_target", "fit_pose_clusters", "assign_pose_clusters",
    "pose_cluster_weights",
    "HandCrop", "Resize", "Rotate", "RandomRotation", "Scale", "RandomScale", "HorizontalFlip", "RandomHorizontalFlip",
    "ColorJitter", "Compose",
]
