// The fused selective scan (Mamba-1) with document resets.
//
// Work split: a block owns one sequence and kCB channels; inside it a thread
// owns kCPT channels x kSPT states (kNSG = 16 / kSPT threads share a channel,
// in adjacent lanes) and walks time sequentially, so the recurrence needs no
// cross-thread scan. Inputs arrive in shared memory tile by tile through
// cp.async. A per-tile pass first computes, once per (token, channel),
// delta = softplus(delta_raw + dt_bias[group]) and the exponent scale
// delta * log2(e), set to +inf at a document start so that the decay
// exp2(scale * A) is exactly 0 there without a branch per state. Sums over
// states reduce across the kNSG lanes of a channel through shared memory:
// each step leaves each lane's share (in the backward, after the shuffles
// that split a thread's channels), summed after the steps (the forward's
// y = C.h; the backward's y, d(delta) and du). Sums over channels (dB,
// dC) reduce in registers over a thread's channels, across lanes with a
// reduce-scatter, across warps in shared memory, then across channel blocks
// in a final kernel. Every sum has a fixed order: results are bitwise
// reproducible.
//
// Backward: a forward pass saves the state every kT steps (kT = one tile).
// The backward then walks the tiles from the last to the first, each held in
// shared memory once: it runs the tile forward from its saved state (keeping
// the state every kSub steps, computing y and so dz and the gate gradient),
// then for each kSub-step sub-tile, last first, re-runs those steps keeping
// states and decays in registers and runs the adjoint recurrence backwards
// through them. The next tile's inputs load while the adjoint runs.
//
// Both passes split sequences into time chunks walked side by side, carrying
// states (forward) and adjoints (backward) across ("Time chunks" below).
//
// Time steps are sequence positions; with a row map (core/backend.h) every
// per-token load and store goes to the row of its position (kMapped, a
// template argument). The map is read from global memory once per tile, not
// per element: while a kernel processes one tile, its first kT threads read
// the rows of the positions two tiles on, and their dt groups when dt_bias is
// routed (with or without a map) one tile on, and stage them in shared memory
// (TileMaps); a tile's loads, stores and bias lookups index through the
// staged copy. Per-position scratch (checkpoints, dB/dC partials) stays by
// position.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {
namespace {

constexpr int kS = kScanMaxState;  // states, padded
constexpr int kT = 32;             // steps per tile, and between saved states
constexpr int kSub = 8;            // steps whose states a thread holds in registers
constexpr int kMaxGroups = 8;      // dt_bias rows (modalities)
static_assert(kT % kSub == 0, "sub-tiles must tile a tile");

constexpr int Log2(int v) { return v <= 1 ? 0 : 1 + Log2(v / 2); }

template <int CPT, int NSG, int CB>
struct Cfg {
  static constexpr int kCPT = CPT;            // channels per thread
  static constexpr int kNSG = NSG;            // threads (lanes) per channel
  static constexpr int kCB = CB;              // channels per block
  static constexpr int kSPT = kS / NSG;       // states per thread
  static constexpr int kNT = CB / CPT * NSG;  // threads per block
  static_assert(kNT % 32 == 0 && 32 % NSG == 0 && CPT <= NSG, "lane layout");
  static_assert(kNT % CB == 0, "per-element passes give each thread one channel");
  static_assert(2 * kSPT == 32 / NSG, "dB/dC reduce-scatter leaves one value per lane");
};

// A strided fp32 input: element (row, col) is ptr[row * ld + col]; vec: every
// row starts 16-byte aligned, so tiles load in 16-byte chunks.
struct Operand {
  const float* ptr;
  int64_t ld;
  bool vec;
  __device__ __forceinline__ const float* Row(int64_t row) const { return ptr + row * ld; }
};

struct Params {
  int64_t batch, seq_len, e_dim, s_dim;
  const uint8_t* doc_start;
  const int32_t* rows;  // row of each position (kMapped only)
  const int32_t* group;
  int groups;
  Operand u, dr, b, c, z;
  const float *dt_bias, *a_log, *d;
  void* y;  // fp32 or bf16 (y_bf16)
  int64_t ldy;
  bool y_bf16, y_vec;  // y_vec: every row's channel quads align for one store
  float* ckpt;  // [batch][tiles][E][kS]: the state before step j * kT
  // Backward only.
  Operand dy;
  float* du;
  void* ddr;  // fp32 or bf16 (ddr_bf16)
  bool ddr_bf16;
  void* dz;  // fp32 or bf16 (dz_bf16)
  bool dz_bf16;
  bool du_vec, ddr_vec, dz_vec;  // as y_vec
  int64_t lddu, ldddr, lddz;
  float* dbc_part;  // [channel blocks][N][2 kS]: dB then dC partial sums
  float* part_da;   // [batch][chunks][E][kS]
  float* part_dd;   // [batch][chunks][E]
  float* part_dtb;  // [batch][chunks][groups][E]
  // Time chunks (see "Time chunks" below).
  int chunks, chunk_tiles;  // chunks per sequence, tiles per chunk
  float* carry_x;           // [batch][chunks][E][kS]: what a chunk passes on, from zero
  float* carry_de;          // [batch][chunks][E]: the chunk's summed exponent scale
};

__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The exponent scale of a step: delta * log2(e), or +inf at a document start
// so that every decay exp2(scale * A) there is exactly 0.
__device__ __forceinline__ float ExponentScale(float delta, bool reset) {
  return reset ? INFINITY : delta * kLog2e;
}

// Tile maps: the row (kMapped) and the dt_bias group (0 unless dt_bias is
// routed) of each of a tile's kT positions, staged in shared memory so that
// the tile's loads, stores and bias lookups read them there rather than the
// map in global memory per element. Tile t's map is slot t % kMapSlots: kT
// rows, then kT groups, both 0 past the sequence's end.
//
// Thread r < kT carries position r's entries through registers: Fetch issues
// the global reads, Put writes the values later, so the reads' latency
// overlaps the work in between instead of holding up a barrier. A group is
// read at its row, so a tile's groups come one iteration after its rows: in
// the iteration that processes tile t, a kernel fetches the rows of the tile
// two ahead (t +- 2) and the groups of the tile one ahead (t +- 1), and puts
// them before the barrier that precedes the next tile's load.
//
// Three slots need no barrier of their own. In iteration t a kernel reads
// tile t's slot and the rows in tile t +- 1's (the next tile's load, and the
// fetch of its groups); it writes the groups in tile t +- 1's slot, which
// only iteration t +- 1 reads, and the rows in tile t +- 2's, which is tile
// t -+ 1's slot, done with at the barrier that ended iteration t -+ 1.
//
// With neither a map nor routed dt_bias, TileMaps does nothing: TileGroup and
// the unmapped TileRow never read the slots.
constexpr int kMapSlots = 3;
constexpr int kMapInts = kMapSlots * 2 * kT;  // TileMaps' shared memory, in ints

template <bool kMapped>
class TileMaps {
 public:
  __device__ __forceinline__ TileMaps(const Params& p, int* smem, int64_t row_base, int tiles)
      : rows_(p.rows),
        group_of_row_(p.group),
        seq_len_(p.seq_len),
        row_base_(row_base),
        smem_(smem),
        tiles_(tiles),
        active_(kMapped || p.group != nullptr) {}

  __device__ __forceinline__ int* Slot(int tile) const {
    return smem_ + (tile % kMapSlots) * (2 * kT);
  }

  // Stages the rows of tiles first and second and the groups of first
  // (second may be out of range); has a barrier.
  __device__ __forceinline__ void Start(int first, int second) {
    if (!active_) return;
    Fetch(first, -1);
    Put(first, -1);
    Fetch(second, -1);
    Put(second, -1);
    __syncthreads();
    Fetch(-1, first);
    Put(-1, first);
  }

  // Reads the rows of rows_tile and the groups of groups_tile (whose rows
  // must be staged) into registers; an out-of-range tile is skipped.
  __device__ __forceinline__ void Fetch(int rows_tile, int groups_tile) {
    if (!active_) return;
    const int r = threadIdx.x;
    if (kMapped && InRange(rows_tile)) {
      row_ = r < Steps(rows_tile) ? static_cast<int>(RowOf<true>(rows_, Pos0(rows_tile) + r)) : 0;
    }
    if (InRange(groups_tile)) {
      group_ = 0;
      if (group_of_row_ != nullptr && r < Steps(groups_tile)) {
        group_ = group_of_row_[kMapped ? int64_t(Slot(groups_tile)[r]) : Pos0(groups_tile) + r];
      }
    }
  }

