// CPU kernels of handops::mano_skinning, handops::mano_skinning_backward and
// handops::mano_keypoints_jacobian (MANO, thesis Sec. 2.5).
//
// mano_skinning(betas, pose, transl, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights,
//               parents, keypoint_ids) -> (vertices, keypoints, joints, transforms)
//   Args:
//     betas:        [B, S] shape coefficients (S <= shapedirs.size(2); the first S blend shapes are used).
//     pose:         [B, 16, 3] axis-angle or [B, 16, 3, 3] rotation matrices, the root first.
//     transl:       [B, 3] global translation, or None.
//     v_template:   [V, 3];  shapedirs: [V, 3, S'];  posedirs: [V, 3, 135];  weights: [V, 16].
//     J_template:   [16, 3] = J_regressor v_template;  J_shapedirs: [16, 3, S'] = J_regressor shapedirs
//                   (the rest joints are linear in the shape, so regressing once per model is exact).
//     parents:      16 integers, parents[0] < 0, 0 <= parents[k] < k.
//     keypoint_ids: n integers; id < 16 is joint id, id >= 16 is vertex id - 16.
//   Returns:
//     vertices [B, V, 3], keypoints [B, n, 3], joints [B, 16, 3] (the translation of the world transform
//     G_k), transforms [B, 16, 4, 4] (A_k = G_k with its translation reduced by R'_k J_k), all with transl
//     added. The same maths as handops/_reference/mano.py::mano_skinning_reference.
//
// mano_skinning_backward(grad_vertices?, grad_keypoints?, grad_joints?, grad_transforms?, betas, pose,
//                        <model>, parents, keypoint_ids) -> (grad_betas [B, S], grad_pose (pose's shape),
//                        grad_transl [B, 3]). A missing gradient is zero; the model tensors are constants.
//
// mano_keypoints_jacobian(betas, pose [B, 16, 3] axis-angle, transl?, <model>, parents, keypoint_ids)
//     -> (keypoints [B, n, 3], jacobian [B, n, 3, 48]): d keypoint / d pose, analytic (the translation's
//     Jacobian is the identity). Only the keypoints are evaluated, no vertex sweep: what Gauss-Newton needs.
//
// Forward: one fused pass per hand (blocks of hands in parallel): Rodrigues, J from betas, the chain, then
// one sweep over the vertices that forms v_posed on the fly and skins it. The backward recomputes the
// forward instead of saving intermediates and runs the chain rule by hand: skinning -> relative transforms
// -> chain in reverse -> pose feature and shape blend -> Rodrigues; without a vertex gradient the vertex
// sweep is skipped.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <vector>

