"""Scene, second stage: the global orientation of the hand (axis-angle [B, 3], MANO frame to camera frame).

With probability ``uniform_view`` a uniformly random rotation; otherwise the palm or the back of the hand
faces the camera, tilted by |N(0, 35 deg)| (at most 80) in a random direction, then turned by a
uniformly random in-plane angle. Composed as unit quaternions (w, x, y, z) in float64.

The quaternion helpers stay here rather than composing matrices with ``handops.geometry`` (which has no
quaternions): ``matrix_to_axis_angle`` of the composed matrices differs in the last bits (up to 9e-16 rad),
and the samples are pinned bit for bit.
"""

from __future__ import annotations

import numpy as np

from handops_models.data.synthetic.stream import Cursor


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products of quaternions (w, x, y, z) [B, 4] (or [4]): the rotation b, then a."""
    a, b = np.broadcast_arrays(np.atleast_2d(a), np.atleast_2d(b))
    aw, ax, ay, az = a.T
    bw, bx, by, bz = b.T
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], 1)


def quat_axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Quaternions [B, 4] of rotations by ``angle`` [B] about unit ``axis`` [B, 3]."""
    return np.concatenate([np.cos(angle / 2)[:, None], np.sin(angle / 2)[:, None] * axis], 1)


def quat_from_matrix(m: np.ndarray) -> np.ndarray:
    """The unit quaternion (w >= 0) of a rotation matrix [3, 3] (Shepperd's method)."""
    t = np.trace(m)
    k = int(np.argmax([t, m[0, 0], m[1, 1], m[2, 2]]))
    if k == 0:
        r = np.sqrt(1 + t)
        q = [r / 2, (m[2, 1] - m[1, 2]) / (2 * r), (m[0, 2] - m[2, 0]) / (2 * r), (m[1, 0] - m[0, 1]) / (2 * r)]
    else:
        i, j, l = k - 1, k % 3, (k + 1) % 3
        r = np.sqrt(1 + m[i, i] - m[j, j] - m[l, l])
        q = [0.0] * 4
        q[0] = (m[l, j] - m[j, l]) / (2 * r)
        q[1 + i] = r / 2
        q[1 + j] = (m[j, i] + m[i, j]) / (2 * r)
        q[1 + l] = (m[l, i] + m[i, l]) / (2 * r)
    q = np.array(q)
    return q if q[0] >= 0 else -q


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Axis-angle vectors [B, 3] (angle in [0, pi]) of unit quaternions ``quat`` [B, 4]."""
    quat = quat * np.where(quat[:, :1] < 0, -1.0, 1.0)  # the same rotation with w >= 0
    vec = quat[:, 1:]
    sin_half = np.linalg.norm(vec, axis=1, keepdims=True)
    return 2.0 * np.arctan2(sin_half, quat[:, :1]) * vec / np.maximum(sin_half, 1e-12)


# MANO frame (fingers +x, palm normal -y) to camera frame (x right, y down, z forward) with the fingers
# up in the image (-y) and the palm (normal -z, towards the camera) or the back of the hand facing it.
# Columns R x, R y, R z: palm: (0, -1, 0), (0, 0, 1), (-1, 0, 0); back: (0, -1, 0), (0, 0, -1), (1, 0, 0).
Q_PALM_TO_CAMERA = quat_from_matrix(np.array([[0.0, 0, -1], [-1, 0, 0], [0, 1, 0]]))
Q_BACK_TO_CAMERA = quat_from_matrix(np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]))


def sample_global_orient(U: Cursor, Z: Cursor, uniform_view: float) -> np.ndarray:
    """[B, 3] axis-angle global orientations: uniform with probability ``uniform_view``, else a framed
    view (palm or back towards the camera, tilted, any in-plane angle; see the module docstring)."""
    batch = U.values.shape[0]
    uniform = Z.take(4)
    uniform = uniform / np.linalg.norm(uniform, axis=1, keepdims=True)
    facing = np.where((U.take() < 0.5)[:, None], Q_PALM_TO_CAMERA, Q_BACK_TO_CAMERA)
    tilt_dir = 2 * np.pi * U.take()
    tilt = np.minimum(np.abs(Z.take()) * np.radians(35.0), np.radians(80.0))
    q_tilt = quat_axis_angle(np.stack([np.cos(tilt_dir), np.sin(tilt_dir), np.zeros(batch)], 1), tilt)
    q_roll = quat_axis_angle(np.tile([0.0, 0.0, 1.0], (batch, 1)), 2 * np.pi * U.take())
    framed = quat_mul(q_roll, quat_mul(q_tilt, facing))
    quat = np.where((U.take() < uniform_view)[:, None], uniform, framed)
    return quat_to_axis_angle(quat)
