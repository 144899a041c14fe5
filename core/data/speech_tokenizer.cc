#include "core/data/speech_tokenizer.h"

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

Tensor VectorTensor(const std::vector<float>& v, Shape shape) {
  Tensor t(DType::kF32, std::move(shape));
  std::memcpy(t.raw(), v.data(), t.nbytes());
  return t;
}

absl::StatusOr<std::vector<float>> TensorVector(const SafetensorsFile& file,
                                                const std::string& path,
                                                const std::string& name, const Shape& shape) {
  auto it = file.tensors.find(name);
  if (it == file.tensors.end() || it->second.dtype() != DType::kF32 ||
      it->second.shape() != shape) {
    return absl::DataLossError(absl::StrCat(path, ": expected an F32 tensor '", name,
                                            "' of shape ", ShapeString(shape)));
  }
  const float* data = it->second.data<float>();
  return std::vector<float>(data, data + it->second.numel());
}

absl::StatusOr<double> MetaNumber(const SafetensorsFile& file, const std::string& path,
                                  const std::string& key) {
  auto it = file.metadata.find(key);
  double value;
  if (it == file.metadata.end() || !absl::SimpleAtod(it->second, &value)) {
    return absl::DataLossError(absl::StrCat(path, ": metadata '", key, "' missing or not a number"));
  }
  return value;
}

}  // namespace

absl::StatusOr<SpeechUnits> SpeechUnits::Train(const std::vector<std::vector<float>>& log_mels,
                                               const MelConfig& mel,
                                               const SpeechUnitsOptions& options) {
  const int dim = mel.n_mels;
  std::vector<float> frames;
  for (const auto& u : log_mels) frames.insert(frames.end(), u.begin(), u.end());
  const int64_t n = static_cast<int64_t>(frames.size() / dim);
  if (n == 0) return absl::InvalidArgumentError("speech units: no training frames");

  SpeechUnits units;
  units.mel_ = mel;
  std::vector<double> sum(dim, 0.0), sum2(dim, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int d = 0; d < dim; ++d) {
      sum[d] += frames[i * dim + d];
      sum2[d] += double{frames[i * dim + d]} * frames[i * dim + d];
    }
  }
  units.mean_.resize(dim);
  units.stddev_.resize(dim);
  for (int d = 0; d < dim; ++d) {
    const double mean = sum[d] / n;
    units.mean_[d] = static_cast<float>(mean);
    units.stddev_[d] = static_cast<float>(std::sqrt(std::max(sum2[d] / n - mean * mean, 1e-8)));
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int d = 0; d < dim; ++d) {
      frames[i * dim + d] = (frames[i * dim + d] - units.mean_[d]) / units.stddev_[d];
    }
  }
  KMeansOptions kmeans;
  kmeans.k = options.k;
  kmeans.max_iterations = options.iterations;
  kmeans.max_points = options.max_frames;
  kmeans.seed = options.seed;
  ASSIGN_OR_RETURN(units.model_, TrainKMeans(frames.data(), n, dim, kmeans));

  // Mean run length per unit over the training utterances.
  std::vector<double> run_frames(options.k, 0.0), runs(options.k, 0.0);
  for (const auto& u : log_mels) {
    const std::vector<int32_t> frame_units = units.FrameUnits(u);
    for (size_t i = 0; i < frame_units.size();) {
      size_t j = i;
      while (j < frame_units.size() && frame_units[j] == frame_units[i]) ++j;
      run_frames[frame_units[i]] += static_cast<double>(j - i);
      runs[frame_units[i]] += 1;
      i = j;
    }
  }
  units.mean_run_.resize(options.k);
  for (int j = 0; j < options.k; ++j) {
    units.mean_run_[j] = runs[j] > 0 ? static_cast<float>(run_frames[j] / runs[j]) : 1.0f;
  }
  Sha256 sha;
  sha.Update(absl::StrCat("log-mel utterances ", log_mels.size(), " of ", dim, " bands\n"));
  for (const auto& u : log_mels) {
    sha.Update(absl::StrCat(u.size(), "\n"));
    sha.Update(absl::string_view(reinterpret_cast<const char*>(u.data()), u.size() * sizeof(float)));
  }
  units.key_ = {sha.HexDigest(), kSpeechUnitsVersion};
  return units;
}

std::vector<int32_t> SpeechUnits::FrameUnits(const std::vector<float>& log_mel) const {
  const int dim = mel_.n_mels;
  const int64_t n = static_cast<int64_t>(log_mel.size() / dim);
  std::vector<float> standardized(log_mel.size());
  for (int64_t i = 0; i < n; ++i) {
    for (int d = 0; d < dim; ++d) {
      standardized[i * dim + d] = (log_mel[i * dim + d] - mean_[d]) / stddev_[d];
    }
  }
  std::vector<int32_t> units(n);
  NearestCentroids(standardized.data(), n, model_, units.data());
  return units;
}

std::vector<int32_t> SpeechUnits::Collapse(const std::vector<int32_t>& frame_units) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < frame_units.size(); ++i) {
    if (i == 0 || frame_units[i] != frame_units[i - 1]) out.push_back(frame_units[i]);
  }
  return out;
}