namespace handops {
namespace {

constexpr int64_t kJoints = 16;
constexpr int64_t kPoseFeatures = (kJoints - 1) * 9;
constexpr int64_t kPoseParams = kJoints * 3;

struct Model {
  at::Tensor v_template, shapedirs, posedirs, J_template, J_shapedirs, weights;
  std::array<int64_t, kJoints> parents{};
  std::vector<int64_t> keypoints;  // as in the schema: < 16 joint, else 16 + vertex
  int64_t V = 0, S = 0, S_full = 0;
  bool axis_angle = false;
};

Model check_and_prepare(const char* op, const at::Tensor& betas, const at::Tensor& pose, const std::optional<at::Tensor>& transl,
                        const at::Tensor& v_template, const at::Tensor& shapedirs, const at::Tensor& posedirs,
                        const at::Tensor& J_template, const at::Tensor& J_shapedirs, const at::Tensor& weights,
                        at::IntArrayRef parents, at::IntArrayRef keypoint_ids) {
  std::vector<const at::Tensor*> all = {&betas, &pose, &v_template, &shapedirs, &posedirs, &J_template, &J_shapedirs, &weights};
  if (transl.has_value()) all.push_back(&*transl);
  for (const at::Tensor* t : all)
    TORCH_CHECK(t->device().is_cpu(), op, " (CPU kernel): every tensor must be on the CPU, got ", t->device());
  TORCH_CHECK_TYPE(betas.scalar_type() == at::kFloat || betas.scalar_type() == at::kDouble, op,
                   ": betas must be float32 or float64, got ", betas.scalar_type());
  for (const at::Tensor* t : all)
    TORCH_CHECK_TYPE(t->scalar_type() == betas.scalar_type(), op, ": every tensor must have the dtype of betas (",
                     betas.scalar_type(), "), got ", t->scalar_type());
  TORCH_CHECK_VALUE(betas.dim() == 2, op, ": betas must be [B, S], got ", betas.sizes());
  const int64_t B = betas.size(0);
  const bool axis_angle = pose.dim() == 3;
  TORCH_CHECK_VALUE(pose.size(0) == B && pose.size(1) == kJoints &&
                        ((pose.dim() == 3 && pose.size(2) == 3) || (pose.dim() == 4 && pose.size(2) == 3 && pose.size(3) == 3)),
                    op, ": pose must be [B, 16, 3] axis-angle or [B, 16, 3, 3] matrices with B = ", B, ", got ", pose.sizes());
  if (transl.has_value())
    TORCH_CHECK_VALUE(transl->dim() == 2 && transl->size(0) == B && transl->size(1) == 3, op, ": transl must be [B, 3] = [", B,
                      ", 3], got ", transl->sizes());
  TORCH_CHECK_VALUE(v_template.dim() == 2 && v_template.size(1) == 3 && v_template.size(0) >= 1, op,
                    ": v_template must be [V, 3], got ", v_template.sizes());
  const int64_t V = v_template.size(0);
  TORCH_CHECK_VALUE(shapedirs.dim() == 3 && shapedirs.size(0) == V && shapedirs.size(1) == 3, op,
                    ": shapedirs must be [V, 3, S'] with V = ", V, ", got ", shapedirs.sizes());
  const int64_t S_full = shapedirs.size(2);
  TORCH_CHECK_VALUE(betas.size(1) <= S_full, op, ": betas has ", betas.size(1), " coefficients but the model has only ", S_full,
                    " shape blend shapes");
  TORCH_CHECK_VALUE(posedirs.dim() == 3 && posedirs.size(0) == V && posedirs.size(1) == 3 && posedirs.size(2) == kPoseFeatures, op,
                    ": posedirs must be [V, 3, 135] with V = ", V, ", got ", posedirs.sizes());
  TORCH_CHECK_VALUE(J_template.dim() == 2 && J_template.size(0) == kJoints && J_template.size(1) == 3, op,
                    ": J_template must be [16, 3], got ", J_template.sizes());
  TORCH_CHECK_VALUE(J_shapedirs.dim() == 3 && J_shapedirs.size(0) == kJoints && J_shapedirs.size(1) == 3 && J_shapedirs.size(2) == S_full,
                    op, ": J_shapedirs must be [16, 3, S'] with S' = ", S_full, ", got ", J_shapedirs.sizes());
  TORCH_CHECK_VALUE(weights.dim() == 2 && weights.size(0) == V && weights.size(1) == kJoints, op,
                    ": weights must be [V, 16] with V = ", V, ", got ", weights.sizes());
  TORCH_CHECK_VALUE(int64_t(parents.size()) == kJoints, op, ": parents must list 16 joints, got ", parents.size());
  TORCH_CHECK_VALUE(parents[0] < 0, op, ": parents[0] must be negative (the root), got ", parents[0]);
  Model m;
  for (int64_t k = 1; k < kJoints; ++k) {
    // The chain runs in index order and the backward in reverse: a parent must come before its children.
    TORCH_CHECK_VALUE(parents[k] >= 0 && parents[k] < k, op, ": parents[", k, "] must be in [0, ", k, "), got ", parents[k]);
    m.parents[k] = parents[k];
  }
  m.parents[0] = -1;
  for (const int64_t id : keypoint_ids)
    TORCH_CHECK_VALUE(id >= 0 && id < kJoints + V, op, ": keypoint_ids must be joints (0-15) or 16 + a vertex id < ", kJoints + V,
                      ", got ", id);
  m.keypoints.assign(keypoint_ids.begin(), keypoint_ids.end());
  m.V = V, m.S = betas.size(1), m.S_full = S_full, m.axis_angle = axis_angle;
  m.v_template = v_template.contiguous(), m.shapedirs = shapedirs.contiguous(), m.posedirs = posedirs.contiguous();
  m.J_template = J_template.contiguous(), m.J_shapedirs = J_shapedirs.contiguous(), m.weights = weights.contiguous();
  return m;
}

// Row-major 3x3 helpers.
template <typename T>
inline void matmul3(const T* a, const T* b, T* out) {  // out = a b
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) out[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
}

// Rodrigues in float64: R = I + a K + b K^2 with K = skew(r), s = |r|^2, a = sin t / t, b = (1 - cos t) / s,
// K^2 = r r^T - s I. With dR != nullptr also dR/dr_i (row-major, dR + 9 i):
//   dR/dr_i = 2 r_i (a' K + b' K^2) + a skew(e_i) + b (e_i r^T + r e_i^T - 2 r_i I),  a' = da/ds, b' = db/ds.
// Series in s below kRodriguesSeriesBelow keep the value and the derivative exact and finite at zero.
// Must equal handops.geometry.RODRIGUES_SERIES_BELOW (tests/test_constants.py).
constexpr double kRodriguesSeriesBelow = 1e-4;
inline void rodrigues(const double* r, double* R, double* dR) {
  const double x = r[0], y = r[1], z = r[2], s = x * x + y * y + z * z;
  double a, b, da, db;
  if (s < kRodriguesSeriesBelow) {
    a = 1 - s / 6 * (1 - s / 20 * (1 - s / 42));
    b = 0.5 - s / 24 * (1 - s / 30 * (1 - s / 56));
    da = -1.0 / 6 + s / 60 - s * s / 1680;
    db = -1.0 / 24 + s / 360 - s * s / 13440;
  } else {
    const double t = std::sqrt(s), c = std::cos(t);
    a = std::sin(t) / t, b = (1 - c) / s;
    da = (c - a) / (2 * s), db = (a - 2 * b) / (2 * s);
  }
  const double K[9] = {0, -z, y, z, 0, -x, -y, x, 0};
  const double K2[9] = {x * x - s, x * y, x * z, x * y, y * y - s, y * z, x * z, y * z, z * z - s};
  for (int i = 0; i < 9; ++i) R[i] = (i % 4 == 0 ? 1.0 : 0.0) + a * K[i] + b * K2[i];
  if (dR == nullptr) return;
  for (int i = 0; i < 3; ++i) {
    double* D = dR + 9 * i;
    for (int e = 0; e < 9; ++e) D[e] = 2 * r[i] * (da * K[e] + db * K2[e]);
    // a skew(e_i): e_0 -> (2,1)=+1, (1,2)=-1; e_1 -> (0,2)=+1, (2,0)=-1; e_2 -> (1,0)=+1, (0,1)=-1.
    static constexpr int plus[3] = {7, 2, 3}, minus[3] = {5, 6, 1};
    D[plus[i]] += a, D[minus[i]] -= a;
    // b (e_i r^T + r e_i^T - 2 r_i I).
    for (int j = 0; j < 3; ++j) D[3 * i + j] += b * r[j], D[3 * j + i] += b * r[j];
    for (int j = 0; j < 3; ++j) D[4 * j] -= 2 * b * r[i];
  }
}

// The forward quantities of one hand that the vertex sweep and the backward need.
template <typename T>
struct Hand {
  T L[kJoints * 9];    // local rotations R_k
  T J[kJoints * 3];    // rest joints
  T R[kJoints * 9];    // world rotations R'_k
  T t[kJoints * 3];    // world translations (the posed joints, without transl)
  T a[kJoints * 3];    // relative translations t_k - R'_k J_k
  T f[kPoseFeatures];  // pose feature (R_k - I), k >= 1
};

// Local rotations of one hand from its pose (axis-angle or matrices); dL (16 x 3 x 9) if wanted and axis-angle.
template <typename T>
void local_rotations(const Model& m, const T* pose, T* L, double* dL) {
  if (!m.axis_angle) {
    std::copy(pose, pose + kJoints * 9, L);
    return;
  }
  for (int64_t k = 0; k < kJoints; ++k) {
    const double r[3] = {double(pose[3 * k]), double(pose[3 * k + 1]), double(pose[3 * k + 2])};
    double R[9];
    rodrigues(r, R, dL == nullptr ? nullptr : dL + 27 * k);
    for (int i = 0; i < 9; ++i) L[9 * k + i] = T(R[i]);
  }
}

template <typename T>
void hand_forward(const Model& m, const T* beta, const T* pose, Hand<T>& h, double* dL = nullptr) {
  local_rotations(m, pose, h.L, dL);
  const T* Jt = m.J_template.data_ptr<T>();
  const T* Js = m.J_shapedirs.data_ptr<T>();
  for (int64_t i = 0; i < kJoints * 3; ++i) {
    T acc = Jt[i];
    for (int64_t s = 0; s < m.S; ++s) acc += Js[i * m.S_full + s] * beta[s];
    h.J[i] = acc;
  }
  for (int64_t k = 0; k < kJoints; ++k) {
    const T* Rk = h.L + 9 * k;
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

// Hands are processed in blocks, and the vertex sweep of a block is built from GEMMs (at::mm): posedirs
// (V x 3 x 135, 1.3 MB in float32) and the skinning weights are read once per block, and what is left per
// vertex and hand is a 3x4 transform applied to a point, in contiguous loops. A block holds about
// kBlockVertices vertex-hands (16 hands of the full mesh; many more for the five fingertips of the
// joints-only path, where the GEMMs would otherwise cost more in calls than in work), and there is at
// least one block per thread when B allows.
constexpr int64_t kBlockVertices = 16 * 1024;

inline int64_t block_size(int64_t B, int64_t V) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t cap = std::max<int64_t>(1, kBlockVertices / std::max<int64_t>(1, V));
  return std::max<int64_t>(1, std::min<int64_t>(cap, (B + threads - 1) / threads));
}

// v_posed of the n hands of a block, [n, 3V]: v_template + betas shapedirs^T + f posedirs^T (the pose
// features are read in place from the Hands; betas points at the block's first hand).
template <typename T>
at::Tensor posed_vertices(const Model& m, const Hand<T>* hands, const T* betas, int64_t n) {
  const int64_t stride = int64_t(sizeof(Hand<T>) / sizeof(T)), V3 = 3 * m.V;
  const at::Tensor f = at::from_blob(const_cast<T*>(hands[0].f), {n, kPoseFeatures}, {stride, 1}, m.posedirs.options());
  at::Tensor x = at::mm(f, m.posedirs.view({V3, kPoseFeatures}).t());
  if (m.S > 0) {
    const at::Tensor b = at::from_blob(const_cast<T*>(betas), {n, m.S}, m.posedirs.options());
    x.addmm_(b, m.shapedirs.view({V3, m.S_full}).narrow(1, 0, m.S).t());
  }
  return x.add_(m.v_template.view({1, V3}));
}

// The blended transforms of every vertex and hand of a block, [V, 12n]: weights [V, 16] x A [16, 12n], where
// row k of A holds (R'_k row-major, a_k) of hand i at columns 12 i .. 12 i + 11.
template <typename T>
at::Tensor blended_transforms(const Model& m, const Hand<T>* hands, int64_t n) {
  at::Tensor A = at::empty({kJoints, 12 * n}, m.weights.options());
  T* ap = A.data_ptr<T>();
  for (int64_t k = 0; k < kJoints; ++k)
    for (int64_t i = 0; i < n; ++i) {
      T* row = ap + k * 12 * n + 12 * i;
      std::copy(hands[i].R + 9 * k, hands[i].R + 9 * k + 9, row);
      std::copy(hands[i].a + 3 * k, hands[i].a + 3 * k + 3, row + 9);
    }
  return at::mm(m.weights, A);
}

template <typename T>
void forward_impl(const Model& m, const at::Tensor& betas, const at::Tensor& pose, const T* shift, at::Tensor& vertices,
                  at::Tensor& keypoints, at::Tensor& joints, at::Tensor& transforms) {
  const int64_t B = betas.size(0), V = m.V, S = m.S, P = pose.numel() / std::max<int64_t>(1, B);
  const int64_t n_kp = int64_t(m.keypoints.size());
  const T *bp = betas.data_ptr<T>(), *pp = pose.data_ptr<T>();
  T *vp = vertices.data_ptr<T>(), *kp = keypoints.data_ptr<T>(), *jp = joints.data_ptr<T>(), *tp = transforms.data_ptr<T>();
  const int64_t bs = block_size(B, m.V), blocks = (B + bs - 1) / bs;
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<Hand<T>> hands(bs);
    for (int64_t blk = k0; blk < k1; ++blk) {
      const int64_t first = blk * bs, n = std::min(bs, B - first);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t b = first + i;
        Hand<T>& h = hands[i];
        hand_forward(m, bp + b * S, pp + b * P, h);
        const T* d = shift + 3 * b;
        for (int64_t k = 0; k < kJoints; ++k) {
          T* A = tp + (b * kJoints + k) * 16;
          for (int r = 0; r < 3; ++r) {
            for (int j = 0; j < 3; ++j) A[4 * r + j] = h.R[9 * k + 3 * r + j];
            A[4 * r + 3] = h.a[3 * k + r] + d[r];
            jp[(b * kJoints + k) * 3 + r] = h.t[3 * k + r] + d[r];
          }
          A[12] = A[13] = A[14] = T(0), A[15] = T(1);
        }
      }
      const at::Tensor X = posed_vertices(m, hands.data(), bp + first * S, n), Tb = blended_transforms(m, hands.data(), n);
      const T *xp = X.data_ptr<T>(), *tb = Tb.data_ptr<T>();
      for (int64_t i = 0; i < n; ++i) {
        const T* xi = xp + i * 3 * V;
        const T* d = shift + 3 * (first + i);
        T* out = vp + (first + i) * V * 3;
        for (int64_t v = 0; v < V; ++v) {
          const T* M = tb + v * 12 * n + 12 * i;
          const T* x = xi + 3 * v;
          for (int r = 0; r < 3; ++r) out[3 * v + r] = M[3 * r] * x[0] + M[3 * r + 1] * x[1] + M[3 * r + 2] * x[2] + M[9 + r] + d[r];
        }
      }
      for (int64_t b = first; b < first + n; ++b)
        for (int64_t q = 0; q < n_kp; ++q) {
          const int64_t id = m.keypoints[q];
          const T* src = id < kJoints ? jp + (b * kJoints + id) * 3 : vp + (b * V + id - kJoints) * 3;
          std::copy(src, src + 3, kp + (b * n_kp + q) * 3);
        }
    }
  });
}

