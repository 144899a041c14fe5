#include "evaluator/eval_worker.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "evaluator/calibration.h"
#include "worker/limits.h"

namespace modamba::eval {
namespace {

namespace fs = std::filesystem;

void Log(const EvalWorkerOptions& o, const std::string& line) {
  if (o.log != nullptr) *o.log << "evaluator: " << line << std::endl;
}

v1::MetricPoint Point(const v1::CheckpointInfo& checkpoint) {
  v1::MetricPoint point;
  point.set_kind("eval");
  point.set_step(checkpoint.step());
  point.set_flops(checkpoint.flops());
  point.set_checkpoint_step(checkpoint.step());
  return point;
}

// Downloads (retrying sha256 failures), flattens and evaluates a checkpoint.
absl::StatusOr<EvalReport> FetchAndEvaluate(CoordinatorLink* link, CheckpointEvaluator* evaluator,
                                            const v1::CheckpointInfo& checkpoint,
                                            const std::string& dir,
                                            const EvalWorkerOptions& options) {
  absl::Status fetched;
  for (int attempt = 0; attempt < std::max(1, options.download_attempts); ++attempt) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    fetched = link->DownloadCheckpoint(checkpoint, dir);
    if (fetched.code() != absl::StatusCode::kDataLoss) break;
    Log(options, absl::StrCat("step ", checkpoint.step(), ": ", fetched.ToString()));
  }
  RETURN_IF_ERROR(fetched);
  RETURN_IF_ERROR(FlattenCheckpoint(dir));
  evaluator->set_output_dir(
      options.keep_outputs ? absl::StrCat(options.work_dir, "/eval-", checkpoint.step()) : "");
  return evaluator->Evaluate(dir);
}

}  // namespace

absl::Status FlattenCheckpoint(const std::string& dir) {
  if (FileExists(dir + "/manifest.json")) return absl::OkStatus();
  std::error_code ec;
  std::vector<fs::path> ranks;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory() && absl::StartsWith(e.path().filename().string(), "rank-")) {
      ranks.push_back(e.path());
    }
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  for (const fs::path& rank : ranks) {
    // List first: the moves below change the tree being walked.
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(rank, ec)) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
    for (const fs::path& file : files) {
      const fs::path to = fs::path(dir) / fs::relative(file, rank);
      if (fs::exists(to)) {
        return absl::DataLossError(absl::StrCat(dir, ": two ranks uploaded ", to.string()));
      }
      fs::create_directories(to.parent_path());
      fs::rename(file, to, ec);
      if (ec) return absl::InternalError(absl::StrCat("moving ", file.string(), ": ", ec.message()));
    }
    fs::remove_all(rank, ec);
  }
  if (!FileExists(dir + "/manifest.json")) {
    return absl::DataLossError(absl::StrCat(dir, ": the checkpoint has no manifest.json"));
  }
  return absl::OkStatus();
}

v1::MetricPoint EvalPoint(const EvalReport& report, const v1::CheckpointInfo& checkpoint) {
  v1::MetricPoint point = Point(checkpoint);
  for (const auto& [name, value] : report.metrics) {
    (*point.mutable_scalars())[name] = value;
    // val/<modality>_ce are the per-modality losses the dashboard plots.
    if (absl::StartsWith(name, "val/") && absl::EndsWith(name, "_ce")) {
      (*point.mutable_losses())[name.substr(4, name.size() - 7)] = value;
    }
  }
  // The generated digits and speech travel with the point, for the
  // dashboard's grid and players (speech_<digit>.wav, as many as fit).
  size_t wav_bytes = 0;
  for (const std::string& file : report.files) {
    const std::string name = fs::path(file).filename().string();
    absl::StatusOr<std::string> bytes = ReadFile(file);
    if (!bytes.ok()) continue;
    if (name == "images.png" && bytes->size() <= kMaxImageGridBytes) {
      point.set_image_grid_png(*bytes);
    } else if (absl::StartsWith(name, "speech_") && absl::EndsWith(name, ".wav") &&
               wav_bytes + bytes->size() <= kMaxSpeechWavBytes) {
      wav_bytes += bytes->size();
      (*point.mutable_speech_wav())[name.substr(7, name.size() - 11)] = *std::move(bytes);
    }
  }
  return point;
}

absl::Status RunEvalWorker(CoordinatorLink* link, CheckpointEvaluator* evaluator,
                           const EvalWorkerOptions& options) {
  auto report_point = [&](v1::MetricPoint point) {
    for (const std::string& note : options.notes) point.add_notes(note);
    link->ReportMetrics({std::move(point)});
  };
  int64_t finished = -1;
  while (!link->stop_requested()) {
    ASSIGN_OR_RETURN(v1::AwaitCheckpointResponse next,
                     link->AwaitCheckpoint(finished, options.wait));
    finished = -1;
    if (next.job_done()) {
      Log(options, "the job is done");
      return absl::OkStatus();
    }
    if (!next.has_checkpoint()) continue;
    const v1::CheckpointInfo& checkpoint = next.checkpoint();
    const int64_t step = checkpoint.step();
    const std::string dir = absl::StrCat(options.work_dir, "/ckpt-", step);
    absl::StatusOr<EvalReport> report = FetchAndEvaluate(link, evaluator, checkpoint, dir, options);
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (!report.ok()) {
      // A checkpoint that fails its sha256 is reported, never evaluated.
      if (report.status().code() != absl::StatusCode::kDataLoss) return report.status();
      Log(options, absl::StrCat("step ", step, " rejected: ", report.status().ToString()));
      v1::MetricPoint point = Point(checkpoint);
      (*point.mutable_scalars())["checkpoint_rejected"] = 1;
      report_point(std::move(point));
    } else {
      // The judges' calibration beside the scores, for `modamba logs`.
      std::string line = absl::StrCat("step ", step, ": ", report->metrics.size(), " metrics\n",
                                      CalibrationTable(report->metrics, report->judges));
      absl::StripTrailingAsciiWhitespace(&line);
      Log(options, line);
      report_point(EvalPoint(*report, checkpoint));
    }
    finished = step;
  }
  Log(options, "told to stop");
  return absl::OkStatus();
}

}  // namespace modamba::eval
