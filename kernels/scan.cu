// The fused selective scan (Mamba-1) with document resets.
//
// Work split: a block owns one sequence and kCB channels; inside it a thread
// owns kCPT channels x kSPT states (kNSG = 16 / kSPT threads share a channel,
// in adjacent lanes) and walks time sequentially, so the recurrence needs no
// cross-thread scan. Inputs arrive in shared memory tile by tile through
// cp.async, double-buffered; each tile first turns delta_raw into
// delta = softplus(delta_raw + dt_bias[group]) in place. Sums over states
// (y = C.h, and d(delta), du in the backward) reduce across the kNSG lanes
// of a channel with shuffles; sums over channels (dB, dC) reduce in registers
// over a thread's channels, then across lanes with a reduce-scatter, then
// across warps in shared memory, then across channel blocks in a final
// kernel. Every sum has a fixed order: results are bitwise reproducible.
//
// Backward: a forward pass saves the state every kCkpt steps (a few per
// sequence, not per step). The backward then walks kCkpt-step tiles from the
// last to the first: it re-runs the tile forward from its saved state,
// keeping the state every kSub steps in shared memory, and for each kSub-step
// sub-tile (last first) re-runs those steps keeping every state in
// registers, then runs the adjoint recurrence backwards through them.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {
namespace {

constexpr int kS = kScanMaxState;  // states, padded
constexpr int kCkpt = 64;          // steps between saved states
constexpr int kSub = 8;            // steps whose states a thread holds in registers
constexpr int kFwdTile = 32;       // steps per forward tile
constexpr int kMaxGroups = 8;      // dt_bias rows (modalities)
static_assert(kCkpt % kFwdTile == 0 && kCkpt % kSub == 0, "tiles must nest");

constexpr int Log2(int v) { return v <= 1 ? 0 : 1 + Log2(v / 2); }

template <int CPT, int NSG, int CB>
struct Cfg {
  static constexpr int kCPT = CPT;             // channels per thread
  static constexpr int kNSG = NSG;             // threads (lanes) per channel
  static constexpr int kCB = CB;               // channels per block
  static constexpr int kSPT = kS / NSG;        // states per thread
  static constexpr int kNT = CB / CPT * NSG;   // threads per block
  static constexpr int kWarps = kNT / 32;
  static constexpr int kLogNSG = Log2(NSG);
  static_assert(kNT % 32 == 0 && 32 % NSG == 0 && CPT <= NSG, "lane layout");
  static_assert(kNT % CB == 0, "per-channel passes give each thread one channel");
  static_assert(2 * kSPT == 32 / NSG, "dB/dC reduce-scatter leaves one value per lane");
};

using FwdCfg = Cfg<2, 4, 64>;
using BwdCfg = Cfg<2, 4, 64>;

struct Params {
  int64_t batch, seq_len, e_dim, s_dim;
  const uint8_t* doc_start;
  const int32_t* group;
  int groups;
  const float *u, *dr, *b, *c, *z;
  int64_t ldu, lddr, ldb, ldc, ldz;
  bool vec_u, vec_dr, vec_b, vec_c, vec_z;
  const float *dt_bias, *a_log, *d;
  float* y;
  int64_t ldy;
  float* ckpt;  // [batch][num checkpoints][E][kS]: state before step j * kCkpt
  // Backward only.
  const float* dy;
  int64_t lddy;
  bool vec_dy;
  float *du, *ddr, *dz;
  int64_t lddu, ldddr, lddz;
  float* dbc_part;  // [channel blocks][N][2 kS]: dB then dC partial sums
  float* part_da;   // [batch][E][kS]
  float* part_dd;   // [batch][E]
  float* part_dtb;  // [batch][groups][E]
};

__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Copies rows [row0, row0 + rows_valid) x columns [col0, col0 + cols_valid)
// of a strided matrix into a dense [ROWS][W] tile, zero-filling the rest.
template <int ROWS, int W, int NT>
__device__ __forceinline__ void LoadTile(float* dst, const float* src, int64_t ld, bool vec,
                                         int64_t row0, int rows_valid, int64_t col0,
                                         int cols_valid) {
  if (vec) {
    constexpr int W4 = W / 4;
    for (int q = threadIdx.x; q < ROWS * W4; q += NT) {
      const int r = q / W4, c = (q % W4) * 4;
      float* d = dst + r * W + c;
      const float* s = src + (row0 + r) * ld + col0 + c;
      if (r < rows_valid && c + 4 <= cols_valid) {
        CpAsync16(d, s);
      } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (r < rows_valid && c + k < cols_valid) {
            CpAsync4(d + k, s + k);
          } else {
            d[k] = 0.f;
          }
        }
      }
    }
  } else {
    for (int q = threadIdx.x; q < ROWS * W; q += NT) {
      const int r = q / W, c = q % W;
      if (r < rows_valid && c < cols_valid) {
        CpAsync4(dst + q, src + (row0 + r) * ld + col0 + c);
      } else {
        dst[q] = 0.f;
      }
    }
  }
}

