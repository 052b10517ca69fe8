// The CUDA emulation's stand-in for <cuda_bf16.h> (see ../cuda.h).
#pragma once
#include "../cuda.h"
