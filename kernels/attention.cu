// The Transformer block's kernels: SwiGLU, rotary embeddings, and fused
// causal attention (flash-style: scores never reach device memory) forward
// and backward, with packed documents.
//
// Attention runs on the tensor cores through mma.sync m16n8k16 (bf16
// operands, fp32 accumulation), which sm_80 and sm_90 both have. A block of
// 4 warps takes 64 queries (forward, dQ) or 64 keys (dK and dV) of one head
// of one sequence, each warp 16 of them, and walks the 64-wide tiles of the
// other side, the next tile loading (cp.async) while this one is worked on.
// Only the tiles inside the documents of the block's positions are visited:
// position i sees keys [first[i], i], and first[] never decreases along a
// sequence, so a tile range is known from its ends.
//
// Fragment layout of m16n8k16 (g = lane / 4, c = lane % 4): A (16 x 16)
// holds rows g and g + 8, columns 2c, 2c + 1 and 2c + 8, 2c + 9; B (16 x 8)
// columns g, rows 2c, 2c + 1, 2c + 8, 2c + 9; C (16 x 8) rows g and g + 8,
// columns 2c and 2c + 1. Two C tiles side by side are one A fragment, so P
// and dS go from one product to the next in registers.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kTile = 64;            // queries or keys per block
constexpr int kWarps = kTile / 16;   // one 16-row slice each
constexpr int kThreads = kWarps * 32;
constexpr float kLn2 = 0.6931471805599453f;

// ---- elementwise ----

__global__ void SwigluForwardKernel(ConstView gate, ConstView up, OutView y) {
  const int64_t total = y.rows * y.cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / y.cols, c = i % y.cols;
    const float g = gate.data[r * gate.ld + c];
    StoreOut(y.data, y.bf16, r * y.ld + c, g * Sigmoid(g) * up.data[r * up.ld + c]);
  }
}

__global__ void SwigluBackwardKernel(ConstView gate, ConstView up, ConstView dy, OutView dgate,
                                     OutView dup) {
  const int64_t total = dy.rows * dy.cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / dy.cols, c = i % dy.cols;
    const float g = gate.data[r * gate.ld + c], u = up.data[r * up.ld + c];
    const float d = dy.data[r * dy.ld + c], s = Sigmoid(g);
    StoreOut(dgate.data, dgate.bf16, r * dgate.ld + c, d * u * s * (1.f + g * (1.f - s)));
    StoreOut(dup.data, dup.bf16, r * dup.ld + c, d * g * s);
  }
}

// first[n] = the position where position n's document starts: a max-scan
// of doc_start's positions, one block per sequence.
__global__ void DocFirstKernel(const uint8_t* doc_start, int64_t seq_len, int32_t* first) {
  __shared__ int32_t carry[1024];
  const int64_t seq0 = blockIdx.x * seq_len;
  const int64_t per = CeilDiv(seq_len, blockDim.x);
  const int64_t t0 = threadIdx.x * per, t1 = Min64(seq_len, t0 + per);
  int32_t last = 0;
  for (int64_t t = t0; t < t1; ++t) {
    if (doc_start[seq0 + t]) last = static_cast<int32_t>(t);
  }
  carry[threadIdx.x] = last;
  __syncthreads();
  for (int off = 1; off < blockDim.x; off <<= 1) {
    const int32_t v = threadIdx.x >= off ? carry[threadIdx.x - off] : 0;
    __syncthreads();
    carry[threadIdx.x] = max(carry[threadIdx.x], v);
    __syncthreads();
  }
  int32_t run = threadIdx.x > 0 ? carry[threadIdx.x - 1] : 0;
  for (int64_t t = t0; t < t1; ++t) {
    if (doc_start[seq0 + t]) run = static_cast<int32_t>(t);
    first[seq0 + t] = run;
  }
}

// The angle of rotary pair j at position `pos` (Backend::Rope).
__device__ __forceinline__ float RopeAngle(float pos, int j, int head_dim, float log2_theta) {
  return pos * exp2f(-2.f * static_cast<float>(j) / head_dim * log2_theta);
}

