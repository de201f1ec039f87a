"""MANO in handops: model files, the model container, the procedural synthetic hand, ManoLayer, fitting
and calibration."""

from handops.mano.fitting import FitResult, calibrate_shape, fit_keypoints2d
from handops.mano.io import load, save
from handops.mano.layer import ManoLayer, ManoOutput
from handops.mano.model import MANO_PARENTS, OFFICIAL_FINGERTIP_IDS, OPENPOSE_FROM_MANO, ManoModel

__all__ = [
    "ManoModel", "ManoLayer", "ManoOutput", "MANO_PARENTS", "OFFICIAL_FINGERTIP_IDS", "OPENPOSE_FROM_MANO", "load", "save",
    "fit_keypoints2d", "calibrate_shape", "FitResult", "synthetic_model",
]


def __getattr__(name):
    # imported lazily so that `python -m handops.mano.synthetic` does not import the module twice
    if name == "synthetic_model":
        from handops.mano.synthetic import synthetic_model

        return synthetic_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
