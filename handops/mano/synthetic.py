"""A procedural MANO-format hand, built by this project (no official MANO data involved).

``synthetic_model(seed, is_right)`` returns a :class:`ManoModel` with the same layout as the official
files, so every MANO code path (smplx included) can be exercised without the licensed model.

Frame and units (right hand, rest pose = flat open hand), metres:
    wrist joint at the origin, fingers along +x, palm facing -y (back of the hand +y),
    thumb on the -z side, little finger on the +z side.
The left hand is the mirror image x -> -x (as MANO's left model relates to its right one): fingers
along -x, faces re-wound so normals stay outward, pose vectors mirrored (axis-angle (ax, -ay, -az)).

Mesh: a palm (a rounded, flattened superelliptic tube closed at both ends) and five fingers, each a
chain of tapered tubes (rings of vertices around the bone axis, closed at both ends; the base end sits
inside the palm). Every part is a closed, consistently outward-wound surface; parts overlap, they are
not stitched together. Joint ``j`` is the centre of a ring of vertices placed at the joint, so
``J_regressor`` rows are uniform weights over one ring (sparse, convex, exact at rest).

Shape space (betas ~ N(0, 1), see ``SHAPE_COMPONENTS`` / ``SHAPE_SIGMA``): each component is the
derivative of the construction with respect to one named proportion, times its sigma, e.g. beta 0 =
+1 makes the whole hand 8 % larger about the wrist. Hand length L (wrist joint to the middle fingertip
vertex) grows with components 0, 1, 5; hand width W (index MCP to ring MCP, thesis Sec. 6.4) grows
with components 0 and 2.

Pose: MANO convention, 15 axis-angle rotations in rest-pose world axes. Finger flexion (curling
towards the palm) is a positive rotation about ``d x n`` (bone direction x palm normal), i.e. about
-z for a straight right finger. ``hands_components[0]`` curls all fingers, [1] spreads them, [2]
opposes the thumb, then further hand-designed synergies, completed to an orthonormal basis.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch

from handops.geometry import axis_angle_to_matrix
from handops.mano.model import MANO_PARENTS, ManoModel

__all__ = ["synthetic_model", "SHAPE_COMPONENTS", "SHAPE_SIGMA", "FINGER_JOINTS", "hand_length_width"]

# Named proportions behind the 10 shape components, and the relative change per unit beta.
SHAPE_COMPONENTS = (
    "scale", "finger_length", "palm_width", "finger_thickness", "thumb_length",
    "palm_length", "index_length", "ring_length", "little_length", "palm_thickness",
)
SHAPE_SIGMA = np.array([0.08, 0.07, 0.08, 0.10, 0.08, 0.06, 0.05, 0.05, 0.06, 0.10])

# MANO joint ids of each finger (base to tip), in the official joint order.
FINGER_JOINTS = {"index": (1, 2, 3), "middle": (4, 5, 6), "little": (7, 8, 9), "ring": (10, 11, 12), "thumb": (13, 14, 15)}
_TIP_ORDER = ("thumb", "index", "middle", "ring", "little")  # order of fingertip_ids

# Canonical long fingers (right hand): MCP (x, z) in m, spread angle in degrees (+ towards the little
# side), bone lengths proximal / middle / distal-to-tip in m, tube radius at the MCP in m.
_LONG_FINGERS = {
    "index": ((0.089, -0.024), -3.0, (0.041, 0.025, 0.021), 0.0098),
    "middle": ((0.094, -0.004), 0.0, (0.044, 0.027, 0.021), 0.0101),
    "ring": ((0.089, 0.015), 3.5, (0.042, 0.026, 0.021), 0.0095),
    "little": ((0.079, 0.032), 8.0, (0.033, 0.020, 0.019), 0.0085),
}
# Thumb: CMC position, direction (azimuth from +x towards -z, elevation towards -y) in degrees,
# metacarpal / proximal / distal-to-tip lengths, radius at the CMC.
_THUMB = ((0.022, -0.006, -0.017), (38.0, 12.0), (0.046, 0.030, 0.027), 0.0175)

_N_FINGER = 10  # vertices per finger ring
_N_PALM = 20  # vertices per palm ring


# --------------------------------------------------------------------------------------------------
# geometry helpers


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _superellipse(n: int, power: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit superellipse |a|^p + |b|^p = 1 sampled at n angles: (a, b), each [n]."""
    phi = 2.0 * np.pi * np.arange(n) / n
    c, s = np.cos(phi), np.sin(phi)
    return np.sign(c) * np.abs(c) ** (2.0 / power), np.sign(s) * np.abs(s) ** (2.0 / power)


