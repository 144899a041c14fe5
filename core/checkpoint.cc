#include "core/checkpoint.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "core/status_macros.h"
#include "google/protobuf/util/json_util.h"

namespace modamba {
namespace {

constexpr char kManifest[] = "manifest.json";
constexpr char kPrefix[] = "step-";

int64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

}  // namespace

std::string CheckpointPath(const std::string& root, int64_t step) {
  return absl::StrFormat("%s/%s%08d", root, kPrefix, step);
}

std::vector<int64_t> CheckpointSteps(const std::string& root) {
  std::vector<int64_t> steps;
  DIR* d = opendir(root.c_str());
  if (d == nullptr) return steps;
  while (dirent* e = readdir(d)) {
    absl::string_view name = e->d_name;
    int64_t step;
    if (!absl::ConsumePrefix(&name, kPrefix) || !absl::SimpleAtoi(name, &step)) continue;
    if (FileExists(CheckpointPath(root, step) + "/" + kManifest)) steps.push_back(step);
  }
  closedir(d);
  std::sort(steps.begin(), steps.end());
  return steps;
}

absl::StatusOr<std::string> LatestCheckpoint(const std::string& root) {
  std::vector<int64_t> steps = CheckpointSteps(root);
  return steps.empty() ? std::string() : CheckpointPath(root, steps.back());
}

absl::Status PruneCheckpoints(const std::string& root, int keep) {
  std::vector<int64_t> steps = CheckpointSteps(root);
  for (size_t i = 0; i + keep < steps.size(); ++i) {
    RETURN_IF_ERROR(RemoveTree(CheckpointPath(root, steps[i])));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveCheckpoint(const std::string& dir) {
  if (FileExists(dir + "/" + kManifest)) return dir;
  ASSIGN_OR_RETURN(std::string latest, LatestCheckpoint(dir));
  if (latest.empty()) {
    return absl::NotFoundError(absl::StrCat(
        dir, ": neither a checkpoint (", kManifest, ") nor a run directory with a complete ",
        kPrefix, "NNNNNNNN/ checkpoint"));
  }
  return latest;
}

absl::Status WriteCheckpointManifest(const std::string& dir, v1::CheckpointManifest manifest) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return absl::NotFoundError(absl::StrCat(dir, ": no such checkpoint directory"));
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != ".." && name != kManifest) names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  manifest.set_format_version(1);
  manifest.clear_files();
  for (const std::string& name : names) {
    v1::CheckpointManifest::File* f = manifest.add_files();
    f->set_name(name);
    ASSIGN_OR_RETURN(*f->mutable_sha256(), Sha256File(dir + "/" + name));
    f->set_bytes(FileSize(dir + "/" + name));
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(manifest, &json, options).ok()) {
    return absl::InternalError("could not serialise the checkpoint manifest");
  }
  return WriteFileAtomic(dir + "/" + kManifest, json);
}

absl::StatusOr<v1::CheckpointManifest> ReadManifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifest;
  ASSIGN_OR_RETURN(std::string json, ReadFile(path));
  v1::CheckpointManifest manifest;
  auto st = google::protobuf::util::JsonStringToMessage(json, &manifest);
  if (!st.ok()) return absl::DataLossError(absl::StrCat(path, ": bad manifest: ", st.ToString()));
  return manifest;
}

absl::Status VerifyCheckpoint(const std::string& dir) {
  ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(dir));
  for (const auto& f : manifest.files()) {
    const std::string path = dir + "/" + f.name();
    if (FileSize(path) != f.bytes()) {
      return absl::DataLossError(absl::StrCat(path, ": ", FileSize(path), " bytes, the manifest says ",
                                              f.bytes(), " (truncated or missing)"));
    }
    ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
    if (sha != f.sha256()) {
      return absl::DataLossError(absl::StrCat(path, ": sha256 ", sha, " does not match the manifest (corrupt)"));
    }
  }
  return absl::OkStatus();
}

std::string CheckpointStagingPath(const std::string& root, int64_t step) {
  return CheckpointPath(root, step) + ".tmp";
}

absl::Status StartCheckpoint(const std::string& root, int64_t step) {
  const std::string tmp = CheckpointStagingPath(root, step);
  RETURN_IF_ERROR(RemoveTree(tmp));
  RETURN_IF_ERROR(RemoveTree(CheckpointPath(root, step)));
  return MakeDirs(tmp);
}

absl::Status SealCheckpoint(const std::string& root, int64_t step,
                            const v1::CheckpointManifest& manifest) {
  const std::string dir = CheckpointPath(root, step), tmp = CheckpointStagingPath(root, step);
  RETURN_IF_ERROR(WriteCheckpointManifest(tmp, manifest));
  if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
    return IoError(absl::StrCat(dir, ": could not move the checkpoint into place"), errno);
  }
  return absl::OkStatus();
}

std::string ShardFileName(int rank, int world_size) {
  return absl::StrFormat("shard-%05d-of-%05d.safetensors", rank, world_size);
}

std::string ShardTensorName(int bucket, const std::string& part) {
  return absl::StrCat("bucket.", bucket, ".", part);
}

absl::Status WriteShardLayout(const std::string& dir, const ShardLayout& layout) {
  nlohmann::json json = {{"world_size", layout.world_size}, {"dtype", layout.dtype}};
  for (const std::vector<ShardLayout::Param>& bucket : layout.buckets) {
    nlohmann::json params = nlohmann::json::array();
    for (const ShardLayout::Param& p : bucket) params.push_back({{"name", p.name}, {"shape", p.shape}});
    json["buckets"].push_back(params);
  }
  return WriteFileAtomic(dir + "/layout.json", json.dump(1));
}

