"""SiaPose (thesis chapter 5): a preliminary estimator, M heads of SIA-GCN, a pointer network, fusion.

    S^1..S^T = estimator(I)                         CPM or Stacked Hourglass, [B, T, 21, h, w]
    X^0 = S^T;  X^l = relu(edge_conv(X^{l-1}, F^l))  l = 1..5 per head, Eq. 5.2 on hand_graph() (61 edges
                                                     with self loops), no activation after the last layer
    w = softmax(pointer(I))                          [B, M] (ResNet; no pointer network for M = 1)
    Y_bar = sum_m w_m Y_m                            Eq. 5.3, the final maps
    loss (Eq. 5.4):  alpha L_1 + L_2,  L_1 = sum_t sum_k ||S_k^t - Y_k^*||_F^2,  L_2 = sum_k ||Y_bar_k - Y_k^*||_F^2

Layer 1 of all heads is one ``handops.edge_conv`` call (one input, weight [M, E, k, k]) and each later
layer one call in the per-head form (input [B, M, K, h, w]).

Variants (``SiaPoseConfig``): ``shared_weight`` is the SharedWeight GCN of Tables 5.1/5.2 (each layer and
head has one kernel, used by every edge); ``rotation`` is R-SiaPose (the R-MGMN rotation net turns the
image upright before the estimator and every map is turned back, as in R-MGMN; its loss adds the
"rotation" term of Eq. 3.24 for the recipe to weight).

Initialisation: each head starts as the identity (a self loop's kernel is a centred delta of height
in_degree(t), which A_hat's 1 / in_degree(t) cancels; other kernels are zero) plus N(0, 1e-3^2) noise,
so an untrained SiaPose reproduces relu(its estimator's maps) (the ReLUs between layers drop negative
values) and the heads differ from the first step. The shared
kernel starts as a delta of height 1 (each node then averages its neighbours).
"""

from __future__ import annotations

import torch
from torch import nn

import handops
from handops_models.nets.backbones import ResNet
from handops_models.nets.base import HandPoseNet, squared_error
from handops_models.nets.configs import SiaPoseConfig
from handops_models.nets.cpm import CPM
from handops_models.nets.rotation import RotationNet, rotate, rotation_loss
from handops_models.nets.structured import edge_conv

__all__ = ["SIAGCN", "SiaPose"]

INIT_NOISE = 1e-3


class SIAGCN(nn.Module):
    """``heads`` SIA-GCNs of ``layers`` edge-aware layers: [B, K, h, w] -> [B, heads, K, h, w]."""

    def __init__(self, heads: int, layers: int, kernel_size: int, shared_weight: bool = False):
        super().__init__()
        if heads < 1 or layers < 1:
            raise ValueError(f"SIA-GCN needs at least one head and one layer, got heads={heads}, layers={layers}")
        if kernel_size % 2 == 0:
            raise ValueError(f"edge kernels must have an odd size (a centre), got kernel_size={kernel_size}")
        self.graph = handops.hand_graph()
        self.shared_weight = shared_weight
        self.structured_impl = "handops"
        edges = self.graph.edges
        c = kernel_size // 2
        weights = []
        for _ in range(layers):
            w = torch.randn(heads, 1 if shared_weight else len(edges), kernel_size, kernel_size) * INIT_NOISE
            if shared_weight:
                w[:, 0, c, c] += 1.0
            else:
                for e, (s, t) in enumerate(edges):
                    if s == t:
                        w[:, e, c, c] += self.graph.in_degree[t]
            weights.append(nn.Parameter(w))
        self.weights = nn.ParameterList(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for layer, weight in enumerate(self.weights):
            if self.shared_weight:
                weight = weight.expand(-1, self.graph.num_edges, -1, -1)
            y = edge_conv(y, weight, self.graph, impl=self.structured_impl)
            if layer < len(self.weights) - 1:
                y = torch.relu(y)
        return y


class SiaPose(HandPoseNet):
    """SiaPose, SharedWeight GCN and R-SiaPose (``SiaPoseConfig``). Outputs: "stages" [B, T, 21, h, w] (the
    estimator's), "head_maps" [B, M, 21, h, w], "pointer" [B, M], "heatmaps" [B, 21, h, w] (Eq. 5.3);
    with rotation also "angle" [B]."""

    def __init__(self, config: SiaPoseConfig | None = None):
        config = config or SiaPoseConfig()
        if config.estimator == "cpm":
            estimator = CPM(config.cpm)
        elif config.estimator == "hourglass":
            from handops_models.nets.hourglass import StackedHourglass

            estimator = StackedHourglass(config.hourglass)
        else:
            raise ValueError(f"SiaPose estimator must be 'cpm' or 'hourglass', got {config.estimator!r}")
        super().__init__(config, estimator.input_size, estimator.map_size, estimator.num_keypoints, estimator.sigma)
        self.name = ("R-SiaPose" if config.rotation is not None else
                     "SharedWeight GCN" if config.shared_weight else "SiaPose") + f" ({config.heads}-head, {config.estimator})"
        self.estimator = estimator
        self.gcn = SIAGCN(config.heads, config.layers, config.kernel_size, config.shared_weight)
        self.pointer = (ResNet(config.pointer.depth, num_classes=config.heads, width=config.pointer.width)
                        if config.heads > 1 else None)
        self.rotation_net = RotationNet(config.rotation) if config.rotation is not None else None

    @property
    def structured_impl(self) -> str:
        return self.gcn.structured_impl

    @structured_impl.setter
    def structured_impl(self, impl: str) -> None:
        self.gcn.structured_impl = impl

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.check_images(images)
        outputs = {}
        if self.rotation_net is not None:
            outputs["angle"] = angle = self.rotation_net(x)
            x = rotate(x, angle)
        stages = self.estimator.stage_maps(x)
        head_maps = self.gcn(stages[:, -1])
        batch, heads = head_maps.shape[:2]
        pointer = torch.softmax(self.pointer(x), -1) if self.pointer is not None else head_maps.new_ones(batch, 1)
        fused = torch.einsum("bm,bmkhw->bkhw", pointer, head_maps)
        if self.rotation_net is not None:
            back = -outputs["angle"]
            t, k, h, w = stages.shape[1:]
            stages = rotate(stages.reshape(batch, t * k, h, w), back).view(batch, t, k, h, w)
            head_maps = rotate(head_maps.reshape(batch, heads * k, h, w), back).view(batch, heads, k, h, w)
            fused = rotate(fused, back)
        outputs.update(stages=stages, head_maps=head_maps, pointer=pointer, heatmaps=fused)
        return outputs

    def loss(self, outputs: dict, targets: dict, weights: dict[str, float] | None = None):
        """Eq. 5.4: terms "estimator" (L_1) and "fused" (L_2), default weights alpha and 1; R-SiaPose
        adds "rotation" (Eq. 3.24), weighted only when ``weights`` names it."""
        self._check_batch(outputs, targets)
        target = self.heatmap_targets(targets)
        terms = {"estimator": squared_error(outputs["stages"], target[:, None]),
                 "fused": squared_error(outputs["heatmaps"], target)}
        if "angle" in outputs:
            keypoints, _ = self._keypoints(targets)
            terms["rotation"] = rotation_loss(outputs["angle"], keypoints)
        return self._total(terms, weights, {"estimator": self.config.alpha, "fused": 1.0}), terms