// Gradient accumulators of one hand.
template <typename T>
struct HandGrad {
  T gR[kJoints * 9];  // d/d world rotation R'_k
  T ga[kJoints * 3];  // d/d relative translation a_k
  T gt[kJoints * 3];  // d/d world translation t_k
  T gJ[kJoints * 3];  // d/d rest joint J_k
};

// gv: [B, V, 3] or nullptr (no vertex gradient: the sweep is skipped); gj [B, 16, 3] and gA [B, 16, 4, 4]
// or nullptr.
template <typename T>
void backward_impl(const Model& m, const T* gvp, const T* gjp, const T* gtp, const at::Tensor& betas, const at::Tensor& pose,
                   at::Tensor& g_betas, at::Tensor& g_pose, at::Tensor& g_transl) {
  const int64_t B = betas.size(0), V = m.V, S = m.S, Sf = m.S_full, P = pose.numel() / std::max<int64_t>(1, B);
  const T *bp = betas.data_ptr<T>(), *pp = pose.data_ptr<T>();
  const T *Js = m.J_shapedirs.data_ptr<T>();
  T *gbp = g_betas.data_ptr<T>(), *gpp = g_pose.data_ptr<T>(), *gdp = g_transl.data_ptr<T>();
  const int64_t bs = block_size(B, m.V), blocks = (B + bs - 1) / bs;
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<Hand<T>> hands(bs);
    std::vector<HandGrad<T>> grads(bs);
    std::vector<double> dL(bs * kJoints * 27);
    std::vector<T> g_shift(3 * bs);
    for (int64_t blk = k0; blk < k1; ++blk) {
      const int64_t first = blk * bs, n = std::min(bs, B - first);
      for (int64_t i = 0; i < n; ++i) {
        hand_forward(m, bp + (first + i) * S, pp + (first + i) * P, hands[i], m.axis_angle ? dL.data() + i * kJoints * 27 : nullptr);
        grads[i] = HandGrad<T>{};
      }
      std::fill(g_shift.begin(), g_shift.end(), T(0));
      at::Tensor g_f, g_b, g_A;  // dL/df [n, 135], dL/dbetas [n, S] and dL/d(R'_k, a_k) [16, 12n] of the vertex sweep
      if (gvp != nullptr) {
        const at::Tensor X = posed_vertices(m, hands.data(), bp + first * S, n), Tb = blended_transforms(m, hands.data(), n);
        const T *xp = X.data_ptr<T>(), *tb = Tb.data_ptr<T>();
        at::Tensor g_x = at::empty({n, V * 3}, m.posedirs.options());  // dL/dv_posed
        at::Tensor Z = at::empty({V, 12 * n}, m.posedirs.options());   // dL/d(blended transform) per vertex
        T *gxp = g_x.data_ptr<T>(), *zp = Z.data_ptr<T>();
        // out_v = M_v x_v + m_v: dL/dx_v = M_v^T g_v, dL/dM_v = g_v x_v^T, dL/dm_v = g_v.
        for (int64_t i = 0; i < n; ++i) {
          const T* xi = xp + i * 3 * V;
          const T* gvi = gvp + (first + i) * V * 3;
          T* gxi = gxp + i * 3 * V;
          T sx = 0, sy = 0, sz = 0;
          for (int64_t v = 0; v < V; ++v) {
            const T* M = tb + v * 12 * n + 12 * i;
            const T* x = xi + 3 * v;
            const T* gv = gvi + 3 * v;
            T* z = zp + v * 12 * n + 12 * i;
            for (int c = 0; c < 3; ++c) gxi[3 * v + c] = M[c] * gv[0] + M[3 + c] * gv[1] + M[6 + c] * gv[2];
            for (int r = 0; r < 3; ++r) {
              for (int c = 0; c < 3; ++c) z[3 * r + c] = gv[r] * x[c];
              z[9 + r] = gv[r];
            }
            sx += gv[0], sy += gv[1], sz += gv[2];
          }
          g_shift[3 * i] += sx, g_shift[3 * i + 1] += sy, g_shift[3 * i + 2] += sz;
        }
        // The weights, posedirs and shapedirs carry the sweep's gradient back, one GEMM each.
        g_A = at::mm(m.weights.t(), Z);
        g_f = at::mm(g_x, m.posedirs.view({V * 3, kPoseFeatures}));
        if (S > 0) g_b = at::mm(g_x, m.shapedirs.view({V * 3, Sf}).narrow(1, 0, S));
      }
      const T* gfp = g_f.defined() ? g_f.data_ptr<T>() : nullptr;
      const T* gsp = g_b.defined() ? g_b.data_ptr<T>() : nullptr;
      const T* gap = g_A.defined() ? g_A.data_ptr<T>() : nullptr;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t b = first + i;
        const Hand<T>& h = hands[i];
        HandGrad<T>& g = grads[i];
        T *gR = g.gR, *ga = g.ga, *gt = g.gt, *gJ = g.gJ;
        if (gap != nullptr)  // the vertex sweep's share of dL/dR'_k and dL/da_k
          for (int64_t k = 0; k < kJoints; ++k) {
            const T* row = gap + k * 12 * n + 12 * i;
            for (int e = 0; e < 9; ++e) gR[9 * k + e] += row[e];
            for (int r = 0; r < 3; ++r) ga[3 * k + r] += row[9 + r];
          }
        // The outputs joints (= t_k + transl) and transforms (R'_k and a_k + transl; the bottom row is constant).
        for (int64_t k = 0; k < kJoints; ++k)
          for (int r = 0; r < 3; ++r) {
            if (gtp != nullptr) {
              const T* gA = gtp + (b * kJoints + k) * 16;
              for (int j = 0; j < 3; ++j) gR[9 * k + 3 * r + j] += gA[4 * r + j];
              ga[3 * k + r] += gA[4 * r + 3];
              g_shift[3 * i + r] += gA[4 * r + 3];
            }
            if (gjp != nullptr) {
              gt[3 * k + r] += gjp[(b * kJoints + k) * 3 + r];
              g_shift[3 * i + r] += gjp[(b * kJoints + k) * 3 + r];
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
        T g_local[kJoints * 9];
        for (int64_t k = kJoints - 1; k >= 1; --k) {
          const int64_t p = m.parents[k];
          const T* Rk = h.L + 9 * k;
          const T* Rp = h.R + 9 * p;
          const T* gRk = gR + 9 * k;
          // R'_k = R'_p R_k: dR_k = R'_p^T dR'_k, dR'_p += dR'_k R_k^T.
          for (int r = 0; r < 3; ++r)
            for (int j = 0; j < 3; ++j) {
              g_local[9 * k + 3 * r + j] = Rp[r] * gRk[j] + Rp[3 + r] * gRk[3 + j] + Rp[6 + r] * gRk[6 + j];
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
          if (gfp != nullptr)
            for (int r = 0; r < 9; ++r) g_local[9 * k + r] += gfp[i * kPoseFeatures + 9 * (k - 1) + r];
        }
        // Root: R'_0 = R_0, t_0 = J_0.
        for (int r = 0; r < 9; ++r) g_local[r] = gR[r];
        for (int r = 0; r < 3; ++r) gJ[r] += gt[r];
        // Rodrigues (axis-angle pose): dL/dr_{k,a} = <dL/dR_k, dR_k/dr_a>.
        T* g_p = gpp + b * P;
        if (m.axis_angle) {
          const double* D = dL.data() + i * kJoints * 27;
          for (int64_t k = 0; k < kJoints; ++k)
            for (int a = 0; a < 3; ++a) {
              double acc = 0;
              for (int e = 0; e < 9; ++e) acc += double(g_local[9 * k + e]) * D[27 * k + 9 * a + e];
              g_p[3 * k + a] = T(acc);
            }
        } else {
          std::copy(g_local, g_local + kJoints * 9, g_p);
        }
        // J = J_template + J_shapedirs beta.
        T* g_beta = gbp + b * S;
        for (int64_t s = 0; s < S; ++s) {
          T acc = gsp != nullptr ? gsp[i * S + s] : T(0);
          for (int64_t r = 0; r < kJoints * 3; ++r) acc += Js[r * Sf + s] * gJ[r];
          g_beta[s] = acc;
        }
        for (int r = 0; r < 3; ++r) gdp[3 * b + r] = g_shift[3 * i + r];
      }
    }
  });
}

