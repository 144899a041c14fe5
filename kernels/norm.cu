// RMSNorm: y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps), the
// forward optionally adding a residual skip into x first. One warp per row;
// the weight gradient is summed per block in shared memory and then across
// blocks in a fixed order, so it is bitwise reproducible.
#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxBackwardBlocks = 256;

// With `add` (else null), x += add first: the sum is stored back into x and
// normed in the same pass. The sum is Axpy's (x + 1 * add in fp32) and the
// squares are summed in the same order as without `add`, so the results are
// bitwise those of Axpy then the plain forward.
__global__ void RmsNormForwardKernel(float* x, int64_t ldx, const float* add, int64_t ldadd,
                                     int64_t rows, int64_t d, const float* w, float eps, void* y,
                                     int64_t ldy, bool y_bf16, float* rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t r = blockIdx.x * int64_t(kWarps) + (threadIdx.x >> 5);
  if (r >= rows) return;
  float* xr = x + r * ldx;
  float ss = 0;
  for (int64_t j = lane; j < d; j += 32) {
    float v = xr[j];
    if (add != nullptr) {
      v += add[r * ldadd + j];
      xr[j] = v;  // re-read below by this same lane
    }
    ss += v * v;
  }
  ss = WarpSum(ss);
  const float rs = rsqrtf(ss / float(d) + eps);
  if (lane == 0) rstd[r] = rs;
  for (int64_t j = lane; j < d; j += 32) StoreOut(y, y_bf16, r * ldy + j, xr[j] * rs * w[j]);
}

// Warp w of block b takes rows b * kWarps + w + k * gridDim.x * kWarps.
// partial[b][j] receives the block's share of dw[j].
__global__ void RmsNormBackwardKernel(const float* x, int64_t ldx, int64_t rows, int64_t d,
                                      const float* w, const float* rstd, const float* dy,
                                      int64_t lddy, float* dx, int64_t lddx, float* partial) {
  extern __shared__ float sdw[];  // [kWarps][d]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* my_dw = sdw + warp * d;
  for (int64_t j = lane; j < d; j += 32) my_dw[j] = 0;
  for (int64_t r = blockIdx.x * int64_t(kWarps) + warp; r < rows;
       r += int64_t(gridDim.x) * kWarps) {
    const float* xr = x + r * ldx;
    const float* dyr = dy + r * lddy;
    float dot = 0;
    for (int64_t j = lane; j < d; j += 32) dot += w[j] * dyr[j] * xr[j];
    dot = WarpSum(dot);
    const float rs = rstd[r];
    const float k = rs * rs * rs * dot / float(d);
    float* dxr = dx + r * lddx;
    for (int64_t j = lane; j < d; j += 32) {
      dxr[j] += rs * w[j] * dyr[j] - k * xr[j];
      my_dw[j] += dyr[j] * xr[j] * rs;
    }
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float s = 0;
    for (int i = 0; i < kWarps; ++i) s += sdw[i * d + j];
    partial[blockIdx.x * d + j] = s;
  }
}

