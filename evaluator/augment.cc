#include "evaluator/augment.h"

#include <algorithm>
#include <cmath>

#include "core/data/audio.h"
#include "core/data/mnist.h"

namespace modamba::eval {
namespace {

constexpr int kSide = data::kImageSide;

// Bilinear sample of a 28x28 image at (row, col), zero outside.
float Sample(const float* image, double r, double c) {
  const int r0 = static_cast<int>(std::floor(r)), c0 = static_cast<int>(std::floor(c));
  const double fr = r - r0, fc = c - c0;
  auto at = [&](int rr, int cc) -> double {
    return rr >= 0 && rr < kSide && cc >= 0 && cc < kSide ? image[rr * kSide + cc] : 0.0;
  };
  return static_cast<float>((1 - fr) * ((1 - fc) * at(r0, c0) + fc * at(r0, c0 + 1)) +
                            fr * ((1 - fc) * at(r0 + 1, c0) + fc * at(r0 + 1, c0 + 1)));
}

// Grey-level dilation (max) or erosion (min) over the 3x3 cross.
void Morph(const float* in, bool dilate, float* out) {
  for (int r = 0; r < kSide; ++r) {
    for (int c = 0; c < kSide; ++c) {
      float v = in[r * kSide + c];
      const int dr[4] = {-1, 1, 0, 0}, dc[4] = {0, 0, -1, 1};
      for (int k = 0; k < 4; ++k) {
        const int rr = r + dr[k], cc = c + dc[k];
        const float n = rr >= 0 && rr < kSide && cc >= 0 && cc < kSide ? in[rr * kSide + cc] : 0.f;
        v = dilate ? std::max(v, n) : std::min(v, n);
      }
      out[r * kSide + c] = v;
    }
  }
}

// Linear interpolation of x at a fractional index, clamped to the ends.
double Interp(const float* x, int n, double pos) {
  pos = std::clamp(pos, 0.0, static_cast<double>(n - 1));
  const int lo = static_cast<int>(pos);
  const int hi = std::min(lo + 1, n - 1);
  return x[lo] + (pos - lo) * (x[hi] - x[lo]);
}

}  // namespace

void AugmentImage(const ImageAugmentation& a, Rng* rng, float* image) {
  // Output pixel p samples the source at centre + M (p - centre) + shift +
  // elastic(p): a random inverse map is as random as a forward one.
  const double theta = rng->Uniform(-a.max_rotation_deg, a.max_rotation_deg) * M_PI / 180;
  const double scale = 1.0 / rng->Uniform(1 - a.max_scale, 1 + a.max_scale);
  const double shear = rng->Uniform(-a.max_shear, a.max_shear);
  const double sx = rng->Uniform(-a.max_shift, a.max_shift);
  const double sy = rng->Uniform(-a.max_shift, a.max_shift);
  const double cs = std::cos(theta) * scale, sn = std::sin(theta) * scale;
  // M = R(theta) * scale * [[1, shear], [0, 1]] in (x = col, y = row).
  const double m00 = cs, m01 = cs * shear - sn, m10 = sn, m11 = sn * shear + cs;
  const int g = a.elastic_grid;
  std::vector<double> ex(g * g), ey(g * g);
  for (int i = 0; i < g * g; ++i) {
    ex[i] = rng->Normal(0, a.elastic_sigma);
    ey[i] = rng->Normal(0, a.elastic_sigma);
  }
  // The grid's offsets at every pixel, bilinearly (the grid spans the image).
  double dx[data::kImagePixels], dy[data::kImagePixels];
  for (int r = 0; r < kSide; ++r) {
    const double u = r * (g - 1.0) / (kSide - 1);
    const int u0 = std::min(static_cast<int>(u), g - 2);
    const double fu = u - u0;
    for (int c = 0; c < kSide; ++c) {
      const double v = c * (g - 1.0) / (kSide - 1);
      const int v0 = std::min(static_cast<int>(v), g - 2);
      const double fv = v - v0;
      const int i00 = u0 * g + v0, i10 = i00 + g;
      const double w00 = (1 - fu) * (1 - fv), w01 = (1 - fu) * fv, w10 = fu * (1 - fv),
                   w11 = fu * fv;
      dx[r * kSide + c] = w00 * ex[i00] + w01 * ex[i00 + 1] + w10 * ex[i10] + w11 * ex[i10 + 1];
      dy[r * kSide + c] = w00 * ey[i00] + w01 * ey[i00 + 1] + w10 * ey[i10] + w11 * ey[i10 + 1];
    }
  }
  const double centre = (kSide - 1) / 2.0;
  float warped[data::kImagePixels];
  for (int r = 0; r < kSide; ++r) {
    for (int c = 0; c < kSide; ++c) {
      const double x = c - centre, y = r - centre;
      const double src_c = centre + m00 * x + m01 * y + sx + dx[r * kSide + c];
      const double src_r = centre + m10 * x + m11 * y + sy + dy[r * kSide + c];
      warped[r * kSide + c] = Sample(image, src_r, src_c);
    }
  }
  // Stroke thickness: blend towards the dilation (w > 0) or erosion (w < 0).
  const double w = rng->Uniform(-a.max_stroke, a.max_stroke);
  float morphed[data::kImagePixels];
  Morph(warped, w > 0, morphed);
  const double gamma = std::exp(rng->Uniform(-std::log(a.max_gamma), std::log(a.max_gamma)));
  const double gain = rng->Uniform(a.min_gain, 2 - a.min_gain);
  for (int i = 0; i < data::kImagePixels; ++i) {
    const double v = (1 - std::abs(w)) * warped[i] + std::abs(w) * morphed[i];
    // Most pixels are background: pow only where there is ink.
    image[i] = v <= 0 ? 0.f : static_cast<float>(std::min(1.0, gain * std::pow(v, gamma)));
  }
}

std::vector<float> AugmentWaveform(const SpeechAugmentation& a, int sample_rate, Rng* rng,
                                   const std::vector<float>& samples) {
  if (samples.empty()) return {};
  const double speed = rng->Uniform(1 - a.max_speed, 1 + a.max_speed);
  const int64_t n = std::max<int64_t>(1, static_cast<int64_t>(samples.size() / speed));
  std::vector<float> out(n);
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<float>(Interp(samples.data(), samples.size(), i * speed));
  }
  if (rng->Uniform() < a.reverb_probability) {
    // Direct path 1, then Gaussian noise decaying by 60 dB over RT60, scaled
    // to a direct-to-reverberant ratio of 0-12 dB.
    const double rt60 = rng->Uniform(a.min_rt60, a.max_rt60);
    const int taps = std::max(2, static_cast<int>(rt60 * sample_rate));
    std::vector<float> h(taps);
    double tail = 0;
    for (int k = 1; k < taps; ++k) {
      const double v = rng->Normal(0, 1) * std::pow(10.0, -3.0 * k / taps);
      h[k] = static_cast<float>(v);
      tail += v * v;
    }
    const double drr_db = rng->Uniform(0, 12);
    const double norm = std::sqrt(std::pow(10.0, -drr_db / 10) / tail);
    h[0] = 1;
    for (int k = 1; k < taps; ++k) h[k] = static_cast<float>(h[k] * norm);
    std::vector<float> wet = data::Convolve(out, h);
    wet.resize(n);
    out.swap(wet);
  }
  const double gain = std::pow(10.0, rng->Uniform(a.min_gain_db, a.max_gain_db) / 20);
  double power = 0;
  for (float& v : out) {
    v = static_cast<float>(v * gain);
    power += static_cast<double>(v) * v;
  }
  if (rng->Uniform() < a.noise_probability) {
    const double snr_db = rng->Uniform(a.min_snr_db, a.max_snr_db);
    const double noise_std = std::sqrt(power / n / std::pow(10.0, snr_db / 10));
    for (float& v : out) v = static_cast<float>(v + rng->Normal(0, noise_std));
  }
  return out;
}