// One thread per (position, rotary pair); x and y may alias.
template <bool kMapped>
__global__ void RopeKernel(int64_t n, int64_t seq_len, const int32_t* rows, const int32_t* first,
                           int head_dim, float log2_theta, float sign, ConstView x, View y) {
  const int half = head_dim / 2;
  const int64_t pairs = x.cols / 2;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * pairs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pos = i / pairs, p = i % pairs;
    const int64_t col = (p / half) * head_dim + p % half;
    const int64_t r = RowOf<kMapped>(rows, pos);
    const float t = static_cast<float>(pos % seq_len - first[pos]);
    float s, c;
    sincosf(sign * RopeAngle(t, static_cast<int>(p % half), head_dim, log2_theta), &s, &c);
    const float x1 = x.data[r * x.ld + col], x2 = x.data[r * x.ld + col + half];
    y.data[r * y.ld + col] = x1 * c - x2 * s;
    y.data[r * y.ld + col + half] = x2 * c + x1 * s;
  }
}

// ---- decoding with a key-value cache ----

// One block per (row, head): the row's q and k rotated by the stream's
// position, k and v appended to the caches, then softmax attention over the
// cached rows in fp32. Shared: q [head_dim] | scores [max_len] | [32].
__global__ void AttentionStepKernel(AttentionStepArgs a, OutView out) {
  extern __shared__ float shared[];
  const int64_t i = blockIdx.x;
  const int h = blockIdx.y, hd = a.head_dim, half = hd / 2;
  const int64_t dim = int64_t(a.heads) * hd, c0 = int64_t(h) * hd;
  const int32_t s = a.streams[i];
  const int32_t pos = s >= 0 && s < a.num_streams ? (a.reset[i] ? 0 : a.lengths[s]) : -1;
  if (pos < 0 || pos >= a.max_len) {  // a bad stream, or a full one
    if (threadIdx.x == 0) atomicExch(a.error, 1);
    return;
  }
  float* sq = shared;
  float* sp = sq + hd;
  float* reduce = sp + a.max_len;
  float* kc = a.k_cache + int64_t(s) * a.max_len * dim + c0;
  float* vc = a.v_cache + int64_t(s) * a.max_len * dim + c0;
  const float* qi = a.q.data + i * a.q.ld + c0;
  const float* ki = a.k.data + i * a.k.ld + c0;
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    float sn, cs;
    sincosf(RopeAngle(static_cast<float>(pos), j, hd, a.log2_theta), &sn, &cs);
    sq[j] = qi[j] * cs - qi[j + half] * sn;
    sq[j + half] = qi[j + half] * cs + qi[j] * sn;
    kc[pos * dim + j] = ki[j] * cs - ki[j + half] * sn;
    kc[pos * dim + j + half] = ki[j + half] * cs + ki[j] * sn;
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    vc[pos * dim + d] = a.v.data[i * a.v.ld + c0 + d];
  }
  __syncthreads();  // the block's cache writes are visible to it after this
  const float scale = 1.f / sqrtf(static_cast<float>(hd));
  float m = -INFINITY;
  for (int j = threadIdx.x; j <= pos; j += blockDim.x) {
    float dot = 0;
    for (int d = 0; d < hd; ++d) dot += sq[d] * kc[j * dim + d];
    sp[j] = dot * scale;
    m = fmaxf(m, sp[j]);
  }
  m = WarpMax(m);
  if ((threadIdx.x & 31) == 0) reduce[threadIdx.x >> 5] = m;
  __syncthreads();
  for (int w = 0; w < (blockDim.x >> 5); ++w) m = fmaxf(m, reduce[w]);
  __syncthreads();  // reduce is reused by BlockSum
  float sum = 0;
  for (int j = threadIdx.x; j <= pos; j += blockDim.x) sum += sp[j] = __expf(sp[j] - m);
  sum = BlockSum(sum, reduce);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0;
    for (int j = 0; j <= pos; ++j) acc += sp[j] * vc[j * dim + d];
    StoreOut(out.data, out.bf16, i * out.ld + c0 + d, acc / sum);
  }
}

// After every head's block has read it: lengths[stream] = pos + 1.
__global__ void AdvanceLengthsKernel(AttentionStepArgs a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < a.rows;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int32_t s = a.streams[i];
    if (s >= 0 && s < a.num_streams) a.lengths[s] = (a.reset[i] ? 0 : a.lengths[s]) + 1;
  }
}

// ---- tensor-core fragments ----

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 bf16 matrices; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void Ldsm4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(p)));
}
__device__ __forceinline__ void Ldsm4T(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(p)));
}

