// What the launch planners need to know of the current device (host code only, no torch headers).
#pragma once

#include <cuda_runtime.h>

namespace s2s_fast {

// Multiprocessor count and opt-in shared memory per block of the current device (queried per call: cheap).
struct DeviceLimits {
    int multiprocessors = 0;
    int max_shared_per_block = 0;
};

inline cudaError_t current_device_limits(DeviceLimits* limits) {
    int device = 0;
    cudaError_t status = cudaGetDevice(&device);
    if (status != cudaSuccess) return status;
    status = cudaDeviceGetAttribute(&limits->multiprocessors, cudaDevAttrMultiProcessorCount, device);
    if (status != cudaSuccess) return status;
    return cudaDeviceGetAttribute(&limits->max_shared_per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
}

}  // namespace s2s_fast
