"""The hand: the procedural MANO-format model of one handedness, what the samplers derive from it (once per
process and handedness), and the float64 MANO evaluation of a batch of mixed hands."""

from __future__ import annotations

import functools

import numpy as np
import torch

import handops
from handops.mano import OPENPOSE_FROM_MANO
from handops_models.data import render

# MANO distal joint of each ``fingertip_ids`` entry (thumb, index, middle, ring, little)
_DISTAL_OF_TIP = (15, 3, 6, 12, 9)


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` [..., 3] scaled to unit length along the last axis (zero vectors stay ~zero)."""
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


class HandModel:
    """The MANO layer of one handedness and the quantities the sampler needs from the model.

    Attributes (J = 15 non-root joints in MANO order, V vertices):
        model, layer: the ``ManoModel`` and its ``ManoLayer`` (axis-angle, flat hand mean).
        faces [F, 3]; comps [C, 45] the pose components; mean [45] their mean pose.
        bone [J, 3]: unit direction of each joint's bone (to its child, or the fingertip).
        flex [J, 3]: unit flexion axes (the first pose component, which curls every joint).
        abd [J, 3]: unit abduction axes ``bone x (little MCP -> index MCP)`` (positive: towards the thumb).
        thumb_side, thumb_opp [3]: the thumb CMC's sideways and opposition axes.
        palmar [V] float32: palm-side weight per vertex (1 on the palm, 0 on the back).
    """

    def __init__(self, model_seed: int, is_right: bool):
        model = handops.mano.synthetic_model(model_seed, is_right=is_right)
        self.model = model
        self.layer = handops.ManoLayer(model, use_pca=False, flat_hand_mean=True)
        self.faces = model.faces.clone()
        self.comps = model.hands_components.numpy().copy()
        self.mean = model.hands_mean.numpy().copy()
        vt = model.v_template.numpy()
        jr = model.J_regressor.numpy()
        joints = jr @ vt  # rest joints [16, 3]
        tips = model.fingertip_ids.numpy()
        parents = model.parents.numpy()
        # bone direction of each non-root joint: towards its child, or the fingertip for distal joints
        tip_of = {3: tips[1], 6: tips[2], 9: tips[4], 12: tips[3], 15: tips[0]}
        d = np.zeros((15, 3))
        for j in range(1, 16):
            children = [c for c in range(16) if parents[c] == j]
            target = joints[children[0]] if children else vt[tip_of[j]]
            d[j - 1] = unit(target - joints[j])
        self.bone = d
        self.flex = unit(self.comps[0].reshape(15, 3))  # hands_components[0] curls every joint
        toward_thumb = unit(joints[1] - joints[7])  # little MCP -> index MCP
        self.abd = unit(np.cross(d, toward_thumb))
        self.thumb_side = unit(np.cross(d[12], self.flex[12]))
        opp = self.comps[2].reshape(15, 3)[12]
        self.thumb_opp = unit(opp)
        # ring radius geometry: for the joints' vertex rings, radius(betas) from the shaped template
        self.ring = [np.nonzero(jr[j])[0] for j in range(16)]
        self.shapedirs = model.shapedirs.numpy()
        self.v_template = vt
        self.jr = jr
        # palm-side weight per vertex (palm faces -y in the model frame, for both hands)
        vn = render.vertex_normals(model.v_template[None].float(), model.faces)[0].numpy()
        self.palmar = np.clip(-vn[:, 1] * 1.4, 0.0, 1.0).astype(np.float32)

    def radii(self, betas: np.ndarray) -> np.ndarray:
        """[N, 21] local tube radius per OpenPose keypoint for betas [N, 10]: the mean distance of a
        joint's ring of vertices to the joint; for a fingertip (a vertex on the rounded cap) half the
        radius of its finger's distal ring."""
        v = self.v_template[None] + np.einsum("vcs,ns->nvc", self.shapedirs[:, :, : betas.shape[1]], betas)
        j = np.einsum("jv,nvc->njc", self.jr, v)
        r = np.zeros((len(betas), 21))
        for k in range(16):
            r[:, k] = np.linalg.norm(v[:, self.ring[k]] - j[:, k, None], axis=-1).mean(-1)
        r = np.concatenate([r[:, :16], 0.5 * r[:, list(_DISTAL_OF_TIP)]], 1)
        return r[:, list(OPENPOSE_FROM_MANO)]


@functools.lru_cache(maxsize=8)
def hand_model(model_seed: int, is_right: bool) -> HandModel:
    """The (cached) :class:`HandModel` of ``synthetic_model(model_seed, is_right)``."""
    return HandModel(model_seed, is_right)


def mano_meshes(model_seed: int, is_left: np.ndarray, betas: np.ndarray, global_orient: np.ndarray,
                hand_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [B, V, 3] and the 21 OpenPose keypoints [B, 21, 3] (float64, model frame, metres) of B
    hands: ``is_left`` [B] bool, ``betas`` [B, 10], ``global_orient`` [B, 3], ``hand_pose`` [B, 45]
    axis-angle. One float64 MANO call per handedness present."""
    batch = len(is_left)
    V = hand_model(model_seed, True).model.num_vertices
    verts = np.zeros((batch, V, 3))
    joints = np.zeros((batch, 21, 3))
    for left in (False, True):
        sel = np.nonzero(is_left == left)[0]
        if len(sel) == 0:
            continue
        layer = hand_model(model_seed, not left).layer
        t = lambda a: torch.as_tensor(a[sel], dtype=torch.float64)  # noqa: E731
        with torch.no_grad():
            out = layer(t(betas), t(global_orient), t(hand_pose))
        verts[sel] = out.vertices.numpy()
        joints[sel] = out.joints.numpy()
    return verts, joints
