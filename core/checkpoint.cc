#include "core/checkpoint.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "core/status_macros.h"
#include "google/protobuf/util/json_util.h"

namespace modamba {
namespace {

constexpr char kWeights[] = "model.safetensors";
constexpr char kManifest[] = "manifest.json";
constexpr char kPrefix[] = "step-";

Tensor ToHost(Backend* be, const Tensor& t) {
  Tensor host(t.dtype(), t.shape());
  be->Copy(t.mat(), host.mat());
  return host;
}

absl::Status RemoveTree(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return absl::OkStatus();
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") std::remove((dir + "/" + name).c_str());
  }
  closedir(d);
  ::rmdir(dir.c_str());
  return absl::OkStatus();
}

}  // namespace

std::string CheckpointPath(const std::string& root, int64_t step) {
  return absl::StrFormat("%s/%s%08d", root, kPrefix, step);
}

absl::Status SaveCheckpoint(const std::string& dir, const ParamSet& params,
                            const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                            const v1::CheckpointManifest& manifest) {
  const std::string tmp = dir + ".tmp";
  RETURN_IF_ERROR(RemoveTree(tmp));
  RETURN_IF_ERROR(MakeDirs(tmp));
  Backend* be = params.backend();
  std::vector<Tensor> host;
  std::vector<std::string> names;
  const auto& all = params.all();
  host.reserve(all.size() * 3);
  for (size_t i = 0; i < all.size(); ++i) {
    host.push_back(ToHost(be, all[i]->value));
    names.push_back(all[i]->name);
    if (!m.empty()) {
      host.push_back(ToHost(be, m[i]));
      names.push_back("optimizer.m." + all[i]->name);
      host.push_back(ToHost(be, v[i]));
      names.push_back("optimizer.v." + all[i]->name);
    }
  }
  std::vector<std::pair<std::string, const Tensor*>> entries;
  for (size_t i = 0; i < host.size(); ++i) entries.emplace_back(names[i], &host[i]);
  const std::string weights = tmp + "/" + kWeights;
  RETURN_IF_ERROR(SaveSafetensors(weights, entries, {{"format", "pt"}}));

  v1::CheckpointManifest full = manifest;
  full.set_format_version(1);
  full.set_weights_file(kWeights);
  ASSIGN_OR_RETURN(std::string sha, Sha256File(weights));
  full.set_weights_sha256(sha);
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(full, &json, options).ok()) {
    return absl::InternalError("could not serialise the checkpoint manifest");
  }
  RETURN_IF_ERROR(WriteFileAtomic(tmp + "/" + kManifest, json));
  RETURN_IF_ERROR(RemoveTree(dir));
  if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(dir, ": could not move the checkpoint into place"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> LatestCheckpoint(const std::string& root) {
  DIR* d = opendir(root.c_str());
  if (d == nullptr) return std::string();
  int64_t best = -1;
  while (dirent* e = readdir(d)) {
    absl::string_view name = e->d_name;
    int64_t step;
    if (!absl::ConsumePrefix(&name, kPrefix) || absl::EndsWith(name, ".tmp")) continue;
    if (!absl::SimpleAtoi(name, &step)) continue;
    if (FileExists(CheckpointPath(root, step) + "/" + kManifest)) best = std::max(best, step);
  }
  closedir(d);
  return best < 0 ? std::string() : CheckpointPath(root, best);
}

absl::StatusOr<v1::CheckpointManifest> ReadManifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifest;
  ASSIGN_OR_RETURN(std::string json, ReadFile(path));
  v1::CheckpointManifest manifest;
  auto st = google::protobuf::util::JsonStringToMessage(json, &manifest);
  if (!st.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": bad manifest: ", st.ToString()));
  }
  return manifest;
}

absl::Status LoadCheckpoint(const std::string& dir, ParamSet* params, std::vector<Tensor>* m,
                            std::vector<Tensor>* v) {
  ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(dir));
  const std::string weights = dir + "/" + manifest.weights_file();
  ASSIGN_OR_RETURN(std::string sha, Sha256File(weights));
  if (sha != manifest.weights_sha256()) {
    return absl::DataLossError(absl::StrCat(weights, ": sha256 ", sha, " does not match the manifest's ",
                                            manifest.weights_sha256(), " (corrupt or truncated)"));
  }
  ASSIGN_OR_RETURN(SafetensorsFile file, LoadSafetensors(weights));
  Backend* be = params->backend();
  auto load = [&](const std::string& name, Tensor* dst) -> absl::Status {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end()) {
      return absl::NotFoundError(absl::StrCat(weights, ": no tensor '", name, "'"));
    }
    if (it->second.shape() != dst->shape() || it->second.dtype() != dst->dtype()) {
      return absl::InvalidArgumentError(absl::StrCat(
          weights, ": tensor '", name, "' is ", DTypeName(it->second.dtype()),
          ShapeString(it->second.shape()), ", the model expects ", DTypeName(dst->dtype()),
          ShapeString(dst->shape())));
    }
    be->Copy(it->second.mat(), dst->mat());
    return absl::OkStatus();
  };
  const auto& all = params->all();
  for (size_t i = 0; i < all.size(); ++i) {
    RETURN_IF_ERROR(load(all[i]->name, &all[i]->value));
    if (m != nullptr) {
      RETURN_IF_ERROR(load("optimizer.m." + all[i]->name, &(*m)[i]));
      RETURN_IF_ERROR(load("optimizer.v." + all[i]->name, &(*v)[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace modamba
