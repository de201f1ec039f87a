"""Metrics against hand-computed values on small cases."""

import math

import pytest
import torch

import handops
from handops.mano.synthetic import hand_length_width
from handops_models import metrics as M


def three_points():
    """gt at 0; predictions 1, 2 and 3 px away in different directions; one image, s = 100."""
    gt = torch.zeros(1, 3, 2)
    pred = torch.tensor([[[1.0, 0.0], [0.0, -2.0], [-3.0, 0.0]]])
    return pred, gt


def test_pck_three_points_known_distances():
    pred, gt = three_points()
    got = M.pck(pred, gt, torch.tensor([100.0]), [0.005, 0.01, 0.02, 0.03, 0.04])
    # distance <= delta * s counts: 1 <= 1, 2 <= 2, 3 <= 3 are correct at their thresholds
    assert torch.allclose(got, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0, 1.0], dtype=torch.float64))
    assert M.mpck(pred, gt, [100.0], [0.01, 0.02, 0.03]) == pytest.approx((1 / 3 + 2 / 3 + 1) / 3)


def test_pck_per_image_box_size_and_visibility():
    pred, gt = three_points()
    pred, gt = pred.repeat(2, 1, 1), gt.repeat(2, 1, 1)
    # image 2 has a box twice as large: its errors count as half as large
    got = M.pck(pred, gt, torch.tensor([100.0, 200.0]), [0.01, 0.0151])
    assert torch.allclose(got, torch.tensor([(1 + 2) / 6, (1 + 3) / 6], dtype=torch.float64))
    vis = torch.tensor([[True, False, False], [True, True, False]])
    got = M.pck(pred, gt, torch.tensor([100.0, 100.0]), [0.01, 0.02], visible=vis)
    assert torch.allclose(got, torch.tensor([2 / 3, 1.0], dtype=torch.float64))


def test_pck_thesis_thresholds_default_and_errors():
    pred, gt = three_points()
    assert M.pck(pred, gt, [100.0]).shape == (6,)
    with pytest.raises(ValueError, match="bbox_size"):
        M.pck(pred, gt, [100.0, 50.0])
    with pytest.raises(ValueError, match="positive"):
        M.pck(pred, gt, [0.0])
    with pytest.raises(ValueError, match="shape"):
        M.pck(pred, gt[:, :2], [100.0])
    with pytest.raises(ValueError, match=r"\[N, J, 2\]"):
        M.pck(pred[0], gt[0], [100.0])
    with pytest.raises(TypeError, match="bool"):
        M.pck(pred, gt, [100.0], visible=torch.ones(1, 3))
    with pytest.raises(ValueError, match="no keypoint"):
        M.pck(pred, gt, [100.0], visible=torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="floating"):
        M.pck(pred.long(), gt, [100.0])


def test_auc_of_known_curves():
    t = torch.linspace(0, 1, 11)
    assert M.auc(t, t) == pytest.approx(0.5)
    assert M.auc(t, torch.ones(11)) == pytest.approx(1.0)
    assert M.auc([0.0, 1.0, 2.0], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="increasing"):
        M.auc([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="two thresholds"):
        M.auc([0.1], [1.0])


def test_pck_auc_step_curve():
    # every error is 4.99 px with s = 100: PCK jumps from 0 to 1 at delta = 0.05 (index 50 of 101)
    gt = torch.zeros(4, 21, 2)
    pred = gt + torch.tensor([4.99, 0.0])
    got = M.pck_auc(pred, gt, torch.full((4,), 100.0), 0.0, 0.1, 101)
    assert got == pytest.approx((0.5 * 0.001 + 50 * 0.001) / 0.1)
    assert M.pck_auc(gt, gt, torch.full((4,), 100.0)) == pytest.approx(1.0)


def test_epe():
    pred, gt = three_points()
    assert M.epe(pred, gt) == pytest.approx(2.0)
    assert M.epe(pred, gt, visible=torch.tensor([[False, False, True]])) == pytest.approx(3.0)


def random_joints(n=3, j=21, seed=0):
    return torch.randn(n, j, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.05


def test_mpjpe_root_relative_millimetres():
    gt = random_joints()
    assert M.mpjpe(gt + torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), gt) == pytest.approx(0.0, abs=1e-9)
    moved = gt.clone()
    moved[:, 7, 0] += 0.003  # one joint 3 mm off
    assert M.mpjpe(moved, gt) == pytest.approx(3 / 21)
    root = gt.clone()
    root[:, 0, 1] += 0.003  # the root 3 mm off moves all 20 other joints 3 mm, relative to it
    assert M.mpjpe(root, gt) == pytest.approx(20 * 3 / 21)


def test_mpvpe_uses_the_roots():
    gt = random_joints(2, 50, seed=1)
    shift = torch.tensor([0.02, 0.0, 0.0], dtype=torch.float64)
    roots = torch.zeros(2, 3, dtype=torch.float64)
    assert M.mpvpe(gt + shift, gt, roots + shift, roots) == pytest.approx(0.0, abs=1e-9)
    assert M.mpvpe(gt + shift, gt, roots, roots) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="pred_root"):
        M.mpvpe(gt, gt, torch.zeros(3), roots)


