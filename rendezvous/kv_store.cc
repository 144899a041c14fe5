#include "rendezvous/kv_store.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace modamba {

absl::Status ErrnoUnavailable(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", strerror(errno)));
}

absl::StatusOr<int64_t> ParseKvCounter(absl::string_view key, absl::string_view text) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("key '", key, "' holds '", text.substr(0, 32), "', not an integer counter"));
  }
  return value;
}

absl::Status CheckKvSizes(absl::string_view key, size_t value_bytes) {
  if (key.empty()) return absl::InvalidArgumentError("empty store key");
  if (key.size() > kMaxKvKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("store key of ", key.size(), " bytes exceeds ", kMaxKvKeyBytes));
  }
  if (value_bytes > kMaxKvValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("value of key '", key, "' has ", value_bytes,
                                                   " bytes, more than ", kMaxKvValueBytes));
  }
  return absl::OkStatus();
}

}  // namespace modamba
