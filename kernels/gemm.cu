// Matrix products through cuBLAS, and the row gather/scatter that routed
// (per-modality) projections use to run one GEMM per modality group.
#include <cuda_bf16.h>

#include <algorithm>
#include <limits>

#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {
namespace {

int AsInt(int64_t v, const char* what) {
  CHECK(v >= 0 && v <= std::numeric_limits<int>::max())
      << "gemm: " << what << " = " << v << " exceeds cuBLAS's int range";
  return static_cast<int>(v);
}

cublasComputeType_t ComputeType(MatmulPrecision p) {
  switch (p) {
    case MatmulPrecision::kFp32:
      return CUBLAS_COMPUTE_32F_PEDANTIC;
    case MatmulPrecision::kTf32:
      return CUBLAS_COMPUTE_32F_FAST_TF32;
    case MatmulPrecision::kBf16:
      return CUBLAS_COMPUTE_32F_FAST_16BF;
  }
  return CUBLAS_COMPUTE_32F;
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a
// row-major matrix read column-major is its transpose: so swap A and B and
// keep the transpose flags.
// C = alpha op(A) op(B) + beta C for k >= 1, C of any type cuBLAS takes.
void CublasGemm(cublasHandle_t handle, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                float alpha, const void* a, cudaDataType_t a_type, int64_t lda, const void* b,
                cudaDataType_t b_type, int64_t ldb, float beta, void* c, cudaDataType_t c_type,
                int64_t ldc, cublasComputeType_t compute) {
  // cuBLAS is column-major: the row-major C^T = op(B)^T op(A)^T.
  CUBLAS_CHECK(cublasGemmEx(handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                            AsInt(n, "n"), AsInt(m, "m"), AsInt(k, "k"), &alpha, b, b_type,
                            AsInt(ldb, "ldb"), a, a_type, AsInt(lda, "lda"), &beta, c, c_type,
                            AsInt(ldc, "ldc"), compute, CUBLAS_GEMM_DEFAULT));
}

void GemmEx(cublasHandle_t handle, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
            const void* a, cudaDataType_t a_type, int64_t lda, const void* b, cudaDataType_t b_type,
            int64_t ldb, float beta, float* c, int64_t ldc, cublasComputeType_t compute) {
  if (m == 0 || n == 0) return;
  cudaStream_t stream;
  CUBLAS_CHECK(cublasGetStream(handle, &stream));
  if (k == 0) {  // C = beta C; a zero beta overwrites (C may hold garbage)
    if (beta == 0) {
      Fill(c, m, n, ldc, sizeof(float), 0, stream);
    } else {
      Scale(beta, View{c, m, n, ldc}, stream);
    }
    return;
  }
  CublasGemm(handle, ta, tb, m, n, k, alpha, a, a_type, lda, b, b_type, ldb, beta, c, CUDA_R_32F,
             ldc, compute);
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__device__ __forceinline__ void Store4(float* dst, float4 v) {
  *reinterpret_cast<float4*>(dst) = v;
}
__device__ __forceinline__ void Store4(__nv_bfloat16* dst, float4 v) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 packed;
  packed.x = *reinterpret_cast<unsigned*>(&lo);
  packed.y = *reinterpret_cast<unsigned*>(&hi);
  *reinterpret_cast<uint2*>(dst) = packed;
}
__device__ __forceinline__ void Store1(float* dst, float v) { *dst = v; }
__device__ __forceinline__ void Store1(__nv_bfloat16* dst, float v) {
  *dst = __float2bfloat16_rn(v);
}

// blockIdx.y strides the rows; threads cover columns, 4 at a time when every
// row start is 16-byte aligned. A row index outside [0, limit) raises *error
// (when given) and is skipped.
template <typename T, bool kVec>
__global__ void GatherKernel(const int32_t* rows, int64_t n, const float* src, int64_t lds,
                             int64_t limit, int64_t cols, T* dst, int64_t ldd, int* error) {
  const int64_t c = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * (kVec ? 4 : 1);
  if (c >= cols) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const int64_t row = rows != nullptr ? rows[i] : i;
    if (row < 0 || row >= limit) {
      if (error != nullptr) *error = 1;
      continue;
    }
    const float* s = src + row * lds + c;
    T* d = dst + i * ldd + c;
    if constexpr (kVec) {
      Store4(d, *reinterpret_cast<const float4*>(s));
    } else {
      Store1(d, *s);
    }
  }
}

template <bool kVec>
__global__ void ScatterKernel(const int32_t* rows, int64_t n, const float* src, int64_t lds,
                              int64_t cols, float* dst, int64_t ldd, int64_t limit, bool accumulate,
                              int* error) {
  const int64_t c = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * (kVec ? 4 : 1);
  if (c >= cols) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const int64_t row = rows[i];
    if (row < 0 || row >= limit) {
      if (error != nullptr) *error = 1;
      continue;
    }
    const float* s = src + i * lds + c;
    float* d = dst + row * ldd + c;
    if constexpr (kVec) {
      float4 v = *reinterpret_cast<const float4*>(s);
      if (accumulate) {
        float4 o = *reinterpret_cast<const float4*>(d);
        v.x += o.x;
        v.y += o.y;
        v.z += o.z;
        v.w += o.w;
      }
      *reinterpret_cast<float4*>(d) = v;
    } else {
      *d = accumulate ? *d + *s : *s;
    }
  }
}

