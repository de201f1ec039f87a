// CPU kernels of handops::mano_skinning and handops::mano_skinning_backward (MANO, thesis Sec. 2.5).
//
// mano_skinning(betas, rotations, v_template, shapedirs, posedirs, J_regressor, weights, parents)
//     -> (vertices, joints, transforms)
//   Args:
//     betas:       [B, S] shape coefficients (S <= shapedirs.size(2); the first S blend shapes are used).
//     rotations:   [B, 16, 3, 3] joint rotations as matrices, the root first.
//     v_template:  [V, 3];  shapedirs: [V, 3, S'];  posedirs: [V, 3, 135];  J_regressor: [16, V];
//     weights:     [V, 16] skinning weights;  parents: 16 integers, parents[0] < 0, 0 <= parents[k] < k.
//   Returns:
//     vertices [B, V, 3], joints [B, 16, 3] (the translation of the world transform G_k), transforms
//     [B, 16, 4, 4] (A_k = G_k with its translation reduced by R'_k J_k). No global translation: the
//     layer adds it. The same maths as handops/_reference/mano.py::mano_forward_reference.
//
// mano_skinning_backward(grad_vertices, grad_joints, grad_transforms, <the forward inputs>)
//     -> (grad_betas [B, S], grad_rotations [B, 16, 3, 3]). The model tensors are constants.
//
// One fused pass per hand (blocks of hands in parallel): J from betas, the chain, then one sweep over the
// vertices that forms v_posed on the fly and skins it, so no [B, V, 3] intermediate is stored. The backward
// recomputes the forward (cheap compared with the vertex sweep) instead of saving intermediates, and
// runs the chain rule by hand: skinning -> relative transforms -> chain in reverse -> pose feature and
// shape blend, again in one sweep over the vertices.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

