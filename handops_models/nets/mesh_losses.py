"""The losses of the identity-aware mesh estimator and its baseline (thesis Sec. 6.3.5, Eq. 6.8-6.10) and of
its confidence predictor (Sec. 6.3.4).

Meshes: ``pred``, ``target`` [B, V, 3]; ``faces`` [F, 3] vertex indices. Every term is a mean (the author's
code; the thesis writes sums, which differ by constant factors only):

    vertex_l1     mean |V^ - V|                                                     (L_mesh, Eq. 6.8)
    normal_loss   mean over faces w and their 3 edges (i, j) of |(V^_i - V^_j) / |V^_i - V^_j| . n_w|
                  with n_w the unit normal of the *target* face (CMR; the author's code)   (L_norm)
    edge_loss     mean over faces and their 3 edges of | |V^_i - V^_j| - |V_i - V_j| |     (L_edge)
    ranking_loss  mean over all pairs i < j of a batch of max(0, margin - y_ij (c_i - c_j)),
                  y_ij = sign(l_j - l_i): the image with the smaller shape error l gets the larger
                  confidence c, by at least ``margin`` (PyTorch's MarginRankingLoss, margin 1)

An edge shared by two faces counts once per face, as in the thesis' sum over faces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["vertex_l1", "normal_loss", "edge_loss", "ranking_loss", "face_edges"]

_EDGES = ((0, 1), (0, 2), (1, 2))  # a face's three edges as pairs of its corners


def _check_meshes(pred: torch.Tensor, target: torch.Tensor, faces: torch.Tensor | None = None) -> None:
    if pred.dim() != 3 or pred.shape[-1] != 3 or pred.shape != target.shape:
        raise ValueError(f"meshes must be [B, V, 3] of one shape, got {list(pred.shape)} and {list(target.shape)}")
    if faces is not None:
        if faces.dim() != 2 or faces.shape[1] != 3 or faces.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"faces must be [F, 3] integer vertex indices, got {list(faces.shape)} {faces.dtype}")
        if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= pred.shape[1]):
            raise ValueError(f"faces index vertices 0..{pred.shape[1] - 1}, got indices {int(faces.min())}..{int(faces.max())}")


def face_edges(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[B, F, 3, 3]: each face's edge vectors V_j - V_i for its corner pairs (0, 1), (0, 2), (1, 2)."""
    corners = vertices[:, faces.long()]  # [B, F, 3 corners, 3 coords]
    return torch.stack([corners[:, :, j] - corners[:, :, i] for i, j in _EDGES], dim=2)


def vertex_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of every vertex coordinate."""
    _check_meshes(pred, target)
    return (pred - target).abs().mean()


def normal_loss(pred: torch.Tensor, target: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean |unit predicted edge . unit target face normal| over the faces' three edges."""
    _check_meshes(pred, target, faces)
    edges = F.normalize(face_edges(pred, faces), dim=-1, eps=eps)
    target_edges = face_edges(target, faces)
    normals = F.normalize(torch.cross(target_edges[:, :, 0], target_edges[:, :, 1], dim=-1), dim=-1, eps=eps)
    return (edges * normals[:, :, None]).sum(-1).abs().mean()


def edge_loss(pred: torch.Tensor, target: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean | |predicted edge| - |target edge| | over the faces' three edges."""
    _check_meshes(pred, target, faces)
    return (face_edges(pred, faces).norm(dim=-1) - face_edges(target, faces).norm(dim=-1)).abs().mean()


def ranking_loss(confidence: torch.Tensor, error: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Margin ranking over all pairs i < j of a batch: ``mean max(0, margin - sign(l_j - l_i) (c_i - c_j))``.

    ``confidence`` [B] (c), ``error`` [B] (l, each image's shape error, e.g. mean |beta - beta^|). Pairs with
    equal errors have y = 0 and add ``margin`` without a gradient (as PyTorch's loss does). Needs B >= 2.
    """
    if confidence.dim() != 1 or confidence.shape != error.shape:
        raise ValueError(f"confidence and error must be [B] each, got {list(confidence.shape)} and {list(error.shape)}")
    if len(confidence) < 2:
        raise ValueError(f"the ranking loss compares pairs of images: a batch needs at least 2, got {len(confidence)}")
    i, j = torch.triu_indices(len(confidence), len(confidence), offset=1, device=confidence.device)
    y = torch.sign(error[j] - error[i]).detach()
    return torch.clamp(margin - y * (confidence[i] - confidence[j]), min=0).mean()
