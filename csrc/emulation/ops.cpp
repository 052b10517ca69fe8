// The torch binding (ops.cpp) built by the host compiler against the CUDA emulation: CPU tensors, CPU dispatch key.
#include "../ops.cpp"
