#include "core/data/image_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "core/status_macros.h"
#include "core/tensor.h"

namespace modamba::data {
namespace {

constexpr float kUnitScale = 1.0f / 255.0f;
constexpr float kSignedScale = 2.0f / 255.0f;

// The validated `centroids` of a codebook file for images of `shape`.
absl::StatusOr<KMeansModel> Codebook(const std::string& path, const SafetensorsFile& file,
                                     const ImageShape& shape) {
  if (absl::Status valid = ValidateImageShape(shape); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", valid.message()));
  }
  auto it = file.tensors.find("centroids");
  if (it == file.tensors.end()) {
    return absl::DataLossError(absl::StrCat(path, ": no tensor 'centroids'"));
  }
  const Tensor& centroids = it->second;
  if (centroids.dtype() != DType::kF32 || centroids.shape().size() != 2 ||
      centroids.dim(0) < 1 || centroids.dim(1) != shape.patch_dim()) {
    return absl::DataLossError(absl::StrCat(
        path, ": tensor 'centroids' must be F32 [K >= 1, ", shape.patch_dim(), "] (4x4 patches of ",
        shape.channels, " channel", shape.channels > 1 ? "s" : "", "), got ",
        DTypeName(centroids.dtype()), " ", ShapeString(centroids.shape())));
  }
  const float* data = centroids.data<float>();
  for (int64_t i = 0; i < centroids.numel(); ++i) {
    if (!std::isfinite(data[i])) {
      return absl::DataLossError(absl::StrCat(path, ": tensor 'centroids' has a non-finite value ",
                                              data[i], " at [", i / centroids.dim(1), ", ",
                                              i % centroids.dim(1), "]"));
    }
  }
  KMeansModel model;
  model.k = static_cast<int>(centroids.dim(0));
  model.dim = shape.patch_dim();
  model.centroids.assign(data, data + centroids.numel());
  return model;
}

}  // namespace

absl::Status ValidateImageShape(const ImageShape& shape) {
  for (const auto& [name, side] : {std::pair<const char*, int>{"height", shape.height},
                                   std::pair<const char*, int>{"width", shape.width}}) {
    if (side < kPatchSide || side > kMaxImageSide || side % kPatchSide != 0) {
      return absl::InvalidArgumentError(absl::StrCat("image ", name, " ", side,
                                                     ": must be a multiple of ", kPatchSide,
                                                     " in [", kPatchSide, ", ", kMaxImageSide,
                                                     "]"));
    }
  }
  if (shape.channels != 1 && shape.channels != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("image channels ", shape.channels, ": must be 1 (grey) or 3 (RGB)"));
  }
  return absl::OkStatus();
}

void ExtractPatches(const uint8_t* image, const ImageShape& shape, float scale, float offset,
                    float* out) {
  const int row_values = kPatchSide * shape.channels;  // one patch row, all channels
  for (int py = 0; py < shape.grid_rows(); ++py) {
    for (int px = 0; px < shape.grid_cols(); ++px) {
      float* patch = out + static_cast<size_t>(py * shape.grid_cols() + px) * shape.patch_dim();
      for (int y = 0; y < kPatchSide; ++y) {
        const uint8_t* row = image + (static_cast<size_t>(py * kPatchSide + y) * shape.width +
                                      px * kPatchSide) * shape.channels;
        for (int i = 0; i < row_values; ++i) patch[y * row_values + i] = row[i] * scale + offset;
      }
    }
  }
}

void AssemblePatches(const float* patches, const ImageShape& shape, float scale, float offset,
                     uint8_t* image) {
  const int row_values = kPatchSide * shape.channels;
  for (int py = 0; py < shape.grid_rows(); ++py) {
    for (int px = 0; px < shape.grid_cols(); ++px) {
      const float* patch =
          patches + static_cast<size_t>(py * shape.grid_cols() + px) * shape.patch_dim();
      for (int y = 0; y < kPatchSide; ++y) {
        uint8_t* row = image + (static_cast<size_t>(py * kPatchSide + y) * shape.width +
                                px * kPatchSide) * shape.channels;
        for (int i = 0; i < row_values; ++i) {
          const float v = (patch[y * row_values + i] - offset) / scale;
          row[i] = static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
        }
      }
    }
  }
}

void ContinuousPatches(const uint8_t* image, float* out, const ImageShape& shape) {
  ExtractPatches(image, shape, kSignedScale, -1.0f, out);
}

