"""Chapter 6's mesh estimators: the 6-D convention and composition, the iterative regressor, the losses on a
hand-made mesh, the ranking loss on hand-made pairs, and the networks' contracts."""

from __future__ import annotations

import math

import pytest
import torch

from handops.geometry import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rotation_6d, rotation_6d_to_matrix
from handops_models.nets import build_model, model_from_state, model_state
from handops_models.nets.configs import MeshConfig, ResNetConfig, config_from_dict, config_to_dict
from handops_models.nets.mesh import IDENTITY_6D, IterativePoseRegressor, MeshNet, compose_6d
from handops_models.nets.mesh_losses import edge_loss, normal_loss, ranking_loss, vertex_l1

SMALL = dict(input_size=64, backbone=ResNetConfig(18, 0.0625), hidden=(32,))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_rotations(n: int, generator, near_pi: bool = False) -> torch.Tensor:
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator, dtype=torch.float64), dim=-1)
    angle = (math.pi - 1e-6 * torch.rand(n, 1, generator=generator, dtype=torch.float64)) if near_pi else \
        math.pi * torch.rand(n, 1, generator=generator, dtype=torch.float64)
    return axis_angle_to_matrix(axis * angle)


# ------------------------------------------------------------------------------------------------ 6-D


def test_6d_is_the_first_two_columns():
    """A 90-degree turn about z, R = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]: its columns give (0, 1, 0, -1, 0, 0).
    Rules out pytorch3d's rows, (0, -1, 0, 1, 0, 0), and SPIN's interleaved columns, (0, -1, 1, 0, 0, 0)."""
    R = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert matrix_to_rotation_6d(R).tolist() == [0.0, 1.0, 0.0, -1.0, 0.0, 0.0]
    assert torch.equal(rotation_6d_to_matrix(torch.tensor([0.0, 1.0, 0.0, -1.0, 0.0, 0.0])), R)
    assert torch.equal(rotation_6d_to_matrix(torch.tensor(IDENTITY_6D)), torch.eye(3))


@pytest.mark.parametrize("near_pi", [False, True])
def test_6d_round_trips_and_composition_match_rotation_matrices(near_pi):
    """Both directions (matrix -> 6-D -> matrix, and a valid 6-D -> matrix -> 6-D) are exact to float64
    rounding, and Eq. 6.3's composition is the matrix product R(delta) R(theta), not R(theta) R(delta)
    (the two differ for these rotations) nor a sum of 6-D vectors; also at angles within 1e-6 of pi,
    where an axis-angle detour loses the axis."""
    g = torch.Generator().manual_seed(3)
    A, B = random_rotations(64, g, near_pi), random_rotations(64, g, near_pi)
    assert torch.allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(A)), A, atol=1e-12)
    d6 = matrix_to_rotation_6d(A)
    assert torch.allclose(matrix_to_rotation_6d(rotation_6d_to_matrix(d6)), d6, atol=1e-12)
    composed = rotation_6d_to_matrix(compose_6d(matrix_to_rotation_6d(A), matrix_to_rotation_6d(B)))
    assert torch.allclose(composed, A @ B, atol=1e-12)
    assert (composed - B @ A).abs().max() > 0.1
    assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(A)), A, atol=1e-9)


def test_regressor_outputs_valid_rotations_and_starts_at_the_identity():
    """Every iteration's 6-D is an orthonormal, right-handed frame (Gram-Schmidt of any MLP output); an
    untrained regressor stays within 1e-2 of the identity (the updates are parametrised around it), and with
    large weights (far from the identity) the outputs are still rotations."""
    g = torch.Generator().manual_seed(0)
    regressor = IterativePoseRegressor(32, (16,), iterations=3, num_betas=10).double()
    features, betas = torch.randn(5, 32, generator=g, dtype=torch.float64), torch.randn(5, 10, generator=g, dtype=torch.float64)
    theta = regressor(features, betas)
    assert theta.shape == (5, 3, 16, 6)
    assert (theta - torch.tensor(IDENTITY_6D, dtype=torch.float64)).abs().max() < 1e-2
    with torch.no_grad():
        for p in regressor.parameters():
            p.normal_(0, 1.0, generator=g)
    R = rotation_6d_to_matrix(regressor(features, betas))
    assert (R - torch.eye(3, dtype=torch.float64)).abs().max() > 0.5
    assert torch.allclose(R.transpose(-1, -2) @ R, torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(R.shape[:-2], dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="num_betas"):
        regressor(features)


# ------------------------------------------------------------------------------------------------ losses


def two_triangles(h: float):
    """A unit square split into faces (0, 1, 2) and (1, 3, 2); the prediction lifts vertex 3 by h."""
    target = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]], dtype=torch.float64)
    pred = target.clone()
    pred[0, 3, 2] = h
    return pred, target, torch.tensor([[0, 1, 2], [1, 3, 2]])


