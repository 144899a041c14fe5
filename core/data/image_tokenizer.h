// Image tokenizers over the grid of 4x4 pixel patches of an image of a
// configured ImageShape (every image is first brought to that shape by
// ResizeImage, image.h). Patch p = grid_cols * row + col (row-major); its
// 16 * channels values are the patch's pixels row-major, each pixel's channels
// together (HWC, like the image).
//   discrete (Chameleon, tri-modal): a k-means codebook over patches with
//     pixels in [0, 1]: one code per patch; decoding pastes each code's
//     centroid patch back.
//   continuous (Transfusion): the patches themselves, pixels mapped to
//     [-1, 1] (2 * p / 255 - 1), the usual range of diffusion models.
// The digits world is the default shape, 28x28 grey: 49 patches of 16 values.
#ifndef MODAMBA_CORE_DATA_IMAGE_TOKENIZER_H_
#define MODAMBA_CORE_DATA_IMAGE_TOKENIZER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/kmeans.h"
#include "core/data/mnist.h"
#include "core/data/tokenizer_key.h"

namespace modamba::data {

inline constexpr int kPatchSide = 4;
inline constexpr int kMaxImageSide = 4096;
// The digits world's 28x28 grey images.
inline constexpr int kPatchGrid = kImageSide / kPatchSide;        // 7
inline constexpr int kPatchesPerImage = kPatchGrid * kPatchGrid;  // 49
inline constexpr int kPatchDim = kPatchSide * kPatchSide;         // 16

struct ImageShape {
  int height = kImageSide;
  int width = kImageSide;
  int channels = 1;  // 1 grey or 3 RGB

  int grid_rows() const { return height / kPatchSide; }
  int grid_cols() const { return width / kPatchSide; }
  int patches() const { return grid_rows() * grid_cols(); }  // tokens per image
  int patch_dim() const { return kPatchSide * kPatchSide * channels; }
  int64_t pixels() const { return int64_t{height} * width * channels; }  // bytes per image
  bool operator==(const ImageShape& o) const {
    return height == o.height && width == o.width && channels == o.channels;
  }
};

// Height and width multiples of 4 in [4, kMaxImageSide], channels 1 or 3;
// the error names the field.
absl::Status ValidateImageShape(const ImageShape& shape);

// The patches of an image as [patches, patch_dim] floats, pixel * scale + offset.
void ExtractPatches(const uint8_t* image, const ImageShape& shape, float scale, float offset,
                    float* out);
// The inverse: (value - offset) / scale, rounded and clamped to 0..255.
void AssemblePatches(const float* patches, const ImageShape& shape, float scale, float offset,
                     uint8_t* image);

// Continuous Transfusion patches in [-1, 1] and back.
void ContinuousPatches(const uint8_t* image, float* out, const ImageShape& shape = {});
void ImageFromContinuousPatches(const float* patches, uint8_t* image,
                                const ImageShape& shape = {});

// Peak signal-to-noise ratio in dB for 8-bit pixels (100 for identical inputs).
double Psnr(const uint8_t* a, const uint8_t* b, int64_t n);

struct ImageVqOptions {
  int k = 512;
  int iterations = 25;
  int64_t max_patches = 200000;  // k-means trains on a random subset
  uint64_t seed = 0;
};

class ImageVq {
 public:
  // Learns the codebook from training images only: n images of `shape`,
  // [n, shape.pixels()] bytes. k-means trains on max_patches of their patches
  // drawn at random, so a caller with far more images may pass a random subset
  // of them.
  static absl::StatusOr<ImageVq> Train(const uint8_t* images, int64_t n, const ImageShape& shape,
                                       const ImageVqOptions& options);
  // The digits world's images (28x28 grey).
  static absl::StatusOr<ImageVq> Train(const MnistSet& images, const ImageVqOptions& options);

  // A codebook Save wrote; its image shape comes from the file's metadata
  // (28x28 grey when absent), and so does its key.
  static absl::StatusOr<ImageVq> Load(const std::string& path);
  // A user-supplied codebook for images of `shape`: a safetensors file with an
  // F32 tensor `centroids` [K, 16 * shape.channels], K >= 1, finite values,
  // pixels in [0, 1] laid out as the patches above. Errors name the file and
  // the tensor.
  static absl::StatusOr<ImageVq> LoadCodebook(const std::string& path, const ImageShape& shape);
  absl::Status Save(const std::string& path,
                    const std::map<std::string, std::string>& metadata) const;

  int k() const { return model_.k; }
  const ImageShape& shape() const { return shape_; }
  // What trained it: the sha256 of the training images' shape, count and
  // bytes, and kImageVqVersion (none for a user's codebook).
  const TokenizerKey& key() const { return key_; }
  // Codes of n images of shape(), [n, shape().patches()].
  std::vector<int32_t> Encode(const uint8_t* images, int64_t n) const;
  // One image's codes back to its shape().pixels() bytes; codes outside
  // [0, k) are an error.
  absl::Status Decode(const int32_t* codes, uint8_t* image) const;

 private:
  ImageShape shape_;
  KMeansModel model_;  // centroids [k, patch_dim], pixels in [0, 1]
  TokenizerKey key_;
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_IMAGE_TOKENIZER_H_
