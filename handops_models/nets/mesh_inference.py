"""Chapter 6's inference around the mesh networks: optimisation-augmented inference (Eq. 6.4) and shape
personalisation (Eq. 6.6-6.7).

    refined = refine_with_keypoints(mesh_net, images, camera_K, detector, betas)      Eq. 6.4
    betas   = personalize(baseline, images_of_one_subject)                            Eq. 6.6-6.7

Eq. 6.4 starts ``handops.fit_keypoints2d`` from the regressor's pose with the 2-D detector's keypoints
(weighted by its confidences, the sigmoid of each map's peak logit) and fits the root translation, then the
pose and translation, with the shape held fixed (the given or calibrated one for the identity-aware network,
the regressed one for the baseline). ``solver="adam"`` is the thesis' schedule (200 translation steps at 1e-2,
then 60 at 1e-3), ``"lm"`` handops' Levenberg-Marquardt.

Personalisation: the baseline's shapes, poses and confidences for K images of one subject; the weights
``softmax(c / T)`` with T = 0.33 (``attention=False``: 1 / K each, the ablation of Table 6.4), and
``handops.calibrate_shape`` minimises ``sum_k w_k |M(b, theta_k) - M(beta_k, theta_k)|_F``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import handops
from handops.geometry import matrix_to_axis_angle, rotation_6d_to_matrix

__all__ = ["TEMPERATURE", "refine_with_keypoints", "personalize", "save_shape", "load_shape"]

TEMPERATURE = 0.33  # Eq. 6.6


def refine_with_keypoints(mesh_net, images: torch.Tensor, camera_K: torch.Tensor, detector, betas=None,
                          solver: str = "adam", iterations=None, use_confidence: bool = True) -> dict[str, torch.Tensor]:
    """Eq. 6.4 for a batch: the regressor's prediction refined to the detector's 2-D keypoints.

    Args: images [B, 3, S, S] in [0, 1] at the mesh network's input size (the detector gets them resized to its
    own, and its keypoints are scaled back: ``x_S = (x_D + 0.5) S / D - 0.5`` for pixel centres at integers);
    camera_K [B, 3, 3] the crops' intrinsics; detector: a 2-D network (``predict`` -> keypoints2d [B, 21, 2] in
    input pixels, confidence [B, 21]); betas [B, 10] for an identity-aware ``mesh_net`` (None for the baseline).
    Returns the regressor's outputs (``before_*``: vertices, keypoints3d, pose [B, 48] axis-angle) and the refined vertices [B, V, 3], keypoints3d [B, 21, 3]
    (MANO frame, as the regressor's: the fitted translation removed), pose [B, 48], transl [B, 3] (camera frame)
    and the final reprojection error [B] (pixels).
    """
    predicted = mesh_net.predict(images, betas)
    size, detector_size = images.shape[-1], getattr(detector, "input_size", images.shape[-1])
    if detector_size != size:
        resized = torch.nn.functional.interpolate(images, size=(detector_size, detector_size), mode="bilinear",
                                                  align_corners=False, antialias=detector_size < size).clamp(0, 1)
        detected = detector.predict(resized)
        detected = dict(detected, keypoints2d=(detected["keypoints2d"] + 0.5) * (size / detector_size) - 0.5)
    else:
        detected = detector.predict(images)
    layer = mesh_net.mano
    rotations = rotation_6d_to_matrix(predicted["pose6d"][:, -1])
    hand_pose = matrix_to_axis_angle(rotations[:, 1:]).flatten(1)  # flat_hand_mean: no mean pose to remove
    weights = detected["confidence"].clamp_min(1e-3) if use_confidence else None
    fit = handops.fit_keypoints2d(layer, detected["keypoints2d"].to(predicted["betas"]), camera_K.to(predicted["betas"]),
                                  predicted["betas"], init={"global_orient": matrix_to_axis_angle(rotations[:, 0]),
                                                            "hand_pose": hand_pose},
                                  weights=None if weights is None else weights.to(predicted["betas"]), solver=solver,
                                  iterations=iterations)
    with torch.no_grad():
        refined = layer(predicted["betas"], fit.global_orient, fit.hand_pose.view(-1, 15, 3))
    return {
        "before_vertices": predicted["vertices"], "before_keypoints3d": predicted["keypoints3d"],
        "before_pose": torch.cat([matrix_to_axis_angle(rotations[:, 0]), hand_pose], 1), "vertices": refined.vertices, "keypoints3d": refined.joints, "betas": predicted["betas"],
        "pose": torch.cat([fit.global_orient, fit.hand_pose], 1), "transl": fit.transl,
        "reprojection_error": fit.reprojection_error, "detected_keypoints2d": detected["keypoints2d"],
        **({"confidence": predicted["confidence"]} if "confidence" in predicted else {}),
    }


def personalize(baseline, images: torch.Tensor, attention: bool = True, temperature: float = TEMPERATURE,
                batch_size: int = 64) -> dict:
    """One subject's shape from K unannotated images [K, 3, S, S] of them (Eq. 6.6-6.7).

    Returns {"betas": [10] tensor, "weights": [K] the attention weights, "confidence": [K],
    "per_image_betas": [K, 10]}.
    """
    if getattr(baseline, "identity_aware", True):
        raise ValueError("personalize needs the baseline mesh network (mesh-baseline: it regresses each image's shape "
                         "and carries the confidence predictor), not the identity-aware one")
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"personalize needs images [K, 3, S, S] with K >= 1, got {list(images.shape)}")
    outs = [baseline.predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    betas = torch.cat([o["betas"] for o in outs])
    poses = torch.cat([o["pose"] for o in outs])
    confidence = torch.cat([o["confidence"] for o in outs])
    # calibrate_shape works in float64: IRLS on the affine-in-beta mesh
    shape = handops.calibrate_shape(baseline.mano, betas.double(), poses.double(),
                                    confidence.double() if attention else None, temperature=temperature)
    weights = torch.softmax(confidence.double() / temperature, 0) if attention else torch.full((len(betas),), 1 / len(betas))
    return {"betas": shape.to(betas.dtype), "weights": weights.to(betas.dtype), "confidence": confidence, "per_image_betas": betas}


def save_shape(path, betas: torch.Tensor, **info) -> Path:
    """Write a subject's shape as JSON ``{"betas": [...], ...info}`` (what ``load_shape`` and the identity-aware
    network's ``--shape`` read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"betas": [float(b) for b in betas.reshape(-1)], **info}, indent=1))
    tmp.replace(path)
    return path


def load_shape(path) -> torch.Tensor:
    """The betas [10] of a :func:`save_shape` file, checked."""
    data = json.loads(Path(path).read_text())
    betas = data.get("betas") if isinstance(data, dict) else None
    if not isinstance(betas, list) or not betas or not all(isinstance(b, (int, float)) for b in betas):
        raise ValueError(f"{path}: not a shape file (expected a JSON object with 'betas': a list of numbers)")
    return torch.tensor(betas, dtype=torch.float32)