dim3 RowGrid(int64_t n, int64_t cols, int threads, bool vec) {
  int64_t per_block = int64_t(threads) * (vec ? 4 : 1);
  int64_t gy = n < 65535 ? n : 65535;
  return dim3(static_cast<unsigned>(CeilDiv(cols, per_block)), static_cast<unsigned>(gy));
}

bool VecRows(const void* p, int64_t ld, int64_t cols) {
  return cols % 4 == 0 && ld % 4 == 0 && Aligned16(p);
}

template <typename T>
void GatherRowsT(const int32_t* rows, int64_t n, ConstView src, T* dst, int64_t ldd, int* error,
                 cudaStream_t stream) {
  if (n == 0 || src.cols == 0) return;
  constexpr int kThreads = 128;
  const bool vec = VecRows(src.data, src.ld, src.cols) && VecRows(dst, ldd, src.cols);
  dim3 grid = RowGrid(n, src.cols, kThreads, vec);
  if (vec) {
    GatherKernel<T, true><<<grid, kThreads, 0, stream>>>(rows, n, src.data, src.ld, src.rows,
                                                         src.cols, dst, ldd, error);
  } else {
    GatherKernel<T, false><<<grid, kThreads, 0, stream>>>(rows, n, src.data, src.ld, src.rows,
                                                          src.cols, dst, ldd, error);
  }
  CUDA_CHECK_LAUNCH();
}

// dst[n, g * W + j] = g == group[n] ? src[n, j] : 0 over all G groups.
__global__ void ExpandKernel(const int32_t* group, int64_t n, int groups, const float* src,
                             int64_t lds, int64_t w, float* dst) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= groups * w) return;
  const int g = static_cast<int>(c / w);
  const int64_t j = c % w;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    dst[i * groups * w + c] = group[i] == g ? src[i * lds + j] : 0.f;
  }
}

// dst[n, j] (=|+=) src[n, group[n] * W + j].
__global__ void SelectKernel(const int32_t* group, int64_t n, int groups, const float* src,
                             int64_t w, float* dst, int64_t ldd, bool accumulate) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= w) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const float v = src[(i * groups + group[i]) * w + j];
    float* d = dst + i * ldd + j;
    *d = accumulate ? *d + v : v;
  }
}

// dst[o, g * I + i] = w[g, o, i]  (the groups side by side along the input).
__global__ void ConcatKernel(const float* w, int groups, int64_t out, int64_t in, float* dst) {
  const int64_t total = groups * out * in;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < total; q += stride) {
    const int64_t g = q / (out * in), o = (q / in) % out, i = q % in;
    dst[o * groups * in + g * in + i] = w[q];
  }
}

}  // namespace

void ExpandRows(const int32_t* group, int groups, ConstView src, float* dst, cudaStream_t stream) {
  if (src.rows == 0 || src.cols == 0) return;
  constexpr int kThreads = 256;
  dim3 grid(static_cast<unsigned>(CeilDiv(groups * src.cols, kThreads)),
            static_cast<unsigned>(Min64(src.rows, 65535)));
  ExpandKernel<<<grid, kThreads, 0, stream>>>(group, src.rows, groups, src.data, src.ld, src.cols,
                                              dst);
  CUDA_CHECK_LAUNCH();
}

void SelectGroupCols(const int32_t* group, int groups, const float* src, View dst, bool accumulate,
                     cudaStream_t stream) {
  if (dst.rows == 0 || dst.cols == 0) return;
  constexpr int kThreads = 256;
  dim3 grid(static_cast<unsigned>(CeilDiv(dst.cols, kThreads)),
            static_cast<unsigned>(Min64(dst.rows, 65535)));
  SelectKernel<<<grid, kThreads, 0, stream>>>(group, dst.rows, groups, src, dst.cols, dst.data,
                                              dst.ld, accumulate);
  CUDA_CHECK_LAUNCH();
}

