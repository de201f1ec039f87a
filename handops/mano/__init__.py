"""MANO in handops: model files, the model container and (in progress) skinning and fitting."""

from handops.mano.layer import ManoLayer, ManoOutput
from handops.mano.model import MANO_PARENTS, OFFICIAL_FINGERTIP_IDS, ManoModel

__all__ = ["ManoModel", "ManoLayer", "ManoOutput", "MANO_PARENTS", "OFFICIAL_FINGERTIP_IDS"]
