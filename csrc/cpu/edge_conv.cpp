// CPU kernels of handops::edge_conv and handops::edge_conv_backward (SIA-GCN, thesis Eq. 5.2).
//
// edge_conv(x, weight, bias, edges) -> y
//   Args:
//     x:      [B, K, H, W] float/double node maps.
//     weight: [Hd, E, kh, kw], odd kh and kw: one kernel per edge and head.
//     bias:   [Hd, E] or None.
//     edges:  flat (src, dst) pairs, E of them, nodes in [0, K).
//   Returns:
//     y [B, Hd, K, H, W], y[b, h, t] = sum_{e = (s, t)} a_e (conv(weight[h, e], x[b, s]) + bias[h, e]),
//     a_e = 1 / in_degree(t), conv(k, x)[p] = sum_q k[p - q + c] x[q].
//
// edge_conv_backward(grad [B, Hd, K, H, W], x, weight, edges) -> (grad_x, grad_weight, grad_bias [Hd, E]).
//
// Linearity does the fusing: each node map is transformed once (shared by every edge out of it and
// every head), each target's contributions are summed in the frequency domain and transformed back
// once; no [B, E, H, W] gathered tensor exists. The backward sums the kernel gradients of all images
// in the frequency domain and transforms each kernel gradient once.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cpu/lane_fft.h"

namespace handops {
namespace {

// Images are summed into this many partial kernel gradients at most (a fixed number, so that the
// result is the same for every thread count; more chunks only allow more threads to share the work).
constexpr int64_t kGradientChunks = 8;

struct EdgeList {
  int64_t num_nodes = 0, num_edges = 0;
  std::vector<int64_t> src, dst;
  std::vector<double> scale;                   // a_e = 1 / in_degree(dst_e)
  std::vector<std::vector<int64_t>> into, out_of;  // edges into / out of each node

