// gru_cell.cu compiled by the host compiler for the CUDA emulation (csrc/emulation/include first on the include path).
#include "../gru_cell.cu"
