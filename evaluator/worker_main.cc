// modamba-evaluator: the evaluator worker the coordinator launches
// (coordinator/README.md, "The worker protocol"). It registers, then
// evaluates every checkpoint the coordinator hands it (evaluator/eval_worker.h)
// and reports the metrics, until the job is done.
//
// The image and speech metrics need the raw MNIST / FSDD data (--raw, else
// $MODAMBA_DATA_DIR, else ../shared/data beside the repository) and the digit
// classifiers (--classifier_dir, trained there on first use); without the raw
// data the worker reports the validation metrics only. Evaluation runs on
// the CPU.
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/data/raw_data.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "evaluator/eval_worker.h"
#include "evaluator/evaluate.h"
#include "kernels/cuda_backend.h"
#include "worker/worker_client.h"

// Passed by the coordinator to every worker.
ABSL_FLAG(std::string, job_spec, "", "the resolved job spec (the registration answer is used)");
ABSL_FLAG(int, rank, -1, "evaluator index");
ABSL_FLAG(int, world_size, 0, "number of evaluators");
ABSL_FLAG(std::string, coordinator, "", "HOST:PORT (also in $MODAMBA_COORDINATOR)");
ABSL_FLAG(std::string, token_file, "", "bearer token file (also in $MODAMBA_TOKEN_FILE)");
ABSL_FLAG(std::string, run_dir, "", "this worker's working directory");
// Evaluation settings.
ABSL_FLAG(std::string, raw, "", "raw data directory (MNIST, FSDD) for the image and speech metrics");
ABSL_FLAG(std::string, classifier_dir, "", "digit classifiers (default: the evaluator's cache)");
ABSL_FLAG(int, samples_per_digit, 4, "generated images / utterances per digit");
ABSL_FLAG(int, val_sequences, 16, "validation sequences per checkpoint");
ABSL_FLAG(int, diffusion_steps, 50, "DDIM steps for Transfusion images");

namespace modamba::eval {
namespace {

class WorkerLink : public CoordinatorLink {
 public:
  explicit WorkerLink(WorkerClient* client) : client_(client) {}
  absl::StatusOr<v1::AwaitCheckpointResponse> AwaitCheckpoint(int64_t finished_step,
                                                              absl::Duration wait) override {
    return client_->AwaitCheckpoint(finished_step, wait);
  }
  absl::Status DownloadCheckpoint(const v1::CheckpointInfo& checkpoint,
                                  const std::string& dir) override {
    client_->SetStep(checkpoint.step());
    return client_->DownloadCheckpoint(checkpoint, dir);
  }
  void ReportMetrics(std::vector<v1::MetricPoint> points) override {
    client_->ReportMetrics(std::move(points));
  }
  bool stop_requested() const override { return client_->stop_requested(); }

 private:
  WorkerClient* client_;
};

absl::Status Run() {
  ASSIGN_OR_RETURN(WorkerClientOptions options, WorkerOptionsFromEnv());
  if (options.ref.role() != v1::ROLE_EVALUATOR) {
    return absl::InvalidArgumentError("modamba-evaluator runs as an evaluator (MODAMBA_ROLE)");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<WorkerClient> client, WorkerClient::Connect(options));
  ASSIGN_OR_RETURN(v1::RegisterResponse registered, client->Register());

  EvalOptions eval;
  eval.dataset_dir = registered.spec().dataset_dir();
  eval.classifier_dir = absl::GetFlag(FLAGS_classifier_dir);
  eval.samples_per_digit = absl::GetFlag(FLAGS_samples_per_digit);
  eval.val.max_sequences = absl::GetFlag(FLAGS_val_sequences);
  eval.generation.diffusion.steps = absl::GetFlag(FLAGS_diffusion_steps);
  absl::StatusOr<std::string> raw = data::FindRawDataDir(absl::GetFlag(FLAGS_raw));
  std::string no_raw_data;
  if (raw.ok()) {
    eval.raw_dir = *raw;
  } else {
    no_raw_data = absl::StrCat("evaluator: no raw data, so validation metrics only (no image or "
                               "speech generation metrics): ", raw.status().message());
    std::cerr << no_raw_data << std::endl;
    eval.images = eval.speech = false;
  }
  std::string run_dir = absl::GetFlag(FLAGS_run_dir);
  if (run_dir.empty()) run_dir = ".";
  RETURN_IF_ERROR(MakeDirs(run_dir));

  // A GPU job's evaluator runs on the GPU the coordinator gave it
  // (CUDA_VISIBLE_DEVICES); recurrent generation runs on the host either way.
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, NewBackend(registered.spec().device()));
  CheckpointEvaluator evaluator(eval, backend.get());
  WorkerLink link(client.get());
  EvalWorkerOptions worker;
  worker.work_dir = run_dir;
  worker.log = &std::cerr;
  if (!no_raw_data.empty()) worker.notes.push_back(no_raw_data);
  absl::Status status = RunEvalWorker(&link, &evaluator, worker);
  if (client->stop_requested()) return absl::OkStatus();
  absl::Status done = client->Done(status.ok(), status.ToString());
  return status.ok() ? done : status;
}

}  // namespace
}  // namespace modamba::eval

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status status = modamba::eval::Run();
  if (!status.ok()) {
    std::cerr << "modamba-evaluator: " << status << std::endl;
    return 1;
  }
  return 0;
}
