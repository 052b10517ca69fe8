// The CUDA emulation's stand-in for <cooperative_groups.h> (see ../cuda.h).
#pragma once
#include "../cuda.h"
