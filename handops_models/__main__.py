"""``python -m handops_models {train,evaluate,predict} ...`` (and ``torchrun -m handops_models train ...``):
the command line of :mod:`handops_models.train.cli`."""

import sys

from handops_models.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
