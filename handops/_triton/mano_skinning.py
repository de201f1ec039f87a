"""Triton kernels of the fused MANO skinning op ``handops::mano_skinning`` (thesis Sec. 2.5) and its backward.

The registered ops are ``OPS["mano_skinning"]`` (``mano_skinning_forward``) and
``OPS["mano_skinning_backward"]``, with the schema of ``handops::mano_skinning``; the contract is
``handops/_reference/mano.py``'s ``mano_skinning_reference``. Inside, ``_forward`` / ``_backward`` take
betas [B, S] with S <= S', rotations [B, 16, 3, 3] (the root first), v_template [V, 3], shapedirs
[V, 3, S'] (the first S used), posedirs [V, 3, 135], the joint basis J_template = J_regressor v_template
[16, 3] and J_shapedirs = J_regressor shapedirs [16, 3, S'] (J is linear in the shape), weights [V, 16],
parents 16 ints (parents[0] < 0, 0 <= parents[k] < k), and return vertices [B, V, 3], joints [B, 16, 3],
transforms [B, 16, 4, 4] without the global translation:

    J_k   = J_template[k] + J_shapedirs[k, :, :S] betas                      (rest joints)
    R'_0  = R_0,  t_0 = J_0;   R'_k = R'_p R_k,  t_k = R'_p J_k + a_p  (p = parents[k])
    a_k   = t_k - R'_k J_k,  A_k = [R'_k | a_k; 0 0 0 1],  joints_k = t_k
    f     = vec(R_1 - I, ..., R_15 - I)                                        [B, 135]
    x_v   = v_template[v] + shapedirs[v, :, :S] betas + posedirs[v] f          (v_posed, never stored)
    vertices_v = M_v x_v + m_v,  [M_v | m_v] = sum_k weights[v, k] [R'_k | a_k]

(t_k = R'_p J_k + a_p is the reference's G_p [R_k | J_k - J_p] translation, since a_p = t_p - R'_p J_p.)

* ``_chain_forward_kernel``: one program per block of BLOCK_B hands (every per-hand scalar is a
  [BLOCK_B] vector), the 16 joints in index order; a joint reads its parent's A_p back from the
  transforms output it wrote (a barrier between joints).
* ``_skin_kernel``: one program per (block of BLOCK_B hands, block of BLOCK_V vertices). Every
  per-vertex quantity is a [BLOCK_V, BLOCK_B] tile, so each model row is read once per BLOCK_B
  hands: the shape and pose blends are ``tl.dot``s ([BLOCK_V, S] x [S, BLOCK_B], 135 pose features in
  chunks of BLOCK_P), each entry of [M_v | m_v] one [BLOCK_V, 16] x [16, BLOCK_B] ``tl.dot`` with
  the weights. Only vertices is written.

Backward, with g_v = grad_vertices[b, v] (the forward is recomputed,
the chain first; nothing is saved):

* ``_skin_adjoint_kernel`` (same grid as ``_skin_kernel``) writes per-vertex-block partial sums
  (no atomics, so the result is deterministic):
      gA_part[blk, b, k]  = sum_{v in blk} weights[v, k] g_v [x_v; 1]^T                 [3, 4]
      gx_v                = M_v^T g_v                                      (dL/dv_posed, registers)
      gf_part[blk, b]     = sum_{v in blk} posedirs[v]^T gx_v                           [135]
      gbeta_part[blk, b]  = sum_{v in blk} shapedirs[v, :, :S]^T gx_v                   [S]
* ``_chain_backward_kernel`` (one program per block of hands) sums the partials over the blocks,
  adds grad_transforms[..., :3, :] and grad_joints, and runs the chain in reverse (children before
  parents, accumulating dL/dR'_p, dL/da_p in a [B, 16, 16] scratch):
      a_k = t_k - R'_k J_k:   gt_k += ga_k,  gR'_k -= ga_k J_k^T,  gJ_k = -R'_k^T ga_k
      t_k = R'_p J_k + a_p:   gR'_p += gt_k J_k^T,  ga_p += gt_k,  gJ_k += R'_p^T gt_k
      R'_k = R'_p R_k:        gR'_p += gR'_k R_k^T,  grad_R_k = R'_p^T gR'_k + gf[k - 1]
      root: grad_R_0 = gR'_0 - ga_0 J_0^T,  gJ_0 = gt_0 + ga_0 - R_0^T ga_0
      grad_betas = sum_blk gbeta_part + J_shapedirs[:, :, :S]^T gJ
  The bottom row of grad_transforms is ignored (that row is constant).

``mano_skinning_forward`` / ``mano_skinning_backward`` (the registered schema: pose as axis-angle
[B, 16, 3] or matrices, transl, keypoint_ids) are torch glue around ``_forward`` / ``_backward`` for
transl and the keypoint gather (its gradient a one-hot product, deterministic), with Rodrigues and its
adjoint in ``_rodrigues_kernel``.

Launches: forward ``_chain_forward_kernel`` + ``_skin_kernel``; backward the chain +
``_skin_adjoint_kernel`` + ``_chain_backward_kernel``. An axis-angle pose adds one
``_rodrigues_kernel`` launch to the forward (R from r, computed in float64) and two to the backward (R
again, and dL/dr from dL/dR analytically). The joints come from the joint basis, so they need not come
from the vertices given (e.g. a subset of the mesh).

Everything computes in the input dtype (float32 or float64; every tensor must have the dtype of
betas, the incoming gradients are cast to it). fp32 ``tl.dot`` uses input_precision="ieee" (no TF32).
At most MAX_BATCH (about 11 million) hands per call. Tested in the Triton interpreter and compiled
for sm_80/sm_90; never run on a GPU, so the block sizes are untuned.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from handops._triton._common import constexpr_names, kernel_signature
from handops.geometry import RODRIGUES_SERIES_BELOW

__all__ = ["OPS", "mano_skinning_forward", "mano_skinning_backward", "compile_specs", "KERNELS"]

_SERIES_BELOW = tl.constexpr(RODRIGUES_SERIES_BELOW)  # the squared angle below which Rodrigues uses its series
NUM_JOINTS = 16
NUM_POSE = 135  # (16 - 1) * 9 pose features

# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _load_matrix3(ptr, ok):
    """The nine entries of a row-major 3x3 matrix at ``ptr`` (per hand lane; zero where ``ok`` is off)."""
    return (tl.load(ptr + 0, mask=ok, other=0.0), tl.load(ptr + 1, mask=ok, other=0.0), tl.load(ptr + 2, mask=ok, other=0.0),
            tl.load(ptr + 3, mask=ok, other=0.0), tl.load(ptr + 4, mask=ok, other=0.0), tl.load(ptr + 5, mask=ok, other=0.0),
            tl.load(ptr + 6, mask=ok, other=0.0), tl.load(ptr + 7, mask=ok, other=0.0), tl.load(ptr + 8, mask=ok, other=0.0))


@triton.jit
def _rest_joint(jt_ptr, js_ptr, betas, s, s_ok, JS_full, row):
    """J[:, row] (row = 3 k + c) for the hands of ``betas`` [BLOCK_B, BLOCK_S]: [BLOCK_B]."""
    js = tl.load(js_ptr + row * JS_full + s, mask=s_ok, other=0.0)
    return tl.load(jt_ptr + row) + tl.sum(betas * js[None, :], axis=1)


@triton.jit
def _load_betas(betas_ptr, hand, hand_ok, S, BLOCK_S: tl.constexpr):
    s = tl.arange(0, BLOCK_S)
    s_ok = s < S
    betas = tl.load(betas_ptr + hand[:, None] * S + s[None, :], mask=hand_ok[:, None] & s_ok[None, :], other=0.0)
    return betas, s, s_ok


@triton.jit
def _chain_forward_kernel(
    betas_ptr, rot_ptr, jt_ptr, js_ptr, parent_tab, joints_ptr, tf_ptr,
    B, S, JS_full,
    BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """joints [B, 16, 3] and transforms A_k [B, 16, 4, 4] of BLOCK_B hands (the kinematic chain)."""
    hand = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    ok = hand < B
    betas, s, s_ok = _load_betas(betas_ptr, hand, ok, S, BLOCK_S)
    zero = tl.zeros([BLOCK_B], dtype=tf_ptr.dtype.element_ty)
    rot = rot_ptr + hand * 144
    tf = tf_ptr + hand * 256
    jo = joints_ptr + hand * 48
    # Root: R'_0 = R_0, t_0 = J_0, a_0 = J_0 - R_0 J_0.
    j0 = _rest_joint(jt_ptr, js_ptr, betas, s, s_ok, JS_full, 0)
    j1 = _rest_joint(jt_ptr, js_ptr, betas, s, s_ok, JS_full, 1)
    j2 = _rest_joint(jt_ptr, js_ptr, betas, s, s_ok, JS_full, 2)
    for r in tl.static_range(3):
        q0 = tl.load(rot + 3 * r + 0, mask=ok, other=0.0)
        q1 = tl.load(rot + 3 * r + 1, mask=ok, other=0.0)
        q2 = tl.load(rot + 3 * r + 2, mask=ok, other=0.0)
        if r == 0:
            t = j0
        elif r == 1:
            t = j1
        else:
            t = j2
        tl.store(tf + 4 * r + 0, q0, mask=ok)
        tl.store(tf + 4 * r + 1, q1, mask=ok)
        tl.store(tf + 4 * r + 2, q2, mask=ok)
        tl.store(tf + 4 * r + 3, t - (q0 * j0 + q1 * j1 + q2 * j2), mask=ok)
        tl.store(jo + r, t, mask=ok)
    tl.store(tf + 12, zero, mask=ok)
    tl.store(tf + 13, zero, mask=ok)
    tl.store(tf + 14, zero, mask=ok)
    tl.store(tf + 15, zero + 1, mask=ok)
    tl.debug_barrier()
    for k in range(1, 16):
        p = tl.load(parent_tab + k)
        tp = tf + p * 16
        rk = rot + k * 9
        tk = tf + k * 16
        j0 = _rest_joint(jt_ptr, js_ptr, betas, s, s_ok, JS_full, 3 * k + 0)
        j1 = _rest_joint(jt_ptr, js_ptr, betas, s, s_ok, JS_full, 3 * k + 1)
        j2 = _rest_joint(jt_ptr, js_ptr, betas, s, s_ok, JS_full, 3 * k + 2)
        q00, q01, q02, q10, q11, q12, q20, q21, q22 = _load_matrix3(rk, ok)
        for r in tl.static_range(3):
            # Row r of R'_p and a_p[r].
            p0 = tl.load(tp + 4 * r + 0, mask=ok, other=0.0)
            p1 = tl.load(tp + 4 * r + 1, mask=ok, other=0.0)
            p2 = tl.load(tp + 4 * r + 2, mask=ok, other=0.0)
            pa = tl.load(tp + 4 * r + 3, mask=ok, other=0.0)
            c0 = p0 * q00 + p1 * q10 + p2 * q20
            c1 = p0 * q01 + p1 * q11 + p2 * q21
            c2 = p0 * q02 + p1 * q12 + p2 * q22
            t = p0 * j0 + p1 * j1 + p2 * j2 + pa
            tl.store(tk + 4 * r + 0, c0, mask=ok)
            tl.store(tk + 4 * r + 1, c1, mask=ok)
            tl.store(tk + 4 * r + 2, c2, mask=ok)
            tl.store(tk + 4 * r + 3, t - (c0 * j0 + c1 * j1 + c2 * j2), mask=ok)
            tl.store(jo + 3 * k + r, t, mask=ok)
        tl.store(tk + 12, zero, mask=ok)
        tl.store(tk + 13, zero, mask=ok)
        tl.store(tk + 14, zero, mask=ok)
        tl.store(tk + 15, zero + 1, mask=ok)
        # The children read this joint back (other threads may hold the same hands).
        tl.debug_barrier()


@triton.jit
def _posed_coord(vt_ptr, sd_ptr, pd_ptr, rot_ptr, betas_t, vert, vert_ok, hand, hand_ok, s, s_ok, S_full, c,
                 BLOCK_P: tl.constexpr, PRECISION: tl.constexpr):
    """Coordinate c of v_posed for a [BLOCK_V, BLOCK_B] tile (vertices x hands)."""
    row = vert * 3 + c
    base = tl.load(vt_ptr + row, mask=vert_ok, other=0.0)
    sd = tl.load(sd_ptr + row[:, None] * S_full + s[None, :], mask=vert_ok[:, None] & s_ok[None, :], other=0.0)
    acc = base[:, None] + tl.dot(sd, betas_t, input_precision=PRECISION)
    for p0 in range(0, 135, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_ok = p < 135
        pd = tl.load(pd_ptr + row[:, None] * 135 + p[None, :], mask=vert_ok[:, None] & p_ok[None, :], other=0.0)
        # f[b, p] = R_{1 + p // 9}[p % 9] - I[p % 9]; the diagonal is p % 9 in {0, 4, 8}.
        eye = tl.where(((p % 9) % 4 == 0) & p_ok, 1.0, 0.0).to(pd.dtype)
        f_t = tl.load(rot_ptr + hand[None, :] * 144 + 9 + p[:, None], mask=p_ok[:, None] & hand_ok[None, :], other=0.0)
        f_t = tl.where(hand_ok[None, :], f_t - eye[:, None], 0.0)
        acc += tl.dot(pd, f_t, input_precision=PRECISION)
    return acc


@triton.jit
def _blend(weights, tf_ptr, hand, hand_ok, joint, e, PRECISION: tl.constexpr):
    """Entry e of sum_k weights[v, k] A_k for a [BLOCK_V, BLOCK_B] tile (e = 4 r + j, r < 3)."""
    a_t = tl.load(tf_ptr + hand[None, :] * 256 + joint[:, None] * 16 + e, mask=hand_ok[None, :], other=0.0)
    return tl.dot(weights, a_t, input_precision=PRECISION)


@triton.jit
def _skin_setup(betas_ptr, w_ptr, B, V, S, BLOCK_V: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr):
    # Hand blocks on grid axis 0 (CUDA allows 2^31 - 1 there, 65535 on axis 1): programs launched
    # together then share the vertex block, so its model rows are read from L2 by all of them.
    hand = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    vert = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    vert_ok = vert < V
    vert = vert.to(tl.int64)
    hand_ok = hand < B
    s = tl.arange(0, BLOCK_S)
    s_ok = s < S
    betas_t = tl.load(betas_ptr + hand[None, :] * S + s[:, None], mask=s_ok[:, None] & hand_ok[None, :], other=0.0)
    joint = tl.arange(0, 16)
    weights = tl.load(w_ptr + vert[:, None] * 16 + joint[None, :], mask=vert_ok[:, None], other=0.0)
    return vert, vert_ok, hand, hand_ok, s, s_ok, betas_t, joint, weights


@triton.jit
def _skin_kernel(
    betas_ptr, rot_ptr, vt_ptr, sd_ptr, pd_ptr, w_ptr, tf_ptr, out_ptr,
    B, V, S, S_full,
    BLOCK_V: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """vertices[b, v] = M_v x_v + m_v for a block of vertices and a block of hands."""
    vert, vert_ok, hand, hand_ok, s, s_ok, betas_t, joint, weights = _skin_setup(
        betas_ptr, w_ptr, B, V, S, BLOCK_V, BLOCK_B, BLOCK_S)
    x0 = _posed_coord(vt_ptr, sd_ptr, pd_ptr, rot_ptr, betas_t, vert, vert_ok, hand, hand_ok, s, s_ok, S_full, 0, BLOCK_P, PRECISION)
    x1 = _posed_coord(vt_ptr, sd_ptr, pd_ptr, rot_ptr, betas_t, vert, vert_ok, hand, hand_ok, s, s_ok, S_full, 1, BLOCK_P, PRECISION)
    x2 = _posed_coord(vt_ptr, sd_ptr, pd_ptr, rot_ptr, betas_t, vert, vert_ok, hand, hand_ok, s, s_ok, S_full, 2, BLOCK_P, PRECISION)
    out = out_ptr + hand[None, :] * (V * 3) + vert[:, None] * 3
    ok = vert_ok[:, None] & hand_ok[None, :]
    for r in tl.static_range(3):
        y = _blend(weights, tf_ptr, hand, hand_ok, joint, 4 * r + 3, PRECISION)
        y += _blend(weights, tf_ptr, hand, hand_ok, joint, 4 * r + 0, PRECISION) * x0
        y += _blend(weights, tf_ptr, hand, hand_ok, joint, 4 * r + 1, PRECISION) * x1
        y += _blend(weights, tf_ptr, hand, hand_ok, joint, 4 * r + 2, PRECISION) * x2
        tl.store(out + r, y, mask=ok)


@triton.jit
def _store_joint_partial(ga_ptr, weights_t, h, hand, hand_ok, joint, e, PRECISION: tl.constexpr):
    """gA_part[blk, b, k, e] = sum_v weights[v, k] h[v, b] (the pointer already at block blk)."""
    part = tl.dot(weights_t, h, input_precision=PRECISION)  # [16, BLOCK_B]
    tl.store(ga_ptr + hand[None, :] * 192 + joint[:, None] * 12 + e, part, mask=hand_ok[None, :])


@triton.jit
def _skin_adjoint_kernel(
    gv_ptr, betas_ptr, rot_ptr, vt_ptr, sd_ptr, pd_ptr, w_ptr, tf_ptr, ga_part_ptr, gf_part_ptr, gb_part_ptr,
    B, V, S, S_full,
    BLOCK_V: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Per-vertex-block partial sums of dL/dA_k, dL/df and the shape-blend part of dL/dbetas."""
    vert, vert_ok, hand, hand_ok, s, s_ok, betas_t, joint, weights = _skin_setup(
        betas_ptr, w_ptr, B, V, S, BLOCK_V, BLOCK_B, BLOCK_S)
    block = tl.program_id(1).to(tl.int64)
    x0 = _posed_coord(vt_ptr, sd_ptr, pd_ptr, rot_ptr, betas_t, vert, vert_ok, hand, hand_ok, s, s_ok, S_full, 0, BLOCK_P, PRECISION)
    x1 = _posed_coord(vt_ptr, sd_ptr, pd_ptr, rot_ptr, betas_t, vert, vert_ok, hand, hand_ok, s, s_ok, S_full, 1, BLOCK_P, PRECISION)
    x2 = _posed_coord(vt_ptr, sd_ptr, pd_ptr, rot_ptr, betas_t, vert, vert_ok, hand, hand_ok, s, s_ok, S_full, 2, BLOCK_P, PRECISION)
    ok = vert_ok[:, None] & hand_ok[None, :]
    gv = gv_ptr + hand[None, :] * (V * 3) + vert[:, None] * 3
    g0 = tl.load(gv + 0, mask=ok, other=0.0)
    g1 = tl.load(gv + 1, mask=ok, other=0.0)
    g2 = tl.load(gv + 2, mask=ok, other=0.0)
    # dL/dA_k = sum_v weights[v, k] g_v [x_v; 1]^T.
    weights_t = tl.trans(weights)  # [16, BLOCK_V]
    ga = ga_part_ptr + block * B * 192
    for r in tl.static_range(3):
        if r == 0:
            g = g0
        elif r == 1:
            g = g1
        else:
            g = g2
        _store_joint_partial(ga, weights_t, g * x0, hand, hand_ok, joint, 4 * r + 0, PRECISION)
        _store_joint_partial(ga, weights_t, g * x1, hand, hand_ok, joint, 4 * r + 1, PRECISION)
        _store_joint_partial(ga, weights_t, g * x2, hand, hand_ok, joint, 4 * r + 2, PRECISION)
        _store_joint_partial(ga, weights_t, g, hand, hand_ok, joint, 4 * r + 3, PRECISION)
    # dL/dx_v = M_v^T g_v (M_v[r, c] is blend entry 4 r + c).
    gx0 = (_blend(weights, tf_ptr, hand, hand_ok, joint, 0, PRECISION) * g0
           + _blend(weights, tf_ptr, hand, hand_ok, joint, 4, PRECISION) * g1
           + _blend(weights, tf_ptr, hand, hand_ok, joint, 8, PRECISION) * g2)
    gx1 = (_blend(weights, tf_ptr, hand, hand_ok, joint, 1, PRECISION) * g0
           + _blend(weights, tf_ptr, hand, hand_ok, joint, 5, PRECISION) * g1
           + _blend(weights, tf_ptr, hand, hand_ok, joint, 9, PRECISION) * g2)
    gx2 = (_blend(weights, tf_ptr, hand, hand_ok, joint, 2, PRECISION) * g0
           + _blend(weights, tf_ptr, hand, hand_ok, joint, 6, PRECISION) * g1
           + _blend(weights, tf_ptr, hand, hand_ok, joint, 10, PRECISION) * g2)
    # Shape blend: sum_v sum_c shapedirs[v, c, s] gx_v[c]  ->  [BLOCK_S, BLOCK_B].
    sd_mask = vert_ok[:, None] & s_ok[None, :]
    sd0 = tl.load(sd_ptr + (vert * 3 + 0)[:, None] * S_full + s[None, :], mask=sd_mask, other=0.0)
    sd1 = tl.load(sd_ptr + (vert * 3 + 1)[:, None] * S_full + s[None, :], mask=sd_mask, other=0.0)
    sd2 = tl.load(sd_ptr + (vert * 3 + 2)[:, None] * S_full + s[None, :], mask=sd_mask, other=0.0)
    gb = tl.dot(tl.trans(sd0), gx0, input_precision=PRECISION)
    gb += tl.dot(tl.trans(sd1), gx1, input_precision=PRECISION)
    gb += tl.dot(tl.trans(sd2), gx2, input_precision=PRECISION)
    tl.store(gb_part_ptr + (block * B + hand[None, :]) * S + s[:, None], gb, mask=s_ok[:, None] & hand_ok[None, :])
    # Pose correctives: sum_v sum_c posedirs[v, c, p] gx_v[c]  ->  [BLOCK_P, BLOCK_B] per chunk.
    for p0 in range(0, 135, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pd_mask = vert_ok[:, None] & (p < 135)[None, :]
        pd0 = tl.load(pd_ptr + (vert * 3 + 0)[:, None] * 135 + p[None, :], mask=pd_mask, other=0.0)
        pd1 = tl.load(pd_ptr + (vert * 3 + 1)[:, None] * 135 + p[None, :], mask=pd_mask, other=0.0)
        pd2 = tl.load(pd_ptr + (vert * 3 + 2)[:, None] * 135 + p[None, :], mask=pd_mask, other=0.0)
        gf = tl.dot(tl.trans(pd0), gx0, input_precision=PRECISION)
        gf += tl.dot(tl.trans(pd1), gx1, input_precision=PRECISION)
        gf += tl.dot(tl.trans(pd2), gx2, input_precision=PRECISION)
        tl.store(gf_part_ptr + (block * B + hand[None, :]) * 135 + p[:, None], gf, mask=(p < 135)[:, None] & hand_ok[None, :])


@triton.jit
def _chain_backward_kernel(
    betas_ptr, rot_ptr, jt_ptr, js_ptr, parent_tab, tf_ptr, gj_ptr, gt_ptr, ga_part_ptr, gf_part_ptr, gb_part_ptr,
    acc_ptr, gbeta_ptr, grot_ptr,
    B, S, JS_full, NB,
    BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """grad_betas [B, S] and grad_rotations [B, 16, 3, 3] of BLOCK_B hands: the partial sums of the
    vertex blocks, the output gradients, and the chain in reverse. acc [B, 16, 16] is scratch:
    per joint dL/d[R'_k | a_k] (entries 4 r + j) and dL/dt_k (entries 12-14)."""
    hand = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    ok = hand < B
    betas, s, s_ok = _load_betas(betas_ptr, hand, ok, S, BLOCK_S)
    e = tl.arange(0, 16)
    acc = acc_ptr + hand * 256
    rot = rot_ptr + hand * 144
    tf = tf_ptr + hand * 256
    grot = grot_ptr + hand * 144
    # The incoming gradients of every joint: grad_transforms' 3 x 4 block plus the vertex blocks'
    # partials, and grad_joints.
    ok2 = ok[:, None]
    for k in range(16):
        upper = ok2 & (e < 12)[None, :]
        g = tl.load(gt_ptr + hand[:, None] * 256 + k * 16 + e[None, :], mask=upper, other=0.0)
        g += tl.load(gj_ptr + hand[:, None] * 48 + k * 3 + (e - 12)[None, :], mask=ok2 & ((e >= 12) & (e < 15))[None, :], other=0.0)
        part = ga_part_ptr + (hand[:, None] * 16 + k) * 12 + e[None, :]
        for _ in range(NB):
            g += tl.load(part, mask=upper, other=0.0)
            part += B * 192
        tl.store(acc_ptr + hand[:, None] * 256 + k * 16 + e[None, :], g, mask=ok2)
        if k > 0:
            # dL/df of joint k (features 9 (k - 1) .. 9 k - 1), summed over the vertex blocks.
            feature = ok2 & (e < 9)[None, :]
            part = gf_part_ptr + hand[:, None] * 135 + (k - 1) * 9 + e[None, :]
            gf = tl.load(part, mask=feature, other=0.0)
            for _ in range(1, NB):
                part += B * 135
                gf += tl.load(part, mask=feature, other=0.0)
            tl.store(grot_ptr + hand[:, None] * 144 + k * 9 + e[None, :], gf, mask=feature)
    tl.debug_barrier()
    # dL/dbetas: the vertex blocks' shape-blend part, then J_shapedirs^T dL/dJ joint by joint.
    gb = tl.zeros([BLOCK_B, BLOCK_S], dtype=betas.dtype)
    gb_mask = ok2 & s_ok[None, :]
    part = gb_part_ptr + hand[:, None] * S + s[None, :]
    for _ in range(NB):
        gb += tl.load(part, mask=gb_mask, other=0.0)
        part += B * S
    for kk in range(16):
        k = 15 - kk
        p = tl.load(parent_tab + k)
        # The forward of joint k: J_k, R'_k and (k > 0) R'_p; its gradients are final (children done).
        j0 = _rest_joint(jt_ptr, js_ptr, betas, s, s_ok, JS_full, 3 * k + 0)
        j1 = _rest_joint(jt_ptr, js_ptr, betas, s, s_ok, JS_full, 3 * k + 1)
        j2 = _rest_joint(jt_ptr, js_ptr, betas, s, s_ok, JS_full, 3 * k + 2)
        ak = acc + k * 16
        tk = tf + k * 16
        ga0 = tl.load(ak + 3, mask=ok, other=0.0)
        ga1 = tl.load(ak + 7, mask=ok, other=0.0)
        ga2 = tl.load(ak + 11, mask=ok, other=0.0)
        # a_k = t_k - R'_k J_k.
        gt0 = tl.load(ak + 12, mask=ok, other=0.0) + ga0
        gt1 = tl.load(ak + 13, mask=ok, other=0.0) + ga1
        gt2 = tl.load(ak + 14, mask=ok, other=0.0) + ga2
        gj0 = -(tl.load(tk + 0, mask=ok, other=0.0) * ga0 + tl.load(tk + 4, mask=ok, other=0.0) * ga1
                + tl.load(tk + 8, mask=ok, other=0.0) * ga2)
        gj1 = -(tl.load(tk + 1, mask=ok, other=0.0) * ga0 + tl.load(tk + 5, mask=ok, other=0.0) * ga1
                + tl.load(tk + 9, mask=ok, other=0.0) * ga2)
        gj2 = -(tl.load(tk + 2, mask=ok, other=0.0) * ga0 + tl.load(tk + 6, mask=ok, other=0.0) * ga1
                + tl.load(tk + 10, mask=ok, other=0.0) * ga2)
        # dL/dR'_k, with the a_k term: gR'_k[r, j] -= ga_k[r] J_k[j].
        g00 = tl.load(ak + 0, mask=ok, other=0.0) - ga0 * j0
        g01 = tl.load(ak + 1, mask=ok, other=0.0) - ga0 * j1
        g02 = tl.load(ak + 2, mask=ok, other=0.0) - ga0 * j2
        g10 = tl.load(ak + 4, mask=ok, other=0.0) - ga1 * j0
        g11 = tl.load(ak + 5, mask=ok, other=0.0) - ga1 * j1
        g12 = tl.load(ak + 6, mask=ok, other=0.0) - ga1 * j2
        g20 = tl.load(ak + 8, mask=ok, other=0.0) - ga2 * j0
        g21 = tl.load(ak + 9, mask=ok, other=0.0) - ga2 * j1
        g22 = tl.load(ak + 10, mask=ok, other=0.0) - ga2 * j2
        if k == 0:
            # R'_0 = R_0, t_0 = J_0.
            gj0 += gt0
            gj1 += gt1
            gj2 += gt2
            tl.store(grot + 0, g00, mask=ok)
            tl.store(grot + 1, g01, mask=ok)
            tl.store(grot + 2, g02, mask=ok)
            tl.store(grot + 3, g10, mask=ok)
            tl.store(grot + 4, g11, mask=ok)
            tl.store(grot + 5, g12, mask=ok)
            tl.store(grot + 6, g20, mask=ok)
            tl.store(grot + 7, g21, mask=ok)
            tl.store(grot + 8, g22, mask=ok)
        else:
            rk = rot + k * 9
            tp = tf + p * 16
            ap = acc + p * 16
            q00, q01, q02, q10, q11, q12, q20, q21, q22 = _load_matrix3(rk, ok)
            p00 = tl.load(tp + 0, mask=ok, other=0.0)
            p01 = tl.load(tp + 1, mask=ok, other=0.0)
            p02 = tl.load(tp + 2, mask=ok, other=0.0)
            p10 = tl.load(tp + 4, mask=ok, other=0.0)
            p11 = tl.load(tp + 5, mask=ok, other=0.0)
            p12 = tl.load(tp + 6, mask=ok, other=0.0)
            p20 = tl.load(tp + 8, mask=ok, other=0.0)
            p21 = tl.load(tp + 9, mask=ok, other=0.0)
            p22 = tl.load(tp + 10, mask=ok, other=0.0)
            # t_k = R'_p J_k + a_p: dJ_k += R'_p^T gt_k (and below dR'_p += gt_k J_k^T, da_p += gt_k).
            gj0 += p00 * gt0 + p10 * gt1 + p20 * gt2
            gj1 += p01 * gt0 + p11 * gt1 + p21 * gt2
            gj2 += p02 * gt0 + p12 * gt1 + p22 * gt2
            # The parent: dR'_p[r, j] += gt_k[r] J_k[j] + sum_l dR'_k[r, l] R_k[j, l]  (R'_k = R'_p R_k).
            for r in tl.static_range(3):
                if r == 0:
                    gtr = gt0
                    h0 = g00
                    h1 = g01
                    h2 = g02
                elif r == 1:
                    gtr = gt1
                    h0 = g10
                    h1 = g11
                    h2 = g12
                else:
                    gtr = gt2
                    h0 = g20
                    h1 = g21
                    h2 = g22
                row = ap + 4 * r
                tl.store(row + 0, tl.load(row + 0, mask=ok, other=0.0) + gtr * j0 + h0 * q00 + h1 * q01 + h2 * q02, mask=ok)
                tl.store(row + 1, tl.load(row + 1, mask=ok, other=0.0) + gtr * j1 + h0 * q10 + h1 * q11 + h2 * q12, mask=ok)
                tl.store(row + 2, tl.load(row + 2, mask=ok, other=0.0) + gtr * j2 + h0 * q20 + h1 * q21 + h2 * q22, mask=ok)
                tl.store(row + 3, tl.load(row + 3, mask=ok, other=0.0) + gtr, mask=ok)
            # grad R_k = R'_p^T dR'_k, added to the pose-feature gradient phase 1 left in grad_rotations.
            out = grot + k * 9
            tl.store(out + 0, tl.load(out + 0, mask=ok, other=0.0) + p00 * g00 + p10 * g10 + p20 * g20, mask=ok)
            tl.store(out + 1, tl.load(out + 1, mask=ok, other=0.0) + p00 * g01 + p10 * g11 + p20 * g21, mask=ok)
            tl.store(out + 2, tl.load(out + 2, mask=ok, other=0.0) + p00 * g02 + p10 * g12 + p20 * g22, mask=ok)
            tl.store(out + 3, tl.load(out + 3, mask=ok, other=0.0) + p01 * g00 + p11 * g10 + p21 * g20, mask=ok)
            tl.store(out + 4, tl.load(out + 4, mask=ok, other=0.0) + p01 * g01 + p11 * g11 + p21 * g21, mask=ok)
            tl.store(out + 5, tl.load(out + 5, mask=ok, other=0.0) + p01 * g02 + p11 * g12 + p21 * g22, mask=ok)
            tl.store(out + 6, tl.load(out + 6, mask=ok, other=0.0) + p02 * g00 + p12 * g10 + p22 * g20, mask=ok)
            tl.store(out + 7, tl.load(out + 7, mask=ok, other=0.0) + p02 * g01 + p12 * g11 + p22 * g21, mask=ok)
            tl.store(out + 8, tl.load(out + 8, mask=ok, other=0.0) + p02 * g02 + p12 * g12 + p22 * g22, mask=ok)
        # J_k = J_template[k] + J_shapedirs[k] betas.
        js0 = tl.load(js_ptr + (3 * k + 0) * JS_full + s, mask=s_ok, other=0.0)
        js1 = tl.load(js_ptr + (3 * k + 1) * JS_full + s, mask=s_ok, other=0.0)
        js2 = tl.load(js_ptr + (3 * k + 2) * JS_full + s, mask=s_ok, other=0.0)
        gb += gj0[:, None] * js0[None, :] + gj1[:, None] * js1[None, :] + gj2[:, None] * js2[None, :]
        # The parent's accumulators are read by the next joints (other threads may hold the same hands).
        tl.debug_barrier()
    tl.store(gbeta_ptr + hand[:, None] * S + s[None, :], gb, mask=gb_mask)


# ---------------------------------------------------------------------------------------------
# Host side: checks, sizes, launchers
# ---------------------------------------------------------------------------------------------

# Block sizes (tl.dot needs every dimension >= 16). 32 vertices x 16 hands per skinning program give
# the real hand (V = 778) 25 vertex blocks and read each model row once per 16 hands (64-vertex tiles
# spilled registers in the fp32 FMA dots at AOT); the chain runs 128 hands a program, one per thread of
# its 4 warps. Untuned: no GPU has run these kernels. (Tests shrink BLOCK_V and CHAIN_BLOCK_B.)
TILE_LIMITS = {"BLOCK_V": 32, "BLOCK_B": 16, "BLOCK_P": 32, "CHAIN_BLOCK_B": 128}

# The partial sums are [blocks, B, 16, 12]: one vertex block's stride, B * 192, is an int32 offset.
MAX_BATCH = (2**31 - 1) // 192


@triton.jit
def _rodrigues_kernel(pose_ptr, rot_ptr, grad_rot_ptr, grad_pose_ptr, count, BACKWARD: tl.constexpr, BLOCK_R: tl.constexpr):
    """Rodrigues for ``count`` axis-angle vectors r (one lane each), in float64 whatever the input dtype:
    R = I + a K + b K^2 with K = skew(r), s = |r|^2, K^2 = r r^T - s I, a = sin t / t, b = (1 - cos t) / s
    (series in s below 1e-4, so exact and finite at zero). Forward writes R (row-major 9 values). BACKWARD
    reads dL/dR and writes dL/dr_i = <dL/dR, dR/dr_i>, with
    dR/dr_i = 2 r_i (a' K + b' K^2) + a skew(e_i) + b (e_i r^T + r e_i^T - 2 r_i I), a' = da/ds = (cos t - a) / 2s,
    b' = db/ds = (a - 2 b) / 2s."""
    lane = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ok = lane < count
    x = tl.load(pose_ptr + 3 * lane + 0, mask=ok, other=0.0).to(tl.float64)
    y = tl.load(pose_ptr + 3 * lane + 1, mask=ok, other=0.0).to(tl.float64)
    z = tl.load(pose_ptr + 3 * lane + 2, mask=ok, other=0.0).to(tl.float64)
    s = x * x + y * y + z * z
    small = s < _SERIES_BELOW
    s_safe = tl.where(small, 1.0, s)
    t = tl.sqrt(s_safe)
    c = tl.cos(t)
    a = tl.where(small, 1.0 - s / 6.0 * (1.0 - s / 20.0 * (1.0 - s / 42.0)), tl.sin(t) / t)
    b = tl.where(small, 0.5 - s / 24.0 * (1.0 - s / 30.0 * (1.0 - s / 56.0)), (1.0 - c) / s_safe)
    # K = [[0, -z, y], [z, 0, -x], [-y, x, 0]] and K^2 = r r^T - s I, row-major.
    k01, k02, k10, k12, k20, k21 = -z, y, z, -x, -y, x
    q00, q01, q02 = x * x - s, x * y, x * z
    q11, q12, q22 = y * y - s, y * z, z * z - s
    if BACKWARD:
        da = tl.where(small, -1.0 / 6.0 + s / 60.0 - s * s / 1680.0, (c - a) / (2.0 * s_safe))
        db = tl.where(small, -1.0 / 24.0 + s / 360.0 - s * s / 13440.0, (a - 2.0 * b) / (2.0 * s_safe))
        g = grad_rot_ptr + 9 * lane
        g00 = tl.load(g + 0, mask=ok, other=0.0).to(tl.float64)
        g01 = tl.load(g + 1, mask=ok, other=0.0).to(tl.float64)
        g02 = tl.load(g + 2, mask=ok, other=0.0).to(tl.float64)
        g10 = tl.load(g + 3, mask=ok, other=0.0).to(tl.float64)
        g11 = tl.load(g + 4, mask=ok, other=0.0).to(tl.float64)
        g12 = tl.load(g + 5, mask=ok, other=0.0).to(tl.float64)
        g20 = tl.load(g + 6, mask=ok, other=0.0).to(tl.float64)
        g21 = tl.load(g + 7, mask=ok, other=0.0).to(tl.float64)
        g22 = tl.load(g + 8, mask=ok, other=0.0).to(tl.float64)
        # <G, K> and <G, K^2>: the part shared by the three derivatives.
        gk = g01 * k01 + g02 * k02 + g10 * k10 + g12 * k12 + g20 * k20 + g21 * k21
        gq = g00 * q00 + (g01 + g10) * q01 + (g02 + g20) * q02 + g11 * q11 + (g12 + g21) * q12 + g22 * q22
        shared = 2.0 * (da * gk + db * gq)
        trace = g00 + g11 + g22
        # <G, e_i r^T + r e_i^T> = (G r)_i + (G^T r)_i; <G, skew(e_i)> from skew(e_0) = (2,1) - (1,2), etc.
        gr0 = g00 * x + g01 * y + g02 * z + g00 * x + g10 * y + g20 * z
        gr1 = g10 * x + g11 * y + g12 * z + g01 * x + g11 * y + g21 * z
        gr2 = g20 * x + g21 * y + g22 * z + g02 * x + g12 * y + g22 * z
        d0 = x * shared + a * (g21 - g12) + b * (gr0 - 2.0 * x * trace)
        d1 = y * shared + a * (g02 - g20) + b * (gr1 - 2.0 * y * trace)
        d2 = z * shared + a * (g10 - g01) + b * (gr2 - 2.0 * z * trace)
        out = grad_pose_ptr + 3 * lane
        tl.store(out + 0, d0.to(grad_pose_ptr.dtype.element_ty), mask=ok)
        tl.store(out + 1, d1.to(grad_pose_ptr.dtype.element_ty), mask=ok)
        tl.store(out + 2, d2.to(grad_pose_ptr.dtype.element_ty), mask=ok)
    else:
        out = rot_ptr + 9 * lane
        kind = rot_ptr.dtype.element_ty
        tl.store(out + 0, (1.0 + b * q00).to(kind), mask=ok)
        tl.store(out + 1, (a * k01 + b * q01).to(kind), mask=ok)
        tl.store(out + 2, (a * k02 + b * q02).to(kind), mask=ok)
        tl.store(out + 3, (a * k10 + b * q01).to(kind), mask=ok)
        tl.store(out + 4, (1.0 + b * q11).to(kind), mask=ok)
        tl.store(out + 5, (a * k12 + b * q12).to(kind), mask=ok)
        tl.store(out + 6, (a * k20 + b * q02).to(kind), mask=ok)
        tl.store(out + 7, (a * k21 + b * q12).to(kind), mask=ok)
        tl.store(out + 8, (1.0 + b * q22).to(kind), mask=ok)


def _sizes(num_betas: int) -> dict:
    """Every constexpr of a launch; the launchers and compile_specs both read these."""
    return {
        "BLOCK_V": TILE_LIMITS["BLOCK_V"],
        "BLOCK_B": TILE_LIMITS["BLOCK_B"],
        "BLOCK_P": TILE_LIMITS["BLOCK_P"],
        "CHAIN_BLOCK_B": TILE_LIMITS["CHAIN_BLOCK_B"],
        "BLOCK_S": max(16, triton.next_power_of_2(max(num_betas, 1))),
    }


def _pick(kernel, sizes: dict) -> dict:
    """The constexpr arguments of ``kernel`` (the chain kernels take CHAIN_BLOCK_B as their BLOCK_B)."""
    values = dict(sizes, PRECISION="ieee", BLOCK_R=RODRIGUES_BLOCK, BACKWARD=False)
    if kernel in (_chain_forward_kernel, _chain_backward_kernel):
        values["BLOCK_B"] = sizes["CHAIN_BLOCK_B"]
    return {name: values[name] for name in constexpr_names(kernel)}


@functools.lru_cache(maxsize=32)
def _parent_table(parents: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(parents, dtype=torch.int32, device=device)


def _check_parents(parents) -> tuple[int, ...]:
    parents = tuple(int(p) for p in parents)
    if len(parents) != 16:
        raise ValueError(f"mano_skinning: parents must list 16 joints, got {len(parents)}")
    if parents[0] >= 0:
        raise ValueError(f"mano_skinning: parents[0] must be negative (the root), got {parents[0]}")
    for k in range(1, 16):
        # The chain runs in index order and the backward in reverse: a parent comes before its children.
        if not 0 <= parents[k] < k:
            raise ValueError(f"mano_skinning: parents[{k}] must be in [0, {k}), got {parents[k]}")
    return (-1,) + parents[1:]


def _check(betas, rotations, named: dict):
    """dtype, device and shapes of the inputs (``named``: the model tensors by name)."""
    named = {"betas": betas, "rotations": rotations, **named}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"mano_skinning: {name} must be a tensor, got {type(t).__name__}")
    if betas.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"mano_skinning: betas must be float32 or float64, got {betas.dtype}")
    for name, t in named.items():
        if t.dtype != betas.dtype:
            raise TypeError(f"mano_skinning: every tensor must have the dtype of betas ({betas.dtype}), {name} is {t.dtype}")
        if t.device != betas.device:
            raise RuntimeError(f"mano_skinning: every tensor must be on the device of betas ({betas.device}), {name} is on {t.device}")
    if betas.dim() != 2:
        raise ValueError(f"mano_skinning: betas must be [B, S], got {list(betas.shape)}")
    batch = betas.shape[0]
    if batch > MAX_BATCH:
        raise ValueError(f"mano_skinning: at most {MAX_BATCH} hands per call (int32 offsets), got {batch}; split the batch")
    if tuple(rotations.shape) != (batch, 16, 3, 3):
        raise ValueError(f"mano_skinning: rotations must be [B, 16, 3, 3] with B = {batch}, got {list(rotations.shape)}")
    v_template = named["v_template"]
    if v_template.dim() != 2 or v_template.shape[1] != 3 or v_template.shape[0] < 1:
        raise ValueError(f"mano_skinning: v_template must be [V, 3], got {list(v_template.shape)}")
    num_vertices = v_template.shape[0]
    shapedirs = named["shapedirs"]
    if shapedirs.dim() != 3 or tuple(shapedirs.shape[:2]) != (num_vertices, 3):
        raise ValueError(f"mano_skinning: shapedirs must be [V, 3, S'] with V = {num_vertices}, got {list(shapedirs.shape)}")
    if betas.shape[1] > shapedirs.shape[2]:
        raise ValueError(f"mano_skinning: betas has {betas.shape[1]} coefficients but the model has only "
                         f"{shapedirs.shape[2]} shape blend shapes")
    expected = {"posedirs": (num_vertices, 3, NUM_POSE), "weights": (num_vertices, 16), "J_template": (16, 3)}
    for name, shape in expected.items():
        if name in named and tuple(named[name].shape) != shape:
            raise ValueError(f"mano_skinning: {name} must be {list(shape)} with V = {num_vertices}, got {list(named[name].shape)}")
    if "J_shapedirs" in named:
        j_shapedirs = named["J_shapedirs"]
        if j_shapedirs.dim() != 3 or tuple(j_shapedirs.shape[:2]) != (16, 3) or j_shapedirs.shape[2] < betas.shape[1]:
            raise ValueError(f"mano_skinning: J_shapedirs must be [16, 3, S'] with S' >= {betas.shape[1]}, "
                             f"got {list(j_shapedirs.shape)}")


def _run_chain(betas, rotations, j_template, j_shapedirs, table, sizes):
    batch, num_betas = betas.shape
    joints = betas.new_empty(batch, 16, 3)
    transforms = betas.new_empty(batch, 16, 4, 4)
    _chain_forward_kernel[(triton.cdiv(batch, sizes["CHAIN_BLOCK_B"]),)](
        betas, rotations, j_template, j_shapedirs, table, joints, transforms,
        batch, num_betas, j_shapedirs.shape[2],
        **_pick(_chain_forward_kernel, sizes),
    )
    return joints, transforms


def _no_empty_shape_basis(betas, shapedirs, J_shapedirs):
    """With S = 0 (no shape coefficients) one zero coefficient and zero blend shape stand in, so that no
    launch gets an empty tensor (a null pointer); the results are the same."""
    if betas.shape[1] > 0:
        return betas, shapedirs, J_shapedirs
    return (betas.new_zeros(betas.shape[0], 1), shapedirs.new_zeros(shapedirs.shape[0], 3, 1),
            J_shapedirs.new_zeros(16, 3, 1))


def _forward(betas, rotations, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights, parents):
    """The forward from the joint basis (J_template, J_shapedirs) instead of J_regressor: the same
    outputs as ``mano_skinning_forward`` when they are ``J_regressor v_template`` and ``J_regressor shapedirs``."""
    table = _parent_table(_check_parents(parents), betas.device)
    _check(betas, rotations, {"v_template": v_template, "shapedirs": shapedirs, "posedirs": posedirs,
                              "J_template": J_template, "J_shapedirs": J_shapedirs, "weights": weights})
    betas, rotations, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights = (
        t.contiguous() for t in (betas, rotations, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights))
    if betas.shape[0] == 0:
        return betas.new_empty(0, v_template.shape[0], 3), betas.new_empty(0, 16, 3), betas.new_empty(0, 16, 4, 4)
    betas, shapedirs, J_shapedirs = _no_empty_shape_basis(betas, shapedirs, J_shapedirs)
    batch, num_betas = betas.shape
    num_vertices, _, num_full = shapedirs.shape
    sizes = _sizes(num_betas)
    joints, transforms = _run_chain(betas, rotations, J_template, J_shapedirs, table, sizes)
    vertices = betas.new_empty(batch, num_vertices, 3)
    grid = (triton.cdiv(batch, sizes["BLOCK_B"]), triton.cdiv(num_vertices, sizes["BLOCK_V"]))
    _skin_kernel[grid](
        betas, rotations, v_template, shapedirs, posedirs, weights, transforms, vertices,
        batch, num_vertices, num_betas, num_full,
        **_pick(_skin_kernel, sizes),
    )
    return vertices, joints, transforms


def _grad_or_zeros(grad, shape, like, name):
    if grad is None:
        return like.new_zeros(shape)
    if tuple(grad.shape) != tuple(shape):
        raise ValueError(f"mano_skinning_backward: {name} must be {list(shape)}, got {list(grad.shape)}")
    if grad.device != like.device:
        raise RuntimeError(f"mano_skinning_backward: {name} must be on {like.device}, got {grad.device}")
    if not grad.dtype.is_floating_point:
        raise TypeError(f"mano_skinning_backward: {name} must be a floating-point tensor, got {grad.dtype}")
    return grad.to(like.dtype).contiguous()


def _backward(grad_vertices, grad_joints, grad_transforms, betas, rotations, v_template, shapedirs, posedirs,
              J_template, J_shapedirs, weights, parents):
    """``mano_skinning_backward`` from the joint basis (see ``_forward``)."""
    table = _parent_table(_check_parents(parents), betas.device)
    _check(betas, rotations, {"v_template": v_template, "shapedirs": shapedirs, "posedirs": posedirs,
                              "J_template": J_template, "J_shapedirs": J_shapedirs, "weights": weights})
    betas, rotations, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights = (
        t.contiguous() for t in (betas, rotations, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights))
    batch, given_betas = betas.shape
    grad_vertices = _grad_or_zeros(grad_vertices, (batch, v_template.shape[0], 3), betas, "grad_vertices")
    grad_joints = _grad_or_zeros(grad_joints, (batch, 16, 3), betas, "grad_joints")
    grad_transforms = _grad_or_zeros(grad_transforms, (batch, 16, 4, 4), betas, "grad_transforms")
    if batch == 0:
        return torch.zeros_like(betas), torch.zeros_like(rotations)
    betas, shapedirs, J_shapedirs = _no_empty_shape_basis(betas, shapedirs, J_shapedirs)
    num_betas = betas.shape[1]
    num_vertices, _, num_full = shapedirs.shape
    sizes = _sizes(num_betas)
    _, transforms = _run_chain(betas, rotations, J_template, J_shapedirs, table, sizes)
    blocks = triton.cdiv(num_vertices, sizes["BLOCK_V"])
    ga_part = betas.new_empty(blocks, batch, 16, 12)
    gf_part = betas.new_empty(blocks, batch, NUM_POSE)
    gb_part = betas.new_empty(blocks, batch, num_betas)
    _skin_adjoint_kernel[(triton.cdiv(batch, sizes["BLOCK_B"]), blocks)](
        grad_vertices, betas, rotations, v_template, shapedirs, posedirs, weights, transforms, ga_part, gf_part, gb_part,
        batch, num_vertices, num_betas, num_full,
        **_pick(_skin_adjoint_kernel, sizes),
    )
    scratch = betas.new_empty(batch, 16, 16)
    grad_betas = torch.empty_like(betas)
    grad_rotations = torch.empty_like(rotations)
    _chain_backward_kernel[(triton.cdiv(batch, sizes["CHAIN_BLOCK_B"]),)](
        betas, rotations, J_template, J_shapedirs, table, transforms, grad_joints, grad_transforms,
        ga_part, gf_part, gb_part, scratch, grad_betas, grad_rotations,
        batch, num_betas, J_shapedirs.shape[2], blocks,
        **_pick(_chain_backward_kernel, sizes),
    )
    return grad_betas[:, :given_betas], grad_rotations


# ---------------------------------------------------------------------------------------------
# The registered op's schema (pose as axis-angle or matrices, transl, keypoints)
# ---------------------------------------------------------------------------------------------


RODRIGUES_BLOCK = 128


def _rotations(pose: torch.Tensor) -> torch.Tensor:
    """[B, 16, 3, 3] from an axis-angle pose [B, 16, 3] (one ``_rodrigues_kernel`` launch), or the matrices."""
    if pose.dim() == 4:
        return pose
    pose = pose.contiguous()
    rotations = pose.new_empty(*pose.shape[:-1], 3, 3)
    count = pose.numel() // 3
    if count:
        _rodrigues_kernel[(triton.cdiv(count, RODRIGUES_BLOCK),)](pose, rotations, rotations, pose, count, BACKWARD=False,
                                                                  BLOCK_R=RODRIGUES_BLOCK)
    return rotations


def _rotations_backward(pose: torch.Tensor, grad_rotations: torch.Tensor) -> torch.Tensor:
    """dL/d pose [B, 16, 3] from dL/dR [B, 16, 3, 3] (one ``_rodrigues_kernel`` launch)."""
    pose, grad_rotations = pose.contiguous(), grad_rotations.contiguous()
    grad_pose = torch.empty_like(pose)
    count = pose.numel() // 3
    if count:
        _rodrigues_kernel[(triton.cdiv(count, RODRIGUES_BLOCK),)](pose, grad_pose, grad_rotations, grad_pose, count,
                                                                  BACKWARD=True, BLOCK_R=RODRIGUES_BLOCK)
    return grad_pose


def _keypoint_index(keypoint_ids, num_vertices: int, device) -> torch.Tensor:
    return _keypoint_table(tuple(int(i) for i in keypoint_ids), num_vertices, device)


@functools.lru_cache(maxsize=32)
def _keypoint_table(ids: tuple[int, ...], num_vertices: int, device) -> torch.Tensor:
    for i in ids:
        if not 0 <= i < 16 + num_vertices:
            raise ValueError(f"mano_skinning: keypoint_ids must be joints (0-15) or 16 + a vertex id < {16 + num_vertices}, got {i}")
    return torch.tensor(ids, dtype=torch.int64, device=device)


def _check_pose(betas, pose, transl):
    if not isinstance(betas, torch.Tensor) or betas.dim() != 2:
        raise ValueError(f"mano_skinning: betas must be [B, S], got {list(getattr(betas, 'shape', []))}")
    if not isinstance(pose, torch.Tensor) or pose.dim() not in (3, 4):
        raise ValueError("mano_skinning: pose must be [B, 16, 3] axis-angle or [B, 16, 3, 3] matrices")
    batch = betas.shape[0]
    if tuple(pose.shape) not in ((batch, 16, 3), (batch, 16, 3, 3)):
        raise ValueError(f"mano_skinning: pose must be [B, 16, 3] axis-angle or [B, 16, 3, 3] matrices with B = {batch}, "
                         f"got {list(pose.shape)}")
    if transl is not None and (not isinstance(transl, torch.Tensor) or tuple(transl.shape) != (batch, 3)):
        raise ValueError(f"mano_skinning: transl must be [B, 3] with B = {batch}, got {list(getattr(transl, 'shape', []))}")
    for name, t in (("pose", pose), ("transl", transl)):
        if t is not None and t.dtype != betas.dtype:
            raise TypeError(f"mano_skinning: every tensor must have the dtype of betas ({betas.dtype}), {name} is {t.dtype}")


def mano_skinning_forward(betas, pose, transl, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights, parents, keypoint_ids):
    """``handops::mano_skinning`` as registered: (vertices [B, V, 3], keypoints [B, n, 3], joints [B, 16, 3],
    transforms [B, 16, 4, 4]), transl added to all four (the translation column of A_k), equal to
    ``mano_skinning_reference``. pose [B, 16, 3] axis-angle or [B, 16, 3, 3]; keypoint id < 16 a joint,
    else 16 + a vertex. Rodrigues, transl and the keypoint gather are torch ops around ``_forward``."""
    _check_pose(betas, pose, transl)
    index = _keypoint_index(keypoint_ids, v_template.shape[0], betas.device)
    vertices, joints, transforms = _forward(betas, _rotations(pose), v_template, shapedirs, posedirs, J_template,
                                            J_shapedirs, weights, parents)
    if transl is not None:
        vertices += transl[:, None]
        joints += transl[:, None]
        transforms[:, :, :3, 3] += transl[:, None]
    keypoints = torch.cat([joints, vertices], 1).index_select(1, index) if len(index) else betas.new_empty(betas.shape[0], 0, 3)
    return vertices, keypoints, joints, transforms


def mano_skinning_backward(grad_vertices, grad_keypoints, grad_joints, grad_transforms, betas, pose, v_template, shapedirs, posedirs,
                J_template, J_shapedirs, weights, parents, keypoint_ids):
    """``handops::mano_skinning_backward`` as registered: (grad_betas [B, S], grad_pose (pose's shape),
    grad_transl [B, 3]); any output gradient may be None. The keypoint gradients are added to the joints'
    and vertices' (a one-hot product), the axis-angle gradient is autograd through Rodrigues (torch, tiny)."""
    _check_pose(betas, pose, None)
    batch, num_vertices = betas.shape[0], v_template.shape[0]
    index = _keypoint_index(keypoint_ids, num_vertices, betas.device)
    grad_vertices = _grad_or_zeros(grad_vertices, (batch, num_vertices, 3), betas, "grad_vertices")
    grad_joints = _grad_or_zeros(grad_joints, (batch, 16, 3), betas, "grad_joints")
    grad_transforms = _grad_or_zeros(grad_transforms, (batch, 16, 4, 4), betas, "grad_transforms")
    grad_transl = grad_vertices.sum(1) + grad_joints.sum(1) + grad_transforms[:, :, :3, 3].sum(1)
    if grad_keypoints is not None and len(index):
        grad_keypoints = _grad_or_zeros(grad_keypoints, (batch, len(index), 3), betas, "grad_keypoints")
        grad_transl = grad_transl + grad_keypoints.sum(1)
        # A one-hot [16 + V, n] product rather than index_add (CUDA atomics): repeated ids sum deterministically.
        select = torch.nn.functional.one_hot(index, 16 + num_vertices).to(betas.dtype).t()
        points = torch.cat([grad_joints, grad_vertices], 1) + select @ grad_keypoints
        grad_joints, grad_vertices = points[:, :16], points[:, 16:]
    grad_betas, grad_rotations = _backward(grad_vertices, grad_joints, grad_transforms, betas, _rotations(pose), v_template,
                                           shapedirs, posedirs, J_template, J_shapedirs, weights, parents)
    grad_pose = _rotations_backward(pose, grad_rotations) if pose.dim() == 3 else grad_rotations
    return grad_betas, grad_pose, grad_transl


OPS = {"mano_skinning": mano_skinning_forward, "mano_skinning_backward": mano_skinning_backward}


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation
# ---------------------------------------------------------------------------------------------

KERNELS = (_chain_forward_kernel, _skin_kernel, _skin_adjoint_kernel, _chain_backward_kernel, _rodrigues_kernel)


def compile_specs(dtype: torch.dtype, num_vertices: int, num_betas: int):
    """(kernel, signature, constexprs) of every launch the launchers make for this model size.

    The vertex count, batch and S are int32 runtime arguments (only BLOCK_S depends on S);
    ``parent_tab`` is the int32 parent table.
    """
    del num_vertices  # a runtime argument: the same binaries serve every V
    sizes = _sizes(num_betas)
    specs = [(kernel, kernel_signature(kernel, dtype), _pick(kernel, sizes)) for kernel in KERNELS]
    # Rodrigues has a forward and a backward variant.
    specs.append((_rodrigues_kernel, kernel_signature(_rodrigues_kernel, dtype), {**_pick(_rodrigues_kernel, sizes), "BACKWARD": True}))
    return specs
