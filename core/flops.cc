#include "core/flops.h"

namespace modamba {
namespace {
struct Dims {
  int64_t d, e, s, r, k, v, m;
  explicit Dims(const v1::ModelConfig& c)
      : d(c.d_model()), e(int64_t{c.expand()} * c.d_model()), s(c.d_state()), r(c.dt_rank()),
        k(c.d_conv()), v(c.vocab_size()), m(c.n_modalities()) {}
};
}  // namespace

int64_t ActiveMatmulParams(const v1::ModelConfig& c) {
  Dims x(c);
  const int64_t per_layer = 2 * x.e * x.d + (x.r + 2 * x.s) * x.e + x.e * x.r + x.d * x.e;
  return c.n_layer() * per_layer + x.v * x.d;
}

int64_t TotalParams(const v1::ModelConfig& c) {
  Dims x(c);
  auto g = [&](bool routed) { return routed ? x.m : 1; };
  const int64_t per_layer = g(c.route_in()) * 2 * x.e * x.d +
                            g(c.route_x()) * (x.r + 2 * x.s) * x.e +
                            g(c.route_dt()) * (x.e * x.r + x.e) +  // weight + bias
                            g(c.route_out()) * x.d * x.e +
                            x.e * x.k + x.e +                      // conv weight + bias
                            x.e * x.s + x.e +                      // A_log, D
                            x.d;                                   // norm
  return c.n_layer() * per_layer + x.v * x.d * (c.tie_embeddings() ? 1 : 2) + x.d;
}

double TrainingFlopsPerToken(const v1::ModelConfig& c) {
  Dims x(c);
  return 6.0 * ActiveMatmulParams(c) + 3.0 * 9.0 * x.e * x.s * c.n_layer();
}

}  // namespace modamba
