// The register-blocked direct correlation of direct_correlation.h, for one instruction set.
//
// Included once by each of direct_correlation_{default,avx2,avx512}.cpp, which define
// HANDOPS_CPU_CAPABILITY (the namespace of this variant) and one of HANDOPS_CPU_CAPABILITY_AVX512,
// _AVX2, _DEFAULT. The AVX2 and AVX-512 variants compile their code with `#pragma GCC target`, so the
// rest of the extension keeps the baseline flags (setup.py: AVX2 + FMA). Everything below lives in the
// variant's own namespace and uses no C++ library templates (no std::sort, no std::vector): code
// compiled for AVX-512 must never be merged, as an identical inline function or template
// instantiation, into code the AVX2 path runs (tests/test_cpu_capability.py disassembles the
// extension and checks that only functions of the cpu_avx512 namespace hold AVX-512 instructions).
#ifndef HANDOPS_CPU_CAPABILITY
#error "define HANDOPS_CPU_CAPABILITY (see direct_correlation_avx512.cpp)"
#endif

// Headers first, outside the target region: their inline functions keep the baseline flags.
#include <cstdint>

#if defined(HANDOPS_CPU_CAPABILITY_AVX512) || defined(HANDOPS_CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

#include "cpu/direct_correlation.h"

#if defined(HANDOPS_CPU_CAPABILITY_AVX512)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#endif
#elif defined(HANDOPS_CPU_CAPABILITY_AVX2)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#endif

