"""Stacked Hourglass (handops_models.nets.hourglass): shapes, stride, loss, training, decoding, errors, size.

Each test names the wrong implementation it rules out. CPU cost: the tiny config (128 input, 2 stacks of
64 channels, depth 3) everywhere; the paper config is built once and run at batch 1 (~1 s).
"""

from __future__ import annotations

import pytest
import torch

from handops_models.data.targets import heatmap_to_image, image_to_heatmap, keypoint_heatmaps
from handops_models.nets.base import argmax_2d
from handops_models.nets.configs import HourglassConfig, preset
from handops_models.nets.hourglass import Hourglass, StackedHourglass


def _tiny(**overrides) -> StackedHourglass:
    torch.manual_seed(0)
    return StackedHourglass(preset("hourglass", "tiny", **overrides))


def _keypoints(batch: int, size: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 8 + (size - 16) * torch.rand(batch, 21, 2, generator=g)  # inside the image, away from the border


# ------------------------------------------------------------------------------------- parameter count
def _conv(cin: int, cout: int, k: int = 1) -> int:
    return cin * cout * k * k + cout  # every convolution has a bias (Newell's Torch code, princeton-vl)


def _bn(c: int) -> int:
    return 2 * c


def _residual(cin: int, cout: int) -> int:
    mid = cout // 2
    skip = 0 if cin == cout else _conv(cin, cout)
    return _bn(cin) + _conv(cin, mid) + _bn(mid) + _conv(mid, mid, 3) + _bn(mid) + _conv(mid, cout) + skip


def expected_parameters(stacks: int, channels: int, depth: int, keypoints: int) -> int:
    """Hand count of Newell's SHG: 3 residuals per level plus one at the bottom in each hourglass."""
    stem = _conv(3, 64, 7) + _bn(64) + _residual(64, 128) + _residual(128, 128) + _residual(128, channels)
    hourglass = (3 * depth + 1) * _residual(channels, channels)
    head = _residual(channels, channels) + _conv(channels, channels) + _bn(channels)
    predictor = _conv(channels, keypoints)
    merges = _conv(channels, channels) + _conv(keypoints, channels)
    return stem + stacks * (hourglass + head + predictor) + (stacks - 1) * merges


def test_parameter_count_hand_formula():
    """Rules out: two residuals per hourglass position, a missing bottom residual, merges after the last
    stack, biases dropped or a non-bottleneck residual (each changes the count)."""
    assert expected_parameters(8, 256, 4, 16) == 25_434_112  # Newell's 16 MPII joints: the "about 25.6M" model
    for name in ("tiny", "paper"):
        config = preset("hourglass", name)
        model = StackedHourglass(config)
        count = sum(p.numel() for p in model.parameters())
        print(f"{name} Stacked Hourglass: {count:,} parameters")
        assert count == expected_parameters(config.num_stacks, config.channels, config.depth, config.num_keypoints)
    assert count == 25_453_352  # paper, 21 keypoints
    # the 16-keypoint variant agrees with the hand count too
    model16 = StackedHourglass(HourglassConfig(num_keypoints=16))
    assert sum(p.numel() for p in model16.parameters()) == 25_434_112


# ------------------------------------------------------------------------------------- shapes and stride
def test_tiny_output_shapes_and_stride():
    """Rules out: a stride-8 stem (16x16 maps), only the last stack returned, heatmaps != last stack."""
    model = _tiny()
    assert (model.input_size, model.map_size, model.stride) == (128, 32, 4)
    out = model(torch.rand(2, 3, 128, 128))
    assert out["stages"].shape == (2, 2, 21, 32, 32)
    assert out["heatmaps"].shape == (2, 21, 32, 32)
    assert torch.equal(out["heatmaps"], out["stages"][:, -1])
    assert model.name == "Stacked Hourglass"


def test_paper_output_shapes():
    """Rules out: a paper config that is not 8 stacks at 256 -> 64x64 maps."""
    torch.manual_seed(0)
    model = StackedHourglass()  # the default is the paper config
    assert (model.input_size, model.map_size, model.stride) == (256, 64, 4)
    assert len(model.hourglasses) == 8 and len(model.merge_features) == len(model.merge_preds) == 7
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 256, 256))
    assert out["stages"].shape == (1, 8, 21, 64, 64)
    assert out["heatmaps"].shape == (1, 21, 64, 64)