void ImageFromContinuousPatches(const float* patches, uint8_t* image, const ImageShape& shape) {
  AssemblePatches(patches, shape, kSignedScale, -1.0f, image);
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

absl::StatusOr<ImageVq> ImageVq::Train(const uint8_t* images, int64_t n,
                                       const ImageShape& shape, const ImageVqOptions& options) {
  RETURN_IF_ERROR(ValidateImageShape(shape));
  const size_t per_image = static_cast<size_t>(shape.patches()) * shape.patch_dim();
  std::vector<float> patches(n * per_image);
  for (int64_t i = 0; i < n; ++i) {
    ExtractPatches(images + i * shape.pixels(), shape, kUnitScale, 0.0f,
                   patches.data() + i * per_image);
  }
  KMeansOptions kmeans;
  kmeans.k = options.k;
  kmeans.max_iterations = options.iterations;
  kmeans.max_points = options.max_patches;
  kmeans.seed = options.seed;
  ImageVq vq;
  vq.shape_ = shape;
  ASSIGN_OR_RETURN(vq.model_, TrainKMeans(patches.data(), n * shape.patches(),
                                          shape.patch_dim(), kmeans));
  Sha256 sha;
  sha.Update(absl::StrCat("images ", shape.height, "x", shape.width, "x", shape.channels, " ", n,
                          "\n"));
  sha.Update(absl::string_view(reinterpret_cast<const char*>(images), n * shape.pixels()));
  vq.key_ = {sha.HexDigest(), kImageVqVersion};
  return vq;
}

absl::StatusOr<ImageVq> ImageVq::Train(const MnistSet& images, const ImageVqOptions& options) {
  return Train(images.pixels.data(), images.count(), ImageShape(), options);
}

absl::StatusOr<ImageVq> ImageVq::Load(const std::string& path) {
  ASSIGN_OR_RETURN(SafetensorsFile file, LoadSafetensors(path));
  ImageShape shape;
  for (auto [key, field] : {std::pair<const char*, int*>{"image_height", &shape.height},
                            std::pair<const char*, int*>{"image_width", &shape.width},
                            std::pair<const char*, int*>{"channels", &shape.channels}}) {
    auto it = file.metadata.find(key);
    if (it != file.metadata.end() && !absl::SimpleAtoi(it->second, field)) {
      return absl::DataLossError(
          absl::StrCat(path, ": metadata ", key, " '", it->second, "' is not an integer"));
    }
  }
  ImageVq vq;
  vq.shape_ = shape;
  ASSIGN_OR_RETURN(vq.model_, Codebook(path, file, shape));
  vq.key_ = KeyFromMetadata(file.metadata);
  return vq;
}

absl::StatusOr<ImageVq> ImageVq::LoadCodebook(const std::string& path, const ImageShape& shape) {
  ASSIGN_OR_RETURN(SafetensorsFile file, LoadSafetensors(path));
  ImageVq vq;
  vq.shape_ = shape;
  ASSIGN_OR_RETURN(vq.model_, Codebook(path, file, shape));
  return vq;
}

absl::Status ImageVq::Save(const std::string& path,
                           const std::map<std::string, std::string>& metadata) const {
  Tensor centroids(DType::kF32, {model_.k, model_.dim});
  std::memcpy(centroids.raw(), model_.centroids.data(), centroids.nbytes());
  std::map<std::string, std::string> meta = metadata;
  meta["tokenizer"] = "image_vq";
  meta["patch_side"] = std::to_string(kPatchSide);
  meta["image_height"] = std::to_string(shape_.height);
  meta["image_width"] = std::to_string(shape_.width);
  meta["channels"] = std::to_string(shape_.channels);
  meta["pixel_scale"] = "1/255";
  AddKeyMetadata(key_, &meta);
  return SaveSafetensors(path, {{"centroids", &centroids}}, meta);
}

std::vector<int32_t> ImageVq::Encode(const uint8_t* images, int64_t n) const {
  const int patches_per_image = shape_.patches();
  const size_t per_image = static_cast<size_t>(patches_per_image) * shape_.patch_dim();
  std::vector<int32_t> codes(static_cast<size_t>(n) * patches_per_image);
  // About 3 MB of patches at a time (1024 digits images), at least one image.
  const int64_t block =
      std::max<int64_t>(1, int64_t{1024} * kPatchesPerImage * kPatchDim / per_image);
  std::vector<float> patches(std::min(block, n) * per_image);
  for (int64_t begin = 0; begin < n; begin += block) {
    const int64_t count = std::min(block, n - begin);
    for (int64_t i = 0; i < count; ++i) {
      ExtractPatches(images + (begin + i) * shape_.pixels(), shape_, kUnitScale, 0.0f,
                     patches.data() + i * per_image);
    }
    NearestCentroids(patches.data(), count * patches_per_image, model_,
                     codes.data() + begin * patches_per_image);
  }
  return codes;
}

absl::Status ImageVq::Decode(const int32_t* codes, uint8_t* image) const {
  const int dim = shape_.patch_dim();
  std::vector<float> patches(static_cast<size_t>(shape_.patches()) * dim);
  for (int p = 0; p < shape_.patches(); ++p) {
    const int code = codes[p];
    if (code < 0 || code >= model_.k) {
      return absl::InvalidArgumentError(
          absl::StrCat("image code ", code, " at patch ", p, " outside [0, ", model_.k, ")"));
    }
    std::memcpy(patches.data() + static_cast<size_t>(p) * dim,
                model_.centroids.data() + static_cast<size_t>(code) * dim, sizeof(float) * dim);
  }
  AssemblePatches(patches.data(), shape_, kUnitScale, 0.0f, image);
  return absl::OkStatus();
}

}  // namespace modamba::data
