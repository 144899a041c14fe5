// Who may call the coordinator. Every gRPC call and every HTTP request (but
// /healthz) presents a bearer token: gRPC as the metadata "authorization:
// Bearer T", HTTP as the header "Authorization: Bearer T" or, for a browser
// opening the dashboard, the query parameter "token=T".
//
// The model: local users on one host. Each user holds a token in a file only
// they can read (mode 0600; by default ~/.config/modamba/token, which the
// coordinator writes for the user who starts it). A user may read every job
// and submit jobs, but cancel only their own. Workers never hold a user's
// token: each worker gets, at launch, a token of its own job and rank
// (derived from a secret the coordinator keeps), and may speak only for that
// worker and read only that job's checkpoints.
#ifndef MODAMBA_COORDINATOR_AUTH_H_
#define MODAMBA_COORDINATOR_AUTH_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"
#include "proto/job.pb.h"
#include "worker/token.h"

namespace modamba {

// Who a call speaks for: a user (by name), or one worker (job, role, rank).
struct Caller {
  std::string user;
  v1::WorkerRef worker;  // set for workers (generation 0)
  bool is_worker() const { return user.empty(); }
};

class TokenAuth {
 public:
  // `users`: name -> token. `worker_secret` keys the workers' tokens.
  TokenAuth(const std::map<std::string, std::string>& users, std::string worker_secret);

  // The token of worker (job, role, rank): "worker.JOB.ROLE.RANK.MAC".
  std::string WorkerToken(const v1::WorkerRef& ref) const;

  // UNAUTHENTICATED unless `presented` is a user's or a worker's token.
  // Compared in constant time, over digests (the length does not leak).
  absl::StatusOr<Caller> Identify(absl::string_view presented) const;
  // `header` is an Authorization value: "Bearer T".
  absl::StatusOr<Caller> IdentifyHeader(absl::string_view header) const;

  // A call's caller: UNAUTHENTICATED without a valid token.
  grpc::Status Check(const grpc::ServerContextBase& context, Caller* caller) const;
  // Users only (JobService, HTTP): PERMISSION_DENIED for a worker.
  grpc::Status CheckUser(const grpc::ServerContextBase& context, std::string* user) const;
  // Only worker `ref` itself (its job, role and rank).
  grpc::Status CheckWorker(const grpc::ServerContextBase& context, const v1::WorkerRef& ref) const;
  // A user, or a worker of job `job_id` (checkpoint downloads and lists).
  grpc::Status CheckJobReader(const grpc::ServerContextBase& context,
                              const std::string& job_id) const;

 private:
  std::vector<std::pair<std::string, std::string>> user_digests_;  // name, sha256 of the token
  std::string worker_secret_;
};

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_AUTH_H_
