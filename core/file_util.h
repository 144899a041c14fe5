// Small file helpers shared by every binary.
#ifndef MODAMBA_CORE_FILE_UTIL_H_
#define MODAMBA_CORE_FILE_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modamba {

absl::StatusOr<std::string> ReadFile(const std::string& path);
// Writes `path.tmp.<pid>`, fsyncs it, then renames it over `path`: readers see
// the old file or the new one, never half of one.
absl::Status WriteFileAtomic(const std::string& path, absl::string_view contents);
// mkdir -p
absl::Status MakeDirs(const std::string& path);
bool FileExists(const std::string& path);
// "WHAT: <strerror(err)>" (e.g. "cannot write F: No space left on device"):
// RESOURCE_EXHAUSTED for a full disk or quota, else INTERNAL.
absl::Status IoError(absl::string_view what, int err);
// rm -r; a missing path is fine.
absl::Status RemoveTree(const std::string& path);
// Lowercase hex SHA-256 of a byte string / of a file's contents (core/sha256.h
// hashes bytes that arrive in pieces).
std::string Sha256Hex(absl::string_view bytes);
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace modamba

#endif  // MODAMBA_CORE_FILE_UTIL_H_