def test_pa_mpjpe_zero_for_similar_copy_and_positive_for_mirror():
    gt = random_joints(4, seed=2)
    rot = torch.linalg.qr(torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)).Q
    rot = rot * torch.linalg.det(rot)[:, None, None]  # proper rotations
    scale = torch.tensor([0.5, 1.0, 2.0, 3.3], dtype=torch.float64)[:, None, None]
    pred = scale * gt @ rot.transpose(1, 2) + torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)
    assert M.mpjpe(pred, gt) > 1.0
    assert M.pa_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)
    assert torch.allclose(M.procrustes_align(pred, gt), gt, atol=1e-12)
    mirror = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert M.pa_mpjpe(mirror, gt) > 1.0  # a reflection is not a rotation
    # noise only: the alignment can only reduce the error of an already aligned prediction
    noisy = gt + 0.001 * random_joints(4, seed=5)
    assert M.pa_mpjpe(noisy, gt) <= M.mpjpe(noisy, gt) + 1e-9


def test_pa_mpjpe_hand_computed_scale():
    # pred = 2 gt for points on a line through the centroid: aligned exactly by s = 1/2
    gt = torch.tensor([[[1.0, 0, 0], [-1.0, 0, 0], [0, 2.0, 0], [0, -2.0, 0]]], dtype=torch.float64)
    assert M.pa_mpjpe(2 * gt, gt) == pytest.approx(0.0, abs=1e-9)
    # gt = the corners of a 4 x 2 rectangle, pred = those of a 2 x 2 square (both centred):
    sq = torch.tensor([[[1.0, 1, 0], [-1.0, 1, 0], [-1.0, -1, 0], [1.0, -1, 0]]], dtype=torch.float64)
    rect = sq * torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
    # Sigma = diag(8, 4, 0), var(pred) = 8: s = 12 / 8 = 1.5, R = I; residual per corner |(2, 1) - 1.5 (1, 1)|
    assert M.pa_mpjpe(sq, rect) == pytest.approx(1000 * math.hypot(0.5, 0.5), rel=1e-9)


def test_betas_mse():
    assert M.betas_mse(torch.zeros(2, 10), torch.ones(2, 10)) == pytest.approx(1.0)
    assert M.betas_mse(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="betas"):
        M.betas_mse(torch.zeros(10), torch.zeros(10))


def test_shape_errors_against_an_independent_mano_forward():
    model = handops.mano.synthetic_model(0)
    layer = handops.ManoLayer(model)  # flat_hand_mean=False: the flat pose must still be used
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    b = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    width, length = M.hand_width_length(layer, a)
    for k in range(3):
        ref_len, ref_width = hand_length_width(model, a[k].numpy())
        assert float(width[k]) == pytest.approx(ref_width, abs=1e-9)
        assert float(length[k]) == pytest.approx(ref_len, abs=1e-9)
    wa, la = width, length
    wb, lb = M.hand_width_length(layer, b)
    err = M.shape_errors(layer, a, b)
    assert err["w_error_mm"] == pytest.approx(float((wa - wb).abs().mean()) * 1000)
    assert err["l_error_mm"] == pytest.approx(float((la - lb).abs().mean()) * 1000)
    assert err["mse_betas"] == pytest.approx(float(((a - b) ** 2).mean()))
    assert err["w_error_mm"] > 0 and err["l_error_mm"] > 0
    same = M.shape_errors(layer, a, a)
    assert same == {"mse_betas": 0.0, "w_error_mm": 0.0, "l_error_mm": 0.0}
    # the canonical hand: 39 mm wide, 187.4 mm long
    w0, l0 = M.hand_width_length(layer, torch.zeros(1, 10, dtype=torch.float64))
    assert float(w0) * 1000 == pytest.approx(39.0, abs=0.05) and float(l0) * 1000 == pytest.approx(187.4, abs=0.05)


THESIS_CPM = [0.2260, 0.5569, 0.7006, 0.7701, 0.8130, 0.8436]
THESIS_OURS = [0.2367, 0.6012, 0.7628, 0.8314, 0.8691, 0.8947]