// Sums v[0..N) over the lanes that differ in bits [LO, LO + log2 N); after
// it v[0] holds the total of value ((lane >> LO) & (N - 1)).
template <int N, int LO, int SIZE>
__device__ __forceinline__ void ReduceScatter(float (&v)[SIZE], int lane) {
  if constexpr (N > 1) {
    constexpr int kHalf = N / 2;
    constexpr int kBit = LO + Log2(N) - 1;
    const bool hi = (lane >> kBit) & 1;
#pragma unroll
    for (int i = 0; i < kHalf; ++i) {
      const float send = hi ? v[i] : v[i + kHalf];
      const float keep = hi ? v[i + kHalf] : v[i];
      v[i] = keep + __shfl_xor_sync(kFullMask, send, 1 << kBit);
    }
    ReduceScatter<kHalf, LO, SIZE>(v, lane);
  }
}

// Per-channel sums over the kNSG lanes of each channel. Afterwards v[0] is
// the total of channel ChannelOf(lane); Writer(lane) marks one lane each.
template <class C>
struct ChannelSum {
  static constexpr int kSplitBits = C::kLogNSG - Log2(C::kCPT);
  __device__ __forceinline__ static void Run(float (&v)[C::kCPT], int lane) {
    ReduceScatter<C::kCPT, kSplitBits, C::kCPT>(v, lane);
#pragma unroll
    for (int o = 1; o < (1 << kSplitBits); o <<= 1) v[0] += __shfl_xor_sync(kFullMask, v[0], o);
  }
  __device__ __forceinline__ static int ChannelOf(int lane) {
    return ((lane & (C::kNSG - 1)) >> kSplitBits);
  }
  __device__ __forceinline__ static bool Writer(int lane) {
    return (lane & ((1 << kSplitBits) - 1)) == 0;
  }
};

__device__ __forceinline__ int GroupOf(const Params& p, int64_t n) {
  return p.group != nullptr ? p.group[n] : 0;
}

// sbias[g][ch] = dt_bias[g][e0 + ch] (zero past the last channel).
template <int CB, int NT>
__device__ __forceinline__ void LoadBias(const Params& p, int64_t e0, int cols_valid,
                                         float* sbias) {
  for (int q = threadIdx.x; q < p.groups * CB; q += NT) {
    const int g = q / CB, ch = q % CB;
    sbias[q] = ch < cols_valid ? p.dt_bias[g * p.e_dim + e0 + ch] : 0.f;
  }
}

