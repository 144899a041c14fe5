#include "rendezvous/file_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba {
namespace {

// Letters, digits, '-', '_' and inner '.' stay; everything else becomes %XX,
// so keys with '/' stay inside the directory and no key collides with the
// hidden temporary and lock files, which start with '.'.
std::string EscapeKey(absl::string_view key) {
  std::string out;
  for (size_t i = 0; i < key.size(); ++i) {
    const unsigned char c = key[i];
    const bool plain = isalnum(c) || c == '-' || c == '_' || (c == '.' && i > 0);
    if (plain) {
      out.push_back(c);
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

class FileLock {
 public:
  static absl::StatusOr<FileLock> Acquire(const std::string& path) {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoUnavailable(absl::StrCat("open ", path));
    while (flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const absl::Status status = ErrnoUnavailable(absl::StrCat("flock ", path));
      close(fd);
      return status;
    }
    return FileLock(fd);
  }
  FileLock(FileLock&& other) : fd_(std::exchange(other.fd_, -1)) {}
  FileLock& operator=(FileLock&&) = delete;
  ~FileLock() {
    if (fd_ >= 0) close(fd_);  // closing releases the lock
  }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FileStore>> FileStore::Open(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("file store: empty directory");
  RETURN_IF_ERROR(MakeDirs(dir));
  return std::unique_ptr<FileStore>(new FileStore(dir));
}

absl::StatusOr<std::string> FileStore::PathOf(absl::string_view key) const {
  RETURN_IF_ERROR(CheckKvSizes(key, 0));
  std::string name = EscapeKey(key);
  if (name.size() > 240) {  // file names are limited to 255 bytes
    return absl::InvalidArgumentError(
        absl::StrCat("file store: key '", key.substr(0, 64), "...' is too long for a file name"));
  }
  return absl::StrCat(dir_, "/", name);
}

absl::Status FileStore::WriteValue(const std::string& path, absl::string_view value) {
  // A name unique to this thread and call: threads of one process may write at once.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp =
      absl::StrCat(dir_, "/.tmp.", getpid(), ".", syscall(SYS_gettid), ".", counter.fetch_add(1));
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoUnavailable(absl::StrCat("file store: create ", tmp));
  absl::string_view rest = value;
  while (!rest.empty()) {
    const ssize_t n = write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const absl::Status status = ErrnoUnavailable(absl::StrCat("file store: write ", tmp));
      close(fd);
      unlink(tmp.c_str());
      return status;
    }
    rest.remove_prefix(n);
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const absl::Status status = ErrnoUnavailable(absl::StrCat("file store: rename to ", path));
    unlink(tmp.c_str());
    return status;
  }
  return absl::OkStatus();
}

absl::Status FileStore::Set(absl::string_view key, absl::string_view value) {
  RETURN_IF_ERROR(CheckKvSizes(key, value.size()));
  ASSIGN_OR_RETURN(const std::string path, PathOf(key));
  return WriteValue(path, value);
}

absl::StatusOr<std::string> FileStore::Get(absl::string_view key, absl::Duration timeout) {
  ASSIGN_OR_RETURN(const std::string path, PathOf(key));
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration backoff = absl::Milliseconds(1);
  while (true) {
    if (FileExists(path)) return ReadFile(path);
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "file store ", dir_, ": key '", key, "' not set within ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(std::min(backoff, deadline - absl::Now()));
    backoff = std::min(backoff * 2, absl::Milliseconds(20));
  }
}

absl::StatusOr<int64_t> FileStore::Add(absl::string_view key, int64_t delta) {
  ASSIGN_OR_RETURN(const std::string path, PathOf(key));
  ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(absl::StrCat(dir_, "/.lock")));
  int64_t value = 0;
  if (FileExists(path)) {
    ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
    ASSIGN_OR_RETURN(value, ParseKvCounter(key, text));
  }
  value += delta;
  RETURN_IF_ERROR(WriteValue(path, std::to_string(value)));
  return value;
}

absl::StatusOr<bool> FileStore::Check(absl::Span<const std::string> keys) {
  for (const std::string& key : keys) {
    ASSIGN_OR_RETURN(const std::string path, PathOf(key));
    if (!FileExists(path)) return false;
  }
  return true;
}

}  // namespace modamba