void ConcatGroups(const float* w, int groups, int64_t out, int64_t in, float* dst,
                  cudaStream_t stream) {
  const int64_t total = groups * out * in;
  if (total == 0) return;
  ConcatKernel<<<GridFor(total, 256), 256, 0, stream>>>(w, groups, out, in, dst);
  CUDA_CHECK_LAUNCH();
}

void GemmF32InKernelBf16(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n,
                         int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                         int64_t ldb, float beta, float* c, int64_t ldc) {
  GemmEx(handle, trans_a, trans_b, m, n, k, alpha, a, CUDA_R_32F, lda, b, CUDA_R_32F, ldb, beta, c,
         ldc, CUBLAS_COMPUTE_32F_FAST_16BF);
}

namespace {

// A bf16 copy of the rows x cols operand `o` (itself when already bf16);
// *ld receives the copy's row stride.
const __nv_bfloat16* AsBf16(const Operand& o, int64_t rows, int64_t cols, Scratch* scratch,
                            int64_t* ld, cudaStream_t stream) {
  if (o.bf16) {
    *ld = o.ld;
    return static_cast<const __nv_bfloat16*>(o.data);
  }
  auto* copy = scratch->Alloc<__nv_bfloat16>(rows * cols);
  ConvertToBf16(ConstView(static_cast<const float*>(o.data), rows, cols, o.ld), copy, stream);
  *ld = cols;
  return copy;
}

}  // namespace