  // Writes what the matching Fetch read.
  __device__ __forceinline__ void Put(int rows_tile, int groups_tile) const {
    const int r = threadIdx.x;
    if (!active_ || r >= kT) return;
    if (kMapped && InRange(rows_tile)) Slot(rows_tile)[r] = row_;
    if (InRange(groups_tile)) Slot(groups_tile)[kT + r] = group_;
  }

 private:
  __device__ __forceinline__ bool InRange(int tile) const { return tile >= 0 && tile < tiles_; }
  __device__ __forceinline__ int64_t Pos0(int tile) const { return row_base_ + int64_t(tile) * kT; }
  __device__ __forceinline__ int Steps(int tile) const {
    return static_cast<int>(Min64(kT, seq_len_ - int64_t(tile) * kT));
  }

  const int32_t* rows_;
  const int32_t* group_of_row_;
  int64_t seq_len_, row_base_;
  int* smem_;
  int tiles_;
  bool active_;
  int row_ = 0, group_ = 0;
};

// The row of position pos0 + r of the tile whose map is `map` (a TileMaps slot).
template <bool kMapped>
__device__ __forceinline__ int64_t TileRow(const int* map, int64_t pos0, int r) {
  if constexpr (kMapped) {
    return map[r];
  } else {
    return pos0 + r;
  }
}

// The dt_bias row of step r of the tile whose map is `map`.
__device__ __forceinline__ int TileGroup(const Params& p, const int* map, int r) {
  return p.group != nullptr ? map[kT + r] : 0;
}

// Copies the rows of positions [pos0, pos0 + rows_valid) x columns
// [col0, col0 + cols_valid) of a strided matrix into a dense [kT][W] tile,
// zero-filling the rest; map is the tile's map (kMapped).
template <int W, int NT, bool kMapped>
__device__ __forceinline__ void LoadTile(float* dst, const Operand& src, const int* map,
                                         int64_t pos0, int rows_valid, int64_t col0,
                                         int cols_valid) {
  if (src.vec) {
    constexpr int W4 = W / 4;
    for (int q = threadIdx.x; q < kT * W4; q += NT) {
      const int r = q / W4, c = (q % W4) * 4;
      float* d = dst + r * W + c;
      const float* s = src.Row(TileRow<kMapped>(map, pos0, r)) + col0 + c;
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
    for (int q = threadIdx.x; q < kT * W; q += NT) {
      const int r = q / W, c = q % W;
      if (r < rows_valid && c < cols_valid) {
        CpAsync4(dst + q, src.Row(TileRow<kMapped>(map, pos0, r)) + col0 + c);
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

// Per-channel sums over the kNSG lanes of each channel, first step: a
// reduce-scatter over the thread's kCPT channels. Afterwards v[0] is this
// lane's share of channel sg >> kSplitBits of its kCPT (sg = lane % kNSG),
// one of kShares; Store puts it at (channel, share) of a [channels][kShares]
// array, whose shares SumShares adds off the step loop (no shuffles wait
// there).
template <class C>
struct ChannelShares {
  static constexpr int kSplitBits = Log2(C::kNSG) - Log2(C::kCPT);
  static constexpr int kShares = 1 << kSplitBits;
  __device__ __forceinline__ static void Store(float (&v)[C::kCPT], int lane, int cg,
                                               float* shares) {
    ReduceScatter<C::kCPT, kSplitBits, C::kCPT>(v, lane);
    shares[cg * C::kCPT * kShares + lane % C::kNSG] = v[0];
  }
};

// The sum of N lanes' shares part[0..N), in pairs as a butterfly of
// shuffles would add them.
template <int N>
__device__ __forceinline__ float SumShares(const float* part) {
  float v[N];
#pragma unroll
  for (int j = 0; j < N; ++j) v[j] = part[j];
#pragma unroll
  for (int w = 1; w < N; w <<= 1) {
#pragma unroll
    for (int j = 0; j < N; j += 2 * w) v[j] += v[j + w];
  }
  return v[0];
}

// v[i] = p[i] for a thread's SPT consecutive states, in 16- or 8-byte loads
// (every tile row of kS states starts 16-byte aligned).
template <int SPT>
__device__ __forceinline__ void LoadStates(const float* p, float (&v)[SPT]) {
  if constexpr (SPT % 4 == 0) {
#pragma unroll
    for (int j = 0; j < SPT / 4; ++j) {
      const float4 q = reinterpret_cast<const float4*>(p)[j];
      v[4 * j] = q.x;
      v[4 * j + 1] = q.y;
      v[4 * j + 2] = q.z;
      v[4 * j + 3] = q.w;
    }
  } else {
    static_assert(SPT % 2 == 0, "states per thread");
#pragma unroll
    for (int j = 0; j < SPT / 2; ++j) {
      const float2 q = reinterpret_cast<const float2*>(p)[j];
      v[2 * j] = q.x;
      v[2 * j + 1] = q.y;
    }
  }
}

// Per-element passes take a tile four channels at a time (16-byte shared
// loads and stores, no division per element): thread tid owns channels
// [Col(), Col() + 4) of rows Row(k), k < kPasses.
template <int CB, int NT>
struct Quads {
  static constexpr int kPerRow = CB / 4, kRowStep = NT / kPerRow, kPasses = kT / kRowStep;
  static_assert(CB % 4 == 0 && NT % kPerRow == 0 && kT % kRowStep == 0, "quad layout");
  __device__ __forceinline__ static int Col() { return (threadIdx.x % kPerRow) * 4; }
  __device__ __forceinline__ static int Row(int k) { return threadIdx.x / kPerRow + k * kRowStep; }
};

__device__ __forceinline__ float4 Ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void St4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ float& At(float4& v, int j) { return reinterpret_cast<float*>(&v)[j]; }
__device__ __forceinline__ float At(const float4& v, int j) {
  return reinterpret_cast<const float*>(&v)[j];
}

// out[i + j] = v[j] for the j < n (<= 4) columns inside the matrix, fp32 or
// bf16; vec: out + i is 16-byte (fp32) or 8-byte (bf16) aligned.
__device__ __forceinline__ void StoreOut4(void* out, bool bf16, bool vec, int64_t i, float4 v,
                                          int n) {
  if (vec && n == 4) {
    if (bf16) {
      const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
      uint2 packed;
      packed.x = *reinterpret_cast<const uint32_t*>(&lo);
      packed.y = *reinterpret_cast<const uint32_t*>(&hi);
      *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(out) + i) = packed;
    } else {
      St4(static_cast<float*>(out) + i, v);
    }
    return;
  }
  for (int j = 0; j < n; ++j) StoreOut(out, bf16, i + j, At(v, j));
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

// A = -exp(A_log) of channel e, state s, kept below zero so that an infinite
// exponent scale gives a decay of exactly 0; padding (states past S,
// channels past E) gets -1, harmless since its B, C, u are 0.
__device__ __forceinline__ float AValue(const Params& p, int64_t e, int s) {
  return (e < p.e_dim && s < p.s_dim) ? fminf(-expf(p.a_log[e * p.s_dim + s]), -1e-30f) : -1.f;
}

// A of the thread's channels and states.
template <class C>
__device__ __forceinline__ void LoadA(const Params& p, int64_t e0, int cg, int sg,
                                      float (&A)[C::kCPT][C::kSPT]) {
#pragma unroll
  for (int c = 0; c < C::kCPT; ++c) {
#pragma unroll
    for (int i = 0; i < C::kSPT; ++i) A[c][i] = AValue(p, e0 + cg * C::kCPT + c, sg * C::kSPT + i);
  }
}

// Reset flags of the tile's steps (t == 0 starts every sequence).
template <int NT>
__device__ __forceinline__ void LoadResets(const Params& p, int64_t row0, int64_t t0, int rows,
                                           float* dst) {
  for (int r = threadIdx.x; r < kT; r += NT) {
    dst[r] = (t0 + r == 0) || (r < rows && p.doc_start[row0 + r] != 0) ? 1.f : 0.f;
  }
}

// ------------------------------------------------------------- time chunks
// Both passes split each sequence into chunks of chunk_tiles tiles, walked by
// separate blocks, so that the grid fills the GPU at any batch size. A chunk
// needs what the chunks before it in the walk's direction pass on: the state
// h for the forward, the adjoint g = dL/dh (running backwards in time) for
// the backward. Both recurrences are x <- a x + b with a = exp2(de * A), so a
// chunk started from zero passes on carry_x[k], and started from X it passes
// on carry_x[k] + exp2(carry_de[k] * A) X, carry_de[k] being the chunk's
// summed exponent scale (infinite across a document start: exactly 0). A
// carry pass computes carry_x and carry_de of every chunk that passes
// something on; each chunk's block then folds them (FoldCarries), a few
// operations per state, and walks its chunk from the true start.

// x <- carry_x[k] + exp2(carry_de[k] A) x for k = first, first + step, ...,
// up to last (excluded), for the thread's channels and states.
template <class C>
__device__ __forceinline__ void FoldCarries(const Params& p, int first, int last, int step,
                                            int64_t e0, int cg, int sg,
                                            const float (&A)[C::kCPT][C::kSPT],
                                            float (&x)[C::kCPT][C::kSPT]) {
  const int64_t E = p.e_dim, bi = blockIdx.y;
  for (int k = first; k != last; k += step) {
    const int64_t slot = bi * p.chunks + k;
#pragma unroll
    for (int c = 0; c < C::kCPT; ++c) {
      const int64_t e = e0 + cg * C::kCPT + c;
      if (e >= E) continue;
      const float de = p.carry_de[slot * E + e];
      const float* carry = p.carry_x + (slot * E + e) * kS + sg * C::kSPT;
#pragma unroll
      for (int i = 0; i < C::kSPT; ++i) x[c][i] = fmaf(Exp2(de * A[c][i]), x[c][i], carry[i]);
    }
  }
}

// ------------------------------------------------------------------ forward
enum class FwdMode {
  kOutput,  // y, and the state at every tile start if p.ckpt is set
  kStates,  // only the state at every tile start (the backward's first pass)
  kCarry,   // only each chunk's carry from zero (chunks 0 .. chunks - 2)
};

template <class C>
struct FwdSmem {
  static constexpr int CB = C::kCB;
  // Stage (double-buffered): u, delta_raw -> exponent scale, z, B, C, resets.
  static constexpr int kU = 0, kDe = kT * CB, kZ = 2 * kT * CB, kB = 3 * kT * CB;
  static constexpr int kC = kB + kT * kS, kReset = kC + kT * kS;
  static constexpr int kStage = kReset + kT;
  static constexpr int kDu = 2 * kStage;                   // delta * u   [kT][CB]
  static constexpr int kYPart = kDu + kT * CB;             // C.h by lane [kT][CB][NSG]
  static constexpr int kD = kYPart + kT * CB * C::kNSG;    // D           [CB]
  static constexpr int kBias = kD + CB;                    // dt_bias     [groups][CB]
  static constexpr int kMap = kBias + kMaxGroups * CB;     // TileMaps (ints)
  static constexpr int kTotal = kMap + kMapInts;
  // FwdCfg (CB 32, 4 lanes per channel): stages 2 x 4128 + delta*u 1024 +
  // C.h partials 4096 + D 32 + dt_bias 256 = 13664 floats + maps 3 x 64
  // ints = 55,424 B per block: 4 blocks per SM (228 KB, 1 KB reserved per
  // block), as many as its registers allow.
};

template <class C, FwdMode kMode, bool kMapped>
__global__ void __launch_bounds__(C::kNT) ScanForwardKernel(Params p) {
  using SM = FwdSmem<C>;
  constexpr bool kY = kMode == FwdMode::kOutput;
  constexpr int CB = C::kCB, NT = C::kNT, CPT = C::kCPT, SPT = C::kSPT;
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  float* sdu = smem + SM::kDu;
  float* sy_part = smem + SM::kYPart;
  float* sD = smem + SM::kD;
  float* sbias = smem + SM::kBias;
  static_assert(NT >= kT, "a thread per step stages the tile maps");
  using Q = Quads<CB, NT>;
  static_assert(SM::kU % 4 == 0 && SM::kDe % 4 == 0 && SM::kZ % 4 == 0 && SM::kDu % 4 == 0 &&
                    SM::kStage % 4 == 0 && SM::kD % 4 == 0 && SM::kBias % 4 == 0,
                "quad passes: 16-byte aligned buffers");

  const int tid = threadIdx.x, qc = Q::Col();
  const int sg = tid % C::kNSG, cg = tid / C::kNSG;
  const int64_t L = p.seq_len, E = p.e_dim, bi = blockIdx.y, e0 = int64_t(blockIdx.x) * CB;
  const int cols_valid = static_cast<int>(Min64(CB, E - e0));
  const int64_t row_base = bi * L;
  const int tiles = static_cast<int>(CeilDiv(L, kT));
  const int chunk = blockIdx.z, tile_lo = chunk * p.chunk_tiles;
  const int tile_hi = static_cast<int>(Min64(tiles, tile_lo + p.chunk_tiles));
  auto steps = [&](int tile) { return static_cast<int>(Min64(kT, L - int64_t(tile) * kT)); };
  TileMaps<kMapped> maps(p, reinterpret_cast<int*>(smem + SM::kMap), row_base, tiles);

  float A[CPT][SPT], h[CPT][SPT], de_sum[CPT];
  LoadA<C>(p, e0, cg, sg, A);
#pragma unroll
  for (int c = 0; c < CPT; ++c) {
    de_sum[c] = 0.f;
#pragma unroll
    for (int i = 0; i < SPT; ++i) h[c][i] = 0.f;
  }
  if (kMode != FwdMode::kCarry) FoldCarries<C>(p, 0, chunk, 1, e0, cg, sg, A, h);
  for (int ch = tid; ch < CB; ch += NT) sD[ch] = ch < cols_valid ? p.d[e0 + ch] : 0.f;
  LoadBias<CB, NT>(p, e0, cols_valid, sbias);

  auto load = [&](int tile, int stage) {
    float* st = smem + stage * SM::kStage;
    const int* map = maps.Slot(tile);
    const int64_t t0 = int64_t(tile) * kT;
    const int rows = steps(tile);
    const int64_t row0 = row_base + t0;
    LoadTile<CB, NT, kMapped>(st + SM::kU, p.u, map, row0, rows, e0, cols_valid);
    LoadTile<CB, NT, kMapped>(st + SM::kDe, p.dr, map, row0, rows, e0, cols_valid);
    LoadTile<kS, NT, kMapped>(st + SM::kB, p.b, map, row0, rows, 0, p.s_dim);
    if (kY) {
      LoadTile<CB, NT, kMapped>(st + SM::kZ, p.z, map, row0, rows, e0, cols_valid);
      LoadTile<kS, NT, kMapped>(st + SM::kC, p.c, map, row0, rows, 0, p.s_dim);
    }
    LoadResets<NT>(p, row0, t0, rows, st + SM::kReset);
    CpAsyncCommit();
  };

  maps.Start(tile_lo, tile_lo + 1);
  load(tile_lo, tile_lo & 1);
  for (int tile = tile_lo; tile < tile_hi; ++tile) {
    const int stage = tile & 1;
    maps.Fetch(tile + 2, tile + 1);  // put at the end of the iteration
    if (tile + 1 < tile_hi) {
      load(tile + 1, stage ^ 1);
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    float* st = smem + stage * SM::kStage;
    float* su = st + SM::kU;
    float* sde = st + SM::kDe;
    const float* sB = st + SM::kB;
    const float* sC = st + SM::kC;
    const float* sreset = st + SM::kReset;
    const int* map = maps.Slot(tile);
    const int64_t t0 = int64_t(tile) * kT;
    const int rows = steps(tile);

    // delta, its exponent scale and delta * u, four channels at a time.
#pragma unroll
    for (int k = 0; k < Q::kPasses; ++k) {
      const int r = Q::Row(k), q = r * CB + qc;
      const float4 dr = Ld4(sde + q), uu = Ld4(su + q);
      const float4 bias = Ld4(sbias + TileGroup(p, map, r) * CB + qc);
      const bool reset = sreset[r] != 0.f;
      float4 de, du;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const bool valid = r < rows && qc + j < cols_valid;
        const float delta = Softplus(At(dr, j) + At(bias, j));
        At(de, j) = valid ? ExponentScale(delta, reset) : 0.f;
        At(du, j) = valid ? delta * At(uu, j) : 0.f;
      }
      St4(sde + q, de);
      St4(sdu + q, du);
    }
    if (kMode == FwdMode::kStates || (kY && p.ckpt != nullptr)) {
      float* dst = p.ckpt + ((bi * CeilDiv(L, kT) + tile) * E) * kS;
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
    for (int r = 0; r < kT; ++r) {
      float bv[SPT], cv[SPT], yp[CPT];
      LoadStates(sB + r * kS + sg * SPT, bv);
      if (kY) LoadStates(sC + r * kS + sg * SPT, cv);
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int ch = cg * CPT + c;
        const float de = sde[r * CB + ch], du = sdu[r * CB + ch];
        if (kMode == FwdMode::kCarry) de_sum[c] += de;
        yp[c] = 0.f;
#pragma unroll
        for (int i = 0; i < SPT; ++i) {
          h[c][i] = fmaf(Exp2(de * A[c][i]), h[c][i], du * bv[i]);
          if (kY) yp[c] = fmaf(cv[i], h[c][i], yp[c]);
        }
      }
      // Each lane's share of C.h; the gate pass sums them, off the
      // recurrence's critical path (shuffles here would wait each step).
      if (kY) {
#pragma unroll
        for (int c = 0; c < CPT; ++c) sy_part[(r * CB + cg * CPT + c) * C::kNSG + sg] = yp[c];
      }
    }

    if (kY) {
      __syncthreads();
      const float* sz = st + SM::kZ;
      const float4 dd = Ld4(sD + qc);
#pragma unroll
      for (int k = 0; k < Q::kPasses; ++k) {
        const int r = Q::Row(k), q = r * CB + qc;
        if (r >= rows) continue;
        const float4 zz = Ld4(sz + q), uu = Ld4(su + q);
        float4 out;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float cdh = SumShares<C::kNSG>(sy_part + (q + j) * C::kNSG);
          const float z = At(zz, j);
          At(out, j) = (cdh + At(dd, j) * At(uu, j)) * (z * Sigmoid(z));
        }
        StoreOut4(p.y, p.y_bf16, p.y_vec, TileRow<kMapped>(map, row_base + t0, r) * p.ldy + e0 + qc,
                  out, min(4, cols_valid - qc));
      }
    }
    maps.Put(tile + 2, tile + 1);  // for load(tile + 2) and the prepass of tile + 1
    __syncthreads();
  }
  if (kMode != FwdMode::kCarry) return;
  const int64_t slot = bi * p.chunks + chunk;
#pragma unroll
  for (int c = 0; c < CPT; ++c) {
    const int64_t e = e0 + cg * CPT + c;
    if (e >= E) continue;
#pragma unroll
    for (int i = 0; i < SPT; ++i) p.carry_x[(slot * E + e) * kS + sg * SPT + i] = h[c][i];
    if (sg == 0) p.carry_de[slot * E + e] = de_sum[c];
  }
}

// ----------------------------------------------------------------- backward
// AdjointCarryKernel computes the backward's carries (time chunks, above) for
// chunks 1.. (chunk 0 passes nothing back), with the same operations as the
// backward kernel. Per
// tile, every (step, channel)'s exponent scale and gate gradient are computed
// first, all at once; then kCarryNSG threads per channel, kCarrySPT states
// each, run the adjoint step by step: a short instruction stream per warp and
// many warps, since the walk is bound by latency.
constexpr int kCarryCB = 32;                          // channels per block
constexpr int kCarryNSG = 4;                          // threads per channel
constexpr int kCarrySPT = kS / kCarryNSG;             // states per thread
constexpr int kCarryThreads = kCarryCB * kCarryNSG;
static_assert(kCarrySPT == 4, "a thread's C is one float4");

template <bool kMapped>
__global__ void __launch_bounds__(kCarryThreads) AdjointCarryKernel(Params p) {
  __shared__ float sde[kT][kCarryCB], sdyv[kT][kCarryCB];
  __shared__ float4 sc[kT][kS / 4];  // C of the tile's steps
  __shared__ float sbias[kMaxGroups][kCarryCB];
  __shared__ int64_t srow[kT];
  __shared__ int sgroup[kT];
  __shared__ bool sreset[kT];
  const int tid = threadIdx.x, ch = tid / kCarryNSG, sg = tid % kCarryNSG;
  const int64_t L = p.seq_len, E = p.e_dim, bi = blockIdx.y;
  const int64_t e0 = int64_t(blockIdx.x) * kCarryCB, e = e0 + ch;
  const int cols_valid = static_cast<int>(Min64(kCarryCB, E - e0));
  const int chunk = blockIdx.z + 1;
  const int tiles = static_cast<int>(CeilDiv(L, kT));
  const int tile_lo = chunk * p.chunk_tiles;
  const int tile_hi = static_cast<int>(Min64(tiles, tile_lo + p.chunk_tiles));

  float A[kCarrySPT], g[kCarrySPT];
#pragma unroll
  for (int i = 0; i < kCarrySPT; ++i) {
    A[i] = AValue(p, e, sg * kCarrySPT + i);
    g[i] = 0.f;
  }
  for (int q = tid; q < p.groups * kCarryCB; q += kCarryThreads) {
    const int gi = q / kCarryCB, c = q % kCarryCB;
    sbias[gi][c] = c < cols_valid ? p.dt_bias[gi * E + e0 + c] : 0.f;
  }
  float de_sum = 0.f;
  auto step = [&](int r) {
    const float de = sde[r][ch], dyv = sdyv[r][ch];
    const float4 c4 = sc[r][sg];
    const float cv[kCarrySPT] = {c4.x, c4.y, c4.z, c4.w};
    de_sum += de;
#pragma unroll
    for (int i = 0; i < kCarrySPT; ++i) {
      const float gt = fmaf(dyv, cv[i], g[i]);
      g[i] = gt * Exp2(de * A[i]);
    }
  };
  for (int tile = tile_hi - 1; tile >= tile_lo; --tile) {
    const int64_t t0 = int64_t(tile) * kT;
    const int rows = static_cast<int>(Min64(kT, L - t0));
    const int64_t pos0 = bi * L + t0;
    __syncthreads();  // the previous tile's walk is done with the buffers
    if (tid < kT) {
      const int64_t row = tid < rows ? RowOf<kMapped>(p.rows, pos0 + tid) : 0;
      srow[tid] = row;
      sgroup[tid] = p.group != nullptr && tid < rows ? p.group[row] : 0;
      sreset[tid] = (t0 + tid == 0) || (tid < rows && p.doc_start[pos0 + tid] != 0);
    }
    __syncthreads();
#pragma unroll
    for (int q = tid; q < kT * kS; q += kCarryThreads) {
      const int r = q / kS, s = q % kS;
      reinterpret_cast<float*>(sc[r])[s] = r < rows && s < p.s_dim ? p.c.Row(srow[r])[s] : 0.f;
    }
#pragma unroll
    for (int q = tid; q < kT * kCarryCB; q += kCarryThreads) {
      const int r = q / kCarryCB, c = q % kCarryCB;
      float de = 0.f, dyv = 0.f;
      if (r < rows && c < cols_valid) {
        const int64_t at = srow[r];
        const float delta = Softplus(p.dr.Row(at)[e0 + c] + sbias[sgroup[r]][c]);
        de = ExponentScale(delta, sreset[r]);
        const float zz = p.z.Row(at)[e0 + c];
        dyv = p.dy.Row(at)[e0 + c] * zz * Sigmoid(zz);
      }
      sde[r][c] = de;
      sdyv[r][c] = dyv;
    }
    __syncthreads();
    if (rows == kT) {
#pragma unroll
      for (int r = kT - 1; r >= 0; --r) step(r);
    } else {
      for (int r = rows - 1; r >= 0; --r) step(r);
    }
  }
  if (e >= E) return;
  const int64_t slot = bi * p.chunks + chunk;
#pragma unroll
  for (int i = 0; i < kCarrySPT; ++i) p.carry_x[(slot * E + e) * kS + sg * kCarrySPT + i] = g[i];
  if (sg == 0) p.carry_de[slot * E + e] = de_sum;
}

template <class C>
struct BwdSmem {
  static constexpr int CB = C::kCB, K = kSub;
  static constexpr int kWarps = C::kNT / 32;
  static constexpr int kShares = ChannelShares<C>::kShares;  // per channel sum
  // Raw inputs of one tile, prefetched while the previous tile's adjoint runs.
  static constexpr int kRawU = 0, kRawDr = kT * CB, kRawZ = 2 * kT * CB, kRawDy = 3 * kT * CB;
  static constexpr int kRawB = 4 * kT * CB, kRawC = kRawB + kT * kS, kRawReset = kRawC + kT * kS;
  static constexpr int kRaw = kRawReset + kT;
  // The tile forward's C.h by share [kT][CB][kShares], over raw u and
  // delta_raw, both consumed by then.
  static constexpr int kYShare = kRawU;
  static_assert(kShares <= 2 && kRawDr + kT * CB == kRawZ, "C.h shares' space");
  // The tile as the recurrences use it.
  static constexpr int kU = kRaw;
  static constexpr int kDelta = kU + kT * CB;
  static constexpr int kDe = kDelta + kT * CB;  // exponent scale (inf at a reset)
  static constexpr int kDyv = kDe + kT * CB;    // d(loss)/d(pre-gate output)
  static constexpr int kSig = kDyv + kT * CB;   // sigmoid(delta pre-activation)
  static constexpr int kB = kSig + kT * CB;
  static constexpr int kC = kB + kT * kS;
  static constexpr int kMap = kC + kT * kS;          // TileMaps (ints)
  static constexpr int kSubState = kMap + kMapInts;  // [kT / K][NT][CPT * SPT]
  static constexpr int kRed =
      kSubState + (kT / K) * C::kNT * C::kCPT * C::kSPT;  // [K][warps][32]
  // A sub-tile's sum_s gt B, then sum_s A q, by share: [2][K][CB][kShares].
  static constexpr int kChan = kRed + K * kWarps * 32;
  static constexpr int kDtb = kChan + 2 * K * CB * kShares;  // [groups][CB]
  static constexpr int kD = kDtb + kMaxGroups * CB;
  static constexpr int kTotal = kD + CB;
  // BwdCfg (CB 64, 128 threads, CPT 2 x SPT 4): raw 9248 + tile 5 x 2048 +
  // B, C 2 x 512 + maps 3 x 64 + sub-states 4096 + reduction 1024 + shares
  // 2048 + d dt_bias 512 + D 64 = 28448 floats = 113,792 B per block
  // (dt_bias is read through the cache, not staged, to make room). The two
  // blocks per SM of __launch_bounds__(kNT, 2) take 2 x (113,792 + 1,024
  // reserved) = 229,632 B of an H100 SM's 233,472 (228 KB): 1,920 B per
  // block to spare. LaunchBackward checks it.
};

template <class C, bool kMapped>
__global__ void __launch_bounds__(C::kNT, 2) ScanBackwardKernel(Params p) {
  using SM = BwdSmem<C>;
  constexpr int kSh = SM::kShares;
  constexpr int K = kSub, CB = C::kCB, NT = C::kNT, CPT = C::kCPT, SPT = C::kSPT;
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  float* tu = smem + SM::kU;
  float* tdelta = smem + SM::kDelta;
  float* tde = smem + SM::kDe;
  float* tdyv = smem + SM::kDyv;
  float* tsig = smem + SM::kSig;
  float* tB = smem + SM::kB;
  float* tC = smem + SM::kC;
  static_assert(NT >= kT, "a thread per step stages the tile maps");
  float* ssub = smem + SM::kSubState;
  float* sred = smem + SM::kRed;
  float* sdtb = smem + SM::kDtb;
  float* sD = smem + SM::kD;
  float* sy_share = smem + SM::kYShare;
  float* schan = smem + SM::kChan;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int sg = tid % C::kNSG, cg = tid / C::kNSG;
  const int slot = tid / CB, my_ch = tid % CB;
  using Q = Quads<CB, NT>;
  static_assert(SM::kRaw % 4 == 0 && SM::kRawB % 4 == 0 && SM::kU % 4 == 0 && SM::kB % 4 == 0 &&
                    SM::kD % 4 == 0 && CB % 4 == 0,
                "quad passes: 16-byte aligned buffers");
  static_assert(Q::kRowStep * CB <= kT * CB, "d D's row-group sums fit in the tile's u");
  const int qc = Q::Col();
  float4 dd_acc = make_float4(0.f, 0.f, 0.f, 0.f);  // d D of the thread's quad
  const int64_t L = p.seq_len, E = p.e_dim, N = p.batch * L;
  const int64_t bi = blockIdx.y, e0 = int64_t(blockIdx.x) * CB;
  const int cols_valid = static_cast<int>(Min64(CB, E - e0));
  const int64_t row_base = bi * L;
  const int tiles = static_cast<int>(CeilDiv(L, kT));
  const int chunk = blockIdx.z, tile_lo = chunk * p.chunk_tiles;
  const int tile_hi = static_cast<int>(Min64(tiles, tile_lo + p.chunk_tiles));
  auto steps = [&](int tile) { return static_cast<int>(Min64(kT, L - int64_t(tile) * kT)); };
  TileMaps<kMapped> maps(p, reinterpret_cast<int*>(smem + SM::kMap), row_base, tiles);

  float A[CPT][SPT], g[CPT][SPT], dA[CPT][SPT];
  LoadA<C>(p, e0, cg, sg, A);
#pragma unroll
  for (int c = 0; c < CPT; ++c) {
#pragma unroll
    for (int i = 0; i < SPT; ++i) g[c][i] = dA[c][i] = 0.f;
  }
  FoldCarries<C>(p, p.chunks - 1, chunk, -1, e0, cg, sg, A, g);
  for (int q = tid; q < kMaxGroups * CB; q += NT) sdtb[q] = 0.f;
  for (int ch = tid; ch < CB; ch += NT) sD[ch] = ch < cols_valid ? p.d[e0 + ch] : 0.f;

  auto load_raw = [&](int tile) {
    const int* map = maps.Slot(tile);
    const int64_t t0 = int64_t(tile) * kT;
    const int rows = steps(tile);
    const int64_t row0 = row_base + t0;
    LoadTile<CB, NT, kMapped>(smem + SM::kRawU, p.u, map, row0, rows, e0, cols_valid);
    LoadTile<CB, NT, kMapped>(smem + SM::kRawDr, p.dr, map, row0, rows, e0, cols_valid);
    LoadTile<CB, NT, kMapped>(smem + SM::kRawZ, p.z, map, row0, rows, e0, cols_valid);
    LoadTile<CB, NT, kMapped>(smem + SM::kRawDy, p.dy, map, row0, rows, e0, cols_valid);
    LoadTile<kS, NT, kMapped>(smem + SM::kRawB, p.b, map, row0, rows, 0, p.s_dim);
    LoadTile<kS, NT, kMapped>(smem + SM::kRawC, p.c, map, row0, rows, 0, p.s_dim);
    LoadResets<NT>(p, row0, t0, rows, smem + SM::kRawReset);
    CpAsyncCommit();
  };

  maps.Start(tile_hi - 1, tile_hi - 2);
  load_raw(tile_hi - 1);
  for (int tile = tile_hi - 1; tile >= tile_lo; --tile) {
    maps.Fetch(tile - 2, tile - 1);  // put after the gate pass
    CpAsyncWait<0>();
    __syncthreads();  // the raw tile is in; the previous tile's adjoint is done
    const int* map = maps.Slot(tile);
    const int64_t t0 = int64_t(tile) * kT;
    const int rows = steps(tile);
    const float* raw_reset = smem + SM::kRawReset;

    // Per-element pass, four channels at a time: delta, its exponent scale
    // and sigmoid; copies of u, B, C.
#pragma unroll
    for (int k = 0; k < Q::kPasses; ++k) {
      const int r = Q::Row(k), q = r * CB + qc;
      const float4 dr = Ld4(smem + SM::kRawDr + q);
      const bool reset = raw_reset[r] != 0.f;
      const float* bias = p.dt_bias + TileGroup(p, map, r) * E + e0 + qc;
      float4 delta, de, sig;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const bool valid = r < rows && qc + j < cols_valid;
        const float pre = At(dr, j) + (valid ? __ldg(bias + j) : 0.f);
        const float d = Softplus(pre);
        At(delta, j) = valid ? d : 0.f;
        At(de, j) = valid ? ExponentScale(d, reset) : 0.f;
        // sigmoid(x) = e^x / (1 + e^x) = e^(x - softplus(x))
        At(sig, j) = valid ? ExpFtz(pre - d) : 0.f;
      }
      St4(tu + q, Ld4(smem + SM::kRawU + q));
      St4(tdelta + q, delta);
      St4(tde + q, de);
      St4(tsig + q, sig);
    }
    for (int q = 4 * tid; q < 2 * kT * kS; q += 4 * NT) St4(tB + q, Ld4(smem + SM::kRawB + q));
    float h[CPT][SPT];
    {
      const float* src = p.ckpt + ((bi * tiles + tile) * E) * kS;
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int64_t e = e0 + cg * CPT + c;
#pragma unroll
        for (int i = 0; i < SPT; ++i) h[c][i] = e < E ? src[e * kS + sg * SPT + i] : 0.f;
      }
    }
    __syncthreads();

    // The tile forward: sub-tile start states, and y.
#pragma unroll
    for (int r = 0; r < kT; ++r) {
      if (r % K == 0) {
        float* my = ssub + ((r / K) * NT + tid) * (CPT * SPT);
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
#pragma unroll
          for (int i = 0; i < SPT; ++i) my[c * SPT + i] = h[c][i];
        }
      }
      float bv[SPT], cv[SPT], yp[CPT];
      LoadStates(tB + r * kS + sg * SPT, bv);
      LoadStates(tC + r * kS + sg * SPT, cv);
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int ch = cg * CPT + c;
        const float de = tde[r * CB + ch], du = tdelta[r * CB + ch] * tu[r * CB + ch];
        yp[c] = 0.f;
#pragma unroll
        for (int i = 0; i < SPT; ++i) {
          h[c][i] = fmaf(Exp2(de * A[c][i]), h[c][i], du * bv[i]);
          yp[c] = fmaf(cv[i], h[c][i], yp[c]);
        }
      }
      // This lane's share of its channel's C.h; the gate pass adds the shares.
      ChannelShares<C>::Store(yp, lane, cg, sy_share + r * CB * kSh);
    }
    __syncthreads();

    // Gate and skip: dz, and the gradient of the pre-gate output.
    {
      const float4 dd = Ld4(sD + qc);
#pragma unroll
      for (int k = 0; k < Q::kPasses; ++k) {
        const int r = Q::Row(k), q = r * CB + qc;
        const float4 zz = Ld4(smem + SM::kRawZ + q), uu = Ld4(tu + q);
        const float4 g_out = Ld4(smem + SM::kRawDy + q);
        float4 dz, dyv;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float z = At(zz, j), sgz = Sigmoid(z);
          const float yv = SumShares<kSh>(sy_share + (q + j) * kSh) + At(dd, j) * At(uu, j);
          At(dz, j) = At(g_out, j) * yv * (sgz * (1.f + z * (1.f - sgz)));
          At(dyv, j) = r < rows && qc + j < cols_valid ? At(g_out, j) * z * sgz : 0.f;
          At(dd_acc, j) = fmaf(At(dyv, j), At(uu, j), At(dd_acc, j));
        }
        if (r < rows) {
          StoreOut4(p.dz, p.dz_bf16, p.dz_vec,
                    TileRow<kMapped>(map, row_base + t0, r) * p.lddz + e0 + qc, dz,
                    min(4, cols_valid - qc));
        }
        St4(tdyv + q, dyv);
      }
    }
    maps.Put(tile - 2, tile - 1);  // for load_raw(tile - 2) and the prepass of tile - 1
    __syncthreads();               // raw buffers are free
    if (tile > tile_lo) load_raw(tile - 1);

    // The adjoint, sub-tile by sub-tile from the last. g carries dL/dh.
    for (int sub = kT / K - 1; sub >= 0; --sub) {
      const int rb = sub * K;
      float hs[K][CPT][SPT], as[K][CPT][SPT], h0[CPT][SPT];
      {
        const float* my = ssub + (sub * NT + tid) * (CPT * SPT);
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
#pragma unroll
          for (int i = 0; i < SPT; ++i) h0[c][i] = my[c * SPT + i];
        }
      }
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int r = rb + k;
        float bv[SPT];
        LoadStates(tB + r * kS + sg * SPT, bv);
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
          const int ch = cg * CPT + c;
          const float de = tde[r * CB + ch], du = tdelta[r * CB + ch] * tu[r * CB + ch];
#pragma unroll
          for (int i = 0; i < SPT; ++i) {
            const float prev = k > 0 ? hs[k - 1][c][i] : h0[c][i];
            as[k][c][i] = Exp2(de * A[c][i]);
            hs[k][c][i] = fmaf(as[k][c][i], prev, du * bv[i]);
          }
        }
      }
