#include "core/data/image_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/safetensors.h"
#include "core/status_macros.h"
#include "core/tensor.h"

namespace modamba::data {
namespace {

constexpr float kUnitScale = 1.0f / 255.0f;
constexpr float kSignedScale = 2.0f / 255.0f;

}  // namespace

void ExtractPatches(const uint8_t* image, float scale, float offset, float* out) {
  for (int py = 0; py < kPatchGrid; ++py) {
    for (int px = 0; px < kPatchGrid; ++px) {
      float* patch = out + (py * kPatchGrid + px) * kPatchDim;
      for (int y = 0; y < kPatchSide; ++y) {
        for (int x = 0; x < kPatchSide; ++x) {
          const int pixel = (py * kPatchSide + y) * kImageSide + px * kPatchSide + x;
          patch[y * kPatchSide + x] = image[pixel] * scale + offset;
        }
      }
    }
  }
}

void AssemblePatches(const float* patches, float scale, float offset, uint8_t* image) {
  for (int py = 0; py < kPatchGrid; ++py) {
    for (int px = 0; px < kPatchGrid; ++px) {
      const float* patch = patches + (py * kPatchGrid + px) * kPatchDim;
      for (int y = 0; y < kPatchSide; ++y) {
        for (int x = 0; x < kPatchSide; ++x) {
          const float v = (patch[y * kPatchSide + x] - offset) / scale;
          const int pixel = (py * kPatchSide + y) * kImageSide + px * kPatchSide + x;
          image[pixel] = static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
        }
      }
    }
  }
}

void ContinuousPatches(const uint8_t* image, float* out) {
  ExtractPatches(image, kSignedScale, -1.0f, out);
}

void ImageFromContinuousPatches(const float* patches, uint8_t* image) {
  AssemblePatches(patches, kSignedScale, -1.0f, image);
}

double Psnr(const uint8_t* a, const uint8_t* b, int64_t n) {
  double sse = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    sse += d * d;
  }
  if (sse == 0) return 100.0;
  return 10.0 * std::log10(255.0 * 255.0 * n / sse);
}

absl::StatusOr<ImageVq> ImageVq::Train(const MnistSet& images, const ImageVqOptions& options) {
  std::vector<float> patches(static_cast<size_t>(images.count()) * kPatchesPerImage * kPatchDim);
  for (int64_t i = 0; i < images.count(); ++i) {
    ExtractPatches(images.image(i), kUnitScale, 0.0f,
                   patches.data() + i * kPatchesPerImage * kPatchDim);
  }
  KMeansOptions kmeans;
  kmeans.k = options.k;
  kmeans.max_iterations = options.iterations;
  kmeans.max_points = options.max_patches;
  kmeans.seed = options.seed;
  ImageVq vq;
  ASSIGN_OR_RETURN(vq.model_, TrainKMeans(patches.data(), images.count() * kPatchesPerImage,
                                          kPatchDim, kmeans));
  return vq;
}

absl::StatusOr<ImageVq> ImageVq::Load(const std::string& path) {
  ASSIGN_OR_RETURN(SafetensorsFile file, LoadSafetensors(path));
  auto it = file.tensors.find("centroids");
  if (it == file.tensors.end() || it->second.dtype() != DType::kF32 ||
      it->second.shape().size() != 2 || it->second.dim(1) != kPatchDim || it->second.dim(0) < 1) {
    return absl::DataLossError(
        absl::StrCat(path, ": expected an F32 tensor 'centroids' of shape [k, 16]"));
  }
  ImageVq vq;
  vq.model_.k = static_cast<int>(it->second.dim(0));
  vq.model_.dim = kPatchDim;
  const float* data = it->second.data<float>();
  vq.model_.centroids.assign(data, data + it->second.numel());
  return vq;
}

absl::Status ImageVq::Save(const std::string& path,
                           const std::map<std::string, std::string>& metadata) const {
  Tensor centroids(DType::kF32, {model_.k, kPatchDim});
  std::memcpy(centroids.raw(), model_.centroids.data(), centroids.nbytes());
  std::map<std::string, std::string> meta = metadata;
  meta["tokenizer"] = "image_vq";
  meta["patch_side"] = std::to_string(kPatchSide);
  meta["image_side"] = std::to_string(kImageSide);
  meta["pixel_scale"] = "1/255";
  return SaveSafetensors(path, {{"centroids", &centroids}}, meta);
}

std::vector<int32_t> ImageVq::Encode(const uint8_t* images, int64_t n) const {
  std::vector<int32_t> codes(static_cast<size_t>(n) * kPatchesPerImage);
  constexpr int64_t kBlock = 1024;
  std::vector<float> patches(kBlock * kPatchesPerImage * kPatchDim);
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t count = std::min(kBlock, n - begin);
    for (int64_t i = 0; i < count; ++i) {
      ExtractPatches(images + (begin + i) * kImagePixels, kUnitScale, 0.0f,
                     patches.data() + i * kPatchesPerImage * kPatchDim);
    }
    NearestCentroids(patches.data(), count * kPatchesPerImage, model_,
                     codes.data() + begin * kPatchesPerImage);
  }
  return codes;
}

absl::Status ImageVq::Decode(const int32_t* codes, uint8_t* image) const {
  std::vector<float> patches(kPatchesPerImage * kPatchDim);
  for (int p = 0; p < kPatchesPerImage; ++p) {
    const int code = codes[p];
    if (code < 0 || code >= model_.k) {
      return absl::InvalidArgumentError(
          absl::StrCat("image code ", code, " at patch ", p, " outside [0, ", model_.k, ")"));
    }
    std::memcpy(patches.data() + p * kPatchDim, model_.centroids.data() + code * kPatchDim,
                sizeof(float) * kPatchDim);
  }
  AssemblePatches(patches.data(), kUnitScale, 0.0f, image);
  return absl::OkStatus();
}

}  // namespace modamba::data
