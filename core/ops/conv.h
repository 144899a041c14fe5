// Causal depthwise conv1d + bias + SiLU reference, with document resets:
// u[t, e] = silu(b[e] + sum_k w[e, k] * x[t - (K-1) + k, e]), where rows before
// the current document's first row read as zero.
#ifndef MODAMBA_CORE_OPS_CONV_H_
#define MODAMBA_CORE_OPS_CONV_H_

#include <cstdint>
#include <vector>

#include "core/ops/activations.h"

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

template <typename T>
T ConvPreActivation(int64_t t, int64_t e, int64_t k_width, int64_t first, const T* x,
                    int64_t ldx, const T* w, const T* b) {
  T a = b[e];
  for (int64_t k = 0; k < k_width; ++k) {
    int64_t src = t - (k_width - 1) + k;
    if (src >= first) a += w[e * k_width + k] * x[src * ldx + e];
  }
  return a;
}

template <typename T>
void ConvForward(int64_t batch, int64_t seq_len, int64_t e_dim, int64_t k_width,
                 const uint8_t* doc_start, const T* x, int64_t ldx, const T* w, const T* b,
                 T* u, int64_t ldu) {
  for (int64_t bi = 0; bi < batch; ++bi) {
    std::vector<int64_t> first = DocStarts(seq_len, doc_start + bi * seq_len);
    const T* xb = x + bi * seq_len * ldx;
    T* ub = u + bi * seq_len * ldu;
    for (int64_t t = 0; t < seq_len; ++t) {
      for (int64_t e = 0; e < e_dim; ++e) {
        ub[t * ldu + e] = Silu(ConvPreActivation(t, e, k_width, first[t], xb, ldx, w, b));
      }
    }
  }
}

// dx is overwritten; dw and db accumulate.
template <typename T>
void ConvBackward(int64_t batch, int64_t seq_len, int64_t e_dim, int64_t k_width,
                  const uint8_t* doc_start, const T* x, int64_t ldx, const T* w, const T* b,
                  const T* du, int64_t lddu, T* dx, int64_t lddx, T* dw, T* db) {
  for (int64_t bi = 0; bi < batch; ++bi) {
    std::vector<int64_t> first = DocStarts(seq_len, doc_start + bi * seq_len);
    const T* xb = x + bi * seq_len * ldx;
    const T* dub = du + bi * seq_len * lddu;
    T* dxb = dx + bi * seq_len * lddx;
    for (int64_t t = 0; t < seq_len; ++t) {
      for (int64_t e = 0; e < e_dim; ++e) dxb[t * lddx + e] = 0;
    }
    for (int64_t t = 0; t < seq_len; ++t) {
      for (int64_t e = 0; e < e_dim; ++e) {
        T a = ConvPreActivation(t, e, k_width, first[t], xb, ldx, w, b);
        T da = dub[t * lddu + e] * SiluGrad(a);
        db[e] += da;
        for (int64_t k = 0; k < k_width; ++k) {
          int64_t src = t - (k_width - 1) + k;
          if (src < first[t]) continue;
          dw[e * k_width + k] += da * xb[src * ldx + e];
          dxb[src * lddx + e] += da * w[e * k_width + k];
        }
      }
    }
  }
}

}  // namespace modamba::ops

#endif  // MODAMBA_CORE_OPS_CONV_H_
