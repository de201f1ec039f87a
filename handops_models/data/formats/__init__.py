"""Loaders for the real hand datasets' own file layouts, yielding the sample dict of ``handops_models.data.sample``."""