def test_mesh_losses_on_two_triangles():
    """h = 0.75 (|(0, 1, h)| = 1.25). By hand: L1 = h / 12 (one of 12 coordinates off by h); edge = the
    two stretched edges of face 2, 2 (1.25 - 1) / 6 edges; normal = those two edges' |cos| to the target
    normal (0, 0, 1), 2 (0.75 / 1.25) / 6. Rules out normals of the *predicted* face (every predicted edge
    lies in its own face: the loss would be 0), sums instead of means, and counting each edge once overall."""
    pred, target, faces = two_triangles(0.75)
    assert float(vertex_l1(pred, target)) == pytest.approx(0.75 / 12)
    assert float(edge_loss(pred, target, faces)) == pytest.approx(2 * 0.25 / 6)
    assert float(normal_loss(pred, target, faces)) == pytest.approx(2 * 0.6 / 6)
    flat_pred, _, _ = two_triangles(0.0)
    for loss in (edge_loss, normal_loss):
        assert float(loss(flat_pred, target, faces)) == 0.0
    with pytest.raises(ValueError, match="index vertices"):
        edge_loss(pred, target, torch.tensor([[0, 1, 4]]))
    with pytest.raises(ValueError, match=r"\[B, V, 3\]"):
        vertex_l1(pred[0], target[0])


def test_ranking_loss_on_hand_made_pairs():
    """Errors l = (0.1, 0.3, 0.2). Confidences (2, 0, 1) rank them right with gaps >= 1: loss 0. Confidences
    (0, 2, 1) rank them backwards: pairs (0, 1), (0, 2), (1, 2) cost 1 + 2, 1 + 1, 1 + 1, mean 7 / 3. Rules
    out a reversed sign (the first would cost and the second not) and a sum over pairs (7)."""
    error = torch.tensor([0.1, 0.3, 0.2])
    assert float(ranking_loss(torch.tensor([2.0, 0.0, 1.0]), error)) == 0.0
    assert float(ranking_loss(torch.tensor([0.0, 2.0, 1.0]), error)) == pytest.approx(7 / 3)
    assert float(ranking_loss(torch.tensor([0.5, 0.0]), torch.tensor([0.1, 0.2]))) == pytest.approx(0.5)  # gap < margin
    with pytest.raises(ValueError, match="at least 2"):
        ranking_loss(torch.tensor([1.0]), torch.tensor([0.1]))


# ------------------------------------------------------------------------------------------------ networks


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {name: build_model(name, MeshConfig(shape_source=source, **SMALL)).double()
            for name, source in (("mesh-identity", "input"), ("mesh-baseline", "regressed"))}


def test_identity_aware_net_uses_the_given_shape(nets):
    """The same image with two shapes gives two meshes whose difference is MANO's for those shapes at the
    predicted pose (the shape reaches the mesh, and the regressor's pose changes little with it); the net
    refuses a missing shape and the baseline refuses a given one."""
    net = nets["mesh-identity"]
    image = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    small, large = torch.zeros(1, 10, dtype=torch.float64), torch.full((1, 10), 2.0, dtype=torch.float64)
    a, b = net.predict(image, small), net.predict(image, large)
    assert (a["vertices"] - b["vertices"]).abs().max() > 1e-3
    rotations = rotation_6d_to_matrix(b["pose6d"][:, -1])
    again = net.mano(small, rotations[:, 0], rotations[:, 1:]).vertices
    assert (again - a["vertices"]).abs().max() < 0.05 * (a["vertices"] - b["vertices"]).abs().max()
    with pytest.raises(ValueError, match="pass the subject's shape"):
        net(image)
    with pytest.raises(ValueError, match="takes no betas"):
        nets["mesh-baseline"](image, small)
    with pytest.raises(ValueError, match=r"betas must be \[B, 10\]"):
        net(image, small[:, :5])


