// The worker's side of the coordinator protocol (coordinator/README.md), for
// trainer and evaluator workers: registration, heartbeats in the background,
// metrics delivered in order without blocking the caller, checkpoint upload
// and download with sha256 checks, evaluation hand-out, and the rendezvous
// store as a KvStore (rendezvous/kv_store.h).
//
// Calls retry while the coordinator is unreachable (it may be restarting) for
// up to `retry_for`. When the coordinator says this worker must stop (its job
// ended or its generation was superseded) calls fail with ABORTED and
// stop_requested() turns true: the worker should exit promptly.
#ifndef MODAMBA_WORKER_WORKER_CLIENT_H_
#define MODAMBA_WORKER_WORKER_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/service.grpc.pb.h"
#include "rendezvous/kv_store.h"
#include "worker/connection.h"

namespace modamba {

struct WorkerClientOptions {
  ClientOptions connection;
  v1::WorkerRef ref;
  absl::Duration retry_for = absl::Minutes(2);
};

// The options of a worker launched by the coordinator, from the environment
// it sets: MODAMBA_JOB_ID, MODAMBA_ROLE ("trainer" | "evaluator"),
// MODAMBA_RANK, MODAMBA_GENERATION, MODAMBA_COORDINATOR, MODAMBA_TOKEN_FILE
// and MODAMBA_TLS_CA.
absl::StatusOr<WorkerClientOptions> WorkerOptionsFromEnv();

class WorkerClient {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerClient>> Connect(WorkerClientOptions options);
  // Stops heartbeats and the metrics sender (undelivered points are dropped:
  // call Done or FlushMetrics first).
  ~WorkerClient();

  const v1::WorkerRef& ref() const { return options_.ref; }

  // Registers, then heartbeats in the background at the interval the
  // coordinator asks for. Trainers find their resume checkpoint in the answer.
  absl::StatusOr<v1::RegisterResponse> Register();

  bool stop_requested() const { return stop_requested_; }
  std::string stop_reason() const;
  // The step that heartbeats report.
  void SetStep(int64_t step) { step_ = step; }

  // Queues points for delivery, in order, by a background thread.
  void ReportMetrics(std::vector<v1::MetricPoint> points);
  // Waits until every queued point is delivered.
  absl::Status FlushMetrics(absl::Duration timeout);

  // Uploads every regular file under `dir` (named by their paths relative to
  // it, each under `prefix`, e.g. "rank-1/"), then reports them as this
  // rank's part of checkpoint `step`. Returns the checkpoint record, which is
  // `complete` once the last rank reported.
  absl::StatusOr<v1::CheckpointInfo> UploadCheckpoint(int64_t step, double flops,
                                                      const std::string& dir,
                                                      const std::string& prefix = "");
  // Downloads `checkpoint` into `dir` (created), checking each file's sha256;
  // a file appears under its name only once it is whole and checked. With
  // `paths`, only those files (a rank's own shard, say). DATA_LOSS when the
  // coordinator's copy or the received bytes fail their sha256.
  absl::Status DownloadCheckpoint(const v1::CheckpointInfo& checkpoint, const std::string& dir,
                                  const std::vector<std::string>& paths = {});

  // Evaluators: reports `finished_step` (-1: none) as evaluated, then waits up
  // to `wait` for the next checkpoint to evaluate.
  absl::StatusOr<v1::AwaitCheckpointResponse> AwaitCheckpoint(int64_t finished_step,
                                                              absl::Duration wait);

  // Delivers the queued metrics, then reports the end of this worker;
  // `permanent`: a failure a restart would repeat (DoneRequest.permanent).
  absl::Status Done(bool ok, const std::string& message, bool permanent = false);

  // The rendezvous store of this worker's group, valid as long as the client.
  KvStore* kv() { return kv_.get(); }

  // Runs `call` (a unary RPC given a fresh context) until it succeeds, fails
  // for a reason other than the coordinator being unreachable, or retry_for
  // has passed. Public for the store adapter.
  absl::Status Call(absl::Duration timeout,
                    const std::function<grpc::Status(grpc::ClientContext*)>& call);

  v1::WorkerService::Stub* worker_stub() { return worker_.get(); }

 private:
  explicit WorkerClient(WorkerClientOptions options) : options_(std::move(options)) {}
  absl::Status UploadFile(int64_t step, const std::string& local, const v1::CheckpointFile& file);
  void HeartbeatLoop(absl::Duration interval);
  void SendLoop();
  void RequestStop(const std::string& reason);

  const WorkerClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> worker_;
  std::unique_ptr<v1::CheckpointService::Stub> checkpoints_;
  std::unique_ptr<KvStore> kv_;

  std::atomic<bool> stop_requested_{false};
  std::atomic<int64_t> step_{0};
  mutable absl::Mutex mu_;
  std::string stop_reason_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::MetricPoint> queue_ ABSL_GUARDED_BY(mu_);
  bool sending_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status send_error_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::thread heartbeat_thread_;
  std::thread sender_thread_;
};

}  // namespace modamba

#endif  // MODAMBA_WORKER_WORKER_CLIENT_H_
