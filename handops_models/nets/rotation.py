"""The rotation part of R-MGMN and R-SiaPose (thesis 3.3.2-3.3.3): a rotation net regressing the hand's
angle, a differentiable rotation of the image (Eq. 3.2) and the inverse rotation of the maps (Eq. 3.12).

Angles are degrees, the convention of ``handops_models.data.targets.rotation_target`` (the angle from
"up" to wrist -> middle MCP, clockwise on screen positive): ``rotate(images, alpha)`` turns the content
counter-clockwise by alpha about the centre, which makes such a hand upright, and ``rotate(maps, -alpha)``
turns maps computed on the upright image back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from handops_models.data.targets import rotation_target
from handops_models.nets.backbones import ResNet
from handops_models.nets.configs import RotationConfig

__all__ = ["rotate", "RotationNet", "rotation_loss"]


def rotate(maps: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate square maps [B, C, S, S] counter-clockwise on screen by ``degrees`` [B] about their centre,
    bilinearly, zeros outside; differentiable in both. A point p (pixels, y down) moves to
    ``c + R (p - c)``, ``R = [[cos, sin], [-sin, cos]]`` (``transforms.Rotate``'s convention)."""
    if maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"rotate needs square maps (a rotation of a non-square grid is not one in pixels), got {list(maps.shape)}")
    if maps.shape[0] == 0:  # affine_grid refuses an empty batch
        return maps.clone()
    t = degrees.to(maps.dtype) * (math.pi / 180)
    cos, sin = torch.cos(t), torch.sin(t)
    # affine_grid maps each output position to the input position it samples: R^T p'.
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(t)], -1),
                         torch.stack([sin, cos, torch.zeros_like(t)], -1)], -2)
    grid = F.affine_grid(theta, list(maps.shape), align_corners=False)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RotationNet(nn.Module):
    """ResNet (1000 outputs) -> FC -> ReLU -> FC: the hand's angle [B] in degrees (Fig. 3.2, Eq. 3.24)."""

    def __init__(self, config: RotationConfig | None = None):
        super().__init__()
        config = config or RotationConfig()
        self.backbone = ResNet(config.backbone.depth, num_classes=1000, width=config.backbone.width)
        self.head = nn.Sequential(nn.Linear(1000, config.hidden), nn.ReLU(inplace=True), nn.Linear(config.hidden, 1))

    def forward(self, normalised_images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(normalised_images))[:, 0]


def rotation_loss(angle: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """Eq. 3.24, ``mean (alpha - alpha^*)^2`` in degrees, with the difference wrapped to [-180, 180): the
    thesis writes the plain difference, but with hands in any orientation (SyntheticHands) a prediction of
    179 for a target of -179 is 2 degrees off, not 358."""
    difference = angle - rotation_target(keypoints.to(angle))
    return torch.remainder(difference + 180.0, 360.0).sub(180.0).pow(2).mean()
