// PNG output (libpng) for decoded images and mel spectrograms.
#ifndef MODAMBA_CORE_DATA_PNG_IO_H_
#define MODAMBA_CORE_DATA_PNG_IO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace modamba::data {

// `pixels` is [height, width, channels] (1 grey, 2 grey + alpha, 3 RGB,
// 4 RGBA), row 0 at the top. Written atomically.
absl::Status WritePng(const std::string& path, int width, int height, int channels,
                      const uint8_t* pixels);

// A log-mel spectrogram [frames, n_mels] as an image: time left to right, low
// frequencies at the bottom, min..max of the values mapped to black..white,
// each mel band `scale` pixels tall.
absl::Status WriteMelPng(const std::string& path, const std::vector<float>& log_mel,
                         int n_mels, int scale = 4);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_PNG_IO_H_
