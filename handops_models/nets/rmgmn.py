"""Rotation-invariant Mixture of Graphical Models Network (thesis chapter 3).

    alpha = RotationNet(I)                                   degrees, Eq. 3.1
    I_rt = rotate(I, alpha)                                  the hand upright, Eq. 3.2
    U^1..U^T = CPM(I_rt)                                     unary branch
    w = softmax(classifier(I_rt))                            soft classifier, [B, L]
    S = sum_l w_l p_l = tree_marginals(phi, theta, w)        pool of L tree models, Eq. 3.10, one op call
        phi = norm(clamp(U^T)), theta_l = norm(clamp(Theta_l)) with Theta [L, 40, k, k] learnable
    S^F = rotate(S, -alpha)                                  inverse rotation, Eq. 3.12

Loss terms (``loss`` returns them all; ``weights``, default the config's ``loss_weights``, picks the
stage's equation):
    "rotation"   (alpha - alpha^*)^2                                        Eq. 3.24 (degrees, wrapped to +-180)
    "unary"      sum_t sum_k ||rotate(U_k^t, -alpha) - S_k^*||_F^2           Eq. 3.25
    "gm"         sum_k ||S^F_k - S~_k^*||_F^2, S~^* normalised targets       Eq. 3.26 = 3.27
    "classifier" cross entropy with targets["cluster"] (only when given)    Sec. 3.4.3
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import handops
from handops_models.nets.backbones import ResNet
from handops_models.nets.base import HandPoseNet, squared_error
from handops_models.nets.configs import RMGMNConfig
from handops_models.nets.cpm import CPM
from handops_models.nets.rotation import RotationNet, rotate, rotation_loss
from handops_models.nets.structured import normalised_potentials, tree_marginals

__all__ = ["RMGMN"]


class RMGMN(HandPoseNet):
    """R-MGMN (``RMGMNConfig``). Outputs: "angle" [B], "logits" and "weights" [B, L], "unary_stages"
    [B, T, 21, h, w] (rotated back), "marginals" = "heatmaps" [B, 21, h, w] (rotated back)."""

    name = "R-MGMN"

    def __init__(self, config: RMGMNConfig | None = None):
        config = config or RMGMNConfig()
        cpm = config.cpm
        super().__init__(config, cpm.input_size, cpm.input_size // 8, cpm.num_keypoints, cpm.sigma)
        self.tree = handops.hand_tree()
        self.rotation_net = RotationNet(config.rotation)
        self.unary_branch = CPM(cpm)
        self.classifier = ResNet(config.classifier.depth, num_classes=config.num_models, width=config.classifier.width)
        k = config.kernel_size
        # Uniform kernels (every offset equally likely) with a little noise so that the L models can
        # differ once trained; the training recipe may initialise them from the data instead.
        self.kernels = nn.Parameter(torch.ones(config.num_models, self.tree.num_messages, k, k) / (k * k)
                                    * (1 + 0.01 * torch.rand(config.num_models, self.tree.num_messages, k, k)))
        self.structured_impl = "handops"

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.check_images(images)
        angle = self.rotation_net(x)
        upright = rotate(x, angle)
        stages_upright = self.unary_branch.stage_maps(upright)
        logits = self.classifier(upright)
        weights = torch.softmax(logits, -1)
        unary = normalised_potentials(stages_upright[:, -1], self.config.unary_floor)
        kernels = normalised_potentials(self.kernels, self.config.kernel_floor)
        marginals_upright = tree_marginals(unary, kernels, weights, impl=self.structured_impl)
        batch, stages, keypoints, h, w = stages_upright.shape
        back = -angle
        unary_stages = rotate(stages_upright.reshape(batch, stages * keypoints, h, w), back).view(batch, stages, keypoints, h, w)
        marginals = rotate(marginals_upright, back)
        return {"angle": angle, "logits": logits, "weights": weights, "unary_stages": unary_stages,
                "marginals_upright": marginals_upright, "marginals": marginals, "heatmaps": marginals}

    def loss(self, outputs: dict, targets: dict, weights: dict[str, float] | None = None):
        """The terms of Eq. 3.24-3.27 (module docstring); total = sum of ``weights[name] * term``."""
        self._check_batch(outputs, targets)
        keypoints, _ = self._keypoints(targets)
        terms = {
            "rotation": rotation_loss(outputs["angle"], keypoints),
            "unary": squared_error(outputs["unary_stages"], self.heatmap_targets(targets)[:, None]),
            "gm": squared_error(outputs["marginals"], self.heatmap_targets(targets, normalize=True)),
        }
        if "cluster" in targets:
            clusters = torch.as_tensor(targets["cluster"], device=outputs["logits"].device)
            if clusters.is_floating_point() or clusters.is_complex() or clusters.shape != outputs["logits"].shape[:1]:
                raise ValueError(f"targets['cluster'] must be integer [B] cluster labels, got {clusters.dtype} {list(clusters.shape)}")
            if len(clusters) and not (0 <= int(clusters.min()) and int(clusters.max()) < self.config.num_models):
                raise ValueError(f"targets['cluster'] labels must lie in [0, {self.config.num_models}), got "
                                 f"[{int(clusters.min())}, {int(clusters.max())}]")
            terms["classifier"] = F.cross_entropy(outputs["logits"], clusters.long())
        return self._total(terms, weights, dict(self.config.loss_weights)), terms