#pragma unroll
      for (int k = K - 1; k >= 0; --k) {
        const int r = rb + k;
        float bc[2 * SPT];  // dB then dC, summed over this thread's channels
        float gb_c[CPT], aq_c[CPT], bv[SPT], cv[SPT];
        LoadStates(tB + r * kS + sg * SPT, bv);
        LoadStates(tC + r * kS + sg * SPT, cv);
#pragma unroll
        for (int i = 0; i < 2 * SPT; ++i) bc[i] = 0.f;
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
          const int ch = cg * CPT + c;
          const float delta = tdelta[r * CB + ch], uu = tu[r * CB + ch];
          const float dyv = tdyv[r * CB + ch];
          const float du_in = delta * uu;
          // With gt = dL/dh_t and q = gt * a_t h_{t-1}:
          //   d(delta) = u sum_s gt B + sum_s A q,  du = delta sum_s gt B,
          //   dA = delta q,  dB += gt delta u,  dC += dyv h_t;
          // the sums over states (gb, aq) are finished after the sub-tile.
          float gb = 0.f, aq = 0.f;
#pragma unroll
          for (int i = 0; i < SPT; ++i) {
            const float prev = k > 0 ? hs[k - 1][c][i] : h0[c][i];
            const float gt = fmaf(dyv, cv[i], g[c][i]);
            bc[SPT + i] = fmaf(dyv, hs[k][c][i], bc[SPT + i]);
            bc[i] = fmaf(gt, du_in, bc[i]);
            gb = fmaf(gt, bv[i], gb);
            const float q = gt * (as[k][c][i] * prev);
            aq = fmaf(A[c][i], q, aq);
            dA[c][i] = fmaf(delta, q, dA[c][i]);
            g[c][i] = gt * as[k][c][i];
          }
          gb_c[c] = gb;
          aq_c[c] = aq;
        }
        ChannelShares<C>::Store(gb_c, lane, cg, schan + k * CB * kSh);
        ChannelShares<C>::Store(aq_c, lane, cg, schan + (K + k) * CB * kSh);
        ReduceScatter<2 * SPT, Log2(C::kNSG), 2 * SPT>(bc, lane);
        sred[(k * SM::kWarps + warp) * 32 + lane] = bc[0];
      }
      __syncthreads();
      // dB, dC of the sub-tile: sum over warps, in order.
      for (int q = tid; q < K * 32; q += NT) {
        const int k = q >> 5, ln = q & 31, r = rb + k;
        if (r >= rows) continue;
        const int v = ln >> Log2(C::kNSG), s = (ln & (C::kNSG - 1)) * SPT + (v % SPT);
        if (s >= p.s_dim) continue;
        float sum = 0.f;
        for (int w = 0; w < SM::kWarps; ++w) sum += sred[(k * SM::kWarps + w) * 32 + ln];
        p.dbc_part[(blockIdx.x * N + row_base + t0 + r) * (2 * kS) + (v < SPT ? 0 : kS) + s] = sum;
      }
      // d delta_raw and du of step rb + k, channel ch, from the shares.
      auto chan = [&](int k, int ch, float& ddr, float& du) {
        const int q = k * CB + ch, t = (rb + k) * CB + ch;
        const float gb = SumShares<kSh>(schan + q * kSh);
        const float aq = SumShares<kSh>(schan + (K * CB + q) * kSh);
        ddr = fmaf(tu[t], gb, aq) * tsig[t];
        du = tdelta[t] * gb;
      };
      // Four channels at a time: d delta_raw and du.
      for (int kq = threadIdx.x / Q::kPerRow; kq < K; kq += Q::kRowStep) {
        const int r = rb + kq;
        if (r >= rows) continue;
        const int64_t row = TileRow<kMapped>(map, row_base + t0, r);
        const float4 dyv = Ld4(tdyv + r * CB + qc), dd = Ld4(sD + qc);
        float4 ddr, du;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          chan(kq, qc + j, At(ddr, j), At(du, j));
          At(du, j) = fmaf(At(dyv, j), At(dd, j), At(du, j));
        }
        const int n = min(4, cols_valid - qc);
        StoreOut4(p.ddr, p.ddr_bf16, p.ddr_vec, row * p.ldddr + e0 + qc, ddr, n);
        StoreOut4(p.du, false, p.du_vec, row * p.lddu + e0 + qc, du, n);
      }
      // d dt_bias: one thread per channel, steps last first (a fixed order).
      if (slot == 0 && my_ch < cols_valid) {
        for (int k = K - 1; k >= 0; --k) {
          if (rb + k >= rows) continue;
          float ddr, du;
          chan(k, my_ch, ddr, du);
          sdtb[TileGroup(p, map, rb + k) * CB + my_ch] += ddr;
        }
      }
      __syncthreads();  // the reduction buffer and the shares are free
    }
  }
  __syncthreads();

  // Per-chunk parameter partials.
  const int64_t seq_chunk = bi * p.chunks + chunk;
