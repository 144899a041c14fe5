// MNIST in its IDX format, gzip-compressed: a big-endian header (magic
// 0x00000803 and three sizes for images, 0x00000801 and one size for labels)
// followed by unsigned bytes.
#ifndef MODAMBA_CORE_DATA_MNIST_H_
#define MODAMBA_CORE_DATA_MNIST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace modamba::data {

inline constexpr int kImageSide = 28;
inline constexpr int kImagePixels = kImageSide * kImageSide;

struct MnistSet {
  std::vector<uint8_t> pixels;  // [count, 28, 28]
  std::vector<uint8_t> labels;  // [count], 0..9
  int64_t count() const { return static_cast<int64_t>(labels.size()); }
  const uint8_t* image(int64_t i) const { return pixels.data() + i * kImagePixels; }
};

// The inflated contents of a gzip file. Errors name the file and say whether
// it is missing, corrupt or truncated.
absl::StatusOr<std::string> ReadGzipFile(const std::string& path);

// Reads an image file and its label file (both .gz) and keeps the first
// `limit` items (all when limit < 0). Whole files are always checked, so a
// truncated file is an error even when only a slice is kept.
absl::StatusOr<MnistSet> ReadMnist(const std::string& images_path,
                                   const std::string& labels_path, int64_t limit = -1);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_MNIST_H_
