"""Image backbones with torchvision-compatible state_dict keys, and a loader for ImageNet checkpoints.

torchvision is not importable in every environment this package runs in (its wheel pins a CUDA torch),
so the two backbones the thesis networks use are written here with the module names of torchvision's
code, which makes a torchvision ``.pth`` file load into them with ``load_pretrained``:

* ``VGGFront``: VGG-19 conv1_1..conv4_4 (keys ``features.0`` .. ``features.25``, output stride 8) and
  the three 3x3 convolutions conv5_1..conv5_3 of the CPM feature extractor (keys ``extra.0/2/4``).
* ``ResNet``: ResNet-18/34/50/101/152, torchvision's v1.5 (stride on the Bottleneck's 3x3 conv).

Nothing here downloads: the user fetches the checkpoint and passes its path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["VGGFront", "ResNet", "scaled_channels", "BasicBlock", "Bottleneck", "RESNET_LAYERS", "load_pretrained"]

# torchvision's vgg19 ("E") up to conv4_4; "M" is a 2x2 max-pool.
_VGG19_TO_CONV4_4 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512)


def _check_width(width) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width must be a positive finite number, got {width!r}")
    return float(width)


def scaled_channels(channels: int, width: float) -> int:
    # Python's round (ties to even), floored at one channel so that tiny widths still build.
    return max(1, int(round(channels * width)))


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class VGGFront(nn.Module):
    """VGG-19 conv1_1..conv4_4 plus conv5_1..conv5_3 of the CPM feature extractor (no BatchNorm).

    ``features`` is torchvision's ``vgg19().features[:27]`` (conv/ReLU/pool, ending with the ReLU after
    conv4_4; three 2x2 max-pools, so stride 8); ``extra`` is conv5_1 (512), conv5_2 (512) and conv5_3
    (``out_channels``), 3x3, padding 1, each followed by a ReLU.

    ``width`` multiplies every channel count of ``features`` and of conv5_1/conv5_2; each count is
    ``max(1, round(c * width))`` with Python's round (ties to even). ``out_channels`` is used as given.

    forward: x [B, 3, H, W] -> [B, out_channels, H // 8, W // 8] (floor at each pool), H, W >= 8.
    """

    stride = 8

    def __init__(self, width: float = 1.0, out_channels: int = 128):
        super().__init__()
        self.width = _check_width(width)
        self.out_channels = _check_positive_int(out_channels, "out_channels")
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_TO_CONV4_4:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                cout = scaled_channels(v, self.width)
                layers += [nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        c5 = scaled_channels(512, self.width)
        self.extra = nn.Sequential(
            nn.Conv2d(cin, c5, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c5, c5, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c5, self.out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        )
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> [B, out_channels, H // 8, W // 8]."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] < 8 or x.shape[3] < 8:
            raise ValueError(f"VGGFront expects x of shape [B, 3, H, W] with H, W >= 8, got {list(x.shape)}")
        return self.extra(self.features(x))


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 convs (stride on the first), identity or ``downsample`` skip."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, inplanes, H, W] -> [B, planes, H / stride, W / stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5): 1x1, 3x3 (carries the stride), 1x1 to ``planes * 4``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, inplanes, H, W] -> [B, 4 * planes, H / stride, W / stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block, blocks per stage), as torchvision's resnet18 .. resnet152.
RESNET_LAYERS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """torchvision-compatible ResNet-18/34/50/101/152 (v1.5 Bottleneck), same module and key names.

    ``width`` scales the base width 64: ``base = max(1, round(64 * width))`` (Python's round, ties to
    even), and the stages have ``base, 2 base, 4 base, 8 base`` planes (times 4 at a Bottleneck's
    output). ``num_features`` = ``8 * base * expansion`` (512 for 18/34, 2048 for 50+ at width 1).

    forward_features: x [B, 3, H, W] -> [B, num_features] (global average pool, before ``fc``).
    forward: x [B, 3, H, W] -> [B, num_classes].
    """

    def __init__(self, depth: int, num_classes: int = 1000, width: float = 1.0):
        super().__init__()
        if isinstance(depth, bool) or depth not in RESNET_LAYERS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth!r}")
        self.depth = depth
        self.width = _check_width(width)
        num_classes = _check_positive_int(num_classes, "num_classes")
        block, layers = RESNET_LAYERS[depth]
        base = scaled_channels(64, self.width)
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base, layers[0])
        self.layer2 = self._make_layer(block, 2 * base, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * base, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * base, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = 8 * base * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():  # torchvision's initialisation (fc keeps nn.Linear's default)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> pooled features [B, num_features]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet expects x of shape [B, 3, H, W], got {list(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> logits [B, num_classes]."""
        return self.fc(self.forward_features(x))


_LIST_LIMIT = 10


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_LIST_LIMIT]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}):\n" + "".join(f"    {s}\n" for s in shown).rstrip("\n") + more