#pragma unroll
  for (int c = 0; c < CPT; ++c) {
    const int64_t e = e0 + cg * CPT + c;
    if (e >= E) continue;
#pragma unroll
    for (int i = 0; i < SPT; ++i) {
      const int s = sg * SPT + i;
      if (s < p.s_dim) p.part_da[(seq_chunk * E + e) * kS + s] = dA[c][i] * A[c][i];
    }
  }
  // d D: each thread's quad sums, by row group in order (the tile buffers are free).
  St4(tu + (threadIdx.x / Q::kPerRow) * CB + qc, dd_acc);
  __syncthreads();
  if (slot == 0 && my_ch < cols_valid) {
    const int64_t e = e0 + my_ch;
    float dd = 0.f;
    for (int k = 0; k < Q::kRowStep; ++k) dd += tu[k * CB + my_ch];
    p.part_dd[seq_chunk * E + e] = dd;
    for (int gi = 0; gi < p.groups; ++gi)
      p.part_dtb[(seq_chunk * p.groups + gi) * E + e] = sdtb[gi * CB + my_ch];
  }
}

// db[row of n][s] = sum over channel blocks (in order) of position n's
// partial dB; dc likewise.
template <bool kMapped>
__global__ void DbcReduceKernel(const float* part, int blocks, int64_t n_rows, int s_dim,
                                const int32_t* rows, float* db, int64_t lddb, float* dc,
                                int64_t lddc) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n_rows * 2 * s_dim) return;
  const int64_t n = i / (2 * s_dim);
  const int k = static_cast<int>(i % (2 * s_dim));
  const bool is_c = k >= s_dim;
  const int s = is_c ? k - s_dim : k;
  float sum = 0.f;
  for (int b = 0; b < blocks; ++b) sum += part[(b * n_rows + n) * (2 * kS) + (is_c ? kS : 0) + s];
  const int64_t row = RowOf<kMapped>(rows, n);
  if (is_c) {
    dc[row * lddc + s] = sum;
  } else {
    db[row * lddb + s] = sum;
  }
}

