#include "core/data/mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace modamba::data {
namespace {

uint32_t BigEndian32(const std::string& s, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + offset;
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// Checks an IDX header of `ndim` dimensions with element type ubyte and that
// the payload has exactly the size the header promises.
absl::StatusOr<std::vector<uint32_t>> ParseIdxHeader(const std::string& path,
                                                     const std::string& data, int ndim) {
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  if (data.size() < header) {
    return absl::DataLossError(absl::StrCat(path, ": truncated IDX header (", data.size(),
                                            " bytes)"));
  }
  const uint32_t magic = BigEndian32(data, 0);
  const uint32_t expected_magic = 0x00000800u | static_cast<uint32_t>(ndim);
  if (magic != expected_magic) {
    return absl::DataLossError(absl::StrFormat("%s: bad IDX magic 0x%08x (expected 0x%08x)",
                                               path, magic, expected_magic));
  }
  std::vector<uint32_t> dims(ndim);
  size_t payload = 1;
  for (int i = 0; i < ndim; ++i) {
    dims[i] = BigEndian32(data, 4 + 4 * i);
    payload *= dims[i];
  }
  if (data.size() != header + payload) {
    return absl::DataLossError(absl::StrCat(
        path, ": IDX header promises ", payload, " bytes of data but the file holds ",
        data.size() - header, data.size() < header + payload ? " (truncated)" : ""));
  }
  return dims;
}

}  // namespace

absl::StatusOr<std::string> ReadGzipFile(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  gzbuffer(file, 1 << 17);
  std::string out;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) out.append(buffer, n);
  int errnum = Z_OK;
  const char* message = gzerror(file, &errnum);
  std::string error = (n < 0 || (errnum != Z_OK && errnum != Z_STREAM_END)) ? message : "";
  const int close = gzclose_r(file);
  if (error.empty() && close != Z_OK) error = "unexpected end of compressed data";
  if (!error.empty()) {
    return absl::DataLossError(absl::StrCat(path, ": corrupt or truncated gzip: ", error));
  }
  return out;
}

absl::StatusOr<MnistSet> ReadMnist(const std::string& images_path,
                                   const std::string& labels_path, int64_t limit) {
  absl::StatusOr<std::string> images = ReadGzipFile(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::string> labels = ReadGzipFile(labels_path);
  if (!labels.ok()) return labels.status();
  absl::StatusOr<std::vector<uint32_t>> image_dims = ParseIdxHeader(images_path, *images, 3);
  if (!image_dims.ok()) return image_dims.status();
  absl::StatusOr<std::vector<uint32_t>> label_dims = ParseIdxHeader(labels_path, *labels, 1);
  if (!label_dims.ok()) return label_dims.status();
  if ((*image_dims)[1] != kImageSide || (*image_dims)[2] != kImageSide) {
    return absl::DataLossError(absl::StrCat(images_path, ": images are ", (*image_dims)[1],
                                            "x", (*image_dims)[2], ", expected 28x28"));
  }
  if ((*image_dims)[0] != (*label_dims)[0]) {
    return absl::DataLossError(absl::StrCat(labels_path, ": ", (*label_dims)[0],
                                            " labels for ", (*image_dims)[0], " images in ",
                                            images_path));
  }
  int64_t count = (*image_dims)[0];
  if (limit >= 0) count = std::min(count, limit);
  MnistSet set;
  set.pixels.assign(images->begin() + 16, images->begin() + 16 + count * kImagePixels);
  set.labels.assign(labels->begin() + 8, labels->begin() + 8 + count);
  for (int64_t i = 0; i < count; ++i) {
    if (set.labels[i] > 9) {
      return absl::DataLossError(
          absl::StrCat(labels_path, ": label ", int{set.labels[i]}, " at item ", i));
    }
  }
  return set;
}

}  // namespace modamba::data