def test_loss_is_zero_on_its_own_prediction(nets):
    """Targets made from the net's own prediction (pose as axis-angle, the given shape) give zero mesh,
    normal, edge and pose terms: the ground-truth path (axis-angle -> matrices -> 6-D columns -> MANO) is the
    outputs' path. Rules out a ground truth in pytorch3d's rows (the pose term would be about 1) or a mean pose
    added to it (the mesh term would not vanish)."""
    net = nets["mesh-identity"]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the pose away from the identity so the check means something
        for mlp in net.regressor.mlps:
            mlp[-1].weight.normal_(0, 0.05, generator=g)
    images, betas = torch.rand(3, 3, 64, 64, dtype=torch.float64), torch.randn(3, 10, dtype=torch.float64)
    out = net.predict(images, betas)
    _, terms = net.loss(out, {"betas": betas, "pose": out["pose"]})
    for name in ("mesh", "normal", "edge", "pose"):
        assert float(terms[name]) < 1e-9, name
    _, far = net.loss(out, {"betas": betas, "pose": torch.zeros(3, 48, dtype=torch.float64)})
    assert float(far["pose"]) > 1e-3 and float(far["mesh"]) > 1e-4


def test_baseline_loss_terms_and_gradients(nets):
    """Eq. 6.9's terms with the default weights (mesh + 0.1 normal + edge + pose + shape); every parameter but
    the confidence predictor's gets a gradient from it, and the confidence predictor only from "ranking" (its
    features are detached: ranking never trains the encoder)."""
    net = nets["mesh-baseline"]
    net.zero_grad()
    images = torch.rand(4, 3, 64, 64, dtype=torch.float64)
    targets = {"betas": torch.randn(4, 10, dtype=torch.float64), "pose": 0.3 * torch.randn(4, 48, dtype=torch.float64)}
    out = net(images)
    total, terms = net.loss(out, targets)
    assert set(terms) == {"mesh", "normal", "edge", "pose", "shape", "ranking"}
    expected = terms["mesh"] + 0.1 * terms["normal"] + terms["edge"] + terms["pose"] + terms["shape"]
    assert float(total.detach()) == pytest.approx(float(expected.detach()))
    total.backward()
    for name, p in net.named_parameters():
        assert (p.grad is None) == name.startswith("confidence."), name
    net.zero_grad()
    net.loss(net(images), targets, {"ranking": 1.0})[0].backward()
    assert net.confidence.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in net.named_parameters() if n.startswith("backbone."))


def test_config_round_trip_state_and_presets():
    """The mesh configs round-trip as plain data and a checkpoint state rebuilds the same network; the tiny and
    paper presets build (paper: a ResNet-50 at 224)."""
    config = MeshConfig(shape_source="regressed", **SMALL)
    assert config_from_dict(config_to_dict(config)) == config
    torch.manual_seed(0)
    net = build_model("mesh-baseline", config)
    rebuilt = model_from_state(model_state(net), expect_model="mesh-baseline")
    image = torch.rand(2, 3, 64, 64)
    assert torch.equal(net.predict(image)["vertices"], rebuilt.predict(image)["vertices"])
    paper = build_model("mesh-identity", "paper")
    assert paper.input_size == 224 and paper.backbone.num_features == 2048
    assert build_model("mesh-baseline", "tiny").input_size == 128
    with pytest.raises(ValueError, match="shape_source"):
        MeshConfig(shape_source="given")
    with pytest.raises(ValueError, match="synthetic:<integer seed>"):
        MeshNet(MeshConfig(mano="synthetic:x", **SMALL))