// The same for rows of d = 128 N aligned floats: a lane owns N float4
// columns, keeps its dw in registers and reads each row once with 16-byte
// loads (the general kernel re-reads dy and x and sums dw in shared memory).
template <int N>
__global__ void RmsNormBackwardVecKernel(const float* x, int64_t ldx, int64_t rows,
                                         const float* w, const float* rstd, const float* dy,
                                         int64_t lddy, float* dx, int64_t lddx, float* partial) {
  constexpr int64_t d = 128 * N;
  __shared__ float sdw[kWarps][d];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float4 wv[N], dwv[N];
#pragma unroll
  for (int i = 0; i < N; ++i) {
    wv[i] = reinterpret_cast<const float4*>(w)[lane + 32 * i];
    dwv[i] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  for (int64_t r = blockIdx.x * int64_t(kWarps) + warp; r < rows;
       r += int64_t(gridDim.x) * kWarps) {
    const float4* xr = reinterpret_cast<const float4*>(x + r * ldx);
    const float4* dyr = reinterpret_cast<const float4*>(dy + r * lddy);
    float4 xv[N], gv[N];
    float dot = 0;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      xv[i] = xr[lane + 32 * i];
      gv[i] = dyr[lane + 32 * i];
      dot += wv[i].x * gv[i].x * xv[i].x + wv[i].y * gv[i].y * xv[i].y +
             wv[i].z * gv[i].z * xv[i].z + wv[i].w * gv[i].w * xv[i].w;
    }
    dot = WarpSum(dot);
    const float rs = rstd[r];
    const float k = rs * rs * rs * dot / float(d);
    float4* dxr = reinterpret_cast<float4*>(dx + r * lddx);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      float4 o = dxr[lane + 32 * i];
      o.x += rs * wv[i].x * gv[i].x - k * xv[i].x;
      o.y += rs * wv[i].y * gv[i].y - k * xv[i].y;
      o.z += rs * wv[i].z * gv[i].z - k * xv[i].z;
      o.w += rs * wv[i].w * gv[i].w - k * xv[i].w;
      dxr[lane + 32 * i] = o;
      dwv[i].x += gv[i].x * xv[i].x * rs;
      dwv[i].y += gv[i].y * xv[i].y * rs;
      dwv[i].z += gv[i].z * xv[i].z * rs;
      dwv[i].w += gv[i].w * xv[i].w * rs;
    }
  }
#pragma unroll
  for (int i = 0; i < N; ++i) reinterpret_cast<float4*>(sdw[warp])[lane + 32 * i] = dwv[i];
  __syncthreads();
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float s = 0;
    for (int i = 0; i < kWarps; ++i) s += sdw[i][j];
    partial[blockIdx.x * d + j] = s;
  }
}

// The same for wider aligned rows (d = 4 D4, past the registers of the
// kernel above): 16-byte loads, each lane's dw columns in shared memory, and
// x and dy read twice per row (the second time from the cache).
__global__ void RmsNormBackwardWideKernel(const float* x, int64_t ldx, int64_t rows, int64_t d4,
                                          const float* w, const float* rstd, const float* dy,
                                          int64_t lddy, float* dx, int64_t lddx, float* partial) {
  extern __shared__ float4 sdw4[];  // [kWarps][d4]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4* my_dw = sdw4 + warp * d4;
  for (int64_t j = lane; j < d4; j += 32) my_dw[j] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int64_t r = blockIdx.x * int64_t(kWarps) + warp; r < rows;
       r += int64_t(gridDim.x) * kWarps) {
    const float4* xr = reinterpret_cast<const float4*>(x + r * ldx);
    const float4* dyr = reinterpret_cast<const float4*>(dy + r * lddy);
    float dot = 0;
    for (int64_t j = lane; j < d4; j += 32) {
      const float4 xv = xr[j], gv = dyr[j], wv = w4[j];
      dot += wv.x * gv.x * xv.x + wv.y * gv.y * xv.y + wv.z * gv.z * xv.z + wv.w * gv.w * xv.w;
    }
    dot = WarpSum(dot);
    const float rs = rstd[r];
    const float k = rs * rs * rs * dot / float(4 * d4);
    float4* dxr = reinterpret_cast<float4*>(dx + r * lddx);
    for (int64_t j = lane; j < d4; j += 32) {
      const float4 xv = xr[j], gv = dyr[j], wv = w4[j];
      float4 o = dxr[j], dw = my_dw[j];
      o.x += rs * wv.x * gv.x - k * xv.x;
      o.y += rs * wv.y * gv.y - k * xv.y;
      o.z += rs * wv.z * gv.z - k * xv.z;
      o.w += rs * wv.w * gv.w - k * xv.w;
      dxr[j] = o;
      dw.x += gv.x * xv.x * rs;
      dw.y += gv.y * xv.y * rs;
      dw.z += gv.z * xv.z * rs;
      dw.w += gv.w * xv.w * rs;
      my_dw[j] = dw;
    }
  }
  __syncthreads();
  const float* sdw = reinterpret_cast<const float*>(sdw4);
  for (int64_t j = threadIdx.x; j < 4 * d4; j += blockDim.x) {
    float s = 0;
    for (int i = 0; i < kWarps; ++i) s += sdw[i * 4 * d4 + j];
    partial[blockIdx.x * 4 * d4 + j] = s;
  }
}