// c += a b for a 16x16 A fragment and a 16x8 B fragment (b0, b1).
__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Loaders from a row-major shared tile with row stride `ld` elements.
// A (16 x 16) at (m0, k0) of a tile stored [m][k].
__device__ __forceinline__ void LoadA(uint32_t (&a)[4], const bf16* t, int ld, int m0, int k0) {
  const int l = threadIdx.x & 31, mi = l >> 3;
  Ldsm4(a, t + (m0 + (mi & 1) * 8 + (l & 7)) * ld + k0 + (mi >> 1) * 8);
}
// Two B fragments (16 x 8, columns n0.. and n0 + 8..) of a tile stored
// [n][k]: b[0], b[1] for the first, b[2], b[3] for the second.
__device__ __forceinline__ void LoadB2(uint32_t (&b)[4], const bf16* t, int ld, int n0, int k0) {
  const int l = threadIdx.x & 31, mi = l >> 3;
  Ldsm4(b, t + (n0 + (mi >> 1) * 8 + (l & 7)) * ld + k0 + (mi & 1) * 8);
}
// The same from a tile stored [k][n].
__device__ __forceinline__ void LoadB2T(uint32_t (&b)[4], const bf16* t, int ld, int k0, int n0) {
  const int l = threadIdx.x & 31, mi = l >> 3;
  Ldsm4T(b, t + (k0 + (mi & 1) * 8 + (l & 7)) * ld + n0 + (mi >> 1) * 8);
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
// C tiles 2j and 2j + 1 (16 x 16 of fp32) as the A fragment of k-step j.
template <int N>
__device__ __forceinline__ void CToA(uint32_t (&a)[4], const float (&c)[N][4], int j) {
  a[0] = PackBf16(c[2 * j][0], c[2 * j][1]);
  a[1] = PackBf16(c[2 * j][2], c[2 * j][3]);
  a[2] = PackBf16(c[2 * j + 1][0], c[2 * j + 1][1]);
  a[3] = PackBf16(c[2 * j + 1][2], c[2 * j + 1][3]);
}

// Asynchronous copies of 16 or 4 bytes, global to shared (cp.async, sm_80
// on): zeros where !valid (src is then not read but must be a mapped address).
__device__ __forceinline__ void CopyAsync16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(dst)),
               "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CopyAsync4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(SharedAddress(dst)),
               "l"(src), "r"(valid ? 4 : 0));
}
// Closes the group of copies issued since the last one.
__device__ __forceinline__ void CopyCommit() { asm volatile("cp.async.commit_group;\n"); }
// Waits until at most N closed groups are still in flight.
template <int N>
__device__ __forceinline__ void CopyWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Waits for every copy this thread issued.
__device__ __forceinline__ void CopyWaitAll() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// Starts copying positions [p0, p0 + kTile) of sequence b, head columns
// [c0, c0 + HD) of a bf16 [N, *] matrix into a shared tile [kTile][HD + 8],
// zeros past the end; the tile is the block's after a wait and a barrier.
template <int HD, bool kMapped>
__device__ void LoadTile(bf16* tile, const bf16* src, int64_t ld, const AttentionArgs& a,
                         int64_t b, int64_t p0, int64_t c0) {
  constexpr int kChunks = HD / 8;  // 16-byte pieces per row
  for (int i = threadIdx.x; i < kTile * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    const bool valid = p0 + r < a.seq_len;
    const int64_t row = valid ? RowOf<kMapped>(a.rows, b * a.seq_len + p0 + r) : 0;
    CopyAsync16(tile + r * (HD + 8) + c, src + row * ld + c0 + c, valid);
  }
}

// Whether query position i (< seq_len, its document starting at fi) sees key j.
__device__ __forceinline__ bool Sees(int64_t i, int64_t fi, int64_t j, int64_t seq_len) {
  return i < seq_len && j <= i && j >= fi;
}

// s = A B^T for a warp's 16 rows (A fragments af, k = HD) against the
// kTile rows of a shared tile stored [row][HD]: S = Q K^T, and dP = dO V^T.
template <int HD>
__device__ __forceinline__ void MulTileT(float (&s)[kTile / 8][4],
                                         const uint32_t (&af)[HD / 16][4], const bf16* t) {
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
#pragma unroll
    for (int nt = 0; nt < kTile / 8; nt += 2) {
      uint32_t bf[4];
      LoadB2(bf, t, HD + 8, nt * 8, kk * 16);
      Mma(s[nt], af[kk], bf[0], bf[1]);
      Mma(s[nt + 1], af[kk], bf[2], bf[3]);
    }
  }
}