# ------------------------------------------------------------------------------------------------ inference


class StubBaseline(torch.nn.Module):
    """predict() returns fixed per-image shapes, poses and confidences (a baseline whose outputs we choose)."""

    identity_aware = False

    def __init__(self, betas, poses, confidence):
        super().__init__()
        from handops_models.nets.mesh import make_mano_layer

        self.mano = make_mano_layer("synthetic:0").double()
        self.out = {"betas": betas, "pose": poses, "confidence": confidence}

    def predict(self, images, betas=None):
        index = images[:, 0, 0, 0].long()  # image i carries its index in a pixel
        return {k: v[index] for k, v in self.out.items()}


def _subject(good: int, bad: int, seed: int = 0):
    """``good`` images predicting the true shape up to noise 0.02 with confidence 2, ``bad`` ones off by +1.5 on
    every beta with confidence 0; random poses."""
    g = torch.Generator().manual_seed(seed)
    k = good + bad
    truth = torch.randn(10, generator=g, dtype=torch.float64)
    betas = truth + 0.02 * torch.randn(k, 10, generator=g, dtype=torch.float64)
    betas[good:] += 1.5
    poses = 0.3 * torch.randn(k, 48, generator=g, dtype=torch.float64)
    confidence = torch.cat([torch.full((good,), 2.0), torch.full((bad,), 0.0)]).double()
    images = torch.arange(k, dtype=torch.float64).view(k, 1, 1, 1).expand(k, 3, 8, 8)
    return truth, StubBaseline(betas, poses, confidence), images


def test_personalize_recovers_a_known_shape_and_attention_downweights_bad_images():
    """Eq. 6.7 minimises a sum of *unsquared* norms, a geometric median: with 15 good and 5 bad images even
    uniform weights stay within 0.05 of the truth (the weighted mean of the squared norms, the plausible wrong
    implementation, moves a quarter of the way to the bad images: 0.375). With 2 good and 18 bad images the
    median follows the bad majority, and only the attention weights softmax(c / 0.33) keep the truth (the bad
    images' share 18 e^-6 / (2 + 18 e^-6) = 2%); softmax(c) without the temperature (T = 1: 71%) would not
    (measured: 0.022 vs 1.50 off)."""
    from handops_models.nets.mesh_inference import personalize

    truth, baseline, images = _subject(15, 5)
    uniform = personalize(baseline, images, attention=False)
    assert (uniform["betas"] - truth).abs().max() < 0.05
    assert torch.allclose(uniform["weights"], torch.full((20,), 0.05).double())

    truth, baseline, images = _subject(2, 18, seed=1)
    attended = personalize(baseline, images)
    assert (attended["betas"] - truth).abs().max() < 0.05
    for wrong in (personalize(baseline, images, temperature=1.0), personalize(baseline, images, attention=False)):
        assert (wrong["betas"] - truth).abs().mean() > 1.0
    assert float(attended["weights"][2:].sum()) < 0.03