def test_hourglass_keeps_size_and_recurses_depth_levels():
    """Rules out: an hourglass that does not return to its input size, or one with depth - 1 or depth + 1
    pooling levels (it would need a different divisibility and produce a different receptive field)."""
    hg = Hourglass(3, 8)
    levels, node = 0, hg
    while isinstance(node, Hourglass):
        levels, node = levels + 1, node.inner
    assert levels == 3
    assert hg(torch.rand(1, 8, 16, 16)).shape == (1, 8, 16, 16)


def test_later_stacks_see_earlier_predictions():
    """Rules out: independent stacks (no merges) or merges of the features only (no merge_preds)."""
    model = _tiny()
    out = model(torch.rand(2, 3, 128, 128))
    out["stages"][:, 1].sum().backward()
    assert model.predictors[0].weight.grad is not None and model.predictors[0].weight.grad.abs().sum() > 0
    assert model.merge_preds[0].weight.grad.abs().sum() > 0
    assert model.merge_features[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------- loss
def test_loss_is_sum_over_stacks_of_squared_frobenius_norms():
    """Rules out: a mean squared error, supervising only the last stack, targets at stride 8 or uncentred,
    a different term name than CPM's "unary"."""
    model = _tiny()
    keypoints = _keypoints(2, 128)
    stages = torch.randn(2, 2, 21, 32, 32)
    outputs = {"stages": stages, "heatmaps": stages[:, -1]}
    total, terms = model.loss(outputs, {"keypoints2d": keypoints})
    assert set(terms) == {"unary"}
    target = keypoint_heatmaps(keypoints, size=32, stride=4, sigma=model.sigma)
    expected = sum(((stages[:, t] - target) ** 2).sum() for t in range(2)) / 2
    torch.testing.assert_close(terms["unary"], expected)
    torch.testing.assert_close(total, expected)
    half, _ = model.loss(outputs, {"keypoints2d": keypoints}, weights={"unary": 0.5})
    torch.testing.assert_close(half, expected / 2)
    with pytest.raises(ValueError, match="outputs are for 2 images but targets hold 3"):
        model.loss(outputs, {"keypoints2d": _keypoints(3, 128)})


def test_detector_loss_is_bce_on_logits_and_its_confidence_a_probability():
    """Chapter 6's detector (``heatmap_loss="bce"``): the term is the mean binary cross-entropy of every stage's
    logits against the Gaussian targets, computed here by hand from its definition (rules out MSE, or BCE on
    the last stage only); predict's confidence is the sigmoid of the peak logit, in (0, 1)."""
    import dataclasses

    model = StackedHourglass(dataclasses.replace(_tiny().config, heatmap_loss="bce"))
    keypoints = _keypoints(2, 128)
    stages = torch.randn(2, 2, 21, 32, 32, dtype=torch.float64)
    model = model.double()
    _, terms = model.loss({"stages": stages, "heatmaps": stages[:, -1]}, {"keypoints2d": keypoints})
    y = keypoint_heatmaps(keypoints, size=32, stride=4, sigma=model.sigma).double()[:, None]
    p = torch.sigmoid(stages)
    expected = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    torch.testing.assert_close(terms["unary"], expected)
    confidence = model.predict(torch.rand(2, 3, 128, 128, dtype=torch.float64))["confidence"]
    assert bool(((confidence > 0) & (confidence < 1)).all())


def test_loss_decreases_on_a_fixed_batch():
    """Rules out: a graph where the loss does not reach the parameters (detached stages, a wrong sign, an
    optimiser step that cannot lower it). Limit: from the random initialisation (loss ~8500 here; all-zero
    maps would score ~132) twenty steps mostly shrink the output scale; fitting the peaks themselves takes
    ~60 steps at lr 2e-3, too slow for the CPU suite."""
    model = _tiny()
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 128, 128, generator=g)
    keypoints = _keypoints(2, 128, seed=3)
    targets = {"keypoints2d": keypoints}
    # the targets are sensible: each map peaks at 1 on the keypoint's cell (stride 4, centred convention)
    maps = model.heatmap_targets(targets)
    cells, peaks = argmax_2d(maps)
    assert torch.equal(cells, image_to_heatmap(keypoints, stride=4).round())
    assert bool((peaks > 0.6).all())
    optimiser = torch.optim.Adam(model.parameters(), lr=7.5e-4)  # the thesis' SHG learning rate
    losses = []
    for _ in range(20):
        loss, _ = model.loss(model(images), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    print(f"tiny SHG loss: {losses[0]:.1f} -> {losses[-1]:.1f} in 20 Adam steps")
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------------------- prediction
def test_predict_shapes_and_range():
    """Rules out: keypoints in map cells (would all be < 32) or a model left in eval mode by predict."""
    model = _tiny()
    model.train()
    result = model.predict(torch.rand(3, 3, 128, 128))
    assert result["keypoints2d"].shape == (3, 21, 2) and result["confidence"].shape == (3, 21)
    assert model.training
    kp = result["keypoints2d"]
    assert bool((kp >= 1.5).all()) and bool((kp <= 125.5).all())  # cell centres 4 c + 1.5, c = 0..31


def test_predict_maps_the_peak_cell_to_input_pixels_with_stride_4(monkeypatch):
    """Rules out: decoding with stride 8 (col 5 -> 43.5), the uncentred mapping (col 5 -> 20) and swapped
    (x, y)."""
    model = _tiny()
    maps = torch.zeros(1, 21, 32, 32)
    col, row = 5, 3
    maps[0, :, row, col] = 2.0
    maps[0, 7, 20, 30] = 3.0  # keypoint 7 elsewhere

    def forced(images):
        stages = maps[:, None].expand(-1, 2, -1, -1, -1)
        return {"stages": stages, "heatmaps": maps}

    monkeypatch.setattr(model, "forward", forced)
    result = model.predict(torch.rand(1, 3, 128, 128))
    expected = torch.tensor([col * 4 + 1.5, row * 4 + 1.5])
    assert torch.equal(expected, heatmap_to_image(torch.tensor([float(col), float(row)]), stride=4))
    torch.testing.assert_close(result["keypoints2d"][0, 0], expected)
    torch.testing.assert_close(result["keypoints2d"][0, 7], torch.tensor([30 * 4 + 1.5, 20 * 4 + 1.5]))
    torch.testing.assert_close(result["confidence"][0, 0], torch.tensor(2.0))
    torch.testing.assert_close(result["confidence"][0, 7], torch.tensor(3.0))


# ------------------------------------------------------------------------------------- errors
def test_input_errors():
    """Rules out: silently accepting wrong sizes (the merges would fail deep inside), grayscale input,
    uint8 images in [0, 255], or an input size the hourglass cannot halve depth times."""
    model = _tiny()
    with pytest.raises(ValueError, match="128x128"):
        model(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match="RGB"):
        model(torch.rand(1, 1, 128, 128))
    with pytest.raises(TypeError, match="floating point"):
        model(torch.zeros(1, 3, 128, 128, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"multiple of 4 \* 2\*\*depth = 32"):
        StackedHourglass(HourglassConfig(input_size=112, num_stacks=1, channels=16, depth=3))
    with pytest.raises(ValueError, match=r"multiple of 4 \* 2\*\*depth = 64"):
        StackedHourglass(HourglassConfig(input_size=368))  # the CPM's input size does not fit depth 4
