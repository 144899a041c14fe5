// Device helpers shared by the kernels: launch sizing, warp reductions,
// Ampere-style async copies into shared memory.
#ifndef MODAMBA_KERNELS_DEVICE_UTILS_CUH_
#define MODAMBA_KERNELS_DEVICE_UTILS_CUH_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace modamba::cuda {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

__host__ __device__ inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ inline int64_t Min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ inline int64_t Max64(int64_t a, int64_t b) { return a > b ? a : b; }

// base[i] = v, as fp32 or rounded to bf16 (an OutView's element).
__device__ __forceinline__ void StoreOut(void* base, bool bf16, int64_t i, float v) {
  if (bf16) {
    static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v);
  } else {
    static_cast<float*>(base)[i] = v;
  }
}

// A grid of at most `max_blocks` blocks for a grid-stride loop over n items.
inline unsigned GridFor(int64_t n, int threads, int64_t max_blocks = 4096) {
  int64_t blocks = CeilDiv(n, threads);
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks < max_blocks ? blocks : max_blocks);
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ double WarpSum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sum over the block, same order every run; every thread gets the result.
// `shared` holds at least blockDim.x / 32 values. Ends with a barrier-free
// read, so back-to-back calls need a __syncthreads() between them.
template <typename T>
__device__ __forceinline__ T BlockSum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = WarpSum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = 0;
  for (int i = 0; i < warps; ++i) total += shared[i];
  return total;
}

// e^x as one exp2 on the special-function unit, results below 2^-126 flushed
// to zero (__expf keeps them, at three more instructions per call).
__device__ __forceinline__ float ExpFtz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x * kLog2e));
  return y;
}

// 1 / (1 + e^-x) through the special-function unit's reciprocal (~2 ulp).
__device__ __forceinline__ float Sigmoid(float x) { return __fdividef(1.f, 1.f + ExpFtz(-x)); }

// log(1 + e^x) = max(x, 0) + log1p(e^-|x|), without overflow and accurate for
// very negative x too (~4 ulp), in ~17 instructions and no branch (log1pf
// has ~35 and branches, a fifth of the scan forward's time). For t in [0, 1],
// log1p(t) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...) with s = t / (2 + t)
// <= 1/3; the terms past s^14 are below 2e-9 of the sum. NaN stays NaN.
__device__ __forceinline__ float Softplus(float x) {
  const float t = ExpFtz(-fabsf(x));
  const float s = __fdividef(t, 2.f + t), z = s * s;
  float p = 1.f / 15;
  p = fmaf(p, z, 1.f / 13);
  p = fmaf(p, z, 1.f / 11);
  p = fmaf(p, z, 1.f / 9);
  p = fmaf(p, z, 1.f / 7);
  p = fmaf(p, z, 1.f / 5);
  p = fmaf(p, z, 1.f / 3);
  p = fmaf(p, z, 1.f);
  return fmaxf(x, 0.f) + 2.f * s * p;
}

// The row holding sequence position n: rows[n] under a row map
// (core/backend.h), else n. Kernels take kMapped as a template argument, so
// the unmapped path is unchanged. The map is read-only for a kernel's life,
// hence the read-only cache.
template <bool kMapped>
__device__ __forceinline__ int64_t RowOf(const int32_t* rows, int64_t n) {
  if constexpr (kMapped) {
    return __ldg(rows + n);
  } else {
    return n;
  }
}

// Runs f(std::true_type) when there is a row map, else f(std::false_type):
// the launch-side choice of kMapped.
template <typename F>
void DispatchRowMap(const int32_t* rows, F&& f) {
  if (rows != nullptr) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// ---- cp.async (sm_80+): global -> shared without staging in registers ----
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void CpAsync4(void* smem, const void* gmem) {
  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

}  // namespace modamba::cuda

#endif  // MODAMBA_KERNELS_DEVICE_UTILS_CUH_
