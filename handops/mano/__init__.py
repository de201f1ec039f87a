"""MANO in handops: model files, the model container and (in progress) skinning and fitting."""

from handops.mano.io import load, save
from handops.mano.model import MANO_PARENTS, OFFICIAL_FINGERTIP_IDS, ManoModel

__all__ = ["ManoModel", "MANO_PARENTS", "OFFICIAL_FINGERTIP_IDS", "load", "save"]
