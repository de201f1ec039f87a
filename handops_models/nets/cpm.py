"""Convolutional Pose Machine: the unary branch of AGMN and R-MGMN and a SiaPose estimator (thesis 2.2.1,
3.3.3, 4.3.2), in the variant of the author's AGMN code.

    features = VGGFront(image)                       [B, F, S/8, S/8]  (VGG-19 to conv4_4 + three 3x3)
    stage 1:  S^1 = conv3x3(relu(conv3x3(features)))
    stage t:  S^t = Stage_t(cat(features, S^{t-1}))  five "three 3x3" blocks, 1x1, 1x1
    loss (Eq. 4.12-4.13 / 3.25):  L_unary = sum_t sum_k ||S_k^t - S_k^*||_F^2   (averaged over the batch)

The "three 3x3" block replaces a 7x7 convolution: three 3x3 convolutions chained without activations
between them, their three outputs concatenated and fused by a 1x1 (the thesis' [9], the author's code).
No BatchNorm anywhere, as in the author's code.
"""

from __future__ import annotations

import torch
from torch import nn

from handops_models.nets.backbones import VGGFront, scaled_channels
from handops_models.nets.base import HandPoseNet, squared_error
from handops_models.nets.configs import CPMConfig

__all__ = ["ThreeConvBlock", "CPMStages", "CPM"]


class ThreeConvBlock(nn.Module):
    """Three chained 3x3 convolutions (no activation between), outputs concatenated, fused by a 1x1."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.fuse = nn.Conv2d(3 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        return self.fuse(torch.cat([x1, x2, x3], 1))


def _refinement_stage(in_channels: int, channels: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(5):
        layers += [ThreeConvBlock(in_channels if i == 0 else channels, channels), nn.ReLU(inplace=True)]
    layers += [nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True), nn.Conv2d(channels, out_channels, 1)]
    return nn.Sequential(*layers)


class CPMStages(nn.Module):
    """The T prediction stages on top of the features: [B, F, h, w] -> [B, T, C, h, w].

    ``side_channels`` > 0 adds one more input to stages 2..T (AGMN's pairwise branch takes the unary
    branch's previous stage there): stage t sees cat(features, own S^{t-1}, side[t-2]).
    """

    def __init__(self, feature_channels: int, out_channels: int, num_stages: int, stage1_channels: int,
                 stage_channels: int, side_channels: int = 0):
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"a CPM needs at least one stage, got num_stages={num_stages}")
        self.side_channels = side_channels
        self.stage1 = nn.Sequential(nn.Conv2d(feature_channels, stage1_channels, 3, padding=1), nn.ReLU(inplace=True),
                                    nn.Conv2d(stage1_channels, out_channels, 3, padding=1))
        self.refinements = nn.ModuleList(
            _refinement_stage(feature_channels + out_channels + side_channels, stage_channels, out_channels)
            for _ in range(num_stages - 1))

    def forward(self, features: torch.Tensor, side: list[torch.Tensor] | None = None) -> torch.Tensor:
        if (side is not None) != (self.side_channels > 0):
            raise ValueError("side inputs are given exactly when the stages were built with side_channels > 0")
        stages = [self.stage1(features)]
        for t, stage in enumerate(self.refinements):
            inputs = [features, stages[-1]] + ([side[t]] if side is not None else [])
            stages.append(stage(torch.cat(inputs, 1)))
        return torch.stack(stages, 1)


class CPM(HandPoseNet):
    """6-stage CPM (``CPMConfig``). Outputs: "stages" [B, T, K, h, w] and "heatmaps" = the last stage."""

    name = "CPM"

    def __init__(self, config: CPMConfig | None = None):
        config = config or CPMConfig()
        super().__init__(config, config.input_size, config.input_size // 8, config.num_keypoints, config.sigma)
        width = config.width
        self.backbone = VGGFront(width=width, out_channels=scaled_channels(config.feature_channels, width))
        self.stages = CPMStages(self.backbone.out_channels, config.num_keypoints, config.num_stages,
                                scaled_channels(config.stage1_channels, width), scaled_channels(config.stage_channels, width))

    def features(self, normalised: torch.Tensor) -> torch.Tensor:
        return self.backbone(normalised)

    def stage_maps(self, normalised: torch.Tensor) -> torch.Tensor:
        """[B, T, K, h, w] from ImageNet-normalised images (what SiaPose's estimator call needs)."""
        return self.stages(self.features(normalised))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        stages = self.stage_maps(self.check_images(images))
        return {"stages": stages, "heatmaps": stages[:, -1]}

    def loss(self, outputs: dict, targets: dict, weights: dict[str, float] | None = None):
        """Eq. 4.13: ``L_unary = sum_t sum_k ||S_k^t - S_k^*||_F^2`` (one term, "unary")."""
        self._check_batch(outputs, targets)
        target = self.heatmap_targets(targets)
        terms = {"unary": squared_error(outputs["stages"], target[:, None])}
        return self._total(terms, weights, {"unary": 1.0}), terms
