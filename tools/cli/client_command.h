// The client commands of the `modamba` tool: everything that talks to a
// running coordinator.
//
//   modamba submit SPEC.textproto [--watch]
//   modamba status [JOB]
//   modamba watch JOB            a live progress bar with ETA and per-modality loss
//   modamba cancel JOB
//   modamba logs JOB [--worker=trainer-0] [--bytes=65536] [--follow]
//   modamba checkpoints JOB
//
// Flags of every command: --coordinator=HOST:PORT (default $MODAMBA_COORDINATOR,
// else 127.0.0.1:7077), --token_file=FILE (default $MODAMBA_TOKEN_FILE, else
// the token in $MODAMBA_TOKEN), --tls_ca=PEM (gRPC over TLS, trusting PEM).
// They follow the convention of tools/cli/flags.h (--help on every command).
#ifndef MODAMBA_TOOLS_CLI_CLIENT_COMMAND_H_
#define MODAMBA_TOOLS_CLI_CLIENT_COMMAND_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"
#include "worker/connection.h"

namespace modamba {

// Whether `command` is one of the commands above; their names.
bool IsClientCommand(const std::string& command);
std::vector<std::string> ClientCommands();

// Runs one command; argv[0] is the command's name ("submit", ...). Prints to
// stdout, errors to stderr; returns the process exit code (0: success; 1: an
// error, or a watched job that did not succeed; 2: bad usage).
int RunClientCommand(int argc, char** argv);

// The pieces, for `modamba demo`.
absl::StatusOr<v1::Job> SubmitJobText(const ClientOptions& options, const std::string& spec_text,
                                      const std::string& source);
// Follows the job until it ends, drawing progress on `out` (a redrawn bar on
// a terminal, a line every few percent otherwise); the job as it ended.
absl::StatusOr<v1::Job> WatchJobToEnd(const ClientOptions& options, const std::string& job_id,
                                      std::ostream& out, bool terminal);
// "text 1.234, image 2.345, speech 3.456"
std::string LossSummary(const v1::MetricPoint& point);

}  // namespace modamba

#endif  // MODAMBA_TOOLS_CLI_CLIENT_COMMAND_H_
