"""Readable pure-PyTorch references: the specification every kernel is tested against."""
