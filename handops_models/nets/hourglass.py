"""Stacked Hourglass network: the SHG baseline and SiaPose estimator (thesis 2.2.2, 5.4; Newell et al. 2016).

    x = Stem(image)                                     [B, C, S/4, S/4]
        7x7 conv stride 2 -> 64, BN, ReLU, Residual(64 -> 128), max-pool 2, Residual(128), Residual(128 -> C)
    stack t = 1..T:
        f   = Head_t(Hourglass_t(x))                    Residual(C), 1x1 conv + BN + ReLU
        S^t = conv1x1(f)                                [B, K, S/4, S/4]
        x   = x + conv1x1(f) + conv1x1(S^t)             (the merges, between stacks only)
    loss (Eq. 5.4's L_1):  L_unary = sum_t sum_k ||S_k^t - S_k^*||_F^2   (averaged over the batch)

An hourglass of depth n on C channels (recursive):

    Hourglass_n(x) = Residual(x) + upsample2(Residual(Inner_n(Residual(maxpool2(x)))))
    Inner_n = Hourglass_{n-1} for n > 1, a Residual at the bottom (n = 1)

Residual is the pre-activation bottleneck BN-ReLU-1x1 (C/2), BN-ReLU-3x3, BN-ReLU-1x1 (C), plus the input
(through a 1x1 convolution when the channel count changes). One residual module at every position (Newell's
``nModules = 1``). Every convolution has a bias, as in Newell's Torch code and princeton-vl's PyTorch port,
so the parameter count matches theirs (the biases of convolutions followed by BN are redundant but harmless).
The paper config (8 stacks, 256 channels, depth 4, 21 keypoints) has 25,453,352 parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from handops_models.nets.base import HandPoseNet, squared_error
from handops_models.nets.configs import HourglassConfig

__all__ = ["Residual", "Hourglass", "HourglassStem", "StackedHourglass"]

STEM_STRIDE = 4  # 7x7 conv stride 2, then a 2x2 max-pool


class Residual(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1 to out/2, BN-ReLU-3x3, BN-ReLU-1x1 to out, plus the skip
    (identity, or a 1x1 convolution when ``in_channels != out_channels``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        if out_channels < 2 or out_channels % 2:
            raise ValueError(f"a residual module needs an even channel count >= 2 (it halves it), got {out_channels}")
        mid = out_channels // 2
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, out_channels, 1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.skip(x)


class Hourglass(nn.Module):
    """One hourglass of ``depth`` levels on ``channels`` features; the output has the input's size, which
    must be divisible by ``2 ** depth``."""

    def __init__(self, depth: int, channels: int):
        super().__init__()
        if depth < 1:
            raise ValueError(f"an hourglass needs depth >= 1, got {depth}")
        self.depth = depth
        self.skip = Residual(channels, channels)        # upper branch, at this resolution
        self.down = Residual(channels, channels)        # after the max-pool
        self.inner = Hourglass(depth - 1, channels) if depth > 1 else Residual(channels, channels)
        self.up = Residual(channels, channels)          # before the nearest upsampling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lower = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.skip(x) + F.interpolate(lower, scale_factor=2, mode="nearest")


class HourglassStem(nn.Module):
    """Image [B, 3, S, S] -> features [B, channels, S/4, S/4]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn = nn.BatchNorm2d(64)
        self.res1 = Residual(64, 128)
        self.res2 = Residual(128, 128)
        self.res3 = Residual(128, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res1(F.relu(self.bn(self.conv(x))))
        return self.res3(self.res2(F.max_pool2d(x, 2)))


class StackedHourglass(HandPoseNet):
    """Stacked Hourglass (``HourglassConfig``). Outputs: "stages" [B, T, K, h, w] (one per stack, T =
    ``num_stacks``, h = w = input_size / 4) and "heatmaps" = the last stack's maps."""

    name = "Stacked Hourglass"

    def __init__(self, config: HourglassConfig | None = None):
        config = config or HourglassConfig()
        multiple = STEM_STRIDE * 2 ** config.depth
        if config.num_stacks < 1:
            raise ValueError(f"{self.name}: needs at least one stack, got num_stacks={config.num_stacks}")
        if config.input_size < multiple or config.input_size % multiple:
            raise ValueError(f"{self.name}: input_size must be a multiple of 4 * 2**depth = {multiple} (stride-4 "
                             f"stem, then {config.depth} halvings in each hourglass), got {config.input_size}")
        super().__init__(config, config.input_size, config.input_size // STEM_STRIDE, config.num_keypoints, config.sigma)
        channels, keypoints, stacks = config.channels, config.num_keypoints, config.num_stacks
        self.stem = HourglassStem(channels)
        self.hourglasses = nn.ModuleList(Hourglass(config.depth, channels) for _ in range(stacks))
        self.heads = nn.ModuleList(
            nn.Sequential(Residual(channels, channels), nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels),
                          nn.ReLU(inplace=True))
            for _ in range(stacks))
        self.predictors = nn.ModuleList(nn.Conv2d(channels, keypoints, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(stacks - 1))
        self.merge_preds = nn.ModuleList(nn.Conv2d(keypoints, channels, 1) for _ in range(stacks - 1))

    def stage_maps(self, normalised: torch.Tensor) -> torch.Tensor:
        """[B, T, K, h, w] from ImageNet-normalised images (what SiaPose's estimator call needs)."""
        x = self.stem(normalised)
        stages = []
        for t, (hourglass, head, predictor) in enumerate(zip(self.hourglasses, self.heads, self.predictors)):
            features = head(hourglass(x))
            preds = predictor(features)
            stages.append(preds)
            if t < len(self.merge_features):
                x = x + self.merge_features[t](features) + self.merge_preds[t](preds)
        return torch.stack(stages, 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        stages = self.stage_maps(self.check_images(images))
        return {"stages": stages, "heatmaps": stages[:, -1]}

    def loss(self, outputs: dict, targets: dict, weights: dict[str, float] | None = None):
        """Intermediate supervision, one term "unary" (as the CPM's): Eq. 5.4's L_1 ``sum_t sum_k ||S_k^t -
        S_k^*||_F^2`` averaged over the batch, or with ``config.heatmap_loss == "bce"`` chapter 6's detector loss
        ``BCE(sigmoid(S^t), S^*)``, the mean over stages, keypoints and map pixels (the maps are logits)."""
        self._check_batch(outputs, targets)
        target = self.heatmap_targets(targets)[:, None].expand_as(outputs["stages"])
        if self.config.heatmap_loss == "bce":
            unary = F.binary_cross_entropy_with_logits(outputs["stages"], target)
        else:
            unary = squared_error(outputs["stages"], target)
        terms = {"unary": unary}
        return self._total(terms, weights, {"unary": 1.0}), terms

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`HandPoseNet.predict`; with the BCE loss the confidence is the sigmoid of the peak logit (in [0, 1])."""
        out = super().predict(images)
        if self.config.heatmap_loss == "bce":
            out["confidence"] = torch.sigmoid(out["confidence"])
        return out
