#include "core/data/resample.h"

#include <soxr.h>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace modamba::data {

absl::StatusOr<std::vector<float>> Resample(const std::vector<float>& samples, int from_rate,
                                            int to_rate) {
  if (from_rate <= 0 || to_rate <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resample from ", from_rate, " Hz to ", to_rate, " Hz"));
  }
  if (from_rate == to_rate) return samples;
  const size_t out_length = static_cast<size_t>(
      std::llround(static_cast<double>(samples.size()) * to_rate / from_rate));
  std::vector<float> out(out_length);
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);  // linear phase
  const soxr_runtime_spec_t runtime = soxr_runtime_spec(1);
  size_t done = 0;
  const soxr_error_t error =
      soxr_oneshot(from_rate, to_rate, 1, samples.data(), samples.size(), nullptr, out.data(),
                   out.size(), &done, &io, &quality, &runtime);
  if (error != nullptr) {
    return absl::InternalError(absl::StrCat("resampling ", from_rate, " Hz -> ", to_rate,
                                            " Hz: ", error));
  }
  out.resize(done);
  return out;
}

}  // namespace modamba::data