// ------------------------------------------------------------------ forward
// kCkptMode: only the recurrence, saving the state every kCkpt steps (the
// backward's first pass); otherwise also y.
template <class C, bool kCkptMode>
__global__ void __launch_bounds__(C::kNT) ScanForwardKernel(Params p) {
  constexpr int T = kFwdTile, CB = C::kCB, NT = C::kNT, CPT = C::kCPT, SPT = C::kSPT;
  constexpr int kStage = 3 * T * CB + 2 * T * kS;
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  float* sy = smem + 2 * kStage;         // [T][CB]
  float* sD = sy + T * CB;               // [CB]
  float* sbias = sD + CB;                // [groups][CB]
  int* sreset = reinterpret_cast<int*>(sbias + kMaxGroups * CB);  // [T]

  const int tid = threadIdx.x, lane = tid & 31;
  const int sg = tid % C::kNSG, cg = tid / C::kNSG;
  const int64_t L = p.seq_len, E = p.e_dim, bi = blockIdx.y, e0 = int64_t(blockIdx.x) * CB;
  const int cols_valid = static_cast<int>(Min64(CB, E - e0));
  const int64_t row_base = bi * L;

  float a2[CPT][SPT], h[CPT][SPT];
#pragma unroll
  for (int c = 0; c < CPT; ++c) {
#pragma unroll
    for (int i = 0; i < SPT; ++i) {
      const int64_t e = e0 + cg * CPT + c;
      const int s = sg * SPT + i;
      a2[c][i] = (e < E && s < p.s_dim) ? -expf(p.a_log[e * p.s_dim + s]) * kLog2e : 0.f;
      h[c][i] = 0.f;
    }
  }
  for (int ch = tid; ch < CB; ch += NT) sD[ch] = ch < cols_valid ? p.d[e0 + ch] : 0.f;
  LoadBias<CB, NT>(p, e0, cols_valid, sbias);

  auto load = [&](int tile, int stage) {
    float* st = smem + stage * kStage;
    const int64_t t0 = int64_t(tile) * T;
    const int rows = static_cast<int>(Min64(T, L - t0));
    const int64_t row0 = row_base + t0;
    LoadTile<T, CB, NT>(st, p.u, p.ldu, p.vec_u, row0, rows, e0, cols_valid);
    LoadTile<T, CB, NT>(st + T * CB, p.dr, p.lddr, p.vec_dr, row0, rows, e0, cols_valid);
    LoadTile<T, kS, NT>(st + 3 * T * CB, p.b, p.ldb, p.vec_b, row0, rows, 0, p.s_dim);
    if (!kCkptMode) {
      LoadTile<T, CB, NT>(st + 2 * T * CB, p.z, p.ldz, p.vec_z, row0, rows, e0, cols_valid);
      LoadTile<T, kS, NT>(st + 3 * T * CB + T * kS, p.c, p.ldc, p.vec_c, row0, rows, 0, p.s_dim);
    }
    CpAsyncCommit();
  };

  const int tiles = static_cast<int>(CeilDiv(L, T));
  const int64_t num_ckpt = CeilDiv(L, kCkpt);
  load(0, 0);
  for (int tile = 0; tile < tiles; ++tile) {
    const int stage = tile & 1;
    if (tile + 1 < tiles) {
      load(tile + 1, stage ^ 1);
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    float* su = smem + stage * kStage;
    float* sdl = su + T * CB;
    float* sz = su + 2 * T * CB;
    float* sB = su + 3 * T * CB;
    float* sC = sB + T * kS;
    const int64_t t0 = int64_t(tile) * T;
    const int rows = static_cast<int>(Min64(T, L - t0));

    for (int q = tid; q < T * CB; q += NT) {
      const int r = q / CB, ch = q % CB;
      float delta = 0.f;
      if (r < rows && ch < cols_valid) {
        delta = Softplus(sdl[q] + sbias[GroupOf(p, row_base + t0 + r) * CB + ch]);
      }
      sdl[q] = delta;
    }
    for (int r = tid; r < T; r += NT) {
      sreset[r] = (t0 + r == 0) || (r < rows && p.doc_start[row_base + t0 + r] != 0);
    }
    if (kCkptMode && t0 % kCkpt == 0) {
      float* dst = p.ckpt + ((bi * num_ckpt + t0 / kCkpt) * E) * kS;
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int64_t e = e0 + cg * CPT + c;
        if (e >= E) continue;
#pragma unroll
        for (int i = 0; i < SPT; ++i) dst[e * kS + sg * SPT + i] = h[c][i];
      }
    }
    __syncthreads();

    // Unrolled, so that loads and exponentials of later steps overlap the
    // recurrence of earlier ones (only h carries a dependence).
#pragma unroll
    for (int r = 0; r < T; ++r) {
      float bv[SPT], cv[SPT];
#pragma unroll
      for (int i = 0; i < SPT; ++i) {
        bv[i] = sB[r * kS + sg * SPT + i];
        if (!kCkptMode) cv[i] = sC[r * kS + sg * SPT + i];
      }
      const bool reset = sreset[r] != 0;
      float yp[CPT];
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int ch = cg * CPT + c;
        const float delta = sdl[r * CB + ch];
        const float du = delta * su[r * CB + ch];
        yp[c] = 0.f;
#pragma unroll
        for (int i = 0; i < SPT; ++i) {
          const float a = reset ? 0.f : Exp2(delta * a2[c][i]);
          h[c][i] = fmaf(a, h[c][i], du * bv[i]);
          if (!kCkptMode) yp[c] = fmaf(cv[i], h[c][i], yp[c]);
        }
      }
      if (!kCkptMode) {
        ChannelSum<C>::Run(yp, lane);
        if (ChannelSum<C>::Writer(lane)) sy[r * CB + cg * CPT + ChannelSum<C>::ChannelOf(lane)] = yp[0];
      }
    }

    if (!kCkptMode) {
      __syncthreads();
      for (int q = tid; q < T * CB; q += NT) {
        const int r = q / CB, ch = q % CB;
        if (r >= rows || ch >= cols_valid) continue;
        const float zz = sz[q];
        const float out = (sy[q] + sD[ch] * su[q]) * (zz * Sigmoid(zz));
        p.y[(row_base + t0 + r) * p.ldy + e0 + ch] = out;
      }
    }
    __syncthreads();
  }
}

