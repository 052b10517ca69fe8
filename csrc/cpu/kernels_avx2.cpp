// The CPU kernels for x86-64 CPUs with AVX2 and FMA (setup.py: -mavx2 -mfma -mf16c, CPU_CAPABILITY=AVX2).
#include "kernels.h"
