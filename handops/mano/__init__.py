"""MANO in handops: model files, the model container and (in progress) skinning and fitting."""

from handops.mano.fitting import FitResult, calibrate_shape, fit_keypoints2d
from handops.mano.layer import ManoLayer, ManoOutput
from handops.mano.model import MANO_PARENTS, OFFICIAL_FINGERTIP_IDS, ManoModel

__all__ = [
    "ManoModel", "ManoLayer", "ManoOutput", "MANO_PARENTS", "OFFICIAL_FINGERTIP_IDS",
    "fit_keypoints2d", "calibrate_shape", "FitResult",
]
