#include "evaluator/augment.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

// A 28x28 image with a vertical bar (a "one").
std::vector<float> Bar() {
  std::vector<float> image(784, 0.f);
  for (int r = 5; r < 23; ++r) {
    for (int c = 13; c < 15; ++c) image[r * 28 + c] = 1.f;
  }
  return image;
}

std::vector<float> Tone(int n) {
  std::vector<float> s(n);
  for (int i = 0; i < n; ++i) s[i] = 0.3f * std::sin(2 * M_PI * 440 * i / 8000.0);
  return s;
}

TEST(AugmentImage, IsDeterministicUnderASeed) {
  const ImageAugmentation a;
  std::vector<float> x = Bar(), y = Bar(), z = Bar();
  Rng r1(7), r2(7), r3(8);
  AugmentImage(a, &r1, x.data());
  AugmentImage(a, &r2, y.data());
  AugmentImage(a, &r3, z.data());
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
  EXPECT_NE(x, Bar());
  for (float v : x) {
    EXPECT_GE(v, 0.f);
    EXPECT_LE(v, 1.f);
  }
}

TEST(AugmentImage, NoAugmentationKeepsTheImage) {
  ImageAugmentation none;
  none.max_rotation_deg = none.max_scale = none.max_shear = none.max_shift = 0;
  none.elastic_sigma = none.max_stroke = 0;
  none.min_gain = none.max_gamma = 1;
  std::vector<float> x = Bar();
  Rng rng(1);
  AugmentImage(none, &rng, x.data());
  const std::vector<float> bar = Bar();
  for (int i = 0; i < 784; ++i) EXPECT_NEAR(x[i], bar[i], 1e-6) << i;
}

TEST(AugmentImage, StrokesGetThickerOrThinner) {
  ImageAugmentation stroke_only;
  stroke_only.max_rotation_deg = stroke_only.max_scale = stroke_only.max_shear = 0;
  stroke_only.max_shift = stroke_only.elastic_sigma = 0;
  stroke_only.min_gain = stroke_only.max_gamma = 1;
  stroke_only.max_stroke = 1;
  double lo = 1e9, hi = 0;
  for (int seed = 0; seed < 20; ++seed) {
    std::vector<float> x = Bar();
    Rng rng(seed);
    AugmentImage(stroke_only, &rng, x.data());
    double ink = 0;
    for (float v : x) ink += v;
    lo = std::min(lo, ink);
    hi = std::max(hi, ink);
  }
  EXPECT_LT(lo, 36 * 0.8);  // the bar has 36 ink pixels
  EXPECT_GT(hi, 36 * 1.5);
}