// ----------------------------------------------------------------- backward
template <class C>
struct BwdSmem {
  static constexpr int K = kSub, CB = C::kCB;
  static constexpr int kStage = 4 * K * CB + 2 * K * kS + K;  // u, delta, z, dy, B, C, reset
  static constexpr int kSubsPerCkpt = kCkpt / K;
  static constexpr int kSlots = C::kNT / CB;                  // threads per channel in passes
  // Offsets in floats.
  static constexpr int kSig = 2 * kStage;
  static constexpr int kY = kSig + K * CB;
  static constexpr int kDyv = kY + K * CB;
  static constexpr int kDDelta = kDyv + K * CB;
  static constexpr int kDu = kDDelta + K * CB;
  static constexpr int kRed = kDu + K * CB;                          // [K][warps][32]
  static constexpr int kSubCkpt = kRed + K * C::kWarps * 32;         // [subs][NT][CPT*SPT]
  static constexpr int kDtb = kSubCkpt + kSubsPerCkpt * C::kNT * C::kCPT * C::kSPT;
  static constexpr int kDd = kDtb + kSlots * kMaxGroups * CB;
  static constexpr int kD = kDd + kSlots * CB;
  static constexpr int kBias = kD + CB;                              // [groups][CB]
  static constexpr int kTotal = kBias + kMaxGroups * CB;
};

