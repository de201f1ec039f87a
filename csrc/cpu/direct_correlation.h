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
// R - 1 zero rows above and below (PaddedFilter) so that those taps never need a bounds test.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <vector>

namespace handops {
namespace direct {

// SIMD traits: unaligned load/store, broadcast and fused multiply-add of one vector of lanes.
#if defined(__AVX512F__)
template <typename T>
struct Simd;
template <>
struct Simd<float> {
  using V = __m512;
  static constexpr int lanes = 16, NV = 3, R = 6;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V set1(float s) { return _mm512_set1_ps(s); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};
template <>
struct Simd<double> {
  using V = __m512d;
  static constexpr int lanes = 8, NV = 3, R = 6;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V set1(double s) { return _mm512_set1_pd(s); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
};
#elif defined(__AVX2__) && defined(__FMA__)
template <typename T>
struct Simd;
template <>
struct Simd<float> {  // 16 ymm registers: 8 accumulators, 2 loaded vectors, 1 broadcast
  using V = __m256;
  static constexpr int lanes = 8, NV = 2, R = 4;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V set1(float s) { return _mm256_set1_ps(s); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
};
template <>
struct Simd<double> {
  using V = __m256d;
  static constexpr int lanes = 4, NV = 2, R = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V set1(double s) { return _mm256_set1_pd(s); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
};
#else
template <typename T>
struct Simd {  // portable fallback: one lane; the compiler may still vectorise over the block
  using V = T;
  static constexpr int lanes = 1, NV = 8, R = 4;
  static V zero() { return T(0); }
  static V load(const T* p) { return *p; }
  static V set1(T s) { return s; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static void store(T* p, V v) { *p = v; }
};
#endif

template <typename T>
constexpr int block_cols() { return Simd<T>::NV * Simd<T>::lanes; }

constexpr int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Sets flush-to-zero and denormals-are-zero in this thread's MXCSR for the object's lifetime.
class FlushDenormals {
 public:
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFtzDaz); }
  ~FlushDenormals() { _mm_setcsr(saved_); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  static constexpr unsigned kFtzDaz = 0x8040;  // bit 15: flush to zero, bit 6: denormals are zero
  unsigned saved_;
};

// A zero-padded image: rows x cols, row stride `cols`, with the non-zero part in [row0, row0 + h) x
// [col0, col0 + w). Sized so that any correlation below reads inside it without bounds tests.
template <typename T>
struct PaddedImage {
  std::vector<T> data;
  int64_t rows = 0, cols = 0, row0 = 0, col0 = 0, h = 0, w = 0;

