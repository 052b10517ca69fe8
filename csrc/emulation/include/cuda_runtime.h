// The CUDA emulation's stand-in for <cuda_runtime.h> (see ../cuda.h).
#pragma once
#include "../cuda.h"
