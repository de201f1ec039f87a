"""MANO in handops: model files, the model container and (in progress) skinning and fitting."""

from handops.mano.model import MANO_PARENTS, OFFICIAL_FINGERTIP_IDS, ManoModel

__all__ = ["ManoModel", "MANO_PARENTS", "OFFICIAL_FINGERTIP_IDS", "synthetic_model"]


def __getattr__(name):
    # imported lazily so that `python -m handops.mano.synthetic` does not import the module twice
    if name == "synthetic_model":
        from handops.mano.synthetic import synthetic_model

        return synthetic_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
