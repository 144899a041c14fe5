// The evaluator worker's loop (coordinator/README.md, "Evaluators"): take the
// next complete checkpoint the coordinator hands out, download it (every file
// sha256-checked), evaluate it, report an `eval` metric point tied to its
// step and FLOPs, and pass its step back as finished; until the job is done.
//
// A checkpoint whose bytes fail their sha256 (on download, or against the
// checkpoint's own manifest) is not evaluated: after `download_attempts`
// tries it is reported as an eval point with scalar "checkpoint_rejected" = 1
// and passed back, so no evaluator takes it again. While the coordinator is
// away, WorkerClient retries every call with exponential backoff (100 ms to
// 2 s) for its retry period; past that the loop returns the error and the
// worker exits, as the README says.
#ifndef MODAMBA_EVALUATOR_EVAL_WORKER_H_
#define MODAMBA_EVALUATOR_EVAL_WORKER_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "evaluator/evaluate.h"
#include "proto/job.pb.h"
#include "proto/service.pb.h"

namespace modamba::eval {

// What the loop needs from the coordinator: WorkerClient in the worker, a
// fake in tests.
class CoordinatorLink {
 public:
  virtual ~CoordinatorLink() = default;
  virtual absl::StatusOr<v1::AwaitCheckpointResponse> AwaitCheckpoint(int64_t finished_step,
                                                                      absl::Duration wait) = 0;
  // Fetches every file of `checkpoint` under `dir`, sha256-checked.
  virtual absl::Status DownloadCheckpoint(const v1::CheckpointInfo& checkpoint,
                                          const std::string& dir) = 0;
  virtual void ReportMetrics(std::vector<v1::MetricPoint> points) = 0;
  virtual bool stop_requested() const = 0;
};

struct EvalWorkerOptions {
  std::string work_dir;  // downloads go to work_dir/ckpt-STEP (removed after)
  absl::Duration wait = absl::Seconds(5);
  int download_attempts = 2;
  // Keep each checkpoint's images and WAVs under work_dir/eval-STEP.
  bool keep_outputs = true;
  std::ostream* log = nullptr;
  // Sent with every eval point, so that `modamba status` shows them: what
  // this worker cannot measure, and why.
  std::vector<std::string> notes;
};

// Evaluates checkpoints until the coordinator says the job is done (OK), asks
// this worker to stop (OK), or a call fails for good (its error).
absl::Status RunEvalWorker(CoordinatorLink* link, CheckpointEvaluator* evaluator,
                           const EvalWorkerOptions& options);

// A downloaded checkpoint lies under the uploading ranks' prefixes
// (rank-R/...); moves every file up into `dir` itself, so it is a checkpoint
// directory as LoadTrainedModel reads it. A directory already holding
// manifest.json is left as it is. Two ranks' files of one name are an error.
absl::Status FlattenCheckpoint(const std::string& dir);

// The eval point of a report: per-modality validation CE as `losses` (text,
// image, speech), every metric as a scalar.
v1::MetricPoint EvalPoint(const EvalReport& report, const v1::CheckpointInfo& checkpoint);

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_EVAL_WORKER_H_
