#include "core/data/image.h"

#include <algorithm>
#include <cmath>

#include "glog/logging.h"

namespace modamba::data {
namespace {

// One axis of a separable resample: output i = sum over its taps of
// weight * input[index].
struct Tap {
  int index;
  float weight;
};
using AxisTaps = std::vector<std::vector<Tap>>;

AxisTaps Taps(int in, int out) {
  AxisTaps taps(out);
  const double scale = static_cast<double>(in) / out;
  for (int i = 0; i < out; ++i) {
    if (in == out) {
      taps[i] = {{i, 1.0f}};
    } else if (out < in) {
      // Area averaging: output i covers input [i * scale, (i + 1) * scale).
      const double lo = i * scale, hi = (i + 1) * scale;
      for (int j = static_cast<int>(lo); j < in && j < hi; ++j) {
        const double overlap = std::min(hi, j + 1.0) - std::max(lo, static_cast<double>(j));
        if (overlap > 0) taps[i].push_back({j, static_cast<float>(overlap / scale)});
      }
    } else {
      // Bilinear between pixel centres; beyond the outer centres the edge
      // pixel extends to the border.
      const double source = std::clamp((i + 0.5) * scale - 0.5, 0.0, in - 1.0);
      const int j = static_cast<int>(source);
      const float t = static_cast<float>(source - j);
      taps[i] = {{j, 1.0f - t}};
      if (j + 1 < in && t > 0) taps[i].push_back({j + 1, t});
    }
  }
  return taps;
}

// Float pixels of `image` with `channels` colour channels (1 or 3), alpha
// composited over black.
std::vector<float> ColourPlanes(const Image& image, int channels) {
  const int in = image.channels;
  const bool alpha = in == 2 || in == 4;
  const int64_t n = int64_t{image.height} * image.width;
  std::vector<float> out(n * channels);
  for (int64_t p = 0; p < n; ++p) {
    const uint8_t* px = &image.pixels[p * in];
    const float a = alpha ? px[in - 1] / 255.0f : 1.0f;
    float* o = &out[p * channels];
    if (in >= 3 && channels == 1) {
      o[0] = (0.299f * px[0] + 0.587f * px[1] + 0.114f * px[2]) * a;
    } else {
      for (int c = 0; c < channels; ++c) o[c] = px[in >= 3 ? c : 0] * a;
    }
  }
  return out;
}

}  // namespace

Image ResizeImage(const Image& image, int height, int width, int channels) {
  CHECK(image.height > 0 && image.width > 0 && image.channels >= 1 && image.channels <= 4 &&
        image.pixels.size() == static_cast<size_t>(image.height) * image.width * image.channels)
      << "bad image " << image.height << "x" << image.width << "x" << image.channels;
  CHECK(height > 0 && width > 0 && (channels == 1 || channels == 3))
      << "bad target " << height << "x" << width << "x" << channels;
  // Resample only the channels that carry information: a grey image becomes
  // RGB after resizing.
  const int colour = std::min(channels, image.channels >= 3 ? 3 : 1);
  const std::vector<float> in = ColourPlanes(image, colour);

  const AxisTaps across = Taps(image.width, width);
  std::vector<float> rows(static_cast<size_t>(image.height) * width * colour, 0.0f);
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < width; ++x) {
      float* o = &rows[(static_cast<size_t>(y) * width + x) * colour];
      for (const Tap& tap : across[x]) {
        const float* p = &in[(static_cast<size_t>(y) * image.width + tap.index) * colour];
        for (int c = 0; c < colour; ++c) o[c] += tap.weight * p[c];
      }
    }
  }

  const AxisTaps down = Taps(image.height, height);
  Image out{height, width, channels,
            std::vector<uint8_t>(static_cast<size_t>(height) * width * channels)};
  std::vector<float> value(colour);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      std::fill(value.begin(), value.end(), 0.0f);
      for (const Tap& tap : down[y]) {
        const float* p = &rows[(static_cast<size_t>(tap.index) * width + x) * colour];
        for (int c = 0; c < colour; ++c) value[c] += tap.weight * p[c];
      }
      uint8_t* o = &out.pixels[(static_cast<size_t>(y) * width + x) * channels];
      for (int c = 0; c < channels; ++c) {
        o[c] = static_cast<uint8_t>(std::clamp(std::lround(value[c % colour]), 0L, 255L));
      }
    }
  }
  return out;
}

}  // namespace modamba::data
