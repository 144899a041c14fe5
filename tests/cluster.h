// A coordinator as a real process on loopback, with (by default) the fake
// worker as its trainer and evaluator, for the process-spanning tests. Ports are
// chosen by the OS; everything lives in a fresh directory under TEST_TMPDIR.
// The destructor kills whatever this cluster started, workers included
// (they run in their own sessions, out of reach of the test runner).
#ifndef MODAMBA_TESTS_CLUSTER_H_
#define MODAMBA_TESTS_CLUSTER_H_

#include <sys/types.h>

#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "proto/service.grpc.pb.h"
#include "trainer/synthetic_dataset.h"
#include "worker/connection.h"

namespace modamba {

struct ClusterOptions {
  // Worker programs, as runfile paths: the real trainer and evaluator replace
  // the fake worker here once they exist (add them to the test's data).
  std::string trainer_binary = "tests/fake_worker";
  std::string evaluator_binary = "tests/fake_worker";
  int cpu_slots = 8;
  int gpus = 0;
  absl::Duration heartbeat_timeout = absl::Seconds(3);
  absl::Duration stop_grace = absl::Seconds(2);
  // The database's directory (default: the run root).
  std::string db_dir;
  // Users besides the cluster's own (name -> token), in a --users_file.
  std::map<std::string, std::string> more_users;
  // No --token_file: the coordinator finds (or writes) its user's token in
  // the default place (coordinator/auth.h), which token() then reads.
  bool default_token_file = false;
  // PEM files: serve gRPC over TLS.
  std::string tls_cert;
  std::string tls_key;
  // More coordinator flags ("--launcher=slurm").
  std::vector<std::string> extra_flags;
};

struct HttpResult {
  int status = 0;
  std::string body;
};

class Cluster {
 public:
  static absl::StatusOr<std::unique_ptr<Cluster>> Start(ClusterOptions options = {});
  ~Cluster();

  // kill -9 of the coordinator; its workers keep running.
  absl::Status KillCoordinator();
  // Starts it again on the same ports, database and directories.
  absl::Status RestartCoordinator();
  pid_t coordinator_pid() const { return pid_; }

  // A dataset directory inside the data root holding the fake worker's
  // behaviour file ("key=value" lines); returns its name.
  std::string MakeDataset(const std::string& name, const std::string& behaviour);

  // A small valid job spec; `extra` is more textproto (other fields). The
  // required `name` comes last, so the spec cut anywhere before its final
  // newline is invalid.
  static std::string Spec(const std::string& name, const std::string& dataset, int steps,
                          int world_size, int n_evaluators, int checkpoint_every,
                          const std::string& extra = "");

  v1::JobService::Stub* jobs() { return jobs_.get(); }
  v1::WorkerService::Stub* workers() { return workers_.get(); }
  v1::CheckpointService::Stub* checkpoints() { return checkpoints_.get(); }
  // Adds the user's token and a deadline.
  void Prepare(grpc::ClientContext* context, absl::Duration timeout = absl::Seconds(30)) const;
  // Adds the token of `worker` ("trainer-0") of the job, as it was given at
  // launch, and a deadline: the test speaks as that worker.
  void PrepareAsWorker(grpc::ClientContext* context, const std::string& job_id,
                       const std::string& worker) const;
  const ClientOptions& client_options() const { return client_; }

  absl::StatusOr<v1::Job> Submit(const std::string& spec_text);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
  // Polls the job until `done` holds; fails after `timeout`, naming the last state.
  absl::StatusOr<v1::Job> WaitJob(const std::string& job_id,
                                  const std::function<bool(const v1::Job&)>& done,
                                  absl::Duration timeout = absl::Seconds(60));
  absl::StatusOr<v1::Job> WaitFinished(const std::string& job_id,
                                       absl::Duration timeout = absl::Seconds(60));
  absl::StatusOr<std::vector<v1::MetricPoint>> Metrics(const std::string& job_id);
  absl::StatusOr<std::vector<v1::CheckpointInfo>> Checkpoints(const std::string& job_id);

  // One HTTP/1.1 request to the coordinator's HTTP port.
  absl::StatusOr<HttpResult> Http(const std::string& method, const std::string& target,
                                  bool with_token = true, const std::string& body = "");

  // Pids of this cluster's worker processes that are alive now.
  std::vector<pid_t> LiveWorkerPids() const;
  // Worker logs and the coordinator's log, for a failing test's output.
  std::string Logs() const;

  const std::string& root() const { return root_; }
  const std::string& data_root() const { return data_root_; }
  const std::string& run_root() const { return run_root_; }
  const std::string& checkpoint_root() const { return checkpoint_root_; }
  const std::string& token() const { return token_; }
  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }

 private:
  explicit Cluster(ClusterOptions options) : options_(std::move(options)) {}
  absl::Status Launch(int grpc_port, int http_port);
  absl::Status Connect();

  const ClusterOptions options_;
  std::string root_, data_root_, run_root_, checkpoint_root_, token_, log_path_;
  pid_t pid_ = -1;
  int grpc_port_ = 0, http_port_ = 0;
  int launches_ = 0;
  ClientOptions client_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
  std::unique_ptr<v1::CheckpointService::Stub> checkpoints_;
};

// A fixture with a running cluster (Options() chooses how); a failing test
// prints every worker's and the coordinator's log.
class ClusterTest : public ::testing::Test {
 protected:
  virtual ClusterOptions Options() { return {}; }
  void SetUp() override {
    auto cluster = Cluster::Start(Options());
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = std::move(*cluster);
  }
  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) std::cerr << cluster_->Logs();
  }

  std::unique_ptr<Cluster> cluster_;
};

// A cluster of the real trainer and evaluator binaries, with a small synthetic
// tri-modal dataset at data_root()/tri (48 sequences of 64 tokens).
class RealWorkersClusterTest : public ClusterTest {
 protected:
  ClusterOptions Options() override {
    ClusterOptions options;
    options.trainer_binary = "trainer/modamba-trainer";
    options.evaluator_binary = "evaluator/modamba-evaluator";
    options.heartbeat_timeout = absl::Seconds(10);
    return options;
  }
  void SetUp() override {
    ClusterTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(WriteSyntheticDataset(cluster_->data_root() + "/tri", "trimodal", 48, 64, 8).ok());
  }
};

// The path of a binary among the test's runfiles ("coordinator/modamba-coordinator").
std::string RunfilePath(const std::string& relative);

bool IsFinished(const v1::Job& job);

}  // namespace modamba

#endif  // MODAMBA_TESTS_CLUSTER_H_