// Parameter gradients: sums over sequence chunks, in order, added to the grads.
__global__ void ScanParamReduceKernel(const float* part_da, const float* part_dd,
                                      const float* part_dtb, int64_t parts, int64_t e_dim,
                                      int s_dim, int groups, float* da_log, float* dd,
                                      float* ddt_bias) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t n_da = e_dim * s_dim, n_dtb = groups * e_dim;
  if (i < n_da) {
    const int64_t e = i / s_dim, s = i % s_dim;
    float sum = 0.f;
    for (int64_t b = 0; b < parts; ++b) sum += part_da[(b * e_dim + e) * kS + s];
    da_log[i] += sum;
  } else if (i < n_da + e_dim) {
    const int64_t e = i - n_da;
    float sum = 0.f;
    for (int64_t b = 0; b < parts; ++b) sum += part_dd[b * e_dim + e];
    dd[e] += sum;
  } else if (i < n_da + e_dim + n_dtb) {
    const int64_t j = i - n_da - e_dim;  // g * E + e
    float sum = 0.f;
    for (int64_t b = 0; b < parts; ++b) sum += part_dtb[b * n_dtb + j];
    ddt_bias[j] += sum;
  }
}

// Whether every row of a strided output stores four adjacent channels (from
// a multiple of four) in one 16-byte (fp32) or 8-byte (bf16) store.
bool QuadAligned(const void* data, int64_t ld, bool bf16) {
  return reinterpret_cast<uintptr_t>(data) % (bf16 ? 8 : 16) == 0 && ld % 4 == 0;
}

