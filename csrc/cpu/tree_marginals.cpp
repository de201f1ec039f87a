// CPU kernels of handops::tree_marginals and handops::tree_marginals_backward (schemas: csrc/handops.cpp).
//
// The contract (shapes, layouts, numerical conventions) is handops/_reference/tree_marginals.py and the
// public docstring of handops.tree_marginals; what follows are implementation notes. The op returns the
// marginals, the normalised messages [B, L, M, H, W] and their scales [B, L, M] (the peak of each raw
// message, 0 for one replaced by ones); the backward recomputes the belief products from those two.
//
// The semantics are those of handops/_reference/tree_marginals.py. Every message, and both of its
// adjoints, is a direct convolution (direct_correlation.h): summing non-negative terms keeps each entry
// accurate relative to itself, which the tiny entries of messages between peaked heatmaps need (an FFT
// is accurate only relative to the largest entry). Work is parallel over images; with fewer images than
// threads, over the independent messages of a level.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "cpu/direct_correlation.h"
#include "cpu/tree_schedule.h"

namespace handops {
namespace {

// The reference's MESSAGE_FLOOR and ZERO_MESSAGE_EPS_FACTOR (tests/test_constants.py checks they agree).
constexpr double kMessageFloor = 1e-30;
constexpr double kZeroMessageEpsFactor = 256.0;

// Images are summed into this many partial gradients of shared kernels at most (a fixed number, so
// that the result is the same for every thread count).
constexpr int64_t kSharedGradientChunks = 8;

template <typename T>
using Buffer = std::vector<T>;

// Elementwise loops over one map, written so that gcc vectorises them: restrict pointers and a
// ternary maximum (std::max returns a reference and defeats the vectoriser).
template <typename T>
T copy_max(T* __restrict out, const T* __restrict src, int64_t n) {
  T peak = T(0);
#pragma omp simd reduction(max : peak)
  for (int64_t x = 0; x < n; ++x) {
    out[x] = src[x];
    peak = src[x] > peak ? src[x] : peak;
  }
  return peak;
}

// out = out * scale * f, returning max(out).
template <typename T>
T multiply_max(T* __restrict out, const T* __restrict f, T scale, int64_t n) {
  T peak = T(0);
#pragma omp simd reduction(max : peak)
  for (int64_t x = 0; x < n; ++x) {
    const T v = out[x] * scale * f[x];
    out[x] = v;
    peak = v > peak ? v : peak;
  }
  return peak;
}

template <typename T>
void scale_in_place(T* __restrict out, T scale, int64_t n) {
#pragma omp simd
  for (int64_t x = 0; x < n; ++x) out[x] *= scale;
}

template <typename T>
T sum(const T* __restrict x, int64_t n) {
  T total = T(0);
#pragma omp simd reduction(+ : total)
  for (int64_t i = 0; i < n; ++i) total += x[i];
  return total;
}

// The multiplier that rescales a map of maximum `peak` to maximum 1: 1 / peak, or, where that overflows
// (peak below 1 / max(T): denormal float32 maps), 1 after dividing out[0, n) by peak itself.
template <typename T>
T rescaler(T* __restrict out, T peak, int64_t n) {
  const T inverse = T(1) / peak;
  if (std::isfinite(inverse)) return inverse;
  for (int64_t x = 0; x < n; ++x) out[x] /= peak;
  return T(1);
}

// out = first * prod(factors), rescaled to maximum 1 after every multiplication (so no partial
// product underflows); returns the log of the factor removed: first * prod(factors) = out * exp(return).
// An all-zero product stays zero and sets *is_zero. first == nullptr starts from factors[0]; no
// factors at all gives ones. Each multiplication also applies the previous rescaling: one pass each.
template <typename T>
double scaled_product(const T* first, const std::vector<const T*>& factors, T* out, int64_t n, bool* is_zero) {
  size_t next = 0;
  const T* start = first;
  if (start == nullptr) {
    if (factors.empty()) {
      std::fill(out, out + n, T(1));
      *is_zero = false;
      return 0.0;
    }
    start = factors[next++];
  }
  T peak = copy_max(out, start, n);
  double log_scale = 0.0;
  for (; next < factors.size() && peak > T(0); ++next) {
    log_scale += std::log(double(peak));
    peak = multiply_max(out, factors[next], rescaler(out, peak, n), n);
  }
  *is_zero = !(peak > T(0));
  if (*is_zero) {
    std::fill(out, out + n, T(0));
    return log_scale;
  }
  scale_in_place(out, rescaler(out, peak, n), n);
  return log_scale + std::log(double(peak));
}

// The pieces of one image's computation that depend only on the shapes.
struct Plan {
  int64_t H, W, kh, kw, ch, cw, HW, kernel_numel;
  Plan(int64_t H_, int64_t W_, int64_t kh_, int64_t kw_)
      : H(H_), W(W_), kh(kh_), kw(kw_), ch(kh_ / 2), cw(kw_ / 2), HW(H_ * W_), kernel_numel(kh_ * kw_) {}
};

// Per-thread scratch of one message computation. `image` holds the zero-padded belief h (the
// forward's input and the kernel adjoint's image), `grad_image` the padded message gradient.
template <typename T>
struct Scratch {
  Buffer<T> h, raw;
  direct::PaddedImage<T> image, grad_image;
  direct::PaddedFilter<T> filter;
  explicit Scratch(const Plan& plan) {
    h.resize(plan.HW), raw.resize(std::max(plan.HW, plan.kernel_numel));
    // Outputs are H x W (message, input adjoint) or kh x kw (kernel adjoint) with filters of the other size.
    const int64_t oh = std::max(plan.H, plan.kh), ow = std::max(plan.W, plan.kw);
    image.reshape(oh, ow, oh, ow);
    grad_image.reshape(oh, ow, oh, ow);
  }
};

// This OS thread's scratch for `plan` (thread_local, not indexed by at::get_thread_num(), which a
// nested at::parallel_for running inline resets to 0).
template <typename T>
Scratch<T>& thread_scratch(const Plan& plan) {
  thread_local std::unique_ptr<Scratch<T>> scratch;
  thread_local int64_t h = -1, w = -1, kh = -1, kw = -1;
  if (!scratch || h != plan.H || w != plan.W || kh != plan.kh || kw != plan.kw) {
    scratch = std::make_unique<Scratch<T>>(plan);
    h = plan.H, w = plan.W, kh = plan.kh, kw = plan.kw;
  }
  return *scratch;
}

// msgs of `incoming` except `skip` (-1: none), as pointers into one image's message block.
template <typename T>
std::vector<const T*> message_factors(const std::vector<int64_t>& incoming, int64_t skip, const T* msgs, int64_t HW) {
  std::vector<const T*> out;
  for (int64_t k : incoming)
    if (k != skip) out.push_back(msgs + k * HW);
  return out;
}

// raw[p] = sum_q kernel[p - q + c] h[q] / kernel_max for h in s.h (maximum 1): with h placed at (ch, cw)
// of a zero image, the correlation of the flipped kernel over it. The kernel is scaled to maximum 1 so
// that only terms below 1e-38 of the largest can be flushed as denormals (direct_correlation.h).
template <typename T>
void convolve(const Plan& plan, const T* kernel, T kernel_max, Scratch<T>& s) {
  s.image.place(s.h.data(), plan.H, plan.W, plan.ch, plan.cw);
  s.filter.place(kernel, plan.kh, plan.kw, /*flip=*/true, 1.0 / double(kernel_max));
  direct::correlate(s.filter, s.image, s.raw.data(), plan.H, plan.W, plan.W);
}

template <typename T>
T max_abs(const T* __restrict x, int64_t n) {
  T peak = T(0);
#pragma omp simd reduction(max : peak)
  for (int64_t i = 0; i < n; ++i) peak = std::abs(x[i]) > peak ? std::abs(x[i]) : peak;
  return peak;
}

// sum_i (scale x_i)^2: the norm of x in units where it neither underflows nor overflows (scale = 1 / max |x|,
// a double: it overflows float32 for a maximum below 2.9e-39).
template <typename T>
T squared_norm(const T* __restrict x, int64_t n, double scale = 1.0) {
  T total = T(0);
#pragma omp simd reduction(+ : total)
  for (int64_t i = 0; i < n; ++i) {
    const T v = T(scale * double(x[i]));
    total += v * v;
  }
  return total;
}

// msg = max(r, 0) / max(r) floored at kMessageFloor, and returns max(r); a zero message (peak at or
// below 256 eps |kernel|_2 |h|_2, the reference's zero_message_threshold) becomes all ones and returns 0.
template <typename T>
T normalise_message(const T* __restrict raw, T* __restrict msg, int64_t n, T kernel_sq_norm, T belief_sq_norm) {
  T peak = T(0);
#pragma omp simd reduction(max : peak)
  for (int64_t x = 0; x < n; ++x) peak = raw[x] > peak ? raw[x] : peak;
  const T bound = T(kZeroMessageEpsFactor) * std::numeric_limits<T>::epsilon() * std::sqrt(kernel_sq_norm) * std::sqrt(belief_sq_norm);
  if (!(peak > bound)) {
    std::fill(msg, msg + n, T(1));
    return T(0);
  }
  const T floor = T(kMessageFloor);
  // A division, not a multiplication by 1 / peak: the maximum must become exactly 1 (the backward
  // finds it again by that value).
#pragma omp simd
  for (int64_t x = 0; x < n; ++x) {
    const T v = raw[x] / peak;
    msg[x] = v > floor ? v : floor;
  }
  return peak;
}

// One model of one image: all messages, in schedule order, into msgs [M, HW] and scales [M].
template <typename T>
void forward_messages(const Plan& plan, const TreeSchedule& tree, const T* unary, const T* kernels, T* msgs, T* scales) {
  const int64_t HW = plan.HW;
  for (size_t level = 0; level + 1 < tree.level_begin.size(); ++level) {
    const int64_t begin = tree.level_begin[level], end = tree.level_begin[level + 1];
    at::parallel_for(begin, end, 1, [&](int64_t m0, int64_t m1) {
      Scratch<T>& s = thread_scratch<T>(plan);
      for (int64_t m = m0; m < m1; ++m) {
        const int64_t src = tree.src[m];
        bool zero = false;
        scaled_product(unary + src * HW, message_factors(tree.incoming[src], tree.reverse[m], msgs, HW), s.h.data(), HW, &zero);
        if (zero) {
          std::fill(msgs + m * HW, msgs + (m + 1) * HW, T(1));
          scales[m] = T(0);
          continue;
        }
        const T* kernel = kernels + m * plan.kernel_numel;
        const T kernel_max = max_abs(kernel, plan.kernel_numel);
        if (!(kernel_max > T(0))) {  // a zero kernel: a zero message, replaced by ones
          std::fill(msgs + m * HW, msgs + (m + 1) * HW, T(1));
          scales[m] = T(0);
          continue;
        }
        convolve(plan, kernel, kernel_max, s);
        // Everything in units of the scaled kernel; the scale returned is the raw convolution's peak.
        const T kernel_sq_norm = squared_norm(kernel, plan.kernel_numel, 1.0 / double(kernel_max));
        scales[m] = kernel_max * normalise_message(s.raw.data(), msgs + m * HW, HW, kernel_sq_norm, squared_norm(s.h.data(), HW));
      }
    });
  }
}

void check_inputs(const at::Tensor& unary, const at::Tensor& pairwise, const at::Tensor& weights, const TreeSchedule& tree) {
  TORCH_CHECK(unary.device().is_cpu() && pairwise.device().is_cpu() && weights.device().is_cpu(),
              "handops.tree_marginals (CPU kernel): unary, pairwise and weights must be CPU tensors");
  TORCH_CHECK(unary.dim() == 4, "unary must be [B, K, H, W], got ", unary.sizes());
  TORCH_CHECK(pairwise.dim() == 5, "pairwise must be [Bp, L, M, kh, kw], got ", pairwise.sizes());
  TORCH_CHECK(weights.dim() == 2, "weights must be [B, L], got ", weights.sizes());
  TORCH_CHECK(unary.scalar_type() == pairwise.scalar_type() && unary.scalar_type() == weights.scalar_type(),
              "unary, pairwise and weights must share one dtype, got ", unary.scalar_type(), ", ",
              pairwise.scalar_type(), ", ", weights.scalar_type());
  TORCH_CHECK(unary.scalar_type() == at::kFloat || unary.scalar_type() == at::kDouble,
              "the CPU kernel computes in float32 or float64, got ", unary.scalar_type());
  const int64_t B = unary.size(0);
  TORCH_CHECK(unary.size(1) == tree.num_nodes, "unary has ", unary.size(1), " maps but the tree has ", tree.num_nodes, " nodes");
  TORCH_CHECK(pairwise.size(0) == 1 || pairwise.size(0) == B, "pairwise batch must be 1 or B = ", B, ", got ", pairwise.size(0));
  TORCH_CHECK(pairwise.size(2) == tree.num_messages, "pairwise has ", pairwise.size(2), " kernels but the schedule has ",
              tree.num_messages, " messages");
  TORCH_CHECK(pairwise.size(3) % 2 == 1 && pairwise.size(4) % 2 == 1, "kernels must have odd sizes, got ",
              pairwise.size(3), "x", pairwise.size(4));
  TORCH_CHECK(weights.size(0) == B && weights.size(1) == pairwise.size(1), "weights must be [B, L] = [", B, ", ",
              pairwise.size(1), "], got ", weights.sizes());
  TORCH_CHECK(unary.size(2) > 0 && unary.size(3) > 0, "unary maps must be at least 1x1, got ", unary.sizes());
}

template <typename T>
void tree_marginals_kernel_impl(const at::Tensor& unary, const at::Tensor& pairwise, const at::Tensor& weights,
                                const TreeSchedule& tree, at::Tensor& marginals, at::Tensor& msgs, at::Tensor& scales) {
  const int64_t B = unary.size(0), K = unary.size(1), H = unary.size(2), W = unary.size(3);
  const int64_t Bp = pairwise.size(0), L = pairwise.size(1), M = pairwise.size(2);
  const Plan plan(H, W, pairwise.size(3), pairwise.size(4));
  const int64_t HW = plan.HW, model_numel = M * plan.kernel_numel;
  const T* u = unary.data_ptr<T>();
  const T* kernels = pairwise.data_ptr<T>();
  const T* w = weights.data_ptr<T>();
  T* out = marginals.data_ptr<T>();
  T* msg_out = msgs.data_ptr<T>();
  T* scale_out = scales.data_ptr<T>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    Buffer<T> belief(HW);
    for (int64_t b = b0; b < b1; ++b) {
      const T* ub = u + b * K * HW;
      T* ob = out + b * K * HW;
      std::fill(ob, ob + K * HW, T(0));
      for (int64_t l = 0; l < L; ++l) {
        T* mb = msg_out + (b * L + l) * M * HW;
        const T* kb = kernels + ((Bp == 1 ? 0 : b) * L + l) * model_numel;
        forward_messages(plan, tree, ub, kb, mb, scale_out + (b * L + l) * M);
        const T weight = w[b * L + l];
        for (int64_t node = 0; node < K; ++node) {
          bool zero = false;
          scaled_product(ub + node * HW, message_factors(tree.incoming[node], -1, (const T*)mb, HW), belief.data(), HW, &zero);
          const T total = sum(belief.data(), HW);
          T* __restrict dst = ob + node * HW;
          if (total > T(0)) {
            const T scale = weight / total;
#pragma omp simd
            for (int64_t x = 0; x < HW; ++x) dst[x] += scale * belief[x];
          } else {
            const T uniform = weight / T(HW);
            for (int64_t x = 0; x < HW; ++x) dst[x] += uniform;
          }
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_marginals_kernel(const at::Tensor& unary_in, const at::Tensor& pairwise_in,
                                                         const at::Tensor& weights_in, at::IntArrayRef messages,
                                                         at::IntArrayRef level_sizes) {
  const TreeSchedule tree = TreeSchedule::from_flat(messages, level_sizes, unary_in.dim() == 4 ? unary_in.size(1) : -1);
  check_inputs(unary_in, pairwise_in, weights_in, tree);
  const at::Tensor unary = unary_in.contiguous(), pairwise = pairwise_in.contiguous(), weights = weights_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES(unary.scalar_type(), "tree_marginals_check", [&] {
    check_non_negative_finite<scalar_t>(unary, "tree_marginals", "unary");
    check_non_negative_finite<scalar_t>(pairwise, "tree_marginals", "pairwise");
    check_non_negative_finite<scalar_t>(weights, "tree_marginals", "weights");
  });
  const int64_t B = unary.size(0), H = unary.size(2), W = unary.size(3);
  at::Tensor marginals = at::empty_like(unary);
  at::Tensor msgs = at::empty({B, pairwise.size(1), pairwise.size(2), H, W}, unary.options());
  at::Tensor scales = at::empty({B, pairwise.size(1), pairwise.size(2)}, unary.options());
  if (B == 0 || pairwise.size(1) == 0) {
    marginals.zero_();
    return {marginals, msgs, scales};
  }
  AT_DISPATCH_FLOATING_TYPES(unary.scalar_type(), "tree_marginals_cpu", [&] {
    tree_marginals_kernel_impl<scalar_t>(unary, pairwise, weights, tree, marginals, msgs, scales);
  });
  return {marginals, msgs, scales};
}

// ---------------------------------------------------------------------------------------------
// Backward. Every rescaling factor is a constant (the marginals are invariant to it), the floor is
// straight-through, the final belief / sum(belief) is differentiated. For a product node
// P = f_1 * ... * f_n / D the gradient of a factor is g_P * prod_{j != k} f_j / D; the partial
// products are rebuilt rescaled, with their scale carried in log space.
// ---------------------------------------------------------------------------------------------

// grads[k] += g_P * prod_{j != k} factors[j] * exp(-log_d) for k in [0, n). factors[0] may be the
// unary (unscaled); grads[k] == nullptr skips k.
template <typename T>
void product_backward(const std::vector<const T*>& factors, const std::vector<T*>& grads, const T* g_p, double log_d,
                      int64_t n, T* partial) {
  for (size_t k = 0; k < factors.size(); ++k) {
    if (grads[k] == nullptr) continue;
    std::vector<const T*> others;
    for (size_t j = 0; j < factors.size(); ++j)
      if (j != k) others.push_back(factors[j]);
    bool zero = false;
    const double log_e = scaled_product<T>(nullptr, others, partial, n, &zero);
    if (zero) continue;
    const double ratio_d = std::exp(log_e - log_d);
    const T ratio = T(std::min(ratio_d, double(std::numeric_limits<T>::max())));
    T* __restrict g = grads[k];
    const T* __restrict gp = g_p;
    const T* __restrict part = partial;
#pragma omp simd
    for (int64_t x = 0; x < n; ++x) {
      const T v = gp[x] * part[x];
      g[x] += v == T(0) ? T(0) : v * ratio;  // no 0 * inf
    }
  }
}

template <typename T>
void tree_marginals_backward_kernel_impl(const at::Tensor& grad, const at::Tensor& unary, const at::Tensor& pairwise,
                                         const at::Tensor& weights, const at::Tensor& msgs, const at::Tensor& scales,
                                         const TreeSchedule& tree,
                                         at::Tensor& g_unary, at::Tensor& g_pairwise, at::Tensor& g_weights) {
  const int64_t B = unary.size(0), K = unary.size(1), H = unary.size(2), W = unary.size(3);
  const int64_t Bp = pairwise.size(0), L = pairwise.size(1), M = pairwise.size(2);
  const Plan plan(H, W, pairwise.size(3), pairwise.size(4));
  const int64_t HW = plan.HW, kn = plan.kernel_numel, model_numel = M * kn;
  const T* u = unary.data_ptr<T>();
  const T* kernels = pairwise.data_ptr<T>();
  const T* w = weights.data_ptr<T>();
  const T* gout = grad.data_ptr<T>();
  const T* msg_all = msgs.data_ptr<T>();
  const T* scale_all = scales.data_ptr<T>();
  T* gu = g_unary.data_ptr<T>();
  T* gw = g_weights.data_ptr<T>();
  // Shared kernels collect gradients from every image: images are split into a fixed number of chunks
  // of consecutive images, each summed in image order into its own accumulator, and the chunks are
  // summed in order at the end, so the result does not depend on the thread count. Per-image kernels
  // need no accumulator: every image is its own chunk.
  const int64_t chunks = Bp == 1 ? std::min<int64_t>(B, kSharedGradientChunks) : B;
  Buffer<T> shared_grad(Bp == 1 ? chunks * L * model_numel : 0, T(0));
  T* gk_all = g_pairwise.data_ptr<T>();
  g_unary.zero_();
  g_pairwise.zero_();

  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    Buffer<T> belief(HW), g_belief(HW), partial(HW), g_msgs(M * HW), g_h(M * HW), hs(M * HW);
    std::vector<double> log_c(M);
    std::vector<char> h_zero(M);
    for (int64_t slot = c0; slot < c1; ++slot)
    for (int64_t b = slot * B / chunks; b < (slot + 1) * B / chunks; ++b) {
      const T* ub = u + b * K * HW;
      const T* gb = gout + b * K * HW;
      T* gub = gu + b * K * HW;
      for (int64_t l = 0; l < L; ++l) {
        const T* mb = msg_all + (b * L + l) * M * HW;
        const T* kb = kernels + ((Bp == 1 ? 0 : b) * L + l) * model_numel;
        T* gkb = Bp == 1 ? shared_grad.data() + (slot * L + l) * model_numel : gk_all + (b * L + l) * model_numel;
        const T weight = w[b * L + l];
        std::fill(g_msgs.begin(), g_msgs.end(), T(0));
        T g_weight = T(0);

        // Beliefs: marginal = belief / sum(belief), belief = unary * prod(all incoming) / D.
        for (int64_t node = 0; node < K; ++node) {
          std::vector<const T*> factors = {ub + node * HW};
          std::vector<T*> grads = {gub + node * HW};
          for (int64_t k : tree.incoming[node]) {
            factors.push_back(mb + k * HW);
            grads.push_back(g_msgs.data() + k * HW);
          }
          bool zero = false;
          const double log_d = scaled_product<T>(nullptr, factors, belief.data(), HW, &zero);
          const T total = sum(belief.data(), HW);
          const T* __restrict g = gb + node * HW;
          if (!(total > T(0))) {  // uniform marginal: constant, only the weight sees a gradient
            T sum_g = T(0);
            for (int64_t x = 0; x < HW; ++x) sum_g += g[x];
            g_weight += sum_g / T(HW);
            continue;
          }
          T dot = T(0);
#pragma omp simd reduction(+ : dot)
          for (int64_t x = 0; x < HW; ++x) dot += g[x] * belief[x];
          dot /= total;  // <grad, marginal>
          g_weight += dot;
          const T scale = weight / total;
#pragma omp simd
          for (int64_t x = 0; x < HW; ++x) g_belief[x] = scale * (g[x] - dot);
          product_backward(factors, grads, g_belief.data(), log_d, HW, partial.data());
        }
        gw[b * L + l] = g_weight;

        // Messages in reverse schedule order; the convolution adjoints of a level run in parallel.
        for (size_t level = tree.level_begin.size() - 1; level-- > 0;) {
          const int64_t begin = tree.level_begin[level], end = tree.level_begin[level + 1];
          at::parallel_for(begin, end, 1, [&](int64_t m0, int64_t m1) {
            Scratch<T>& s = thread_scratch<T>(plan);
            for (int64_t m = m0; m < m1; ++m) {
              T* ghm = g_h.data() + m * HW;
              T* h = hs.data() + m * HW;
              std::fill(ghm, ghm + HW, T(0));
              const int64_t src = tree.src[m];
              bool zero = false;
              log_c[m] = scaled_product(ub + src * HW, message_factors(tree.incoming[src], tree.reverse[m], mb, HW), h, HW, &zero);
              h_zero[m] = zero;
              const T peak = scale_all[(b * L + l) * M + m];
              if (zero || !(peak > T(0))) continue;  // the message was replaced by ones: a constant
              const T* kernel = kb + m * kn;
              // g_r = g_msg / peak (the scale is a constant). Input adjoint: g_h[q] = sum_p kernel[p - q + c] g_r[p],
              // the correlation of the kernel over g_r placed at (ch, cw). Kernel adjoint: g_kernel[a] =
              // sum_p g_r[p] h[p - a + c], the correlation of g_r over the padded h, read flipped.
              // Both operands of each correlation are scaled to maximum magnitude 1 (denormals, see
              // convolve) and the results scaled back.
              const T* gmsg = g_msgs.data() + m * HW;
              const T g_max = max_abs(gmsg, HW), kernel_max = max_abs(kernel, kn);
              if (!(g_max > T(0))) continue;  // no gradient reaches this message
              s.grad_image.place(gmsg, H, W, plan.ch, plan.cw, 1.0 / double(g_max));
              s.filter.place(kernel, plan.kh, plan.kw, /*flip=*/false, 1.0 / double(kernel_max));
              direct::correlate(s.filter, s.grad_image, ghm, H, W, W);
              const T h_scale = g_max * (kernel_max / peak);  // kernel_max / peak: 1 / the scaled peak
              for (int64_t x = 0; x < HW; ++x) ghm[x] *= h_scale;
              s.image.place(h, H, W, plan.ch, plan.cw);
              s.filter.place(gmsg, H, W, /*flip=*/false, 1.0 / double(g_max));
              direct::correlate(s.filter, s.image, s.raw.data(), plan.kh, plan.kw, plan.kw);
              const T kernel_scale = g_max / peak;
              T* gk = gkb + m * kn;
              for (int64_t x = 0; x < kn; ++x) gk[x] += kernel_scale * s.raw[kn - 1 - x];
            }
          });
          // h_m = unary * prod(incoming but the reverse) / c_m: push g_h into its factors, serially
          // because messages of one level can share a source node.
          for (int64_t m = begin; m < end; ++m) {
            const int64_t src = tree.src[m];
            std::vector<const T*> factors = {ub + src * HW};
            std::vector<T*> grads = {gub + src * HW};
            for (int64_t k : tree.incoming[src]) {
              if (k == tree.reverse[m]) continue;
              factors.push_back(mb + k * HW);
              grads.push_back(g_msgs.data() + k * HW);
            }
            if (h_zero[m]) continue;
            product_backward(factors, grads, g_h.data() + m * HW, log_c[m], HW, partial.data());
          }
        }
      }
    }
  });
  if (Bp == 1) {
    T* gk = gk_all;
    for (int64_t slot = 0; slot < chunks; ++slot)
      for (int64_t x = 0; x < L * model_numel; ++x) gk[x] += shared_grad[slot * L * model_numel + x];
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_marginals_backward_kernel(
    const at::Tensor& grad_in, const at::Tensor& unary_in, const at::Tensor& pairwise_in, const at::Tensor& weights_in,
    const at::Tensor& msgs_in, const at::Tensor& scales_in, at::IntArrayRef messages, at::IntArrayRef level_sizes) {
  const TreeSchedule tree = TreeSchedule::from_flat(messages, level_sizes, unary_in.dim() == 4 ? unary_in.size(1) : -1);
  TORCH_CHECK(grad_in.sizes() == unary_in.sizes(), "grad must match the marginals' shape ", unary_in.sizes(), ", got ", grad_in.sizes());
  const at::Tensor grad = grad_in.to(unary_in.scalar_type()).contiguous(), unary = unary_in.contiguous();
  const at::Tensor pairwise = pairwise_in.contiguous(), weights = weights_in.contiguous(), msgs = msgs_in.contiguous();
  const at::Tensor scales = scales_in.contiguous();
  TORCH_CHECK(msgs.sizes() == at::IntArrayRef({unary.size(0), pairwise.size(1), pairwise.size(2), unary.size(2), unary.size(3)}) &&
                  scales.sizes() == at::IntArrayRef({unary.size(0), pairwise.size(1), pairwise.size(2)}) &&
                  msgs.scalar_type() == unary.scalar_type() && scales.scalar_type() == unary.scalar_type(),
              "messages and scales must be those the forward returned for these inputs");
  at::Tensor g_unary = at::zeros_like(unary), g_pairwise = at::zeros_like(pairwise), g_weights = at::zeros_like(weights);
  if (unary.size(0) == 0 || pairwise.size(1) == 0) return {g_unary, g_pairwise, g_weights};
  AT_DISPATCH_FLOATING_TYPES(unary.scalar_type(), "tree_marginals_backward_cpu", [&] {
    tree_marginals_backward_kernel_impl<scalar_t>(grad, unary, pairwise, weights, msgs, scales, tree, g_unary, g_pairwise,
                                                  g_weights);
  });
  return {g_unary, g_pairwise, g_weights};
}

}  // namespace

TORCH_LIBRARY_IMPL(handops, CPU, m) {
  m.impl("tree_marginals", &tree_marginals_kernel);
  m.impl("tree_marginals_backward", &tree_marginals_backward_kernel);
}

}  // namespace handops