def _tube_faces(k: int, n: int, offset: int) -> np.ndarray:
    """Faces of k rings of n vertices plus a start pole (k*n) and an end pole (k*n+1), outward when
    rings run right-handed about the axis (up -> side = d x up). [2*n*k, 3] with ``offset`` added."""
    i, j = np.meshgrid(np.arange(k - 1), np.arange(n), indexing="ij")
    a = i * n + j
    b = i * n + (j + 1) % n
    c = (i + 1) * n + (j + 1) % n
    e = (i + 1) * n + j
    quads = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, e], -1).reshape(-1, 3)])
    j = np.arange(n)
    start = np.stack([np.full(n, k * n), (j + 1) % n, j], -1)
    last = (k - 1) * n
    end = np.stack([last + j, last + (j + 1) % n, np.full(n, k * n + 1)], -1)
    return np.concatenate([quads, start, end]) + offset


def _tube_vertices(centers, up, d, ry, rz, n, power, start_pole, end_pole) -> np.ndarray:
    """Rings around ``centers`` [K, 3] in the frame (up, side = d x up), half-axes ry, rz [K], then the
    two poles. [K*n + 2, 3]."""
    a, b = _superellipse(n, power)
    side = np.cross(d, up)
    rings = centers[:, None] + (ry[:, None, None] * a[None, :, None]) * up[:, None] + (rz[:, None, None] * b[None, :, None]) * side[:, None]
    return np.concatenate([rings.reshape(-1, 3), start_pole[None], end_pole[None]])


@dataclass
class _Part:
    """One closed tube of the mesh: its vertex range, per-vertex arc length along the axis and the
    axis itself (for skinning weights and pose correctives)."""

    name: str
    start: int  # first vertex id
    n_rings: int
    n_around: int
    s: np.ndarray  # [K+2] arc length of each ring and of the two poles (m)
    ring_s: np.ndarray  # arc length of each joint ring
    joint_rings: tuple  # ring index of each joint on this part
    origin: np.ndarray  # axis point at s = 0
    d: np.ndarray  # axis direction [3]
    up: np.ndarray  # dorsal direction [3]

    @property
    def stop(self) -> int:
        return self.start + self.n_rings * self.n_around + 2

    def ring_ids(self, r: int) -> np.ndarray:
        return self.start + r * self.n_around + np.arange(self.n_around)

    def vertex_s(self) -> np.ndarray:
        """Arc length of every vertex of the part, [n_rings * n_around + 2]."""
        return np.concatenate([np.repeat(self.s[:-2], self.n_around), self.s[-2:]])


# --------------------------------------------------------------------------------------------------
# construction


def _details(seed: int) -> dict:
    """Small per-seed variations of the canonical proportions (none for seed 0)."""
    rng = np.random.default_rng(seed)
    z = (lambda *shape: np.zeros(shape)) if seed == 0 else (lambda *shape: rng.standard_normal(shape))
    return {
        "length": 1.0 + 0.02 * z(5),  # per finger (index, middle, ring, little, thumb)
        "spread": 1.5 * z(4),  # degrees
        "radius": 1.0 + 0.03 * z(5),
        "mcp": 0.001 * z(4, 2),  # m, (x, z)
        "thumb_dir": 2.0 * z(2),  # degrees
        "pose": 0.05 * z(8),  # relative jitter of the designed pose synergies
    }