Operand OperandOf(const ConstView& v) {
  return {v.data, v.ld, reinterpret_cast<uintptr_t>(v.data) % 16 == 0 && v.ld % 4 == 0};
}

Params MakeParams(const ScanArgs& a) {
  const int groups = static_cast<int>(a.dt_groups);
  CHECK(a.s_dim >= 1 && a.s_dim <= kS)
      << "scan: d_state " << a.s_dim << " outside [1, " << kS << "]";
  CHECK(groups >= 1 && groups <= kMaxGroups) << "scan: " << groups << " dt_bias groups";
  CHECK(groups == 1 || a.group != nullptr) << "scan: routed dt_bias needs the row groups";
  CHECK_LE(a.batch, 65535) << "scan: batch";
  Params p{};
  p.batch = a.batch;
  p.seq_len = a.seq_len;
  p.e_dim = a.e_dim;
  p.s_dim = a.s_dim;
  p.doc_start = a.doc_start;
  p.rows = a.rows;
  p.group = groups > 1 ? a.group : nullptr;
  p.groups = groups;
  p.u = OperandOf(a.u);
  p.dr = OperandOf(a.delta_raw);
  p.b = OperandOf(a.b);
  p.c = OperandOf(a.c);
  p.z = OperandOf(a.z);
  p.dt_bias = a.dt_bias;
  p.a_log = a.a_log;
  p.d = a.d;
  return p;
}