@pytest.mark.parametrize("SOLVER, OFFSET", [("adam", 0.05), ("lm", 0.15)])
def test_refinement_moves_a_perturbed_prediction_towards_the_detected_keypoints(SOLVER, OFFSET):
    """A regressor prediction OFFSET rad off the true pose in every axis-angle component and exact 2-D keypoints
    from the true pose, translation and camera: Eq. 6.4 brings the root-relative joint error down by more than
    half (measured: Adam with the thesis' schedule 9.2 -> 2.0 mm at 0.05 rad, but only 27 -> 16 mm at 0.15:
    60 steps at 1e-3 move an angle by at most 0.06 rad; Levenberg-Marquardt 27 -> 2.5 mm at 0.15 rad, to a
    reprojection error under 0.01 px). Rules out a fit that starts from the neutral pose instead of the
    prediction, or one that returns the start unchanged."""
    from handops.geometry import axis_angle_to_matrix, matrix_to_rotation_6d, project
    from handops_models.metrics import mpjpe
    from handops_models.nets.mesh import make_mano_layer
    from handops_models.nets.mesh_inference import refine_with_keypoints

    layer = make_mano_layer("synthetic:0").double()
    g = torch.Generator().manual_seed(2)
    B = 4
    betas = torch.randn(B, 10, generator=g, dtype=torch.float64)
    pose = 0.4 * torch.randn(B, 48, generator=g, dtype=torch.float64)
    transl = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64).expand(B, 3)
    K = torch.tensor([[300.0, 0, 64], [0, 300.0, 64], [0, 0, 1]], dtype=torch.float64).expand(B, 3, 3)
    truth = layer(betas, pose[:, :3], pose[:, 3:].view(B, 15, 3))
    keypoints2d = project(truth.joints + transl[:, None], K)
    start = pose + OFFSET * torch.sign(torch.randn(B, 48, generator=g, dtype=torch.float64))
    start_out = layer(betas, start[:, :3], start[:, 3:].view(B, 15, 3))

    class Regressor:
        mano = layer

        def predict(self, images, betas_in=None):
            d6 = matrix_to_rotation_6d(axis_angle_to_matrix(start.view(B, 16, 3)))
            return {"pose6d": d6[:, None], "betas": betas, "vertices": start_out.vertices, "keypoints3d": start_out.joints}

    class Detector:
        def predict(self, images):
            return {"keypoints2d": keypoints2d, "confidence": torch.ones(B, 21, dtype=torch.float64)}

    out = refine_with_keypoints(Regressor(), torch.zeros(B, 3, 8, 8), K, Detector(), betas, solver=SOLVER)
    before, after = mpjpe(out["before_keypoints3d"], truth.joints), mpjpe(out["keypoints3d"], truth.joints)
    assert after < 0.5 * before, (before, after)
    assert float(out["reprojection_error"].max()) < (1.0 if SOLVER == "adam" else 0.01)


# ------------------------------------------------------------------------------------------------ command line


