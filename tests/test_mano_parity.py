"""ManoLayer against smplx.MANO on the same MANO file and inputs: vertices, the 16 MANO joints and the
21 OpenPose keypoints (smplx's joints plus its fingertip vertices) within 5e-8 m.

The two differ by ~1e-8 m (observed at most 1.3e-8 over these cases), which is smplx's own precision
even with dtype=float64: it converts model arrays through float32 (rounding our model's arrays to
float32 first brings the difference down to 1e-9 m; smplx's Rodrigues also adds 1e-8 to the axis-angle
vector). ManoLayer computing in float32 is ~1e-7 m off and fails here.
"""

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
    tol = dict(rtol=0, atol=5e-8)
    torch.testing.assert_close(got.vertices, expected.vertices, **tol)
    torch.testing.assert_close(got.mano_joints, expected.joints, **tol)
    # OpenPose order, written out here rather than taken from handops: the wrist, then thumb, index,
    # middle, ring and little finger from the palm out; MANO numbers its joints wrist, index, middle,
    # little, ring, thumb, and the tips are the model's fingertip vertices (thumb to little).
    mano_and_tips = torch.cat([expected.joints, expected.vertices[:, model.fingertip_ids]], 1)
    openpose = mano_and_tips[:, [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]]
    torch.testing.assert_close(got.joints, openpose, **tol)
    # Without the vertex sweep the joints still come from the full model (only the tips are skinned).
    torch.testing.assert_close(ours(betas, orient, pose, transl, with_vertices=False).joints, openpose, **tol)
