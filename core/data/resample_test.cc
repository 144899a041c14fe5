#include "core/data/resample.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

std::vector<float> Sine(double hz, double amplitude, int rate, int n) {
  std::vector<float> s(n);
  for (int i = 0; i < n; ++i) {
    s[i] = static_cast<float>(amplitude * std::sin(2 * M_PI * hz * i / rate));
  }
  return s;
}

// RMS of a - b over the middle of the signal (the ends see the filter's
// transient).
double MiddleRmsDifference(const std::vector<float>& a, const std::vector<float>& b) {
  const size_t n = std::min(a.size(), b.size());
  double s = 0;
  for (size_t i = n / 10; i < n - n / 10; ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s / (n - 2 * (n / 10)));
}

TEST(ResampleTest, SameRateIsUnchanged) {
  const std::vector<float> s = Sine(440, 0.3, 8000, 1234);
  absl::StatusOr<std::vector<float>> out = Resample(s, 8000, 8000);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, s);
  EXPECT_FALSE(Resample(s, 0, 8000).ok());
}

// A tone in the passband keeps its frequency, amplitude and phase (sample 0
// stays at time 0), in both directions and at a ratio that is not a simple
// fraction.
TEST(ResampleTest, TonesSurviveWithTheirPhase) {
  for (auto [from, to] : {std::pair{44100, 8000}, std::pair{8000, 16000}, std::pair{22050, 8000},
                          std::pair{48000, 8000}, std::pair{11025, 8000}}) {
    const int n = from;  // one second
    absl::StatusOr<std::vector<float>> out = Resample(Sine(1000, 0.5, from, n), from, to);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->size(), static_cast<size_t>(to)) << from << " -> " << to;
    const double error = MiddleRmsDifference(*out, Sine(1000, 0.5, to, to));
    RecordProperty("rms_error_" + std::to_string(from) + "_" + std::to_string(to),
                   absl::StrCat(error));
    EXPECT_LT(error, 1e-4) << from << " -> " << to;
  }
}

// Above the new Nyquist frequency a tone is filtered out rather than aliased
// (6 kHz at 8 kHz would fold to 2 kHz).
TEST(ResampleTest, RemovesWhatTheNewRateCannotHold) {
  absl::StatusOr<std::vector<float>> out = Resample(Sine(6000, 0.5, 44100, 44100), 44100, 8000);
  ASSERT_TRUE(out.ok());
  const double residue = MiddleRmsDifference(*out, std::vector<float>(out->size(), 0.0f));
  RecordProperty("alias_rms", absl::StrCat(residue));
  EXPECT_LT(residue, 0.5 / std::sqrt(2.0) * 1e-5);  // below -100 dB
}

}  // namespace
}  // namespace modamba::data
