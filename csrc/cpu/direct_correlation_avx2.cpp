// The AVX2 + FMA variant of the direct correlation (direct_correlation_kernel.h): the portable build's
// baseline. x86-64 only.
#if defined(__x86_64__) || defined(_M_X64)
#define HANDOPS_CPU_CAPABILITY cpu_avx2
#define HANDOPS_CPU_CAPABILITY_AVX2
#include "cpu/direct_correlation_kernel.h"
#endif
