// Glue: fill, axpy, scale, sum of squares, fp32 -> bf16, and the scratch pool.
#include <cuda_bf16.h>

#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {

Scratch::~Scratch() {
  for (void* p : ptrs_) CUDA_CHECK(cudaFreeAsync(p, stream_));
}

void* Scratch::Alloc(size_t bytes) {
  void* p = nullptr;
  CUDA_CHECK(cudaMallocAsync(&p, bytes == 0 ? 16 : bytes, stream_));
  ptrs_.push_back(p);
  return p;
}

namespace {

// 2-D launch over a strided matrix: blockIdx.y strides rows, x covers columns.
dim3 Grid2D(int64_t rows, int64_t cols, int threads) {
  int64_t gx = CeilDiv(cols, threads);
  int64_t gy = rows < 65535 ? rows : 65535;
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy < 1 ? 1 : gy));
}

template <typename T>
__global__ void FillKernel(T* data, int64_t rows, int64_t cols, int64_t ld, T value) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) data[r * ld + c] = value;
}

__global__ void AxpyKernel(float alpha, const float* x, int64_t ldx, float* y, int64_t ldy,
                           int64_t rows, int64_t cols) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) y[r * ldy + c] += alpha * x[r * ldx + c];
}

__global__ void ScaleKernel(float alpha, float* x, int64_t ld, int64_t rows, int64_t cols) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) x[r * ld + c] *= alpha;
}

constexpr int kSumBlocks = 512;
constexpr int kSumThreads = 256;

// One view of a sum of squares and the blocks it gets: [first, first + blocks).
struct SumView {
  const float* x;
  int64_t ld, rows, cols;
  int first, blocks;
};

// Every view in one launch: block b finds its view, then strides over the
// view's elements (row-major) with the view's blocks, so a single long row
// (a flat FSDP shard) spreads over many; partial[b] is block b's fp64 total.
// The order of the sums is fixed: the result is reproducible.
__global__ void SumSquaresKernel(const SumView* views, int num_views, double* partial) {
  __shared__ double shared[kSumThreads / 32];
  int lo = 0, hi = num_views - 1;  // the last view with first <= blockIdx.x
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (views[mid].first <= static_cast<int>(blockIdx.x)) lo = mid; else hi = mid - 1;
  }
  const SumView v = views[lo];
  double acc = 0;
  const int64_t n = v.rows * v.cols, stride = int64_t(v.blocks) * blockDim.x;
  const int64_t i0 = (blockIdx.x - v.first) * int64_t(blockDim.x) + threadIdx.x;
  if (v.rows == 1 || v.ld == v.cols) {  // contiguous: no 64-bit division per element
    for (int64_t i = i0; i < n; i += stride) {
      const double e = v.x[i];
      acc += e * e;
    }
  } else {
    for (int64_t i = i0; i < n; i += stride) {
      const int64_t r = i / v.cols;
      const double e = v.x[r * v.ld + (i - r * v.cols)];
      acc += e * e;
    }
  }
  double total = BlockSum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void SumPartialsKernel(const double* partial, int n, double* out) {
  __shared__ double shared[kSumThreads / 32];
  double acc = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  double total = BlockSum(acc, shared);
  if (threadIdx.x == 0) *out = total;
}

__global__ void ToBf16Kernel(const float* src, int64_t n, __nv_bfloat16* dst) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    dst[i] = __float2bfloat16_rn(src[i]);
  }
}

// Vector path: 4 floats in, 4 bf16 out per step (both sides 8-byte aligned).
__global__ void ToBf16Kernel4(const float4* src, int64_t n4, uint2* dst) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4; i += stride) {
    float4 v = src[i];
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    uint2 out;
    out.x = *reinterpret_cast<unsigned*>(&lo);
    out.y = *reinterpret_cast<unsigned*>(&hi);
    dst[i] = out;
  }
}

__global__ void UniformKernel(float* data, int64_t n, uint64_t seed, float lo, float hi) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(i + 1);  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    data[i] = lo + (hi - lo) * static_cast<float>(z >> 40) * (1.f / 16777216.f);
  }
}

}  // namespace

void FillUniform(float* data, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t stream) {
  if (n == 0) return;
  UniformKernel<<<GridFor(n, 256, 8192), 256, 0, stream>>>(data, n, seed, lo, hi);
  CUDA_CHECK_LAUNCH();
}