def test_results_table_reproduces_thesis_table(capsys):
    text = M.results_table({"CPM Baseline (%)": THESIS_CPM, "Ours": THESIS_OURS},
                           improvement=("Ours", "CPM Baseline (%)"), title="CMU Panoptic Hand Dataset")
    assert text == capsys.readouterr().out.rstrip("\n")
    lines = text.splitlines()
    assert lines[0] == "CMU Panoptic Hand Dataset"
    assert lines[1].split()[-7:] == ["0.01", "0.02", "0.03", "0.04", "0.05", "0.06", "mPCK"]
    rows = {line.split("  ")[0].strip(): line.split()[-7:] for line in lines[3:]}
    # the thesis' own mPCK column (Table 3.1) and improvement row come out
    assert rows["CPM Baseline (%)"] == ["22.60", "55.69", "70.06", "77.01", "81.30", "84.36", "65.17"]
    assert rows["Ours"] == ["23.67", "60.12", "76.28", "83.14", "86.91", "89.47", "69.93"]
    assert rows["Improvement"] == ["1.07", "4.43", "6.22", "6.13", "5.61", "5.11", "4.76"]


def test_results_table_sections_and_errors():
    text = M.results_table({"Panoptic": {"A": [0.5, 1.0]}, "MHP": {"A": [0.25, 0.75]}}, thresholds=[0.01, 0.1],
                           print_table=False)
    assert "Panoptic" in text and "MHP" in text and "75.00" in text and "50.00" in text
    with pytest.raises(ValueError, match="thresholds"):
        M.results_table({"A": [0.5]}, thresholds=[0.01, 0.02], print_table=False)
    with pytest.raises(ValueError, match="fractions"):
        M.results_table({"A": [50.0, 60.0]}, thresholds=[0.01, 0.02], print_table=False)
    with pytest.raises(ValueError, match="improvement"):
        M.results_table({"A": [0.5, 0.6]}, thresholds=[0.01, 0.02], improvement=("A", "B"), print_table=False)


def test_plot_pck_curves_writes_png(tmp_path):
    t = torch.linspace(0, 0.1, 11)
    path = M.plot_pck_curves({"CPM": t * 8, "AGMN": (t.tolist(), (t * 9).tolist())}, tmp_path / "sub" / "pck.png",
                             thresholds=t)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    with pytest.raises(ValueError, match="thresholds"):
        M.plot_pck_curves({"CPM": [0.1, 0.2]}, tmp_path / "x.png")


def test_pck_without_any_visible_keypoint_is_an_error():
    pred = torch.zeros(2, 21, 2)
    with pytest.raises(ValueError, match="no keypoint"):
        M.pck(pred, pred, torch.ones(2), visible=torch.zeros(2, 21, dtype=torch.bool))


@pytest.mark.parametrize("metric", [
    lambda p: M.pck(p, p, torch.ones(p.shape[0])), lambda p: M.pck_auc(p, p, torch.ones(p.shape[0])),
    lambda p: M.epe(p, p), lambda p: M.mpjpe(torch.cat([p, p[..., :1]], -1), torch.cat([p, p[..., :1]], -1)),
    lambda p: M.pa_mpjpe(torch.cat([p, p[..., :1]], -1), torch.cat([p, p[..., :1]], -1)),
], ids=["pck", "pck_auc", "epe", "mpjpe", "pa_mpjpe"])
@pytest.mark.parametrize("shape", [(0, 21, 2), (2, 0, 2)], ids=["no_images", "no_keypoints"])
def test_metrics_over_no_points_are_errors_not_nan(metric, shape):
    # Like "no visible keypoint": a mean over nothing is undefined, never NaN.
    with pytest.raises(ValueError, match=r"pred must hold at least one point"):
        metric(torch.zeros(shape))


def test_betas_mse_over_no_hands_is_an_error():
    with pytest.raises(ValueError, match=r"N, S >= 1"):
        M.betas_mse(torch.zeros(0, 10), torch.zeros(0, 10))


@pytest.mark.parametrize("values", [[0.0, 0.5, 1.5], [0.0, float("nan"), 1.0], [-0.1, 0.5, 1.0]])
def test_auc_values_must_be_fractions(values):
    with pytest.raises(ValueError, match=r"values must be fractions in \[0, 1\]"):
        M.auc([0.0, 0.5, 1.0], values)


def test_pck_per_image_is_eq_5_5_per_image_and_averages_to_pck():
    """Hand-made: image 0 has 1 of 2 keypoints within 0.1 of its side 10 (distances 0.5 and 3), image 1 both
    (side 100). Rules out pooling over images before thresholding and normalising by one shared side."""
    pred = torch.tensor([[[0.5, 0.0], [3.0, 0.0]], [[0.0, 5.0], [8.0, 0.0]]])
    gt = torch.zeros(2, 2, 2)
    values = M.pck_per_image(pred, gt, torch.tensor([10.0, 100.0]), (0.1, 0.3))
    assert values.tolist() == [[0.5, 1.0], [1.0, 1.0]]
    g = torch.Generator().manual_seed(0)
    pred, gt, size = torch.rand(30, 21, 2, generator=g) * 50, torch.rand(30, 21, 2, generator=g) * 50, torch.rand(30) * 90 + 10
    assert torch.allclose(M.pck_per_image(pred, gt, size).mean(0), M.pck(pred, gt, size))


