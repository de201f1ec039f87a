// Batched ("lane-parallel") complex FFTs and the 2-D real transforms the tree and graph ops use.
//
// A lane-parallel FFT transforms `lanes` independent sequences of length N at once. Element e of
// lane l is stored at re[e * ld + l], im[e * ld + l] (split complex, ld >= lanes), so every butterfly
// of the self-sorting Stockham algorithm reads and writes contiguous runs of s * ld values: inner
// loops the compiler turns into SIMD code (AVX2 on this machine) without shuffles.
//
// 2-D real transforms (N x N, circular) keep half the spectrum along the first axis:
//   forward:  S[k1 * ld + k0] = sum_{n0, n1} x[n0][n1] exp(-2 pi i (k0 n0 + k1 n1) / N),
//             k0 in [0, N/2] (the lanes), k1 in [0, N).
//   inverse:  y[n0][n1] = sum over the full (Hermitian) spectrum of S exp(+2 pi i ...), no 1/N^2.
// The first axis is transformed with two real columns packed into one complex lane; the second with
// the k0 values as lanes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace handops {
namespace fft {

// The smallest n >= minimum whose prime factors are 2, 3 and 5 (the radices implemented).
inline int64_t good_size(int64_t minimum) {
  for (int64_t n = std::max<int64_t>(minimum, 1);; ++n) {
    int64_t m = n;
    for (int64_t p : {2, 3, 5})
      while (m % p == 0) m /= p;
    if (m == 1) return n;
  }
}

inline int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

// The circular size for convolving H x W maps with kh x kw kernels: the circular result equals the
// linear one on the centred H x W output when N >= H + kh / 2 (and W + kw / 2), and the kernel
// itself must fit (N >= kh, kw). With the kernel at the origin the output starts at (kh/2, kw/2);
// the adjoints read theirs from the origin when the gradient is placed at (kh/2, kw/2).
inline int64_t convolution_size(int64_t H, int64_t W, int64_t kh, int64_t kw) {
  return good_size(std::max({H + kh / 2, W + kw / 2, kh, kw}));
}

template <typename T>
class LaneFFT {
 public:
  explicit LaneFFT(int64_t n) : n_(n) {
    if (good_size(n) != n) throw std::invalid_argument("LaneFFT: length must factor into 2, 3 and 5");
    int64_t m = n;
    while (m % 4 == 0) radices_.push_back(4), m /= 4;
    while (m % 2 == 0) radices_.push_back(2), m /= 2;
    while (m % 3 == 0) radices_.push_back(3), m /= 3;
    while (m % 5 == 0) radices_.push_back(5), m /= 5;
    // Stage twiddles w^(p*u), w = exp(-2 pi i / len), for p < len / r, u in [1, r).
    int64_t len = n;
    for (int r : radices_) {
      const int64_t quarter = len / r;
      std::vector<T> wr, wi;
      for (int64_t p = 0; p < quarter; ++p)
        for (int u = 1; u < r; ++u) {
          const double angle = -2.0 * M_PI * double(p * u) / double(len);
          wr.push_back(T(std::cos(angle)));
          wi.push_back(T(std::sin(angle)));
        }
      twiddle_re_.push_back(std::move(wr));
      twiddle_im_.push_back(std::move(wi));
      len = quarter;
    }
  }

  int64_t size() const { return n_; }

  // In-place transform of `lanes` sequences (ld apart); `work` holds 2 * n * ld values.
  // inverse = true uses exp(+2 pi i ...) and does not divide by n.
  void transform(T* re, T* im, int64_t ld, T* work, bool inverse) const {
    T *xr = re, *xi = im, *yr = work, *yi = work + n_ * ld;
    int64_t len = n_, stride = 1;
    for (size_t stage = 0; stage < radices_.size(); ++stage) {
      const T* wr = twiddle_re_[stage].data();
      const T* wi = twiddle_im_[stage].data();
      switch (radices_[stage]) {
        case 4: pass<4>(len, stride, ld, xr, xi, yr, yi, wr, wi, inverse); break;
        case 2: pass<2>(len, stride, ld, xr, xi, yr, yi, wr, wi, inverse); break;
        case 3: pass<3>(len, stride, ld, xr, xi, yr, yi, wr, wi, inverse); break;
        default: pass<5>(len, stride, ld, xr, xi, yr, yi, wr, wi, inverse); break;
      }
      len /= radices_[stage];
      stride *= radices_[stage];
      std::swap(xr, yr);
      std::swap(xi, yi);
    }
    if (xr != re) {
      std::copy(xr, xr + n_ * ld, re);
      std::copy(xi, xi + n_ * ld, im);
    }
  }