// dw[j] += sum over blocks of partial[b][j], in block order.
__global__ void ColumnSumKernel(const float* partial, int blocks, int64_t d, float* dw) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= d) return;
  float s = 0;
  for (int b = 0; b < blocks; ++b) s += partial[b * d + j];
  dw[j] += s;
}

}  // namespace

void RmsNormForward(ConstView x, const float* w, float eps, OutView y, float* rstd,
                    cudaStream_t stream) {
  // With no `add` the kernel only reads x.
  const View in{const_cast<float*>(x.data), x.rows, x.cols, x.ld};
  AddRmsNormForward(in, ConstView(), w, eps, y, rstd, stream);
}

void AddRmsNormForward(View x, ConstView add, const float* w, float eps, OutView y, float* rstd,
                       cudaStream_t stream) {
  if (x.rows == 0) return;
  const unsigned blocks = static_cast<unsigned>(CeilDiv(x.rows, kWarps));
  RmsNormForwardKernel<<<blocks, kThreads, 0, stream>>>(x.data, x.ld, add.data, add.ld, x.rows,
                                                        x.cols, w, eps, y.data, y.ld, y.bf16,
                                                        rstd);
  CUDA_CHECK_LAUNCH();
}

void RmsNormBackward(ConstView x, const float* w, const float* rstd, ConstView dy, View dx,
                     float* dw, cudaStream_t stream) {
  if (x.rows == 0) return;
  const int64_t d = x.cols;
  const size_t smem = sizeof(float) * kWarps * d;
  CHECK_LE(smem, 200u * 1024) << "RMSNorm backward: width " << d << " too large";
  const int blocks =
      static_cast<int>(std::min<int64_t>(CeilDiv(x.rows, kWarps), kMaxBackwardBlocks));
  Scratch scratch(stream);
  float* partial = scratch.Alloc<float>(int64_t(blocks) * d);
  const bool aligned = x.ld % 4 == 0 && dy.ld % 4 == 0 && dx.ld % 4 == 0 &&
                       reinterpret_cast<uintptr_t>(x.data) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(dy.data) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(dx.data) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(w) % 16 == 0;
  auto vec = [&](auto n) {
    RmsNormBackwardVecKernel<decltype(n)::value><<<blocks, kThreads, 0, stream>>>(
        x.data, x.ld, x.rows, w, rstd, dy.data, dy.ld, dx.data, dx.ld, partial);
  };
  if (aligned && d % 128 == 0 && d <= 128 * 6) {  // x, dy, w, dw: 16 N registers each
    switch (d / 128) {
      case 1: vec(std::integral_constant<int, 1>()); break;
      case 2: vec(std::integral_constant<int, 2>()); break;
      case 3: vec(std::integral_constant<int, 3>()); break;
      case 4: vec(std::integral_constant<int, 4>()); break;
      case 5: vec(std::integral_constant<int, 5>()); break;
      default: vec(std::integral_constant<int, 6>()); break;
    }
    CUDA_CHECK_LAUNCH();
    ColumnSumKernel<<<GridFor(d, 256), 256, 0, stream>>>(partial, blocks, d, dw);
    CUDA_CHECK_LAUNCH();
    return;
  }
  auto launch = [&](auto kernel, int64_t width) {
    if (smem > 48 * 1024) {
      CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem)));
    }
    kernel<<<blocks, kThreads, smem, stream>>>(x.data, x.ld, x.rows, width, w, rstd, dy.data,
                                               dy.ld, dx.data, dx.ld, partial);
    CUDA_CHECK_LAUNCH();
  };
  if (aligned && d % 4 == 0) {
    launch(RmsNormBackwardWideKernel, d / 4);
  } else {
    launch(RmsNormBackwardKernel, d);
  }
  ColumnSumKernel<<<GridFor(d, 256), 256, 0, stream>>>(partial, blocks, d, dw);
  CUDA_CHECK_LAUNCH();
}

}  // namespace modamba::cuda
