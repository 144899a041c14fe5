// One-token steps of the causal conv and the selective scan, for recurrent
// decoding. Each row advances its own stream's state in place; streams are
// distinct, so no two threads touch one state element. A step is a few rows
// wide, so the work spreads over rows x channels (x states for the scan) and
// every thread reads its operands straight from global memory. The
// arithmetic follows conv.cu and scan.cu's forward kernels; sums run in a
// fixed order (no atomics), so results repeat bit for bit.
#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {
namespace {

constexpr int kThreads = 256;

// A thread per (row, channel). The window is summed newest input first, as
// ConvForwardKernel does, and then shifts by one.
__global__ void ConvStepKernel(int64_t rows, int64_t e_dim, int k_width, const uint8_t* reset,
                               const float* x, int64_t ldx, const float* w, const float* b,
                               StepState st, float* u, int64_t ldu) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= rows * e_dim) return;
  const int64_t n = i / e_dim, e = i % e_dim;
  const int32_t stream = st.streams[n];
  if (stream < 0 || stream >= st.num_streams) {
    if (e == 0) *st.error = 1;
    return;
  }
  const int held = k_width - 1;
  float* window = st.state + int64_t(stream) * held * e_dim + e;  // window[j * e_dim], oldest first
  const float* we = w + e * k_width;
  const float xn = x[n * ldx + e];
  const bool fresh = reset[n] != 0;
  float pre = b[e];
  pre += we[held] * xn;
  if (!fresh) {
    for (int j = held - 1; j >= 0; --j) pre += we[j] * window[j * e_dim];
  }
  u[n * ldu + e] = pre * Sigmoid(pre);
  for (int j = 0; j + 1 < held; ++j) window[j * e_dim] = fresh ? 0.f : window[(j + 1) * e_dim];
  if (held > 0) window[(held - 1) * e_dim] = xn;
}

// G adjacent lanes per (row, channel), lane l owning states l, l + G, ...;
// C.h sums over the G lanes by shuffles. Lanes past the last item run the
// shuffles too (with nothing to add), so every lane of a warp reaches them.
template <int G>
__global__ void ScanStepKernel(ScanArgs a, StepState st, float* y, int64_t ldy) {
  const int64_t item = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / G;
  const int lane = threadIdx.x % G;
  const int64_t E = a.e_dim, S = a.s_dim;
  const int64_t n = item / E, e = item % E;
  const bool active = item < a.batch * a.seq_len * E;
  const int32_t stream = active ? st.streams[n] : 0;
  const bool ok = active && stream >= 0 && stream < st.num_streams;
  if (active && !ok && e == 0 && lane == 0) *st.error = 1;
  float acc = 0.f, un = 0.f;
  if (ok) {
    const int64_t g = a.group != nullptr ? a.group[n] : 0;
    const float delta = Softplus(a.delta_raw.data[n * a.delta_raw.ld + e] + a.dt_bias[g * E + e]);
    un = a.u.data[n * a.u.ld + e];
    const float de = delta * kLog2e, du = delta * un;
    const bool fresh = a.doc_start[n] != 0;
    float* h = st.state + (int64_t(stream) * E + e) * S;
    for (int64_t s = lane; s < S; s += G) {
      const float am = fminf(-expf(a.a_log[e * S + s]), -1e-30f);
      const float decay = fresh ? 0.f : exp2f(de * am);
      const float hs = fmaf(decay, h[s], du * a.b.data[n * a.b.ld + s]);
      h[s] = hs;
      acc = fmaf(a.c.data[n * a.c.ld + s], hs, acc);
    }
  }
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(kFullMask, acc, o);
  if (ok && lane == 0) {
    const float zz = a.z.data[n * a.z.ld + e];
    y[n * ldy + e] = (acc + a.d[e] * un) * (zz * Sigmoid(zz));
  }
}

template <int G>
void LaunchScanStep(const ScanArgs& a, const StepState& st, View y, cudaStream_t stream) {
  const int64_t threads = a.batch * a.seq_len * a.e_dim * G;
  ScanStepKernel<G><<<static_cast<unsigned>(CeilDiv(threads, kThreads)), kThreads, 0, stream>>>(
      a, st, y.data, y.ld);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void ConvStep(const ConvArgs& a, const StepState& st, View u, cudaStream_t stream) {
  const int64_t rows = a.batch * a.seq_len, items = rows * a.x.cols;
  if (items == 0) return;
  ConvStepKernel<<<static_cast<unsigned>(CeilDiv(items, kThreads)), kThreads, 0, stream>>>(
      rows, a.x.cols, static_cast<int>(a.k_width), a.doc_start, a.x.data, a.x.ld, a.w, a.b, st,
      u.data, u.ld);
  CUDA_CHECK_LAUNCH();
}

void ScanStep(const ScanArgs& a, const StepState& st, View y, cudaStream_t stream) {
  if (a.batch * a.seq_len * a.e_dim == 0) return;
  // The fewest lanes (a power of two, at most a warp) that hold every state.
  if (a.s_dim <= 1) {
    LaunchScanStep<1>(a, st, y, stream);
  } else if (a.s_dim <= 2) {
    LaunchScanStep<2>(a, st, y, stream);
  } else if (a.s_dim <= 4) {
    LaunchScanStep<4>(a, st, y, stream);
  } else if (a.s_dim <= 8) {
    LaunchScanStep<8>(a, st, y, stream);
  } else if (a.s_dim <= 16) {
    LaunchScanStep<16>(a, st, y, stream);
  } else {
    LaunchScanStep<32>(a, st, y, stream);
  }
}

}  // namespace modamba::cuda
