#include "coordinator/auth.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
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

std::string NewToken() {
  unsigned char bytes[32];
  RAND_bytes(bytes, sizeof(bytes));
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes)));
}

TokenAuth::TokenAuth(const std::string& token) : digest_(Sha256Hex(token)) {}

bool TokenAuth::Matches(absl::string_view presented) const {
  const std::string digest = Sha256Hex(presented);
  return CRYPTO_memcmp(digest.data(), digest_.data(), digest_.size()) == 0;
}

bool TokenAuth::MatchesHeader(absl::string_view header) const {
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWithIgnoreCase(header, kBearer)) return false;
  return Matches(absl::StripAsciiWhitespace(header.substr(kBearer.size())));
}

grpc::Status TokenAuth::Check(const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end() ||
      !MatchesHeader(absl::string_view(it->second.data(), it->second.size()))) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing or wrong bearer token (metadata \"authorization: Bearer ...\")");
  }
  return grpc::Status::OK;
}

}  // namespace modamba
