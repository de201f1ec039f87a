"""The command line (``python -m handops_models train / evaluate / predict``), run in-process through
``handops_models.train.cli.main(argv)`` on very small networks (64x64 input, width 1/16, written as config FILEs
here: the FILE path of ``--config``) and tiny ``SyntheticHands`` splits; the real formats' wiring on the loader
tests' fixture folders. Each test names the wrong implementation it rules out."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from handops_models.data import SyntheticHands
from handops_models.data.targets import fit_pose_clusters, heatmap_to_image, rotate_keypoints
from handops_models.metrics import THESIS_THRESHOLDS, pck_auc
from handops_models.nets.configs import (CPMConfig, HourglassConfig, ResNetConfig, RotationConfig, config_to_dict,
                                         preset)
from handops_models.nets.rotation import rotate
from handops_models.train import Settings, evaluate_model, load_checkpoint, recipe_for
from handops_models.train.cli import main, resolve_config
from handops_models.train.data import make_datasets, make_split
from handops_models.train.predict import rotate_back, to_input, to_original, tree_map_keypoints

SMALL_CPM = CPMConfig(input_size=64, width=0.0625, num_stages=2, feature_channels=64, stage1_channels=64,
                      stage_channels=32)
SMALL_HOURGLASS = HourglassConfig(input_size=64, num_stacks=1, channels=16, depth=2)
SMALL_RESNET = ResNetConfig(18, 0.0625)
SMALL_ROTATION = RotationConfig(SMALL_RESNET, hidden=16)
_SIA = dict(cpm=SMALL_CPM, hourglass=SMALL_HOURGLASS, kernel_size=7, pointer=SMALL_RESNET, layers=2)
SMALL = {
    "cpm": SMALL_CPM,
    "hourglass": SMALL_HOURGLASS,
    "agmn": preset("agmn", "tiny", cpm=SMALL_CPM, kernel_size=7),
    "rmgmn": preset("rmgmn", "tiny", cpm=SMALL_CPM, rotation=SMALL_ROTATION, classifier=SMALL_RESNET, kernel_size=7,
                    num_models=4),
    "siapose": preset("siapose", "tiny", heads=2, **_SIA),
    "sharedgcn": preset("sharedgcn", "tiny", **_SIA),
    "rsiapose": preset("rsiapose", "tiny", heads=2, rotation=SMALL_ROTATION, **_SIA),
}
DATA = ["--data", "synthetic", "--batch-size", "4", "--no-progress"]
SIZE = 64
SYNTHETIC = dict(image_size=SIZE, num_subjects=50, occlusion=0.3, progress=False)  # what make_split renders


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these networks are tiny, and two threads on two shared, busy cores run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_config(folder, model: str):
    path = folder / f"{model}_config.json"
    path.write_text(json.dumps(config_to_dict(SMALL[model])))
    return path


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def train(folder, model: str, *extra) -> tuple[int, str, str]:
    return run_cli("train", "--model", model, "--config", write_config(folder, model), "--out", folder / "run",
                   *DATA, *extra)


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def agmn_run(tmp_path_factory):
    """A complete AGMN recipe (every stage 1 epoch of 2 steps)."""
    folder = tmp_path_factory.mktemp("agmn")
    rc, out, err = train(folder, "agmn", "--train-size", 8, "--val-size", 4, "--epochs-scale", 0.001)
    assert rc == 0, err
    return folder / "run", out


@pytest.fixture(scope="module")
def rmgmn_run(tmp_path_factory):
    """A complete R-MGMN recipe (every stage 1 epoch; the classifier on 6 + 2 images of the 8)."""
    folder = tmp_path_factory.mktemp("rmgmn")
    rc, out, err = train(folder, "rmgmn", "--train-size", 8, "--val-size", 4, "--epochs-scale", 0.001)
    assert rc == 0, err
    return folder / "run", out


@pytest.fixture(scope="module")
def cpm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cpm")
    rc, out, err = train(folder, "cpm", "--train-size", 8, "--val-size", 4, "--max-steps", 2)
    assert rc == 0, err
    return folder / "run"


@pytest.fixture(scope="module")
def hand_image(tmp_path_factory):
    """A synthetic test hand as a PNG at the networks' input size, and its tensor."""
    image = SyntheticHands(1, split="test", **SYNTHETIC)[0]["image"]
    path = tmp_path_factory.mktemp("images") / "hand.png"
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------------ train