def test_bootstrap_interval_paired_and_coverage():
    """A constant score has a zero-width interval at its value; a paired difference cancels what the images
    share (two models that differ by exactly +0.01 on every image give exactly 0.01, where an unpaired
    interval of such noisy scores would straddle 0); over 200 simulated test sets the 95% interval of a mean
    covers the true mean about 95% of the time (rules out quantiles taken at 0.05 / 0.95, or a standard error
    without the square root)."""
    assert M.bootstrap_interval(torch.full((10,), 0.3)) == pytest.approx((0.3, 0.3, 0.3))
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(300, generator=g)
    est, low, high = M.bootstrap_interval(noise + 0.01, noise)
    assert (est, low, high) == pytest.approx((0.01, 0.01, 0.01))
    covered = 0
    for trial in range(200):
        sample = torch.rand(100, generator=g)  # true mean 0.5
        _, low, high = M.bootstrap_interval(sample, samples=400, seed=trial)
        covered += low <= 0.5 <= high
    assert 0.88 <= covered / 200 <= 0.99
    with pytest.raises(ValueError, match="one baseline score per image"):
        M.bootstrap_interval(torch.rand(5), torch.rand(4))
    with pytest.raises(ValueError, match="finite"):
        M.bootstrap_interval(torch.tensor([0.1, float("nan")]))


def test_cluster_bootstrap_resamples_groups():
    """Two subjects of 50 images each, every image of subject 0 scoring 0 and of subject 1 scoring 1: resampling
    images gives a narrow interval around 0.5 (as if 100 independent draws), resampling the 2 subjects gives
    0 to 1 (the truth: 2 independent draws). Rules out a ``groups`` argument that is ignored."""
    scores = torch.cat([torch.zeros(50), torch.ones(50)])
    groups = torch.cat([torch.zeros(50), torch.ones(50)]).long()
    _, low, high = M.bootstrap_interval(scores)
    assert high - low < 0.25
    est, low, high = M.bootstrap_interval(scores, groups=groups)
    assert est == 0.5 and (low, high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="label every score"):
        M.bootstrap_interval(scores, groups=groups[:10])


def test_scale_direction_of_the_synthetic_hand_is_its_first_beta_and_scales_about_the_wrist():
    from handops_models.nets.mesh import make_mano_layer

    layer = make_mano_layer("synthetic:0")
    u, residual = M.scale_direction(layer)
    assert residual < 1e-9  # the procedural hand's first shape component is an exact scaling
    assert abs(float(u[0])) == pytest.approx(1.0) and float(u[1:].abs().max()) < 1e-9
    # moving along u scales every root-relative joint by one factor (a wrong centring, about the origin
    # instead of the wrist, would not: the wrist itself moves with the shape)
    eye = torch.eye(3, dtype=torch.float64)
    joints = lambda b: layer(b, eye.expand(len(b), 3, 3), eye.expand(len(b), 15, 3, 3), with_vertices=False).joints
    rest = joints(torch.zeros(1, 10, dtype=torch.float64))
    moved = joints(0.5 * u[None])
    rel_rest, rel_moved = rest - rest[:, :1], moved - moved[:, :1]
    factor = rel_moved.norm() / rel_rest.norm()
    assert float(factor) != pytest.approx(1.0, abs=1e-3)
    torch.testing.assert_close(rel_moved, factor * rel_rest, atol=1e-9, rtol=0)
    # widths and lengths scale by that factor too
    w0, l0 = M.hand_width_length(layer, torch.zeros(1, 10, dtype=torch.float64))
    w1, l1 = M.hand_width_length(layer, 0.5 * u[None])
    assert float(l1 / l0) == pytest.approx(float(factor)) and float(w1 / w0) == pytest.approx(float(factor))


def test_without_scale_projects_out_the_direction_only():
    u = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)
    b = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    out = M.without_scale(b, u)
    torch.testing.assert_close(out, torch.tensor([[1 - 0.6 * 2.2, 2 - 0.8 * 2.2, 3.0], [0.0, 0.0, -1.0]], dtype=torch.float64))
    assert float((out @ u).abs().max()) < 1e-12
    with pytest.raises(ValueError, match=r"\[N, S\]"):
        M.without_scale(b, u[:2])


def test_scale_helpers_explain_wrong_arguments():
    from handops_models.nets.mesh import make_mano_layer

    with pytest.raises(ValueError, match="handops.ManoLayer"):
        M.scale_direction("synthetic:0")
    with pytest.raises(ValueError, match=r"pass its \[0\]"):
        M.without_scale(torch.zeros(2, 10), M.scale_direction(make_mano_layer("synthetic:0")))