 private:
  // One decimation-in-frequency Stockham pass of radix R on sequences of length len with stride s:
  // y[s (R p + u) + q] = w^(p u) * sum_t x[s (p + t len/R) + q] * exp(-+2 pi i t u / R).
  template <int R>
  static void pass(int64_t len, int64_t s, int64_t ld, const T* __restrict xr, const T* __restrict xi,
                   T* __restrict yr, T* __restrict yi, const T* wr, const T* wi, bool inverse) {
    const int64_t m = len / R, block = s * ld;
    const T sign = inverse ? T(1) : T(-1);  // the sign of the exponent
    for (int64_t p = 0; p < m; ++p) {
      const T* ar[R];
      const T* ai[R];
      T* br[R];
      T* bi[R];
      T twr[R], twi[R];
      for (int t = 0; t < R; ++t) {
        ar[t] = xr + (p + t * m) * block;
        ai[t] = xi + (p + t * m) * block;
        br[t] = yr + (R * p + t) * block;
        bi[t] = yi + (R * p + t) * block;
      }
      twr[0] = T(1), twi[0] = T(0);
      for (int u = 1; u < R; ++u) {
        twr[u] = wr[p * (R - 1) + u - 1];
        twi[u] = inverse ? -wi[p * (R - 1) + u - 1] : wi[p * (R - 1) + u - 1];  // conj for the inverse
      }
      if constexpr (R == 2) {
#pragma omp simd
        for (int64_t e = 0; e < block; ++e) {
          const T sr = ar[0][e] + ar[1][e], si = ai[0][e] + ai[1][e];
          const T dr = ar[0][e] - ar[1][e], di = ai[0][e] - ai[1][e];
          br[0][e] = sr, bi[0][e] = si;
          br[1][e] = dr * twr[1] - di * twi[1], bi[1][e] = dr * twi[1] + di * twr[1];
        }
      } else if constexpr (R == 4) {
#pragma omp simd
        for (int64_t e = 0; e < block; ++e) {
          const T t0r = ar[0][e] + ar[2][e], t0i = ai[0][e] + ai[2][e];
          const T t1r = ar[0][e] - ar[2][e], t1i = ai[0][e] - ai[2][e];
          const T t2r = ar[1][e] + ar[3][e], t2i = ai[1][e] + ai[3][e];
          const T t3r = ar[1][e] - ar[3][e], t3i = ai[1][e] - ai[3][e];
          // sign * i * t3: forward (-i) or inverse (+i).
          const T jr = -sign * t3i, ji = sign * t3r;
          const T y1r = t1r + jr, y1i = t1i + ji;
          const T y2r = t0r - t2r, y2i = t0i - t2i;
          const T y3r = t1r - jr, y3i = t1i - ji;
          br[0][e] = t0r + t2r, bi[0][e] = t0i + t2i;
          br[1][e] = y1r * twr[1] - y1i * twi[1], bi[1][e] = y1r * twi[1] + y1i * twr[1];
          br[2][e] = y2r * twr[2] - y2i * twi[2], bi[2][e] = y2r * twi[2] + y2i * twr[2];
          br[3][e] = y3r * twr[3] - y3i * twi[3], bi[3][e] = y3r * twi[3] + y3i * twr[3];
        }
      } else if constexpr (R == 3) {
        const T h = T(0.8660254037844386467637) * sign;  // sign * sin(2 pi / 3)
#pragma omp simd
        for (int64_t e = 0; e < block; ++e) {
          const T sr = ar[1][e] + ar[2][e], si = ai[1][e] + ai[2][e];
          const T dr = ar[1][e] - ar[2][e], di = ai[1][e] - ai[2][e];
          const T mr = ar[0][e] - T(0.5) * sr, mi = ai[0][e] - T(0.5) * si;
          // y1 = m + i h d, y2 = m - i h d
          const T y1r = mr - h * di, y1i = mi + h * dr;
          const T y2r = mr + h * di, y2i = mi - h * dr;
          br[0][e] = ar[0][e] + sr, bi[0][e] = ai[0][e] + si;
          br[1][e] = y1r * twr[1] - y1i * twi[1], bi[1][e] = y1r * twi[1] + y1i * twr[1];
          br[2][e] = y2r * twr[2] - y2i * twi[2], bi[2][e] = y2r * twi[2] + y2i * twr[2];
        }
      } else {
        const T c1 = T(0.3090169943749474241023), c2 = T(-0.8090169943749474241023);
        const T s1 = T(0.9510565162951535721164) * sign, s2 = T(0.5877852522924731291687) * sign;
#pragma omp simd
        for (int64_t e = 0; e < block; ++e) {
          const T b1r = ar[1][e] + ar[4][e], b1i = ai[1][e] + ai[4][e];
          const T b2r = ar[2][e] + ar[3][e], b2i = ai[2][e] + ai[3][e];
          const T d1r = ar[1][e] - ar[4][e], d1i = ai[1][e] - ai[4][e];
          const T d2r = ar[2][e] - ar[3][e], d2i = ai[2][e] - ai[3][e];
          const T p1r = ar[0][e] + c1 * b1r + c2 * b2r, p1i = ai[0][e] + c1 * b1i + c2 * b2i;
          const T p2r = ar[0][e] + c2 * b1r + c1 * b2r, p2i = ai[0][e] + c2 * b1i + c1 * b2i;
          // q1 = s1 d1 + s2 d2, q2 = s2 d1 - s1 d2; y1 = p1 + i q1, y4 = p1 - i q1, y2 = p2 + i q2, y3 = p2 - i q2
          const T q1r = s1 * d1r + s2 * d2r, q1i = s1 * d1i + s2 * d2i;
          const T q2r = s2 * d1r - s1 * d2r, q2i = s2 * d1i - s1 * d2i;
          const T y1r = p1r - q1i, y1i = p1i + q1r, y4r = p1r + q1i, y4i = p1i - q1r;
          const T y2r = p2r - q2i, y2i = p2i + q2r, y3r = p2r + q2i, y3i = p2i - q2r;
          br[0][e] = ar[0][e] + b1r + b2r, bi[0][e] = ai[0][e] + b1i + b2i;
          br[1][e] = y1r * twr[1] - y1i * twi[1], bi[1][e] = y1r * twi[1] + y1i * twr[1];
          br[2][e] = y2r * twr[2] - y2i * twi[2], bi[2][e] = y2r * twi[2] + y2i * twr[2];
          br[3][e] = y3r * twr[3] - y3i * twi[3], bi[3][e] = y3r * twi[3] + y3i * twr[3];
          br[4][e] = y4r * twr[4] - y4i * twi[4], bi[4][e] = y4r * twi[4] + y4i * twr[4];
        }
      }
    }
  }

