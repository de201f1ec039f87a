"""handops_models: the thesis networks built on the handops ops, with their data, metrics and pictures."""

__version__ = "0.1.0"