def test_cli_trains_personalizes_and_evaluates_every_mesh_target(tmp_path):
    """A --max-steps smoke run of each chapter-6 train target (mesh-baseline, mesh-identity, detector2d) through
    the CLI; mesh-confidence refused without --init and, with 16 training images, refused before training for
    its stage's own batch of 128; then personalize on the baseline, evaluate the identity-aware net with
    calibrated shapes and optimisation, and predict a mesh file and an overlay with the calibrated shape. Checks
    the shape JSON (K weights summing to 1), the evaluation JSON (errors with and without optimisation) and the
    mesh files. (The confidence stage itself: test_confidence_stage_trains_only_the_confidence_predictor.)"""
    import json

    from tests.test_cli import run_cli

    small = {"mesh-baseline": MeshConfig(shape_source="regressed", **SMALL), "mesh-identity": MeshConfig(**SMALL),
             "detector2d": __import__("handops_models.nets.configs", fromlist=["HourglassConfig"]).HourglassConfig(
                 input_size=64, num_stacks=1, channels=16, depth=2, heatmap_loss="bce")}
    common = ["--data", "synthetic", "--train-size", "16", "--val-size", "8", "--batch-size", "8", "--no-progress"]
    for model, config in small.items():
        path = tmp_path / f"{model}.json"
        path.write_text(json.dumps(config_to_dict(config)))
        sizes = ["--train-size", "128"] if model == "mesh-baseline" else []  # its confidence stage's batch is 128
        rc, out, err = run_cli("train", "--model", model, "--config", path, "--out", tmp_path / model, "--max-steps", 2,
                               *common, *sizes)
        assert rc == 0, err
    rc, out, err = run_cli("train", "--model", "mesh-baseline", "--config", tmp_path / "mesh-baseline.json",
                           "--out", tmp_path / "too-small", *common)
    assert rc == 2 and "smaller than one batch (128)" in err  # refused before any training
    rc, out, err = run_cli("train", "--model", "mesh-confidence", "--init", tmp_path / "mesh-baseline" / "final.pt",
                           "--out", tmp_path / "confidence", "--epochs-scale", 0.01, *common[:-3], "--no-progress")
    assert rc == 2 and "smaller than one batch (128)" in err  # the confidence stage's own batch size
    rc, out, err = run_cli("train", "--model", "mesh-confidence", "--out", tmp_path / "c2", *common)
    assert rc == 2 and "--init FILE" in err
    rc, out, err = run_cli("personalize", "--checkpoint", tmp_path / "mesh-baseline" / "final.pt", "--data", "synthetic",
                           "--split", "test", "--size", 40, "--subject", 48, "--k", 3, "--out", tmp_path / "s48.json")
    assert rc == 0, err
    shape = json.loads((tmp_path / "s48.json").read_text())
    assert len(shape["betas"]) == 10 and len(shape["weights"]) == 3 and sum(shape["weights"]) == pytest.approx(1, abs=1e-5)
    assert "W-error" in out and shape["subject"] == 48
    rc, out, err = run_cli("evaluate", "--checkpoint", tmp_path / "mesh-identity" / "final.pt", "--data", "synthetic",
                           "--size", 16, "--shape", "calibrated", "--baseline", tmp_path / "mesh-baseline" / "final.pt",
                           "--k", 2, "--detector", tmp_path / "detector2d" / "final.pt", "--solver", "lm")
    assert rc == 0, err
    report = json.loads((tmp_path / "mesh-identity" / "eval_mesh_synthetic_test.json").read_text())
    assert report["shape"] == "calibrated" and {"mpjpe", "mpvpe", "mpjpe_opt", "mpvpe_opt", "calibration"} <= set(report)
    rc, out, err = run_cli("evaluate", "--checkpoint", tmp_path / "mesh-identity" / "final.pt", "--data", "synthetic",
                           "--size", 16, "--shape", "calibrated")
    assert rc == 2 and "--baseline" in err
    from PIL import Image

    Image.new("RGB", (80, 50), (120, 90, 60)).save(tmp_path / "hand.png")  # not square: padded, then resized
    rc, out, err = run_cli("predict", "--checkpoint", tmp_path / "mesh-identity" / "final.pt", tmp_path / "hand.png",
                           "--out", tmp_path / "pred", "--shape", tmp_path / "s48.json",
                           "--detector", tmp_path / "detector2d" / "final.pt")
    assert rc == 0, err
    obj = (tmp_path / "pred" / "hand_mesh.obj").read_text().splitlines()
    net = MeshNet(MeshConfig(**SMALL))
    assert sum(l.startswith("v ") for l in obj) == net.mano.model.num_vertices
    assert sum(l.startswith("f ") for l in obj) == len(net.faces)
    record = json.loads((tmp_path / "pred" / "hand_mesh.json").read_text())
    assert record["betas"] == pytest.approx(shape["betas"], abs=1e-6) and len(record["transl"]) == 3
    assert Image.open(tmp_path / "pred" / "hand_overlay.png").size == (128, 128)  # the 64-pixel crop, drawn at x2
    rc, out, err = run_cli("predict", "--checkpoint", tmp_path / "mesh-identity" / "final.pt", tmp_path / "hand.png",
                           "--out", tmp_path / "pred2")
    assert rc == 2 and "--shape FILE" in err


