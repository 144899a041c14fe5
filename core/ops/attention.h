// References of the Transformer block's sequence ops, with packed documents:
// rotary position embeddings by the position inside the document, and causal
// multi-head attention in which no query sees a key before its document's
// first position. Both go through the row map of a SeqLayout (core/backend.h).
#ifndef MODAMBA_CORE_OPS_ATTENTION_H_
#define MODAMBA_CORE_OPS_ATTENTION_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/ops/conv.h"
#include "core/ops/rows.h"

namespace modamba::ops {

// The inverse frequency of rotary pair j of a head of `head_dim` columns.
inline double RopeFrequency(double theta, int64_t j, int64_t head_dim) {
  return std::pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(head_dim));
}

// Rotates pair (j, j + head_dim / 2) of every head of row `row` by
// sign * pos * RopeFrequency(j); sign -1 is the inverse (the backward).
// x and y may be the same row.
template <typename T>
void RopeRow(int64_t cols, int64_t head_dim, double theta, double pos, double sign, const T* x,
             T* y) {
  const int64_t half = head_dim / 2;
  for (int64_t h0 = 0; h0 < cols; h0 += head_dim) {
    for (int64_t j = 0; j < half; ++j) {
      const double a = sign * pos * RopeFrequency(theta, j, head_dim);
      const T c = static_cast<T>(std::cos(a)), s = static_cast<T>(std::sin(a));
      const T x1 = x[h0 + j], x2 = x[h0 + j + half];
      y[h0 + j] = x1 * c - x2 * s;
      y[h0 + j + half] = x2 * c + x1 * s;
    }
  }
}

// y = rope(x) over [N, cols] (cols a multiple of head_dim); inverse: the
// transpose, which is the backward of the rotation.
template <typename T>
void Rope(int64_t batch, int64_t seq_len, int64_t cols, int64_t head_dim, double theta,
          bool inverse, const uint8_t* doc_start, const int32_t* rows, const T* x, int64_t ldx,
          T* y, int64_t ldy) {
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t seq0 = b * seq_len;
    std::vector<int64_t> first = DocStarts(seq_len, doc_start + seq0);
    for (int64_t t = 0; t < seq_len; ++t) {
      const int64_t r = RowOf(rows, seq0 + t);
      RopeRow(cols, head_dim, theta, static_cast<double>(t - first[t]), inverse ? -1.0 : 1.0,
              x + r * ldx, y + r * ldy);
    }
  }
}

// Causal attention over one SeqLayout: q, k, v, out are [N, heads * head_dim]
// (rows through the map); lse[row * heads + h] is the log-sum-exp of the
// query's scaled scores, kept for the backward.
template <typename T>
struct AttentionRef {
  int64_t batch, seq_len, heads, head_dim;
  const uint8_t* doc_start;  // [N] by position
  const int32_t* rows;       // null: position n is row n
  const T* q;
  int64_t ldq;
  const T* k;
  int64_t ldk;
  const T* v;
  int64_t ldv;

  T scale() const { return T(1) / std::sqrt(static_cast<T>(head_dim)); }
  // The row of position t of sequence b, and column h * head_dim of it.
  int64_t Row(int64_t b, int64_t t) const { return RowOf(rows, b * seq_len + t); }
  T Score(int64_t b, int64_t h, int64_t i, int64_t j) const {
    const T* qi = q + Row(b, i) * ldq + h * head_dim;
    const T* kj = k + Row(b, j) * ldk + h * head_dim;
    T s = 0;
    for (int64_t d = 0; d < head_dim; ++d) s += qi[d] * kj[d];
    return s * scale();
  }
};

// out = sum_j softmax_j(q . key(j) * scale) value(j) over j < count, one
// head of head_dim; returns the log-sum-exp of the scaled scores. p: scratch.
template <typename T, typename Key, typename Value>
T AttendOne(int64_t head_dim, T scale, const T* q, int64_t count, Key key, Value value,
            std::vector<T>* p, T* out) {
  p->resize(count);
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < count; ++j) {
    const T* kj = key(j);
    T s = 0;
    for (int64_t d = 0; d < head_dim; ++d) s += q[d] * kj[d];
    m = std::max(m, (*p)[j] = s * scale);
  }
  T sum = 0;
  for (int64_t j = 0; j < count; ++j) sum += (*p)[j] = std::exp((*p)[j] - m);
  std::fill(out, out + head_dim, T(0));
  for (int64_t j = 0; j < count; ++j) {
    const T* vj = value(j);
    for (int64_t d = 0; d < head_dim; ++d) out[d] += (*p)[j] / sum * vj[d];
  }
  return m + std::log(sum);
}