def _finger_stations(lengths, r0, thick, thumb: bool):
    """Arc lengths (from the base joint), radii and the joint ring indices of one finger tube."""
    l1, l2, l3 = lengths
    if thumb:  # the metacarpal is fleshy (thenar), the phalanges thinner
        body = [(-0.010, 0.85), (0.0, 1.0), (0.35 * l1, 0.96), (0.7 * l1, 0.80), (l1, 0.68),
                (l1 + 0.5 * l2, 0.63), (l1 + l2, 0.61), (l1 + l2 + 0.4 * l3, 0.59)]
        joints = (1, 4, 6)
    else:
        body = [(-0.012, 0.95), (0.0, 1.04), (0.35 * l1, 0.95), (0.7 * l1, 0.90), (l1, 0.91),
                (l1 + 0.5 * l2, 0.84), (l1 + l2, 0.83), (l1 + l2 + 0.4 * l3, 0.79)]
        joints = (1, 4, 6)
    s = [b[0] for b in body]
    r = [b[1] * r0 * thick for b in body]
    # rounded fingertip: a quarter circle of the last radius ending at the tip pole
    rt = r[-1]
    tip = l1 + l2 + l3
    cap0 = tip - rt
    for ang in (0.0, 35.0, 62.0, 80.0):
        t = np.radians(ang)
        s.append(cap0 + rt * np.sin(t))
        r.append(rt * np.cos(t))
    base_pole = s[0] - 0.6 * r[0]
    return np.array(s), np.array(r), joints, base_pole, tip


