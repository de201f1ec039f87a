// Which instruction set the hot kernels use, chosen once at load time, as ATen's CPU capability
// dispatch does. The portable build (setup.py) compiles the extension for AVX2 + FMA and the kernels
// with an AVX-512 variant (direct_correlation_{avx2,avx512}.cpp) once per instruction set;
// cpu_capability() is the best variant this CPU supports, lowered by the environment variable
// HANDOPS_CPU_CAPABILITY=default|avx2|avx512 (read once, when the extension loads), so that every
// variant can be tested on one machine. handops.show_config() reports it.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#define HANDOPS_X86 1
#else
#define HANDOPS_X86 0
#endif

namespace handops {

enum class CpuCapability : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

// "default", "avx2" or "avx512".
const char* cpu_capability_name(CpuCapability capability);
// Parses a name as above (any case); false for anything else.
bool parse_cpu_capability(const char* name, CpuCapability* capability);
// The best variant this CPU (and its operating system) supports.
CpuCapability supported_cpu_capability();
// The variant in use: min(supported, HANDOPS_CPU_CAPABILITY) unless set_cpu_capability changed it.
CpuCapability cpu_capability();
// Selects a variant (tests); false, changing nothing, if the CPU does not support it.
bool set_cpu_capability(CpuCapability capability);

}  // namespace handops
