// additive_attention.cu compiled by the host compiler for the CUDA emulation (csrc/emulation/include first on the include path).
#include "../additive_attention.cu"