def _build(p: np.ndarray, det: dict):
    """Vertices [V, 3], faces [F, 3] and parts for the proportions p [10] (1 = canonical)."""
    scale, flen, pwidth, thick, tlen, plen, ilen, rlen, llen, pthick = p
    own_len = {"index": ilen, "middle": 1.0, "ring": rlen, "little": llen}
    verts, faces, parts = [], [], []

    # fingers first: their MCPs shape the palm's distal edge
    fingers = {}
    for fi, (name, ((mx, mz), ang, lengths, r0)) in enumerate(_LONG_FINGERS.items()):
        mcp = np.array([(mx + det["mcp"][fi, 0]) * plen, 0.0, (mz + det["mcp"][fi, 1]) * pwidth])
        a = np.radians(ang + det["spread"][fi])
        d = np.array([np.cos(a), 0.0, np.sin(a)])
        up = np.array([0.0, 1.0, 0.0])
        ls = np.array(lengths) * flen * own_len[name] * det["length"][fi]
        fingers[name] = (mcp, d, up, ls, r0 * det["radius"][fi], 0.88, False)
    (cx, cy, cz), (az, el), lengths, r0 = _THUMB
    az, el = np.radians(az + det["thumb_dir"][0]), np.radians(el + det["thumb_dir"][1])
    d = np.array([np.cos(el) * np.cos(az), -np.sin(el), -np.cos(el) * np.sin(az)])
    up = _unit(np.array([0.0, 0.6, -1.0]) - np.dot([0.0, 0.6, -1.0], d) * d)  # thumbnail faces out and up
    cmc = np.array([cx * plen, cy, cz * pwidth])
    fingers["thumb"] = (cmc, d, up, np.array(lengths) * tlen * det["length"][4], r0 * det["radius"][4], 0.85, True)

    # palm: a superelliptic tube along x whose distal end follows the arc of the MCPs
    k_palm = 14
    t = np.linspace(0.0, 1.0, k_palm + 2)[1:-1]
    u = 0.5 - 0.5 * np.cos(np.pi * t)
    u = np.sort(np.append(u, 0.18))  # the wrist ring
    u_wrist = int(np.searchsorted(u, 0.18))
    endcap = (1.0 - np.abs(2.0 * u - 1.0) ** 6) ** (1.0 / 6.0)
    ry = pthick * np.interp(u, [0.0, 0.5, 1.0], [0.0115, 0.0135, 0.0105]) * endcap
    rz = pwidth * np.interp(u, [0.0, 0.3, 0.7, 1.0], [0.028, 0.036, 0.041, 0.040]) * endcap
    centers = np.stack([u, np.full_like(u, -0.0015), pwidth * 0.004 * u], -1)
    ex, ey = np.tile([1.0, 0.0, 0.0], (len(u), 1)), np.tile([0.0, 1.0, 0.0], (len(u), 1))
    pv = _tube_vertices(centers, ey, ex, ry, rz, _N_PALM, 3.0, np.array([0.0, -0.0015, 0.0]), np.array([1.0, -0.0015, pwidth * 0.004]))
    # map u in [0, 1] to x: the wrist end is straight, the distal end bends along the MCP arc
    mz = np.array([fingers[f][0][2] for f in ("index", "middle", "ring", "little")])
    mx = np.array([fingers[f][0][0] for f in ("index", "middle", "ring", "little")])
    x0 = -0.022 * plen
    x_end = np.interp(pv[:, 2], mz, mx) + 0.006 * plen
    pv[:, 0] = x0 + pv[:, 0] * (x_end - x0)
    s_palm = np.concatenate([u, [0.0, 1.0]])
    parts.append(_Part("palm", 0, len(u), _N_PALM, s_palm, u[[u_wrist]], (u_wrist,), np.zeros(3), np.array([1.0, 0, 0]), ey[0]))
    verts.append(pv)
    faces.append(_tube_faces(len(u), _N_PALM, 0))
    count = len(pv)

    for name in ("index", "middle", "little", "ring", "thumb"):  # MANO's joint order
        base, d, up, ls, r0, flat, thumb = fingers[name]
        s, r, joints, base_s, tip_s = _finger_stations(ls, r0, thick, thumb)
        centers = base[None] + s[:, None] * d[None]
        k = len(s)
        fv = _tube_vertices(centers, np.tile(up, (k, 1)), np.tile(d, (k, 1)), flat * r, r, _N_FINGER, 2.0,
                            base + base_s * d, base + tip_s * d)
        parts.append(_Part(name, count, k, _N_FINGER, np.concatenate([s, [base_s, tip_s]]), s[list(joints)], joints, base, d, up))
        verts.append(fv)
        faces.append(_tube_faces(k, _N_FINGER, count))
        count += len(fv)

    v = np.concatenate(verts)
    # wrist joint (the centre of the wrist ring) at the origin for every shape; scale about it
    shift = v[parts[0].ring_ids(u_wrist)].mean(0)
    v = (v - shift) * scale
    for part in parts:
        part.origin = (part.origin - shift) * scale
    return v, np.concatenate(faces), parts


def _joint_regressor(parts, n_verts: int) -> np.ndarray:
    """[16, V]: each joint is the mean of the ring of vertices placed around it."""
    jr = np.zeros((16, n_verts))
    for part in parts:
        ids = (0,) if part.name == "palm" else FINGER_JOINTS[part.name]
        for j, ring in zip(ids, part.joint_rings):
            jr[j, part.ring_ids(ring)] = 1.0 / part.n_around
    return jr


