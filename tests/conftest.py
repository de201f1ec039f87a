import os

# Without a GPU the Triton kernels run in the interpreter; triton reads this when a kernel is defined,
# so it must be set before any handops._triton module is imported.
try:
    import torch

    _has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")
