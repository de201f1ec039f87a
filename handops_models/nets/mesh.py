"""The MANO mesh estimators of chapter 6: the identity-aware estimator and its baseline.

    F        = ResNet(image)                                   [B, N]   pooled features (Sec. 6.3.2)
    beta     = given (identity-aware)  |  MLP_beta(F) (baseline, Eq. 6.5)        [B, 10]
    theta^0  = the identity in 6-D for the 16 joints (root first)                 [B, 16, 6]
    Delta^i  = I_6d + MLP_i(cat(F, theta^{i-1}, beta))          i = 1..T (T = 3)  (Eq. 6.2)
    R(theta^i) = R(Delta^i) R(theta^{i-1})                      composed as rotation matrices (Eq. 6.3)
    vertices, keypoints3d = ManoLayer(beta, theta^T)            [B, V, 3], [B, 21, 3] metres, MANO frame
    confidence = Linear(F.detach())                             [B] (baseline only, Sec. 6.3.4)

6-D convention: handops' (``handops.geometry``): the first two *columns* of each rotation matrix,
``d6 = (R[:, 0], R[:, 1])``; the identity is (1, 0, 0, 0, 1, 0). pytorch3d keeps the first two rows and
SPIN interleaves the two columns; a pose in either must be converted by its own library, never fed here.

Choices the thesis leaves open (the author's released code differs where noted):
- each update is parametrised around the identity (``I_6d +``, the last layer initialised near zero), so
  every iteration starts as "no change"; the author's code maps the raw MLP output to a rotation, an
  essentially random one at initialisation;
- the shape is an input of every regressor MLP (``MeshConfig.shape_to_regressor``, the thesis' Fig. 6.1);
  the author's code passes it to MANO only;
- F is the pooled ResNet feature (2048 for a ResNet-50), not the ImageNet classifier's 1000 logits.

Mesh positions are in the MANO frame (no translation: the root joint where MANO puts it); the losses compare
them with the ground truth's mesh in the same frame, in units of ``MESH_UNIT`` metres (the author's 0.2 m).
"""

from __future__ import annotations

import torch
from torch import nn

import handops
from handops.geometry import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rotation_6d, rotation_6d_to_matrix
from handops_models.nets.backbones import ResNet
from handops_models.nets.base import ImageModel
from handops_models.nets.configs import MeshConfig
from handops_models.nets.mesh_losses import edge_loss, normal_loss, ranking_loss, vertex_l1

__all__ = ["MESH_UNIT", "IDENTITY_6D", "make_mano_layer", "compose_6d", "IterativePoseRegressor", "MeshNet"]

MESH_UNIT = 0.2  # metres: losses compare coordinates divided by this (the author's code)
NUM_JOINTS = 16  # MANO's root and 15 finger joints
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def make_mano_layer(spec: str) -> handops.ManoLayer:
    """``"synthetic:<seed>"`` -> the procedural hand of that seed; otherwise a MANO file's path. Full axis-angle
    poses with no mean added (``use_pca=False, flat_hand_mean=True``): a pose is the absolute joint rotations,
    as SyntheticHands' ``pose`` is."""
    with torch.device("cpu"):  # the model is data, built on the CPU even under a meta / cuda default device
        if spec.startswith("synthetic:"):
            from handops.mano.synthetic import synthetic_model

            try:
                seed = int(spec.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"MeshConfig.mano {spec!r}: expected 'synthetic:<integer seed>'") from None
            return handops.ManoLayer(synthetic_model(seed), use_pca=False, flat_hand_mean=True)
        return handops.ManoLayer(spec, use_pca=False, flat_hand_mean=True)