// Jacobian of the keypoints with respect to the 48 axis-angle parameters, hand by hand, in closed form.
// Parameter a of joint j (p its parent) turns everything below j about the posed joint t_j with the world
// angular velocity w = R'_p vee(dR_j/da R_j^T) (dR R^T is skew for a rotation R), so a point y rigidly
// attached at or below j moves by w x (y - t_j): a joint keypoint k of the subtree by w x (t_k - t_j), and a
// skinned vertex sum_k w_vk y_k (y_k = R'_k (x - J_k) + t_k) by w x (sum_{k in subtree} w_vk (y_k - t_j)).
// For j >= 1 the vertex also moves through its pose correctives: x changes by posedirs[v][:, 9 (j-1) + e]
// dR_j[e], which the blended rotation M_v = sum_k w_vk R'_k carries to the posed vertex.
template <typename T>
void jacobian_impl(const Model& m, const at::Tensor& betas, const at::Tensor& pose, const T* shift, at::Tensor& keypoints,
                   at::Tensor& jacobian) {
  const int64_t B = betas.size(0), S = m.S, Sf = m.S_full, n_kp = int64_t(m.keypoints.size());
  const T *bp = betas.data_ptr<T>(), *pp = pose.data_ptr<T>(), *w = m.weights.data_ptr<T>();
  const T *vt = m.v_template.data_ptr<T>(), *sd = m.shapedirs.data_ptr<T>(), *pd = m.posedirs.data_ptr<T>();
  T *kp = keypoints.data_ptr<T>(), *jac = jacobian.data_ptr<T>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    Hand<T> h;
    std::vector<double> dL(kJoints * 27);
    // Per vertex keypoint: y_k for the 16 joints, M_v (9), and per joint j: sum over the subtree of w_vk (y_k - t_j).
    std::vector<T> ys(n_kp * kJoints * 3), Ms(n_kp * 9), lever(n_kp * 3);
    for (int64_t b = b0; b < b1; ++b) {
      const T* beta = bp + b * S;
      hand_forward(m, beta, pp + b * kPoseParams, h, dL.data());
      const T* d = shift + 3 * b;
      for (int64_t q = 0; q < n_kp; ++q) {
        const int64_t id = m.keypoints[q];
        T* out = kp + (b * n_kp + q) * 3;
        if (id < kJoints) {
          for (int r = 0; r < 3; ++r) out[r] = h.t[3 * id + r] + d[r];
          continue;
        }
        const int64_t v = id - kJoints;
        T x[3];
        for (int c = 0; c < 3; ++c) {
          const int64_t vc = 3 * v + c;
          T acc = vt[vc];
          for (int64_t s = 0; s < S; ++s) acc += sd[vc * Sf + s] * beta[s];
          for (int64_t e = 0; e < kPoseFeatures; ++e) acc += pd[vc * kPoseFeatures + e] * h.f[e];
          x[c] = acc;
        }
        const T* wv = w + v * kJoints;
        T* M = Ms.data() + 9 * q;
        std::fill(M, M + 9, T(0));
        for (int r = 0; r < 3; ++r) out[r] = d[r];
        for (int64_t k = 0; k < kJoints; ++k) {
          T* y = ys.data() + (q * kJoints + k) * 3;
          const T* Rk = h.R + 9 * k;
          for (int r = 0; r < 3; ++r)
            y[r] = Rk[3 * r] * (x[0] - h.J[3 * k]) + Rk[3 * r + 1] * (x[1] - h.J[3 * k + 1]) + Rk[3 * r + 2] * (x[2] - h.J[3 * k + 2]) +
                   h.t[3 * k + r];
          for (int e = 0; e < 9; ++e) M[e] += wv[k] * Rk[e];
          for (int r = 0; r < 3; ++r) out[r] += wv[k] * y[r];
        }
      }
      T* jb = jac + b * n_kp * 3 * kPoseParams;
      for (int64_t j = 0; j < kJoints; ++j) {
        // Which joints move with joint j (parents[k] < k, so one pass in index order).
        bool moves[kJoints] = {};
        moves[j] = true;
        for (int64_t k = j + 1; k < kJoints; ++k) moves[k] = moves[m.parents[k]];
        const T* tj = h.t + 3 * j;
        for (int64_t q = 0; q < n_kp; ++q) {
          const int64_t id = m.keypoints[q];
          if (id < kJoints) continue;
          const T* wv = w + (id - kJoints) * kJoints;
          T* l = lever.data() + 3 * q;
          l[0] = l[1] = l[2] = T(0);
          for (int64_t k = j; k < kJoints; ++k) {
            if (!moves[k] || wv[k] == T(0)) continue;
            const T* y = ys.data() + (q * kJoints + k) * 3;
            for (int r = 0; r < 3; ++r) l[r] += wv[k] * (y[r] - tj[r]);
          }
        }
        const T* Rj = h.L + 9 * j;
        const int64_t p = m.parents[j];
        for (int a = 0; a < 3; ++a) {
          const int64_t col = 3 * j + a;
          const double* D = dL.data() + 27 * j + 9 * a;
          // vee(D R_j^T): entries (2,1), (0,2), (1,0) of the skew matrix.
          auto entry = [&](int r, int c) { return D[3 * r] * double(Rj[3 * c]) + D[3 * r + 1] * double(Rj[3 * c + 1]) + D[3 * r + 2] * double(Rj[3 * c + 2]); };
          const double local[3] = {entry(2, 1), entry(0, 2), entry(1, 0)};
          T omega[3];
          for (int r = 0; r < 3; ++r)
            omega[r] = p < 0 ? T(local[r])
                             : T(h.R[9 * p + 3 * r] * local[0] + h.R[9 * p + 3 * r + 1] * local[1] + h.R[9 * p + 3 * r + 2] * local[2]);
          auto cross = [&](const T* u, T* out) {
            out[0] = omega[1] * u[2] - omega[2] * u[1];
            out[1] = omega[2] * u[0] - omega[0] * u[2];
            out[2] = omega[0] * u[1] - omega[1] * u[0];
          };
          for (int64_t q = 0; q < n_kp; ++q) {
            const int64_t id = m.keypoints[q];
            T g[3] = {};
            if (id < kJoints) {
              if (moves[id]) {
                const T u[3] = {h.t[3 * id] - tj[0], h.t[3 * id + 1] - tj[1], h.t[3 * id + 2] - tj[2]};
                cross(u, g);
              }
            } else {
              cross(lever.data() + 3 * q, g);
              if (j >= 1) {  // pose correctives
                const int64_t v = id - kJoints;
                const T* M = Ms.data() + 9 * q;
                T dx[3];
                for (int c = 0; c < 3; ++c) {
                  const T* row = pd + (3 * v + c) * kPoseFeatures + 9 * (j - 1);
                  double acc = 0;
                  for (int e = 0; e < 9; ++e) acc += double(row[e]) * D[e];
                  dx[c] = T(acc);
                }
                for (int r = 0; r < 3; ++r) g[r] += M[3 * r] * dx[0] + M[3 * r + 1] * dx[1] + M[3 * r + 2] * dx[2];
              }
            }
            for (int r = 0; r < 3; ++r) jb[(q * 3 + r) * kPoseParams + col] = g[r];
          }
        }
      }
    }
  });
}

