// Cross-entropy with per-row weights: one block per row, one read for the
// online max / sum of exponentials and one read + write for the gradient,
// which may overwrite the logits in place (each element is read before the
// same thread writes it).
#include <cfloat>

#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {
namespace {

constexpr int kThreads = 512;

struct MaxSum {
  float m, s;
};

__device__ __forceinline__ MaxSum Combine(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -FLT_MAX) return {m, 0.f};
  return {m, a.s * __expf(a.m - m) + b.s * __expf(b.m - m)};
}

__device__ __forceinline__ void Push(MaxSum& acc, float x) {
  if (x > acc.m) {
    acc.s = acc.s * __expf(acc.m - x) + 1.f;
    acc.m = x;
  } else {
    acc.s += __expf(x - acc.m);
  }
}

template <bool kVec>
__global__ void CrossEntropyKernel(const float* logits, int64_t ldl, int64_t v,
                                   const int32_t* targets, const float* weight, float* losses,
                                   float* dlogits, int64_t ldd, int* error) {
  __shared__ MaxSum warp_part[kThreads / 32];
  __shared__ float target_logit;
  const int64_t row = blockIdx.x;
  const float* x = logits + row * ldl;
  float* dx = dlogits + row * ldd;
  const float w = weight[row];
  const int32_t target = targets[row];
  const bool valid = target >= 0 && target < v;
  if (!valid && threadIdx.x == 0) *error = 1;
  if (w == 0.f || !valid) {
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) dx[j] = 0.f;
    if (threadIdx.x == 0) losses[row] = 0.f;
    return;
  }
  MaxSum acc{-FLT_MAX, 0.f};
  if constexpr (kVec) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int64_t j = threadIdx.x; j < v / 4; j += blockDim.x) {
      float4 q = x4[j];
      Push(acc, q.x);
      Push(acc, q.y);
      Push(acc, q.z);
      Push(acc, q.w);
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) Push(acc, x[j]);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(kFullMask, acc.m, o), __shfl_xor_sync(kFullMask, acc.s, o)};
    acc = Combine(acc, other);
  }
  if ((threadIdx.x & 31) == 0) warp_part[threadIdx.x >> 5] = acc;
  if (threadIdx.x == 0) target_logit = x[target];
  __syncthreads();
  MaxSum total = warp_part[0];
  for (int i = 1; i < kThreads / 32; ++i) total = Combine(total, warp_part[i]);
  const float lse = total.m + logf(total.s);
  if (threadIdx.x == 0) losses[row] = lse - target_logit;
  if constexpr (kVec) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* d4 = reinterpret_cast<float4*>(dx);
    for (int64_t j = threadIdx.x; j < v / 4; j += blockDim.x) {
      float4 q = x4[j];
      q.x = w * __expf(q.x - lse);
      q.y = w * __expf(q.y - lse);
      q.z = w * __expf(q.z - lse);
      q.w = w * __expf(q.w - lse);
      d4[j] = q;
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) dx[j] = w * __expf(x[j] - lse);
  }
  __syncthreads();  // the target's element is written by some thread above
  if (threadIdx.x == 0) dx[target] -= w;
}

}  // namespace

void CrossEntropy(ConstView logits, const int32_t* targets, const float* weight, float* losses,
                  View dlogits, int* error, cudaStream_t stream) {
  if (logits.rows == 0) return;
  CHECK_LE(logits.rows, 2147483647) << "cross-entropy: too many rows";
  const bool vec = logits.cols % 4 == 0 && logits.ld % 4 == 0 && dlogits.ld % 4 == 0 &&
                   reinterpret_cast<uintptr_t>(logits.data) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dlogits.data) % 16 == 0;
  const unsigned grid = static_cast<unsigned>(logits.rows);
  if (vec) {
    CrossEntropyKernel<true><<<grid, kThreads, 0, stream>>>(logits.data, logits.ld, logits.cols,
                                                            targets, weight, losses, dlogits.data,
                                                            dlogits.ld, error);
  } else {
    CrossEntropyKernel<false><<<grid, kThreads, 0, stream>>>(logits.data, logits.ld, logits.cols,
                                                             targets, weight, losses, dlogits.data,
                                                             dlogits.ld, error);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace modamba::cuda