// o += C T for a warp's 16 x kTile C tiles (as A fragments) and a shared
// tile T stored [row][HD]: O += P V, and dQ += dS K.
template <int HD>
__device__ __forceinline__ void MulAddTile(float (&o)[HD / 8][4], const float (&c)[kTile / 8][4],
                                           const bf16* t) {
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) {
    uint32_t ca[4];
    CToA(ca, c, kk);
#pragma unroll
    for (int nd = 0; nd < HD / 8; nd += 2) {
      uint32_t bf[4];
      LoadB2T(bf, t, HD + 8, kk * 16, nd * 8);
      Mma(o[nd], ca, bf[0], bf[1]);
      Mma(o[nd + 1], ca, bf[2], bf[3]);
    }
  }
}

// body(t, half) for the tiles t = t0, t0 + kTile, ... while more(t), with
// load(t, half) (cp.async into one of two halves of the shared buffers) of
// the next tile in flight meanwhile, so the copies overlap the tensor-core
// work instead of stalling every warp at each tile. Copies the caller
// issued before are waited for with the first tile's.
template <typename More, typename Load, typename Body>
__device__ __forceinline__ void DoubleBuffered(int64_t t0, More&& more, Load&& load, Body&& body) {
  load(t0, 0);
  CopyCommit();
  int half = 0;
  for (int64_t t = t0; more(t); t += kTile, half ^= 1) {
    if (more(t + kTile)) load(t + kTile, half ^ 1);
    CopyCommit();  // possibly empty: the wait below counts groups
    CopyWait<1>();
    __syncthreads();  // this tile is every thread's
    body(t, half);
    __syncthreads();  // every warp is done with this half before it is refilled
  }
}

// body(k0, K tile, V tile) on each key tile that queries [q0, q0 + kTile)
// of sequence b see, K and V double-buffered in kv (4 tiles: K, V, K, V).
template <int HD, bool kMapped, typename Body>
__device__ __forceinline__ void ForEachKeyTile(const AttentionArgs& a, int64_t b, int64_t q0,
                                               int64_t c0, bf16* kv, Body&& body) {
  constexpr int kSize = kTile * (HD + 8);
  const int64_t last = Min64(q0 + kTile, a.seq_len) - 1;
  DoubleBuffered(
      (a.first[b * a.seq_len + q0] / kTile) * kTile, [&](int64_t k0) { return k0 <= last; },
      [&](int64_t k0, int half) {
        LoadTile<HD, kMapped>(kv + 2 * half * kSize, a.k, a.ldk, a, b, k0, c0);
        LoadTile<HD, kMapped>(kv + (2 * half + 1) * kSize, a.v, a.ldv, a, b, k0, c0);
      },
      [&](int64_t k0, int half) {
        body(k0, kv + 2 * half * kSize, kv + (2 * half + 1) * kSize);
      });
}

// ---- forward ----

template <int HD, bool kMapped>
__global__ void __launch_bounds__(kThreads)
    AttentionForwardKernel(AttentionArgs a, OutView out, float* lse) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kLd = HD + 8;  // padded rows: ldmatrix without bank conflicts
  bf16* sq = reinterpret_cast<bf16*>(smem);
  const int64_t b = blockIdx.z, h = blockIdx.y;
  // The longest rows first: the last query tile sees the most keys.
  const int64_t q0 = (gridDim.x - 1 - blockIdx.x) * int64_t(kTile);
  const int64_t c0 = h * HD;
  const int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, c = threadIdx.x & 3;
  const int32_t* first = a.first + b * a.seq_len;

  LoadTile<HD, kMapped>(sq, a.q, a.ldq, a, b, q0, c0);
  CopyWaitAll();
  __syncthreads();
  uint32_t qf[HD / 16][4];
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) LoadA(qf[kk], sq, kLd, warp * 16, kk * 16);

  // This thread's two query rows: g and g + 8 of the warp's slice.
  int64_t qi[2], fi[2];
  for (int r = 0; r < 2; ++r) {
    qi[r] = q0 + warp * 16 + g + 8 * r;
    fi[r] = qi[r] < a.seq_len ? first[qi[r]] : 0;
  }
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0};
  float o[HD / 8][4] = {};
  const float scale = kLog2e / sqrtf(static_cast<float>(HD));  // scores in log2 units
  ForEachKeyTile<HD, kMapped>(a, b, q0, c0, sq + kTile * kLd, [&](int64_t k0, const bf16* sk,
                                                                  const bf16* sv) {
    float s[kTile / 8][4] = {};
    MulTileT<HD>(s, qf, sk);
    // Mask, then the online softmax of each row (a row spans the 4 lanes of a quad).
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const int64_t j = k0 + nt * 8 + 2 * c + (e & 1);
        s[nt][e] = Sees(qi[r], fi[r], j, a.seq_len) ? s[nt][e] * scale : -INFINITY;
        mx[r] = fmaxf(mx[r], s[nt][e]);
      }
    }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 2));
      base[r] = mx[r] == -INFINITY ? 0.f : mx[r];  // a row with no key yet stays at zero
      alpha[r] = exp2f(m[r] - base[r]);
      m[r] = mx[r];
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = exp2f(s[nt][e] - base[e >> 1]);
        l[e >> 1] += s[nt][e];
      }
    }
