// Reading image files: PNG (libpng) and JPEG (libjpeg-turbo), told apart by
// their first bytes, not by the file name.
#ifndef MODAMBA_CORE_DATA_IMAGE_IO_H_
#define MODAMBA_CORE_DATA_IMAGE_IO_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/data/image.h"

namespace modamba::data {

// PNG of any colour type and bit depth (grey, grey + alpha, RGB, RGBA,
// palette, with transparency, 1-16 bits, interlaced; 16-bit samples are
// scaled to 8 bits) or baseline/progressive JPEG (grey or YCbCr). The image
// keeps its own size and channels (ResizeImage brings it to a dataset's);
// values are used as stored (gamma, colour profiles and EXIF orientation are
// not applied).
// Errors name the file: unreadable, neither PNG nor JPEG, truncated or corrupt
// (a JPEG that decodes only with libjpeg warnings is refused too), CMYK JPEG,
// or more than kMaxImagePixels pixels.
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 28;
absl::StatusOr<Image> ReadImage(const std::string& path);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_IMAGE_IO_H_
