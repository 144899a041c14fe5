// Embedding lookup and its deterministic backward. The backward sorts
// (token, row) pairs with a stable radix sort, so each token's rows form one
// run in row order; fixed chunks of the sorted list sum their runs in order.
// A run inside one chunk is added to its table row directly (no other chunk
// touches that row); a run crossing chunk boundaries leaves a tail sum in the
// chunk where it starts and head sums in the chunks it reaches, which a
// second kernel adds up in chunk order. No float atomics anywhere.
#include <cub/cub.cuh>

#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 32;

__global__ void EmbeddingForwardKernel(const int32_t* tokens, int64_t n, const float* table,
                                       int64_t vocab, int64_t d, float* out, int64_t ldo,
                                       int* error) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= d) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const int32_t tok = tokens[i];
    const bool ok = tok >= 0 && tok < vocab;
    if (!ok && c == 0) *error = 1;
    out[i * ldo + c] = ok ? table[tok * d + c] : 0.f;
  }
}

__global__ void IotaKernel(int32_t* v, int64_t n) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) v[i] = static_cast<int32_t>(i);
}

// Chunk c covers sorted positions [c * kChunk, min(n, (c + 1) * kChunk)).
__global__ void ChunkSumKernel(const int32_t* keys, const int32_t* rows, int64_t n,
                               const float* dout, int64_t ldo, int64_t d, int64_t vocab,
                               float* table, float* head, float* tail) {
  const int64_t c = blockIdx.y * int64_t(blockDim.x) + threadIdx.x;
  if (c >= d) return;
  const int64_t chunk = blockIdx.x;
  const int64_t p0 = chunk * kChunk, p1 = min(n, p0 + kChunk);
  float sum = 0;
  int64_t run_start = p0;
  for (int64_t p = p0; p < p1; ++p) {
    const int32_t key = keys[p];
    sum += dout[int64_t(rows[p]) * ldo + c];
    const bool last_in_run = p + 1 == n || keys[p + 1] != key;
    if (!last_in_run && p + 1 < p1) continue;
    const bool began_here = run_start > 0 ? keys[run_start - 1] != key : true;
    if (!began_here) {
      head[chunk * d + c] = sum;
    } else if (!last_in_run) {
      tail[chunk * d + c] = sum;
    } else if (key >= 0 && key < vocab) {
      table[int64_t(key) * d + c] += sum;
    }
    sum = 0;
    run_start = p + 1;
  }
}

// For every chunk whose last run starts in it and continues: add the heads
// of the following chunks until the run ends, then update the table row.
__global__ void CrossChunkKernel(const int32_t* keys, int64_t n, int64_t d, int64_t vocab,
                                 const float* head, const float* tail, float* table) {
  const int64_t c = blockIdx.y * int64_t(blockDim.x) + threadIdx.x;
  if (c >= d) return;
  const int64_t chunk = blockIdx.x;
  const int64_t p0 = chunk * kChunk, p1 = min(n, p0 + kChunk);
  const int32_t key = keys[p1 - 1];
  const bool continues = p1 < n && keys[p1] == key;
  const bool began_here = !(keys[p0] == key && p0 > 0 && keys[p0 - 1] == key);
  if (!continues || !began_here) return;
  float sum = tail[chunk * d + c];
  for (int64_t next = chunk + 1;; ++next) {
    const int64_t q0 = next * kChunk, q1 = min(n, q0 + kChunk);
    sum += head[next * d + c];
    const bool goes_on = keys[q1 - 1] == key && q1 < n && keys[q1] == key;
    if (!goes_on) break;
  }
  if (key >= 0 && key < vocab) table[int64_t(key) * d + c] += sum;
}

}  // namespace

void EmbeddingForward(const int32_t* tokens, int64_t n, const float* table, int64_t vocab, View out,
                      int* error, cudaStream_t stream) {
  if (n == 0 || out.cols == 0) return;
  dim3 grid(static_cast<unsigned>(CeilDiv(out.cols, kThreads)),
            static_cast<unsigned>(n < 65535 ? n : 65535));
  EmbeddingForwardKernel<<<grid, kThreads, 0, stream>>>(tokens, n, table, vocab, out.cols, out.data,
                                                        out.ld, error);
  CUDA_CHECK_LAUNCH();
}

void EmbeddingBackward(const int32_t* tokens, int64_t n, ConstView dout, float* dtable,
                       int64_t vocab, cudaStream_t stream) {
  if (n == 0 || dout.cols == 0) return;
  CHECK_LE(n, int64_t(1) << 30) << "embedding backward: too many rows";
  const int64_t d = dout.cols;
  Scratch scratch(stream);
  int32_t* rows_in = scratch.Alloc<int32_t>(n);
  int32_t* rows = scratch.Alloc<int32_t>(n);
  int32_t* keys = scratch.Alloc<int32_t>(n);
  IotaKernel<<<GridFor(n, kThreads, 1 << 30), kThreads, 0, stream>>>(rows_in, n);
  CUDA_CHECK_LAUNCH();
  // Sorted as unsigned over all 32 bits: a negative (invalid, flagged by the
  // forward) id sorts last and is skipped like any id >= vocab.
  const uint32_t* ukeys_in = reinterpret_cast<const uint32_t*>(tokens);
  uint32_t* ukeys = reinterpret_cast<uint32_t*>(keys);
  constexpr int kEndBit = 32;
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ukeys_in, ukeys, rows_in, rows,
                                             static_cast<int>(n), 0, kEndBit, stream));
  void* temp = scratch.Alloc(temp_bytes);
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ukeys_in, ukeys, rows_in, rows,
                                             static_cast<int>(n), 0, kEndBit, stream));
  const int64_t chunks = CeilDiv(n, kChunk);
  CHECK_LE(CeilDiv(d, kThreads), 65535) << "embedding backward: width " << d;
  float* head = scratch.Alloc<float>(chunks * d);
  float* tail = scratch.Alloc<float>(chunks * d);
  dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(CeilDiv(d, kThreads)));
  ChunkSumKernel<<<grid, kThreads, 0, stream>>>(keys, rows, n, dout.data, dout.ld, d, vocab, dtable,
                                                head, tail);
  CUDA_CHECK_LAUNCH();
  CrossChunkKernel<<<grid, kThreads, 0, stream>>>(keys, n, d, vocab, head, tail, dtable);
  CUDA_CHECK_LAUNCH();
}

}  // namespace modamba::cuda
