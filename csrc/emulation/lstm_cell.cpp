// lstm_cell.cu compiled by the host compiler for the CUDA emulation (csrc/emulation/include first on the include path).
#include "../lstm_cell.cu"
