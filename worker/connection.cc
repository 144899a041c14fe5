#include "worker/connection.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "worker/token.h"

namespace modamba {

absl::StatusOr<ClientOptions> MakeClientOptions(const std::string& address,
                                                const std::string& token_file,
                                                const std::string& tls_ca_file) {
  ClientOptions options;
  options.address = address;
  const bool fallback = token_file.empty() && std::getenv("MODAMBA_TOKEN") == nullptr;
  if (fallback && !FileExists(DefaultTokenPath())) {
    return absl::NotFoundError(absl::StrCat("no token: ", TokenLookup()));
  }
  ASSIGN_OR_RETURN(options.token, LoadToken(fallback ? DefaultTokenPath() : token_file));
  options.tls_ca_file = tls_ca_file;
  return options;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(options.tls_ca_file));
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(64 << 20);
  // Reconnect within a second of a coordinator restart (the defaults back
  // off for up to two minutes), so workers' heartbeats resume in time.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(options.address, credentials, arguments);
}

void PrepareContext(grpc::ClientContext* context, const ClientOptions& options,
                    absl::Duration timeout) {
  context->AddMetadata("authorization", "Bearer " + options.token);
  if (timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    context->set_wait_for_ready(options.wait_for_ready);
  }
}

std::string TokenLookup() {
  return absl::StrCat("clients read it from --token_file, $MODAMBA_TOKEN_FILE or $MODAMBA_TOKEN, "
                      "else from ", DefaultTokenPath(),
                      ", where the coordinator writes the token of the user who starts it");
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  std::string message = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    absl::StrAppend(&message, "; ", TokenLookup());
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), message);
}

}  // namespace modamba
