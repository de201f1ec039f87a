"""Triton GPU kernels. Importing a module here needs triton; handops itself never does."""
