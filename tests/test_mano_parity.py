"""ManoLayer against smplx.MANO on the same MANO file and inputs (vertices and the 16 joints within 1e-5 m)."""

import pytest
import torch

smplx = pytest.importorskip("smplx")

from handops.mano import ManoLayer, save, synthetic_model  # noqa: E402
from mano_helpers import random_mano_model  # noqa: E402


@pytest.mark.parametrize("use_pca, flat_hand_mean", [(True, False), (True, True), (False, False), (False, True)])
@pytest.mark.parametrize("model_name", ["random", "synthetic"])
def test_matches_smplx(tmp_path, use_pca, flat_hand_mean, model_name):
    model = random_mano_model(0) if model_name == "random" else synthetic_model(0)
    save(model, tmp_path)  # a directory: MANO_RIGHT.pkl, as smplx looks for it
    ncomps = 12
    theirs = smplx.MANO(model_path=str(tmp_path), is_rhand=True, use_pca=use_pca, num_pca_comps=ncomps,
                        flat_hand_mean=flat_hand_mean, dtype=torch.float64)
    ours = ManoLayer(model, use_pca=use_pca, num_pca_comps=ncomps, flat_hand_mean=flat_hand_mean)
    gen = torch.Generator().manual_seed(1)
    batch = 5
    betas = torch.randn(batch, 10, generator=gen, dtype=torch.float64)
    orient = torch.randn(batch, 3, generator=gen, dtype=torch.float64)
    pose = torch.randn(batch, ncomps if use_pca else 45, generator=gen, dtype=torch.float64) * 0.5
    transl = torch.randn(batch, 3, generator=gen, dtype=torch.float64)
    pose[0] = 0.0  # the zero rotation, where Rodrigues needs care
    expected = theirs(betas=betas, global_orient=orient, hand_pose=pose, transl=transl)
    got = ours(betas, orient, pose, transl)
    torch.testing.assert_close(got.vertices, expected.vertices, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.mano_joints, expected.joints, rtol=0, atol=1e-5)
