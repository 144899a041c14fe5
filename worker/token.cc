#include "worker/token.h"

#include <openssl/rand.h>
#include <sys/stat.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba {

absl::StatusOr<std::string> LoadToken(const std::string& token_file) {
  std::string token;
  if (!token_file.empty()) {
    ASSIGN_OR_RETURN(token, ReadFile(token_file));
  } else if (const char* env = std::getenv("MODAMBA_TOKEN")) {
    token = env;
  } else {
    return absl::NotFoundError("no token: pass --token_file or set MODAMBA_TOKEN");
  }
  token = std::string(absl::StripAsciiWhitespace(token));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the token ", token_file.empty() ? "in MODAMBA_TOKEN" : token_file, " is empty"));
  }
  return token;
}

std::string DefaultTokenPath() {
  if (const char* config = std::getenv("XDG_CONFIG_HOME"); config != nullptr && *config != '\0') {
    return absl::StrCat(config, "/modamba/token");
  }
  const char* home = std::getenv("HOME");
  return absl::StrCat(home != nullptr ? home : ".", "/.config/modamba/token");
}

absl::StatusOr<std::string> LoadOrCreateToken(const std::string& path) {
  if (FileExists(path)) return LoadToken(path);
  const std::string dir = path.substr(0, path.rfind('/'));
  const mode_t old_mask = umask(077);  // readable by its owner only
  absl::Status written = MakeDirs(dir);
  const std::string token = NewToken();
  if (written.ok()) written = WriteFileAtomic(path, token + "\n");
  umask(old_mask);
  RETURN_IF_ERROR(written);
  return token;
}

std::string NewToken() {
  unsigned char bytes[32];
  RAND_bytes(bytes, sizeof(bytes));
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes)));
}

}  // namespace modamba
