// handops::tree_map on the CPU: max-product belief propagation on a tree of 2-D heatmaps, in the log
// domain, with a joint MAP decoding by backtracking. The specification is `tree_map_reference` in
// handops/_reference/tree_marginals.py; this kernel reproduces it exactly (same floating-point
// operations in the same order, same tie-breaking), so the decoded configuration is identical.
//
// tree_map(unary, pairwise, messages, level_sizes) -> (max_marginals, config)
//
// Args:
//   unary: [B, K, H, W] float or double, finite and non-negative: one heatmap per keypoint.
//   pairwise: [Bp, M, kh, kw] with the dtype and device of unary, Bp in {1, B} (one set of kernels
//     shared by every image, or one per image), M = 2 * (K - 1), kh and kw odd; finite and
//     non-negative. Channel m is the kernel of message m: mass at offset d from the kernel's centre
//     says "the destination lies at the source + d".
//   messages: the flat schedule [src0, dst0, src1, dst1, ...] of the M directed messages, as
//     handops.Tree.flat_messages() gives it: the first M / 2 go child -> parent, the rest
//     parent -> child.
//   level_sizes: messages per level; the messages of a level only read messages of earlier levels.
//
// Returns:
//   max_marginals: [B, K, H, W] with the dtype of unary: for each node and position p, the
//     probability of the best configuration that puts the node at p, divided by the best overall
//     (each map has maximum 1; all ones for a node whose belief is identically zero).
//   config: [B, K, 2] int64 (row, col): one jointly most probable configuration.
//
// Message m = (i -> j), with c = (kh / 2, kw / 2):
//   log_h(x)  = log unary_i(x) + sum of the log messages into i except the one from j
//   out(p)    = max over taps (a, t) of log flip(kernel_m)[a, t] + log_h(p + (a - c_h, t - c_w)),
//               positions outside the map contributing -inf
//   message_m = out - max(out), or all zeros where max(out) is -inf.
// The first maximum in tap order a * kw + t wins. For an upward message (child -> parent) the
// winning source position is stored per destination position for the backtracking.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/tree_schedule.h"

