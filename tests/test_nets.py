"""The thesis' 2-D networks (handops_models.nets): shapes, losses, the structured parts against the
thesis-style reference path, rotation conventions, SIA-GCN initialisation, configs and states, errors.

Each test names the wrong implementation it rules out.
"""

from __future__ import annotations

import io

import pytest
import torch

import handops
from handops_models.data.targets import keypoint_heatmaps, rotate_keypoints, rotation_target
from handops_models.nets import MODELS, build_model, count_parameters, model_from_state, model_state

# the heatmap networks of chapters 3-5 (the mesh networks and chapter 6's detector: tests/test_mesh_nets.py,
# tests/test_nets_hourglass.py)
HEATMAP_MODELS = sorted(set(MODELS) - {"mesh-identity", "mesh-baseline", "detector2d"})
from handops_models.nets import structured
from handops_models.nets.configs import PRESETS, config_from_dict, config_to_dict, preset
from handops_models.nets.rotation import rotate
from handops_models.nets.siapose import SIAGCN

TINY = 128


def batch(size=TINY, n=2, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=gen, dtype=dtype)
    keypoints = torch.rand(n, 21, 2, generator=gen, dtype=dtype) * (0.6 * size) + 0.2 * size
    return images, {"keypoints2d": keypoints}


# ------------------------------------------------------------------------------------------ shapes

EXPECTED_KEYS = {
    "cpm": {"stages", "heatmaps"},
    "hourglass": {"stages", "heatmaps"},
    "agmn": {"unary_stages", "pairwise_stages", "unary", "kernels", "marginals", "heatmaps"},
    "rmgmn": {"angle", "logits", "weights", "unary_stages", "marginals_upright", "marginals", "heatmaps"},
    "siapose": {"stages", "head_maps", "pointer", "heatmaps"},
    "sharedgcn": {"stages", "head_maps", "pointer", "heatmaps"},
    "rsiapose": {"angle", "stages", "head_maps", "pointer", "heatmaps"},
}


def expected_shapes(name: str, config: str, b: int) -> dict:
    """The thesis' sizes written out: 368 -> 46 maps and 45 kernels (CPM family), 256 -> 64 (Hourglass)."""
    paper = config == "paper"
    m = (46 if paper else 16) if name != "hourglass" else (64 if paper else 32)
    k = 45 if paper else 15
    t = {"hourglass": 8 if paper else 2}.get(name, 6 if paper else 3)
    heads = {"siapose": 10, "rsiapose": 10, "sharedgcn": 1}.get(name)
    shapes = {"heatmaps": (b, 21, m, m)}
    if name in ("cpm", "hourglass", "siapose", "sharedgcn", "rsiapose"):
        shapes["stages"] = (b, t, 21, m, m)
    if name == "agmn":
        shapes.update(unary_stages=(b, t, 21, m, m), pairwise_stages=(b, t, 40, k, k), kernels=(b, 40, k, k),
                      unary=(b, 21, m, m), marginals=(b, 21, m, m))
    if name == "rmgmn":
        shapes.update(angle=(b,), logits=(b, 20), weights=(b, 20), unary_stages=(b, t, 21, m, m), marginals=(b, 21, m, m),
                      marginals_upright=(b, 21, m, m))
    if heads:
        shapes.update(head_maps=(b, heads, 21, m, m), pointer=(b, heads))
    if name == "rsiapose":
        shapes["angle"] = (b,)
    return shapes


@pytest.mark.parametrize("name", HEATMAP_MODELS)
def test_tiny_output_shapes_and_prediction(name):
    """Real forward at the tiny size: every output at the size the config implies (rules out a kernel
    branch left at the map size, a stage count ignoring the config, the stride-8 mapping for the
    stride-4 hourglass)."""
    torch.manual_seed(0)
    model = build_model(name, "tiny")
    images, _ = batch(n=2)
    outputs = model(images)
    assert set(outputs) == EXPECTED_KEYS[name]
    shapes = expected_shapes(name, "tiny", 2)
    assert {k: tuple(v.shape) for k, v in outputs.items() if k in shapes} == shapes
    assert all(torch.isfinite(v).all() for v in outputs.values())
    prediction = model.predict(images)
    assert prediction["keypoints2d"].shape == (2, 21, 2) and prediction["confidence"].shape == (2, 21)
    assert model.training  # predict restores the mode


