// For fault tests: a real, small filesystem to fill up. Mounts a tmpfs of
// `bytes` at `dir` in a mount namespace of this process's own (a user
// namespace too when not root), so nothing outside the test sees it; the
// processes the test starts afterwards inherit it. UNAVAILABLE where the
// kernel or the sandbox allows no namespaces (the test then skips). Call it
// before the process starts threads.
#ifndef MODAMBA_CORE_SMALL_FS_H_
#define MODAMBA_CORE_SMALL_FS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace modamba {

absl::Status MountSmallFilesystem(const std::string& dir, int64_t bytes);

// Writes zeros to `path` until the filesystem is full (ENOSPC).
absl::Status FillFilesystem(const std::string& path);

}  // namespace modamba

#endif  // MODAMBA_CORE_SMALL_FS_H_