def test_refinement_feeds_the_detector_at_its_own_size_and_scales_its_keypoints_back():
    """A detector with input_size 128 for 64-pixel crops gets the images resized to 128 and its keypoints come
    back as ``(x + 0.5) * 64 / 128 - 0.5`` (pixel centres at integers: the detector's 1.5 is the crop's 0.5).
    Rules out unscaled keypoints and a scale without the half-pixel shift."""
    from handops_models.nets.mesh_inference import refine_with_keypoints

    seen = {}

    class Detector:
        input_size = 128

        def predict(self, images):
            seen["size"] = images.shape[-1]
            keypoints = torch.full((len(images), 21, 2), 1.5, dtype=torch.float64)
            return {"keypoints2d": keypoints, "confidence": torch.ones(len(images), 21, dtype=torch.float64)}

    net = build_model("mesh-baseline", MeshConfig(shape_source="regressed", **SMALL)).double()
    images = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    K = torch.tensor([[96.0, 0, 31.5], [0, 96.0, 31.5], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3)
    out = refine_with_keypoints(net, images, K, Detector(), iterations=(1, 1))
    assert seen["size"] == 128
    assert torch.allclose(out["detected_keypoints2d"], torch.full((2, 21, 2), 0.5, dtype=torch.float64))


def test_ground_truth_meshes_are_syntheticHands_meshes_up_to_the_root_translation():
    """``MeshNet.targets`` rebuilds each SyntheticHands sample's mesh and keypoints from its betas and pose alone:
    equal to the sample's camera-frame ones after one translation per hand (rules out a hand model of another
    seed, a pose read in another order); and the network's layer fed the *axis-angle* pose (what the fitting and
    the calibration feed it) gives the same mesh (rules out a layer that adds the mean pose, flat_hand_mean=False:
    3.8 cm off). A batch from another hand model is refused, as are left hands."""
    from handops_models.data.synthetic import SyntheticHands
    from handops_models.train.loop import collate

    data = SyntheticHands(3, image_size=64, progress=False)
    batch = collate([data[i] for i in range(3)])
    truth = MeshNet(MeshConfig(**SMALL)).targets(batch)
    offset = batch["keypoints3d"][:, :1] - truth["keypoints3d"][:, :1]
    assert (truth["vertices"] + offset - batch["vertices"]).abs().max() < 1e-6
    assert (truth["keypoints3d"] + offset - batch["keypoints3d"]).abs().max() < 1e-6
    net = MeshNet(MeshConfig(**SMALL))
    axis_angle = net.mano(batch["betas"], batch["pose"][:, :3], batch["pose"][:, 3:].view(-1, 15, 3))
    assert (axis_angle.vertices - truth["vertices"]).abs().max() < 1e-6
    with pytest.raises(ValueError, match="not this network's hand model"):
        MeshNet(MeshConfig(mano="synthetic:3", **SMALL)).targets(batch)
    with pytest.raises(ValueError, match="left hands"):
        net.targets(dict(batch, is_left=torch.tensor([False, True, False])))


def test_confidence_stage_trains_only_the_confidence_predictor(tmp_path):
    """The baseline recipe's confidence stage (at batch 4 here instead of 128) changes the confidence predictor's
    weight and nothing else: the rest is frozen and the ranking loss reads detached features; even the
    predictor's bias keeps its value, since a ranking loss depends on differences c_i - c_j only. It picks its
    best.pt by the within-subject rank accuracy, which its metrics record."""
    import dataclasses
    import json

    from handops_models.data.synthetic import SyntheticHands
    from handops_models.train.loop import Settings, run_recipe
    from handops_models.train.recipes import recipe_for

    torch.manual_seed(0)
    net = build_model("mesh-baseline", MeshConfig(shape_source="regressed", **SMALL))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stage = dataclasses.replace(recipe_for("mesh-baseline")[-1], epochs=1, batch_size=4, lr=1e-2)
    train = SyntheticHands(8, image_size=64, progress=False)
    val = SyntheticHands(8, image_size=64, split="val", progress=False)
    result = run_recipe(net, [stage], train, val, tmp_path, Settings(batch_size=32, progress=False), log=lambda m: None)
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"confidence.weight"}
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["best"]["confidence"] == record["val"]["rank_accuracy"] == record["val"]["score"]
    assert (tmp_path / "confidence" / "best.pt").is_file()


def test_rank_accuracy_counts_pairs_within_subjects():
    """Confidences that order every subject's images backwards but put the subject with the larger errors lower
    score 0 within subjects; pooled over all pairs they score 2/3 (a "useless for Eq. 6.6" head that the pooled
    metric would prefer to chance). Rules out pooling across subjects when subjects are given."""
    from handops_models.train.loop import rank_accuracy

    error = torch.tensor([0.1, 0.2, 0.3, 0.4])
    subject = torch.tensor([0, 0, 1, 1])
    confidence = torch.tensor([1.0, 2.0, -2.0, -1.0])  # within each subject the larger error has the larger c
    assert rank_accuracy(confidence, error, subject) == 0.0
    assert rank_accuracy(confidence, error) == pytest.approx(4 / 6)