@pytest.mark.parametrize("model", sorted(SMALL))
def test_train_smoke_every_recipe(tmp_path, model):
    """Each recipe starts and takes two steps through the CLI (rules out: a model the CLI cannot build a recipe for,
    e.g. the SiaPose estimator lookup, or stage loss weights naming terms the model lacks), writes config.json with
    the FILE's config and the recipe as data, and final.pt after the steps (rules out: --config FILE ignored for the
    preset, --max-steps ignored, no final checkpoint when stopped early)."""
    rc, out, err = train(tmp_path, model, "--train-size", 16, "--val-size", 8, "--max-steps", 2)
    assert rc == 0, err
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == model
    assert config["config"] == json.loads((tmp_path / f"{model}_config.json").read_text())
    assert config["recipe"] == json.loads(json.dumps([dataclasses.asdict(s) for s in recipe_for(model)]))
    assert config["settings"]["max_steps"] == 2 and config["settings"]["batch_size"] == 4
    assert config["data_sizes"] == {"train": 16, "val": 8}
    final = load_checkpoint(run / "final.pt", expect_model=model, expect_config=SMALL[model])
    assert final["step"] == 2 and final["extra"]["complete"] is False
    assert [r["step"] for r in records(run)] == [2]
    assert "stopped at step 2" in out and "stopped after 2 steps" in out


def test_train_complete_agmn_one_line_per_epoch(agmn_run):
    """Every stage runs, one summary line per epoch is printed (rules out: no per-epoch line, or one per step), and
    final.pt is the last stage's best weights (rules out: final.pt holding the last step's weights, or a stage skipped)."""
    run, out = agmn_run
    lines = [line for line in out.splitlines() if re.match(r"^\w+ epoch \d", line)]
    assert [line.split()[0] for line in lines] == ["unary", "pairwise", "finetune"]
    assert [r["stage"] for r in records(run)] == ["unary", "pairwise", "finetune"]
    for stage in ("unary", "pairwise", "finetune"):
        assert (run / stage / "best.pt").is_file()
    final = load_checkpoint(run / "final.pt")
    best = load_checkpoint(run / "finetune" / "best.pt")
    assert final["extra"]["complete"] is True and final["stage_name"] == "finetune"
    for key, value in best["network"]["state_dict"].items():
        torch.testing.assert_close(final["network"]["state_dict"][key], value, rtol=0, atol=0)
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_train_rmgmn_clusters_on_training_split_and_classifier_split(rmgmn_run):
    """K-means centres come from the training split's keypoints only (rules out: fitting on val/test or on all of
    the data), the classifier stage trains on 70% of the training split and validates on the other 30% (rules out:
    the split ignored: its validation records would count the 4 validation-split images)."""
    run, _ = rmgmn_run
    stored = torch.load(run / "clusters.pt", weights_only=True)
    train = SyntheticHands(8, split="train", **SYNTHETIC)
    expected = fit_pose_clusters(torch.stack([train[i]["keypoints2d"] for i in range(8)]), num_clusters=4, seed=0)
    torch.testing.assert_close(stored["centres"], expected.centres)
    config = json.loads((run / "config.json").read_text())
    assert config["classifier"] == {"stage": "classifier", "train_images": 6, "validation_images": 2}
    by_stage = {r["stage"]: r for r in records(run)}
    assert list(by_stage) == ["rotation", "unary", "classifier", "pool", "joint"]
    assert by_stage["classifier"]["val"]["num_images"] == 2 and by_stage["pool"]["val"]["num_images"] == 4


