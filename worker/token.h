// Bearer tokens as clients keep them: in a file only their owner can read,
// or in $MODAMBA_TOKEN. The coordinator checks them (coordinator/auth.h).
#ifndef MODAMBA_WORKER_TOKEN_H_
#define MODAMBA_WORKER_TOKEN_H_

#include <string>

#include "absl/status/statusor.h"

namespace modamba {

// The token from `token_file` when given, else from $MODAMBA_TOKEN; NOT_FOUND
// when neither is set. Surrounding whitespace is dropped.
absl::StatusOr<std::string> LoadToken(const std::string& token_file);

// Where a user's token lives unless told otherwise:
// $XDG_CONFIG_HOME/modamba/token, else $HOME/.config/modamba/token.
std::string DefaultTokenPath();

// The token in `path`; when the file does not exist, a new one written there
// (directory mode 0700, file mode 0600).
absl::StatusOr<std::string> LoadOrCreateToken(const std::string& path);

// 32 random bytes, hex encoded.
std::string NewToken();

}  // namespace modamba

#endif  // MODAMBA_WORKER_TOKEN_H_
