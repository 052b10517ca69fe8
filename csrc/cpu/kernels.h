// Every CPU kernel, for the instruction set this file is compiled for: kernels_<set>.cpp include it once each,
// compiled with CPU_CAPABILITY naming the set (capability.h).
#pragma once

#if !defined(CPU_CAPABILITY)
#error "compile the CPU kernels with -DCPU_CAPABILITY=DEFAULT, AVX2 or AVX512 (setup.py does)"
#endif

#include "additive_attention_kernels.h"
#include "lstm_layer_kernels.h"
#include "gru_layer_kernels.h"
#include "dropout_kernels.h"
#include "log_softmax_max_kernels.h"
#include "beam_candidates_kernels.h"