  int64_t n_;
  std::vector<int> radices_;
  std::vector<std::vector<T>> twiddle_re_, twiddle_im_;
};

// 2-D real <-> half-spectrum transforms of size N x N built on LaneFFT; see the file comment.
// Spectra are stored as re[N * ld], im[N * ld] with ld = spectrum_ld() lanes per k1 row.
template <typename T>
class RealFFT2D {
 public:
  explicit RealFFT2D(int64_t n) : fft_(n), n_(n), half_(n / 2 + 1), ld_(round_up(n / 2 + 1, 8)), pair_ld_(round_up((n + 1) / 2, 8)) {}

  int64_t size() const { return n_; }
  int64_t spectrum_ld() const { return ld_; }
  int64_t spectrum_numel() const { return n_ * ld_; }  // per real/imag part
  // Scratch values a thread needs for forward()/inverse().
  int64_t workspace_numel() const { return 2 * n_ * pair_ld_ + 2 * n_ * std::max(ld_, pair_ld_) + 4 * half_ * pair_ld_; }

  // Spectrum of x (rows x cols, row stride x_stride) placed at (row0, col0) of an N x N zero map.
  void forward(const T* x, int64_t rows, int64_t cols, int64_t x_stride, int64_t row0, int64_t col0,
               T* spec_re, T* spec_im, T* workspace) const {
    const int64_t lanes = (col0 + cols + 1) / 2, ld = round_up(lanes, 8);
    T* zr = workspace;
    T* zi = zr + n_ * pair_ld_;
    T* work = zi + n_ * pair_ld_;
    std::fill(zr, zr + row0 * ld, T(0));
    std::fill(zi, zi + row0 * ld, T(0));
    std::fill(zr + (row0 + rows) * ld, zr + n_ * ld, T(0));
    std::fill(zi + (row0 + rows) * ld, zi + n_ * ld, T(0));
    // Column c of the padded map goes to lane c / 2: the real part when c is even, else the imaginary.
    // Source columns 0, 2, 4, ... land in one part, 1, 3, 5, ... in the other.
    const bool even_start = (col0 & 1) == 0;
    const int64_t first_lane = col0 >> 1;
    for (int64_t r = 0; r < rows; ++r) {
      T* __restrict dr = zr + (row0 + r) * ld;
      T* __restrict di = zi + (row0 + r) * ld;
      const T* __restrict src = x + r * x_stride;
      for (int64_t lane = 0; lane < ld; ++lane) dr[lane] = di[lane] = T(0);
      T* __restrict a = even_start ? dr + first_lane : di + first_lane;
      T* __restrict b = even_start ? di + first_lane : dr + first_lane + 1;
      for (int64_t j = 0; j < (cols + 1) / 2; ++j) a[j] = src[2 * j];
      for (int64_t j = 0; j < cols / 2; ++j) b[j] = src[2 * j + 1];
    }
    fft_.transform(zr, zi, ld, work, false);
    // Unpack the two real columns of each lane, X_even = (Z[k] + conj Z[-k]) / 2,
    // X_odd = (Z[k] - conj Z[-k]) / 2i, vectorised over lanes into [k0][lane] blocks, then transpose
    // them to one row per padded column: the second axis runs over columns with k0 as lanes.
    T* er = work;  // `work` is free until the second transform
    T* ei = er + half_ * ld;
    T* orr = ei + half_ * ld;
    T* oi = orr + half_ * ld;
    for (int64_t k0 = 0; k0 < half_; ++k0) {
      const T* __restrict ar = zr + k0 * ld;
      const T* __restrict ai = zi + k0 * ld;
      const T* __restrict br = zr + (k0 == 0 ? 0 : n_ - k0) * ld;
      const T* __restrict bi = zi + (k0 == 0 ? 0 : n_ - k0) * ld;
      T* __restrict er_row = er + k0 * ld;
      T* __restrict ei_row = ei + k0 * ld;
      T* __restrict or_row = orr + k0 * ld;
      T* __restrict oi_row = oi + k0 * ld;
#pragma omp simd
      for (int64_t lane = 0; lane < ld; ++lane) {
        er_row[lane] = T(0.5) * (ar[lane] + br[lane]);
        ei_row[lane] = T(0.5) * (ai[lane] - bi[lane]);
        or_row[lane] = T(0.5) * (ai[lane] + bi[lane]);
        oi_row[lane] = T(-0.5) * (ar[lane] - br[lane]);
      }
    }
    const int64_t written = std::min<int64_t>(2 * lanes, n_);
    for (int64_t c = 0; c < written; ++c) {
      const T* __restrict src_r = ((c & 1) ? orr : er) + (c >> 1);
      const T* __restrict src_i = ((c & 1) ? oi : ei) + (c >> 1);
      T* __restrict dst_r = spec_re + c * ld_;
      T* __restrict dst_i = spec_im + c * ld_;
      for (int64_t k0 = 0; k0 < half_; ++k0) {
        dst_r[k0] = src_r[k0 * ld];
        dst_i[k0] = src_i[k0 * ld];
      }
      for (int64_t k0 = half_; k0 < ld_; ++k0) dst_r[k0] = dst_i[k0] = T(0);
    }
    std::fill(spec_re + written * ld_, spec_re + n_ * ld_, T(0));
    std::fill(spec_im + written * ld_, spec_im + n_ * ld_, T(0));
    fft_.transform(spec_re, spec_im, ld_, work, false);
  }

