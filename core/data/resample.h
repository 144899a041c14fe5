// Sample-rate conversion of mono audio by libsoxr (band-limited, linear
// phase, "high quality" recipe: passband to 91.3% of the lower Nyquist rate,
// stopband attenuation beyond 120 dB), run on one thread so that the output
// depends only on the input.
#ifndef MODAMBA_CORE_DATA_RESAMPLE_H_
#define MODAMBA_CORE_DATA_RESAMPLE_H_

#include <vector>

#include "absl/status/statusor.h"

namespace modamba::data {

// `samples` at from_rate resampled to to_rate: round(n * to_rate / from_rate)
// samples, delay-compensated (sample 0 stays at time 0). The same rate returns
// the samples unchanged.
absl::StatusOr<std::vector<float>> Resample(const std::vector<float>& samples, int from_rate,
                                            int to_rate);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_RESAMPLE_H_