template <class C>
__global__ void __launch_bounds__(C::kNT, 2) ScanBackwardKernel(Params p) {
  using SM = BwdSmem<C>;
  constexpr int K = kSub, CB = C::kCB, NT = C::kNT, CPT = C::kCPT, SPT = C::kSPT;
  constexpr int kSubs = SM::kSubsPerCkpt;
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  float* ssig = smem + SM::kSig;
  float* sy = smem + SM::kY;
  float* sdyv = smem + SM::kDyv;
  float* sdd = smem + SM::kDDelta;
  float* sdu = smem + SM::kDu;
  float* sred = smem + SM::kRed;
  float* ssub = smem + SM::kSubCkpt;
  float* sdtb = smem + SM::kDtb;
  float* sdD = smem + SM::kDd;
  float* sD = smem + SM::kD;
  float* sbias = smem + SM::kBias;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int sg = tid % C::kNSG, cg = tid / C::kNSG;
  const int slot = tid / CB, my_ch = tid % CB;  // per-channel passes: fixed channel per thread
  const int64_t L = p.seq_len, E = p.e_dim, N = p.batch * L;
  const int64_t bi = blockIdx.y, e0 = int64_t(blockIdx.x) * CB;
  const int cols_valid = static_cast<int>(Min64(CB, E - e0));
  const int64_t row_base = bi * L;

  float A[CPT][SPT], g[CPT][SPT], dA[CPT][SPT], h[CPT][SPT];
#pragma unroll
  for (int c = 0; c < CPT; ++c) {
#pragma unroll
    for (int i = 0; i < SPT; ++i) {
      const int64_t e = e0 + cg * CPT + c;
      const int s = sg * SPT + i;
      A[c][i] = (e < E && s < p.s_dim) ? -expf(p.a_log[e * p.s_dim + s]) : 0.f;
      g[c][i] = dA[c][i] = h[c][i] = 0.f;
    }
  }
  for (int q = tid; q < SM::kSlots * kMaxGroups * CB; q += NT) sdtb[q] = 0.f;
  for (int q = tid; q < SM::kSlots * CB; q += NT) sdD[q] = 0.f;
  for (int ch = tid; ch < CB; ch += NT) sD[ch] = ch < cols_valid ? p.d[e0 + ch] : 0.f;
  LoadBias<CB, NT>(p, e0, cols_valid, sbias);

  // The op sequence: for each checkpoint tile, last first: its sub-tiles
  // forward (recording sub-tile states), then its sub-tiles backward.
  const int num_ckpt = static_cast<int>(CeilDiv(L, kCkpt));
  const int last_subs = static_cast<int>(CeilDiv(L - int64_t(num_ckpt - 1) * kCkpt, K));
  const int num_ops = 2 * last_subs + (num_ckpt - 1) * 2 * kSubs;
  struct Op {
    int tile, sub;
    bool fwd;
  };
  auto op_at = [&](int i) {
    Op op;
    int subs = last_subs, local = i;
    op.tile = num_ckpt - 1;
    if (i >= 2 * last_subs) {
      const int j = i - 2 * last_subs;
      op.tile = num_ckpt - 2 - j / (2 * kSubs);
      local = j % (2 * kSubs);
      subs = kSubs;
    }
    op.fwd = local < subs;
    op.sub = op.fwd ? local : 2 * subs - 1 - local;
    return op;
  };
  auto load = [&](int i, int stage) {
    const Op op = op_at(i);
    float* st = smem + stage * SM::kStage;
    const int64_t t0 = int64_t(op.tile) * kCkpt + op.sub * K;
    const int rows = static_cast<int>(Min64(K, L - t0));
    const int64_t row0 = row_base + t0;
    LoadTile<K, CB, NT>(st, p.u, p.ldu, p.vec_u, row0, rows, e0, cols_valid);
    LoadTile<K, CB, NT>(st + K * CB, p.dr, p.lddr, p.vec_dr, row0, rows, e0, cols_valid);
    LoadTile<K, kS, NT>(st + 4 * K * CB, p.b, p.ldb, p.vec_b, row0, rows, 0, p.s_dim);
    if (!op.fwd) {
      LoadTile<K, CB, NT>(st + 2 * K * CB, p.z, p.ldz, p.vec_z, row0, rows, e0, cols_valid);
      LoadTile<K, CB, NT>(st + 3 * K * CB, p.dy, p.lddy, p.vec_dy, row0, rows, e0, cols_valid);
      LoadTile<K, kS, NT>(st + 4 * K * CB + K * kS, p.c, p.ldc, p.vec_c, row0, rows, 0, p.s_dim);
    }
    float* sreset = st + 4 * K * CB + 2 * K * kS;
    for (int r = tid; r < K; r += NT) {
      sreset[r] = (t0 + r == 0) || (r < rows && p.doc_start[row0 + r] != 0) ? 1.f : 0.f;
    }
    CpAsyncCommit();
  };

  load(0, 0);
  for (int it = 0; it < num_ops; ++it) {
    const int stage = it & 1;
    if (it + 1 < num_ops) {
      load(it + 1, stage ^ 1);
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const Op op = op_at(it);
    float* su = smem + stage * SM::kStage;
    float* sdl = su + K * CB;
    float* sz = su + 2 * K * CB;
    float* sdy = su + 3 * K * CB;
    float* sB = su + 4 * K * CB;
    float* sC = sB + K * kS;
    const float* sreset = sC + K * kS;
    const int64_t t0 = int64_t(op.tile) * kCkpt + op.sub * K;
    const int rows = static_cast<int>(Min64(K, L - t0));

    for (int q = tid; q < K * CB; q += NT) {
      const int r = q / CB, ch = q % CB;
      float delta = 0.f, sig = 0.f;
      if (r < rows && ch < cols_valid) {
        const float pre = sdl[q] + sbias[GroupOf(p, row_base + t0 + r) * CB + ch];
        delta = Softplus(pre);
        sig = Sigmoid(pre);
      }
      sdl[q] = delta;
      if (!op.fwd) ssig[q] = sig;
    }
    if (op.fwd && op.sub == 0) {  // the tile's saved state
      const float* src = p.ckpt + ((bi * num_ckpt + op.tile) * E) * kS;
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int64_t e = e0 + cg * CPT + c;
#pragma unroll
        for (int i = 0; i < SPT; ++i) h[c][i] = e < E ? src[e * kS + sg * SPT + i] : 0.f;
      }
    }
    __syncthreads();

    float* my_sub = ssub + (op.sub * NT + tid) * (CPT * SPT);
    if (op.fwd) {
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
#pragma unroll
        for (int i = 0; i < SPT; ++i) my_sub[c * SPT + i] = h[c][i];
      }
#pragma unroll
      for (int r = 0; r < K; ++r) {
        const bool reset = sreset[r] != 0.f;
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
          const int ch = cg * CPT + c;
          const float delta = sdl[r * CB + ch];
          const float du = delta * su[r * CB + ch];
          const float delta2 = delta * kLog2e;
#pragma unroll
          for (int i = 0; i < SPT; ++i) {
            const float a = reset ? 0.f : Exp2(delta2 * A[c][i]);
            h[c][i] = fmaf(a, h[c][i], du * sB[r * kS + sg * SPT + i]);
          }
        }
      }
    } else {
      // Re-run the sub-tile, keeping every state.
      float hs[K][CPT][SPT], h0[CPT][SPT];
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
#pragma unroll
        for (int i = 0; i < SPT; ++i) h0[c][i] = my_sub[c * SPT + i];
      }