void Fill(void* data, int64_t rows, int64_t cols, int64_t ld, int elem_size, uint64_t bits,
          cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  if (bits == 0) {  // zeros (gradient buffers every step): the driver's memset runs near the copy rate
    const size_t row_bytes = size_t(cols) * elem_size;
    CUDA_CHECK(cudaMemset2DAsync(data, rows == 1 ? row_bytes : size_t(ld) * elem_size, 0,
                                 row_bytes, size_t(rows), stream));
    return;
  }
  constexpr int kThreads = 256;
  dim3 grid = Grid2D(rows, cols, kThreads);
  switch (elem_size) {
    case 1:
      FillKernel<<<grid, kThreads, 0, stream>>>(static_cast<uint8_t*>(data), rows, cols, ld,
                                                static_cast<uint8_t>(bits));
      break;
    case 2:
      FillKernel<<<grid, kThreads, 0, stream>>>(static_cast<uint16_t*>(data), rows, cols, ld,
                                                static_cast<uint16_t>(bits));
      break;
    case 4:
      FillKernel<<<grid, kThreads, 0, stream>>>(static_cast<uint32_t*>(data), rows, cols, ld,
                                                static_cast<uint32_t>(bits));
      break;
    case 8:
      FillKernel<<<grid, kThreads, 0, stream>>>(static_cast<uint64_t*>(data), rows, cols, ld, bits);
      break;
    default:
      LOG(FATAL) << "Fill: element size " << elem_size;
  }
  CUDA_CHECK_LAUNCH();
}

void Axpy(float alpha, ConstView x, View y, cudaStream_t stream) {
  if (x.rows == 0 || x.cols == 0) return;
  constexpr int kThreads = 256;
  AxpyKernel<<<Grid2D(x.rows, x.cols, kThreads), kThreads, 0, stream>>>(alpha, x.data, x.ld, y.data,
                                                                        y.ld, x.rows, x.cols);
  CUDA_CHECK_LAUNCH();
}

void Scale(float alpha, View x, cudaStream_t stream) {
  if (x.rows == 0 || x.cols == 0) return;
  constexpr int kThreads = 256;
  ScaleKernel<<<Grid2D(x.rows, x.cols, kThreads), kThreads, 0, stream>>>(alpha, x.data, x.ld,
                                                                         x.rows, x.cols);
  CUDA_CHECK_LAUNCH();
}

double SumSquares(const std::vector<ConstView>& xs, cudaStream_t stream) {
  // Each view gets as many blocks as its size fills (at most kSumBlocks);
  // block counts depend only on the sizes: a fixed order.
  std::vector<SumView> views;
  int total = 0;
  for (const ConstView& x : xs) {
    if (x.rows * x.cols == 0) continue;
    const int blocks = static_cast<int>(GridFor(x.rows * x.cols, kSumThreads * 4, kSumBlocks));
    views.push_back({x.data, x.ld, x.rows, x.cols, total, blocks});
    total += blocks;
  }
  if (total == 0) return 0;
  Scratch scratch(stream);
  auto* dev_views = scratch.Alloc<SumView>(views.size());
  double* partial = scratch.Alloc<double>(total + 1);
  // `views` outlives the copy: the result is waited for below.
  CUDA_CHECK(cudaMemcpyAsync(dev_views, views.data(), views.size() * sizeof(SumView),
                             cudaMemcpyHostToDevice, stream));
  SumSquaresKernel<<<total, kSumThreads, 0, stream>>>(dev_views, static_cast<int>(views.size()),
                                                      partial);
  CUDA_CHECK_LAUNCH();
  SumPartialsKernel<<<1, kSumThreads, 0, stream>>>(partial, total, partial + total);
  CUDA_CHECK_LAUNCH();
  double result = 0;
  CUDA_CHECK(cudaMemcpyAsync(&result, partial + total, sizeof(double), cudaMemcpyDeviceToHost,
                             stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return result;
}

void ConvertToBf16(const float* src, int64_t n, __nv_bfloat16* dst, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  if (n % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(dst) % 8 == 0) {
    ToBf16Kernel4<<<GridFor(n / 4, kThreads, 8192), kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(src), n / 4, reinterpret_cast<uint2*>(dst));
  } else {
    ToBf16Kernel<<<GridFor(n, kThreads, 8192), kThreads, 0, stream>>>(src, n, dst);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace modamba::cuda