template <typename T>
void AttentionForward(const AttentionRef<T>& a, T* out, int64_t ldo, T* lse) {
  std::vector<T> p;
  for (int64_t b = 0; b < a.batch; ++b) {
    std::vector<int64_t> first = DocStarts(a.seq_len, a.doc_start + b * a.seq_len);
    for (int64_t h = 0; h < a.heads; ++h) {
      const int64_t c0 = h * a.head_dim;
      for (int64_t i = 0; i < a.seq_len; ++i) {
        const int64_t ri = a.Row(b, i), f = first[i];
        lse[ri * a.heads + h] = AttendOne(
            a.head_dim, a.scale(), a.q + ri * a.ldq + c0, i - f + 1,
            [&](int64_t j) { return a.k + a.Row(b, f + j) * a.ldk + c0; },
            [&](int64_t j) { return a.v + a.Row(b, f + j) * a.ldv + c0; }, &p,
            out + ri * ldo + c0);
      }
    }
  }
}

// Decoding, one row per stream: row i continues stream streams[i] (a new
// document when reset[i]) at position pos = its cached length, 0 after a
// reset. q and k are rotated by pos, k and v go to cache row pos of the
// stream ([num_streams, max_len, heads * head_dim]), and out is attention
// over cache rows [0, pos]: AttentionForward's output at that position.
template <typename T>
void AttentionStep(int64_t num_rows, int64_t heads, int64_t head_dim, double theta,
                   const int32_t* streams, const uint8_t* reset, const T* q, int64_t ldq,
                   const T* k, int64_t ldk, const T* v, int64_t ldv, int64_t max_len, T* k_cache,
                   T* v_cache, int32_t* lengths, T* out, int64_t ldo) {
  const int64_t dim = heads * head_dim;
  const T scale = T(1) / std::sqrt(static_cast<T>(head_dim));
  std::vector<T> qr(dim), p;
  for (int64_t i = 0; i < num_rows; ++i) {
    const int64_t s = streams[i], pos = reset[i] ? 0 : lengths[s];
    T* kc = k_cache + s * max_len * dim;
    T* vc = v_cache + s * max_len * dim;
    RopeRow(dim, head_dim, theta, static_cast<double>(pos), 1.0, q + i * ldq, qr.data());
    RopeRow(dim, head_dim, theta, static_cast<double>(pos), 1.0, k + i * ldk, kc + pos * dim);
    std::copy(v + i * ldv, v + i * ldv + dim, vc + pos * dim);
    lengths[s] = static_cast<int32_t>(pos + 1);
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t c0 = h * head_dim;
      AttendOne(
          head_dim, scale, qr.data() + c0, pos + 1,
          [&](int64_t j) { return kc + j * dim + c0; },
          [&](int64_t j) { return vc + j * dim + c0; }, &p, out + i * ldo + c0);
    }
  }
}

// dq, dk, dv are overwritten. With P the softmax, D_i = dO_i . O_i and
// dS = P * (dO V^T - D): dq = scale dS K, dk = scale dS^T Q, dv = P^T dO.
template <typename T>
void AttentionBackward(const AttentionRef<T>& a, const T* out, int64_t ldo, const T* lse,
                       const T* dout, int64_t lddo, T* dq, int64_t lddq, T* dk, int64_t lddk,
                       T* dv, int64_t lddv) {
  const int64_t dim = a.heads * a.head_dim;
  for (int64_t n = 0; n < a.batch * a.seq_len; ++n) {
    std::fill(dq + n * lddq, dq + n * lddq + dim, T(0));
    std::fill(dk + n * lddk, dk + n * lddk + dim, T(0));
    std::fill(dv + n * lddv, dv + n * lddv + dim, T(0));
  }
  for (int64_t b = 0; b < a.batch; ++b) {
    std::vector<int64_t> first = DocStarts(a.seq_len, a.doc_start + b * a.seq_len);
    for (int64_t h = 0; h < a.heads; ++h) {
      const int64_t c0 = h * a.head_dim;
      for (int64_t i = 0; i < a.seq_len; ++i) {
        const int64_t ri = a.Row(b, i);
        const T* doi = dout + ri * lddo + c0;
        const T* oi = out + ri * ldo + c0;
        T di = 0;
        for (int64_t d = 0; d < a.head_dim; ++d) di += doi[d] * oi[d];
        for (int64_t j = first[i]; j <= i; ++j) {
          const int64_t rj = a.Row(b, j);
          const T p = std::exp(a.Score(b, h, i, j) - lse[ri * a.heads + h]);
          const T* vj = a.v + rj * a.ldv + c0;
          T dp = 0;
          for (int64_t d = 0; d < a.head_dim; ++d) {
            dp += doi[d] * vj[d];
            dv[rj * lddv + c0 + d] += p * doi[d];
          }
          const T ds = p * (dp - di) * a.scale();
          const T* qi = a.q + ri * a.ldq + c0;
          const T* kj = a.k + rj * a.ldk + c0;
          for (int64_t d = 0; d < a.head_dim; ++d) {
            dq[ri * lddq + c0 + d] += ds * kj[d];
            dk[rj * lddk + c0 + d] += ds * qi[d];
          }
        }
      }
    }
  }
}

}  // namespace modamba::ops

#endif  // MODAMBA_CORE_OPS_ATTENTION_H_
