// Causal depthwise conv1d + bias + SiLU reference, with document resets:
// u[t, e] = silu(b[e] + sum_k w[e, k] * x[t - (K-1) + k, e]), where positions
// before the current document's first read as zero.
#ifndef MODAMBA_CORE_OPS_CONV_H_
#define MODAMBA_CORE_OPS_CONV_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/ops/activations.h"
#include "core/ops/rows.h"

namespace modamba::ops {

// First row of the document that row t of a sequence belongs to.
inline std::vector<int64_t> DocStarts(int64_t seq_len, const uint8_t* doc_start) {
  std::vector<int64_t> start(seq_len);
  int64_t s = 0;
  for (int64_t t = 0; t < seq_len; ++t) {
    if (doc_start[t]) s = t;
    start[t] = s;
  }
  return start;
}

// Pre-activation at position seq0 + t, whose document starts at position seq0 + first.
template <typename T>
T ConvPreActivation(int64_t seq0, int64_t t, int64_t e, int64_t k_width, int64_t first,
                    const int32_t* rows, const T* x, int64_t ldx, const T* w, const T* b) {
  T a = b[e];
  for (int64_t k = 0; k < k_width; ++k) {
    int64_t src = t - (k_width - 1) + k;
    if (src >= first) a += w[e * k_width + k] * x[RowOf(rows, seq0 + src) * ldx + e];
  }
  return a;
}

// rows: the row of each position (null: position n is row n).
template <typename T>
void ConvForward(int64_t batch, int64_t seq_len, int64_t e_dim, int64_t k_width,
                 const uint8_t* doc_start, const int32_t* rows, const T* x, int64_t ldx,
                 const T* w, const T* b, T* u, int64_t ldu) {
  for (int64_t bi = 0; bi < batch; ++bi) {
    const int64_t seq0 = bi * seq_len;
    std::vector<int64_t> first = DocStarts(seq_len, doc_start + seq0);
    for (int64_t t = 0; t < seq_len; ++t) {
      T* ut = u + RowOf(rows, seq0 + t) * ldu;
      for (int64_t e = 0; e < e_dim; ++e) {
        ut[e] = Silu(ConvPreActivation(seq0, t, e, k_width, first[t], rows, x, ldx, w, b));
      }
    }
  }
}

// One row per stream: row i's K-1 earlier inputs are state[streams[i]]
// ([num_streams, K-1, E], oldest first), read as zero when reset[i]. The
// window and the row go through ConvPreActivation as positions 0..K-1 of a
// sequence, so u equals ConvForward's at the same position; the window then
// shifts to end with x[i].
template <typename T>
void ConvStep(int64_t num_rows, int64_t e_dim, int64_t k_width, const int32_t* streams,
              const uint8_t* reset, const T* x, int64_t ldx, const T* w, const T* b, T* state,
              T* u, int64_t ldu) {
  const int64_t held = (k_width - 1) * e_dim;
  std::vector<T> window(k_width * e_dim);
  for (int64_t i = 0; i < num_rows; ++i) {
    T* s = state + streams[i] * held;
    std::copy(s, s + held, window.begin());
    std::copy(x + i * ldx, x + i * ldx + e_dim, window.begin() + held);
    const int64_t first = reset[i] ? k_width - 1 : 0;
    for (int64_t e = 0; e < e_dim; ++e) {
      u[i * ldu + e] = Silu(ConvPreActivation(0, k_width - 1, e, k_width, first, nullptr,
                                              window.data(), e_dim, w, b));
    }
    if (reset[i]) std::fill(window.begin(), window.begin() + held, T(0));
    std::copy(window.begin() + e_dim, window.end(), s);
  }
}

// dx is overwritten; dw and db accumulate.
template <typename T>
void ConvBackward(int64_t batch, int64_t seq_len, int64_t e_dim, int64_t k_width,
                  const uint8_t* doc_start, const int32_t* rows, const T* x, int64_t ldx,
                  const T* w, const T* b, const T* du, int64_t lddu, T* dx, int64_t lddx, T* dw,
                  T* db) {
  for (int64_t n = 0; n < batch * seq_len; ++n) {
    for (int64_t e = 0; e < e_dim; ++e) dx[n * lddx + e] = 0;
  }
  for (int64_t bi = 0; bi < batch; ++bi) {
    const int64_t seq0 = bi * seq_len;
    std::vector<int64_t> first = DocStarts(seq_len, doc_start + seq0);
    for (int64_t t = 0; t < seq_len; ++t) {
      const T* dut = du + RowOf(rows, seq0 + t) * lddu;
      for (int64_t e = 0; e < e_dim; ++e) {
        T a = ConvPreActivation(seq0, t, e, k_width, first[t], rows, x, ldx, w, b);
        T da = dut[e] * SiluGrad(a);
        db[e] += da;
        for (int64_t k = 0; k < k_width; ++k) {
          int64_t src = t - (k_width - 1) + k;
          if (src < first[t]) continue;
          const int64_t row = RowOf(rows, seq0 + src);
          dw[e * k_width + k] += da * x[row * ldx + e];
          dx[row * lddx + e] += da * w[e * k_width + k];
        }
      }
    }
  }
}

}  // namespace modamba::ops

#endif  // MODAMBA_CORE_OPS_CONV_H_
