// Causal depthwise conv1d + bias + SiLU with document resets. A thread owns
// one channel over a tile of kRows rows of one sequence and slides a window
// of the last K inputs through registers, so each input is read once; it
// starts K-1 rows early to fill the window. `valid` counts how many previous
// rows are in the current document (capped at K-1): a reset zeroes it. Rows
// here are sequence positions; kMapped reads and writes them at the rows of
// a row map (core/backend.h).
#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kRows = 64;
constexpr int kMaxWidth = 8;

__device__ __forceinline__ float SiluGrad(float x) {
  float s = Sigmoid(x);
  return s * (1.f + x * (1.f - s));
}

// Grid: x = channel blocks, y = (sequence, row tile).
struct TileCoords {
  int64_t e, seq_row0, t0, t_end;
};

__device__ __forceinline__ TileCoords Coords(int64_t seq_len) {
  const int64_t tiles_per_seq = CeilDiv(seq_len, kRows);
  const int64_t seq = blockIdx.y / tiles_per_seq;
  TileCoords c;
  c.e = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  c.seq_row0 = seq * seq_len;
  c.t0 = (blockIdx.y % tiles_per_seq) * kRows;
  c.t_end = min(c.t0 + kRows, seq_len);
  return c;
}

// kBatch rows' inputs, all loads issued before any is used: the row loop
// is otherwise one dependent load at a time per thread.
constexpr int kBatch = 8;
template <bool kMapped>
struct Batch {
  float x[kBatch], du[kBatch];
  int64_t row[kBatch];
  bool start[kBatch];  // the row begins a document (or the sequence)
  // Rows tb .. min(tb + kBatch, t_stop) - 1 of the tile's sequence; du is
  // read only for rows of the tile and after (when given).
  __device__ __forceinline__ void Load(const TileCoords& tc, int64_t tb, int64_t t_stop,
                                       const uint8_t* doc_start, const int32_t* rows,
                                       const float* xs, int64_t ldx, const float* dus,
                                       int64_t lddu) {
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int64_t t = tb + i;
      if (t >= t_stop) break;
      const int64_t n = tc.seq_row0 + t;
      row[i] = RowOf<kMapped>(rows, n);
      x[i] = xs[row[i] * ldx + tc.e];
      du[i] = dus != nullptr && t >= tc.t0 ? dus[row[i] * lddu + tc.e] : 0.f;
      start[i] = t == 0 || doc_start[n] != 0;
    }
  }
};

template <int K, bool kMapped>
__global__ void ConvForwardKernel(int64_t seq_len, int64_t e_dim, const uint8_t* doc_start,
                                  const int32_t* rows, const float* x, int64_t ldx,
                                  const float* w, const float* b, float* u, int64_t ldu) {
  const TileCoords tc = Coords(seq_len);
  if (tc.e >= e_dim) return;
  float wk[K];
#pragma unroll
  for (int k = 0; k < K; ++k) wk[k] = w[tc.e * K + k];
  const float bias = b[tc.e];
  float xw[K];  // xw[K-1-j] = x[t-j]
#pragma unroll
  for (int k = 0; k < K; ++k) xw[k] = 0;
  int valid = 0;
  for (int64_t tb = Max64(tc.t0 - (K - 1), 0); tb < tc.t_end; tb += kBatch) {
    Batch<kMapped> in;
    in.Load(tc, tb, tc.t_end, doc_start, rows, x, ldx, nullptr, 0);
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int64_t t = tb + i;
      if (t >= tc.t_end) break;
#pragma unroll
      for (int k = 0; k + 1 < K; ++k) xw[k] = xw[k + 1];
      xw[K - 1] = in.x[i];
      valid = in.start[i] ? 0 : min(valid + 1, K - 1);
      if (t < tc.t0) continue;
      float pre = bias;
#pragma unroll
      for (int j = 0; j < K; ++j) {
        if (j <= valid) pre += wk[K - 1 - j] * xw[K - 1 - j];
      }
      u[in.row[i] * ldu + tc.e] = pre * Sigmoid(pre);
    }
  }
}

// dx for rows of the tile needs dpre of up to K-1 rows past it, so the
// thread runs to t_end + K - 1 (recomputing those rows; dw and db count
// only the tile's own rows). acc[K-1-j] collects dx of row t-j.
template <int K, bool kMapped>
__global__ void ConvBackwardKernel(int64_t seq_len, int64_t e_dim, const uint8_t* doc_start,
                                   const int32_t* rows, const float* x, int64_t ldx,
                                   const float* w, const float* b, const float* du, int64_t lddu,
                                   void* dx, int64_t lddx, bool dx_bf16, float* partial) {
  const TileCoords tc = Coords(seq_len);
  if (tc.e >= e_dim) return;
  float wk[K], dwk[K], xw[K], acc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    wk[k] = w[tc.e * K + k];
    dwk[k] = xw[k] = acc[k] = 0;
  }
  const float bias = b[tc.e];
  float dbias = 0;
  int valid = 0;
  const int64_t t_stop = min(tc.t_end + K - 1, seq_len);
  for (int64_t tb = Max64(tc.t0 - (K - 1), 0); tb < t_stop; tb += kBatch) {
    Batch<kMapped> in;
    in.Load(tc, tb, t_stop, doc_start, rows, x, ldx, du, lddu);
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int64_t t = tb + i;
      if (t >= t_stop) break;
#pragma unroll
      for (int k = 0; k + 1 < K; ++k) {
        xw[k] = xw[k + 1];
        acc[k] = acc[k + 1];
      }
      xw[K - 1] = in.x[i];
      acc[K - 1] = 0;
      valid = in.start[i] ? 0 : min(valid + 1, K - 1);
      if (t >= tc.t0) {
        float pre = bias;
#pragma unroll
        for (int j = 0; j < K; ++j) {
          if (j <= valid) pre += wk[K - 1 - j] * xw[K - 1 - j];
        }
        const float dpre = in.du[i] * SiluGrad(pre);
        const bool own = t < tc.t_end;
#pragma unroll
        for (int j = 0; j < K; ++j) {
          if (j <= valid) {
            acc[K - 1 - j] += wk[K - 1 - j] * dpre;
            if (own) dwk[K - 1 - j] += dpre * xw[K - 1 - j];
          }
        }
        if (own) dbias += dpre;
      }
      const int64_t done = t - (K - 1);  // every row that feeds dx[done] is in
      if (done >= tc.t0 && done < tc.t_end) {
        StoreOut(dx, dx_bf16, RowOf<kMapped>(rows, tc.seq_row0 + done) * lddx + tc.e, acc[0]);
      }
    }
  }
  // The sequence ended first: the rows still pending are complete.
