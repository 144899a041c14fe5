#include "core/flops.h"

namespace modamba {
namespace {
struct Dims {
  int64_t d, e, s, r, k, v, m;
  explicit Dims(const v1::ModelConfig& c)
      : d(c.d_model()), e(int64_t{c.expand()} * c.d_model()), s(c.d_state()), r(c.dt_rank()),
        k(c.d_conv()), v(c.vocab_size()), m(c.n_modalities()) {}
};

bool IsTransformer(const v1::ModelConfig& c) {
  return c.architecture() == v1::ModelConfig::TRANSFORMER;
}
}  // namespace

int64_t ActiveMatmulParams(const v1::ModelConfig& c) {
  Dims x(c);
  if (IsTransformer(c)) {  // qkv, out, SwiGLU in (gate | up) and out
    return c.n_layer() * (4 * x.d * x.d + 3 * x.d * int64_t{c.d_ff()}) + x.v * x.d;
  }
  const int64_t per_layer = 2 * x.e * x.d + (x.r + 2 * x.s) * x.e + x.e * x.r + x.d * x.e;
  return c.n_layer() * per_layer + x.v * x.d;
}

int64_t TotalParams(const v1::ModelConfig& c) {
  Dims x(c);
  auto g = [&](bool routed) { return routed ? x.m : 1; };
  const int64_t embeddings = x.v * x.d * (c.tie_embeddings() ? 1 : 2) + x.d;
  if (IsTransformer(c)) {
    const int64_t f = c.d_ff();
    return c.n_layer() * (g(c.route_qkv()) * 3 * x.d * x.d + g(c.route_attn_out()) * x.d * x.d +
                          g(c.route_ffn_in()) * 2 * f * x.d + g(c.route_ffn_out()) * x.d * f +
                          g(c.route_norms()) * 2 * x.d) +
           embeddings;
  }
  const int64_t per_layer = g(c.route_in()) * 2 * x.e * x.d +
                            g(c.route_x()) * (x.r + 2 * x.s) * x.e +
                            g(c.route_dt()) * (x.e * x.r + x.e) +  // weight + bias
                            g(c.route_out()) * x.d * x.e +
                            x.e * x.k + x.e +                      // conv weight + bias
                            x.e * x.s + x.e +                      // A_log, D
                            x.d;                                   // norm
  return c.n_layer() * per_layer + embeddings;
}

double TrainingFlopsPerToken(const v1::ModelConfig& c, int64_t seq_len) {
  Dims x(c);
  if (IsTransformer(c)) {  // scores and values over the mean causal context
    return 6.0 * ActiveMatmulParams(c) + 3.0 * 4.0 * x.d * (seq_len + 1) / 2.0 * c.n_layer();
  }
  return 6.0 * ActiveMatmulParams(c) + 3.0 * 9.0 * x.e * x.s * c.n_layer();
}

}  // namespace modamba
