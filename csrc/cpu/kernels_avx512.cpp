// The CPU kernels for x86-64 CPUs with AVX-512 F/BW/VL/DQ (setup.py: -mavx512f -mavx512bw -mavx512vl -mavx512dq
// -mfma, CPU_CAPABILITY=AVX512).
#include "kernels.h"