#pragma unroll
      for (int r = 0; r < K; ++r) {
        const bool reset = sreset[r] != 0.f;
        float yp[CPT];
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
          const int ch = cg * CPT + c;
          const float delta = sdl[r * CB + ch];
          const float du = delta * su[r * CB + ch];
          const float delta2 = delta * kLog2e;
          yp[c] = 0.f;
#pragma unroll
          for (int i = 0; i < SPT; ++i) {
            const float prev = r > 0 ? hs[r - 1][c][i] : h0[c][i];
            const float a = reset ? 0.f : Exp2(delta2 * A[c][i]);
            hs[r][c][i] = fmaf(a, prev, du * sB[r * kS + sg * SPT + i]);
            yp[c] = fmaf(sC[r * kS + sg * SPT + i], hs[r][c][i], yp[c]);
          }
        }
        ChannelSum<C>::Run(yp, lane);
        if (ChannelSum<C>::Writer(lane)) sy[r * CB + cg * CPT + ChannelSum<C>::ChannelOf(lane)] = yp[0];
      }
      __syncthreads();

      // Gate and skip: dz, and the gradient of the pre-gate output.
      for (int q = tid; q < K * CB; q += NT) {
        const int r = q / CB, ch = q % CB;
        float dyv = 0.f;
        if (r < rows && ch < cols_valid) {
          const float zz = sz[q], uu = su[q], g_out = sdy[q];
          const float sgz = Sigmoid(zz);
          const float yv = sy[q] + sD[ch] * uu;
          p.dz[(row_base + t0 + r) * p.lddz + e0 + ch] = g_out * yv * (sgz * (1.f + zz * (1.f - sgz)));
          dyv = g_out * zz * sgz;
          sdD[slot * CB + ch] += dyv * uu;
        }
        sdyv[q] = dyv;
      }
      __syncthreads();

      // The adjoint recurrence, last step first. g carries dL/dh_t.
#pragma unroll
      for (int r = K - 1; r >= 0; --r) {
        const bool reset = sreset[r] != 0.f;
        float bc[2 * SPT];  // dB then dC partial sums over this thread's channels
        float dd_c[CPT], du_c[CPT];
#pragma unroll
        for (int i = 0; i < 2 * SPT; ++i) bc[i] = 0.f;
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
          const int ch = cg * CPT + c;
          const float delta = sdl[r * CB + ch];
          const float uu = su[r * CB + ch];
          const float dyv = sdyv[r * CB + ch];
          const float delta2 = delta * kLog2e;
          const float du_in = delta * uu;
          dd_c[c] = 0.f;
          du_c[c] = 0.f;
#pragma unroll
          for (int i = 0; i < SPT; ++i) {
            const float bs = sB[r * kS + sg * SPT + i];
            const float cs = sC[r * kS + sg * SPT + i];
            const float prev = r > 0 ? hs[r - 1][c][i] : h0[c][i];
            const float a = reset ? 0.f : Exp2(delta2 * A[c][i]);
            const float gt = fmaf(dyv, cs, g[c][i]);
            bc[SPT + i] = fmaf(dyv, hs[r][c][i], bc[SPT + i]);
            bc[i] = fmaf(gt, du_in, bc[i]);
            const float ahp = a * prev;
            dd_c[c] = fmaf(gt, fmaf(bs, uu, A[c][i] * ahp), dd_c[c]);
            du_c[c] = fmaf(gt * delta, bs, du_c[c]);
            dA[c][i] = fmaf(gt * delta, ahp, dA[c][i]);
            g[c][i] = gt * a;
          }
        }
        ChannelSum<C>::Run(dd_c, lane);
        ChannelSum<C>::Run(du_c, lane);
        if (ChannelSum<C>::Writer(lane)) {
          const int ch = cg * CPT + ChannelSum<C>::ChannelOf(lane);
          sdd[r * CB + ch] = dd_c[0];
          sdu[r * CB + ch] = du_c[0];
        }
        ReduceScatter<2 * SPT, C::kLogNSG, 2 * SPT>(bc, lane);
        sred[(r * C::kWarps + warp) * 32 + lane] = bc[0];
      }
      __syncthreads();

      for (int q = tid; q < K * CB; q += NT) {
        const int r = q / CB, ch = q % CB;
        if (r >= rows || ch >= cols_valid) continue;
        const int64_t n = row_base + t0 + r;
        const float ddr = sdd[q] * ssig[q];
        p.ddr[n * p.ldddr + e0 + ch] = ddr;
        p.du[n * p.lddu + e0 + ch] = fmaf(sdyv[q], sD[ch], sdu[q]);
        const int grp = p.group != nullptr ? p.group[n] : 0;
        sdtb[(slot * kMaxGroups + grp) * CB + ch] += ddr;
      }
      for (int q = tid; q < K * 32; q += NT) {
        const int r = q >> 5, ln = q & 31;
        if (r >= rows) continue;
        const int v = ln >> C::kLogNSG, s = (ln & (C::kNSG - 1)) * SPT + (v % SPT);
        if (s >= p.s_dim) continue;
        float sum = 0.f;
        for (int w = 0; w < C::kWarps; ++w) sum += sred[(r * C::kWarps + w) * 32 + ln];
        p.dbc_part[(blockIdx.x * N + row_base + t0 + r) * (2 * kS) + (v < SPT ? 0 : kS) + s] = sum;
      }
    }
    __syncthreads();
  }

  // Per-sequence parameter partials.