namespace handops {
namespace {

// Vectors of kVectorBytes (GCC/Clang vector extensions): one AVX2 register, two SSE registers in a
// portable build. The tap index has the lane width of the value, so that the mask of a comparison
// selects taps lane for lane. (64 bytes would suit AVX-512 machines; it is untested, as the build
// machine has AVX2 only.)
constexpr size_t kVectorBytes = 32;
template <typename scalar_t>
struct Simd;
template <>
struct Simd<float> {
  typedef float Value __attribute__((vector_size(kVectorBytes)));
  typedef int32_t Tap __attribute__((vector_size(kVectorBytes)));
};
template <>
struct Simd<double> {
  typedef double Value __attribute__((vector_size(kVectorBytes)));
  typedef int64_t Tap __attribute__((vector_size(kVectorBytes)));
};
template <typename scalar_t>
constexpr int64_t kLanes = kVectorBytes / sizeof(scalar_t);

// One value in every lane, as a braced list (which compiles to a single broadcast; `Vector{} + x`
// would add a zero first, since -0 + 0 is not -0).
template <typename Vector, typename Scalar, size_t... Lane>
inline Vector broadcast_lanes(Scalar x, std::index_sequence<Lane...>) {
  return Vector{((void)Lane, x)...};
}
template <typename Scalar>
struct VectorOf;
template <>
struct VectorOf<float> { using type = Simd<float>::Value; };
template <>
struct VectorOf<double> { using type = Simd<double>::Value; };
template <>
struct VectorOf<int32_t> { using type = Simd<float>::Tap; };
template <>
struct VectorOf<int64_t> { using type = Simd<double>::Tap; };
template <typename Scalar>
inline typename VectorOf<Scalar>::type broadcast(Scalar x) {
  return broadcast_lanes<typename VectorOf<Scalar>::type>(x, std::make_index_sequence<kVectorBytes / sizeof(Scalar)>());
}

// Output rows per block of the max-convolution: one vector of columns per row, whose running maxima
// (and, for upward messages, per-tap-row maxima and winning tap rows) stay in registers across all
// taps. Several rows give the max chains independent work to hide their latency; 4 rows (at most 12
// vectors) leave some of AVX2's 16 registers for the rest. Wider blocks measured no faster.
constexpr int64_t kBlockRows = 4;

int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// Running maximum that keeps the earlier value on ties: `candidate > current ? candidate : current`
// is exactly one x86 max instruction (which returns its second operand on ties), branch-free.
template <typename Vector>
inline Vector keep_first_max(Vector current, Vector candidate) {
  return candidate > current ? candidate : current;
}

// The largest of data[0 .. size), -inf for none; data holds no NaN. A vector at a time: a plain
// std::max reduction does not vectorise, as the compiler must assume NaNs.
template <typename scalar_t>
scalar_t max_of(const scalar_t* data, int64_t size) {
  using Value = typename Simd<scalar_t>::Value;
  constexpr int64_t lanes = kLanes<scalar_t>;
  const scalar_t minus_inf = -std::numeric_limits<scalar_t>::infinity();
  Value running = broadcast(minus_inf);
  int64_t i = 0;
  for (; i + lanes <= size; i += lanes) {
    Value x;
    std::memcpy(&x, data + i, sizeof(Value));
    running = keep_first_max(running, x);
  }
  scalar_t result = minus_inf;
  for (int64_t l = 0; l < lanes; ++l) {
    result = std::max(result, running[l]);
  }
  for (; i < size; ++i) {
    result = std::max(result, data[i]);
  }
  return result;
}

// The first t < kw with kernel_row[t] + source[t] == value (kw if none), a vector of t at a time:
// a min-reduction of selects instead of an early exit. Reads up to kLanes - 1 entries past kw in
// both rows (the buffers are padded for it); those lanes are masked off.
template <typename scalar_t>
inline int64_t first_column_reaching(const scalar_t* source, const scalar_t* kernel_row, int64_t kw, scalar_t value) {
  using Value = typename Simd<scalar_t>::Value;
  using Tap = typename Simd<scalar_t>::Tap;
  using tap_t = std::conditional_t<sizeof(scalar_t) == 8, int64_t, int32_t>;
  constexpr int64_t lanes = kLanes<scalar_t>;
  const Value target = broadcast(value);
  const Tap end = broadcast(static_cast<tap_t>(kw));
  Tap column;
  for (int64_t l = 0; l < lanes; ++l) {
    column[l] = static_cast<tap_t>(l);
  }
  Tap first = end;
  for (int64_t t0 = 0; t0 < kw; t0 += lanes) {
    Value k, x;
    std::memcpy(&k, kernel_row + t0, sizeof(Value));
    std::memcpy(&x, source + t0, sizeof(Value));
    const auto hit = (k + x == target) & (column < end);
    first = hit & (column < first) ? column : first;
    column += static_cast<tap_t>(lanes);
  }
  tap_t result = first[0];
  for (int64_t l = 1; l < lanes; ++l) {
    result = std::min(result, first[l]);
  }
  return result;
}

// The max-convolution of one message: best[p] = max over taps of log_kernel_flipped[tap] +
// padded_log_h[p + tap offset], and (when kTrackTap) the first tap, in order a * kw + t, reaching it.
//
// padded_log_h: [round_up(H, kBlockRows) + kh - 1, padded_width] with padded_width =
//   round_up(W, kLanes) + kw - 1 and -inf outside the map: padded (r + a, c + t) holds the source
//   of output (r, c) under tap (a, t), so the inner loops need no bounds checks.
// log_kernel_flipped: [kh * kw], tap a * kw + t.
// best: [H, W]; best_source: [H, W] (written only when kTrackTap): the flat source position
//   (row-major in the H x W map) of the first tap reaching best, or -1 where best is -inf.
//
// Tracking the tap in the innermost loop would cost a compare and two selects per tap instead of one
// max, so the inner loop only takes maxima: per tap row, then across tap rows, remembering the first
// row that improved on the earlier ones (a strict >). The first column reaching the maximum within
// that row is then found by recomputing the row's sums, bit-identical, for each output.
template <typename scalar_t, bool kTrackTap>
void max_convolve(const scalar_t* padded_log_h, int64_t padded_width, const scalar_t* log_kernel_flipped,
                  int64_t kh, int64_t kw, int64_t height, int64_t width, scalar_t* best, int64_t* best_source) {
  using Value = typename Simd<scalar_t>::Value;
  using Tap = typename Simd<scalar_t>::Tap;
  using tap_t = std::conditional_t<sizeof(scalar_t) == 8, int64_t, int32_t>;
  constexpr int64_t lanes = kLanes<scalar_t>;
  const scalar_t minus_inf = -std::numeric_limits<scalar_t>::infinity();
  const int64_t ch = kh / 2, cw = kw / 2;
  for (int64_t row0 = 0; row0 < height; row0 += kBlockRows) {
    // Tap rows that reach the map from at least one row of the block; the others only see -inf.
    const int64_t tap_row_begin = std::max<int64_t>(0, ch - (row0 + kBlockRows - 1));
    const int64_t tap_row_end = std::min<int64_t>(kh, height + ch - row0);
    for (int64_t col0 = 0; col0 < width; col0 += lanes) {
      Value block_best[kBlockRows];
      Tap block_tap_row[kBlockRows];
      for (int64_t i = 0; i < kBlockRows; ++i) {
        block_best[i] = broadcast(minus_inf);
        block_tap_row[i] = broadcast(tap_t(0));
      }
      for (int64_t a = tap_row_begin; a < tap_row_end; ++a) {
        const scalar_t* kernel_row = log_kernel_flipped + a * kw;
        const scalar_t* source_row = padded_log_h + (row0 + a) * padded_width + col0;
        Value row_best[kBlockRows];
        for (int64_t i = 0; i < kBlockRows; ++i) {
          row_best[i] = kTrackTap ? broadcast(minus_inf) : block_best[i];
        }
        for (int64_t t = 0; t < kw; ++t) {
          const Value log_k = broadcast(kernel_row[t]);
#pragma GCC unroll 8
          for (int64_t i = 0; i < kBlockRows; ++i) {
            Value source;
            std::memcpy(&source, source_row + i * padded_width + t, sizeof(Value));
            // -inf + finite and -inf + -inf stay -inf: no +inf exists, so no NaN either.
            row_best[i] = keep_first_max(row_best[i], log_k + source);
          }
        }
        if (kTrackTap) {
          const Tap tap_row = broadcast(static_cast<tap_t>(a));
          for (int64_t i = 0; i < kBlockRows; ++i) {
            const auto better = row_best[i] > block_best[i];
            block_best[i] = better ? row_best[i] : block_best[i];
            block_tap_row[i] = better ? tap_row : block_tap_row[i];
          }
        } else {
          for (int64_t i = 0; i < kBlockRows; ++i) {
            block_best[i] = row_best[i];
          }
        }
      }
      for (int64_t i = 0; i < kBlockRows && row0 + i < height; ++i) {
        const int64_t row = row0 + i;
        const int64_t cols = std::min(lanes, width - col0);
        for (int64_t l = 0; l < cols; ++l) {
          const int64_t col = col0 + l;
          const scalar_t value = block_best[i][l];
          best[row * width + col] = value;
          if (kTrackTap) {
            const int64_t a = block_tap_row[i][l];
            const int64_t t = first_column_reaching(padded_log_h + (row + a) * padded_width + col,
                                                   log_kernel_flipped + a * kw, kw, value);
            best_source[row * width + col] = value > minus_inf ? (row + a - ch) * width + (col + t - cw) : -1;
          }
        }
      }
    }
  }
}

// Buffers one thread reuses from message to message.
template <typename scalar_t>
struct Workspace {
  std::vector<scalar_t> padded_log_h;
  std::vector<scalar_t> log_kernel_flipped;
};

// Views of the kernel's tensors, all contiguous.
template <typename scalar_t>
struct Problem {
  const TreeSchedule* schedule;
  int64_t num_messages, height, width, kh, kw;
  const scalar_t* log_unary;    // [B, K, H, W]
  const scalar_t* log_kernels;  // [B, M, kh, kw]
  scalar_t* messages;           // [B, M, H, W] normalised log messages
  int64_t* source;              // [B, K, H, W]: for a non-root node, its position chosen per parent position
  int64_t* fallback;            // [B, K]: the first maximum of the node's upward belief
};

template <typename scalar_t>
void compute_message(const Problem<scalar_t>& problem, int64_t b, int64_t m, Workspace<scalar_t>& workspace) {
  const TreeSchedule& schedule = *problem.schedule;
  const int64_t num_nodes = schedule.num_nodes;
  const int64_t height = problem.height, width = problem.width, kh = problem.kh, kw = problem.kw;
  const int64_t map_size = height * width;
  const int64_t src = schedule.src[m];
  const int64_t dst = schedule.dst[m];
  const bool upward = schedule.parent[src] == dst;
  const scalar_t minus_inf = -std::numeric_limits<scalar_t>::infinity();

  const int64_t padded_height = round_up(height, kBlockRows) + kh - 1;
  const int64_t padded_width = round_up(width, kLanes<scalar_t>) + kw - 1;
  auto& padded = workspace.padded_log_h;
  // kLanes spare entries at the end: first_column_reaching reads up to kLanes - 1 past a row.
  padded.assign(padded_height * padded_width + kLanes<scalar_t>, minus_inf);

  // log_h, accumulated in the reference's order (unary first, then the messages by index) so that
  // the sums, and hence the ties of the maximum, are bit-identical to it.
  std::vector<const scalar_t*> factors;
  for (const int64_t k : schedule.incoming[src]) {
    if (schedule.src[k] != dst) {
      factors.push_back(problem.messages + (b * problem.num_messages + k) * map_size);
    }
  }
  const scalar_t* log_unary = problem.log_unary + (b * num_nodes + src) * map_size;
  const int64_t ch = kh / 2, cw = kw / 2;
  for (int64_t r = 0; r < height; ++r) {
    scalar_t* out = padded.data() + (r + ch) * padded_width + cw;
    for (int64_t c = 0; c < width; ++c) {
      out[c] = log_unary[r * width + c];
    }
    for (const scalar_t* factor : factors) {
      for (int64_t c = 0; c < width; ++c) {
        out[c] = out[c] + factor[r * width + c];
      }
    }
  }
  if (upward) {
    // The fallback of the backtracking: the first maximum, row-major, of the upward belief.
    scalar_t upward_peak = minus_inf;
    for (int64_t r = 0; r < height; ++r) {
      upward_peak = std::max(upward_peak, max_of(padded.data() + (r + ch) * padded_width + cw, width));
    }
    int64_t upward_argmax = -1;  // always found: the peak is one of the entries
    for (int64_t r = 0; r < height && upward_argmax < 0; ++r) {
      const scalar_t* row = padded.data() + (r + ch) * padded_width + cw;
      for (int64_t c = 0; c < width; ++c) {
        if (row[c] == upward_peak) {
          upward_argmax = r * width + c;
          break;
        }
      }
    }
    problem.fallback[b * num_nodes + src] = upward_argmax;
  }

  // Tap (a, t) pairs the source p + (a - ch, t - cw) with kernel entry (kh - 1 - a, kw - 1 - t).
  auto& flipped = workspace.log_kernel_flipped;
  flipped.assign(kh * kw + kLanes<scalar_t>, minus_inf);
  const scalar_t* log_kernel = problem.log_kernels + (b * problem.num_messages + m) * kh * kw;
  for (int64_t tap = 0; tap < kh * kw; ++tap) {
    flipped[tap] = log_kernel[kh * kw - 1 - tap];
  }

  scalar_t* message = problem.messages + (b * problem.num_messages + m) * map_size;
  if (upward) {
    max_convolve<scalar_t, true>(padded.data(), padded_width, flipped.data(), kh, kw, height, width, message,
                                 problem.source + (b * num_nodes + src) * map_size);
  } else {
    max_convolve<scalar_t, false>(padded.data(), padded_width, flipped.data(), kh, kw, height, width, message,
                                  nullptr);
  }

  const scalar_t peak = max_of(message, map_size);
  // A message that is -inf everywhere carries no information: zeros, as in the reference.
  for (int64_t p = 0; p < map_size; ++p) {
    message[p] = peak > minus_inf ? message[p] - peak : scalar_t(0);
  }
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> tree_map_kernel_impl(const at::Tensor& unary, const at::Tensor& pairwise,
                                                        const TreeSchedule& schedule) {
  const int64_t batch = unary.size(0), num_nodes = unary.size(1), height = unary.size(2), width = unary.size(3);
  const int64_t num_messages = pairwise.size(1), kh = pairwise.size(2), kw = pairwise.size(3);
  const int64_t map_size = height * width;
  const scalar_t minus_inf = -std::numeric_limits<scalar_t>::infinity();

  // The logarithms come from at::log on the very tensors the reference takes them of (the inputs
  // as given, the kernels expanded to the batch): at::log's vectorised and scalar paths may differ
  // in the last bit, and taking it on the same layout makes every log value, and so every tie,
  // the reference's.
  const at::Tensor log_unary = at::log(unary).contiguous();
  const at::Tensor log_kernels = at::log(pairwise.expand({batch, num_messages, kh, kw})).contiguous();
  at::Tensor messages = at::empty({batch, num_messages, height, width}, unary.options());
  at::Tensor source = at::empty({batch, num_nodes, height, width}, unary.options().dtype(at::kLong));
  at::Tensor fallback = at::zeros({batch, num_nodes}, unary.options().dtype(at::kLong));

  const Problem<scalar_t> problem{
      &schedule,
      num_messages,
      height,
      width,
      kh,
      kw,
      log_unary.data_ptr<scalar_t>(),
      log_kernels.data_ptr<scalar_t>(),
      messages.data_ptr<scalar_t>(),
      source.data_ptr<int64_t>(),
      fallback.data_ptr<int64_t>()};

  if (batch >= at::get_num_threads()) {
    // Whole images per thread: each thread walks its images' schedule, its messages staying in cache.
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      Workspace<scalar_t> workspace;
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t m = 0; m < num_messages; ++m) {
          compute_message(problem, b, m, workspace);
        }
      }
    });
  } else {
    // Too few images to occupy the threads: the messages of a level are independent, so spread
    // the (image, message) pairs of each level.
    for (size_t level = 0; level + 1 < schedule.level_begin.size(); ++level) {
      const int64_t first = schedule.level_begin[level];
      const int64_t level_size = schedule.level_begin[level + 1] - first;
      at::parallel_for(0, batch * level_size, 1, [&](int64_t begin, int64_t end) {
        Workspace<scalar_t> workspace;
        for (int64_t task = begin; task < end; ++task) {
          compute_message(problem, task / level_size, first + task % level_size, workspace);
        }
      });
    }
  }

  // Beliefs: log unary plus every incoming message, in the reference's order; shifted to maximum 0
  // (or 0 everywhere for a belief that is -inf everywhere, whose max-marginal is all ones).
  at::Tensor shifted = at::empty({batch, num_nodes, height, width}, unary.options());
  scalar_t* shifted_data = shifted.data_ptr<scalar_t>();
  at::parallel_for(0, batch * num_nodes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / num_nodes, node = index % num_nodes;
      scalar_t* belief = shifted_data + index * map_size;
      const scalar_t* log_u = problem.log_unary + index * map_size;
      for (int64_t p = 0; p < map_size; ++p) {
        belief[p] = log_u[p];
      }
      for (const int64_t k : schedule.incoming[node]) {
        const scalar_t* message = problem.messages + (b * num_messages + k) * map_size;
        for (int64_t p = 0; p < map_size; ++p) {
          belief[p] = belief[p] + message[p];
        }
      }
      const scalar_t peak = max_of(belief, map_size);
      for (int64_t p = 0; p < map_size; ++p) {
        belief[p] = peak > minus_inf ? belief[p] - peak : scalar_t(0);
      }
    }
  });
  // at::exp on a tensor of the reference's shape: bit-identical values, hence the same root argmax.
  at::Tensor max_marginals = at::exp(shifted);

  // Backtracking: the root takes the first maximum of its max-marginal; every other node the
  // position its upward message chose for its parent's position, or, when no candidate had a
  // finite score, the first maximum of its own upward belief.
  at::Tensor config = at::empty({batch, num_nodes, 2}, unary.options().dtype(at::kLong));
  int64_t* config_data = config.data_ptr<int64_t>();
  const scalar_t* max_marginal_data = max_marginals.data_ptr<scalar_t>();
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> position(num_nodes);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* root_map = max_marginal_data + (b * num_nodes + schedule.root) * map_size;
      int64_t root_position = 0;
      for (int64_t p = 1; p < map_size; ++p) {
        if (root_map[p] > root_map[root_position]) {
          root_position = p;
        }
      }
      for (const int64_t node : schedule.parents_first) {
        if (node == schedule.root) {
          position[node] = root_position;
          continue;
        }
        const int64_t chosen = problem.source[(b * num_nodes + node) * map_size + position[schedule.parent[node]]];
        position[node] = chosen >= 0 ? chosen : problem.fallback[b * num_nodes + node];
      }
      for (int64_t node = 0; node < num_nodes; ++node) {
        config_data[(b * num_nodes + node) * 2] = position[node] / width;
        config_data[(b * num_nodes + node) * 2 + 1] = position[node] % width;
      }
    }
  });
  return {max_marginals, config};
}

