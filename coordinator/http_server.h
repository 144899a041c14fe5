// The HTTP face of the job manager: a JSON status API and the dashboard,
// served with Boost.Beast, one thread per connection (bounded).
//
//   GET  /healthz                        "ok", or 503 "degraded: WHY" while the
//                                        database cannot be written (the only
//                                        path without a token)
//   GET  /                               the dashboard
//   GET  /api/jobs                       ListJobsResponse
//   POST /api/jobs                       body: a JobSpec textproto -> Job
//   GET  /api/jobs/{id}                  Job
//   POST /api/jobs/{id}/cancel           Job
//   GET  /api/jobs/{id}/metrics?after=S&limit=N   GetMetricsResponse (speech_wav: names only)
//   GET  /api/jobs/{id}/speech/{seq}/{digit}.wav  audio/wav: an eval point's generated speech
//   GET  /api/jobs/{id}/checkpoints      ListCheckpointsResponse
//   GET  /api/workers?job=ID             ListWorkersResponse
//
// Bodies are the protos of proto/service.proto in their JSON mapping (field
// names as in the .proto; 64-bit integers as strings). Errors are
// {"error": {"code": "NOT_FOUND", "message": "..."}} with the matching HTTP
// status.
#ifndef MODAMBA_COORDINATOR_HTTP_SERVER_H_
#define MODAMBA_COORDINATOR_HTTP_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/auth.h"
#include "coordinator/job_manager.h"

namespace modamba {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: the OS picks one (see HttpServer::port)
  size_t max_body_bytes = 1 << 20;
  size_t max_header_bytes = 16 << 10;
  int max_connections = 512;
  // A connection idle (or trickling) this long is closed.
  absl::Duration io_timeout = absl::Seconds(30);
};

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpOptions& options,
                                                           JobManager* manager,
                                                           const TokenAuth* auth);
  // Stops accepting, closes open connections and waits for their threads.
  ~HttpServer();

  int port() const;

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_HTTP_SERVER_H_
