"""ManoLayer (smplx parity lives in test_mano_parity.py, the rotation helpers in test_geometry.py)."""

import pytest
import torch
from scipy.spatial.transform import Rotation


@pytest.mark.parametrize("with_vertices", [True, False])
def test_layer_compiles_with_fullgraph(with_vertices):
    # float32 inputs on the float64 model: the cast happens inside the compiled graph.
    import handops
    from handops.mano import synthetic_model

    layer = handops.ManoLayer(synthetic_model(0), use_pca=True, num_pca_comps=6)
    gen = torch.Generator().manual_seed(3)
    betas, orient, pca, transl = (torch.randn(3, n, generator=gen) for n in (10, 3, 6, 3))

    def loss(o, h):
        out = layer(betas, o, h, transl, with_vertices=with_vertices)
        return out.joints.square().sum() + (out.vertices.sum() if with_vertices else 0)

    compiled = torch.compile(loss, fullgraph=True)
    leaves = [orient.clone().requires_grad_(), pca.clone().requires_grad_()]
    got = compiled(*leaves)
    got_grads = torch.autograd.grad(got, leaves)
    eager = [orient.clone().requires_grad_(), pca.clone().requires_grad_()]
    want = loss(*eager)
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, torch.autograd.grad(want, eager)):
        torch.testing.assert_close(g, w)


def test_6d_pose_convention_is_public_and_holds():
    # The 6-D pose is two columns of R; pytorch3d's rows are another rotation, so the public docstring says which.
    import handops
    from handops.mano import synthetic_model

    doc = handops.ManoLayer.__doc__
    assert "torch.cat([R[..., :, 0], R[..., :, 1]], -1)" in doc and "pytorch3d" in doc and "rows" in doc
    layer = handops.ManoLayer(synthetic_model(0), use_pca=False, flat_hand_mean=True)
    rotations = torch.from_numpy(Rotation.random(2 * 16, random_state=1).as_matrix()).view(2, 16, 3, 3)
    columns = torch.cat([rotations[..., :, 0], rotations[..., :, 1]], -1)
    rows = rotations[..., :2, :].flatten(-2)
    betas = torch.zeros(2, 10, dtype=torch.float64)
    want = layer(betas, rotations[:, 0], rotations[:, 1:]).vertices
    # Observed 7e-17 m: the 6-D path rebuilds the same rotations to rounding.
    torch.testing.assert_close(layer(betas, columns[:, 0], columns[:, 1:]).vertices, want, rtol=0, atol=1e-14)
    assert (layer(betas, rows[:, 0], rows[:, 1:]).vertices - want).norm(dim=-1).max() > 0.01
