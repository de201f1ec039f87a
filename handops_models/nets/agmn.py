"""Adaptive Graphical Model Network (thesis chapter 4).

    unary branch (a CPM):      U^1..U^T = CPM(image)                         [B, T, 21, h, w]
    pairwise branch:           Q^1..Q^T, same structure with 40 outputs      [B, T, 40, kh, kw]
        its features are resized from h x w to kh x kw (46 -> 45 at paper size); its stage t takes
        cat(features, Q^{t-1}, U^{t-1} resized): the information flow of Fig. 4.2
    graphical model:           phi = norm(clamp(U^T, unary_floor)), theta = norm(clamp(Q^T, kernel_floor))
                               FS = handops.tree_marginals(phi, theta, hand_tree())      (Eq. 4.5)
    loss (Eq. 4.16):           alpha1 L_unary + alpha2 L_pairwise + alpha3 L_last
        L_unary    = sum_t sum_k ||U_k^t - S_k^*||_F^2           (Eq. 4.13)
        L_pairwise = sum_t sum_m ||Q_m^t - Q_m^*||_F^2           (Eq. 4.14, Q^* from pairwise_targets)
        L_last     = sum_k ||FS_k - FS_k^*||_F^2                 (Eq. 4.15, FS^* = S^* normalised)

Channel m of Q is ``handops.hand_tree().messages[m]``, the convention of ``tree_marginals`` and of
``handops_models.data.targets.pairwise_targets``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import handops
from handops_models.data.targets import pairwise_targets
from handops_models.nets.backbones import VGGFront, scaled_channels
from handops_models.nets.base import HandPoseNet, squared_error
from handops_models.nets.configs import AGMNConfig
from handops_models.nets.cpm import CPM, CPMStages
from handops_models.nets.structured import normalised_potentials, tree_marginals

__all__ = ["AGMN", "resize_maps"]


def resize_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of [B, C, h, w] maps to size x size (the identity when already that size)."""
    if maps.shape[-1] == size and maps.shape[-2] == size:
        return maps
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


class AGMN(HandPoseNet):
    """AGMN (``AGMNConfig``). Outputs: "unary_stages" [B, T, 21, h, w], "pairwise_stages" [B, T, 40, k, k],
    "unary" and "kernels" (the normalised potentials), "marginals" = "heatmaps" [B, 21, h, w]."""

    name = "AGMN"

    def __init__(self, config: AGMNConfig | None = None):
        config = config or AGMNConfig()
        cpm = config.cpm
        super().__init__(config, cpm.input_size, cpm.input_size // 8, cpm.num_keypoints, cpm.sigma)
        self.tree = handops.hand_tree()
        self.unary_branch = CPM(cpm)
        width = cpm.width
        self.pairwise_backbone = VGGFront(width=width, out_channels=scaled_channels(cpm.feature_channels, width))
        self.pairwise_stages = CPMStages(self.pairwise_backbone.out_channels, self.tree.num_messages, cpm.num_stages,
                                         scaled_channels(cpm.stage1_channels, width), scaled_channels(cpm.stage_channels, width),
                                         side_channels=cpm.num_keypoints)
        self.kernel_size = config.kernel_size
        self.structured_impl = "handops"

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.check_images(images)
        unary_stages = self.unary_branch.stage_maps(x)
        features = resize_maps(self.pairwise_backbone(x), self.kernel_size)
        side = [resize_maps(unary_stages[:, t], self.kernel_size) for t in range(unary_stages.shape[1] - 1)]
        pairwise_stages = self.pairwise_stages(features, side)
        unary = normalised_potentials(unary_stages[:, -1], self.config.unary_floor)
        kernels = normalised_potentials(pairwise_stages[:, -1], self.config.kernel_floor)
        marginals = tree_marginals(unary, kernels, impl=self.structured_impl)
        return {"unary_stages": unary_stages, "pairwise_stages": pairwise_stages, "unary": unary, "kernels": kernels,
                "marginals": marginals, "heatmaps": marginals}

    def pairwise_targets(self, targets) -> torch.Tensor:
        """Q^* [B, 40, k, k] (Eq. 4.14): Gaussians at each message's ground-truth offset."""
        keypoints, mask = self._keypoints(targets)
        parameter = next(self.parameters())
        return pairwise_targets(keypoints.to(parameter), self.tree, kernel_size=self.kernel_size, stride=self.stride,
                                sigma=self.sigma, visibility=mask.to(parameter.device))

    def loss(self, outputs: dict, targets: dict, weights: dict[str, float] | None = None):
        """Eq. 4.16; ``weights`` replaces the config's alphas ({"unary": a1, "pairwise": a2, "last": a3})."""
        self._check_batch(outputs, targets)
        unary_target = self.heatmap_targets(targets)
        terms = {
            "unary": squared_error(outputs["unary_stages"], unary_target[:, None]),
            "pairwise": squared_error(outputs["pairwise_stages"], self.pairwise_targets(targets)[:, None]),
            "last": squared_error(outputs["marginals"], self.heatmap_targets(targets, normalize=True)),
        }
        return self._total(terms, weights, dict(zip(("unary", "pairwise", "last"), self.config.alphas))), terms