namespace handops {
namespace {

constexpr int64_t kJoints = 16;
constexpr int64_t kPoseFeatures = (kJoints - 1) * 9;

struct Model {
  at::Tensor v_template, shapedirs, posedirs, J_regressor, weights;
  at::Tensor J_template, J_shapedirs;  // J_regressor @ v_template [16, 3], J_regressor @ shapedirs[..., :S] [16, 3, S]
  std::array<int64_t, kJoints> parents{};
  int64_t V = 0, S = 0, S_full = 0;
};

Model check_and_prepare(const at::Tensor& betas, const at::Tensor& rotations, const at::Tensor& v_template,
                        const at::Tensor& shapedirs, const at::Tensor& posedirs, const at::Tensor& J_regressor,
                        const at::Tensor& weights, at::IntArrayRef parents) {
  const std::array<const at::Tensor*, 7> all = {&betas, &rotations, &v_template, &shapedirs, &posedirs, &J_regressor, &weights};
  for (const at::Tensor* t : all)
    TORCH_CHECK(t->device().is_cpu(), "mano_skinning (CPU kernel): every tensor must be on the CPU, got ", t->device());
  TORCH_CHECK_TYPE(betas.scalar_type() == at::kFloat || betas.scalar_type() == at::kDouble,
                   "mano_skinning: betas must be float32 or float64, got ", betas.scalar_type());
  for (const at::Tensor* t : all)
    TORCH_CHECK_TYPE(t->scalar_type() == betas.scalar_type(), "mano_skinning: every tensor must have the dtype of betas (",
                     betas.scalar_type(), "), got ", t->scalar_type());
  TORCH_CHECK_VALUE(betas.dim() == 2, "mano_skinning: betas must be [B, S], got ", betas.sizes());
  const int64_t B = betas.size(0);
  TORCH_CHECK_VALUE(rotations.dim() == 4 && rotations.size(0) == B && rotations.size(1) == kJoints && rotations.size(2) == 3 &&
                        rotations.size(3) == 3,
                    "mano_skinning: rotations must be [B, 16, 3, 3] with B = ", B, ", got ", rotations.sizes());
  TORCH_CHECK_VALUE(v_template.dim() == 2 && v_template.size(1) == 3 && v_template.size(0) >= 1,
                    "mano_skinning: v_template must be [V, 3], got ", v_template.sizes());
  const int64_t V = v_template.size(0);
  TORCH_CHECK_VALUE(shapedirs.dim() == 3 && shapedirs.size(0) == V && shapedirs.size(1) == 3,
                    "mano_skinning: shapedirs must be [V, 3, S'] with V = ", V, ", got ", shapedirs.sizes());
  TORCH_CHECK_VALUE(betas.size(1) <= shapedirs.size(2), "mano_skinning: betas has ", betas.size(1),
                    " coefficients but the model has only ", shapedirs.size(2), " shape blend shapes");
  TORCH_CHECK_VALUE(posedirs.dim() == 3 && posedirs.size(0) == V && posedirs.size(1) == 3 && posedirs.size(2) == kPoseFeatures,
                    "mano_skinning: posedirs must be [V, 3, 135] with V = ", V, ", got ", posedirs.sizes());
  TORCH_CHECK_VALUE(J_regressor.dim() == 2 && J_regressor.size(0) == kJoints && J_regressor.size(1) == V,
                    "mano_skinning: J_regressor must be [16, V] with V = ", V, ", got ", J_regressor.sizes());
  TORCH_CHECK_VALUE(weights.dim() == 2 && weights.size(0) == V && weights.size(1) == kJoints,
                    "mano_skinning: weights must be [V, 16] with V = ", V, ", got ", weights.sizes());
  TORCH_CHECK_VALUE(int64_t(parents.size()) == kJoints, "mano_skinning: parents must list 16 joints, got ", parents.size());
  TORCH_CHECK_VALUE(parents[0] < 0, "mano_skinning: parents[0] must be negative (the root), got ", parents[0]);
  Model m;
  for (int64_t k = 1; k < kJoints; ++k) {
    // The chain runs in index order and the backward in reverse: a parent must come before its children.
    TORCH_CHECK_VALUE(parents[k] >= 0 && parents[k] < k, "mano_skinning: parents[", k, "] must be in [0, ", k, "), got ", parents[k]);
    m.parents[k] = parents[k];
  }
  m.parents[0] = -1;
  m.V = V, m.S = betas.size(1), m.S_full = shapedirs.size(2);
  m.v_template = v_template.contiguous(), m.shapedirs = shapedirs.contiguous(), m.posedirs = posedirs.contiguous();
  m.J_regressor = J_regressor.contiguous(), m.weights = weights.contiguous();
  // J is linear in the shape, so regressing the template and the blend shapes once per call is exact
  // and turns the per-hand [16, V] x [V, 3] product into a [16, 3, S] one.
  m.J_template = at::matmul(m.J_regressor, m.v_template).contiguous();
  m.J_shapedirs = at::matmul(m.J_regressor, m.shapedirs.narrow(2, 0, m.S).reshape({V, 3 * m.S})).reshape({kJoints, 3, m.S}).contiguous();
  return m;
}

// Row-major 3x3 helpers.
template <typename T>
inline void matmul3(const T* a, const T* b, T* out) {  // out = a b
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) out[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
}

// The forward quantities of one hand that the vertex sweep and the backward need.
template <typename T>
struct Hand {
  T J[kJoints * 3];   // rest joints
  T R[kJoints * 9];   // world rotations R'_k
  T t[kJoints * 3];   // world translations (the posed joints)
  T a[kJoints * 3];   // relative translations t_k - R'_k J_k
  T f[kPoseFeatures];  // pose feature (R_k - I), k >= 1
};

template <typename T>
void hand_forward(const Model& m, const T* beta, const T* rot, Hand<T>& h) {
  const T* Jt = m.J_template.data_ptr<T>();
  const T* Js = m.J_shapedirs.data_ptr<T>();
  for (int64_t i = 0; i < kJoints * 3; ++i) {
    T acc = Jt[i];
    for (int64_t s = 0; s < m.S; ++s) acc += Js[i * m.S + s] * beta[s];
    h.J[i] = acc;
  }
  for (int64_t k = 0; k < kJoints; ++k) {
    const T* Rk = rot + 9 * k;
    if (k == 0) {
      for (int i = 0; i < 9; ++i) h.R[i] = Rk[i];
      for (int i = 0; i < 3; ++i) h.t[i] = h.J[i];
    } else {
      const int64_t p = m.parents[k];
      matmul3(h.R + 9 * p, Rk, h.R + 9 * k);
      for (int i = 0; i < 3; ++i) {
        T acc = h.t[3 * p + i];
        for (int j = 0; j < 3; ++j) acc += h.R[9 * p + 3 * i + j] * (h.J[3 * k + j] - h.J[3 * p + j]);
        h.t[3 * k + i] = acc;
      }
      for (int i = 0; i < 9; ++i) h.f[9 * (k - 1) + i] = Rk[i] - T(i % 4 == 0 ? 1 : 0);
    }
    for (int i = 0; i < 3; ++i) {
      T acc = h.t[3 * k + i];
      for (int j = 0; j < 3; ++j) acc -= h.R[9 * k + 3 * i + j] * h.J[3 * k + j];
      h.a[3 * k + i] = acc;
    }
  }
}

// Hands are processed in blocks of up to kBlock: posedirs (V x 3 x 135, 1.3 MB in float32) does not
// stay in cache, so its product with the pose features is one small GEMM per block ([n, 135] x
// [135, 3V], at::mm) instead of one pass over posedirs per hand; the rest stays fused per vertex.
constexpr int64_t kBlock = 16;

// Splits [0, B) into at most kBlock hands per block, with at least one block per thread when B allows.
inline int64_t block_size(int64_t B) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return std::max<int64_t>(1, std::min<int64_t>(kBlock, (B + threads - 1) / threads));
}

// posedirs . f for the n hands of a block: [n, 3V] (the pose features are read in place from the Hands).
template <typename T>
at::Tensor pose_offsets(const Model& m, const Hand<T>* hands, int64_t n) {
  const int64_t stride = int64_t(sizeof(Hand<T>) / sizeof(T));
  const at::Tensor f = at::from_blob(const_cast<T*>(hands[0].f), {n, kPoseFeatures}, {stride, 1}, m.posedirs.options());
  return at::mm(f, m.posedirs.view({m.V * 3, kPoseFeatures}).t());
}

// v_posed of vertex v for the n hands of a block: template + shape blend + pose correctives (from
// pose_offsets, [n, 3V]). out[3 * i + c] for hand i.
template <typename T>
inline void posed_vertex(const Model& m, const T* vt, const T* sd, const T* offsets, const T* betas, int64_t n, int64_t v, T* out) {
  const int64_t S = m.S, Sf = m.S_full, V3 = 3 * m.V;
  for (int c = 0; c < 3; ++c) {
    const int64_t vc = 3 * v + c;
    const T* srow = sd + vc * Sf;
    for (int64_t i = 0; i < n; ++i) {
      const T* beta = betas + i * S;
      T acc = vt[vc] + offsets[i * V3 + vc];
      for (int64_t s = 0; s < S; ++s) acc += srow[s] * beta[s];
      out[3 * i + c] = acc;
    }
  }
}

template <typename T>
void forward_impl(const Model& m, const at::Tensor& betas, const at::Tensor& rotations, at::Tensor& vertices, at::Tensor& joints,
                  at::Tensor& transforms) {
  const int64_t B = betas.size(0), V = m.V, S = m.S;
  const T *bp = betas.data_ptr<T>(), *rp = rotations.data_ptr<T>();
  const T *vt = m.v_template.data_ptr<T>(), *sd = m.shapedirs.data_ptr<T>();
  const T* w = m.weights.data_ptr<T>();
  T *vp = vertices.data_ptr<T>(), *jp = joints.data_ptr<T>(), *tp = transforms.data_ptr<T>();
  const int64_t bs = block_size(B), blocks = (B + bs - 1) / bs;
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<Hand<T>> hands(bs);
    std::vector<T> x(3 * bs);
    for (int64_t blk = k0; blk < k1; ++blk) {
      const int64_t first = blk * bs, n = std::min(bs, B - first);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t b = first + i;
        Hand<T>& h = hands[i];
        hand_forward(m, bp + b * S, rp + b * kJoints * 9, h);
        for (int64_t k = 0; k < kJoints; ++k) {
          T* A = tp + (b * kJoints + k) * 16;
          for (int r = 0; r < 3; ++r) {
            for (int j = 0; j < 3; ++j) A[4 * r + j] = h.R[9 * k + 3 * r + j];
            A[4 * r + 3] = h.a[3 * k + r];
            jp[(b * kJoints + k) * 3 + r] = h.t[3 * k + r];
          }
          A[12] = A[13] = A[14] = T(0), A[15] = T(1);
        }
      }
      const at::Tensor offsets = pose_offsets(m, hands.data(), n);
      const T* op = offsets.data_ptr<T>();
      for (int64_t v = 0; v < V; ++v) {
        posed_vertex(m, vt, sd, op, bp + first * S, n, v, x.data());
        const T* wv = w + v * kJoints;
        for (int64_t i = 0; i < n; ++i) {
          const Hand<T>& h = hands[i];
          // Blend the 16 transforms with this vertex's weights (most are zero), then apply once.
          T M[12] = {};
          for (int64_t k = 0; k < kJoints; ++k) {
            const T wk = wv[k];
            if (wk == T(0)) continue;
            for (int r = 0; r < 9; ++r) M[r] += wk * h.R[9 * k + r];
            for (int r = 0; r < 3; ++r) M[9 + r] += wk * h.a[3 * k + r];
          }
          const T* xi = x.data() + 3 * i;
          T* out = vp + ((first + i) * V + v) * 3;
          for (int r = 0; r < 3; ++r) out[r] = M[3 * r] * xi[0] + M[3 * r + 1] * xi[1] + M[3 * r + 2] * xi[2] + M[9 + r];
        }
      }
    }
  });
}