// Thread layouts, chosen by measurement on an H100 at batch 8, d_inner 1536,
// L 2048 (kernels/NOTES.md): the forward (and the backward's checkpoint pass)
// runs fastest with 4 states per thread and the most warps; the backward with
// 8 states per thread, whose per-lane reductions then cover more work.
using FwdCfg = Cfg<1, 4, 32>;
using BwdCfg = Cfg<2, 4, 64>;

constexpr size_t kFwdSmem = sizeof(float) * FwdSmem<FwdCfg>::kTotal;
static_assert(kFwdSmem <= 227 * 1024, "scan forward: shared memory per block");

int SmCount() {
  static const int sms = [] {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
  }();
  return sms;
}

// Chunks per sequence for a pass of `blocks` blocks per chunk count of one,
// `slots` of which run at once. A block walks its chunk at a pace set by
// latency more than by its SM's load, so a pass takes about waves x tiles per
// chunk; the carry pass adds about carry_per_tile of a pass block's time per
// tile of the chunks that pass something on (kernels/NOTES.md has both
// measured). The count minimising the sum, at most kMaxChunks; the
// environment variable `env` overrides it (results differ from one count to
// another in the last bits only).
int TimeChunks(const char* env, int64_t blocks, int tiles, int64_t slots, double carry_per_tile) {
  constexpr int kMaxChunks = 16;
  if (const char* forced = std::getenv(env)) {
    const int n = std::atoi(forced);
    CHECK_GE(n, 1) << env << "=" << forced;
    return std::min(n, tiles);
  }
  int best = 1;
  double best_cost = 0;
  for (int c = 1; c <= std::min(kMaxChunks, tiles); ++c) {
    const double cost = double(CeilDiv(blocks * c, slots) * CeilDiv(tiles, c)) +
                        carry_per_tile * tiles * (c - 1) / c;
    if (c == 1 || cost < best_cost) {
      best = c;
      best_cost = cost;
    }
  }
  return best;
}