  EdgeList(at::IntArrayRef flat, int64_t K) : num_nodes(K), num_edges(int64_t(flat.size()) / 2) {
    TORCH_CHECK_VALUE(flat.size() % 2 == 0, "edges must be flat (src, dst) pairs, got ", flat.size(), " integers");
    into.resize(K), out_of.resize(K);
    for (int64_t e = 0; e < num_edges; ++e) {
      const int64_t s = flat[2 * e], t = flat[2 * e + 1];
      TORCH_CHECK_VALUE(s >= 0 && s < K && t >= 0 && t < K, "edge ", e, " (", s, ", ", t, ") names a node outside [0, ", K, ")");
      src.push_back(s), dst.push_back(t);
      into[t].push_back(e), out_of[s].push_back(e);
    }
    for (int64_t e = 0; e < num_edges; ++e) scale.push_back(1.0 / double(into[dst[e]].size()));
  }
};

template <typename T>
struct Spectra {  // count spectra of one size, [count][re | im][spec]
  int64_t spec;
  std::vector<T> data;
  Spectra(int64_t count, int64_t spec_) : spec(spec_), data(count * 2 * spec_, T(0)) {}
  T* re(int64_t i) { return data.data() + 2 * i * spec; }
  T* im(int64_t i) { return data.data() + (2 * i + 1) * spec; }
  const T* re(int64_t i) const { return data.data() + 2 * i * spec; }
  const T* im(int64_t i) const { return data.data() + (2 * i + 1) * spec; }
};

// This OS thread's FFT workspace (thread_local: at::get_thread_num() is 0 in an inline nested loop).
template <typename T>
std::vector<T>& thread_workspace(int64_t numel) {
  thread_local std::vector<T> work;
  if (int64_t(work.size()) < numel) work.resize(numel);
  return work;
}

template <typename T>
Spectra<T> kernel_spectra(const fft::RealFFT2D<T>& fft, const T* weight, int64_t count, int64_t kh, int64_t kw) {
  Spectra<T> out(count, fft.spectrum_numel());
  at::parallel_for(0, count, 1, [&](int64_t i0, int64_t i1) {
    std::vector<T>& work = thread_workspace<T>(fft.workspace_numel());
    for (int64_t i = i0; i < i1; ++i) fft.forward(weight + i * kh * kw, kh, kw, kw, 0, 0, out.re(i), out.im(i), work.data());
  });
  return out;
}

void check_inputs(const at::Tensor& x, const at::Tensor& weight, const EdgeList& graph) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "edge_conv (CPU kernel): x and weight must be CPU tensors");
  TORCH_CHECK_VALUE(x.dim() == 4, "x must be [B, K, H, W], got ", x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4, "weight must be [Hd, E, kh, kw], got ", weight.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == weight.scalar_type() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
                   "x and weight must both be float32 or both float64, got ", x.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK_VALUE(weight.size(1) == graph.num_edges, "weight has ", weight.size(1), " edge kernels but there are ",
                    graph.num_edges, " edges");
  TORCH_CHECK_VALUE(weight.size(2) % 2 == 1 && weight.size(3) % 2 == 1, "edge kernels must have odd sizes, got ",
                    weight.size(2), "x", weight.size(3));
  TORCH_CHECK_VALUE(x.size(2) > 0 && x.size(3) > 0, "x maps must be at least 1x1, got ", x.sizes());
}

// What forward and backward share: the sizes, the FFT and the spectra of every head's edge kernels.
template <typename T>
struct EdgeConvPlan {
  int64_t B, K, H, W, HW, Hd, E, kh, kw, spec;
  fft::RealFFT2D<T> fft;
  T inv_n2;
  Spectra<T> w_hat;
  EdgeConvPlan(const at::Tensor& x, const at::Tensor& weight)
      : B(x.size(0)), K(x.size(1)), H(x.size(2)), W(x.size(3)), HW(H * W), Hd(weight.size(0)), E(weight.size(1)),
        kh(weight.size(2)), kw(weight.size(3)), spec(0), fft(fft::convolution_size(H, W, kh, kw)),
        inv_n2(T(1) / T(fft.size() * fft.size())), w_hat(0, 0) {
    spec = fft.spectrum_numel();
    w_hat = kernel_spectra(fft, weight.data_ptr<T>(), Hd * E, kh, kw);
  }
};

template <typename T>
void edge_conv_kernel_impl(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                           const EdgeList& graph, at::Tensor& y) {
  const EdgeConvPlan<T> plan(x, weight);
  const int64_t B = plan.B, K = plan.K, H = plan.H, W = plan.W, HW = plan.HW, Hd = plan.Hd, E = plan.E, kh = plan.kh,
                kw = plan.kw, spec = plan.spec;
  const fft::RealFFT2D<T>& fft = plan.fft;
  const T inv_n2 = plan.inv_n2;
  const Spectra<T>& w_hat = plan.w_hat;
  // Constant per (head, target): sum over edges into t of a_e * bias[h, e].
  std::vector<T> offset(Hd * K, T(0));
  if (bias.has_value()) {
    const T* bp = bias->data_ptr<T>();
    for (int64_t h = 0; h < Hd; ++h)
      for (int64_t e = 0; e < E; ++e) offset[h * K + graph.dst[e]] += T(graph.scale[e]) * bp[h * E + e];
  }
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      Spectra<T> x_hat(K, spec);
      at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
        std::vector<T>& work = thread_workspace<T>(fft.workspace_numel());
        for (int64_t k = k0; k < k1; ++k) fft.forward(xp + (b * K + k) * HW, H, W, W, 0, 0, x_hat.re(k), x_hat.im(k), work.data());
      });
      at::parallel_for(0, Hd * K, 1, [&](int64_t i0, int64_t i1) {
        std::vector<T>& work = thread_workspace<T>(fft.workspace_numel() + 2 * spec);
        T* acc_re = work.data() + fft.workspace_numel();
        T* acc_im = acc_re + spec;
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t h = i / K, t = i % K;
          T* out = yp + ((b * Hd + h) * K + t) * HW;
          if (graph.into[t].empty()) {
            std::fill(out, out + HW, T(0));
            continue;
          }
          std::fill(acc_re, acc_re + 2 * spec, T(0));
          for (int64_t e : graph.into[t])
            fft::multiply_accumulate<false>(acc_re, acc_im, w_hat.re(h * E + e), w_hat.im(h * E + e), x_hat.re(graph.src[e]),
                                            x_hat.im(graph.src[e]), T(graph.scale[e]), spec);
          fft.inverse(acc_re, acc_im, H, W, kh / 2, kw / 2, inv_n2, out, W, work.data());
          const T c = offset[h * K + t];
          if (c != T(0))
            for (int64_t p = 0; p < HW; ++p) out[p] += c;
        }
      });
    }
  });
}

