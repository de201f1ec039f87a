// The scalar variant of the direct correlation (direct_correlation_kernel.h), with the build's own
// flags: the only one on other architectures, and HANDOPS_CPU_CAPABILITY=default on x86-64.
#define HANDOPS_CPU_CAPABILITY cpu_default
#define HANDOPS_CPU_CAPABILITY_DEFAULT
#include "cpu/direct_correlation_kernel.h"
