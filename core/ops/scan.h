// Selective-scan reference (Mamba-1), fused with the dt bias + softplus, the
// D skip and the SiLU(z) gate. Per sequence, channel e and state s:
//   delta_t = softplus(delta_raw[t, e] + dt_bias[g(t), e])
//   h_t     = exp(delta_t A[e, s]) h_{t-1} + delta_t B[t, s] u[t, e]   (h = 0 before a doc start)
//   y[t, e] = (sum_s C[t, s] h_t + D[e] u[t, e]) * silu(z[t, e])
// with A = -exp(A_log). B and C are shared by all channels of a token.
#ifndef MODAMBA_CORE_OPS_SCAN_H_
#define MODAMBA_CORE_OPS_SCAN_H_

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/ops/activations.h"
#include "core/ops/rows.h"

namespace modamba::ops {

template <typename T>
struct ScanRef {
  int64_t batch, seq_len, e_dim, s_dim;
  const uint8_t* doc_start;  // [N], by position
  const int32_t* rows;       // [N]: position -> row; null: position n is row n
  const int32_t* group;      // [N]: row -> dt_bias row
  const T* u; int64_t ldu;
  const T* delta_raw; int64_t ldr;
  const T* b; int64_t ldb;
  const T* c; int64_t ldc;
  const T* z; int64_t ldz;
  const T* dt_bias;          // [G, E]
  const T* a_log;            // [E, S]
  const T* d;                // [E]
};

// Row `row`'s delta.
template <typename T>
T ScanDelta(const ScanRef<T>& p, int64_t row, int64_t e) {
  return Softplus(p.delta_raw[row * p.ldr + e] + p.dt_bias[p.group[row] * p.e_dim + e]);
}

// A = -exp(A_log), [E, S].
template <typename T>
std::vector<T> ScanA(const ScanRef<T>& p) {
  std::vector<T> a(p.e_dim * p.s_dim);
  for (size_t i = 0; i < a.size(); ++i) a[i] = -std::exp(p.a_log[i]);
  return a;
}

// Advances channel e's state h [S] by row `row` (from zero when `reset`) and
// returns y[row, e]; `a` is ScanA's row e.
template <typename T>
T ScanChannelStep(const ScanRef<T>& p, int64_t row, int64_t e, const T* a, bool reset, T* h) {
  T delta = ScanDelta(p, row, e);
  T un = p.u[row * p.ldu + e];
  T acc = 0;
  for (int64_t s = 0; s < p.s_dim; ++s) {
    T decay = reset ? T(0) : std::exp(delta * a[s]);
    h[s] = decay * h[s] + delta * p.b[row * p.ldb + s] * un;
    acc += p.c[row * p.ldc + s] * h[s];
  }
  T zn = p.z[row * p.ldz + e];
  return (acc + p.d[e] * un) * Silu(zn);
}

template <typename T>
void ScanForward(const ScanRef<T>& p, T* y, int64_t ldy) {
  const std::vector<T> a = ScanA(p);
  std::vector<T> h(p.s_dim);
  for (int64_t bi = 0; bi < p.batch; ++bi) {
    for (int64_t e = 0; e < p.e_dim; ++e) {
      for (int64_t t = 0; t < p.seq_len; ++t) {
        int64_t n = bi * p.seq_len + t, row = RowOf(p.rows, n);
        y[row * ldy + e] =
            ScanChannelStep(p, row, e, &a[e * p.s_dim], t == 0 || p.doc_start[n], h.data());
      }
    }
  }
}

// One row per stream: `p` holds the step's rows as one-token sequences
// (doc_start: the reset flags), and row n advances h = state[streams[n]]
// ([num_streams, E, S]) in place.
template <typename T>
void ScanStep(const ScanRef<T>& p, const int32_t* streams, T* state, T* y, int64_t ldy) {
  const std::vector<T> a = ScanA(p);
  for (int64_t n = 0; n < p.batch * p.seq_len; ++n) {
    for (int64_t e = 0; e < p.e_dim; ++e) {
      T* h = state + (streams[n] * p.e_dim + e) * p.s_dim;
      y[n * ldy + e] = ScanChannelStep(p, n, e, &a[e * p.s_dim], p.doc_start[n] != 0, h);
    }
  }
}

// Input gradients (du, ddelta_raw, db, dc, dz) are overwritten; parameter
// gradients (ddt_bias [G, E], da_log, dd) accumulate. The states are
// recomputed per channel rather than saved by the forward.
template <typename T>
void ScanBackward(const ScanRef<T>& p, const T* dy, int64_t lddy, T* du, int64_t lddu,
                  T* ddelta_raw, int64_t lddr, T* db, int64_t lddb, T* dc, int64_t lddc,
                  T* dz, int64_t lddz, T* ddt_bias, T* da_log, T* dd) {
  const int64_t L = p.seq_len, S = p.s_dim;
  for (int64_t n = 0; n < p.batch * L; ++n) {
    for (int64_t s = 0; s < S; ++s) db[n * lddb + s] = dc[n * lddc + s] = 0;
  }
  std::vector<T> hs((L + 1) * S);  // hs[t + 1] = h_t; hs[0] = 0
  std::vector<T> dh(S);
  for (int64_t bi = 0; bi < p.batch; ++bi) {
    for (int64_t e = 0; e < p.e_dim; ++e) {
      for (int64_t s = 0; s < S; ++s) hs[s] = 0;
      for (int64_t t = 0; t < L; ++t) {
        int64_t n = bi * L + t, row = RowOf(p.rows, n);
        bool reset = t == 0 || p.doc_start[n];
        T delta = ScanDelta(p, row, e);
        for (int64_t s = 0; s < S; ++s) {
          T decay = reset ? T(0) : std::exp(-delta * std::exp(p.a_log[e * S + s]));
          hs[(t + 1) * S + s] =
              decay * hs[t * S + s] + delta * p.b[row * p.ldb + s] * p.u[row * p.ldu + e];
        }
      }
      for (int64_t s = 0; s < S; ++s) dh[s] = 0;
      for (int64_t t = L - 1; t >= 0; --t) {
        int64_t n = bi * L + t, row = RowOf(p.rows, n);
        bool reset = t == 0 || p.doc_start[n];
        T pre = p.delta_raw[row * p.ldr + e] + p.dt_bias[p.group[row] * p.e_dim + e];
        T delta = Softplus(pre);
        T un = p.u[row * p.ldu + e];
        T zn = p.z[row * p.ldz + e];
        const T* h = &hs[(t + 1) * S];
        const T* h_prev = &hs[t * S];
        T yscan = 0;
        for (int64_t s = 0; s < S; ++s) yscan += p.c[row * p.ldc + s] * h[s];
        T g = dy[row * lddy + e];
        dz[row * lddz + e] = g * (yscan + p.d[e] * un) * SiluGrad(zn);
        T dyp = g * Silu(zn);  // gradient of the pre-gate output
        dd[e] += dyp * un;
        T dun = dyp * p.d[e];
        T ddelta = 0;
        for (int64_t s = 0; s < S; ++s) {
          T a = -std::exp(p.a_log[e * S + s]);
          T bs = p.b[row * p.ldb + s];
          dc[row * lddc + s] += dyp * h[s];
          dh[s] += dyp * p.c[row * p.ldc + s];
          T decay = reset ? T(0) : std::exp(delta * a);
          ddelta += dh[s] * (a * decay * h_prev[s] + bs * un);
          da_log[e * S + s] += dh[s] * delta * decay * h_prev[s] * a;  // dA/dA_log = A
          db[row * lddb + s] += dh[s] * delta * un;
          dun += dh[s] * delta * bs;
          dh[s] *= decay;  // carry to h_{t-1}; zero across a document start
        }
        du[row * lddu + e] = dun;
        T dpre = ddelta * Sigmoid(pre);
        ddelta_raw[row * lddr + e] = dpre;
        ddt_bias[p.group[row] * p.e_dim + e] += dpre;
      }
    }
  }
}

}  // namespace modamba::ops

#endif  // MODAMBA_CORE_OPS_SCAN_H_