absl::StatusOr<ShardLayout> ReadShardLayout(const std::string& dir) {
  const std::string path = dir + "/layout.json";
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, false);
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(path, ": ", why));
  };
  if (json.is_discarded() || !json.is_object() || !json.contains("world_size") ||
      !json["world_size"].is_number_integer() || !json.contains("buckets") ||
      !json["buckets"].is_array()) {
    return bad("not a valid layout");
  }
  ShardLayout layout;
  layout.world_size = json["world_size"].get<int>();
  if (layout.world_size < 1) return bad(absl::StrCat("world_size ", layout.world_size));
  if (json.contains("dtype") && json["dtype"].is_string()) layout.dtype = json["dtype"];
  for (const nlohmann::json& bucket : json["buckets"]) {
    if (!bucket.is_array()) return bad("a bucket is not a list of parameters");
    std::vector<ShardLayout::Param>& params = layout.buckets.emplace_back();
    for (const nlohmann::json& p : bucket) {
      if (!p.is_object() || !p.contains("name") || !p["name"].is_string() ||
          !p.contains("shape") || !p["shape"].is_array()) {
        return bad(absl::StrCat("parameter ", p.dump(), " has no name and shape"));
      }
      Shape shape;
      for (const nlohmann::json& d : p["shape"]) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0) {
          return bad(absl::StrCat("parameter ", p["name"].dump(), " has a bad shape"));
        }
        shape.push_back(d.get<int64_t>());
      }
      params.push_back({p["name"].get<std::string>(), std::move(shape)});
    }
  }
  return layout;
}

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> LoadCheckpointParams(
    const std::string& dir) {
  ASSIGN_OR_RETURN(const ShardLayout layout, ReadShardLayout(dir));
  std::vector<SafetensorsFile> files;
  for (int r = 0; r < layout.world_size; ++r) {
    ASSIGN_OR_RETURN(files.emplace_back(),
                     LoadSafetensors(dir + "/" + ShardFileName(r, layout.world_size)));
  }
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t b = 0; b < layout.buckets.size(); ++b) {
    // The bucket's flat buffer is the ranks' slices in rank order; its
    // parameters lie one after the other from its start (trainer/flat_bucket.h).
    const std::string key = ShardTensorName(b, "value");
    std::vector<const Tensor*> shards;
    for (int r = 0; r < layout.world_size; ++r) {
      auto it = files[r].tensors.find(key);
      const std::string file = absl::StrCat(dir, "/", ShardFileName(r, layout.world_size));
      if (it == files[r].tensors.end()) {
        return absl::DataLossError(absl::StrCat(file, ": no tensor '", key, "'"));
      }
      if (!shards.empty() && (it->second.dtype() != shards[0]->dtype() ||
                              it->second.numel() != shards[0]->numel())) {
        return absl::DataLossError(absl::StrCat(file, ": tensor '", key, "' differs in size or "
                                                "dtype from rank 0's"));
      }
      shards.push_back(&it->second);
    }
    const DType dtype = shards[0]->dtype();
    const size_t elem = DTypeSize(dtype), shard_bytes = shards[0]->nbytes();
    int64_t offset = 0;  // elements into the flat buffer
    for (const ShardLayout::Param& p : layout.buckets[b]) {
      if (offset + NumElements(p.shape) > shards[0]->numel() * layout.world_size) {
        return absl::DataLossError(absl::StrCat(dir, ": bucket ", b, " is too small for ", p.name));
      }
      Tensor t(dtype, p.shape);
      char* dst = static_cast<char*>(t.raw());
      for (size_t done = 0; done < t.nbytes();) {  // copy across shard boundaries
        const size_t at = offset * elem + done;
        const size_t n = std::min(t.nbytes() - done, shard_bytes - at % shard_bytes);
        std::memcpy(dst + done, static_cast<const char*>(shards[at / shard_bytes]->raw()) +
                                    at % shard_bytes, n);
        done += n;
      }
      offset += t.numel();
      out.emplace_back(p.name, std::move(t));
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<LanguageModel>> LoadTrainedModel(const std::string& dir,
                                                                Backend* be) {
  ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(dir));
  RETURN_IF_ERROR(VerifyCheckpoint(dir));
  ASSIGN_OR_RETURN(auto values, LoadCheckpointParams(dir));
  ASSIGN_OR_RETURN(std::unique_ptr<LanguageModel> model,
                   LanguageModel::Create(manifest.config().model(), be, DType::kF32, 0));
  std::map<std::string, Param*> missing;
  for (const auto& p : model->params().all()) missing[p->name] = p.get();
  for (auto& [name, value] : values) {
    auto it = missing.find(name);
    if (it == missing.end()) return absl::DataLossError(absl::StrCat(dir, ": unexpected tensor ", name));
    Param* p = it->second;
    missing.erase(it);
    if (value.dtype() != DType::kF32 || value.shape() != p->value.shape()) {
      return absl::DataLossError(absl::StrCat(dir, ": tensor ", name, " is ", DTypeName(value.dtype()),
                                              ShapeString(value.shape()), ", the model's is F32",
                                              ShapeString(p->value.shape())));
    }
    for (int64_t i = 0; i < value.numel(); ++i) {
      if (!std::isfinite(value.data<float>()[i])) {
        return absl::DataLossError(absl::StrCat(dir, ": tensor ", name, " has non-finite values"));
      }
    }
    model->params().Set(p, value);
  }
  if (!missing.empty()) {
    return absl::DataLossError(absl::StrCat(dir, ": no tensor ", missing.begin()->first));
  }
  return model;
}

}  // namespace modamba