TEST(AugmentWaveform, IsDeterministicAndChangesSpeedWithinBounds) {
  const SpeechAugmentation a;
  const std::vector<float> tone = Tone(4000);
  for (int seed = 0; seed < 10; ++seed) {
    Rng r1(seed), r2(seed);
    const std::vector<float> x = AugmentWaveform(a, 8000, &r1, tone);
    EXPECT_EQ(x, AugmentWaveform(a, 8000, &r2, tone));
    EXPECT_GE(x.size(), static_cast<size_t>(4000 / 1.1) - 1);
    EXPECT_LE(x.size(), static_cast<size_t>(4000 / 0.9) + 1);
    for (float v : x) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(AugmentWaveform, ReverbAddsADecayingTailAndNoiseHitsItsSnr) {
  SpeechAugmentation reverb;
  reverb.max_speed = 0;
  reverb.min_gain_db = reverb.max_gain_db = 0;
  reverb.noise_probability = 0;
  reverb.reverb_probability = 1;
  // An impulse comes back as the impulse response: the direct path 1, then
  // a tail of 0-12 dB below it that decays by 60 dB over RT60 (<= 0.3 s).
  std::vector<float> impulse(4000, 0.f);
  impulse[0] = 1;
  Rng rng(3);
  const std::vector<float> h = AugmentWaveform(reverb, 8000, &rng, impulse);
  EXPECT_NEAR(h[0], 1.f, 1e-4);
  double early = 0, late = 0;
  for (int k = 1; k < 400; ++k) early += h[k] * h[k];
  for (int k = 2000; k < 4000; ++k) late += h[k] * h[k];
  EXPECT_GT(early, 0.03);
  EXPECT_LT(late, early * 0.01);

  SpeechAugmentation noise = reverb;
  noise.reverb_probability = 0;
  noise.noise_probability = 1;
  noise.min_snr_db = noise.max_snr_db = 20;
  const std::vector<float> tone = Tone(8000);
  Rng rng2(4);
  const std::vector<float> noisy = AugmentWaveform(noise, 8000, &rng2, tone);
  double signal = 0, error = 0;
  for (size_t i = 0; i < tone.size(); ++i) {
    signal += tone[i] * tone[i];
    error += (noisy[i] - tone[i]) * (noisy[i] - tone[i]);
  }
  EXPECT_NEAR(10 * std::log10(signal / error), 20, 0.5);
}

TEST(SpeechMasks, SetBandsToTheMeanDeterministically) {
  const SpeechAugmentation a;
  const int frames = 32, n_mels = 40;
  std::vector<float> x(frames * n_mels + 1);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7);
  std::vector<float> y = x, z = x;
  Rng r1(5), r2(5);
  MaskSpeechInput(a, frames, n_mels, &r1, y.data());
  MaskSpeechInput(a, frames, n_mels, &r2, z.data());
  EXPECT_EQ(y, z);
  EXPECT_EQ(y.back(), x.back());  // the duration is not masked
  double mean = 0;
  for (int i = 0; i < frames * n_mels; ++i) mean += x[i];
  mean /= frames * n_mels;
  for (int i = 0; i < frames * n_mels; ++i) {
    if (y[i] != x[i]) {
      EXPECT_FLOAT_EQ(y[i], static_cast<float>(mean));
    }
  }

  std::vector<float> mel(10 * n_mels);
  for (size_t i = 0; i < mel.size(); ++i) mel[i] = static_cast<float>(i % n_mels);
  std::vector<float> warped = mel, again = mel;
  Rng r3(6), r4(6);
  WarpMelAxis(a, n_mels, &r3, &warped);
  WarpMelAxis(a, n_mels, &r4, &again);
  EXPECT_EQ(warped, again);
  // A linear ramp over the bands stays one, scaled by the warp factor.
  const double alpha = warped[1] - warped[0];
  EXPECT_GE(alpha, 1 - a.max_pitch - 1e-6);
  EXPECT_LE(alpha, 1 + a.max_pitch + 1e-6);
}

// The band of a tone's peak, and its centre in Hz (the filterbank's).
int PeakBand(const std::vector<float>& log_mel, int n_mels) {
  const size_t t = log_mel.size() / n_mels / 2;  // a middle frame
  const float* frame = &log_mel[t * n_mels];
  return static_cast<int>(std::max_element(frame, frame + n_mels) - frame);
}
double BandCentre(const data::MelConfig& c, int m) {
  auto to_mel = [](double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); };
  const double lo = to_mel(c.f_min), hi = to_mel(c.f_max);
  return 700.0 * (std::pow(10.0, (lo + (hi - lo) * (m + 1) / (c.n_mels + 1)) / 2595.0) - 1.0);
}

TEST(VocalTractWarp, MovesATonesPeakByTheFactorDeterministically) {
  const data::MelConfig config;
  const data::MelAnalyzer mel(config);
  std::vector<float> tone(4000);
  for (size_t i = 0; i < tone.size(); ++i) tone[i] = 0.3f * std::sin(2 * M_PI * 1000 * i / 8000.0);
  const std::vector<float> clean = mel.LogMel(tone);
  SpeechAugmentation a;
  for (uint64_t seed : {1, 2, 3, 4, 5, 6}) {
    std::vector<float> warped = clean, again = clean;
    Rng r1(seed), r2(seed), draw(seed);
    WarpVocalTract(a, config, &r1, &warped);
    WarpVocalTract(a, config, &r2, &again);
    EXPECT_EQ(warped, again);
    const double alpha = draw.Uniform(1 - a.max_vtlp, 1 + a.max_vtlp);  // the warp's one draw
    // 1000 Hz is below the knee: the peak moves to the band nearest alpha * 1000 Hz
    // (neighbouring band centres there are about 80 Hz apart).
    EXPECT_NEAR(BandCentre(config, PeakBand(warped, config.n_mels)), alpha * 1000, 60)
        << "seed " << seed << ", alpha " << alpha;
    for (float v : warped) EXPECT_TRUE(std::isfinite(v));
  }
  a.max_vtlp = 0;  // off: unchanged
  std::vector<float> same = clean;
  Rng r(1);
  WarpVocalTract(a, config, &r, &same);
  EXPECT_EQ(same, clean);
}

}  // namespace
}  // namespace modamba::eval
