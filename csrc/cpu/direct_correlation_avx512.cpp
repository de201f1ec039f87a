// The AVX-512 variant of the direct correlation (direct_correlation_kernel.h); chosen at run time by
// cpu_capability.cpp on CPUs with AVX-512 F/VL/BW/DQ. x86-64 only.
#if defined(__x86_64__) || defined(_M_X64)
#define HANDOPS_CPU_CAPABILITY cpu_avx512
#define HANDOPS_CPU_CAPABILITY_AVX512
#include "cpu/direct_correlation_kernel.h"
#endif