def _skinning_weights(v: np.ndarray, parts) -> np.ndarray:
    """[V, 16] smooth weights: each finger vertex follows the bone it lies on, blended across a
    window around each joint; palm vertices near the knuckles / thumb base follow those a little."""
    w = np.zeros((len(v), 16))
    palm = parts[0]
    half = {0: 0.014, 1: 0.010, 2: 0.008}  # blend half-width at MCP / PIP / DIP (m)
    for part in parts[1:]:
        s = part.vertex_s()
        ids = FINGER_JOINTS[part.name]
        b = [_smoothstep((s - part.ring_s[k] + half[k]) / (2 * half[k])) for k in range(3)]
        rows = np.arange(part.start, part.stop)
        w[rows, 0] = 1.0 - b[0]
        w[rows, ids[0]] = b[0] - b[1]
        w[rows, ids[1]] = b[1] - b[2]
        w[rows, ids[2]] = b[2]
    # knuckle region of the palm
    pv = v[palm.start:palm.stop]
    share = np.zeros((len(pv), 16))
    for part in parts[1:]:
        rel = pv - part.origin
        along = rel @ part.d
        lateral = np.linalg.norm(rel - along[:, None] * part.d - (rel @ part.up)[:, None] * part.up, axis=1)
        if part.name == "thumb":
            infl = 0.5 * _smoothstep((along + 0.004) / 0.03) * np.exp(-((lateral / 0.016) ** 2))
        else:
            infl = 0.6 * _smoothstep((along + 0.016) / 0.02) * np.exp(-((lateral / 0.009) ** 2))
        share[:, FINGER_JOINTS[part.name][0]] = infl
    total = share.sum(1, keepdims=True)
    share = share / np.maximum(total, 1.0)  # never more than everything
    w[palm.start:palm.stop] = share
    w[palm.start:palm.stop, 0] = 1.0 - share.sum(1)
    return w