  // Room for outputs up to max_oh x max_ow with filters up to max_fh x max_fw.
  void reshape(int64_t max_oh, int64_t max_ow, int64_t max_fh, int64_t max_fw) {
    const int64_t r = round_up(max_oh, Simd<T>::R) + max_fh - 1, c = round_up(max_ow, block_cols<T>()) + max_fw - 1;
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
};

// scale * filter [fh, fw] with R - 1 zero rows above and below; flip = true stores filter[fh-1-u, fw-1-v].
template <typename T>
struct PaddedFilter {
  std::vector<T> data;
  int64_t fh = 0, fw = 0;
  void place(const T* src, int64_t fh_, int64_t fw_, bool flip, double scale = 1.0) {
    constexpr int R = Simd<T>::R;
    fh = fh_, fw = fw_;
    data.assign((fh + 2 * (R - 1)) * fw, T(0));
    T* body = data.data() + (R - 1) * fw;
    for (int64_t u = 0; u < fh; ++u)
      for (int64_t v = 0; v < fw; ++v) body[u * fw + v] = T(scale * double(flip ? src[(fh - 1 - u) * fw + (fw - 1 - v)] : src[u * fw + v]));
  }
};

// acc[i][j] += sum_{v in [v_begin, v_end)} taps[v - i fw] * img[v + j lanes ...] for the vectors j in
// [J0, J1] only: the others would read nothing but the image's zero padding there.
template <typename T, int J0, int J1>
__attribute__((always_inline)) inline void accumulate_columns(typename Simd<T>::V (&acc)[Simd<T>::R][Simd<T>::NV], const T* img,
                                                              const T* taps, int64_t v_begin, int64_t v_end, int64_t fw) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int R = S::R, NV = S::NV, lanes = S::lanes;
  for (int64_t v = v_begin; v < v_end; ++v) {
    V x[NV];
#pragma GCC unroll 16
    for (int j = J0; j <= J1; ++j) x[j] = S::load(img + v + j * lanes);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const V k = S::set1(taps[v - i * fw]);
#pragma GCC unroll 16
      for (int j = J0; j <= J1; ++j) acc[i][j] = S::fma(k, x[j], acc[i][j]);
    }
  }
}

// accumulate_columns<T, j0, j1> for run-time j0 <= j1 < NV.
template <typename T, int J0 = 0, int J1 = 0>
__attribute__((always_inline)) inline void accumulate_columns(int j0, int j1, typename Simd<T>::V (&acc)[Simd<T>::R][Simd<T>::NV],
                                                              const T* img, const T* taps, int64_t v_begin, int64_t v_end, int64_t fw) {
  constexpr int NV = Simd<T>::NV;
  if constexpr (J0 < NV && J1 < NV) {
    if (j0 == J0 && j1 == J1) return accumulate_columns<T, J0, J1>(acc, img, taps, v_begin, v_end, fw);
    if (j0 == J0) return accumulate_columns<T, J0, J1 + 1>(j0, j1, acc, img, taps, v_begin, v_end, fw);
    return accumulate_columns<T, J0 + 1, J0 + 1>(j0, j1, acc, img, taps, v_begin, v_end, fw);
  }
}

// One R x C block of outputs at (x0, y0); writes only entries inside oh x ow.
template <typename T>
inline void correlate_block(const PaddedFilter<T>& filter, const PaddedImage<T>& image, int64_t x0, int64_t y0,
                            T* out, int64_t oh, int64_t ow, int64_t out_stride) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int R = S::R, NV = S::NV, lanes = S::lanes, C = NV * lanes;
  const int64_t fh = filter.fh, fw = filter.fw;
  // Image rows that can meet the non-zero part of the image.
  const int64_t s_begin = std::max(x0, image.row0), s_end = std::min(x0 + R - 1 + fh, image.row0 + image.h);
  // Vector j of the block (columns y0 + j lanes ...) meets the image's non-zero columns for filter
  // columns v in [lo_j, hi_j); both ends fall with j, so the vectors in use at any v are a range
  // [j0, j1]. Split the v axis where that range changes; vectors wholly past ow are never used.
  const int last = int(std::min<int64_t>(NV, (ow - y0 + lanes - 1) / lanes)) - 1;
  int64_t cuts[2 * NV + 2];
  int num_cuts = 0;
  for (int j = 0; j <= last; ++j) {
    cuts[num_cuts++] = std::clamp<int64_t>(image.col0 - y0 - (j + 1) * lanes + 1, 0, fw);
    cuts[num_cuts++] = std::clamp<int64_t>(image.col0 + image.w - y0 - j * lanes, 0, fw);
  }
  std::sort(cuts, cuts + num_cuts);
  struct Segment { int64_t begin, end; int j0, j1; };
  Segment segments[2 * NV + 1];
  int num_segments = 0;
  for (int c = 0; c + 1 < num_cuts; ++c) {
    const int64_t begin = cuts[c], end = cuts[c + 1];
    if (begin >= end) continue;
    int j0 = last + 1, j1 = -1;
    for (int j = 0; j <= last; ++j) {
      const int64_t lo = image.col0 - y0 - (j + 1) * lanes + 1, hi = image.col0 + image.w - y0 - j * lanes;
      if (lo <= begin && end <= hi) j0 = std::min(j0, j), j1 = std::max(j1, j);
    }
    if (j0 <= j1) segments[num_segments++] = {begin, end, j0, j1};
  }
  V acc[R][NV];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) acc[i][j] = S::zero();
  for (int64_t s = s_begin; s < s_end; ++s) {
    const T* img = image.data.data() + s * image.cols + y0;
    // Row s - x0 - i of the filter for output row x0 + i, shifted by the R - 1 padding rows.
    const T* taps = filter.data.data() + (s - x0 + R - 1) * fw;
    for (int g = 0; g < num_segments; ++g)
      accumulate_columns<T>(segments[g].j0, segments[g].j1, acc, img, taps, segments[g].begin, segments[g].end, fw);
  }
  const int64_t rows = std::min<int64_t>(R, oh - x0), cols = std::min<int64_t>(C, ow - y0);
  // Fully unrolled (constant indices) so that the accumulators can live in registers throughout.
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    if (i >= rows) break;
    T row[C];
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) S::store(row + j * lanes, acc[i][j]);
    std::memcpy(out + (x0 + i) * out_stride + y0, row, cols * sizeof(T));
  }
}

// out [oh, ow] (row stride out_stride) = the correlation of `filter` over `image` (see the top).
// The image must have been reshaped for at least oh x ow outputs and this filter size.
template <typename T>
void correlate(const PaddedFilter<T>& filter, const PaddedImage<T>& image, T* out, int64_t oh, int64_t ow, int64_t out_stride) {
  const FlushDenormals flush;
  for (int64_t x0 = 0; x0 < oh; x0 += Simd<T>::R)
    for (int64_t y0 = 0; y0 < ow; y0 += block_cols<T>()) correlate_block(filter, image, x0, y0, out, oh, ow, out_stride);
}

}  // namespace direct
}  // namespace handops
