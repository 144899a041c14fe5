// The Transfusion diffusion objective's fixed parts: the cosine noise schedule
// over T steps, the noising of an image's patches, and the sinusoidal timestep
// features the model embeds.
//
//   abar(t) = f(t) / f(0),  f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2),  s = 0.008
//   x_t = sqrt(abar(t)) x_0 + sqrt(1 - abar(t)) eps,   eps ~ N(0, I); the model predicts eps.
#ifndef MODAMBA_CORE_DIFFUSION_H_
#define MODAMBA_CORE_DIFFUSION_H_

#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace modamba {

// abar(t) for t in [0, T]; abar(0) = 1, decreasing to ~0 at T.
double CosineAlphaBar(int64_t t, int64_t total_steps);

// x_t and eps for one image's patches x0 ([n, dim] row-major) at step t.
void NoisePatches(const float* x0, int64_t n, int64_t dim, int64_t t, int64_t total_steps,
                  Rng* rng, float* x_t, float* eps);

// Sinusoidal features of t: [sin(t w_i), cos(t w_i)] for dim / 2 frequencies
// w_i = 10000^(-2i / dim); dim must be even.
void TimestepFeatures(int64_t t, int dim, float* out);

}  // namespace modamba

#endif  // MODAMBA_CORE_DIFFUSION_H_
