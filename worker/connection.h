// Connecting to a coordinator: the channel (plain or TLS), the bearer token
// on every call, and status conversion. Shared by workers and the CLI.
#ifndef MODAMBA_WORKER_CONNECTION_H_
#define MODAMBA_WORKER_CONNECTION_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"

namespace modamba {

struct ClientOptions {
  std::string address;  // HOST:PORT of the coordinator's gRPC server
  std::string token;
  std::string tls_ca_file;  // PEM root certificate; empty: plain TCP
  // A call with a deadline waits for the coordinator (the channel reconnects
  // with a backoff of 0.1 to 1 s) until its deadline, instead of failing at
  // the first refused connection. The CLI's choice; workers retry themselves.
  bool wait_for_ready = false;
};

// Options from their usual sources: `token_file`, else $MODAMBA_TOKEN, else
// the default token file (worker/token.h) when it exists.
absl::StatusOr<ClientOptions> MakeClientOptions(const std::string& address,
                                                const std::string& token_file,
                                                const std::string& tls_ca_file);

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options);

// Adds the token and a deadline `timeout` from now (none when infinite).
void PrepareContext(grpc::ClientContext* context, const ClientOptions& options,
                    absl::Duration timeout);

// UNAUTHENTICATED also says where clients look for the token.
absl::Status FromGrpc(const grpc::Status& status);

// Where clients look for the token, in order (for error messages).
std::string TokenLookup();

}  // namespace modamba

#endif  // MODAMBA_WORKER_CONNECTION_H_
