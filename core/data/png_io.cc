#include "core/data/png_io.h"

#include <png.h>

#include <algorithm>
#include <csetjmp>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"

namespace modamba::data {
namespace {

void AppendToString(png_structp png, png_bytep data, png_size_t length) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<char*>(data), length);
}

void NoFlush(png_structp) {}

}  // namespace

absl::Status WritePng(const std::string& path, int width, int height, int channels,
                      const uint8_t* pixels) {
  constexpr int kColourType[] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                 PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
  if (width <= 0 || height <= 0 || channels < 1 || channels > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot write an image of ", width, "x", height, "x", channels));
  }
  std::string bytes;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png != nullptr ? png_create_info_struct(png) : nullptr;
  if (info == nullptr) {
    png_destroy_write_struct(&png, nullptr);
    return absl::InternalError(absl::StrCat(path, ": cannot create PNG writer"));
  }
  std::vector<png_bytep> rows(height);
  for (int y = 0; y < height; ++y) {
    rows[y] = const_cast<png_bytep>(pixels + static_cast<size_t>(y) * width * channels);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return absl::InternalError(absl::StrCat(path, ": PNG encoding failed"));
  }
  png_set_write_fn(png, &bytes, AppendToString, NoFlush);
  png_set_IHDR(png, info, width, height, 8, kColourType[channels - 1], PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return WriteFileAtomic(path, bytes);
}

absl::Status WriteMelPng(const std::string& path, const std::vector<float>& log_mel,
                         int n_mels, int scale) {
  const int frames = n_mels > 0 ? static_cast<int>(log_mel.size() / n_mels) : 0;
  if (frames == 0) return absl::InvalidArgumentError(absl::StrCat(path, ": no mel frames"));
  const auto [lo, hi] = std::minmax_element(log_mel.begin(), log_mel.end());
  const float range = std::max(*hi - *lo, 1e-6f);
  const int height = n_mels * scale;
  std::vector<uint8_t> pixels(static_cast<size_t>(height) * frames);
  for (int y = 0; y < height; ++y) {
    const int m = n_mels - 1 - y / scale;
    for (int t = 0; t < frames; ++t) {
      const float v = (log_mel[static_cast<size_t>(t) * n_mels + m] - *lo) / range;
      pixels[static_cast<size_t>(y) * frames + t] = static_cast<uint8_t>(v * 255.0f + 0.5f);
    }
  }
  return WritePng(path, frames, height, 1, pixels.data());
}

}  // namespace modamba::data
