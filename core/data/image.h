// Decoded images in memory, and bringing one to the resolution and channel
// count a dataset is configured with.
#ifndef MODAMBA_CORE_DATA_IMAGE_H_
#define MODAMBA_CORE_DATA_IMAGE_H_

#include <cstdint>
#include <vector>

namespace modamba::data {

// 8-bit pixels, row-major with interleaved channels (HWC), row 0 at the top.
// channels: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA.
struct Image {
  int height = 0;
  int width = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // [height, width, channels]
};

// `image` resampled to height x width (stretched: no crop, no padding) with
// `channels` (1 or 3) channels, in the 8-bit values' own (sRGB) space:
//   - alpha is composited over black (a transparent pixel is 0, the digits'
//     background), grey -> RGB repeats the grey value, RGB -> grey is the
//     BT.601 luma 0.299 R + 0.587 G + 0.114 B;
//   - each axis separately: a shrinking axis averages the input pixels each
//     output pixel covers, weighted by the covered fraction (area averaging,
//     which does not alias); a growing axis interpolates linearly between the
//     two nearest pixel centres, the edge pixels extending to the border
//     (bilinear, half-pixel centres);
//   - one rounding to 8 bits at the end. An axis of unchanged size is copied, so
//     an image already at the target shape comes back unchanged.
// Requires a non-empty image with 1..4 channels, height, width >= 1.
Image ResizeImage(const Image& image, int height, int width, int channels);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_IMAGE_H_
