// See cpu_capability.h.
#include "cpu/cpu_capability.h"

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>

namespace handops {

const char* cpu_capability_name(CpuCapability capability) {
  switch (capability) {
    case CpuCapability::kAvx512:
      return "avx512";
    case CpuCapability::kAvx2:
      return "avx2";
    default:
      return "default";
  }
}

bool parse_cpu_capability(const char* name, CpuCapability* capability) {
  char lower[16] = {0};
  const size_t n = std::strlen(name);
  if (n >= sizeof(lower)) return false;
  for (size_t i = 0; i < n; ++i) lower[i] = char(std::tolower(static_cast<unsigned char>(name[i])));
  for (CpuCapability c : {CpuCapability::kDefault, CpuCapability::kAvx2, CpuCapability::kAvx512}) {
    if (std::strcmp(lower, cpu_capability_name(c)) == 0) {
      *capability = c;
      return true;
    }
  }
  return false;
}

CpuCapability supported_cpu_capability() {
  static const CpuCapability supported = [] {
#if HANDOPS_X86 && (defined(__GNUC__) || defined(__clang__))
    // libgcc / compiler-rt check the CPUID bits and that the OS saves the registers (XGETBV).
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return CpuCapability::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuCapability::kAvx2;
#endif
    return CpuCapability::kDefault;
  }();
  return supported;
}

namespace {

CpuCapability initial_capability() {
  CpuCapability chosen = supported_cpu_capability(), requested;
  const char* env = std::getenv("HANDOPS_CPU_CAPABILITY");
  if (env != nullptr && *env != '\0' && parse_cpu_capability(env, &requested) && int(requested) < int(chosen)) chosen = requested;
  return chosen;
}

std::atomic<int>& current() {
  static std::atomic<int> value{int(initial_capability())};
  return value;
}

// Chosen when the extension loads, not at the first call, so that the environment is read once.
[[maybe_unused]] const int kInitialised = current().load();

}  // namespace

CpuCapability cpu_capability() { return CpuCapability(current().load(std::memory_order_relaxed)); }

bool set_cpu_capability(CpuCapability capability) {
  if (int(capability) > int(supported_cpu_capability())) return false;
  current().store(int(capability));
  return true;
}

}  // namespace handops
