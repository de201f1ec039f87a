"""Loaders for the real hand datasets' own file layouts, yielding the sample dict of ``handops_models.data.sample``.

Each is a ``torch.utils.data.Dataset`` over a folder a user downloaded (none can be shipped); their docstrings list
the exact files read and the conventions assumed.
"""

from handops_models.data.formats.dexycb import DexYCB
from handops_models.data.formats.freihand import FreiHAND
from handops_models.data.formats.humbi import HUMBIHands
from handops_models.data.formats.mhp import MHPHands
from handops_models.data.formats.panoptic import PanopticHands

__all__ = ["PanopticHands", "FreiHAND", "DexYCB", "HUMBIHands", "MHPHands"]
