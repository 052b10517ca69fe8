// The CUDA emulation's stand-in for <cuda_fp16.h> (see ../cuda.h).
#pragma once
#include "../cuda.h"
