"""MANO in handops: model files, the model container and (in progress) skinning and fitting."""

from handops.mano.model import MANO_PARENTS, OFFICIAL_FINGERTIP_IDS, ManoModel
from handops.mano.synthetic import synthetic_model

__all__ = ["ManoModel", "MANO_PARENTS", "OFFICIAL_FINGERTIP_IDS", "synthetic_model"]