  // y[r][c] = scale * (inverse transform of the spectrum)[row0 + r][col0 + c] for r < rows, c < cols.
  // The spectrum is consumed (overwritten).
  void inverse(T* spec_re, T* spec_im, int64_t rows, int64_t cols, int64_t row0, int64_t col0, T scale, T* y,
               int64_t y_stride, T* workspace) const {
    T* zr = workspace;
    T* zi = zr + n_ * pair_ld_;
    T* work = zi + n_ * pair_ld_;
    fft_.transform(spec_re, spec_im, ld_, work, true);  // now row c holds N * X_c[k0]
    const int64_t lane0 = col0 / 2, lanes = (col0 + cols + 1) / 2 - lane0, ld = round_up(lanes, 8);
    // Z[k0] = X_even[k0] + i X_odd[k0] for all k0, with X_c[N - k0] = conj X_c[k0] (x is real):
    // transpose the needed columns' half spectra into [k0][lane] blocks, then combine row by row.
    T* er = work;
    T* ei = er + half_ * ld;
    T* orr = ei + half_ * ld;
    T* oi = orr + half_ * ld;
    for (int64_t lane = 0; lane < ld; ++lane) {
      const int64_t c = 2 * (lane0 + lane);
      const bool has_even = lane < lanes, has_odd = lane < lanes && c + 1 < n_;
      const T* er_src = spec_re + (has_even ? c : 0) * ld_;
      const T* ei_src = spec_im + (has_even ? c : 0) * ld_;
      const T* or_src = spec_re + (has_odd ? c + 1 : 0) * ld_;
      const T* oi_src = spec_im + (has_odd ? c + 1 : 0) * ld_;
      const T keep_even = has_even ? T(1) : T(0), keep_odd = has_odd ? T(1) : T(0);
      for (int64_t k0 = 0; k0 < half_; ++k0) {
        er[k0 * ld + lane] = keep_even * er_src[k0];
        ei[k0 * ld + lane] = keep_even * ei_src[k0];
        orr[k0 * ld + lane] = keep_odd * or_src[k0];
        oi[k0 * ld + lane] = keep_odd * oi_src[k0];
      }
    }
    for (int64_t k0 = 0; k0 < n_; ++k0) {
      const bool mirrored = k0 >= half_;
      const int64_t kk = mirrored ? n_ - k0 : k0;
      const T conj = mirrored ? T(-1) : T(1);
      const T* __restrict er_row = er + kk * ld;
      const T* __restrict ei_row = ei + kk * ld;
      const T* __restrict or_row = orr + kk * ld;
      const T* __restrict oi_row = oi + kk * ld;
      T* __restrict dr = zr + k0 * ld;
      T* __restrict di = zi + k0 * ld;
#pragma omp simd
      for (int64_t lane = 0; lane < ld; ++lane) {
        dr[lane] = er_row[lane] - conj * oi_row[lane];
        di[lane] = conj * ei_row[lane] + or_row[lane];
      }
    }
    fft_.transform(zr, zi, ld, work, true);
    const bool even_start = (col0 & 1) == 0;
    for (int64_t r = 0; r < rows; ++r) {
      const T* sr = zr + (row0 + r) * ld;
      const T* si = zi + (row0 + r) * ld;
      T* __restrict dst = y + r * y_stride;
      const T* __restrict a = even_start ? sr : si;      // source of output columns 0, 2, 4, ...
      const T* __restrict b = even_start ? si : sr + 1;  // and of columns 1, 3, 5, ...
      for (int64_t j = 0; j < (cols + 1) / 2; ++j) dst[2 * j] = scale * a[j];
      for (int64_t j = 0; j < cols / 2; ++j) dst[2 * j + 1] = scale * b[j];
    }
  }

 private:
  LaneFFT<T> fft_;
  int64_t n_, half_, ld_, pair_ld_;
};

// acc += scale * a * b (Conj: a * conj(b)) over n complex values in split storage.
template <bool Conj, typename T>
inline void multiply_accumulate(T* __restrict acc_re, T* __restrict acc_im, const T* __restrict a_re,
                                const T* __restrict a_im, const T* __restrict b_re, const T* __restrict b_im, T scale,
                                int64_t n) {
  const T sign = Conj ? T(-1) : T(1);
#pragma omp simd
  for (int64_t e = 0; e < n; ++e) {
    const T br = b_re[e], bi = sign * b_im[e];
    acc_re[e] += scale * (a_re[e] * br - a_im[e] * bi);
    acc_im[e] += scale * (a_re[e] * bi + a_im[e] * br);
  }
}

}  // namespace fft
}  // namespace handops
