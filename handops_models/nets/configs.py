"""Network configurations as plain data: one frozen dataclass per network, ``paper`` and ``tiny`` presets.

A config is everything needed to rebuild a network (a checkpoint records ``config_to_dict(config)`` and
:func:`config_from_dict` rebuilds it). ``paper`` is the thesis' sizes exactly; ``tiny`` is a CPU-sized
variant of every network (the README's "Networks" section lists both with their parameter counts).

The tiny sizes, and why:
- 128x128 input (paper: 368 for CPM-based networks, 256 for the Stacked Hourglass): the input area is
  8.3x smaller, and SyntheticHands crops render at any size.
- width 0.25 on every CNN (VGG front, CPM stages, ResNets): 1/16 of the multiply-adds per pixel.
- CPM: 3 stages (paper 6): the later stages of a CPM add little once its receptive field covers a
  16x16 map; stride 8 gives 16x16 maps (paper 46x46).
- Gaussian targets of sigma 2 map pixels (the thesis: 1): trained from scratch, a tiny CPM learns much
  faster from the wider targets. Measured (CPM, 4,000 SyntheticHands images per epoch, Adam 1e-3):
  validation PCK@0.2 after the first epoch 0.54 with sigma 1 against 0.65 with sigma 2, and 0.68 after
  two (sigma 1: 0.52). The Hourglass gets sigma 2 as well (8 input pixels on its stride-4 maps; unmeasured).
- Kernels scale with the map: the paper's maps are 46 and its kernels 45 (map - 1, odd); tiny maps are
  16 and kernels 15, so a kernel still spans every offset between two keypoints on the map.
- Hourglass: 2 stacks of 64 channels and depth 3 (paper 8 stacks, 256 channels, depth 4) at 128 input
  gives 32x32 maps; 4 levels would reduce the 32 map to 2x2.
- ResNets: depth 18 at width 0.25 for every ResNet (the paper's soft classifier is a ResNet-152, the
  rotation net and pointer network ResNet-18, chapter 6's mesh encoder a ResNet-50).
- Mesh estimators (chapter 6): 128x128 input (paper 224) and regressor MLPs of widths (256, 128)
  (paper (512, 256, 128), the author's code) on the ResNet-18's 128 features (paper 2048).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

__all__ = [
    "CPMConfig", "HourglassConfig", "ResNetConfig", "RotationConfig", "AGMNConfig", "RMGMNConfig", "SiaPoseConfig",
    "MeshConfig", "CONFIG_TYPES", "PRESETS", "preset", "config_to_dict", "config_from_dict",
]


def _require(config, condition: bool, field_name: str, expected: str) -> None:
    if not condition:
        raise ValueError(f"{type(config).__name__}.{field_name} must be {expected}, got {getattr(config, field_name)!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_ints(config, names: tuple[str, ...], low: int = 1) -> None:
    for name in names:
        _require(config, _is_int(getattr(config, name)) and getattr(config, name) >= low, name, f"an int >= {low}")


def _check_odd(config, name: str = "kernel_size") -> None:
    value = getattr(config, name)
    _require(config, _is_int(value) and value >= 1 and value % 2 == 1, name, "an odd int (kernels have a centre pixel)")


def _check_floors(config) -> None:
    for name in ("unary_floor", "kernel_floor"):
        _require(config, _is_number(getattr(config, name)) and getattr(config, name) > 0, name, "a positive number")


def _check_hand(config, inner) -> None:
    """The structured models are built on handops.hand_tree() / hand_graph(): 21 keypoints."""
    _require(config, inner.num_keypoints == 21, type(inner).__name__.replace("Config", "").lower(),
             "a config with num_keypoints=21 (the hand tree and graph have 21 nodes)")


@dataclass(frozen=True)
class ResNetConfig:
    """A torchvision-style ResNet: depth in {18, 34, 50, 101, 152}, width multiplies the base 64 channels."""

    depth: int = 18
    width: float = 1.0

    def __post_init__(self):
        _require(self, self.depth in (18, 34, 50, 101, 152), "depth", "one of 18, 34, 50, 101, 152")
        _require(self, _is_number(self.width) and self.width > 0, "width", "a positive number")


@dataclass(frozen=True)
class CPMConfig:
    """Convolutional Pose Machine (thesis 3.3.3 / 4.3.2, the author's variant).

    VGG-19 front to conv4_4 (channels x ``width``) plus three 3x3 convolutions to ``feature_channels``
    (stride 8); stage 1 is a 3x3 convolution to ``stage1_channels`` and one to K maps; stages 2..T take
    the features concatenated with the previous stage's maps through five "three 3x3" blocks of
    ``stage_channels``, a 1x1 and a 1x1 to K maps. ``sigma``: the Gaussian targets' standard deviation
    in map pixels. Channel counts are given at width 1 and multiplied by ``width``.
    """

    input_size: int = 368
    width: float = 1.0
    feature_channels: int = 128
    stage1_channels: int = 512
    stage_channels: int = 128
    num_stages: int = 6
    num_keypoints: int = 21
    sigma: float = 1.0

    def __post_init__(self):
        _check_ints(self, ("feature_channels", "stage1_channels", "stage_channels", "num_stages", "num_keypoints"))
        _require(self, _is_int(self.input_size) and self.input_size >= 8 and self.input_size % 8 == 0, "input_size",
                 "a multiple of 8 (the VGG front's stride)")
        _require(self, _is_number(self.width) and self.width > 0, "width", "a positive number")
        _require(self, _is_number(self.sigma) and self.sigma > 0, "sigma", "a positive number (map pixels)")


@dataclass(frozen=True)
class HourglassConfig:
    """Stacked Hourglass (thesis 2.2.2; Newell et al.): stride-4 stem, ``num_stacks`` hourglasses of
    ``depth`` levels and ``channels`` features, intermediate supervision, merges between stacks.
    ``heatmap_loss``: "mse" (chapter 5's sum of squares) or "bce" (chapter 6's 2-D detector: the maps are
    logits, trained with binary cross-entropy against the Gaussian targets)."""

    input_size: int = 256
    num_stacks: int = 8
    channels: int = 256
    depth: int = 4
    num_keypoints: int = 21
    sigma: float = 1.0
    heatmap_loss: str = "mse"

    def __post_init__(self):
        _require(self, self.heatmap_loss in ("mse", "bce"), "heatmap_loss", "'mse' or 'bce'")
        _check_ints(self, ("input_size", "num_stacks", "channels", "depth", "num_keypoints"))
        _require(self, _is_number(self.sigma) and self.sigma > 0, "sigma", "a positive number (map pixels)")


@dataclass(frozen=True)
class RotationConfig:
    """The rotation net of R-MGMN (Fig. 3.2): a ResNet (1000 outputs), then FC -> ReLU -> FC to one angle
    in degrees (Eq. 3.24 regresses "the rotation degree")."""

    backbone: ResNetConfig = field(default_factory=lambda: ResNetConfig(18))
    hidden: int = 256

    def __post_init__(self):
        _check_ints(self, ("hidden",))


@dataclass(frozen=True)
class AGMNConfig:
    """Adaptive Graphical Model Network (chapter 4): unary CPM, pairwise branch of the same structure
    giving 40 kernels of ``kernel_size``, ``handops.tree_marginals``; loss Eq. 4.16 with ``alphas``.

    ``unary_floor`` / ``kernel_floor``: the unary and the kernels are clamped to these floors and each map
    normalised to sum 1 before inference (the author's code: 1e-32 and 1e-16), so the graphical model
    never sees a negative or all-zero potential (Eq. 4.2 / 4.4 with a floor instead of max(0, .)).
    """

    cpm: CPMConfig = field(default_factory=CPMConfig)
    kernel_size: int = 45
    alphas: tuple[float, float, float] = (1.0, 0.1, 0.1)
    unary_floor: float = 1e-32
    kernel_floor: float = 1e-16

    def __post_init__(self):
        _check_odd(self)
        _check_hand(self, self.cpm)
        alphas = tuple(self.alphas) if isinstance(self.alphas, (list, tuple)) else ()
        _require(self, len(alphas) == 3 and all(_is_number(a) and a >= 0 for a in alphas), "alphas",
                 "three non-negative numbers (alpha1, alpha2, alpha3 of Eq. 4.16)")
        object.__setattr__(self, "alphas", tuple(float(a) for a in alphas))
        _check_floors(self)


@dataclass(frozen=True)
class RMGMNConfig:
    """Rotation-invariant Mixture of Graphical Models Network (chapter 3).

    ``loss_weights``: the default weights of the named loss terms ("rotation" Eq. 3.24, "unary" Eq. 3.25,
    "classifier" cross entropy of Sec. 3.4.3, "gm" Eq. 3.26); the default is the joint stage's Eq. 3.27.
    """

    cpm: CPMConfig = field(default_factory=CPMConfig)
    rotation: RotationConfig = field(default_factory=RotationConfig)
    classifier: ResNetConfig = field(default_factory=lambda: ResNetConfig(152))
    num_models: int = 20
    kernel_size: int = 45
    unary_floor: float = 1e-32
    kernel_floor: float = 1e-16
    loss_weights: tuple[tuple[str, float], ...] = (("gm", 1.0),)

    def __post_init__(self):
        _check_odd(self)
        _check_ints(self, ("num_models",))
        _check_hand(self, self.cpm)
        _check_floors(self)
        weights = self.loss_weights.items() if isinstance(self.loss_weights, dict) else self.loss_weights
        try:
            pairs = tuple((str(k), float(w)) for k, w in weights)
        except (TypeError, ValueError):
            pairs = ()
        _require(self, bool(pairs) and all(k in ("rotation", "unary", "gm", "classifier") for k, _ in pairs), "loss_weights",
                 "(name, weight) pairs or a dict over 'rotation', 'unary', 'gm', 'classifier'")
        object.__setattr__(self, "loss_weights", pairs)


@dataclass(frozen=True)
class SiaPoseConfig:
    """SiaPose (chapter 5): a preliminary estimator (``estimator`` "cpm" or "hourglass"), ``heads`` SIA-GCN
    heads of ``layers`` edge-aware layers (Eq. 5.2) on ``handops.hand_graph()`` with ``kernel_size``
    kernels, a pointer network (a ResNet + softmax over heads; none for one head) and the fusion of
    Eq. 5.3; loss Eq. 5.4 with ``alpha``. ``shared_weight``: the SharedWeight GCN ablation (one kernel
    per layer and head, shared by every edge). ``rotation``: R-SiaPose (the R-MGMN rotation net)."""

    estimator: str = "cpm"
    cpm: CPMConfig = field(default_factory=CPMConfig)
    hourglass: HourglassConfig = field(default_factory=HourglassConfig)
    heads: int = 10
    layers: int = 5
    kernel_size: int = 45
    shared_weight: bool = False
    pointer: ResNetConfig = field(default_factory=lambda: ResNetConfig(18))
    rotation: RotationConfig | None = None
    alpha: float = 1.0

    def __post_init__(self):
        _require(self, self.estimator in ("cpm", "hourglass"), "estimator", "'cpm' or 'hourglass'")
        _check_ints(self, ("heads", "layers"))
        _check_odd(self)
        _check_hand(self, self.cpm if self.estimator == "cpm" else self.hourglass)
        _require(self, _is_number(self.alpha) and self.alpha >= 0, "alpha", "a non-negative number (Eq. 5.4)")


@dataclass(frozen=True)
class MeshConfig:
    """The MANO mesh estimators of chapter 6 (``nets.mesh``).

    ``shape_source``: "input" is the identity-aware estimator (Sec. 6.3.2: the subject's shape, true or
    calibrated, is given), "regressed" the baseline (Sec. 6.3.3: an MLP regresses it from the features,
    Eq. 6.5; it also carries the one-layer confidence predictor of Sec. 6.3.4). ``backbone``: the ResNet
    encoder (the thesis: ResNet-50 at 224x224); ``iterations`` of the pose regressor (Eq. 6.2-6.3), each an
    MLP of ``hidden`` widths; ``shape_to_regressor``: the shape is also an input of every regressor MLP (the
    thesis' Fig. 6.1; the author's released code feeds it to MANO only). ``mano``: "synthetic:<seed>" (the
    procedural hand of ``handops.mano.synthetic``, what SyntheticHands renders) or a MANO file's path.
    """

    shape_source: str = "input"
    input_size: int = 224
    backbone: ResNetConfig = field(default_factory=lambda: ResNetConfig(50))
    iterations: int = 3
    hidden: tuple[int, ...] = (512, 256, 128)
    shape_to_regressor: bool = True
    num_betas: int = 10
    mano: str = "synthetic:0"

    def __post_init__(self):
        _require(self, self.shape_source in ("input", "regressed"), "shape_source", "'input' or 'regressed'")
        _check_ints(self, ("input_size", "iterations", "num_betas"))
        _require(self, self.input_size >= 32, "input_size", "at least 32 (a ResNet's stride)")
        hidden = tuple(self.hidden) if isinstance(self.hidden, (list, tuple)) else None
        _require(self, hidden is not None and all(_is_int(h) and h >= 1 for h in hidden), "hidden",
                 "a tuple of positive ints (the MLP's hidden widths)")
        object.__setattr__(self, "hidden", hidden)
        _require(self, isinstance(self.shape_to_regressor, bool), "shape_to_regressor", "True or False")
        _require(self, isinstance(self.mano, str) and bool(self.mano), "mano", "'synthetic:<seed>' or a MANO file path")


CONFIG_TYPES: dict[str, type] = {
    "cpm": CPMConfig, "hourglass": HourglassConfig, "agmn": AGMNConfig, "rmgmn": RMGMNConfig,
    "siapose": SiaPoseConfig, "sharedgcn": SiaPoseConfig, "rsiapose": SiaPoseConfig,
    "mesh-identity": MeshConfig, "mesh-baseline": MeshConfig, "detector2d": HourglassConfig,
}

_TINY_CPM = CPMConfig(input_size=128, width=0.25, num_stages=3, sigma=2.0)
_TINY_HOURGLASS = HourglassConfig(input_size=128, num_stacks=2, channels=64, depth=3, sigma=2.0)
_TINY_RESNET = ResNetConfig(18, 0.25)
_TINY_ROTATION = RotationConfig(_TINY_RESNET, hidden=64)

PRESETS: dict[str, dict[str, object]] = {
    "paper": {
        "cpm": CPMConfig(),
        "hourglass": HourglassConfig(),
        "agmn": AGMNConfig(),
        "rmgmn": RMGMNConfig(),
        "siapose": SiaPoseConfig(),
        "sharedgcn": SiaPoseConfig(shared_weight=True, heads=1),
        "rsiapose": SiaPoseConfig(rotation=RotationConfig()),
        "mesh-identity": MeshConfig(),
        "mesh-baseline": MeshConfig(shape_source="regressed"),
        "detector2d": HourglassConfig(heatmap_loss="bce"),
    },
    "tiny": {
        "cpm": _TINY_CPM,
        "hourglass": _TINY_HOURGLASS,
        "agmn": AGMNConfig(cpm=_TINY_CPM, kernel_size=15),
        "rmgmn": RMGMNConfig(cpm=_TINY_CPM, rotation=_TINY_ROTATION, classifier=_TINY_RESNET, kernel_size=15),
        "siapose": SiaPoseConfig(cpm=_TINY_CPM, hourglass=_TINY_HOURGLASS, kernel_size=15, pointer=_TINY_RESNET),
        "sharedgcn": SiaPoseConfig(cpm=_TINY_CPM, hourglass=_TINY_HOURGLASS, kernel_size=15, pointer=_TINY_RESNET,
                                   shared_weight=True, heads=1),
        "rsiapose": SiaPoseConfig(cpm=_TINY_CPM, hourglass=_TINY_HOURGLASS, kernel_size=15, pointer=_TINY_RESNET,
                                  rotation=_TINY_ROTATION),
        "mesh-identity": MeshConfig(input_size=128, backbone=_TINY_RESNET, hidden=(256, 128)),
        "mesh-baseline": MeshConfig(shape_source="regressed", input_size=128, backbone=_TINY_RESNET, hidden=(256, 128)),
        "detector2d": dataclasses.replace(_TINY_HOURGLASS, heatmap_loss="bce"),
    },
}


def preset(model: str, name: str = "tiny", **overrides):
    """The ``name`` preset ("paper" or "tiny") of ``model``, with top-level fields replaced by ``overrides``
    (``preset("siapose", "tiny", heads=5)``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown config preset {name!r}; expected one of {sorted(PRESETS)}")
    if model not in PRESETS[name]:
        raise ValueError(f"unknown model {model!r}; expected one of {sorted(PRESETS[name])}")
    config = PRESETS[name][model]
    try:
        return dataclasses.replace(config, **overrides)
    except TypeError as e:
        names = [f.name for f in dataclasses.fields(config)]
        raise ValueError(f"{type(config).__name__} has no field among {sorted(overrides)}; its fields are {names}") from e


def config_to_dict(config) -> dict:
    """Plain nested dict (str, int, float, bool, None, lists) of a config, with its type name."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a network config dataclass, got {type(config).__name__}")
    return {"type": type(config).__name__, **_plain(dataclasses.asdict(config))}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_TYPES_BY_NAME = {t.__name__: t for t in (CPMConfig, HourglassConfig, ResNetConfig, RotationConfig, AGMNConfig,
                                          RMGMNConfig, SiaPoseConfig, MeshConfig)}


def config_from_dict(data: dict):
    """Rebuild a config from :func:`config_to_dict`'s output; unknown types or fields are a ValueError."""
    if not isinstance(data, dict) or data.get("type") not in _TYPES_BY_NAME:
        got = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"not a network config: type {got!r}, expected one of {sorted(_TYPES_BY_NAME)}")
    return _build(_TYPES_BY_NAME[data["type"]], {k: v for k, v in data.items() if k != "type"})


# Fields added after checkpoints were first written, with the value that rebuilds what such a checkpoint held
# (a stored config without them is from before they existed); every other field must be stored.
ADDED_FIELDS: dict[str, dict[str, object]] = {"HourglassConfig": {"heatmap_loss": "mse"}}


def _build(cls, data: dict):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}; its fields are {sorted(names)}")
    data = {**ADDED_FIELDS.get(cls.__name__, {}), **data}
    missing = sorted(names - set(data))
    if missing:  # a default here could silently rebuild another network (a tiny model at paper size)
        raise ValueError(f"{cls.__name__} is missing fields {missing}: a stored config must hold every field")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{cls.__name__}.{key}")
    return cls(**kwargs)


def _coerce(hint, value, where: str):
    """JSON-like ``value`` -> the field's type: nested configs from mappings, tuples from lists."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"{where} may not be None")
    for option in options:
        if dataclasses.is_dataclass(option):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: expected a mapping for {option.__name__}, got {type(value).__name__}")
            return _build(option, value)
        if typing.get_origin(option) is tuple:  # alphas, hidden widths, and loss_weights (pairs)
            return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value
