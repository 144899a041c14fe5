#include "tools/train_command.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "core/file_util.h"
#include "core/flops.h"
#include "core/status_macros.h"
#include "kernels/cuda_backend.h"
#include "tools/cli/artifacts.h"
#include "tools/cli/flags.h"
#include "tools/cli/progress.h"
#include "trainer/run_log.h"
#include "trainer/train_loop.h"

namespace modamba {
namespace {

struct TrainFlags {
  std::string config;
  std::string run_dir;
  std::string device = CudaDeviceCount() > 0 ? "gpu" : "cpu";
  int steps = 0;
};

// The raw data directory: $MODAMBA_DATA_DIR, else ../shared/data beside the
// repository (the working directory of tools/modamba.sh).
absl::StatusOr<std::string> RawDataDir() {
  if (const char* env = std::getenv("MODAMBA_DATA_DIR")) return std::string(env);
  if (FileExists("../shared/data")) return std::string("../shared/data");
  return absl::NotFoundError(
      "no raw data: set MODAMBA_DATA_DIR, or fetch it with tools/data/download_raw.sh");
}

absl::Status Train(const TrainFlags& f, std::ostream& out, bool terminal) {
  ASSIGN_OR_RETURN(v1::TrainConfig config, LoadTrainConfig(f.config));
  std::string run_dir = !f.run_dir.empty() ? f.run_dir : config.checkpoint_dir();
  if (run_dir.empty()) run_dir = "runs/" + std::filesystem::path(f.config).stem().string();
  config.set_checkpoint_dir(run_dir);
  if (f.steps > 0) config.set_steps(f.steps);
  if (config.text_path().empty() && config.dataset_dir().empty()) {
    ASSIGN_OR_RETURN(std::string raw, RawDataDir());
    config.set_text_path(raw + "/tinyshakespeare/input.txt");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, NewBackend(f.device));
  out << "model: " << config.model().n_layer() << " layers, d_model " << config.model().d_model()
      << ", " << TotalParams(config.model()) << " parameters, "
      << TrainingFlopsPerToken(config.model(), config.seq_len()) << " training FLOPs/token; on " << f.device
      << ", into " << run_dir << "\n";
  ASSIGN_OR_RETURN(std::string resume, LatestCheckpoint(run_dir));
  if (!resume.empty()) out << "resuming from " << resume << "\n";
  RETURN_IF_ERROR(WriteRunConfig(run_dir, config));
  ASSIGN_OR_RETURN(std::unique_ptr<MetricsFile> metrics,
                   MetricsFile::Open(run_dir + "/metrics.jsonl"));

  cli::ProgressBar bar(out, terminal,
                       config.log_every() > 0 ? config.log_every() : config.steps() / 20);
  absl::Status metrics_status;
  TrainContext context;
  context.backend = backend.get();
  context.on_step = [&](const StepRecord& r) {
    if (metrics_status.ok()) metrics_status = metrics->Append(r);
    if (r.evaluated) {
      bar.Note(absl::StrCat("step ", r.step, ": validation ", cli::FormatLosses(LossMetrics(r.val))));
    }
    cli::ProgressUpdate u;
    u.step = r.step;
    u.total = config.steps();
    u.tokens_per_s = r.tokens_per_second;
    u.losses = LossMetrics(r.loss);
    bar.Show(u);
  };
  context.on_checkpoint = [&](const std::string& dir, int64_t step) {
    bar.Note("checkpoint " + dir);
    return absl::OkStatus();
  };
  absl::StatusOr<std::vector<StepRecord>> records = Train(config, context);
  bar.Finish();
  RETURN_IF_ERROR(records.status());
  RETURN_IF_ERROR(metrics_status);
  if (!records->empty()) {
    out << "done: loss " << records->front().loss.mean() << " -> " << records->back().loss.mean()
        << " over steps " << records->front().step << ".." << records->back().step << "\n";
  }
  cli::PrintArtifact(out, run_dir + "/config.textproto", "the resolved TrainConfig");
  cli::PrintArtifact(out, metrics->path(),
                     "per-step metrics, JSON lines (modamba compare " + run_dir + ")");
  ASSIGN_OR_RETURN(std::string latest, LatestCheckpoint(run_dir));
  if (!latest.empty()) {
    cli::PrintArtifact(out, latest,
                       "the newest checkpoint (eval, generate and export take " + run_dir + ")");
  }
  return absl::OkStatus();
}

}  // namespace

int RunTrainCommand(int argc, char** argv, std::ostream& out, bool terminal) {
  TrainFlags f;
  cli::FlagSet flags("modamba train", "--config=FILE [flags]",
                     "Trains one model in this process, without a coordinator. The run directory "
                     "receives the checkpoints, config.textproto and metrics.jsonl; a run "
                     "directory with checkpoints resumes from its newest.",
                     "modamba train --config=tools/configs/shakespeare_tiny.textproto "
                     "--checkpoint_dir=runs/tiny --steps=100");
  flags.String("config", &f.config, "FILE", "a TrainConfig textproto (proto/config.proto)");
  flags.Require("config");
  flags.String("checkpoint_dir", &f.run_dir, "DIR",
               "the run directory (default: the config's checkpoint_dir, else runs/<config name>)");
  flags.Int("steps", &f.steps, "training steps, overriding the config's (0: the config's)");
  flags.String("device", &f.device, "gpu|cpu", "where to train (gpu when this machine has one)");
  if (std::optional<int> exit = flags.Parse(argc, argv, 1, nullptr)) return *exit;
  if (f.device != "gpu" && f.device != "cpu") return flags.UsageError("--device: gpu or cpu");
  if (f.steps < 0) return flags.UsageError("--steps: must not be negative");
  absl::Status status = Train(f, out, terminal);
  if (!status.ok()) {
    out << std::flush;
    std::cerr << "modamba train: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

int RunTrainCommand(int argc, char** argv) {
  return RunTrainCommand(argc, argv, std::cout, isatty(STDOUT_FILENO));
}

}  // namespace modamba
