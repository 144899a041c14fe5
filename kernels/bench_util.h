// Timing for the kernel benchmarks: the median of repeated runs on a
// device context's stream, taken with CUDA events.
#ifndef MODAMBA_KERNELS_BENCH_UTIL_H_
#define MODAMBA_KERNELS_BENCH_UTIL_H_

#include <functional>

#include "kernels/cuda_context.h"

namespace modamba::cuda {

// Median milliseconds of fn over `reps` runs, after `warmup` untimed runs
// (the first launches load modules and pick algorithms).
double TimeMs(DeviceContext& ctx, int reps, int warmup, const std::function<void()>& fn);

}  // namespace modamba::cuda

#endif  // MODAMBA_KERNELS_BENCH_UTIL_H_
