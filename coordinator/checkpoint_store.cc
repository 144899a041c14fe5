#include "coordinator/checkpoint_store.h"

#include <cerrno>
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba {

namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<CheckpointStore>> CheckpointStore::Open(const std::string& root) {
  RETURN_IF_ERROR(MakeDirs(root));
  std::error_code error;
  fs::remove_all(fs::path(root) / ".tmp", error);
  RETURN_IF_ERROR(MakeDirs(root + "/.tmp"));
  return std::unique_ptr<CheckpointStore>(new CheckpointStore(root));
}

std::string CheckpointStore::StepDir(const std::string& job_id, int64_t step) const {
  return absl::StrFormat("%s/%s/step-%08d", root_, job_id, step);
}

std::string CheckpointStore::PathOf(const std::string& job_id, int64_t step,
                                    const std::string& path) const {
  return absl::StrCat(StepDir(job_id, step), "/", path);
}

absl::StatusOr<std::unique_ptr<CheckpointStore::Writer>> CheckpointStore::NewWriter(
    const std::string& job_id, int64_t step, const v1::CheckpointFile& expected) {
  RETURN_IF_ERROR(CheckCheckpointPath(expected.path()));
  if (expected.size() < 0 || expected.size() > kMaxCheckpointFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint file '", expected.path(), "': size ",
                                                   expected.size(), " is outside [0, ",
                                                   kMaxCheckpointFileBytes, "]"));
  }
  if (expected.sha256().size() != 64 ||
      expected.sha256().find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint file '", expected.path(),
                                                   "': sha256 must be 64 lowercase hex digits"));
  }
  absl::BitGen random;
  const std::string temp =
      absl::StrFormat("%s/.tmp/%016x%016x", root_, absl::Uniform<uint64_t>(random),
                      absl::Uniform<uint64_t>(random));
  FILE* file = fopen(temp.c_str(), "wb");
  if (file == nullptr) return IoError(absl::StrCat("cannot create ", temp), errno);
  return std::unique_ptr<Writer>(
      new Writer(temp, PathOf(job_id, step, expected.path()), expected, file));
}

CheckpointStore::Writer::Writer(std::string temp_path, std::string final_path,
                                v1::CheckpointFile expected, FILE* file)
    : temp_path_(std::move(temp_path)),
      final_path_(std::move(final_path)),
      expected_(std::move(expected)),
      file_(file) {}

CheckpointStore::Writer::~Writer() {
  if (file_ != nullptr) fclose(file_);
  if (!published_) unlink(temp_path_.c_str());
}

absl::Status CheckpointStore::Writer::Append(absl::string_view bytes) {
  if (file_ == nullptr) return absl::FailedPreconditionError("upload already finished");
  if (written_ + static_cast<int64_t>(bytes.size()) > expected_.size()) {
    return absl::DataLossError(absl::StrCat("checkpoint file '", expected_.path(),
                                            "': more bytes than the announced ", expected_.size()));
  }
  if (fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) {
    return IoError(absl::StrCat("cannot write ", temp_path_), errno);
  }
  hash_.Update(bytes);
  written_ += bytes.size();
  return absl::OkStatus();
}

absl::StatusOr<v1::CheckpointFile> CheckpointStore::Writer::Finish() {
  if (file_ == nullptr) return absl::FailedPreconditionError("upload already finished");
  const bool flushed = fflush(file_) == 0 && fsync(fileno(file_)) == 0;
  const int err = errno;
  fclose(file_);
  file_ = nullptr;
  if (!flushed) return IoError(absl::StrCat("cannot write ", temp_path_), err);
  if (written_ != expected_.size()) {
    return absl::DataLossError(absl::StrCat("checkpoint file '", expected_.path(), "': got ",
                                            written_, " bytes, announced ", expected_.size()));
  }
  const std::string sha = hash_.HexDigest();
  if (sha != expected_.sha256()) {
    return absl::DataLossError(absl::StrCat("checkpoint file '", expected_.path(),
                                            "': sha256 mismatch (announced ", expected_.sha256(),
                                            ", received ", sha, ")"));
  }
  finished_ = true;
  return expected_;
}

absl::Status CheckpointStore::Writer::Publish() {
  if (!finished_ || published_) return absl::FailedPreconditionError("upload not finished");
  RETURN_IF_ERROR(MakeDirs(fs::path(final_path_).parent_path().string()));
  if (rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    return IoError(absl::StrCat("cannot rename into ", final_path_), errno);
  }
  published_ = true;
  return absl::OkStatus();
}

absl::Status CheckpointStore::Verify(const v1::CheckpointInfo& checkpoint) const {
  for (const v1::CheckpointFile& file : checkpoint.files()) {
    auto sha = Sha256File(PathOf(checkpoint.job_id(), checkpoint.step(), file.path()));
    if (!sha.ok() || *sha != file.sha256()) {
      return absl::DataLossError(absl::StrCat("checkpoint step ", checkpoint.step(), " of ",
                                              checkpoint.job_id(), ": file '", file.path(), "' ",
                                              sha.ok() ? "fails its sha256" : "is missing",
                                              " on the coordinator's disk"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckpointStore::Remove(const std::string& job_id, int64_t step) {
  std::error_code error;
  fs::remove_all(StepDir(job_id, step), error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot remove ", StepDir(job_id, step), ": ", error.message()));
  }
  return absl::OkStatus();
}

}  // namespace modamba
