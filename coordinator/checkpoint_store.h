// Checkpoint files on the coordinator's disk, laid out as
//   ROOT/<job id>/step-<8-digit step>/<relative path>
// A file appears under its name only after all its bytes arrived and matched
// the size and sha256 announced for it (written under ROOT/.tmp, fsynced,
// renamed into place), and every file is hashed again before it is served.
// Which files a checkpoint has, and whether it is complete, is the job
// manager's record; this class only keeps the bytes.
#ifndef MODAMBA_COORDINATOR_CHECKPOINT_STORE_H_
#define MODAMBA_COORDINATOR_CHECKPOINT_STORE_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/sha256.h"
#include "proto/job.pb.h"
#include "worker/limits.h"

namespace modamba {

class CheckpointStore {
 public:
  // Creates `root` and clears the temporaries a crash left behind.
  static absl::StatusOr<std::unique_ptr<CheckpointStore>> Open(const std::string& root);

  // Receives one file. Destroying a writer that was not committed removes
  // what it wrote.
  class Writer {
   public:
    ~Writer();
    // More bytes of the file; refuses bytes beyond the announced size.
    absl::Status Append(absl::string_view bytes);
    // Flushes the file to disk and checks it: DATA_LOSS when the size or
    // sha256 differ from the announced ones.
    absl::StatusOr<v1::CheckpointFile> Finish();
    // Moves a finished file under its name, replacing any earlier one. Kept
    // apart from Finish so the caller can publish under its own lock.
    absl::Status Publish();

   private:
    friend class CheckpointStore;
    Writer(std::string temp_path, std::string final_path, v1::CheckpointFile expected, FILE* file);
    const std::string temp_path_, final_path_;
    const v1::CheckpointFile expected_;
    FILE* file_;
    bool finished_ = false, published_ = false;
    int64_t written_ = 0;
    Sha256 hash_;
  };

  absl::StatusOr<std::unique_ptr<Writer>> NewWriter(const std::string& job_id, int64_t step,
                                                    const v1::CheckpointFile& expected);

  std::string PathOf(const std::string& job_id, int64_t step, const std::string& path) const;

  // Hashes every file of `checkpoint` again: DATA_LOSS naming the first file
  // that is missing or differs.
  absl::Status Verify(const v1::CheckpointInfo& checkpoint) const;

  // Removes the files of one checkpoint.
  absl::Status Remove(const std::string& job_id, int64_t step);

 private:
  explicit CheckpointStore(std::string root) : root_(std::move(root)) {}
  std::string StepDir(const std::string& job_id, int64_t step) const;

  const std::string root_;
};

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_CHECKPOINT_STORE_H_
