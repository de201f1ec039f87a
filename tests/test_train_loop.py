"""The training loop's data path and frozen parts (handops_models.train.loop)."""

from __future__ import annotations

import dataclasses

import torch

from handops_models.data.synthetic import SyntheticHands
from handops_models.nets import build_model
from handops_models.nets.configs import CPMConfig, ResNetConfig, RotationConfig
from handops_models.train import Settings, recipe_for, run_recipe
from handops_models.train.recipes import Stage

SMALL_CPM = CPMConfig(input_size=64, width=0.0625, num_stages=2, feature_channels=64, stage1_channels=64, stage_channels=32)


def _data(n):
    base = SyntheticHands(n, image_size=64, split="train", progress=False)
    return [base[i] for i in range(n)]


def _train(workers: int, tmp_path, train, val):
    torch.manual_seed(0)
    model = build_model("cpm", SMALL_CPM)
    recipe = [dataclasses.replace(recipe_for("cpm")[0], epochs=1)]
    run_recipe(model, recipe, train, val, tmp_path / f"w{workers}", Settings(batch_size=4, workers=workers, progress=False,
                                                                           checkpoint_every=0), log=lambda *_: None)
    return model.state_dict()


def test_dataloader_workers_train_the_same_parameters(tmp_path):
    """With DataLoader workers reading ahead, the batches and their order are those of the in-process
    path: the parameters after an epoch are identical (rules out a worker path that shuffles again, or
    drops or repeats batches)."""
    train, val = _data(12), _data(4)
    one = _train(0, tmp_path, train, val)
    two = _train(2, tmp_path, train, val)
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


def test_frozen_batchnorm_statistics_do_not_move(tmp_path):
    """R-MGMN's pool stage trains only the kernels: the rotation net's BatchNorm running statistics stay
    where its own stage left them (a frozen module left in train mode would keep updating them)."""
    torch.manual_seed(0)
    small = ResNetConfig(18, 0.0625)
    model = build_model("rmgmn", "tiny", cpm=SMALL_CPM, rotation=RotationConfig(small, hidden=8), classifier=small,
                        kernel_size=7, num_models=2)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    pool = Stage("pool", ("kernels",), (("gm", 1.0),), 1e-3, 1)
    run_recipe(model, [pool], _data(8), _data(4), tmp_path, Settings(batch_size=4, progress=False, checkpoint_every=0),
               log=lambda *_: None)
    after = {k: v for k, v in model.state_dict().items() if "running_mean" in k}
    assert before and all(torch.equal(before[k], after[k]) for k in before)