absl::StatusOr<std::vector<float>> SpeechUnits::Decode(const std::vector<int32_t>& units) const {
  const int dim = mel_.n_mels;
  std::vector<float> log_mel;
  double target = 0;
  int64_t emitted = 0;
  for (size_t i = 0; i < units.size(); ++i) {
    const int32_t u = units[i];
    if (u < 0 || u >= model_.k) {
      return absl::InvalidArgumentError(
          absl::StrCat("speech unit ", u, " at position ", i, " outside [0, ", model_.k, ")"));
    }
    // Carry the fractional part of run lengths so the total stays unbiased.
    target += mean_run_[u];
    const int64_t count = std::max<int64_t>(1, std::llround(target) - emitted);
    emitted += count;
    for (int64_t c = 0; c < count; ++c) {
      for (int d = 0; d < dim; ++d) {
        log_mel.push_back(model_.centroids[static_cast<size_t>(u) * dim + d] * stddev_[d] +
                          mean_[d]);
      }
    }
  }
  return log_mel;
}

absl::Status SpeechUnits::Save(const std::string& path,
                               const std::map<std::string, std::string>& metadata) const {
  const int dim = mel_.n_mels;
  Tensor centroids = VectorTensor(model_.centroids, {model_.k, dim});
  Tensor mean = VectorTensor(mean_, {dim});
  Tensor stddev = VectorTensor(stddev_, {dim});
  Tensor runs = VectorTensor(mean_run_, {model_.k});
  std::map<std::string, std::string> meta = metadata;
  meta["tokenizer"] = "speech_units";
  meta["sample_rate"] = std::to_string(mel_.sample_rate);
  meta["window"] = std::to_string(mel_.window);
  meta["hop"] = std::to_string(mel_.hop);
  meta["n_fft"] = std::to_string(mel_.n_fft);
  meta["n_mels"] = std::to_string(mel_.n_mels);
  meta["f_min"] = absl::StrCat(mel_.f_min);
  meta["f_max"] = absl::StrCat(mel_.f_max);
  meta["log_floor"] = absl::StrCat(mel_.log_floor);
  AddKeyMetadata(key_, &meta);
  return SaveSafetensors(path,
                         {{"centroids", &centroids},
                          {"feature_mean", &mean},
                          {"feature_std", &stddev},
                          {"mean_run_length", &runs}},
                         meta);
}

absl::StatusOr<SpeechUnits> SpeechUnits::Load(const std::string& path) {
  ASSIGN_OR_RETURN(SafetensorsFile file, LoadSafetensors(path));
  SpeechUnits units;
  MelConfig& mel = units.mel_;
  ASSIGN_OR_RETURN(double sample_rate, MetaNumber(file, path, "sample_rate"));
  ASSIGN_OR_RETURN(double window, MetaNumber(file, path, "window"));
  ASSIGN_OR_RETURN(double hop, MetaNumber(file, path, "hop"));
  ASSIGN_OR_RETURN(double n_fft, MetaNumber(file, path, "n_fft"));
  ASSIGN_OR_RETURN(double n_mels, MetaNumber(file, path, "n_mels"));
  ASSIGN_OR_RETURN(double f_min, MetaNumber(file, path, "f_min"));
  ASSIGN_OR_RETURN(double f_max, MetaNumber(file, path, "f_max"));
  ASSIGN_OR_RETURN(double log_floor, MetaNumber(file, path, "log_floor"));
  mel.sample_rate = static_cast<int>(sample_rate);
  mel.window = static_cast<int>(window);
  mel.hop = static_cast<int>(hop);
  mel.n_fft = static_cast<int>(n_fft);
  mel.n_mels = static_cast<int>(n_mels);
  mel.f_min = static_cast<float>(f_min);
  mel.f_max = static_cast<float>(f_max);
  mel.log_floor = static_cast<float>(log_floor);
  if (mel.n_mels <= 0 || mel.hop <= 0 || mel.window <= 0 || mel.window > mel.n_fft) {
    return absl::DataLossError(absl::StrCat(path, ": inconsistent mel configuration"));
  }
  auto centroids_it = file.tensors.find("centroids");
  if (centroids_it == file.tensors.end() || centroids_it->second.shape().size() != 2) {
    return absl::DataLossError(absl::StrCat(path, ": missing 2-D tensor 'centroids'"));
  }
  const int k = static_cast<int>(centroids_it->second.dim(0));
  units.model_.k = k;
  units.model_.dim = mel.n_mels;
  const Shape centroid_shape = {k, mel.n_mels};
  const Shape band_shape = {mel.n_mels};
  const Shape unit_shape = {k};
  ASSIGN_OR_RETURN(units.model_.centroids, TensorVector(file, path, "centroids", centroid_shape));
  ASSIGN_OR_RETURN(units.mean_, TensorVector(file, path, "feature_mean", band_shape));
  ASSIGN_OR_RETURN(units.stddev_, TensorVector(file, path, "feature_std", band_shape));
  ASSIGN_OR_RETURN(units.mean_run_, TensorVector(file, path, "mean_run_length", unit_shape));
  units.key_ = KeyFromMetadata(file.metadata);
  return units;
}

}  // namespace modamba::data