std::tuple<at::Tensor, at::Tensor> tree_map_kernel(const at::Tensor& unary_in, const at::Tensor& pairwise_in,
                                                   at::IntArrayRef messages, at::IntArrayRef level_sizes) {
  TORCH_CHECK_VALUE(
      unary_in.dim() == 4, "tree_map: unary must be a 4-D tensor [B, K, H, W], but it has shape ", unary_in.sizes());
  TORCH_CHECK_VALUE(
      pairwise_in.dim() == 4, "tree_map: pairwise must be a 4-D tensor [Bp, M, kh, kw], but it has shape ",
      pairwise_in.sizes());
  TORCH_CHECK_VALUE(
      unary_in.device() == pairwise_in.device(), "tree_map: unary and pairwise must be on one device, but unary is on ",
      unary_in.device(), " and pairwise on ", pairwise_in.device());
  TORCH_CHECK_TYPE(
      unary_in.scalar_type() == at::kFloat || unary_in.scalar_type() == at::kDouble,
      "tree_map: unary must be float32 or float64, but it is ", unary_in.scalar_type());
  TORCH_CHECK_TYPE(
      pairwise_in.scalar_type() == unary_in.scalar_type(), "tree_map: pairwise must have the dtype of unary (",
      unary_in.scalar_type(), "), but it is ", pairwise_in.scalar_type());

  const int64_t batch = unary_in.size(0), num_nodes = unary_in.size(1);
  const int64_t kernel_batch = pairwise_in.size(0), num_messages = pairwise_in.size(1);
  const int64_t kh = pairwise_in.size(2), kw = pairwise_in.size(3);
  TORCH_CHECK_VALUE(
      kernel_batch == 1 || kernel_batch == batch, "tree_map: pairwise must hold one set of kernels (dim 0 of size 1) "
      "or one per image (", batch, "), but it has shape ", pairwise_in.sizes());
  TORCH_CHECK_VALUE(num_nodes >= 1, "tree_map: unary must hold at least one keypoint map (dim 1), but it has shape ",
                    unary_in.sizes());
  TORCH_CHECK_VALUE(
      unary_in.size(2) >= 1 && unary_in.size(3) >= 1, "tree_map: unary maps must be at least 1x1, but unary has shape ",
      unary_in.sizes());
  TORCH_CHECK_VALUE(
      num_messages == 2 * (num_nodes - 1), "tree_map: a tree over K = ", num_nodes, " nodes has ",
      2 * (num_nodes - 1), " directed messages, but pairwise holds M = ", num_messages, " kernels (shape ",
      pairwise_in.sizes(), ")");
  TORCH_CHECK_VALUE(
      static_cast<int64_t>(messages.size()) == 2 * num_messages, "tree_map: messages must hold the (src, dst) pairs of the ",
      num_messages, " messages (", 2 * num_messages, " integers), but it holds ", messages.size());
  TORCH_CHECK_VALUE(
      kh % 2 == 1 && kw % 2 == 1, "tree_map: pairwise kernels must have odd height and width (a centre), but they are ",
      kh, "x", kw);
  const TreeSchedule schedule = TreeSchedule::from_flat(messages, level_sizes, num_nodes);

  const at::Tensor unary = unary_in.contiguous();
  const at::Tensor pairwise = pairwise_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES(unary.scalar_type(), "tree_map_check", [&] {
    check_non_negative_finite<scalar_t>(unary, "tree_map", "unary");
    check_non_negative_finite<scalar_t>(pairwise, "tree_map", "pairwise");
  });

  if (batch == 0) {
    return {at::empty_like(unary), at::empty({0, num_nodes, 2}, unary.options().dtype(at::kLong))};
  }
  std::tuple<at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(unary.scalar_type(), "tree_map", [&] {
    // The inputs as given, not their contiguous copies: see the logarithms in the impl.
    result = tree_map_kernel_impl<scalar_t>(unary_in, pairwise_in, schedule);
  });
  return result;
}

std::tuple<at::Tensor, at::Tensor> tree_map_cpu(const at::Tensor& unary, const at::Tensor& pairwise,
                                                at::IntArrayRef messages, at::IntArrayRef level_sizes) {
  return tree_map_kernel(unary, pairwise, messages, level_sizes);
}

}  // namespace

TORCH_LIBRARY_IMPL(handops, CPU, m) {
  m.impl("tree_map", &tree_map_cpu);
}

}  // namespace handops
