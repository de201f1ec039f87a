"""The thesis' 2-D hand pose networks on handops ops, their configs and a registry.

    model = build_model("agmn", "tiny")                 # or "paper", or a config dataclass
    outputs = model(images)                             # images [B, 3, S, S] in [0, 1]
    total, terms = model.loss(outputs, batch)           # batch holds "keypoints2d" [B, 21, 2]
    keypoints = model.predict(images)["keypoints2d"]    # [B, 21, 2] input pixels

``model_state(model)`` is the part of a checkpoint that rebuilds the model (its registry name, its config
as plain data and its weights); ``model_from_state`` rebuilds it and refuses a state of another model or
config with an error naming both.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from handops_models.nets.agmn import AGMN
from handops_models.nets.backbones import ResNet, VGGFront, load_pretrained
from handops_models.nets.base import HandPoseNet
from handops_models.nets.configs import CONFIG_TYPES, PRESETS, config_from_dict, config_to_dict, preset
from handops_models.nets.cpm import CPM
from handops_models.nets.hourglass import StackedHourglass
from handops_models.nets.mesh import MeshNet
from handops_models.nets.rmgmn import RMGMN
from handops_models.nets.siapose import SiaPose

__all__ = [
    "MODELS", "build_model", "model_state", "model_from_state", "check_state", "count_parameters", "HandPoseNet", "CPM",
    "StackedHourglass", "AGMN", "RMGMN", "SiaPose", "MeshNet", "VGGFront", "ResNet", "load_pretrained", "preset",
]

# registry name -> network class (SharedWeight GCN and R-SiaPose are SiaPose configs; the mesh baseline and the
# identity-aware mesh estimator are MeshNet configs; chapter 6's 2-D detector a
# StackedHourglass config)
MODELS: dict[str, type[nn.Module]] = {
    "cpm": CPM, "hourglass": StackedHourglass, "agmn": AGMN, "rmgmn": RMGMN,
    "siapose": SiaPose, "sharedgcn": SiaPose, "rsiapose": SiaPose,
    "mesh-identity": MeshNet, "mesh-baseline": MeshNet, "detector2d": StackedHourglass,
}


def build_model(name: str, config="tiny", **overrides) -> HandPoseNet:
    """The network ``name`` (a key of ``MODELS``) with ``config``: a preset name ("tiny", "paper") with
    optional top-level ``overrides`` (``build_model("siapose", "tiny", heads=5)``), or a config dataclass."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    if isinstance(config, str):
        config = preset(name, config, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    if not isinstance(config, CONFIG_TYPES[name]):
        raise TypeError(f"model {name!r} takes a {CONFIG_TYPES[name].__name__}, got {type(config).__name__}")
    model = MODELS[name](config)
    model.model_name = name
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_state(model: HandPoseNet) -> dict:
    """{"model": registry name, "config": plain dict, "state_dict": weights}: what rebuilds ``model``
    (only plain data and tensors, so ``torch.load(weights_only=True)`` reads it). A model wrapped by
    DistributedDataParallel, DataParallel or torch.compile is unwrapped first."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):  # DataParallel / DDP / torch.compile wrappers
        model = getattr(model, "_orig_mod", None) or model.module
    name = getattr(model, "model_name", None)
    if name not in MODELS:
        raise ValueError("model_state needs a model made by build_model (its registry name is unknown)")
    return {"model": name, "config": config_to_dict(model.config), "state_dict": model.state_dict()}


def check_state(state: dict, expect_model: str | None = None, expect_config=None) -> tuple[str, object]:
    """The registry name and config of a :func:`model_state` dict, after checking that it is one and, with
    ``expect_model`` / ``expect_config`` (a preset name or a config), that it is that network and config
    (otherwise a ValueError naming both)."""
    if not isinstance(state, dict) or not {"model", "config", "state_dict"} <= set(state):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"not a handops_models network state: expected keys model, config, state_dict; got {got}")
    name = state["model"]
    if name not in MODELS:
        raise ValueError(f"the state holds an unknown model {name!r}; expected one of {sorted(MODELS)}")
    if expect_model is not None and name != expect_model:
        raise ValueError(f"the state holds a {name!r} network, expected {expect_model!r}")
    config = config_from_dict(state["config"])
    if expect_config is not None:
        wanted = preset(name, expect_config) if isinstance(expect_config, str) else expect_config
        if wanted != config:
            diff = _config_diff(config_to_dict(config), config_to_dict(wanted))
            raise ValueError(f"the state's {name!r} config differs from the expected one: {diff}")
    return name, config


def model_from_state(state: dict, expect_model: str | None = None, expect_config=None) -> HandPoseNet:
    """Rebuild a network from :func:`model_state`'s dict, checked by :func:`check_state` first."""
    name, config = check_state(state, expect_model, expect_config)
    model = build_model(name, config)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as e:  # a state edited by hand, or saved by another version of the network
        raise ValueError(f"the state's weights do not fit a {name!r} network built from its own config: {e}") from e
    return model


def _config_diff(got: dict, want: dict, prefix: str = "") -> str:
    parts = []
    for key in sorted(set(got) | set(want)):
        a, b = got.get(key), want.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _config_diff(a, b, f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        elif a != b:
            parts.append(f"{prefix}{key}: {a!r} (state) vs {b!r} (expected)")
    return "; ".join(parts)