#pragma unroll
    for (int nd = 0; nd < HD / 8; ++nd) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[nd][e] *= alpha[e >> 1];
    }
    MulAddTile<HD>(o, s, sv);
  });
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
    if (qi[r] >= a.seq_len) continue;
    const int64_t row = RowOf<kMapped>(a.rows, b * a.seq_len + qi[r]);
    const float inv = 1.f / l[r];
#pragma unroll
    for (int nd = 0; nd < HD / 8; ++nd) {
      const int64_t col = c0 + nd * 8 + 2 * c;
      StoreOut(out.data, out.bf16, row * out.ld + col, o[nd][2 * r] * inv);
      StoreOut(out.data, out.bf16, row * out.ld + col + 1, o[nd][2 * r + 1] * inv);
    }
    if (c == 0) lse[row * a.heads + h] = (m[r] + log2f(l[r])) * kLn2;
  }
}

// ---- backward ----

// delta[row * heads + h] = dO . O over the head's columns: one warp each.
template <int HD>
__global__ void AttentionDeltaKernel(int64_t n, int heads, Operand out, const bf16* dout,
                                     int64_t lddo, float* delta) {
  const int lane = threadIdx.x & 31;
  for (int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5; w < n * heads;
       w += (int64_t(gridDim.x) * blockDim.x) >> 5) {
    const int64_t row = w / heads, col = (w % heads) * HD;
    float s = 0;
    for (int d = lane; d < HD; d += 32) {
      const int64_t i = row * out.ld + col + d;
      const float o = out.bf16 ? __bfloat162float(static_cast<const bf16*>(out.data)[i])
                               : static_cast<const float*>(out.data)[i];
      s += o * __bfloat162float(dout[row * lddo + col + d]);
    }
    s = WarpSum(s);
    if (lane == 0) delta[w] = s;
  }
}

// The backward in two passes, so that every gradient element has one writer
// and sums in a fixed order (bitwise-reproducible runs; dQ added with atomics
// across key tiles would not be). Both recompute P from the saved
// log-sum-exp and dS = P (dP - delta) with dP = dO V^T.