// The forward's chunk count, the same for every mode and row map (so that
// their states agree bit for bit): from the output pass's occupancy.
int ForwardChunks(const Params& p) {
  constexpr double kCarryPerTile = 0.5;
  static const int blocks_per_sm = [] {
    auto kernel = ScanForwardKernel<FwdCfg, FwdMode::kOutput, false>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(kFwdSmem)));
    int n = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, FwdCfg::kNT, kFwdSmem));
    return n;
  }();
  const int tiles = static_cast<int>(CeilDiv(p.seq_len, kT));
  return TimeChunks("MODAMBA_SCAN_FWD_CHUNKS", CeilDiv(p.e_dim, FwdCfg::kCB) * p.batch, tiles,
                    int64_t(SmCount()) * blocks_per_sm, kCarryPerTile);
}

// One forward pass over grid_chunks chunks of p's chunk split.
template <FwdMode kMode, bool kMapped>
void LaunchForwardPass(const Params& p, int grid_chunks, cudaStream_t stream) {
  auto kernel = ScanForwardKernel<FwdCfg, kMode, kMapped>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(kFwdSmem)));
  dim3 grid(static_cast<unsigned>(CeilDiv(p.e_dim, FwdCfg::kCB)), static_cast<unsigned>(p.batch),
            static_cast<unsigned>(grid_chunks));
  kernel<<<grid, FwdCfg::kNT, kFwdSmem, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

// The forward in time chunks: the carry pass, then kMode's pass.
template <FwdMode kMode, bool kMapped>
void RunForward(Params p, cudaStream_t stream) {
  const int tiles = static_cast<int>(CeilDiv(p.seq_len, kT));
  p.chunk_tiles = static_cast<int>(CeilDiv(tiles, ForwardChunks(p)));
  p.chunks = static_cast<int>(CeilDiv(tiles, p.chunk_tiles));  // none empty
  Scratch scratch(stream);
  if (p.chunks > 1) {
    p.carry_x = scratch.Alloc<float>(p.batch * p.chunks * p.e_dim * kS);
    p.carry_de = scratch.Alloc<float>(p.batch * p.chunks * p.e_dim);
    LaunchForwardPass<FwdMode::kCarry, kMapped>(p, p.chunks - 1, stream);
  }
  LaunchForwardPass<kMode, kMapped>(p, p.chunks, stream);
}

// The backward's chunk count: the adjoint's carry pass costs about 0.16 of a
// backward block's time per tile (H100).
int BackwardChunks(int64_t blocks, int tiles, int blocks_per_sm) {
  return TimeChunks("MODAMBA_SCAN_CHUNKS", blocks, tiles, int64_t(SmCount()) * blocks_per_sm,
                    0.16);
}

template <class C, bool kMapped>
void LaunchBackward(Params p, const ScanArgs& a, const ScanGradArgs& g, cudaStream_t stream) {
  constexpr int kBlocksPerSm = 2;  // __launch_bounds__ of ScanBackwardKernel
  const int64_t n = a.batch * a.seq_len, e = a.e_dim;
  const int64_t blocks = CeilDiv(e, C::kCB);
  const int groups = p.groups;
  const int tiles = static_cast<int>(CeilDiv(a.seq_len, kT));
  p.chunk_tiles = static_cast<int>(
      CeilDiv(tiles, BackwardChunks(blocks * a.batch, tiles, kBlocksPerSm)));
  p.chunks = static_cast<int>(CeilDiv(tiles, p.chunk_tiles));  // none empty
  const int64_t parts = a.batch * p.chunks;                    // (sequence, chunk) pairs
  Scratch scratch(stream);
  if (a.saved_states != nullptr) {
    p.ckpt = a.saved_states;
  } else {
    p.ckpt = scratch.Alloc<float>(ScanSavedStatesSize(a.batch, a.seq_len, e));
  }
  p.dbc_part = scratch.Alloc<float>(blocks * n * 2 * kS);
  p.part_da = scratch.Alloc<float>(parts * e * kS);
  p.part_dd = scratch.Alloc<float>(parts * e);
  p.part_dtb = scratch.Alloc<float>(parts * groups * e);

  if (a.saved_states == nullptr) RunForward<FwdMode::kStates, kMapped>(p, stream);
  if (p.chunks > 1) {
    p.carry_x = scratch.Alloc<float>(parts * e * kS);
    p.carry_de = scratch.Alloc<float>(parts * e);
    dim3 grid(static_cast<unsigned>(CeilDiv(e, kCarryCB)), static_cast<unsigned>(a.batch),
              static_cast<unsigned>(p.chunks - 1));
    AdjointCarryKernel<kMapped><<<grid, kCarryThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
  }

  constexpr size_t kSmem = sizeof(float) * BwdSmem<C>::kTotal;
  static_assert(kSmem <= 227 * 1024, "scan backward: shared memory per block");
  static_assert(kBlocksPerSm * (kSmem + 1024) <= 228 * 1024,
                "scan backward: two blocks per H100 SM");
  auto kernel = ScanBackwardKernel<C, kMapped>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(kSmem)));
  dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(a.batch),
            static_cast<unsigned>(p.chunks));
  kernel<<<grid, C::kNT, kSmem, stream>>>(p);
  CUDA_CHECK_LAUNCH();

  const int64_t n_dbc = n * 2 * a.s_dim;
  DbcReduceKernel<kMapped><<<GridFor(n_dbc, 256, int64_t(1) << 30), 256, 0, stream>>>(
      p.dbc_part, static_cast<int>(blocks), n, static_cast<int>(a.s_dim), p.rows, g.db.data,
      g.db.ld, g.dc.data, g.dc.ld);
  CUDA_CHECK_LAUNCH();
  const int64_t n_param = e * a.s_dim + e + groups * e;
  ScanParamReduceKernel<<<GridFor(n_param, 256, int64_t(1) << 30), 256, 0, stream>>>(
      p.part_da, p.part_dd, p.part_dtb, parts, e, static_cast<int>(a.s_dim), groups, g.da_log,
      g.dd, g.ddt_bias);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

int64_t ScanSavedStatesSize(int64_t batch, int64_t seq_len, int64_t e_dim) {
  return batch * CeilDiv(seq_len, kT) * e_dim * kS;
}

void ScanForward(const ScanArgs& a, OutView y, cudaStream_t stream) {
  if (a.batch * a.seq_len == 0 || a.e_dim == 0) return;
  Params p = MakeParams(a);
  p.ckpt = a.saved_states;
  p.y = y.data;
  p.ldy = y.ld;
  p.y_bf16 = y.bf16;
  p.y_vec = QuadAligned(y.data, y.ld, y.bf16);
  DispatchRowMap(p.rows, [&](auto mapped) {
    RunForward<FwdMode::kOutput, decltype(mapped)::value>(p, stream);
  });
}

void ScanBackward(const ScanArgs& a, const ScanGradArgs& g, cudaStream_t stream) {
  if (a.batch * a.seq_len == 0 || a.e_dim == 0) return;
  Params p = MakeParams(a);
  p.dy = OperandOf(g.dy);
  p.du = g.du.data;
  p.lddu = g.du.ld;
  p.ddr = g.ddelta_raw.data;
  p.ddr_bf16 = g.ddelta_raw.bf16;
  p.ldddr = g.ddelta_raw.ld;
  p.dz = g.dz.data;
  p.lddz = g.dz.ld;
  p.dz_bf16 = g.dz.bf16;
  p.du_vec = QuadAligned(g.du.data, g.du.ld, false);
  p.ddr_vec = QuadAligned(g.ddelta_raw.data, g.ddelta_raw.ld, g.ddelta_raw.bf16);
  p.dz_vec = QuadAligned(g.dz.data, g.dz.ld, g.dz.bf16);
  DispatchRowMap(p.rows, [&](auto mapped) {
    LaunchBackward<BwdCfg, decltype(mapped)::value>(p, a, g, stream);
  });
}

}  // namespace modamba::cuda