def _read_state_dict(path) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {os.fspath(path)!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refusal (UnpicklingError), truncated zip (RuntimeError), EOF, ...
        raise ValueError(
            f"could not read checkpoint {os.fspath(path)!r} with torch.load(weights_only=True): "
            f"{type(e).__name__}: {e}".rstrip()
        ) from e
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):  # training scripts' {"state_dict": ..., "epoch": ...}
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} is not a state dict (a non-empty mapping of names to tensors, "
            f"or one under 'state_dict' / 'model'): got {type(obj).__name__}"
        )
    bad = [f"{k!r}: {type(v).__name__}" for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} is not a state dict: entries that are not name -> tensor\n"
            + _listing("entries", bad)
        )
    return dict(obj)


def _vgg_ignored(model: VGGFront, key: str) -> bool:
    """Keys of a full vgg19 checkpoint that the front does not have: classifier, features.27+."""
    if key.startswith("classifier."):
        return True
    head, _, rest = key.partition(".")
    index = rest.partition(".")[0]
    return head == "features" and index.isdigit() and int(index) >= len(model.features)


def load_pretrained(model: nn.Module, path, *, strict: bool = True, skip: Sequence[str] = ()) -> nn.Module:
    """Load an ImageNet checkpoint file (torchvision ``.pth``) into ``model``; returns ``model``.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)`` only (no code in
    it runs); it holds a state dict, or a dict holding one under ``"state_dict"`` or ``"model"``.

    * ``VGGFront``: a full vgg19 checkpoint's ``classifier.*`` and ``features.27+`` are ignored; when the
      checkpoint has no ``extra.*`` keys (ImageNet VGG-19) the ``extra`` convolutions (conv5_1..conv5_3)
      keep their initialisation, otherwise (a saved VGGFront) they are loaded too.
    * Any model: every key is loaded except those starting with a prefix in ``skip`` (e.g.
      ``skip=("fc.",)`` for a ResNet with another ``num_classes``), which keep their initialisation.
      ``num_batches_tracked`` buffers may be absent (torchvision's older checkpoints lack them).

    Errors (``FileNotFoundError`` / ``ValueError`` naming the file): missing file, unreadable or refused
    file, not a state dict, and any missing key, unexpected key or shape mismatch, all listed. With
    ``strict=False`` missing and unexpected keys are tolerated; shape mismatches are always errors.
    """
    if isinstance(skip, str):  # "fc." would otherwise skip every key starting with "f", "c" or "."
        raise TypeError(f"skip must be a sequence of key prefixes such as ('fc.',), got the string {skip!r}")
    skip = tuple(skip)
    state = _read_state_dict(path)
    target = model.state_dict()

    def skipped(key: str) -> bool:
        return key.startswith(skip) if skip else False

    if isinstance(model, VGGFront):
        state = {k: v for k, v in state.items() if not _vgg_ignored(model, k)}
        if not any(k.startswith("extra.") for k in state):
            target = {k: v for k, v in target.items() if not k.startswith("extra.")}
    state = {k: v for k, v in state.items() if not skipped(k)}
    target = {k: v for k, v in target.items() if not skipped(k)}

    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(target[k].shape)}"
        for k in target if k in state and state[k].shape != target[k].shape
    ]
    problems = shapes + ((missing + unexpected) if strict else [])
    if problems:
        parts = [f"checkpoint {os.fspath(path)!r} does not match {type(model).__name__}:"]
        if strict and missing:
            parts.append(_listing("missing keys", missing))
        if strict and unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if shapes:
            parts.append(_listing("shape mismatches", shapes))
        width = getattr(model, "width", 1.0)
        if shapes and width != 1.0:
            parts.append(
                f"  note: this model was built with width={width:g}; its channel counts differ from "
                f"ImageNet (width 1) weights, which only load into a width-1 model"
            )
        if strict and (missing or unexpected):
            parts.append("  (pass skip=(prefix, ...) to leave keys at their initialisation)")
        raise ValueError("\n".join(parts))
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    return model