def test_config_file_round_trip_and_heads(tmp_path):
    """A config FILE rebuilds the same config, --heads overrides it (rules out: --heads dropped when a FILE is given),
    and a FILE of another network's config is refused naming both types."""
    path = write_config(tmp_path, "siapose")
    assert resolve_config("siapose", str(path)) == SMALL["siapose"]
    assert resolve_config("siapose", str(path), heads=3) == dataclasses.replace(SMALL["siapose"], heads=3)
    assert resolve_config("sharedgcn", "tiny", heads=5).heads == 5
    rc, _, err = run_cli("train", "--model", "agmn", "--config", path, "--out", tmp_path / "x", *DATA)
    assert rc == 2 and "SiaPoseConfig" in err and "AGMNConfig" in err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_table_json_png(agmn_run, tmp_path):
    """The JSON's numbers are evaluate_model's on the test split at the network's input size with the checkpoint's
    weights (rules out: another split, fresh weights, a wrong crop size), mPCK is the mean of the six thesis
    thresholds, AUC the area of the PCK curve; the table and the curve PNG are written."""
    run, _ = agmn_run
    rc, out, err = run_cli("evaluate", "--checkpoint", run / "final.pt", "--data", "synthetic", "--size", 8,
                           "--batch-size", 4, "--out", tmp_path)
    assert rc == 0, err
    report = json.loads((tmp_path / "eval_synthetic_test.json").read_text())
    assert (tmp_path / "eval_synthetic_test_pck.png").read_bytes()[:4] == b"\x89PNG"
    (r,) = report["results"]
    assert list(r["pck"]) == [f"{t:g}" for t in THESIS_THRESHOLDS]
    assert r["mpck"] == pytest.approx(np.mean(list(r["pck"].values())))
    assert set(r["pck_coarse"]) == {"0.05", "0.1", "0.15", "0.2"} and r["num_images"] == 8
    network = load_checkpoint(run / "final.pt")["model"]
    test = SyntheticHands(8, split="test", **SYNTHETIC)
    ref = evaluate_model(network, test, Settings(batch_size=4))
    assert r["epe_px"] == pytest.approx(ref["epe_px"]) and r["mpck"] == pytest.approx(ref["mpck"])
    gt = torch.stack([test[i]["keypoints2d"] for i in range(8)])
    assert r["auc"]["0.2"] == pytest.approx(pck_auc(ref["predictions"], gt, torch.full((8,), 64.0), 0, 0.2, 41))
    assert "Threshold of PCK" in out and "mPCK" in out and "AUC 0-0.06" in out and "EPE" in out


