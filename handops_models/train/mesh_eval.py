"""Evaluating chapter 6's mesh networks: per-image errors with and without optimisation, per-subject shape
calibration, and the shape errors of Sec. 6.4.1.

    shapes = calibrate_subjects(baseline, dataset, k=20)                 {subject: betas [10]}
    errors = mesh_errors(net, dataset, shapes=shapes, detector=det)      per-image MPJPE / MPVPE in mm

``mesh_errors`` runs a mesh network over a data set whose samples carry the ground truth (``betas``, ``pose``,
``K``, ``subject``: SyntheticHands, or a real format read with its MANO parameters). An identity-aware network
gets each image's shape from ``shapes`` (its subject's calibrated shape) or, with ``shapes=None``, the true one.
With a ``detector`` every batch is also refined by Eq. 6.4 (``nets.mesh_inference.refine_with_keypoints``).
Errors are root-relative (each hand's own wrist), per image, so a bootstrap over test images can compare two
rows image by image (``metrics.bootstrap_interval``).

``calibrate_subjects`` picks ``k`` images of each subject (``choose_images``: seeded by (seed, subject); a subject
with fewer images uses them all) and calibrates one shape per subject (Eq. 6.6-6.7). As in the author's protocol the
images come from the split being evaluated (their labels are not used) and are evaluated too; the result's
"images" lists them per subject.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from handops_models.metrics import root_relative_errors
from handops_models.train.loop import collate

__all__ = ["subject_indices", "choose_images", "calibrate_subjects", "mesh_errors"]


def subject_indices(dataset: Dataset) -> dict[int, list[int]]:
    """{subject id: the indices of its images} (reads each sample's ``subject``)."""
    out: dict[int, list[int]] = {}
    for i in range(len(dataset)):
        out.setdefault(int(dataset[i]["subject"]), []).append(i)
    return out


def choose_images(indices: list[int], k: int, seed: int, subject: int) -> list[int]:
    """``k`` of one subject's image ``indices`` (all of them if fewer), drawn by a generator seeded by (seed,
    subject): ``personalize --data`` and ``evaluate --shape calibrated`` pick the same images."""
    rng = np.random.default_rng([seed, subject])
    return sorted(rng.choice(indices, size=min(k, len(indices)), replace=False).tolist())


def calibrate_subjects(baseline, dataset: Dataset, k: int = 20, seed: int = 0, attention: bool = True,
                       device: str = "cpu") -> dict:
    """{"betas": {subject: [10] tensor}, "images": {subject: [indices used]}, "weights": {subject: [k]}}."""
    from handops_models.nets.mesh_inference import personalize

    if k < 1:
        raise ValueError(f"k (images per subject) must be at least 1, got {k}")
    result = {"betas": {}, "images": {}, "weights": {}}
    for subject, indices in sorted(subject_indices(dataset).items()):
        chosen = choose_images(indices, k, seed, subject)
        images = torch.stack([dataset[i]["image"] for i in chosen]).to(device)
        shape = personalize(baseline, images, attention=attention)
        result["betas"][subject] = shape["betas"].cpu()
        result["images"][subject] = chosen
        result["weights"][subject] = shape["weights"].cpu()
    return result


def mesh_errors(network, dataset: Dataset, shapes: dict | None = None, detector=None, solver: str = "adam",
                batch_size: int = 32, device: str = "cpu", progress: bool = False) -> dict[str, torch.Tensor]:
    """Per-image root-relative errors (mm) of ``network`` on ``dataset``: {"mpjpe", "mpvpe"} [N] without
    optimisation, and with a ``detector`` also {"mpjpe_opt", "mpvpe_opt"}; "subject" [N]; for the baseline
    "betas" [N, 10] (its regressed shapes), "confidence" [N] and "mpjpe_true_shape" [N] (its pose, without
    optimisation, under the true shape: its pose error alone)."""
    from tqdm import tqdm

    from handops.geometry import axis_angle_to_matrix
    from handops_models.nets.mesh_inference import refine_with_keypoints

    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    keys = ("mpjpe", "mpvpe") + (("mpjpe_opt", "mpvpe_opt") if detector is not None else ())
    out: dict[str, list] = {key: [] for key in keys + ("subject", "betas", "confidence", "mpjpe_true_shape")}
    for batch in tqdm(loader, desc="mesh evaluation", disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        truth = network.targets(batch)
        betas = None
        if network.identity_aware:
            betas = truth["betas"] if shapes is None else torch.stack(
                [shapes[int(s)] for s in batch["subject"]]).to(truth["betas"])
        if detector is not None:
            refined = refine_with_keypoints(network, batch["image"], batch["K"], detector, betas, solver=solver)
            predicted = {"vertices": refined["before_vertices"], "keypoints3d": refined["before_keypoints3d"],
                         "betas": refined["betas"], "pose": refined["before_pose"],
                         **({"confidence": refined["confidence"]} if "confidence" in refined else {})}
            pairs = [("", predicted), ("_opt", refined)]
        else:
            predicted = network.predict(batch["image"], betas)
            pairs = [("", predicted)]
        for suffix, pred in pairs:
            root, true_root = pred["keypoints3d"][:, 0], truth["keypoints3d"][:, 0]
            out["mpjpe" + suffix].append(root_relative_errors(pred["keypoints3d"], truth["keypoints3d"], root, true_root).cpu())
            out["mpvpe" + suffix].append(root_relative_errors(pred["vertices"], truth["vertices"], root, true_root).cpu())
        if "subject" in batch:
            out["subject"].append(batch["subject"].cpu())
        if not network.identity_aware:
            out["betas"].append(predicted["betas"].cpu())
            rotations = axis_angle_to_matrix(predicted["pose"].view(len(predicted["pose"]), -1, 3))
            posed = network.mano(truth["betas"], rotations[:, 0], rotations[:, 1:], with_vertices=False).joints
            out["mpjpe_true_shape"].append(root_relative_errors(posed, truth["keypoints3d"], posed[:, 0],
                                                                truth["keypoints3d"][:, 0]).cpu())
            if "confidence" in predicted:
                out["confidence"].append(predicted["confidence"].cpu())
    return {k: torch.cat(v) for k, v in out.items() if v}