#pragma unroll
  for (int c = 0; c < CPT; ++c) {
    const int64_t e = e0 + cg * CPT + c;
    if (e >= E) continue;
#pragma unroll
    for (int i = 0; i < SPT; ++i) {
      const int s = sg * SPT + i;
      if (s < p.s_dim) p.part_da[(bi * E + e) * kS + s] = dA[c][i] * A[c][i];
    }
  }
  if (slot == 0 && my_ch < cols_valid) {
    const int64_t e = e0 + my_ch;
    float dd = 0.f;
    for (int k = 0; k < SM::kSlots; ++k) dd += sdD[k * CB + my_ch];
    p.part_dd[bi * E + e] = dd;
    for (int gi = 0; gi < p.groups; ++gi) {
      float s = 0.f;
      for (int k = 0; k < SM::kSlots; ++k) s += sdtb[(k * kMaxGroups + gi) * CB + my_ch];
      p.part_dtb[(bi * p.groups + gi) * E + e] = s;
    }
  }
}

// db[n][s] = sum over channel blocks (in order) of the partial dB; dc likewise.
__global__ void DbcReduceKernel(const float* part, int blocks, int64_t n_rows, int s_dim,
                                float* db, int64_t lddb, float* dc, int64_t lddc) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n_rows * 2 * s_dim) return;
  const int64_t n = i / (2 * s_dim);
  const int k = static_cast<int>(i % (2 * s_dim));
  const bool is_c = k >= s_dim;
  const int s = is_c ? k - s_dim : k;
  float sum = 0.f;
  for (int b = 0; b < blocks; ++b) sum += part[(b * n_rows + n) * (2 * kS) + (is_c ? kS : 0) + s];
  if (is_c) {
    dc[n * lddc + s] = sum;
  } else {
    db[n * lddb + s] = sum;
  }
}

// Parameter gradients: sums over sequences, in order, added to the grads.
__global__ void ScanParamReduceKernel(const float* part_da, const float* part_dd,
                                      const float* part_dtb, int64_t batch, int64_t e_dim,
                                      int s_dim, int groups, float* da_log, float* dd,
                                      float* ddt_bias) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t n_da = e_dim * s_dim, n_dtb = groups * e_dim;
  if (i < n_da) {
    const int64_t e = i / s_dim, s = i % s_dim;
    float sum = 0.f;
    for (int64_t b = 0; b < batch; ++b) sum += part_da[(b * e_dim + e) * kS + s];
    da_log[i] += sum;
  } else if (i < n_da + e_dim) {
    const int64_t e = i - n_da;
    float sum = 0.f;
    for (int64_t b = 0; b < batch; ++b) sum += part_dd[b * e_dim + e];
    dd[e] += sum;
  } else if (i < n_da + e_dim + n_dtb) {
    const int64_t j = i - n_da - e_dim;  // g * E + e
    float sum = 0.f;
    for (int64_t b = 0; b < batch; ++b) sum += part_dtb[b * n_dtb + j];
    ddt_bias[j] += sum;
  }
}

bool RowsAligned(const ConstView& v) {
  return reinterpret_cast<uintptr_t>(v.data) % 16 == 0 && v.ld % 4 == 0;
}