at::Tensor edge_conv_kernel(const at::Tensor& x_in, const at::Tensor& weight_in, const c10::optional<at::Tensor>& bias_in,
                            at::IntArrayRef edges) {
  TORCH_CHECK_VALUE(x_in.dim() == 4, "x must be [B, K, H, W], got ", x_in.sizes());
  const EdgeList graph(edges, x_in.size(1));
  check_inputs(x_in, weight_in, graph);
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  c10::optional<at::Tensor> bias;
  if (bias_in.has_value()) {
    TORCH_CHECK_VALUE(bias_in->sizes() == weight.sizes().slice(0, 2), "bias must be [Hd, E] = ", weight.sizes().slice(0, 2),
                      ", got ", bias_in->sizes());
    bias = bias_in->to(x.scalar_type()).contiguous();
  }
  at::Tensor y = at::zeros({x.size(0), weight.size(0), x.size(1), x.size(2), x.size(3)}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "edge_conv_cpu", [&] { edge_conv_kernel_impl<scalar_t>(x, weight, bias, graph, y); });
  return y;
}

template <typename T>
void edge_conv_backward_kernel_impl(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                    const EdgeList& graph, at::Tensor& g_x, at::Tensor& g_weight) {
  const EdgeConvPlan<T> plan(x, weight);
  const int64_t B = plan.B, K = plan.K, H = plan.H, W = plan.W, HW = plan.HW, Hd = plan.Hd, E = plan.E, kh = plan.kh,
                kw = plan.kw, spec = plan.spec;
  const fft::RealFFT2D<T>& fft = plan.fft;
  const T inv_n2 = plan.inv_n2;
  const Spectra<T>& w_hat = plan.w_hat;
  const T* xp = x.data_ptr<T>();
  const T* gp = grad.data_ptr<T>();
  T* gxp = g_x.data_ptr<T>();
  // Kernel-gradient spectra summed over images in a fixed number of chunks of consecutive images,
  // each chunk in image order and the chunks in chunk order: the sum (its rounding) does not depend
  // on the thread count.
  const int64_t chunks = std::min<int64_t>(B, kGradientChunks);
  std::vector<Spectra<T>> gw_hat(std::max<int64_t>(chunks, 1), Spectra<T>(0, spec));
  for (auto& s : gw_hat) s = Spectra<T>(Hd * E, spec);

  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
    Spectra<T>& acc = gw_hat[c];
    for (int64_t b = c * B / chunks; b < (c + 1) * B / chunks; ++b) {
      Spectra<T> x_hat(K, spec), g_hat(Hd * K, spec);
      at::parallel_for(0, K + Hd * K, 1, [&](int64_t i0, int64_t i1) {
        std::vector<T>& work = thread_workspace<T>(fft.workspace_numel());
        for (int64_t i = i0; i < i1; ++i) {
          if (i < K) {
            fft.forward(xp + (b * K + i) * HW, H, W, W, 0, 0, x_hat.re(i), x_hat.im(i), work.data());
          } else {  // gradient of (head, target) placed at the kernel centre: the adjoints start at the origin
            const int64_t j = i - K;
            fft.forward(gp + (b * Hd * K + j) * HW, H, W, W, kh / 2, kw / 2, g_hat.re(j), g_hat.im(j), work.data());
          }
        }
      });
      // grad_weight[h, e] += a_e * corr(grad[h, dst], x[src]): distinct heads write distinct slots.
      at::parallel_for(0, Hd, 1, [&](int64_t h0, int64_t h1) {
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t e = 0; e < E; ++e) {
            const int64_t j = h * K + graph.dst[e];
            fft::multiply_accumulate<true>(acc.re(h * E + e), acc.im(h * E + e), g_hat.re(j), g_hat.im(j),
                                           x_hat.re(graph.src[e]), x_hat.im(graph.src[e]), T(graph.scale[e]), spec);
          }
      });
      // grad_x[s] = sum over heads and edges out of s of a_e * corr(grad[h, dst], weight[h, e]).
      at::parallel_for(0, K, 1, [&](int64_t s0, int64_t s1) {
        std::vector<T>& work = thread_workspace<T>(fft.workspace_numel() + 2 * spec);
        T* sum_re = work.data() + fft.workspace_numel();
        T* sum_im = sum_re + spec;
        for (int64_t s = s0; s < s1; ++s) {
          T* out = gxp + (b * K + s) * HW;
          if (graph.out_of[s].empty()) continue;  // g_x is zero-initialised
          std::fill(sum_re, sum_re + 2 * spec, T(0));
          for (int64_t h = 0; h < Hd; ++h)
            for (int64_t e : graph.out_of[s])
              fft::multiply_accumulate<true>(sum_re, sum_im, g_hat.re(h * K + graph.dst[e]), g_hat.im(h * K + graph.dst[e]),
                                             w_hat.re(h * E + e), w_hat.im(h * E + e), T(graph.scale[e]), spec);
          fft.inverse(sum_re, sum_im, H, W, 0, 0, inv_n2, out, W, work.data());
        }
      });
    }
    }
  });
  for (int64_t c = 1; c < chunks; ++c)
    for (size_t v = 0; v < gw_hat[0].data.size(); ++v) gw_hat[0].data[v] += gw_hat[c].data[v];
  T* gwp = g_weight.data_ptr<T>();
  at::parallel_for(0, Hd * E, 1, [&](int64_t i0, int64_t i1) {
    std::vector<T>& work = thread_workspace<T>(fft.workspace_numel());
    for (int64_t i = i0; i < i1; ++i)
      fft.inverse(gw_hat[0].re(i), gw_hat[0].im(i), kh, kw, 0, 0, inv_n2, gwp + i * kh * kw, kw, work.data());
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> edge_conv_backward_kernel(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                                         const at::Tensor& weight_in, at::IntArrayRef edges) {
  TORCH_CHECK_VALUE(x_in.dim() == 4, "x must be [B, K, H, W], got ", x_in.sizes());
  const EdgeList graph(edges, x_in.size(1));
  check_inputs(x_in, weight_in, graph);
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  TORCH_CHECK_VALUE(grad_in.sizes() == at::IntArrayRef({x.size(0), weight.size(0), x.size(1), x.size(2), x.size(3)}),
                    "grad must be [B, Hd, K, H, W], got ", grad_in.sizes());
  const at::Tensor grad = grad_in.to(x.scalar_type()).contiguous();
  at::Tensor g_x = at::zeros_like(x), g_weight = at::zeros_like(weight);
  // grad_bias[h, e] = a_e * sum over images and pixels of grad[:, h, dst_e].
  at::Tensor per_target = grad.sum({0, 3, 4});  // [Hd, K]
  std::vector<int64_t> dst(graph.dst.begin(), graph.dst.end());
  at::Tensor scale = at::tensor(std::vector<double>(graph.scale.begin(), graph.scale.end()), x.options());
  at::Tensor g_bias = per_target.index_select(1, at::tensor(dst, x.options().dtype(at::kLong))) * scale;
  if (x.numel() == 0 || weight.numel() == 0) return {g_x, g_weight, g_bias};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "edge_conv_backward_cpu", [&] {
    edge_conv_backward_kernel_impl<scalar_t>(grad, x, weight, graph, g_x, g_weight);
  });
  return {g_x, g_weight, g_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(handops, CPU, m) {
  m.impl("edge_conv", &edge_conv_kernel);
  m.impl("edge_conv_backward", &edge_conv_backward_kernel);
}

}  // namespace handops
