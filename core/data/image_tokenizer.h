// Image tokenizers over the 7x7 grid of 4x4 pixel patches of a 28x28 image.
// Patch p = 7 * row + col (row-major), its 16 pixels row-major.
//   discrete (Chameleon, tri-modal): a k-means codebook over patches with
//     pixels in [0, 1]: 49 codes per image; decoding pastes each code's
//     centroid patch back.
//   continuous (Transfusion): the 49 patches themselves, pixels mapped to
//     [-1, 1] (2 * p / 255 - 1), the usual range of diffusion models.
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

namespace modamba::data {

inline constexpr int kPatchSide = 4;
inline constexpr int kPatchGrid = kImageSide / kPatchSide;  // 7
inline constexpr int kPatchesPerImage = kPatchGrid * kPatchGrid;  // 49
inline constexpr int kPatchDim = kPatchSide * kPatchSide;  // 16

// The 49 patches of an image as [49, 16] floats, pixel * scale + offset.
void ExtractPatches(const uint8_t* image, float scale, float offset, float* out);
// The inverse: (value - offset) / scale, rounded and clamped to 0..255.
void AssemblePatches(const float* patches, float scale, float offset, uint8_t* image);

// Continuous Transfusion patches in [-1, 1] and back.
void ContinuousPatches(const uint8_t* image, float* out);
void ImageFromContinuousPatches(const float* patches, uint8_t* image);

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
  // Learns the codebook from training images only.
  static absl::StatusOr<ImageVq> Train(const MnistSet& images, const ImageVqOptions& options);
  static absl::StatusOr<ImageVq> Load(const std::string& path);
  absl::Status Save(const std::string& path,
                    const std::map<std::string, std::string>& metadata) const;

  int k() const { return model_.k; }
  // Codes of n images, [n, 49].
  std::vector<int32_t> Encode(const uint8_t* images, int64_t n) const;
  // Codes outside [0, k) are an error.
  absl::Status Decode(const int32_t* codes, uint8_t* image) const;

 private:
  KMeansModel model_;  // centroids [k, 16], pixels in [0, 1]
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_IMAGE_TOKENIZER_H_