// Pass 1, one block per 64 keys: dK = dS^T Q and dV = P^T dO stay in
// registers over the query tiles that see the block's keys, whose Q, dO,
// log-sum-exp and delta are double-buffered.
template <int HD, bool kMapped>
__global__ void __launch_bounds__(kThreads)
    AttentionKeyGradKernel(AttentionArgs a, const float* lse, const float* delta,
                           const bf16* dout, int64_t lddo, OutView dk, OutView dv) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kLd = HD + 8, kSize = kTile * kLd;
  bf16* sk = reinterpret_cast<bf16*>(smem);
  bf16* sv = sk + kSize;
  bf16* sqdo = sv + kSize;                                   // Q, dO, Q, dO
  float* sld = reinterpret_cast<float*>(sqdo + 4 * kSize);  // lse, delta, lse, delta
  const int64_t b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * int64_t(kTile);
  const int64_t c0 = h * HD;
  const int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, c = threadIdx.x & 3;
  const int32_t* first = a.first + b * a.seq_len;
  const float scale = 1.f / sqrtf(static_cast<float>(HD));
  const float scale_log2 = scale * kLog2e;

  LoadTile<HD, kMapped>(sk, a.k, a.ldk, a, b, k0, c0);
  LoadTile<HD, kMapped>(sv, a.v, a.ldv, a, b, k0, c0);
  // This thread's two key rows.
  const int64_t kj[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
  float dkacc[HD / 8][4] = {}, dvacc[HD / 8][4] = {};
  const int64_t last_key = Min64(k0 + kTile, a.seq_len) - 1;
  DoubleBuffered(
      k0, [&](int64_t q0) { return q0 < a.seq_len && first[q0] <= last_key; },
      [&](int64_t q0, int half) {
        LoadTile<HD, kMapped>(sqdo + 2 * half * kSize, a.q, a.ldq, a, b, q0, c0);
        LoadTile<HD, kMapped>(sqdo + (2 * half + 1) * kSize, dout, lddo, a, b, q0, c0);
        for (int i = threadIdx.x; i < kTile; i += kThreads) {
          const bool valid = q0 + i < a.seq_len;
          const int64_t at =
              valid ? RowOf<kMapped>(a.rows, b * a.seq_len + q0 + i) * a.heads + h : 0;
          CopyAsync4(sld + 2 * half * kTile + i, lse + at, valid);
          CopyAsync4(sld + (2 * half + 1) * kTile + i, delta + at, valid);
        }
      },
      [&](int64_t q0, int half) {
        const bf16* sq = sqdo + 2 * half * kSize;
        const bf16* sdo = sq + kSize;
        const float* slse = sld + 2 * half * kTile;
        const float* sdelta = slse + kTile;
        // S^T and dP^T for the warp's 16 keys against the tile's 64 queries.
        float st[kTile / 8][4] = {}, dpt[kTile / 8][4] = {};
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
          uint32_t ka[4], va[4];
          LoadA(ka, sk, kLd, warp * 16, kk * 16);
          LoadA(va, sv, kLd, warp * 16, kk * 16);
#pragma unroll
          for (int nt = 0; nt < kTile / 8; nt += 2) {
            uint32_t qb[4], dob[4];
            LoadB2(qb, sq, kLd, nt * 8, kk * 16);
            LoadB2(dob, sdo, kLd, nt * 8, kk * 16);
            Mma(st[nt], ka, qb[0], qb[1]);
            Mma(st[nt + 1], ka, qb[2], qb[3]);
            Mma(dpt[nt], va, dob[0], dob[1]);
            Mma(dpt[nt + 1], va, dob[2], dob[3]);
          }
        }
        // P^T, then dS^T = P^T (dP^T - delta); st becomes P^T, dpt dS^T.
#pragma unroll
        for (int nt = 0; nt < kTile / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int qc = nt * 8 + 2 * c + (e & 1);
            const int64_t i = q0 + qc;
            const bool seen = i < a.seq_len && Sees(i, first[i], kj[e >> 1], a.seq_len);
            const float p = seen ? exp2f(st[nt][e] * scale_log2 - slse[qc] * kLog2e) : 0.f;
            st[nt][e] = p;
            dpt[nt][e] = p * (dpt[nt][e] - sdelta[qc]);
          }
        }
        // dV += P^T dO and dK += dS^T Q (the queries are the k dimension).
        MulAddTile<HD>(dvacc, st, sdo);
        MulAddTile<HD>(dkacc, dpt, sq);
      });
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (kj[r] >= a.seq_len) continue;
    const int64_t row = RowOf<kMapped>(a.rows, b * a.seq_len + kj[r]);
#pragma unroll
    for (int nd = 0; nd < HD / 8; ++nd) {
      for (int e = 0; e < 2; ++e) {
        const int64_t col = c0 + nd * 8 + 2 * c + e;
        StoreOut(dk.data, dk.bf16, row * dk.ld + col, dkacc[nd][2 * r + e] * scale);
        StoreOut(dv.data, dv.bf16, row * dv.ld + col, dvacc[nd][2 * r + e]);
      }
    }
  }
}