void WarpMelAxis(const SpeechAugmentation& a, int n_mels, Rng* rng, std::vector<float>* log_mel) {
  const double alpha = rng->Uniform(1 - a.max_pitch, 1 + a.max_pitch);
  const size_t frames = log_mel->size() / n_mels;
  std::vector<float> row(n_mels);
  for (size_t t = 0; t < frames; ++t) {
    float* frame = log_mel->data() + t * n_mels;
    for (int j = 0; j < n_mels; ++j) row[j] = static_cast<float>(Interp(frame, n_mels, j * alpha));
    std::copy(row.begin(), row.end(), frame);
  }
}

void WarpVocalTract(const SpeechAugmentation& a, const data::MelConfig& config, Rng* rng,
                    std::vector<float>* log_mel) {
  if (a.max_vtlp <= 0) return;
  const double alpha = rng->Uniform(1 - a.max_vtlp, 1 + a.max_vtlp);
  const int n = config.n_mels;
  auto to_mel = [](double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); };
  const double mel_lo = to_mel(config.f_min), mel_hi = to_mel(config.f_max);
  const double top = config.f_max;
  // The knee in the source axis: alpha * knee stays below the top for alpha > 1.
  const double knee = a.vtlp_knee * top * std::min(alpha, 1.0) / alpha;
  std::vector<double> source(n);  // fractional band index of each band's source
  for (int m = 0; m < n; ++m) {
    // Band m's centre, as the filterbank places it (core/data/audio.cc).
    const double f = 700.0 * (std::pow(10.0, (mel_lo + (mel_hi - mel_lo) * (m + 1) / (n + 1)) /
                                              2595.0) - 1.0);
    const double src = f <= alpha * knee
                           ? f / alpha
                           : top - (top - knee) * (top - f) / (top - alpha * knee);
    source[m] = (to_mel(src) - mel_lo) / (mel_hi - mel_lo) * (n + 1) - 1;
  }
  const size_t frames = log_mel->size() / n;
  std::vector<float> row(n);
  for (size_t t = 0; t < frames; ++t) {
    float* frame = log_mel->data() + t * n;
    for (int m = 0; m < n; ++m) row[m] = static_cast<float>(Interp(frame, n, source[m]));
    std::copy(row.begin(), row.end(), frame);
  }
}

void MaskSpeechInput(const SpeechAugmentation& a, int frames, int n_mels, Rng* rng, float* input) {
  const int cells = frames * n_mels;
  double sum = 0;
  for (int i = 0; i < cells; ++i) sum += input[i];
  const float mean = static_cast<float>(sum / cells);
  for (int m = 0; m < a.time_masks; ++m) {
    const int width = static_cast<int>(rng->Below(a.max_time_mask + 1));
    const int start = static_cast<int>(rng->Below(frames - width + 1));
    std::fill(input + start * n_mels, input + (start + width) * n_mels, mean);
  }
  for (int m = 0; m < a.freq_masks; ++m) {
    const int width = static_cast<int>(rng->Below(a.max_freq_mask + 1));
    const int start = static_cast<int>(rng->Below(n_mels - width + 1));
    for (int t = 0; t < frames; ++t) {
      std::fill(input + t * n_mels + start, input + t * n_mels + start + width, mean);
    }
  }
}

}  // namespace modamba::eval
