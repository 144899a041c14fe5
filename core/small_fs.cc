#include "core/small_fs.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba {
namespace {

absl::Status Unavailable(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

bool WriteProcFile(const char* path, const std::string& text) {
  const int fd = ::open(path, O_WRONLY);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

}  // namespace

absl::Status MountSmallFilesystem(const std::string& dir, int64_t bytes) {
  if (::geteuid() == 0) {
    if (::unshare(CLONE_NEWNS) != 0) return Unavailable("unshare(CLONE_NEWNS)");
  } else {
    const uid_t uid = ::getuid();
    const gid_t gid = ::getgid();
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return Unavailable("unshare(CLONE_NEWUSER)");
    // Keep this process's own ids, so files it creates stay its own.
    if (!WriteProcFile("/proc/self/setgroups", "deny") ||
        !WriteProcFile("/proc/self/uid_map", absl::StrCat(uid, " ", uid, " 1\n")) ||
        !WriteProcFile("/proc/self/gid_map", absl::StrCat(gid, " ", gid, " 1\n"))) {
      return Unavailable("id maps");
    }
  }
  // Mounts below stay in this namespace.
  if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return Unavailable("making / private");
  }
  RETURN_IF_ERROR(MakeDirs(dir));
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, absl::StrCat("size=", bytes).c_str()) != 0) {
    return Unavailable(absl::StrCat("mounting a tmpfs at ", dir));
  }
  return absl::OkStatus();
}

absl::Status FillFilesystem(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return IoError(absl::StrCat("cannot create ", path), errno);
  std::vector<char> zeros(4096, 0);
  while (::write(fd, zeros.data(), zeros.size()) > 0) {
  }
  const int err = errno;
  ::close(fd);
  if (err != ENOSPC) return IoError(absl::StrCat("cannot fill ", path), err);
  return absl::OkStatus();
}

}  // namespace modamba
