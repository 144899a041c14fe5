// Cross-entropy with per-row weights: one block per row, one read for the
// online max / sum of exponentials and one read + write for the gradient,
// which may overwrite the logits in place (each element is read before the
// same thread writes it).
#include <cuda_bf16.h>

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

// Logits as floats, 16 bytes at a time: 4 fp32 or 8 bf16 values.
template <typename T>
struct Vec16;
template <>
struct Vec16<float> {
  static constexpr int kN = 4;
  __device__ static void Unpack(uint4 q, float* f) {
    const float4 v = *reinterpret_cast<float4*>(&q);
    f[0] = v.x, f[1] = v.y, f[2] = v.z, f[3] = v.w;
  }
  __device__ static uint4 Pack(const float* f) {
    float4 v{f[0], f[1], f[2], f[3]};
    return *reinterpret_cast<uint4*>(&v);
  }
};
template <>
struct Vec16<__nv_bfloat16> {
  static constexpr int kN = 8;
  __device__ static void Unpack(uint4 q, float* f) {
    const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&q);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 v = __bfloat1622float2(p[i]);
      f[2 * i] = v.x, f[2 * i + 1] = v.y;
    }
  }
  __device__ static uint4 Pack(const float* f) {
    uint4 q;
    __nv_bfloat162* p = reinterpret_cast<__nv_bfloat162*>(&q);
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return q;
  }
};

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

template <typename T, bool kVec>
__global__ void CrossEntropyKernel(const T* logits, int64_t ldl, int64_t v,
                                   const int32_t* targets, const float* weight, float* losses,
                                   T* dlogits, int64_t ldd, int* error) {
  using V = Vec16<T>;
  __shared__ MaxSum warp_part[kThreads / 32];
  __shared__ float target_logit;
  const int64_t row = blockIdx.x;
  const T* x = logits + row * ldl;
  T* dx = dlogits + row * ldd;
  const float w = weight[row];
  const int32_t target = targets[row];
  const bool valid = target >= 0 && target < v;
  if (!valid && threadIdx.x == 0) *error = 1;
  if (w == 0.f || !valid) {
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) dx[j] = FromFloat<T>(0.f);
    if (threadIdx.x == 0) losses[row] = 0.f;
    return;
  }
  MaxSum acc{-FLT_MAX, 0.f};
  if constexpr (kVec) {
    const uint4* x16 = reinterpret_cast<const uint4*>(x);
    for (int64_t j = threadIdx.x; j < v / V::kN; j += blockDim.x) {
      float f[V::kN];
      V::Unpack(x16[j], f);
#pragma unroll
      for (int i = 0; i < V::kN; ++i) Push(acc, f[i]);
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) Push(acc, ToFloat(x[j]));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(kFullMask, acc.m, o), __shfl_xor_sync(kFullMask, acc.s, o)};
    acc = Combine(acc, other);
  }
  if ((threadIdx.x & 31) == 0) warp_part[threadIdx.x >> 5] = acc;
  if (threadIdx.x == 0) target_logit = ToFloat(x[target]);
  __syncthreads();
  MaxSum total = warp_part[0];
  for (int i = 1; i < kThreads / 32; ++i) total = Combine(total, warp_part[i]);
  const float lse = total.m + logf(total.s);
  if (threadIdx.x == 0) losses[row] = lse - target_logit;
  if constexpr (kVec) {
    const uint4* x16 = reinterpret_cast<const uint4*>(x);
    uint4* d16 = reinterpret_cast<uint4*>(dx);
    for (int64_t j = threadIdx.x; j < v / V::kN; j += blockDim.x) {
      float f[V::kN];
      V::Unpack(x16[j], f);
#pragma unroll
      for (int i = 0; i < V::kN; ++i) f[i] = w * __expf(f[i] - lse);
      d16[j] = V::Pack(f);
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
      dx[j] = FromFloat<T>(w * __expf(ToFloat(x[j]) - lse));
    }
  }
  __syncthreads();  // the target's element is written by some thread above
  if (threadIdx.x == 0) dx[target] = FromFloat<T>(ToFloat(dx[target]) - w);
}

template <typename T>
void LaunchCrossEntropy(const T* logits, int64_t ldl, int64_t n, int64_t v,
                        const int32_t* targets, const float* weight, float* losses, T* dlogits,
                        int64_t ldd, int* error, cudaStream_t stream) {
  if (n == 0) return;
  CHECK_LE(n, 2147483647) << "cross-entropy: too many rows";
  constexpr int kN = Vec16<T>::kN;
  const bool vec = v % kN == 0 && ldl % kN == 0 && ldd % kN == 0 &&
                   reinterpret_cast<uintptr_t>(logits) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dlogits) % 16 == 0;
  const unsigned grid = static_cast<unsigned>(n);
  if (vec) {
    CrossEntropyKernel<T, true><<<grid, kThreads, 0, stream>>>(logits, ldl, v, targets, weight,
                                                               losses, dlogits, ldd, error);
  } else {
    CrossEntropyKernel<T, false><<<grid, kThreads, 0, stream>>>(logits, ldl, v, targets, weight,
                                                                losses, dlogits, ldd, error);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void CrossEntropy(ConstView logits, const int32_t* targets, const float* weight, float* losses,
                  View dlogits, int* error, cudaStream_t stream) {
  LaunchCrossEntropy(logits.data, logits.ld, logits.rows, logits.cols, targets, weight, losses,
                     dlogits.data, dlogits.ld, error, stream);
}

void LmHeadCrossEntropyBf16(cublasHandle_t handle, ConstView h, ConstView w,
                            const int32_t* targets, const float* weight, float* losses, View dh,
                            View dw, int* error, cudaStream_t stream) {
  const int64_t n = h.rows, d = h.cols, v = w.rows;
  if (n == 0) return;
  Scratch scratch(stream);
  auto* hb = scratch.Alloc<__nv_bfloat16>(n * d);
  auto* wb = scratch.Alloc<__nv_bfloat16>(v * d);
  auto* logits = scratch.Alloc<__nv_bfloat16>(n * v);
  ConvertToBf16(h, hb, stream);
  ConvertToBf16(w, wb, stream);
  GemmBf16ToBf16(handle, false, true, n, v, d, hb, d, wb, d, logits, v);
  LaunchCrossEntropy(logits, v, n, v, targets, weight, losses, logits, v, error, stream);
  GemmBf16(handle, false, false, n, d, v, 1.f, logits, v, wb, d, 0.f, dh.data, dh.ld);
  GemmBf16(handle, true, false, v, d, n, 1.f, logits, v, hb, d, 1.f, dw.data, dw.ld);
}

}  // namespace modamba::cuda