// Gradient accumulators of one hand.
template <typename T>
struct HandGrad {
  T gR[kJoints * 9];   // d/d world rotation R'_k
  T ga[kJoints * 3];   // d/d relative translation a_k
  T gt[kJoints * 3];   // d/d world translation t_k
  T gJ[kJoints * 3];   // d/d rest joint J_k
};

template <typename T>
void backward_impl(const Model& m, const at::Tensor& g_vertices, const at::Tensor& g_joints, const at::Tensor& g_transforms,
                   const at::Tensor& betas, const at::Tensor& rotations, at::Tensor& g_betas, at::Tensor& g_rotations) {
  const int64_t B = betas.size(0), V = m.V, S = m.S, Sf = m.S_full;
  const T *bp = betas.data_ptr<T>(), *rp = rotations.data_ptr<T>();
  const T *gvp = g_vertices.data_ptr<T>(), *gjp = g_joints.data_ptr<T>(), *gtp = g_transforms.data_ptr<T>();
  const T *vt = m.v_template.data_ptr<T>(), *sd = m.shapedirs.data_ptr<T>();
  const T *w = m.weights.data_ptr<T>(), *Js = m.J_shapedirs.data_ptr<T>();
  T *gbp = g_betas.data_ptr<T>(), *grp = g_rotations.data_ptr<T>();
  const int64_t bs = block_size(B), blocks = (B + bs - 1) / bs;
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<Hand<T>> hands(bs);
    std::vector<HandGrad<T>> grads(bs);
    std::vector<T> x(3 * bs), g_beta(bs * S);
    for (int64_t blk = k0; blk < k1; ++blk) {
      const int64_t first = blk * bs, n = std::min(bs, B - first);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t b = first + i;
        hand_forward(m, bp + b * S, rp + b * kJoints * 9, hands[i]);
        grads[i] = HandGrad<T>{};
      }
      std::fill(g_beta.begin(), g_beta.end(), T(0));
      const at::Tensor offsets = pose_offsets(m, hands.data(), n);
      const T* op = offsets.data_ptr<T>();
      at::Tensor g_x = at::empty({n, V * 3}, m.posedirs.options());  // dL/dv_posed of the block
      T* gxp = g_x.data_ptr<T>();
      // Sweep over vertices: out_v = M_v x_v + m_v with M_v = sum_k w_vk R'_k, m_v = sum_k w_vk a_k.
      for (int64_t v = 0; v < V; ++v) {
        posed_vertex(m, vt, sd, op, bp + first * S, n, v, x.data());
        const T* wv = w + v * kJoints;
        for (int64_t i = 0; i < n; ++i) {
          const Hand<T>& h = hands[i];
          HandGrad<T>& g = grads[i];
          const T* gv = gvp + ((first + i) * V + v) * 3;
          const T* xi = x.data() + 3 * i;
          T M[9] = {};
          for (int64_t k = 0; k < kJoints; ++k) {
            const T wk = wv[k];
            if (wk == T(0)) continue;
            for (int r = 0; r < 9; ++r) M[r] += wk * h.R[9 * k + r];
            // dL/dR'_k += w gv x^T, dL/da_k += w gv.
            for (int r = 0; r < 3; ++r) {
              const T wg = wk * gv[r];
              for (int j = 0; j < 3; ++j) g.gR[9 * k + 3 * r + j] += wg * xi[j];
              g.ga[3 * k + r] += wg;
            }
          }
          // dL/dx = M^T gv, then the shape blend (S values) here; the pose correctives after the sweep.
          for (int c = 0; c < 3; ++c) {
            const T gxc = M[c] * gv[0] + M[3 + c] * gv[1] + M[6 + c] * gv[2];
            gxp[i * V * 3 + 3 * v + c] = gxc;
            const T* srow = sd + (3 * v + c) * Sf;
            for (int64_t s = 0; s < S; ++s) g_beta[i * S + s] += srow[s] * gxc;
          }
        }
      }
      // dL/df = dL/dv_posed . posedirs for the whole block: [n, 3V] x [3V, 135].
      const at::Tensor g_f = at::mm(g_x, m.posedirs.view({V * 3, kPoseFeatures}));
      const T* gfp = g_f.data_ptr<T>();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t b = first + i;
        const Hand<T>& h = hands[i];
        HandGrad<T>& g = grads[i];
        T *gR = g.gR, *ga = g.ga, *gt = g.gt, *gJ = g.gJ;
        const T* gf = gfp + i * kPoseFeatures;
        const T* rot = rp + b * kJoints * 9;
        // The outputs joints (= t_k) and transforms (R'_k and a_k; the bottom row is constant).
        for (int64_t k = 0; k < kJoints; ++k) {
          const T* gA = gtp + (b * kJoints + k) * 16;
          for (int r = 0; r < 3; ++r) {
            for (int j = 0; j < 3; ++j) gR[9 * k + 3 * r + j] += gA[4 * r + j];
            ga[3 * k + r] += gA[4 * r + 3];
            gt[3 * k + r] += gjp[(b * kJoints + k) * 3 + r];
          }
        }
        // a_k = t_k - R'_k J_k.
        for (int64_t k = 0; k < kJoints; ++k)
          for (int r = 0; r < 3; ++r) {
            const T gak = ga[3 * k + r];
            gt[3 * k + r] += gak;
            for (int j = 0; j < 3; ++j) {
              gR[9 * k + 3 * r + j] -= gak * h.J[3 * k + j];
              gJ[3 * k + j] -= h.R[9 * k + 3 * r + j] * gak;
            }
          }
        // The chain in reverse: every child (higher index) passes its gradient to its parent first.
        T* g_rot = grp + b * kJoints * 9;
        for (int64_t k = kJoints - 1; k >= 1; --k) {
          const int64_t p = m.parents[k];
          const T* Rk = rot + 9 * k;
          const T* Rp = h.R + 9 * p;
          const T* gRk = gR + 9 * k;
          // R'_k = R'_p R_k: dR_k = R'_p^T dR'_k, dR'_p += dR'_k R_k^T.
          for (int r = 0; r < 3; ++r)
            for (int j = 0; j < 3; ++j) {
              g_rot[9 * k + 3 * r + j] = Rp[r] * gRk[j] + Rp[3 + r] * gRk[3 + j] + Rp[6 + r] * gRk[6 + j];
              gR[9 * p + 3 * r + j] += gRk[3 * r] * Rk[3 * j] + gRk[3 * r + 1] * Rk[3 * j + 1] + gRk[3 * r + 2] * Rk[3 * j + 2];
            }
          // t_k = R'_p (J_k - J_p) + t_p.
          for (int r = 0; r < 3; ++r) {
            const T gtk = gt[3 * k + r];
            gt[3 * p + r] += gtk;
            for (int j = 0; j < 3; ++j) gR[9 * p + 3 * r + j] += gtk * (h.J[3 * k + j] - h.J[3 * p + j]);
          }
          for (int j = 0; j < 3; ++j) {
            const T gd = Rp[j] * gt[3 * k] + Rp[3 + j] * gt[3 * k + 1] + Rp[6 + j] * gt[3 * k + 2];
            gJ[3 * k + j] += gd;
            gJ[3 * p + j] -= gd;
          }
          // The pose feature R_k - I.
          for (int r = 0; r < 9; ++r) g_rot[9 * k + r] += gf[9 * (k - 1) + r];
        }
        // Root: R'_0 = R_0, t_0 = J_0.
        for (int r = 0; r < 9; ++r) g_rot[r] = gR[r];
        for (int r = 0; r < 3; ++r) gJ[r] += gt[r];
        // J = J_template + J_shapedirs beta.
        T* g_b = gbp + b * S;
        for (int64_t s = 0; s < S; ++s) {
          T acc = g_beta[i * S + s];
          for (int64_t r = 0; r < kJoints * 3; ++r) acc += Js[r * S + s] * gJ[r];
          g_b[s] = acc;
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mano_skinning_kernel(const at::Tensor& betas_in, const at::Tensor& rotations_in,
                                                                    const at::Tensor& v_template, const at::Tensor& shapedirs,
                                                                    const at::Tensor& posedirs, const at::Tensor& J_regressor,
                                                                    const at::Tensor& weights, at::IntArrayRef parents) {
  const Model m = check_and_prepare(betas_in, rotations_in, v_template, shapedirs, posedirs, J_regressor, weights, parents);
  const at::Tensor betas = betas_in.contiguous(), rotations = rotations_in.contiguous();
  const int64_t B = betas.size(0);
  at::Tensor vertices = at::empty({B, m.V, 3}, betas.options());
  at::Tensor joints = at::empty({B, kJoints, 3}, betas.options());
  at::Tensor transforms = at::empty({B, kJoints, 4, 4}, betas.options());
  if (B == 0) return {vertices, joints, transforms};
  AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "mano_skinning_cpu",
                             [&] { forward_impl<scalar_t>(m, betas, rotations, vertices, joints, transforms); });
  return {vertices, joints, transforms};
}

std::tuple<at::Tensor, at::Tensor> mano_skinning_backward_kernel(const at::Tensor& grad_vertices, const at::Tensor& grad_joints,
                                                                 const at::Tensor& grad_transforms, const at::Tensor& betas_in,
                                                                 const at::Tensor& rotations_in, const at::Tensor& v_template,
                                                                 const at::Tensor& shapedirs, const at::Tensor& posedirs,
                                                                 const at::Tensor& J_regressor, const at::Tensor& weights,
                                                                 at::IntArrayRef parents) {
  const Model m = check_and_prepare(betas_in, rotations_in, v_template, shapedirs, posedirs, J_regressor, weights, parents);
  const at::Tensor betas = betas_in.contiguous(), rotations = rotations_in.contiguous();
  const int64_t B = betas.size(0);
  TORCH_CHECK_VALUE(grad_vertices.sizes() == at::IntArrayRef({B, m.V, 3}), "mano_skinning_backward: grad_vertices must be [B, V, 3] = [",
                    B, ", ", m.V, ", 3], got ", grad_vertices.sizes());
  TORCH_CHECK_VALUE(grad_joints.sizes() == at::IntArrayRef({B, kJoints, 3}), "mano_skinning_backward: grad_joints must be [", B,
                    ", 16, 3], got ", grad_joints.sizes());
  TORCH_CHECK_VALUE(grad_transforms.sizes() == at::IntArrayRef({B, kJoints, 4, 4}),
                    "mano_skinning_backward: grad_transforms must be [", B, ", 16, 4, 4], got ", grad_transforms.sizes());
  const at::Tensor gv = grad_vertices.to(betas.scalar_type()).contiguous();
  const at::Tensor gj = grad_joints.to(betas.scalar_type()).contiguous();
  const at::Tensor gt = grad_transforms.to(betas.scalar_type()).contiguous();
  at::Tensor g_betas = at::zeros_like(betas), g_rotations = at::zeros_like(rotations);
  if (B == 0) return {g_betas, g_rotations};
  AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "mano_skinning_backward_cpu",
                             [&] { backward_impl<scalar_t>(m, gv, gj, gt, betas, rotations, g_betas, g_rotations); });
  return {g_betas, g_rotations};
}

}  // namespace

TORCH_LIBRARY_IMPL(handops, CPU, m) {
  m.impl("mano_skinning", &mano_skinning_kernel);
  m.impl("mano_skinning_backward", &mano_skinning_backward_kernel);
}

}  // namespace handops