@pytest.mark.parametrize("name", HEATMAP_MODELS)
def test_paper_output_shapes(name):
    """The paper config on the meta device (no memory, no time): shapes of the thesis' networks."""
    with torch.device("meta"):
        model = build_model(name, "paper")
        images = torch.rand(2, 3, model.input_size, model.input_size)
    assert model.input_size == (256 if name == "hourglass" else 368)
    outputs = model(images)
    shapes = expected_shapes(name, "paper", 2)
    assert {k: tuple(v.shape) for k, v in outputs.items() if k in shapes} == shapes


# R-MGMN's default loss is Eq. 3.27 on normalised maps, trained jointly from scratch here (the recipe
# pre-trains every part first): at 1e-3 the rotation net's drift makes it climb; 3e-4 lowers it steadily.
LOSS_STEP = {"rmgmn": (3e-4, 0.95)}


@pytest.mark.parametrize("name", HEATMAP_MODELS)
def test_loss_decreases_on_a_fixed_batch(name):
    """Twelve Adam steps on two images lower each network's default loss (its thesis equation): rules
    out a loss detached from the parameters, or a structured part that blocks the gradient."""
    lr, ratio = LOSS_STEP.get(name, (1e-3, 0.9))
    torch.manual_seed(0)
    model = build_model(name, "tiny")
    images, targets = batch(n=2, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(12):
        total, terms = model.loss(model(images), targets)
        assert all(torch.isfinite(t) for t in terms.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < ratio * losses[0], losses


# ------------------------------------------------------------------------------------------ structured parts

@pytest.mark.parametrize("name", ["agmn", "rmgmn", "siapose", "sharedgcn"])
def test_structured_part_equals_the_thesis_style_reference(name):
    """Same weights, float64: the handops op path and the reference path (one message / one head at a
    time) give the same final maps and the same parameter gradients. Rules out a handops call with
    another kernel convention (flipped or transposed kernels, messages in another order), a mixture
    weighted per message instead of per model, or per-head inputs routed to the wrong head."""
    torch.manual_seed(0)
    model = build_model(name, "tiny").double()
    images, targets = batch(n=1, seed=2, dtype=torch.float64)
    results = {}
    for impl in ("handops", "reference"):
        model.structured_impl = impl
        model.zero_grad()
        outputs = model(images)
        total, _ = model.loss(outputs, targets)
        total.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[impl] = outputs["heatmaps"].detach(), grads
    (maps, grads), (ref_maps, ref_grads) = results["handops"], results["reference"]
    torch.testing.assert_close(maps, ref_maps, rtol=1e-9, atol=1e-12)
    assert grads.keys() == ref_grads.keys()
    for key in grads:
        scale = ref_grads[key].abs().max().item()
        torch.testing.assert_close(grads[key], ref_grads[key], rtol=1e-7, atol=1e-9 * max(scale, 1e-30), msg=key)


def test_rmgmn_mixes_its_pool_in_one_op_call(monkeypatch):
    """The pool of L graphical models is one tree_marginals call with weights [B, L] (not L calls)."""
    calls = []
    original = handops.tree_marginals
    monkeypatch.setattr(handops, "tree_marginals", lambda *a, **k: calls.append((a[1].shape, a[3].shape)) or original(*a, **k))
    model = build_model("rmgmn", "tiny")
    model(batch(n=2)[0])
    assert calls == [((20, 40, 15, 15), (2, 20))]


def test_siapose_runs_each_layer_of_all_heads_as_one_op_call(monkeypatch):
    """Layer 1 takes the estimator's maps [B, K, h, w]; layers 2..5 the per-head form [B, M, K, h, w]."""
    calls = []
    original = handops.edge_conv
    monkeypatch.setattr(handops, "edge_conv", lambda x, w, g, *a: calls.append((x.dim(), tuple(w.shape))) or original(x, w, g, *a))
    model = build_model("siapose", "tiny", heads=5)
    model(batch(n=1)[0])
    assert calls == [(4, (5, 61, 15, 15))] + [(5, (5, 61, 15, 15))] * 4


def test_agmn_pairwise_stage_t_sees_the_unary_stage_t_minus_1():
    """The information flow of Fig. 4.2: changing the unary branch's stage 1 changes the pairwise stage 2
    output but not the pairwise stage 1 output (rules out no flow, or the flow from the wrong stage)."""
    torch.manual_seed(0)
    model = build_model("agmn", "tiny")
    images, _ = batch(n=1)
    with torch.no_grad():
        before = model(images)["pairwise_stages"]
        for p in model.unary_branch.stages.stage1.parameters():
            p.add_(0.5)
        after = model(images)["pairwise_stages"]
    assert torch.equal(before[:, 0], after[:, 0])
    assert not torch.allclose(before[:, 1], after[:, 1])


def test_agmn_potentials_are_floored_and_normalised():
    """phi and theta sum to 1 per map and are >= their floors, even where the branches output negatives."""
    torch.manual_seed(0)
    model = build_model("agmn", "tiny")
    outputs = model(batch(n=2)[0])
    for key in ("unary", "kernels"):
        sums = outputs[key].sum((-2, -1))
        torch.testing.assert_close(sums, torch.ones_like(sums))
        assert (outputs[key] > 0).all()
    assert (outputs["unary_stages"][:, -1] < 0).any()  # the clamp had something to do


# ------------------------------------------------------------------------------------------ rotation

def test_rotate_moves_heatmaps_like_the_keypoint_rotation():
    """rotate(maps of keypoints, a) = maps of the keypoints rotated by a (transforms.Rotate's convention):
    rules out the inverse rotation (theta not transposed) or a rotation about the corner."""
    keypoints = torch.tensor([[[20.0, 14.0], [40.0, 30.0], [16.0, 40.0]]], dtype=torch.float64)  # away from the border
    maps = keypoint_heatmaps(keypoints, size=64, stride=1, sigma=2.0)
    angle = torch.tensor([30.0], dtype=torch.float64)
    rotated = rotate(maps, angle)
    moved = rotate_keypoints(keypoints, angle, centre=torch.tensor([31.5, 31.5], dtype=torch.float64))
    grid = torch.arange(64, dtype=torch.float64)
    mass = rotated.sum((-2, -1))
    centroids = torch.stack([(rotated.sum(-2) * grid).sum(-1), (rotated.sum(-1) * grid).sum(-1)], -1) / mass[..., None]
    torch.testing.assert_close(centroids, moved, rtol=0, atol=0.02)  # bilinear resampling keeps the centroid


def test_rotating_by_the_target_angle_makes_the_hand_upright():
    """rotation_target's alpha, applied by rotate(images, alpha), points wrist -> middle MCP up."""
    keypoints = torch.zeros(1, 21, 2, dtype=torch.float64)
    keypoints[0, 0] = torch.tensor([20.0, 32.0])  # wrist left of the middle MCP: the hand points right
    keypoints[0, 9] = torch.tensor([44.0, 32.0])
    alpha = rotation_target(keypoints)
    assert alpha.item() == pytest.approx(90.0)
    maps = keypoint_heatmaps(keypoints[:, [0, 9]], size=64, stride=1, sigma=2.0)
    upright = rotate(maps, alpha)
    flat = upright.flatten(-2).argmax(-1)
    rows = flat // 64
    assert rows[0, 1] < rows[0, 0]  # the middle MCP is now above the wrist


def test_rotate_gradcheck_in_maps_and_angle():
    """Differentiable in the angle (R-MGMN's joint stage trains the rotation net through it)."""
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 2, 8, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    angle = torch.tensor([13.0, -71.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotate, (maps, angle))


# ------------------------------------------------------------------------------------------ SIA-GCN

def test_untrained_siapose_reproduces_its_estimator():
    """Identity initialisation: with the init noise removed, every head returns relu(its input) (the
    ReLUs between layers drop the estimator's negative values), so SiaPose starts as its estimator's
    non-negative part (rules out a self-loop kernel of 1, which A_hat's 1 / in_degree shrinks by up to
    6x per layer)."""
    torch.manual_seed(0)
    model = build_model("siapose", "tiny", heads=3)
    with torch.no_grad():
        for w in model.gcn.weights:
            c = w.shape[-1] // 2
            centre = w[..., c, c].round()
            w.zero_()
            w[..., c, c] = centre
        outputs = model(batch(n=1)[0])
    estimator = outputs["stages"][:, -1].clamp(min=0)
    for h in range(3):
        torch.testing.assert_close(outputs["head_maps"][:, h], estimator, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["heatmaps"], estimator, rtol=1e-5, atol=1e-5)


def test_shared_weight_gcn_has_one_kernel_per_layer_and_head():
    """SharedWeight GCN: one kernel shared by every edge, gradients summed over edges; the edge-aware
    model has E = 61 kernels per layer and head."""
    shared = SIAGCN(heads=2, layers=3, kernel_size=5, shared_weight=True)
    aware = SIAGCN(heads=2, layers=3, kernel_size=5)
    assert [tuple(w.shape) for w in shared.weights] == [(2, 1, 5, 5)] * 3
    assert [tuple(w.shape) for w in aware.weights] == [(2, 61, 5, 5)] * 3
    x = torch.rand(1, 21, 6, 6)
    shared(x).sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in shared.weights)


def test_one_head_siapose_has_no_pointer_network():
    """Thesis 5.4: "the increment from 1-head to multiple heads is primarily due to the added pointer
    network": one head has none (its weight is 1)."""
    model = build_model("siapose", "tiny", heads=1)
    assert model.pointer is None
    outputs = model(batch(n=2)[0])
    assert torch.equal(outputs["pointer"], torch.ones(2, 1))


# ------------------------------------------------------------------------------------------ configs and states

@pytest.mark.parametrize("config", sorted(PRESETS))
def test_every_preset_round_trips_through_plain_data(config):
    for name, value in PRESETS[config].items():
        data = config_to_dict(value)
        buffer = io.BytesIO()
        torch.save(data, buffer)  # plain data only: weights_only loads it
        buffer.seek(0)
        assert config_from_dict(torch.load(buffer, weights_only=True)) == value, name


def test_model_state_rebuilds_the_same_network():
    """A state saved with torch.save and read with weights_only=True rebuilds the network alone (its
    registry name and config travel with the weights)."""
    torch.manual_seed(0)
    model = build_model("siapose", "tiny", heads=2).eval()
    buffer = io.BytesIO()
    torch.save(model_state(model), buffer)
    buffer.seek(0)
    rebuilt = model_from_state(torch.load(buffer, weights_only=True), expect_model="siapose").eval()
    images, _ = batch(n=1)
    with torch.no_grad():
        assert torch.equal(model(images)["heatmaps"], rebuilt(images)["heatmaps"])
    assert rebuilt.config == model.config


def test_state_of_another_network_or_config_is_refused():
    state = model_state(build_model("cpm", "tiny"))
    with pytest.raises(ValueError, match="holds a 'cpm' network, expected 'agmn'"):
        model_from_state(state, expect_model="agmn")
    with pytest.raises(ValueError, match="input_size: 128 \\(state\\) vs 368 \\(expected\\)"):
        model_from_state(state, expect_config="paper")
    broken = dict(state, state_dict={k: v for k, v in state["state_dict"].items() if "stage1" not in k})
    with pytest.raises(ValueError, match="do not fit a 'cpm' network"):
        model_from_state(broken)
    with pytest.raises(ValueError, match="expected keys model, config, state_dict"):
        model_from_state({"state_dict": {}})
    with pytest.raises(ValueError, match="CPMConfig has no fields \\['depth'\\]"):
        config_from_dict(dict(config_to_dict(preset("cpm")), depth=3))


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize(
    "images, error, match",
    [
        (torch.rand(2, 3, 64, 64), ValueError, "takes 128x128 images"),
        (torch.rand(2, 1, 128, 128), ValueError, "RGB"),
        (torch.rand(3, 128, 128), ValueError, "RGB"),
        ((torch.rand(2, 3, 128, 128) * 255).to(torch.uint8), TypeError, "floating point"),
        (torch.rand(2, 3, 128, 128, device="meta"), ValueError, "images are on meta but the model is on cpu"),
        ([[0.0]], TypeError, "must be a tensor"),
    ],
)
def test_bad_images_name_what_was_expected(images, error, match):
    model = build_model("agmn", "tiny")
    with pytest.raises(error, match=match):
        model(images)


def test_bad_targets_and_names():
    model = build_model("cpm", "tiny")
    outputs = model(batch(n=2)[0])
    with pytest.raises(ValueError, match="'keypoints2d'"):
        model.loss(outputs, {"keypoints": torch.zeros(2, 21, 2)})
    with pytest.raises(ValueError, match="2 images but targets hold 3"):
        model.loss(outputs, {"keypoints2d": torch.zeros(3, 21, 2)})
    with pytest.raises(ValueError, match="terms \\['gm'\\] that this model does not compute"):
        model.loss(outputs, batch(n=2)[1], weights={"gm": 1.0})
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model("resnet")
    with pytest.raises(ValueError, match="unknown config preset 'huge'"):
        build_model("cpm", "huge")
    with pytest.raises(ValueError, match="structured_impl must be one of"):
        structured.edge_conv(torch.rand(1, 21, 4, 4), torch.rand(1, 61, 3, 3), handops.hand_graph(), impl="python")


def test_parameter_table_command(capsys):
    """``python -m handops_models.nets`` prints every network's paper and tiny parameter counts."""
    from handops_models.nets.__main__ import main

    main([])
    out = capsys.readouterr().out
    with torch.device("meta"):
        cpm = count_parameters(build_model("cpm", "paper"))
    assert f"| CPM | {cpm:,} | 368 -> 46 |" in out
    assert out.count("\n") == 2 + 14
    assert "| Mesh estimator, identity-aware (ch. 6) |" in out and "224 -> mesh" in out


# ------------------------------------------------------------------------------------------ found by a new-user probe

def test_half_precision_potentials_stay_finite():
    """float16 cannot hold the floors 1e-32 / 1e-16: normalising in float16 turned all-negative maps into
    0 / 0 = NaN (AMP training on a GPU). The potentials are normalised in float32 instead."""
    torch.manual_seed(0)
    model = build_model("agmn", "tiny").half()
    outputs = model(batch(n=2)[0].half())
    assert (outputs["unary_stages"][:, -1] <= 0).flatten(-2).all(-1).any()  # the case that broke
    assert torch.isfinite(outputs["marginals"]).all()
    assert torch.isfinite(structured.normalised_potentials(-torch.ones(1, 2, 3, 3, dtype=torch.float16), 1e-32)).all()


def test_predict_restores_each_submodules_mode():
    """A frozen BatchNorm (a submodule put in eval while the rest trains) stays in eval after predict."""
    model = build_model("rmgmn", "tiny").train()
    model.rotation_net.eval()
    model.predict(batch(n=1)[0])
    assert model.training and not model.rotation_net.training and model.unary_branch.training


def test_model_state_unwraps_data_parallel_wrappers():
    """model_state of a wrapped model stores the network's own keys (no 'module.' prefix) and reloads."""
    model = build_model("cpm", "tiny")
    state = model_state(torch.nn.DataParallel(model))
    assert not any(k.startswith("module.") for k in state["state_dict"])
    model_from_state(state, expect_model="cpm")


@pytest.mark.parametrize("name", ["rmgmn", "rsiapose", "agmn"])
def test_empty_batch(name):
    """B = 0 gives empty outputs (affine_grid refuses an empty batch: the rotation skips it)."""
    model = build_model(name, "tiny").eval()
    outputs = model(torch.rand(0, 3, TINY, TINY))
    assert outputs["heatmaps"].shape == (0, 21, 16, 16)
    assert model.predict(torch.rand(0, 3, TINY, TINY))["keypoints2d"].shape == (0, 21, 2)


def test_rotation_loss_wraps_at_180_degrees():
    """Eq. 3.24 on the circle: 179 against -179 is 2 degrees off (the plain difference says 358)."""
    from handops_models.nets.rotation import rotation_loss

    keypoints = torch.zeros(1, 21, 2, dtype=torch.float64)
    keypoints[0, 9] = torch.tensor([-1e-9, 10.0])  # middle MCP below the wrist: alpha^* = -180 + tiny
    target = rotation_target(keypoints)
    loss = rotation_loss(target + 358.0, keypoints)
    assert loss.item() == pytest.approx(4.0, abs=1e-6)


def test_configs_validate_their_fields():
    """Bad values fail when the config is made, naming the field; stored configs must be complete."""
    with pytest.raises(ValueError, match="SiaPoseConfig.heads must be an int >= 1, got '5'"):
        preset("siapose", "tiny", heads="5")
    with pytest.raises(ValueError, match="AGMNConfig.alphas must be three"):
        preset("agmn", "tiny", alphas=(1.0, 0.1))
    with pytest.raises(ValueError, match="kernel_size must be an odd int"):
        preset("rmgmn", "tiny", kernel_size=16)
    assert preset("rmgmn", "tiny", loss_weights={"gm": 1, "unary": 0.5}).loss_weights == (("gm", 1.0), ("unary", 0.5))
    data = config_to_dict(preset("cpm", "tiny"))
    del data["input_size"]
    with pytest.raises(ValueError, match="missing fields \\['input_size'\\]"):
        config_from_dict(data)


def test_loss_weights_and_targets_errors():
    model = build_model("agmn", "tiny")
    images, targets = batch(n=1)
    outputs = model(images)
    with pytest.raises(ValueError, match="loss weights are empty"):
        model.loss(outputs, targets, weights={})
    with pytest.raises(ValueError, match="add the batch dimension"):
        model.loss(outputs, {"keypoints2d": targets["keypoints2d"][0]})