// transl as a [B, 3] contiguous tensor (zeros without one), so that the kernels add it unconditionally.
at::Tensor shift_of(const std::optional<at::Tensor>& transl, const at::Tensor& betas) {
  return transl.has_value() ? transl->contiguous() : at::zeros({betas.size(0), 3}, betas.options());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mano_skinning_kernel(
    const at::Tensor& betas_in, const at::Tensor& pose_in, const std::optional<at::Tensor>& transl, const at::Tensor& v_template,
    const at::Tensor& shapedirs, const at::Tensor& posedirs, const at::Tensor& J_template, const at::Tensor& J_shapedirs,
    const at::Tensor& weights, at::IntArrayRef parents, at::IntArrayRef keypoint_ids) {
  const Model m = check_and_prepare("mano_skinning", betas_in, pose_in, transl, v_template, shapedirs, posedirs, J_template,
                                    J_shapedirs, weights, parents, keypoint_ids);
  const at::Tensor betas = betas_in.contiguous(), pose = pose_in.contiguous(), shift = shift_of(transl, betas);
  const int64_t B = betas.size(0);
  at::Tensor vertices = at::empty({B, m.V, 3}, betas.options());
  at::Tensor keypoints = at::empty({B, int64_t(m.keypoints.size()), 3}, betas.options());
  at::Tensor joints = at::empty({B, kJoints, 3}, betas.options());
  at::Tensor transforms = at::empty({B, kJoints, 4, 4}, betas.options());
  if (B == 0) return {vertices, keypoints, joints, transforms};
  AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "mano_skinning_cpu", [&] {
    forward_impl<scalar_t>(m, betas, pose, shift.data_ptr<scalar_t>(), vertices, keypoints, joints, transforms);
  });
  return {vertices, keypoints, joints, transforms};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mano_skinning_backward_kernel(
    const std::optional<at::Tensor>& grad_vertices, const std::optional<at::Tensor>& grad_keypoints,
    const std::optional<at::Tensor>& grad_joints, const std::optional<at::Tensor>& grad_transforms, const at::Tensor& betas_in,
    const at::Tensor& pose_in, const at::Tensor& v_template, const at::Tensor& shapedirs, const at::Tensor& posedirs,
    const at::Tensor& J_template, const at::Tensor& J_shapedirs, const at::Tensor& weights, at::IntArrayRef parents,
    at::IntArrayRef keypoint_ids) {
  const char* op = "mano_skinning_backward";
  const Model m = check_and_prepare(op, betas_in, pose_in, std::nullopt, v_template, shapedirs, posedirs, J_template, J_shapedirs,
                                    weights, parents, keypoint_ids);
  const at::Tensor betas = betas_in.contiguous(), pose = pose_in.contiguous();
  const int64_t B = betas.size(0), n_kp = int64_t(m.keypoints.size());
  auto grad_of = [&](const std::optional<at::Tensor>& g, at::IntArrayRef shape, const char* name) -> at::Tensor {
    if (!g.has_value() || !g->defined()) return at::Tensor();
    TORCH_CHECK_VALUE(g->sizes() == shape, op, ": ", name, " must be ", shape, ", got ", g->sizes());
    TORCH_CHECK(g->device().is_cpu(), op, " (CPU kernel): ", name, " must be on the CPU, got ", g->device());
    return g->to(betas.scalar_type()).contiguous();
  };
  at::Tensor gv = grad_of(grad_vertices, {B, m.V, 3}, "grad_vertices");
  at::Tensor gj = grad_of(grad_joints, {B, kJoints, 3}, "grad_joints");
  const at::Tensor gA = grad_of(grad_transforms, {B, kJoints, 4, 4}, "grad_transforms");
  const at::Tensor gk = grad_of(grad_keypoints, {B, n_kp, 3}, "grad_keypoints");
  // The keypoints are copies of joints and vertices: their gradient joins those (copied first, so the
  // caller's gradients are never written to).
  if (gk.defined() && B > 0) {
    bool to_joints = false, to_vertices = false;
    for (const int64_t id : m.keypoints) (id < kJoints ? to_joints : to_vertices) = true;
    // Cloned first (grad_of may have returned the caller's own tensor), so the caller's gradients are never written to.
    if (to_joints) gj = gj.defined() ? gj.clone() : at::zeros({B, kJoints, 3}, betas.options());
    if (to_vertices) gv = gv.defined() ? gv.clone() : at::zeros({B, m.V, 3}, betas.options());
    AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "mano_skinning_backward_keypoints", [&] {
      const scalar_t* g = gk.data_ptr<scalar_t>();
      scalar_t* gjp = to_joints ? gj.data_ptr<scalar_t>() : nullptr;
      scalar_t* gvp = to_vertices ? gv.data_ptr<scalar_t>() : nullptr;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t q = 0; q < n_kp; ++q) {
          const int64_t id = m.keypoints[q];
          scalar_t* dst = id < kJoints ? gjp + (b * kJoints + id) * 3 : gvp + (b * m.V + id - kJoints) * 3;
          for (int r = 0; r < 3; ++r) dst[r] += g[(b * n_kp + q) * 3 + r];
        }
    });
  }
  at::Tensor g_betas = at::zeros_like(betas), g_pose = at::zeros_like(pose), g_transl = at::zeros({B, 3}, betas.options());
  if (B == 0) return {g_betas, g_pose, g_transl};
  AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "mano_skinning_backward_cpu", [&] {
    auto ptr = [](const at::Tensor& t) -> const scalar_t* { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    backward_impl<scalar_t>(m, ptr(gv), ptr(gj), ptr(gA), betas, pose, g_betas, g_pose, g_transl);
  });
  return {g_betas, g_pose, g_transl};
}