// Pass 2, one block per 64 queries walking the key tiles as the forward
// does: dQ = dS K in registers.
template <int HD, bool kMapped>
__global__ void __launch_bounds__(kThreads)
    AttentionQueryGradKernel(AttentionArgs a, const float* lse, const float* delta,
                             const bf16* dout, int64_t lddo, OutView dq) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kLd = HD + 8;
  bf16* sq = reinterpret_cast<bf16*>(smem);
  bf16* sdo = sq + kTile * kLd;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t q0 = (gridDim.x - 1 - blockIdx.x) * int64_t(kTile);  // the longest rows first
  const int64_t c0 = h * HD;
  const int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, c = threadIdx.x & 3;
  const int32_t* first = a.first + b * a.seq_len;
  const float scale = 1.f / sqrtf(static_cast<float>(HD));
  const float scale_log2 = scale * kLog2e;

  LoadTile<HD, kMapped>(sq, a.q, a.ldq, a, b, q0, c0);
  LoadTile<HD, kMapped>(sdo, dout, lddo, a, b, q0, c0);
  CopyWaitAll();
  __syncthreads();
  uint32_t qf[HD / 16][4], dof[HD / 16][4];
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    LoadA(qf[kk], sq, kLd, warp * 16, kk * 16);
    LoadA(dof[kk], sdo, kLd, warp * 16, kk * 16);
  }
  // This thread's two query rows, with their log-sum-exp (log2 units) and delta.
  int64_t qi[2], fi[2], row[2];
  float lse2[2], dlt[2];
  for (int r = 0; r < 2; ++r) {
    qi[r] = q0 + warp * 16 + g + 8 * r;
    const bool valid = qi[r] < a.seq_len;
    fi[r] = valid ? first[qi[r]] : 0;
    row[r] = valid ? RowOf<kMapped>(a.rows, b * a.seq_len + qi[r]) : -1;
    lse2[r] = valid ? lse[row[r] * a.heads + h] * kLog2e : 0.f;
    dlt[r] = valid ? delta[row[r] * a.heads + h] : 0.f;
  }
  float dqacc[HD / 8][4] = {};
  ForEachKeyTile<HD, kMapped>(a, b, q0, c0, sdo + kTile * kLd, [&](int64_t k0, const bf16* sk,
                                                                   const bf16* sv) {
    float s[kTile / 8][4] = {}, dp[kTile / 8][4] = {};
    MulTileT<HD>(s, qf, sk);
    MulTileT<HD>(dp, dof, sv);
    // s becomes dS = P (dP - delta).
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const int64_t j = k0 + nt * 8 + 2 * c + (e & 1);
        const float p =
            Sees(qi[r], fi[r], j, a.seq_len) ? exp2f(s[nt][e] * scale_log2 - lse2[r]) : 0.f;
        s[nt][e] = p * (dp[nt][e] - dlt[r]);
      }
    }
    MulAddTile<HD>(dqacc, s, sk);
  });
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (row[r] < 0) continue;
#pragma unroll
    for (int nd = 0; nd < HD / 8; ++nd) {
      const int64_t col = c0 + nd * 8 + 2 * c;
      StoreOut(dq.data, dq.bf16, row[r] * dq.ld + col, dqacc[nd][2 * r] * scale);
      StoreOut(dq.data, dq.bf16, row[r] * dq.ld + col + 1, dqacc[nd][2 * r + 1] * scale);
    }
  }
}

// Shared bytes: `tiles` bf16 tiles of [kTile][HD + 8], then `floats` floats.
template <int HD>
size_t TileShared(int tiles, int floats = 0) {
  return tiles * kTile * (HD + 8) * sizeof(bf16) + floats * sizeof(float);
}

// Launches kernel on the tile grid with `shared` dynamic bytes.
template <typename Kernel, typename... Args>
void LaunchTiles(Kernel kernel, const AttentionArgs& a, size_t shared, cudaStream_t stream,
                 Args... args) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(shared)));
  kernel<<<dim3(static_cast<unsigned>(CeilDiv(a.seq_len, kTile)), a.heads,
                static_cast<unsigned>(a.batch)),
           kThreads, shared, stream>>>(a, args...);
  CUDA_CHECK_LAUNCH();
}

// Runs f(std::integral_constant<int, HD>) for the supported head sizes.
template <typename F>
void DispatchHeadDim(int head_dim, F&& f) {
  switch (head_dim) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default: LOG(FATAL) << "attention: head_dim " << head_dim << " is not 32, 64 or 128";
  }
}

void CheckAligned(const void* p, int64_t ld, const char* what) {
  CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0 && ld % 8 == 0)
      << "attention " << what << ": bf16 rows must start on 16 bytes";
}

void CheckArgs(const AttentionArgs& a) {
  CHECK(a.first != nullptr) << "attention: no document starts";
  CheckAligned(a.q, a.ldq, "q");
  CheckAligned(a.k, a.ldk, "k");
  CheckAligned(a.v, a.ldv, "v");
}

}  // namespace

