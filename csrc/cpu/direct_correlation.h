// Direct 2-D correlation of a small filter over a zero-padded image, register-blocked for SIMD.
//
//   out[x, y] = sum_{u < fh, v < fw} filter[u, v] * image[x + u, y + v],   x < oh, y < ow.
//
// Why direct and not FFT: every term is a product of non-negative numbers in the tree ops, so a
// direct sum is accurate to about (fh * fw) eps *relative to each entry*, whatever its size. An FFT
// is accurate only to about eps times the largest entry, which destroys the tiny message entries a
// peaked heatmap multiplies (see handops/_reference/tree_marginals.py, "Convolution").
//
// The message convolution, its input adjoint and its kernel adjoint are all this one routine (see
// tree_marginals.cpp).
//
// Denormals: peaked heatmaps are full of products below the smallest normal float (1.2e-38 in
// float32), and x86 computes with such operands 20-100 times slower. correlate() therefore flushes
// them to zero (FTZ/DAZ, for its own duration and thread only). Callers scale both operands to a
// maximum magnitude of 1 (place()'s `scale`), so every flushed term is below 1.2e-38 of the largest
// possible one: an output entry loses at most (fh fw) 1.2e-38 absolutely, which is below float32's
// relative precision for entries above about 1e-29 of that largest term (the tree ops floor messages
// at 1e-30 of their peak; gradual underflow would keep only a few significant bits there anyway).
// Only the correlation flushes: the tree ops' element-wise products rescale tiny partial products
// back to maximum 1 and need them. Blocking: R output rows x C output columns (NV SIMD vectors) stay in
// registers; for each image row s and filter column v one row of C image values is loaded once and
// multiplied by the R filter taps filter[s - x, v] of the R output rows. The filter is stored with
// kFilterPad >= R - 1 zero rows above and below (PaddedFilter) so that those taps never need a bounds test.
//
// Instruction sets: the register-blocked kernel (direct_correlation_kernel.h) is compiled once per
// instruction set, into its own namespace (direct_correlation_{default,avx2,avx512}.cpp: 6 x 3 zmm
// with AVX-512, 4 x 2 ymm with AVX2, scalar), and correlate() below calls the one that
// cpu_capability() chose at load time (as ATen's CPU capability dispatch does). This header holds
// what all of them share: the padded layouts, sized for the largest blocks of any of them, and the
// denormal flushing. Every variant adds each output's non-zero terms in the same order (image row,
// then filter column) with fused multiply-adds (a zero tap or zero image value adds an exact zero), and
// all flush denormals alike, so all give bitwise equal results (tests/test_cpu_capability.py).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace handops {
namespace direct {

constexpr int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The layouts below suit every kernel variant: output rows are padded to a multiple of kRowMultiple
// (each variant's block rows R divide it), output columns to a multiple of column_multiple<T>() (each
// variant's block columns NV * lanes divide it), and filters get kFilterPad >= R - 1 zero rows above
// and below. direct_correlation_kernel.h checks these with static_asserts.
constexpr int64_t kRowMultiple = 12;
constexpr int64_t kFilterPad = 5;
template <typename T>
constexpr int64_t column_multiple() { return 3 * 64 / int64_t(sizeof(T)); }  // 3 zmm registers of T

// What a kernel variant reads: plain pointers and sizes, so that no C++ library code is shared
// between translation units compiled for different instruction sets.
template <typename T>
struct ImageView {
  const T* data;
  int64_t rows, cols, row0, col0, h, w;
};
template <typename T>
struct FilterView {
  const T* data;  // fh + 2 pad rows of fw values; the filter starts at row `pad`
  int64_t fh, fw, pad;
};

// Sets flush-to-zero and denormals-are-zero in this thread's MXCSR for the object's lifetime.
class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(_M_X64)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFtzDaz); }
  ~FlushDenormals() { _mm_setcsr(saved_); }
#else
  FlushDenormals() = default;  // other architectures compute with denormals (slower, not less accurate)
#endif
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
#if defined(__x86_64__) || defined(_M_X64)
  static constexpr unsigned kFtzDaz = 0x8040;  // bit 15: flush to zero, bit 6: denormals are zero
  unsigned saved_;
#endif
};

// A zero-padded image: rows x cols, row stride `cols`, with the non-zero part in [row0, row0 + h) x
// [col0, col0 + w). Sized so that any correlation below reads inside it without bounds tests.
template <typename T>
struct PaddedImage {
  std::vector<T> data;
  int64_t rows = 0, cols = 0, row0 = 0, col0 = 0, h = 0, w = 0;

  // Room for outputs up to max_oh x max_ow with filters up to max_fh x max_fw.
  void reshape(int64_t max_oh, int64_t max_ow, int64_t max_fh, int64_t max_fw) {
    const int64_t r = round_up(max_oh, kRowMultiple) + max_fh - 1, c = round_up(max_ow, column_multiple<T>()) + max_fw - 1;
    if (r != rows || c != cols) data.assign(r * c, T(0)), rows = r, cols = c;
  }
  // Writes scale * src [h, w] (row stride w) at (row0, col0); everything else is zero. The product is
  // taken in double: 1 / (a float32 maximum below 2.9e-38) overflows float32.
  void place(const T* src, int64_t h_, int64_t w_, int64_t row0_, int64_t col0_, double scale = 1.0) {
    std::fill(data.begin(), data.end(), T(0));
    row0 = row0_, col0 = col0_, h = h_, w = w_;
    for (int64_t i = 0; i < h; ++i) {
      T* __restrict dst = data.data() + (row0 + i) * cols + col0;
      const T* __restrict s = src + i * w;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) dst[j] = T(double(s[j]) * scale);
    }
  }
  ImageView<T> view() const { return {data.data(), rows, cols, row0, col0, h, w}; }
};

// scale * filter [fh, fw] with kFilterPad zero rows above and below; flip = true stores filter[fh-1-u, fw-1-v].
template <typename T>
struct PaddedFilter {
  std::vector<T> data;
  int64_t fh = 0, fw = 0;
  void place(const T* src, int64_t fh_, int64_t fw_, bool flip, double scale = 1.0) {
    fh = fh_, fw = fw_;
    data.assign((fh + 2 * kFilterPad) * fw, T(0));
    T* body = data.data() + kFilterPad * fw;
    for (int64_t u = 0; u < fh; ++u)
      for (int64_t v = 0; v < fw; ++v) body[u * fw + v] = T(scale * double(flip ? src[(fh - 1 - u) * fw + (fw - 1 - v)] : src[u * fw + v]));
  }
  FilterView<T> view() const { return {data.data(), fh, fw, kFilterPad}; }
};

// out [oh, ow] (row stride out_stride) = the correlation of `filter` over `image` (see the top), by the
// kernel variant of cpu_capability(), with denormals flushed for its duration. The image must have
// been reshaped for at least oh x ow outputs and this filter size. Defined in direct_correlation.cpp
// for float and double.
template <typename T>
void correlate(const PaddedFilter<T>& filter, const PaddedImage<T>& image, T* out, int64_t oh, int64_t ow, int64_t out_stride);

}  // namespace direct
}  // namespace handops