std::tuple<at::Tensor, at::Tensor> mano_keypoints_jacobian_kernel(
    const at::Tensor& betas_in, const at::Tensor& pose_in, const std::optional<at::Tensor>& transl, const at::Tensor& v_template,
    const at::Tensor& shapedirs, const at::Tensor& posedirs, const at::Tensor& J_template, const at::Tensor& J_shapedirs,
    const at::Tensor& weights, at::IntArrayRef parents, at::IntArrayRef keypoint_ids) {
  const char* op = "mano_keypoints_jacobian";
  const Model m = check_and_prepare(op, betas_in, pose_in, transl, v_template, shapedirs, posedirs, J_template, J_shapedirs, weights,
                                    parents, keypoint_ids);
  TORCH_CHECK_VALUE(m.axis_angle, op, ": pose must be [B, 16, 3] axis-angle (the Jacobian is with respect to it), got ",
                    pose_in.sizes());
  const at::Tensor betas = betas_in.contiguous(), pose = pose_in.contiguous(), shift = shift_of(transl, betas);
  const int64_t B = betas.size(0), n_kp = int64_t(m.keypoints.size());
  at::Tensor keypoints = at::empty({B, n_kp, 3}, betas.options());
  at::Tensor jacobian = at::empty({B, n_kp, 3, kPoseParams}, betas.options());
  if (B == 0 || n_kp == 0) return {keypoints, jacobian};
  AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "mano_keypoints_jacobian_cpu", [&] {
    jacobian_impl<scalar_t>(m, betas, pose, shift.data_ptr<scalar_t>(), keypoints, jacobian);
  });
  return {keypoints, jacobian};
}

}  // namespace

TORCH_LIBRARY_IMPL(handops, CPU, m) {
  m.impl("mano_skinning", &mano_skinning_kernel);
  m.impl("mano_skinning_backward", &mano_skinning_backward_kernel);
  m.impl("mano_keypoints_jacobian", &mano_keypoints_jacobian_kernel);
}

}  // namespace handops