void SwigluForward(ConstView gate, ConstView up, OutView y, cudaStream_t stream) {
  if (y.rows * y.cols == 0) return;
  SwigluForwardKernel<<<GridFor(y.rows * y.cols, 256), 256, 0, stream>>>(gate, up, y);
  CUDA_CHECK_LAUNCH();
}

void SwigluBackward(ConstView gate, ConstView up, ConstView dy, OutView dgate, OutView dup,
                    cudaStream_t stream) {
  if (dy.rows * dy.cols == 0) return;
  SwigluBackwardKernel<<<GridFor(dy.rows * dy.cols, 256), 256, 0, stream>>>(gate, up, dy, dgate,
                                                                           dup);
  CUDA_CHECK_LAUNCH();
}

void DocFirst(const uint8_t* doc_start, int64_t batch, int64_t seq_len, int32_t* first,
              cudaStream_t stream) {
  if (batch * seq_len == 0) return;
  DocFirstKernel<<<static_cast<unsigned>(batch), 1024, 0, stream>>>(doc_start, seq_len, first);
  CUDA_CHECK_LAUNCH();
}

void Rope(int64_t batch, int64_t seq_len, const int32_t* rows, const int32_t* first, int head_dim,
          float theta, bool inverse, ConstView x, View y, cudaStream_t stream) {
  const int64_t n = batch * seq_len;
  if (n * x.cols == 0) return;
  DispatchRowMap(rows, [&](auto mapped) {
    RopeKernel<decltype(mapped)::value><<<GridFor(n * x.cols / 2, 256), 256, 0, stream>>>(
        n, seq_len, rows, first, head_dim, std::log2(theta), inverse ? -1.f : 1.f, x, y);
  });
  CUDA_CHECK_LAUNCH();
}

void AttentionStep(const AttentionStepArgs& a, OutView out, cudaStream_t stream) {
  if (a.rows == 0) return;
  constexpr int kStepThreads = 128;
  const size_t shared = (a.head_dim + a.max_len + 32) * sizeof(float);
  CUDA_CHECK(cudaFuncSetAttribute(AttentionStepKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(shared)));
  AttentionStepKernel<<<dim3(static_cast<unsigned>(a.rows), a.heads), kStepThreads, shared,
                        stream>>>(a, out);
  CUDA_CHECK_LAUNCH();
  AdvanceLengthsKernel<<<GridFor(a.rows, 256), 256, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

void AttentionForward(const AttentionArgs& a, OutView out, float* lse, cudaStream_t stream) {
  if (a.batch * a.seq_len == 0) return;
  CheckArgs(a);
  DispatchHeadDim(a.head_dim, [&](auto hd) {
    constexpr int HD = decltype(hd)::value;
    DispatchRowMap(a.rows, [&](auto mapped) {
      LaunchTiles(AttentionForwardKernel<HD, decltype(mapped)::value>, a, TileShared<HD>(5),
                  stream, out, lse);
    });
  });
}

void AttentionBackward(const AttentionArgs& a, Operand out, const float* lse,
                       const __nv_bfloat16* dout, int64_t lddo, OutView dq, OutView dk,
                       OutView dv, cudaStream_t stream) {
  const int64_t n = a.batch * a.seq_len;
  if (n == 0) return;
  CheckArgs(a);
  CheckAligned(dout, lddo, "dout");
  Scratch scratch(stream);
  float* delta = scratch.Alloc<float>(n * a.heads);
  DispatchHeadDim(a.head_dim, [&](auto hd) {
    constexpr int HD = decltype(hd)::value;
    AttentionDeltaKernel<HD><<<GridFor(n * a.heads * 32, 256), 256, 0, stream>>>(
        n, a.heads, out, dout, lddo, delta);
    CUDA_CHECK_LAUNCH();
    DispatchRowMap(a.rows, [&](auto mapped) {
      constexpr bool kMapped = decltype(mapped)::value;
      LaunchTiles(AttentionKeyGradKernel<HD, kMapped>, a, TileShared<HD>(6, 4 * kTile), stream,
                  lse, delta, dout, lddo, dk, dv);
      LaunchTiles(AttentionQueryGradKernel<HD, kMapped>, a, TileShared<HD>(6), stream, lse,
                  delta, dout, lddo, dq);
    });
  });
}

}  // namespace modamba::cuda
