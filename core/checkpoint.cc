#include "core/checkpoint.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "core/file_util.h"
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

}  // namespace modamba