def compose_6d(delta: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Eq. 6.3's composition: ``6d(R(delta) R(theta))`` for [..., 6] each (``R`` by Gram-Schmidt)."""
    return matrix_to_rotation_6d(rotation_6d_to_matrix(delta) @ rotation_6d_to_matrix(theta))


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class IterativePoseRegressor(nn.Module):
    """T separate MLPs refining 16 joint rotations from the identity (Eq. 6.2-6.3).

    forward(features [B, N], betas [B, S] or None) -> [B, T, 16, 6]: theta^1..theta^T, each a valid rotation's
    6-D (the columns of an orthonormal matrix).
    """

    def __init__(self, num_features: int, hidden: tuple[int, ...], iterations: int, num_betas: int = 0):
        super().__init__()
        self.num_betas = num_betas
        widths = [num_features + NUM_JOINTS * 6 + num_betas, *hidden, NUM_JOINTS * 6]
        self.mlps = nn.ModuleList(_mlp(widths) for _ in range(iterations))
        for mlp in self.mlps:  # each update starts near "no change" (the identity)
            nn.init.normal_(mlp[-1].weight, std=1e-3)
            nn.init.zeros_(mlp[-1].bias)
        self.register_buffer("identity", torch.tensor(IDENTITY_6D).repeat(NUM_JOINTS), persistent=False)

    def forward(self, features: torch.Tensor, betas: torch.Tensor | None = None) -> torch.Tensor:
        if (betas is not None) != (self.num_betas > 0):
            raise ValueError("the regressor takes betas exactly when it was built with num_betas > 0")
        theta = self.identity.to(features).expand(len(features), -1)
        thetas = []
        for mlp in self.mlps:
            inputs = [features, theta] + ([betas] if betas is not None else [])
            delta = self.identity.to(features) + mlp(torch.cat(inputs, 1))
            theta = compose_6d(delta.view(-1, NUM_JOINTS, 6), theta.view(-1, NUM_JOINTS, 6)).flatten(1)
            thetas.append(theta)
        return torch.stack(thetas, 1).view(len(features), len(self.mlps), NUM_JOINTS, 6)


class MeshNet(ImageModel):
    """The identity-aware estimator (``MeshConfig.shape_source="input"``) or its baseline ("regressed").

    forward(images [B, 3, S, S] in [0, 1], betas [B, 10] or None) -> dict:
        pose6d [B, T, 16, 6] every iteration's rotations (root first), betas [B, 10] (given or regressed),
        vertices [B, V, 3], keypoints3d [B, 21, 3] (OpenPose order; metres, MANO frame), and for the
        baseline confidence [B] (the confidence predictor's score, on detached features).
    loss(outputs, targets, weights=None) -> (total, terms); targets hold "betas" [B, 10] and "pose" [B, 48]
        (axis-angle, root first, absolute: SyntheticHands' ``pose``). Terms (``mesh_losses``): "mesh",
        "normal", "edge" (coordinates in units of MESH_UNIT), "pose" (L1 of the last iteration's 6-D),
        and for the baseline "shape" (L1 of the betas) and "ranking" (the confidence's margin ranking
        against each image's shape error). Default weights: Eq. 6.10 (identity-aware: mesh 1, normal 0.1,
        edge 1, pose 1) and Eq. 6.9 (baseline: the same and shape 1).
    """

    name = "mesh net"
    validation = "mesh"  # the training loop validates by MPVPE (train.loop.evaluate_mesh)

    def __init__(self, config: MeshConfig | None = None):
        config = config or MeshConfig()
        super().__init__(config, config.input_size)
        self.identity_aware = config.shape_source == "input"
        self.name = "identity-aware mesh net" if self.identity_aware else "baseline mesh net"
        self.backbone = ResNet(config.backbone.depth, width=config.backbone.width)
        self.backbone.fc = nn.Identity()  # the pooled features are F; no classifier
        features = self.backbone.num_features
        self.num_betas = config.num_betas
        self.regressor = IterativePoseRegressor(features, config.hidden, config.iterations,
                                                config.num_betas if config.shape_to_regressor else 0)
        if not self.identity_aware:
            self.shape_regressor = _mlp([features, *config.hidden, config.num_betas])
            self.confidence = nn.Linear(features, 1)
        self.mano = make_mano_layer(config.mano)
        self.register_buffer("faces", self.mano.model.faces.clone().long(), persistent=False)

    # ----------------------------------------------------------------------------------- forward
    def _check_betas(self, betas, batch: int, device) -> torch.Tensor:
        if not isinstance(betas, torch.Tensor) or betas.shape != (batch, self.num_betas):
            got = list(betas.shape) if isinstance(betas, torch.Tensor) else type(betas).__name__
            raise ValueError(f"{self.name}: betas must be [B, {self.num_betas}] = [{batch}, {self.num_betas}] (the "
                             f"subject's true or calibrated shape), got {got}")
        if not bool(torch.isfinite(betas).all()):
            raise ValueError(f"{self.name}: betas hold NaN or infinite values")
        return betas.to(device=device, dtype=next(self.parameters()).dtype)

    def forward(self, images: torch.Tensor, betas: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self.check_images(images)
        if self.identity_aware and betas is None:
            raise ValueError(f"{self.name}: pass the subject's shape, betas [B, {self.num_betas}] (true, or calibrated "
                             f"with handops.calibrate_shape / `python -m handops_models personalize`)")
        if not self.identity_aware and betas is not None:
            raise ValueError(f"{self.name}: the baseline regresses the shape itself; it takes no betas")
        features = self.backbone.forward_features(x)
        out = {}
        if self.identity_aware:
            betas = self._check_betas(betas, len(x), x.device)
        else:
            betas = self.shape_regressor(features)
            out["confidence"] = self.confidence(features.detach())[:, 0]
        pose6d = self.regressor(features, betas if self.regressor.num_betas else None)
        final = pose6d[:, -1]
        mano = self.mano(betas, final[:, 0], final[:, 1:])
        out.update(pose6d=pose6d, betas=betas, vertices=mano.vertices, keypoints3d=mano.joints)
        return out

    def batch_inputs(self, batch: dict) -> tuple:
        """(images, true betas) for the identity-aware network (the subject's shape is given), (images,) else."""
        return (batch["image"], batch["betas"]) if self.identity_aware else (batch["image"],)

    # ----------------------------------------------------------------------------------- loss
    def targets(self, targets: dict) -> dict[str, torch.Tensor]:
        """The ground truth in the outputs' terms: pose6d [B, 16, 6], vertices and keypoints3d (MANO frame)."""
        if not isinstance(targets, dict) or not {"betas", "pose"} <= set(targets):
            got = sorted(targets) if isinstance(targets, dict) else type(targets).__name__
            raise ValueError(f"{self.name}: targets must hold 'betas' [B, {self.num_betas}] and 'pose' [B, 48] "
                             f"(axis-angle, root first), got {got}")
        parameter = next(self.parameters())
        betas = torch.as_tensor(targets["betas"]).to(parameter)
        pose = torch.as_tensor(targets["pose"]).to(parameter)
        if pose.dim() != 2 or pose.shape[1] != NUM_JOINTS * 3 or betas.shape != (len(pose), self.num_betas):
            raise ValueError(f"{self.name}: targets need pose [B, 48] and betas [B, {self.num_betas}], got "
                             f"{list(pose.shape)} and {list(betas.shape)}")
        if "is_left" in targets and bool(torch.as_tensor(targets["is_left"]).any()):
            raise ValueError(f"{self.name}: the batch holds left hands; this network's hand model ({self.config.mano}) is a "
                             f"right hand (mirror left crops and their poses first)")
        with torch.no_grad():
            rotations = axis_angle_to_matrix(pose.view(-1, NUM_JOINTS, 3))
            mano = self.mano(betas, rotations[:, 0], rotations[:, 1:])
            if "keypoints3d" in targets:  # the data's own keypoints: its hand model must be this network's
                given = torch.as_tensor(targets["keypoints3d"]).to(mano.joints)
                moved = mano.joints + (given[:, :1] - mano.joints[:, :1])
                if len(given) and float((moved - given).abs().max()) > 1e-4:
                    raise ValueError(f"{self.name}: the samples' keypoints3d are not this network's hand model "
                                     f"({self.config.mano}) at the samples' betas and pose (off by "
                                     f"{float((moved - given).abs().max()) * 1000:.1f} mm after the root translation): "
                                     f"build the network with the data's MANO model (MeshConfig.mano)")
        return {"pose6d": matrix_to_rotation_6d(rotations), "betas": betas, "vertices": mano.vertices,
                "keypoints3d": mano.joints}

    def loss(self, outputs: dict, targets: dict, weights: dict[str, float] | None = None):
        truth = self.targets(targets)
        if len(truth["betas"]) != len(outputs["vertices"]):
            raise ValueError(f"{self.name}: outputs are for {len(outputs['vertices'])} images but targets hold "
                             f"{len(truth['betas'])}")
        pred_mesh, true_mesh = outputs["vertices"] / MESH_UNIT, truth["vertices"] / MESH_UNIT
        terms = {
            "mesh": vertex_l1(pred_mesh, true_mesh),
            "normal": normal_loss(pred_mesh, true_mesh, self.faces),
            "edge": edge_loss(pred_mesh, true_mesh, self.faces),
            "pose": (outputs["pose6d"][:, -1] - truth["pose6d"]).abs().mean(),
        }
        default = {"mesh": 1.0, "normal": 0.1, "edge": 1.0, "pose": 1.0}
        if not self.identity_aware:
            shape_error = (outputs["betas"] - truth["betas"]).abs()
            terms["shape"] = shape_error.mean()
            if len(shape_error) >= 2:
                terms["ranking"] = ranking_loss(outputs["confidence"], shape_error.mean(1).detach())
            default["shape"] = 1.0
        return self._total(terms, weights, default), terms

    # ----------------------------------------------------------------------------------- prediction
    def predict(self, images: torch.Tensor, betas: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The forward outputs of the last iteration in eval mode without gradients, plus the pose as axis-angle
        [B, 48] (root first; what ``handops.fit_keypoints2d`` and ``calibrate_shape`` take)."""
        with self.inference():
            out = self.forward(images, betas)
        rotations = rotation_6d_to_matrix(out["pose6d"][:, -1])
        out["pose"] = matrix_to_axis_angle(rotations).flatten(1)
        return out