#pragma unroll
  for (int i = 1; i < K; ++i) {
    const int64_t pos = t_stop - 1 - (K - 1) + i;
    if (pos >= tc.t0 && pos < tc.t_end) {
      StoreOut(dx, dx_bf16, RowOf<kMapped>(rows, tc.seq_row0 + pos) * lddx + tc.e, acc[i]);
    }
  }
  float* p = partial + (int64_t(blockIdx.y) * e_dim + tc.e) * (K + 1);
#pragma unroll
  for (int k = 0; k < K; ++k) p[k] = dwk[k];
  p[K] = dbias;
}

// dw[e][k] += sum over tiles of partial[tile][e][k]; db likewise (k == K).
__global__ void ConvParamSumKernel(const float* partial, int64_t tiles, int64_t e_dim, int k_width,
                                   float* dw, float* db) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= e_dim * (k_width + 1)) return;
  float s = 0;
  for (int64_t tile = 0; tile < tiles; ++tile) s += partial[tile * e_dim * (k_width + 1) + i];
  const int64_t e = i / (k_width + 1), k = i % (k_width + 1);
  if (k < k_width) {
    dw[e * k_width + k] += s;
  } else {
    db[e] += s;
  }
}

dim3 ConvGrid(const ConvArgs& a) {
  const int64_t tiles = a.batch * CeilDiv(a.seq_len, kRows);
  CHECK_LE(tiles, 65535) << "conv: too many row tiles";
  return dim3(static_cast<unsigned>(CeilDiv(a.x.cols, kThreads)), static_cast<unsigned>(tiles));
}

// clang-format off
#define CONV_DISPATCH(K_VALUE, ...)                           \
  switch (K_VALUE) {                                          \
    case 1: { constexpr int K = 1; __VA_ARGS__; break; }      \
    case 2: { constexpr int K = 2; __VA_ARGS__; break; }      \
    case 3: { constexpr int K = 3; __VA_ARGS__; break; }      \
    case 4: { constexpr int K = 4; __VA_ARGS__; break; }      \
    case 5: { constexpr int K = 5; __VA_ARGS__; break; }      \
    case 6: { constexpr int K = 6; __VA_ARGS__; break; }      \
    case 7: { constexpr int K = 7; __VA_ARGS__; break; }      \
    case 8: { constexpr int K = 8; __VA_ARGS__; break; }      \
    default: LOG(FATAL) << "conv: width " << K_VALUE << " outside [1, " << kMaxWidth << "]"; \
  }
// clang-format on

}  // namespace

void ConvForward(const ConvArgs& a, View u, cudaStream_t stream) {
  if (a.batch * a.seq_len == 0 || a.x.cols == 0) return;
  dim3 grid = ConvGrid(a);
  DispatchRowMap(a.rows, [&](auto mapped) {
    CONV_DISPATCH(a.k_width, ConvForwardKernel<K, decltype(mapped)::value>
                  <<<grid, kThreads, 0, stream>>>(a.seq_len, a.x.cols, a.doc_start, a.rows,
                                                  a.x.data, a.x.ld, a.w, a.b, u.data, u.ld));
  });
  CUDA_CHECK_LAUNCH();
}

void ConvBackward(const ConvArgs& a, ConstView du, OutView dx, float* dw, float* db,
                  cudaStream_t stream) {
  if (a.batch * a.seq_len == 0 || a.x.cols == 0) return;
  dim3 grid = ConvGrid(a);
  const int64_t e_dim = a.x.cols;
  Scratch scratch(stream);
  float* partial = scratch.Alloc<float>(int64_t(grid.y) * e_dim * (a.k_width + 1));
  DispatchRowMap(a.rows, [&](auto mapped) {
    CONV_DISPATCH(a.k_width, ConvBackwardKernel<K, decltype(mapped)::value>
                  <<<grid, kThreads, 0, stream>>>(a.seq_len, e_dim, a.doc_start, a.rows, a.x.data,
                                                  a.x.ld, a.w, a.b, du.data, du.ld, dx.data, dx.ld,
                                                  dx.bf16, partial));
  });
  CUDA_CHECK_LAUNCH();
  const int64_t n = e_dim * (a.k_width + 1);
  ConvParamSumKernel<<<GridFor(n, 256, 1 << 20), 256, 0, stream>>>(partial, grid.y, e_dim,
                                                                   a.k_width, dw, db);
  CUDA_CHECK_LAUNCH();
}

}  // namespace modamba::cuda
