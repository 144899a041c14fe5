// The shared bearer token that every gRPC call and every HTTP request (but
// /healthz) must present: gRPC as the metadata "authorization: Bearer T",
// HTTP as the header "Authorization: Bearer T" or, for a browser opening the
// dashboard, the query parameter "token=T".
#ifndef MODAMBA_COORDINATOR_AUTH_H_
#define MODAMBA_COORDINATOR_AUTH_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"

namespace modamba {

// The token from `token_file` when given, else from $MODAMBA_TOKEN; NOT_FOUND
// when neither is set. Surrounding whitespace is dropped.
absl::StatusOr<std::string> LoadToken(const std::string& token_file);

// 32 random bytes, hex encoded.
std::string NewToken();

class TokenAuth {
 public:
  explicit TokenAuth(const std::string& token);

  // Compares in constant time (over digests, so not even the length leaks).
  bool Matches(absl::string_view presented) const;
  // `header` is an Authorization value: "Bearer T".
  bool MatchesHeader(absl::string_view header) const;
  // UNAUTHENTICATED unless the call carries the token.
  grpc::Status Check(const grpc::ServerContextBase& context) const;

 private:
  std::string digest_;
};

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_AUTH_H_