@pytest.mark.parametrize("name, source", [("mesh-identity", "input"), ("mesh-baseline", "regressed")])
def test_loss_decreases_on_a_fixed_batch(name, source):
    """Twelve Adam steps on four SyntheticHands samples lower each mesh network's default loss (Eq. 6.10 /
    6.9): rules out a loss detached from the regressor (e.g. the 6-D update not reaching the parameters
    through the Gram-Schmidt and the matrix product) or from the encoder."""
    from handops_models.data.synthetic import SyntheticHands
    from handops_models.train.loop import collate

    torch.manual_seed(0)
    net = build_model(name, MeshConfig(shape_source=source, **SMALL))
    batch = collate([s for s in SyntheticHands(4, image_size=64, progress=False)])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        total, _ = net.loss(net(*net.batch_inputs(batch)), batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.9 * losses[0], losses


def test_mesh_errors_reports_the_baseline_pose_under_the_true_shape():
    """``mpjpe_true_shape``: the baseline's own pose fed to MANO with the true betas. A baseline whose shape MLP
    outputs the truth scores the same there as in ``mpjpe``; one whose shape is off differs in ``mpjpe`` only
    (rules out posing with the predicted shape again, or comparing with the predicted keypoints)."""
    from handops_models.data.synthetic import SyntheticHands
    from handops_models.train.mesh_eval import mesh_errors

    data = SyntheticHands(6, image_size=64, num_subjects=6, progress=False)
    torch.manual_seed(0)
    baseline = MeshNet(MeshConfig(shape_source="regressed", **SMALL)).eval()
    truth = torch.stack([data[i]["betas"] for i in range(6)])
    last = baseline.shape_regressor[-1]
    with torch.no_grad():  # a shape MLP that outputs this subject's betas whatever the image: weights 0, bias the betas
        last.weight.zero_()
        last.bias.copy_(truth[0])
    same = mesh_errors(baseline, torch.utils.data.Subset(data, [i for i in range(6) if torch.equal(truth[i], truth[0])]))
    torch.testing.assert_close(same["mpjpe_true_shape"], same["mpjpe"], atol=1e-4, rtol=0)
    with torch.no_grad():
        last.bias.copy_(truth[0] + 2.0)  # every hand 2 std too big
    off = mesh_errors(baseline, data)
    assert (off["mpjpe"] - off["mpjpe_true_shape"]).abs().max() > 1.0
    identity_aware = mesh_errors(MeshNet(MeshConfig(**SMALL)).eval(), data)
    assert "mpjpe_true_shape" not in identity_aware


def test_mesh_confidence_resumes_only_from_the_same_init_checkpoint(tmp_path):
    """A mesh-confidence run records its --init checkpoint's sha256: --resume with another baseline (a plausible
    slip: a retrained baseline at the same path) is refused, naming --init; with the same bytes under another
    path it passes that check."""
    import shutil

    from handops_models.train.checkpoint import save_checkpoint
    from tests.test_cli import run_cli

    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(tmp_path / f"base{seed}.pt", build_model("mesh-baseline", MeshConfig(shape_source="regressed", **SMALL)))
    common = ["--data", "synthetic", "--train-size", "128", "--val-size", "8", "--no-progress", "--max-steps", "1",
              "--epochs-scale", "0.01", "--out", tmp_path / "conf"]
    rc, out, err = run_cli("train", "--model", "mesh-confidence", "--init", tmp_path / "base0.pt", *common)
    assert rc == 0, err
    rc, out, err = run_cli("train", "--model", "mesh-confidence", "--init", tmp_path / "base1.pt", *common, "--resume")
    assert rc == 2 and "--init checkpoint" in err
    shutil.copyfile(tmp_path / "base0.pt", tmp_path / "moved.pt")
    rc, out, err = run_cli("train", "--model", "mesh-confidence", "--init", tmp_path / "moved.pt", *common, "--resume")
    assert rc == 0, err
