"""Input checks of the ops that have no home in the kernel tests: a mixture of no models, the value checks
of the CUDA registration (run here on CPU tensors by calling the registered functions directly)."""

import pytest
import torch

import handops

TREE = handops.Tree([-1, 0, 0, 1])


@pytest.mark.parametrize("pool_shape", [(0, 6, 3, 3), (2, 0, 6, 3, 3)], ids=["shared_pool", "adaptive_pool"])
def test_a_pool_of_no_models_is_an_error(pool_shape):
    # The weighted sum of L = 0 models' marginals is all zeros, which is no distribution.
    with pytest.raises(ValueError, match=r"pairwise \[.*L, M, kh, kw\] must hold at least one model \(L >= 1\)"):
        handops.tree_marginals(torch.rand(2, 4, 5, 5), torch.rand(pool_shape), TREE, weights=torch.rand(2, 0))
