// direct::correlate: calls the kernel variant of the instruction set cpu_capability() chose
// (direct_correlation_{default,avx2,avx512}.cpp), with denormals flushed for its duration.
#include "cpu/direct_correlation.h"

#include "cpu/cpu_capability.h"

namespace handops {
namespace direct {

#define HANDOPS_DECLARE_VARIANT(ns)                                                                                       \
  namespace ns {                                                                                                          \
  void correlate(const FilterView<float>&, const ImageView<float>&, float*, int64_t, int64_t, int64_t);                \
  void correlate(const FilterView<double>&, const ImageView<double>&, double*, int64_t, int64_t, int64_t);             \
  }
HANDOPS_DECLARE_VARIANT(cpu_default)
#if HANDOPS_X86
HANDOPS_DECLARE_VARIANT(cpu_avx2)
HANDOPS_DECLARE_VARIANT(cpu_avx512)
#endif
#undef HANDOPS_DECLARE_VARIANT

template <typename T>
void correlate(const PaddedFilter<T>& filter, const PaddedImage<T>& image, T* out, int64_t oh, int64_t ow, int64_t out_stride) {
  const FlushDenormals flush;
  const FilterView<T> f = filter.view();
  const ImageView<T> i = image.view();
  switch (cpu_capability()) {
#if HANDOPS_X86
    case CpuCapability::kAvx512:
      return cpu_avx512::correlate(f, i, out, oh, ow, out_stride);
    case CpuCapability::kAvx2:
      return cpu_avx2::correlate(f, i, out, oh, ow, out_stride);
#endif
    default:
      return cpu_default::correlate(f, i, out, oh, ow, out_stride);
  }
}

template void correlate<float>(const PaddedFilter<float>&, const PaddedImage<float>&, float*, int64_t, int64_t, int64_t);
template void correlate<double>(const PaddedFilter<double>&, const PaddedImage<double>&, double*, int64_t, int64_t, int64_t);

}  // namespace direct
}  // namespace handops