void GemmF32ConvertedBf16(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n,
                          int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                          int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0 || k == 0) {
    GemmF32InKernelBf16(handle, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  cudaStream_t stream;
  CUBLAS_CHECK(cublasGetStream(handle, &stream));
  Scratch scratch(stream);
  int64_t lda_b = 0, ldb_b = 0;
  const auto* ab = AsBf16(Operand{a, lda, false}, trans_a ? k : m, trans_a ? m : k, &scratch,
                          &lda_b, stream);
  const auto* bb = AsBf16(Operand{b, ldb, false}, trans_b ? n : k, trans_b ? k : n, &scratch,
                          &ldb_b, stream);
  GemmBf16(handle, trans_a, trans_b, m, n, k, alpha, ab, lda_b, bb, ldb_b, beta, c, ldc);
}

void GemmF32(cublasHandle_t handle, MatmulPrecision precision, bool trans_a, bool trans_b,
             int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
             const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (precision == MatmulPrecision::kBf16) {
    // Measured on an H100 for every GEMM of a training step (kernel_bench's
    // gemm_paths table, kernels/NOTES.md): a bf16 conversion pass first is
    // 1.1-1.6x faster once every dimension is large; cuBLAS's in-kernel
    // conversion wins for the thin x_proj and dt_proj products.
    if (std::min({m, n, k}) >= 256) {
      GemmF32ConvertedBf16(handle, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else {
      GemmF32InKernelBf16(handle, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    return;
  }
  GemmEx(handle, trans_a, trans_b, m, n, k, alpha, a, CUDA_R_32F, lda, b, CUDA_R_32F, ldb, beta, c,
         ldc, ComputeType(precision));
}

void ConvertToBf16(ConstView src, __nv_bfloat16* dst, cudaStream_t stream) {
  if (src.ld == src.cols) {
    ConvertToBf16(src.data, src.rows * src.cols, dst, stream);
  } else {
    GatherRowsT<__nv_bfloat16>(nullptr, src.rows, src, dst, src.cols, nullptr, stream);
  }
}

void GemmBf16(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
              float alpha, const __nv_bfloat16* a, int64_t lda, const __nv_bfloat16* b, int64_t ldb,
              float beta, float* c, int64_t ldc) {
  GemmEx(handle, trans_a, trans_b, m, n, k, alpha, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb, beta,
         c, ldc, CUBLAS_COMPUTE_32F);
}

bool GroupedUsesBf16Copies(MatmulPrecision precision, int64_t in, int64_t out, bool any_bf16) {
  return precision == MatmulPrecision::kBf16 && (any_bf16 || std::min(in, out) >= 256);
}

void GroupedLinearBf16(const Lanes& lanes, const std::vector<RowRange>& groups, int64_t in,
                       int64_t out, Operand x, const float* w, View y) {
  const cudaStream_t stream = Lanes::StreamOf(lanes.main);
  Scratch scratch(stream);  // freed on the main stream, after the lanes' work
  int64_t ldx = 0, ldw = 0;
  const int64_t n = groups.empty() ? 0 : groups.back().offset + groups.back().count;
  const auto* xb = AsBf16(x, n, in, &scratch, &ldx, stream);
  const auto* wb = AsBf16(Operand{w, in, false}, int64_t(groups.size()) * out, in, &scratch, &ldw,
                          stream);
  lanes.Parallel(static_cast<int>(groups.size()), [&](int g, cublasHandle_t handle) {
    const RowRange& r = groups[g];
    if (r.count == 0) return;
    GemmBf16(handle, false, true, r.count, out, in, 1.f, xb + r.offset * ldx, ldx,
             wb + int64_t(g) * out * ldw, ldw, 0.f, y.data + r.offset * y.ld, y.ld);
  });
}

void GroupedLinearBackwardBf16(const Lanes& lanes, const std::vector<RowRange>& groups,
                               int64_t in, int64_t out, Operand x, const float* w, Operand dy,
                               float beta_dx, View dx, float* dw) {
  const cudaStream_t stream = Lanes::StreamOf(lanes.main);
  Scratch scratch(stream);  // freed on the main stream, after the lanes' work
  int64_t ldx = 0, ldy = 0, ldw = 0;
  const int64_t n = groups.empty() ? 0 : groups.back().offset + groups.back().count;
  const auto* xb = AsBf16(x, n, in, &scratch, &ldx, stream);
  const auto* dyb = AsBf16(dy, n, out, &scratch, &ldy, stream);
  const auto* wb = AsBf16(Operand{w, in, false}, int64_t(groups.size()) * out, in, &scratch, &ldw,
                          stream);
  lanes.Parallel(static_cast<int>(groups.size()), [&](int g, cublasHandle_t handle) {
    const RowRange& r = groups[g];
    if (r.count == 0) return;
    GemmBf16(handle, false, false, r.count, in, out, 1.f, dyb + r.offset * ldy, ldy,
             wb + int64_t(g) * out * ldw, ldw, beta_dx, dx.data + r.offset * dx.ld, dx.ld);
    GemmBf16(handle, true, false, out, in, r.count, 1.f, dyb + r.offset * ldy, ldy,
             xb + r.offset * ldx, ldx, 1.f, dw + int64_t(g) * out * in, in);
  });
}

void GemmBf16ToBf16(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n,
                    int64_t k, const __nv_bfloat16* a, int64_t lda, const __nv_bfloat16* b,
                    int64_t ldb, __nv_bfloat16* c, int64_t ldc) {
  CHECK_GT(k, 0) << "gemm: bf16 output needs k >= 1";
  if (m == 0 || n == 0) return;
  CublasGemm(handle, trans_a, trans_b, m, n, k, 1.f, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb, 0.f,
             c, CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F);
}

void GatherRows(const int32_t* rows, int64_t n, ConstView src, View dst, int* error,
                cudaStream_t stream) {
  CHECK_EQ(src.cols, dst.cols) << "gather: columns differ";
  GatherRowsT(rows, n, src, dst.data, dst.ld, error, stream);
}

void GatherRowsBf16(const int32_t* rows, int64_t n, ConstView src, __nv_bfloat16* dst,
                    cudaStream_t stream) {
  GatherRowsT(rows, n, src, dst, src.cols, nullptr, stream);
}

void ScatterRows(const int32_t* rows, int64_t n, ConstView src, View dst, bool accumulate,
                 int* error, cudaStream_t stream) {
  CHECK_EQ(src.cols, dst.cols) << "scatter: columns differ";
  if (n == 0 || dst.cols == 0) return;
  constexpr int kThreads = 128;
  const bool vec = VecRows(dst.data, dst.ld, dst.cols) && VecRows(src.data, src.ld, src.cols);
  dim3 grid = RowGrid(n, dst.cols, kThreads, vec);
  if (vec) {
    ScatterKernel<true><<<grid, kThreads, 0, stream>>>(
        rows, n, src.data, src.ld, dst.cols, dst.data, dst.ld, dst.rows, accumulate, error);
  } else {
    ScatterKernel<false><<<grid, kThreads, 0, stream>>>(
        rows, n, src.data, src.ld, dst.cols, dst.data, dst.ld, dst.rows, accumulate, error);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace modamba::cuda