Params MakeParams(const ScanArgs& a) {
  const int groups = static_cast<int>(a.dt_groups);
  CHECK(a.s_dim >= 1 && a.s_dim <= kS) << "scan: d_state " << a.s_dim << " outside [1, " << kS
                                       << "]";
  CHECK(groups >= 1 && groups <= kMaxGroups) << "scan: " << groups << " dt_bias groups";
  CHECK(groups == 1 || a.group != nullptr) << "scan: routed dt_bias needs the row groups";
  CHECK_LE(a.batch, 65535) << "scan: batch";
  Params p{};
  p.batch = a.batch;
  p.seq_len = a.seq_len;
  p.e_dim = a.e_dim;
  p.s_dim = a.s_dim;
  p.doc_start = a.doc_start;
  p.group = groups > 1 ? a.group : nullptr;
  p.groups = groups;
  p.u = a.u.data;
  p.dr = a.delta_raw.data;
  p.b = a.b.data;
  p.c = a.c.data;
  p.z = a.z.data;
  p.ldu = a.u.ld;
  p.lddr = a.delta_raw.ld;
  p.ldb = a.b.ld;
  p.ldc = a.c.ld;
  p.ldz = a.z.ld;
  p.vec_u = RowsAligned(a.u);
  p.vec_dr = RowsAligned(a.delta_raw);
  p.vec_b = RowsAligned(a.b);
  p.vec_c = RowsAligned(a.c);
  p.vec_z = RowsAligned(a.z);
  p.dt_bias = a.dt_bias;
  p.a_log = a.a_log;
  p.d = a.d;
  return p;
}

template <class C, bool kCkptMode>
void LaunchForward(const Params& p, cudaStream_t stream) {
  constexpr int T = kFwdTile;
  constexpr size_t kSmem =
      sizeof(float) * (2 * (3 * T * C::kCB + 2 * T * kS) + T * C::kCB + C::kCB +
                       kMaxGroups * C::kCB + T);
  auto kernel = ScanForwardKernel<C, kCkptMode>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(kSmem)));
  dim3 grid(static_cast<unsigned>(CeilDiv(p.e_dim, C::kCB)), static_cast<unsigned>(p.batch));
  kernel<<<grid, C::kNT, kSmem, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void ScanForward(const ScanArgs& a, View y, cudaStream_t stream) {
  if (a.batch * a.seq_len == 0 || a.e_dim == 0) return;
  Params p = MakeParams(a);
  p.y = y.data;
  p.ldy = y.ld;
  LaunchForward<FwdCfg, false>(p, stream);
}

void ScanBackward(const ScanArgs& a, const ScanGradArgs& g, cudaStream_t stream) {
  if (a.batch * a.seq_len == 0 || a.e_dim == 0) return;
  const int groups = static_cast<int>(a.dt_groups);
  Params p = MakeParams(a);
  const int64_t n = a.batch * a.seq_len, e = a.e_dim;
  const int64_t num_ckpt = CeilDiv(a.seq_len, kCkpt);
  const int64_t blocks = CeilDiv(e, BwdCfg::kCB);
  Scratch scratch(stream);
  p.ckpt = scratch.Alloc<float>(a.batch * num_ckpt * e * kS);
  p.dy = g.dy.data;
  p.lddy = g.dy.ld;
  p.vec_dy = RowsAligned(g.dy);
  p.du = g.du.data;
  p.lddu = g.du.ld;
  p.ddr = g.ddelta_raw.data;
  p.ldddr = g.ddelta_raw.ld;
  p.dz = g.dz.data;
  p.lddz = g.dz.ld;
  p.dbc_part = scratch.Alloc<float>(blocks * n * 2 * kS);
  p.part_da = scratch.Alloc<float>(a.batch * e * kS);
  p.part_dd = scratch.Alloc<float>(a.batch * e);
  p.part_dtb = scratch.Alloc<float>(a.batch * groups * e);

  LaunchForward<BwdCfg, true>(p, stream);

  constexpr size_t kSmem = sizeof(float) * BwdSmem<BwdCfg>::kTotal;
  auto kernel = ScanBackwardKernel<BwdCfg>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(kSmem)));
  dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(a.batch));
  kernel<<<grid, BwdCfg::kNT, kSmem, stream>>>(p);
  CUDA_CHECK_LAUNCH();

  const int64_t n_dbc = n * 2 * a.s_dim;
  DbcReduceKernel<<<GridFor(n_dbc, 256, int64_t(1) << 30), 256, 0, stream>>>(
      p.dbc_part, static_cast<int>(blocks), n, static_cast<int>(a.s_dim), g.db.data, g.db.ld,
      g.dc.data, g.dc.ld);
  CUDA_CHECK_LAUNCH();
  const int64_t n_param = e * a.s_dim + e + groups * e;
  ScanParamReduceKernel<<<GridFor(n_param, 256, int64_t(1) << 30), 256, 0, stream>>>(
      p.part_da, p.part_dd, p.part_dtb, a.batch, e, static_cast<int>(a.s_dim), groups, g.da_log,
      g.dd, g.ddt_bias);
  CUDA_CHECK_LAUNCH();
}

}  // namespace modamba::cuda