def test_evaluate_compare_two_checkpoints(agmn_run, cpm_run, tmp_path):
    """--compare puts both checkpoints in one table, one JSON and one plot, each with its own numbers (rules out:
    --compare ignored, or the first checkpoint's metrics repeated)."""
    run, _ = agmn_run
    rc, out, err = run_cli("evaluate", "--checkpoint", run, "--compare", cpm_run / "last.pt", "--data", "synthetic",
                           "--size", 8, "--batch-size", 4, "--out", tmp_path, "--labels", "AGMN", "CPM")
    assert rc == 0, err
    report = json.loads((tmp_path / "eval_synthetic_test.json").read_text())
    assert [r["label"] for r in report["results"]] == ["AGMN", "CPM"]
    assert [r["model"] for r in report["results"]] == ["agmn", "cpm"]
    cpm = load_checkpoint(cpm_run / "last.pt")["model"]
    ref = evaluate_model(cpm, SyntheticHands(8, split="test", **SYNTHETIC), Settings(batch_size=4))
    assert report["results"][1]["epe_px"] == pytest.approx(ref["epe_px"])
    table = report["table"].splitlines()
    assert any(line.startswith("AGMN") for line in table) and any(line.startswith("CPM") for line in table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_synthetic_test.json", "eval_synthetic_test_pck.png"]


# ------------------------------------------------------------------------------------------------ predict


def test_predict_argmax_json_and_overlay(agmn_run, hand_image, tmp_path):
    """For an image at the input size the JSON's keypoints are network.predict's (rules out: a scale or half-pixel
    error in mapping back to the image), with names and confidence; an overlay PNG is written per image."""
    run, _ = agmn_run
    rc, out, err = run_cli("predict", "--checkpoint", run / "final.pt", hand_image, "--out", tmp_path)
    assert rc == 0, err
    record = json.loads((tmp_path / "hand_keypoints.json").read_text())
    network = load_checkpoint(run / "final.pt")["model"]
    image = torch.from_numpy(np.array(Image.open(hand_image).convert("RGB"))).permute(2, 0, 1).float() / 255
    expected = network.predict(image[None])
    np.testing.assert_allclose(record["keypoints2d"], expected["keypoints2d"][0].numpy(), atol=1e-6)
    np.testing.assert_allclose(record["confidence"], expected["confidence"][0].numpy(), rtol=1e-6)
    assert (record["width"], record["height"], record["decode"], len(record["keypoint_names"])) == (64, 64, "argmax", 21)
    overlay = Image.open(tmp_path / "hand_overlay.png")
    assert overlay.size == (256, 256)  # enlarged 4x for thin lines


def test_predict_maps_back_to_a_non_square_image():
    """A non-square image is padded about its centre and resized; keypoints go back to its own pixels (rules out:
    padding on one side only, or stretching the image and then mapping back as if padded)."""
    image = torch.zeros(3, 30, 50)
    image[:, 7, 41] = 1.0  # (x, y) = (41, 7)
    resized = to_input(image, 100)  # side 50 -> 100: 2x, the row padded by 10 above and below
    weights = resized[0]
    ys, xs = torch.meshgrid(torch.arange(100.0), torch.arange(100.0), indexing="ij")
    centroid = torch.stack([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
    np.testing.assert_allclose(to_original(centroid[None], 30, 50, 100)[0].numpy(), [41.0, 7.0], atol=1e-4)


def test_predict_map_decoding_agmn(agmn_run, hand_image, tmp_path):
    """--decode map writes handops.tree_map's joint configuration of AGMN's unary and kernels (rules out: falling
    back to the argmax of the marginals, or (row, col) read as (x, y))."""
    run, _ = agmn_run
    rc, out, err = run_cli("predict", "--checkpoint", run / "final.pt", hand_image.parent, "--out", tmp_path,
                           "--decode", "map")
    assert rc == 0, err
    record = json.loads((tmp_path / "hand_keypoints.json").read_text())
    assert record["decode"] == "map"
    network = load_checkpoint(run / "final.pt")["model"].eval()
    image = torch.from_numpy(np.array(Image.open(hand_image).convert("RGB"))).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        outputs = network(image)
    import handops

    _, config = handops.tree_map(outputs["unary"], outputs["kernels"], handops.hand_tree())
    expected = heatmap_to_image(torch.stack([config[..., 1], config[..., 0]], -1).double(), stride=network.stride)
    np.testing.assert_allclose(record["keypoints2d"], expected[0].numpy(), atol=1e-6)


def test_tree_map_keypoints_reads_row_col():
    """Sharp unary peaks at (x, y) with x != y and flat kernels decode to exactly those peaks in input pixels
    (rules out: the (row, col) configuration used as (x, y))."""
    import handops

    tree = handops.hand_tree()
    rng = np.random.default_rng(0)
    cols, rows = rng.integers(0, 8, 21), rng.integers(0, 8, 21)
    unary = torch.full((1, 21, 8, 8), 1e-3, dtype=torch.float64)
    unary[0, torch.arange(21), torch.as_tensor(rows), torch.as_tensor(cols)] = 1.0
    kernels = torch.ones(tree.num_messages, 15, 15, dtype=torch.float64)
    keypoints, _ = tree_map_keypoints(unary, kernels, tree, stride=8)
    expected = np.stack([cols * 8 + 3.5, rows * 8 + 3.5], -1)
    np.testing.assert_allclose(keypoints[0].numpy(), expected)


def test_rotate_back_inverts_the_rmgmn_image_rotation():
    """A point of the image goes where nets.rotation.rotate puts it on the upright image; rotate_back returns it
    (rules out: turning by +angle instead of -angle, or about size / 2 instead of the pixel centre (size - 1) / 2)."""
    size, angle = 33, torch.tensor([70.0], dtype=torch.float64)
    image = torch.zeros(1, 1, size, size, dtype=torch.float64)
    image[0, 0, 6:9, 20:23] = 1.0  # a 3x3 blob centred at (x, y) = (21, 7)
    upright = rotate(image, angle)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    centroid = torch.stack([(upright * xs).sum(), (upright * ys).sum()]) / upright.sum()
    back = rotate_back(centroid[None, None], angle, size)[0, 0]
    np.testing.assert_allclose(back.numpy(), [21.0, 7.0], atol=0.05)


def test_predict_map_decoding_rmgmn(rmgmn_run, hand_image, tmp_path):
    """R-MGMN: the highest-weight model's kernels with the unary of the upright image, decoded and turned back by
    the rotation net's angle (rules out: the rotated-back unary used in the upright frame, or the keypoints left in
    the upright frame)."""
    run, _ = rmgmn_run
    rc, out, err = run_cli("predict", "--checkpoint", run / "final.pt", hand_image, "--out", tmp_path, "--decode", "map")
    assert rc == 0, err
    record = json.loads((tmp_path / "hand_keypoints.json").read_text())
    network = load_checkpoint(run / "final.pt")["model"].eval()
    image = torch.from_numpy(np.array(Image.open(hand_image).convert("RGB"))).permute(2, 0, 1).float()[None] / 255
    from handops_models.nets.structured import normalised_potentials

    with torch.no_grad():  # the upright unary computed independently of the CLI's forward hook
        x = network.check_images(image)
        angle = network.rotation_net(x)
        stages = network.unary_branch.stage_maps(rotate(x, angle))
        weights = torch.softmax(network.classifier(rotate(x, angle)), -1)
    unary = normalised_potentials(stages[:, -1], network.config.unary_floor)
    kernels = normalised_potentials(network.kernels, network.config.kernel_floor)[weights.argmax(-1)]
    upright, _ = tree_map_keypoints(unary, kernels, network.tree, network.stride)
    np.testing.assert_allclose(record["keypoints2d"], rotate_back(upright, angle, 64)[0].numpy(), atol=1e-4)
    # turned forward again, the keypoints lie on the upright map's grid (centres of 8-pixel cells)
    forward = rotate_keypoints(torch.tensor(record["keypoints2d"], dtype=torch.float64), angle.double()[0],
                               centre=torch.tensor([31.5, 31.5], dtype=torch.float64))
    cells = (forward - 3.5) / 8
    np.testing.assert_allclose(cells.numpy(), cells.round().numpy(), atol=1e-4)


# ------------------------------------------------------------------------------------------------ errors


def test_usage_errors(tmp_path, agmn_run, cpm_run, hand_image):
    """Each usage error is one line on stderr and exit status 2, before anything is written (rules out: a traceback,
    a hang in data loading, or a run folder left behind)."""
    run, _ = agmn_run
    cases = [
        (["train", "--model", "alexnet", "--data", "synthetic", "--out", tmp_path / "a"], "invalid choice: 'alexnet'"),
        (["train", "--model", "cpm", "--data", "coco", "--out", tmp_path / "a"], "invalid choice: 'coco'"),
        (["train", "--model", "cpm", "--data", "freihand", "--out", tmp_path / "a"], "pass its folder as --root"),
        (["train", "--model", "cpm", "--data", "humbi", "--root", tmp_path / "missing", "--out", tmp_path / "a"],
         "humbi folder not found"),
        (["train", "--model", "cpm", "--config", tmp_path / "nope.json", "--data", "synthetic", "--out", tmp_path / "a"],
         "neither a preset"),
        (["train", "--model", "cpm", "--heads", "3", "--data", "synthetic", "--out", tmp_path / "a"],
         "--heads sets SIA-GCN heads"),
        (["train", "--model", "cpm", "--data", "freihand", "--root", tmp_path, "--cache-dir", tmp_path / "c",
          "--out", tmp_path / "a"], "does not apply to real data"),
        (["train", "--model", "agmn", "--config", tmp_path / "agmn_config.json", "--data", "synthetic", "--out", run],
         "already holds a run"),
        (["train", "--model", "agmn", "--config", tmp_path / "agmn_config.json", "--data", "synthetic", "--out", run,
          "--resume", "--epochs-scale", "0.5"], "another recipe"),
        (["evaluate", "--checkpoint", run / "final.pt", "--model", "cpm", "--data", "synthetic"],
         "holds a 'agmn' network, expected 'cpm'"),
        (["evaluate", "--checkpoint", run / "final.pt", "--data", "panoptic"], "pass its folder as --root"),
        (["evaluate", "--checkpoint", tmp_path, "--data", "synthetic"], "without final.pt"),
        (["evaluate", "--checkpoint", tmp_path / "weights.pt", "--data", "synthetic"], "not a handops_models training"),
        (["predict", "--checkpoint", cpm_run / "last.pt", hand_image, "--out", tmp_path / "p", "--decode", "map"],
         "a 'cpm' network does not"),
        (["predict", "--checkpoint", run / "final.pt", tmp_path / "agmn_config.json", "--out", tmp_path / "p"],
         "not a readable image"),
    ]
    write_config(tmp_path, "agmn")
    torch.save({"model": "cpm", "weights": torch.zeros(2)}, tmp_path / "weights.pt")
    for argv, message in cases:
        rc, out, err = run_cli(*argv)
        assert rc == 2, (argv, out, err)
        assert message in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "p").exists()


def test_rmgmn_needs_as_many_training_images_as_clusters(tmp_path):
    """K-means with more clusters than training images is a clear error before training (rules out: a crash inside
    K-means or an empty cluster trained on)."""
    rc, _, err = train(tmp_path, "rmgmn", "--train-size", 3, "--val-size", 2, "--batch-size", 2)
    assert rc == 2 and "at least num_models = 4 training images" in err


# ------------------------------------------------------------------------------------------------ real formats


def _is_crop(sample, size):
    assert sample["image"].shape == (3, size, size)
    kp = sample["keypoints2d"].double()
    side = float((kp.max(0).values - kp.min(0).values).max())
    assert side == pytest.approx(size / 2.2, rel=1e-4)  # the thesis' 2.2x box, at the input size


def test_real_formats_are_cropped_and_split(tmp_path):
    """Every real format yields 2.2x crops at the input size through make_datasets, and the carved validation
    splits are disjoint from training by the format's unit (rules out: uncropped images, FreiHAND versions of one
    annotation in both train and val, HUMBI subjects shared between splits, MHP without its protocol)."""
    from test_data_formats import write_dexycb, write_freihand, write_humbi, write_panoptic_hand_labels
    from test_data_mhp import write_mhp

    size = 32
    write_panoptic_hand_labels(tmp_path / "panoptic")
    train, val, test = make_datasets("panoptic", tmp_path / "panoptic", size)
    assert (len(train), len(val), len(test)) == (1, 1, 1)
    assert set(train.dataset.indices).isdisjoint(val.dataset.indices)
    for ds in (train, val, test):
        _is_crop(ds[0], size)

    (tmp_path / "freihand").mkdir()
    write_freihand(tmp_path / "freihand", n=2, versions=2)
    train, val, test = make_datasets("freihand", tmp_path / "freihand", size)
    assert (len(train), len(val), len(test)) == (2, 2, 2)
    annotations = [{d.dataset.dataset.annotation_index(i) for i in d.dataset.indices} for d in (train, val)]
    assert len(annotations[0]) == len(annotations[1]) == 1 and annotations[0].isdisjoint(annotations[1])
    for ds in (train, val, test):
        _is_crop(ds[0], size)

    for subject in (1, 2, 3):
        write_humbi(tmp_path / "humbi", subject=subject)
    splits = make_datasets("humbi", tmp_path / "humbi", size)
    subjects = [{ds[i]["subject"] for i in range(len(ds))} for ds in splits]
    assert all(len(s) == 1 for s in subjects) and len(set.union(*subjects)) == 3
    _is_crop(splits[0][0], size)

    write_dexycb(tmp_path / "dexycb")
    train = make_split("dexycb", tmp_path / "dexycb", size, "train", dexycb_setup="s1")
    test = make_split("dexycb", tmp_path / "dexycb", size, "test", dexycb_setup="s1")
    assert (len(train), len(test)) == (3, 4)  # subject 0's unannotated frame left out
    assert {train[i]["subject"] for i in range(3)} == {0} and {test[i]["subject"] for i in range(4)} == {7}
    _is_crop(train[0], size)
    with pytest.raises(FileNotFoundError, match="none of the subject folders"):
        make_split("dexycb", tmp_path / "dexycb", size, "val", dexycb_setup="s1")

    write_mhp(tmp_path / "mhp")
    splits = make_datasets("mhp", tmp_path / "mhp", size)
    entries = [set(ds._entries) for ds in splits]
    assert sum(map(len, entries)) == 12 and len(set.union(*entries)) == 12
    assert all(ds.protocol == "ch5" for ds in splits)
    _is_crop(splits[0][0], size)
    assert len(make_split("mhp", tmp_path / "mhp", size, "train", size=2)) == 2


def test_train_and_evaluate_on_a_real_format(tmp_path):
    """The CLI trains and evaluates on a real format's folder (the HUMBI fixture, split by subject) end to end
    (rules out: the real-format path only working in make_datasets, not through --data/--root)."""
    from test_data_formats import write_humbi

    for subject in (1, 2, 3):
        write_humbi(tmp_path / "humbi", subject=subject)
    rc, out, err = run_cli("train", "--model", "cpm", "--config", write_config(tmp_path, "cpm"), "--data", "humbi",
                           "--root", tmp_path / "humbi", "--out", tmp_path / "run", "--batch-size", 2, "--max-steps", 1,
                           "--no-progress")
    assert rc == 0, err
    assert "3 training / 3 validation images at 64x64" in out
    rc, out, err = run_cli("evaluate", "--checkpoint", tmp_path / "run", "--data", "humbi", "--root", tmp_path / "humbi")
    assert rc == 0, err
    report = json.loads((tmp_path / "run" / "eval_humbi_test.json").read_text())
    assert report["results"][0]["num_images"] == 3


def test_lr_scale_scales_every_stage_and_is_part_of_the_recipe(tmp_path):
    """--lr-scale multiplies every stage's learning rate (recorded in config.json), and a resume with
    another scale is refused as another recipe (rules out a scale applied to the first stage only, or one
    a resume could silently change)."""
    rc, _, err = train(tmp_path, "agmn", "--train-size", 8, "--val-size", 4, "--max-steps", 1, "--lr-scale", 10)
    assert rc == 0, err
    recipe = json.loads((tmp_path / "run" / "config.json").read_text())["recipe"]
    lrs = [stage["lr"] for stage in recipe]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4])  # AGMN: 1e-4, 1e-4, 1e-5 in the thesis
    rc, _, err = train(tmp_path, "agmn", "--train-size", 8, "--val-size", 4, "--max-steps", 2, "--resume")
    assert rc == 2 and "another recipe" in err


