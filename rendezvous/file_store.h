// A KvStore in a directory that every rank sees.
#ifndef MODAMBA_RENDEZVOUS_FILE_STORE_H_
#define MODAMBA_RENDEZVOUS_FILE_STORE_H_

#include <memory>
#include <string>

#include "rendezvous/kv_store.h"

namespace modamba {

// A store in a directory shared by all ranks (a local or network file
// system): one file per key, written to a temporary name and renamed into
// place, so readers see a whole value or none; Add serialises writers with
// flock on a lock file. Get polls.
class FileStore : public KvStore {
 public:
  // Creates `dir` if needed.
  static absl::StatusOr<std::unique_ptr<FileStore>> Open(const std::string& dir);

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<bool> Check(absl::Span<const std::string> keys) override;

  const std::string& dir() const { return dir_; }

 private:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {}
  absl::StatusOr<std::string> PathOf(absl::string_view key) const;
  absl::Status WriteValue(const std::string& path, absl::string_view value);

  const std::string dir_;
};

}  // namespace modamba

#endif  // MODAMBA_RENDEZVOUS_FILE_STORE_H_