namespace handops {
namespace direct {
namespace HANDOPS_CPU_CAPABILITY {
namespace {

// SIMD traits: unaligned load/store, broadcast and fused multiply-add of one vector of lanes; R output
// rows x NV vectors of output columns per block.
template <typename T>
struct Simd;
#if defined(HANDOPS_CPU_CAPABILITY_AVX512)
template <>
struct Simd<float> {  // 32 zmm registers: 18 accumulators, 3 loaded vectors, 1 broadcast
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
#elif defined(HANDOPS_CPU_CAPABILITY_AVX2)
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
struct Simd {  // portable: one lane (the compiler may still vectorise over the block); __builtin_fma
  using V = T;  // rounds once, like the SIMD variants, so all variants agree bit for bit
  static constexpr int lanes = 1, NV = 8, R = 4;
  static V zero() { return T(0); }
  static V load(const T* p) { return *p; }
  static V set1(T s) { return s; }
  static V fma(V a, V b, V c) { return fma_(a, b, c); }
  static void store(T* p, V v) { *p = v; }
  static float fma_(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
  static double fma_(double a, double b, double c) { return __builtin_fma(a, b, c); }
};
#endif

template <typename T>
constexpr int block_cols() { return Simd<T>::NV * Simd<T>::lanes; }

static_assert(kRowMultiple % Simd<float>::R == 0 && kRowMultiple % Simd<double>::R == 0, "see PaddedImage::reshape");
static_assert(Simd<float>::R - 1 <= kFilterPad && Simd<double>::R - 1 <= kFilterPad, "see PaddedFilter");
static_assert(column_multiple<float>() % block_cols<float>() == 0 && column_multiple<double>() % block_cols<double>() == 0,
              "see PaddedImage::reshape");

// Small helpers of this variant's own (no std::min / std::sort instantiations shared with other code).
inline int64_t min_(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max_(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t clamp_(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : (x > hi ? hi : x); }
inline void sort_(int64_t* a, int n) {  // insertion sort of at most 2 NV + 2 values
  for (int i = 1; i < n; ++i)
    for (int k = i; k > 0 && a[k - 1] > a[k]; --k) {
      const int64_t t = a[k];
      a[k] = a[k - 1], a[k - 1] = t;
    }
}

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
inline void correlate_block(const FilterView<T>& filter, const ImageView<T>& image, int64_t x0, int64_t y0, T* out, int64_t oh,
                            int64_t ow, int64_t out_stride) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int R = S::R, NV = S::NV, lanes = S::lanes, C = NV * lanes;
  const int64_t fh = filter.fh, fw = filter.fw;
  // Image rows that can meet the non-zero part of the image.
  const int64_t s_begin = max_(x0, image.row0), s_end = min_(x0 + R - 1 + fh, image.row0 + image.h);
  // Vector j of the block (columns y0 + j lanes ...) meets the image's non-zero columns for filter
  // columns v in [lo_j, hi_j); both ends fall with j, so the vectors in use at any v are a range
  // [j0, j1]. Split the v axis where that range changes; vectors wholly past ow are never used.
  const int last = int(min_(NV, (ow - y0 + lanes - 1) / lanes)) - 1;
  int64_t cuts[2 * NV + 2];
  int num_cuts = 0;
  for (int j = 0; j <= last; ++j) {
    cuts[num_cuts++] = clamp_(image.col0 - y0 - (j + 1) * lanes + 1, 0, fw);
    cuts[num_cuts++] = clamp_(image.col0 + image.w - y0 - j * lanes, 0, fw);
  }
  sort_(cuts, num_cuts);
  struct Segment { int64_t begin, end; int j0, j1; };
  Segment segments[2 * NV + 1];
  int num_segments = 0;
  for (int c = 0; c + 1 < num_cuts; ++c) {
    const int64_t begin = cuts[c], end = cuts[c + 1];
    if (begin >= end) continue;
    int j0 = last + 1, j1 = -1;
    for (int j = 0; j <= last; ++j) {
      const int64_t lo = image.col0 - y0 - (j + 1) * lanes + 1, hi = image.col0 + image.w - y0 - j * lanes;
      if (lo <= begin && end <= hi) j0 = j < j0 ? j : j0, j1 = j > j1 ? j : j1;
    }
    if (j0 <= j1) segments[num_segments++] = {begin, end, j0, j1};
  }
  V acc[R][NV];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) acc[i][j] = S::zero();
  for (int64_t s = s_begin; s < s_end; ++s) {
    const T* img = image.data + s * image.cols + y0;
    // Row s - x0 - i of the filter for output row x0 + i, shifted by the padding rows.
    const T* taps = filter.data + (s - x0 + filter.pad) * fw;
    for (int g = 0; g < num_segments; ++g)
      accumulate_columns<T>(segments[g].j0, segments[g].j1, acc, img, taps, segments[g].begin, segments[g].end, fw);
  }
  const int64_t rows = min_(R, oh - x0), cols = min_(C, ow - y0);
  // Fully unrolled (constant indices) so that the accumulators can live in registers throughout.
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    if (i >= rows) break;
    T row[C];
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) S::store(row + j * lanes, acc[i][j]);
    __builtin_memcpy(out + (x0 + i) * out_stride + y0, row, cols * sizeof(T));
  }
}

template <typename T>
void correlate_impl(const FilterView<T>& filter, const ImageView<T>& image, T* out, int64_t oh, int64_t ow, int64_t out_stride) {
  for (int64_t x0 = 0; x0 < oh; x0 += Simd<T>::R)
    for (int64_t y0 = 0; y0 < ow; y0 += block_cols<T>()) correlate_block(filter, image, x0, y0, out, oh, ow, out_stride);
}

}  // namespace

// The entry points direct_correlation.cpp dispatches to (denormals already flushed by the caller).
void correlate(const FilterView<float>& filter, const ImageView<float>& image, float* out, int64_t oh, int64_t ow, int64_t out_stride) {
  correlate_impl(filter, image, out, oh, ow, out_stride);
}
void correlate(const FilterView<double>& filter, const ImageView<double>& image, double* out, int64_t oh, int64_t ow,
               int64_t out_stride) {
  correlate_impl(filter, image, out, oh, ow, out_stride);
}

}  // namespace HANDOPS_CPU_CAPABILITY
}  // namespace direct
}  // namespace handops

#if defined(HANDOPS_CPU_CAPABILITY_AVX512) || defined(HANDOPS_CPU_CAPABILITY_AVX2)
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