def test_total_epochs_shares_the_budget_in_the_thesis_proportions(tmp_path):
    """--total-epochs T gives the recipe exactly T epochs, at least one per stage, in the thesis' proportions
    (AGMN 100/100/40 -> 4/4/2 of 10; R-MGMN 6/100/100/40/150 -> 1/2/2/2/3). Rules out rounding each stage on
    its own (AGMN 10 -> 4/4/2 but R-MGMN 10 -> 1/3/3/1/4 = 12), a stage left at 0 epochs, and the option
    combined silently with --epochs-scale."""
    from handops_models.train.recipes import with_total_epochs

    def epochs(model, total):
        return [s.epochs for s in with_total_epochs(recipe_for(model), total)]

    assert epochs("agmn", 10) == [4, 4, 2]
    assert epochs("rmgmn", 10) == [1, 2, 2, 2, 3]
    assert epochs("rmgmn", 5) == [1, 1, 1, 1, 1]
    assert epochs("cpm", 7) == [7] and epochs("rsiapose", 7) == [1, 6]
    for model in ("agmn", "rmgmn", "siapose", "rsiapose"):
        for total in range(len(recipe_for(model)), 40):
            counts = epochs(model, total)
            assert sum(counts) == total and min(counts) >= 1
    with pytest.raises(ValueError, match="at least one epoch"):
        with_total_epochs(recipe_for("rmgmn"), 4)
    rc, _, err = train(tmp_path, "agmn", "--train-size", 8, "--val-size", 4, "--max-steps", 1, "--total-epochs", 5)
    assert rc == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [s["epochs"] for s in config["recipe"]] == [2, 2, 1] and config["settings"]["total_epochs"] == 5
    (tmp_path / "x").mkdir()
    rc, _, err = train(tmp_path / "x", "agmn", "--total-epochs", 5, "--epochs-scale", 0.5)
    assert rc == 2 and "pass one of them" in err
    rc, _, err = train(tmp_path / "x", "rmgmn", "--total-epochs", 3)
    assert rc == 2 and "--total-epochs 3 for rmgmn" in err


