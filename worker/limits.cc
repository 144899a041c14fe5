#include "worker/limits.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace modamba {
namespace {

absl::Status PathError(absl::string_view path, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("checkpoint file '", path, "': ", why));
}

}  // namespace

absl::Status CheckCheckpointPath(absl::string_view path) {
  if (path.empty() || path.size() > 256)
    return PathError(path.substr(0, 64), "1 to 256 characters");
  std::vector<absl::string_view> parts = absl::StrSplit(path, '/');
  if (parts.size() > 8) return PathError(path, "more than 8 components");
  for (absl::string_view part : parts) {
    if (part.empty() || part == "." || part == "..") return PathError(path, "not a relative path");
    for (char c : part) {
      if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-') {
        return PathError(path, "only [A-Za-z0-9._-] and '/' are allowed");
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace modamba