def _axes(parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-root joint (15): flexion axis d x n (n = palmar = -up), abduction axis (palm normal
    +y; rotating about it moves a finger towards the thumb) and twist axis d. Each [15, 3]."""
    flex, abd, twist = np.zeros((15, 3)), np.zeros((15, 3)), np.zeros((15, 3))
    for part in parts[1:]:
        for j in FINGER_JOINTS[part.name]:
            flex[j - 1] = _unit(np.cross(part.d, -part.up))
            abd[j - 1] = _unit(np.array([0.0, 1.0, 0.0]) - np.dot([0.0, 1.0, 0.0], part.d) * part.d)
            twist[j - 1] = part.d
    return flex, abd, twist


def _pose_correctives(v: np.ndarray, parts) -> np.ndarray:
    """[V, 3, 135] pose blend shapes: near each finger joint the skin bulges outwards with the bend
    magnitude (1 - cos theta, from the trace of R - I) and the palmar side fills out with flexion
    (sin theta about the flexion axis): this counters LBS's volume loss at bent joints."""
    pd = np.zeros((len(v), 3, 135))
    flex, _, _ = _axes(parts)
    bulge, fold = 0.0015, 0.0020  # m at a 90 degree bend
    for part in parts[1:]:
        s = part.vertex_s()
        rows = np.arange(part.start, part.stop)
        rel = v[rows] - part.origin
        rel = rel - np.outer(rel @ part.d, part.d)
        normal = rel / np.maximum(np.linalg.norm(rel, axis=1, keepdims=True), 1e-9)
        palmar = np.clip(normal @ (-part.up), 0.0, None)
        for k, j in enumerate(FINGER_JOINTS[part.name]):
            width = 0.008 if k == 0 else 0.006
            g = np.exp(-(((s - part.ring_s[k]) / width) ** 2))
            c = 9 * (j - 1)
            # -(tr(R - I)) / 2 = 1 - cos(theta): feature entries 0, 4, 8
            for e in (0, 4, 8):
                pd[rows, :, c + e] += (-0.5 * bulge * g)[:, None] * normal
            # sin(theta) about axis a = 0.5 * a . vee(R - R^T), vee = (f21 - f12, f02 - f20, f10 - f01)
            a = flex[j - 1]
            amp = (fold * g * palmar)[:, None] * normal
            for (pos, neg), ak in zip(((7, 5), (2, 6), (3, 1)), a):
                pd[rows, :, c + pos] += 0.5 * ak * amp
                pd[rows, :, c + neg] -= 0.5 * ak * amp
    return pd


def _pose_space(parts, jitter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """hands_components [45, 45] (orthonormal rows, plausible synergies first) and hands_mean [45]."""
    flex, abd, twist = _axes(parts)

    def vec(coef_flex=None, coef_abd=None, extra=None):
        out = np.zeros((15, 3))
        for j, c in (coef_flex or {}).items():
            out[j - 1] += c * flex[j - 1]
        for j, c in (coef_abd or {}).items():
            out[j - 1] += c * abd[j - 1]
        for j, axis in (extra or {}).items():
            out[j - 1] += axis
        return out.reshape(45)

    long = ("index", "middle", "ring", "little")
    thumb = parts[-1]
    # thumb opposition: the CMC swings the thumb across the palm (towards -y and +z)
    target = _unit(np.array([0.3, -1.0, 1.2]))
    opp_axis = _unit(np.cross(thumb.d, target))
    designs = [
        # 0 curl everything (fist)
        vec({**{FINGER_JOINTS[f][0]: 1.0 for f in long}, **{FINGER_JOINTS[f][1]: 1.1 for f in long},
             **{FINGER_JOINTS[f][2]: 0.7 for f in long}, 13: 0.25, 14: 0.6, 15: 0.6}),
        # 1 spread: index towards the thumb, ring and little away, thumb abducted
        vec(coef_abd={1: 1.0, 4: 0.15, 10: -0.7, 7: -1.2, 13: 0.6}),
        # 2 thumb opposition
        vec({14: 0.5, 15: 0.4, 7: 0.2, 10: 0.1}, extra={13: 1.0 * opp_axis}),
        # 3 pointing: index straight, the others curled
        vec({1: -0.6, 2: -0.6, 3: -0.3, **{FINGER_JOINTS[f][0]: 0.6 for f in ("middle", "ring", "little")},
             **{FINGER_JOINTS[f][1]: 0.8 for f in ("middle", "ring", "little")}}),
        # 4 knuckle bend vs finger curl (flat grasp vs hook)
        vec({**{FINGER_JOINTS[f][0]: 1.0 for f in long}, **{FINGER_JOINTS[f][1]: -0.6 for f in long},
             **{FINGER_JOINTS[f][2]: -0.5 for f in long}}),
        # 5 gradient across the fingers: little / ring curl, index / middle open
        vec({1: -1.0, 2: -0.8, 4: -0.3, 5: -0.3, 10: 0.5, 11: 0.5, 7: 1.0, 8: 0.9}),
        # 6 thumb flexion
        vec({13: 0.3, 14: 1.0, 15: 1.0}),
        # 7 distal curl only
        vec({**{FINGER_JOINTS[f][2]: 1.0 for f in long}, 15: 0.8}),
    ]
    designs = [dv * (1.0 + jit) for dv, jit in zip(designs, jitter)]
    singles = [np.kron(np.eye(15)[j], ax[j]) for ax in (flex, abd, twist) for j in range(15)]
    basis = []
    for cand in designs + singles:  # Gram-Schmidt, keeping the order of plausibility
        for b in basis:
            cand = cand - np.dot(cand, b) * b
        for b in basis:  # second pass for numerical orthogonality
            cand = cand - np.dot(cand, b) * b
        norm = np.linalg.norm(cand)
        if norm > 1e-6:
            basis.append(cand / norm)
        if len(basis) == 45:
            break
    comps = np.stack(basis)
    mean = vec({**{FINGER_JOINTS[f][0]: 0.25 for f in long}, **{FINGER_JOINTS[f][1]: 0.3 for f in long},
                **{FINGER_JOINTS[f][2]: 0.15 for f in long}, 13: 0.1, 14: 0.15, 15: 0.2},
               coef_abd={1: 0.05, 10: -0.04, 7: -0.08})
    return comps, mean


def _mirror_pose(x: np.ndarray) -> np.ndarray:
    """Axis-angle vectors [..., 45] mirrored by x -> -x: (ax, ay, az) -> (ax, -ay, -az)."""
    return (x.reshape(*x.shape[:-1], 15, 3) * np.array([1.0, -1.0, -1.0])).reshape(x.shape)


def synthetic_model(seed: int = 0, is_right: bool = True) -> ManoModel:
    """A procedural MANO-format hand (V = 912 vertices, F = 1800 faces). Deterministic per ``seed``; seed 0 is the
    canonical hand, other seeds vary proportions by a few percent. See the module docstring."""
    det = _details(seed)
    ones = np.ones(10)
    v, f, parts = _build(ones, det)
    # shape blend shapes: central differences of the (smooth) construction, times each sigma
    shapedirs = np.zeros((len(v), 3, 10))
    h = 1e-4
    for k in range(10):
        dp = np.zeros(10)
        dp[k] = h
        shapedirs[:, :, k] = (_build(ones + dp, det)[0] - _build(ones - dp, det)[0]) / (2 * h) * SHAPE_SIGMA[k]
    jr = _joint_regressor(parts, len(v))
    weights = _skinning_weights(v, parts)
    posedirs = _pose_correctives(v, parts)
    comps, mean = _pose_space(parts, det["pose"])
    tips = [parts[[p.name for p in parts].index(n)].stop - 1 for n in _TIP_ORDER]  # end poles

    if not is_right:  # mirror x -> -x; re-wind the faces so they stay outward
        m = np.array([-1.0, 1.0, 1.0])
        v = v * m
        shapedirs = shapedirs * m[None, :, None]
        # pose feature (R - I)[r, c] of a mirrored rotation is m_r m_c (R - I)[r, c]; offsets flip x
        feat = np.tile(np.outer(m, m).reshape(9), 15)
        posedirs = posedirs * m[None, :, None] * feat[None, None, :]
        f = f[:, [0, 2, 1]]
        comps, mean = _mirror_pose(comps), _mirror_pose(mean)

    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    return ManoModel(
        v_template=t(v), shapedirs=t(shapedirs), posedirs=t(posedirs), J_regressor=t(jr), weights=t(weights),
        faces=torch.as_tensor(f, dtype=torch.int64), parents=torch.tensor(MANO_PARENTS, dtype=torch.int64),
        hands_components=t(comps), hands_mean=t(mean), fingertip_ids=torch.tensor(tips, dtype=torch.int64),
        is_right=is_right,
    )


# --------------------------------------------------------------------------------------------------
# a small evaluator and a picture


def _forward(model: ManoModel, betas=None, hand_pose=None) -> tuple[np.ndarray, np.ndarray]:
    """MANO forward (no global rotation) in numpy, as smplx evaluates it: vertices [V, 3], joints [16, 3]."""
    m = {k: getattr(model, k).numpy() for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights")}
    betas = np.zeros(10) if betas is None else np.asarray(betas, dtype=float)
    pose = np.zeros(45) if hand_pose is None else np.asarray(hand_pose, dtype=float)
    vs = m["v_template"] + m["shapedirs"] @ betas
    j = m["J_regressor"] @ vs
    rot = axis_angle_to_matrix(torch.from_numpy(np.concatenate([np.zeros(3), pose]).reshape(16, 3))).numpy()
    vp = vs + m["posedirs"] @ (rot[1:] - np.eye(3)).reshape(-1)
    parents = model.parents.numpy()
    glob = np.zeros((16, 4, 4))
    for i in range(16):
        local = np.eye(4)
        local[:3, :3] = rot[i]
        local[:3, 3] = j[i] - (j[parents[i]] if i else 0)
        glob[i] = local if i == 0 else glob[parents[i]] @ local
    rel = glob.copy()
    rel[:, :3, 3] -= np.einsum("jab,jb->ja", glob[:, :3, :3], j)
    tr = np.einsum("vj,jab->vab", m["weights"], rel)
    verts = np.einsum("vab,vb->va", tr[:, :3, :3], vp) + tr[:, :3, 3]
    return verts, glob[:, :3, 3]


def hand_length_width(model: ManoModel, betas=None) -> tuple[float, float]:
    """Thesis Sec. 6.4 measures at the flat pose, in m: L = wrist joint to the middle fingertip
    vertex, W = index MCP to ring MCP."""
    v, j = _forward(model, betas)
    tip = int(model.fingertip_ids[2])
    return float(np.linalg.norm(v[tip] - j[0])), float(np.linalg.norm(j[1] - j[10]))


def render(path: str, seed: int = 0, is_right: bool = True) -> None:
    """Write a PNG of the model: rest pose (two views), curled, spread, thumb opposition, random betas."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    model = synthetic_model(seed, is_right)
    comps = model.hands_components.numpy()
    faces = model.faces.numpy()
    rng = np.random.default_rng(1)
    panels = [
        ("rest pose (back of the hand, +y)", None, None, (90, -90)),
        ("rest pose (palm side, -y)", None, None, (-90, -90)),
        ("rest pose (side, from the thumb)", None, None, (10, -20)),
        ("curl: 2.5 x hands_components[0]", None, 2.5 * comps[0], (10, -20)),
        ("spread: 1.5 x hands_components[1]", None, 1.5 * comps[1], (90, -90)),
        ("thumb opposition: 1.5 x comp. [2] (palm)", None, 1.5 * comps[2], (-90, -90)),
    ] + [(f"betas ~ 1.5 N(0, 1), #{i}", rng.standard_normal(10) * 1.5, None, (90, -90)) for i in range(3)]
    fig = plt.figure(figsize=(15, 15))
    light = _unit(np.array([0.3, 1.0, 0.6]))
    for i, (title, betas, pose, (elev, azim)) in enumerate(panels):
        v, j = _forward(model, betas, pose)
        tri = v[faces]
        n = _unit(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) + 1e-12)
        shade = 0.35 + 0.65 * np.abs(n @ light)
        color = np.clip(np.array([0.95, 0.75, 0.62])[None] * shade[:, None], 0, 1)
        ax = fig.add_subplot(3, 3, i + 1, projection="3d", computed_zorder=False)
        ax.add_collection3d(Poly3DCollection(tri, facecolors=color, edgecolors=(0, 0, 0, 0.08), linewidths=0.2, zorder=1))
        # the 16 joints and the kinematic tree, drawn over the (opaque) mesh
        ax.scatter(*j.T, c="navy", s=5, depthshade=False, zorder=3, alpha=0.6)
        for c, p in enumerate(MANO_PARENTS):
            if p >= 0:
                ax.plot(*np.stack([j[p], j[c]]).T, c="navy", lw=0.7, alpha=0.5, zorder=2)
        if betas is not None:
            length, width = hand_length_width(model, betas)
            title += f"\nL = {1000 * length:.0f} mm, W = {1000 * width:.0f} mm"
        elif pose is None:
            length, width = hand_length_width(model)
            title += f"\nL = {1000 * length:.0f} mm, W = {1000 * width:.0f} mm"
        ax.set_title(title, fontsize=10)
        ax.set_xlim(*((-0.03, 0.19) if is_right else (-0.19, 0.03))), ax.set_ylim(-0.11, 0.11), ax.set_zlim(-0.11, 0.11)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=elev, azim=azim, vertical_axis="y")
        ax.set_xlabel("x"), ax.set_ylabel("y"), ax.set_zlabel("z")
        ax.tick_params(labelsize=6)
    fig.suptitle(f"handops synthetic MANO hand (seed {seed}, {'right' if is_right else 'left'}, V = {model.num_vertices}, F = {len(faces)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _main() -> None:
    parser = argparse.ArgumentParser(description="Render the synthetic MANO hand to a PNG.")
    parser.add_argument("--out", default="hand.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--left", action="store_true", help="the left hand (mirror image)")
    args = parser.parse_args()
    render(args.out, args.seed, not args.left)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    _main()