def test_runs_and_checkpoints_from_before_the_chapter_6_fields_still_resume_and_load(tmp_path):
    """A run folder written before the recipe's per-stage batch_size / selection, the data's num_subjects and
    HourglassConfig.heatmap_loss existed still resumes, and such a config still rebuilds (with the values that
    reproduce it: the run's batch size, the network's own selection, 50 subjects, the MSE loss). Rules out
    refusing every older run as "another recipe" and filling a missing field other than those."""
    from handops_models.nets.configs import HourglassConfig, config_from_dict

    rc, _, err = train(tmp_path, "hourglass", "--train-size", 8, "--val-size", 4, "--max-steps", 1)
    assert rc == 0, err
    path = tmp_path / "run" / "config.json"
    stored = json.loads(path.read_text())
    for stage in stored["recipe"]:
        del stage["batch_size"], stage["selection"]
    del stored["data"]["num_subjects"], stored["config"]["heatmap_loss"]
    path.write_text(json.dumps(stored))
    rc, _, err = train(tmp_path, "hourglass", "--train-size", 8, "--val-size", 4, "--max-steps", 2, "--resume")
    assert rc == 0, err
    assert config_from_dict(stored["config"]).heatmap_loss == "mse"
    old = dict(stored["config"])
    del old["sigma"]
    with pytest.raises(ValueError, match="missing fields"):
        config_from_dict(old)
    assert isinstance(config_from_dict(stored["config"]), HourglassConfig)
