// A stand-in for the trainer and evaluator workers that speaks the real
// worker protocol (coordinator/README.md) through worker/worker_client.h,
// so the coordinator is tested with real processes before the real workers
// exist. Launched by the coordinator exactly as the real ones are.
//
// Trainer: registers, meets its group in the rendezvous store, resumes from
// the checkpoint the coordinator names, then "trains": the state x evolves
// by a fixed recurrence per step, the per-modality "losses" are functions of
// x, so a run resumed from the right checkpoint ends with exactly the losses
// of an undisturbed one, and a run resumed from anything else does not.
// Every checkpoint_every steps each rank uploads its part (state.txt and a
// block of bytes); rank 0 reports the metrics.
//
// Evaluator: takes checkpoints from the coordinator, downloads them, reports
// an eval metric computed from the downloaded state (with a small image grid
// and a spoken "7": a tone, as the real evaluator's samples travel), and logs the sha256 of
// every downloaded file to RUN_DIR/downloads.txt (trainers log theirs to
// RUN_DIR/uploads.txt) so tests can compare.
//
// Behaviour comes from DATASET_DIR/fake_worker.txt, lines "key=value":
//   step_ms=20          time per step
//   crash_rank=-1       this trainer rank crashes ...
//   crash_at_step=0     ... on reaching this step ...
//   crash_generation=0  ... in this generation (-1: every one) ...
//   crash_mode=kill     ... by: kill (SIGKILL itself), exit (code 3), hang (SIGSTOP itself)
//   retry_for_ms=20000  how long calls retry while the coordinator is away
//   payload_bytes=65536 size of each rank's block of bytes per checkpoint
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "coordinator/job_spec.h"
#include "core/data/audio.h"
#include "core/data/png_io.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "google/protobuf/util/message_differencer.h"
#include "worker/worker_client.h"

ABSL_FLAG(std::string, job_spec, "", "the resolved job spec the coordinator wrote");
ABSL_FLAG(int, rank, -1, "trainer rank or evaluator index");
ABSL_FLAG(int, world_size, 0, "ranks of this role");
ABSL_FLAG(std::string, coordinator, "", "HOST:PORT");
ABSL_FLAG(std::string, token_file, "", "bearer token");
ABSL_FLAG(std::string, run_dir, "", "this worker's working directory");

namespace modamba {
namespace {

std::map<std::string, std::string> LoadBehaviour(const std::string& dataset_dir) {
  std::map<std::string, std::string> behaviour;
  auto text = ReadFile(dataset_dir + "/fake_worker.txt");
  if (!text.ok()) return behaviour;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    behaviour[kv.first] = kv.second;
  }
  return behaviour;
}

int64_t Int(const std::map<std::string, std::string>& b, const std::string& key, int64_t fallback) {
  auto it = b.find(key);
  int64_t value = fallback;
  if (it != b.end()) absl::SimpleAtoi(it->second, &value);
  return value;
}

// The recurrence of the fake model and its per-modality losses.
double NextX(double x, int64_t step) { return 0.97 * x + 0.01 * std::sin(0.1 * step); }
std::map<std::string, double> Losses(double x) {
  return {{"text", 1.5 + x}, {"image", 3.0 + 0.5 * x}, {"speech", 2.5 + 0.25 * x}};
}
double Flops(int64_t step) { return 1e9 * step; }

absl::Status AppendLine(const std::string& path, const std::string& line) {
  FILE* f = fopen(path.c_str(), "a");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot append to ", path));
  fprintf(f, "%s\n", line.c_str());
  fclose(f);
  return absl::OkStatus();
}

// Reads x and the step from rank `rank`'s state in a downloaded checkpoint.
absl::Status ReadState(const std::string& dir, int rank, int64_t* step, double* x) {
  const std::string path = absl::StrCat(dir, "/rank-", rank, "/state.txt");
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  if (sscanf(text.c_str(), "step=%ld x=%la", step, x) != 2) {
    return absl::DataLossError(absl::StrCat(path, " is unreadable"));
  }
  return absl::OkStatus();
}

void Crash(const std::string& mode) {
  std::cerr << "fake_worker: crashing (" << mode << ")" << std::endl;
  if (mode == "exit") _exit(3);
  if (mode == "hang") raise(SIGSTOP);  // alive but silent: only heartbeats can tell
  raise(SIGKILL);
}

absl::Status RunTrainer(WorkerClient* client, const v1::RegisterResponse& registered,
                        const std::map<std::string, std::string>& behaviour,
                        const std::string& run_dir) {
  const v1::JobSpec& spec = registered.spec();
  const int rank = client->ref().rank();
  const int world = registered.world_size();
  const int generation = client->ref().generation();

  // Rendezvous: everyone publishes an address and reads everyone else's,
  // then a counter tells who arrived last.
  KvStore* kv = client->kv();
  RETURN_IF_ERROR(kv->Set(absl::StrCat("addr/", rank), absl::StrCat("pid ", getpid())));
  for (int r = 0; r < world; ++r) {
    RETURN_IF_ERROR(kv->Get(absl::StrCat("addr/", r), absl::Seconds(60)).status());
  }
  ASSIGN_OR_RETURN(int64_t arrived, kv->Add("arrived", 1));
  if (arrived == world) RETURN_IF_ERROR(kv->Set("all_arrived", "1"));
  RETURN_IF_ERROR(kv->Get("all_arrived", absl::Seconds(60)).status());

  int64_t step = 0;
  double x = 1.0;
  if (registered.has_resume_checkpoint()) {
    const v1::CheckpointInfo& resume = registered.resume_checkpoint();
    const std::string dir = absl::StrCat(run_dir, "/resume-g", generation);
    // Each rank fetches only its own part.
    RETURN_IF_ERROR(
        client->DownloadCheckpoint(resume, dir, {absl::StrCat("rank-", rank, "/state.txt")}));
    RETURN_IF_ERROR(ReadState(dir, rank, &step, &x));
    if (step != resume.step()) return absl::DataLossError("resume checkpoint holds the wrong step");
    std::cerr << "fake_worker: rank " << rank << " resumes from step " << step << std::endl;
  }

  const int64_t steps = spec.train().steps();
  const int64_t every = spec.checkpoint_every_steps();
  const int64_t eval_every = spec.train().eval_every();
  const absl::Duration step_time = absl::Milliseconds(Int(behaviour, "step_ms", 20));
  const int64_t payload = Int(behaviour, "payload_bytes", 65536);
  const bool crasher = Int(behaviour, "crash_rank", -1) == rank &&
                       (Int(behaviour, "crash_generation", 0) == -1 ||
                        Int(behaviour, "crash_generation", 0) == generation);
  const auto mode =
      behaviour.count("crash_mode") ? behaviour.at("crash_mode") : std::string("kill");
  while (step < steps) {
    if (client->stop_requested()) {
      std::cerr << "fake_worker: told to stop: " << client->stop_reason() << std::endl;
      return absl::OkStatus();
    }
    absl::SleepFor(step_time);
    ++step;
    if (crasher && step == Int(behaviour, "crash_at_step", 0)) Crash(mode);
    x = NextX(x, step);
    client->SetStep(step);
    if (rank == 0) {
      v1::MetricPoint point;
      point.set_kind("train");
      point.set_step(step);
      point.set_flops(Flops(step));
      for (const auto& [name, value] : Losses(x)) (*point.mutable_losses())[name] = value;
      (*point.mutable_scalars())["lr"] = 1e-3;
      std::vector<v1::MetricPoint> points = {point};
      if (eval_every > 0 && step % eval_every == 0) {
        point.set_kind("val");
        for (const auto& [name, value] : Losses(x)) (*point.mutable_losses())[name] = value + 0.1;
        point.clear_scalars();
        points.push_back(point);
      }
      client->ReportMetrics(std::move(points));
    }
    if (step % every == 0 || step == steps) {
      const std::string dir = absl::StrCat(run_dir, "/ckpt-", step);
      RETURN_IF_ERROR(MakeDirs(dir));
      RETURN_IF_ERROR(
          WriteFileAtomic(dir + "/state.txt", absl::StrFormat("step=%d x=%a\n", step, x)));
      std::string block(payload, '\0');
      for (int64_t i = 0; i < payload; ++i)
        block[i] = static_cast<char>((i * 31 + step * 7 + rank) & 0xff);
      RETURN_IF_ERROR(WriteFileAtomic(dir + "/model.bin", block));
      const std::string prefix = absl::StrCat("rank-", rank, "/");
      ASSIGN_OR_RETURN(v1::CheckpointInfo info,
                       client->UploadCheckpoint(step, Flops(step), dir, prefix));
      for (const std::string name : {"state.txt", "model.bin"}) {
        ASSIGN_OR_RETURN(std::string sha, Sha256File(dir + "/" + name));
        RETURN_IF_ERROR(
            AppendLine(run_dir + "/uploads.txt", absl::StrCat(step, " ", prefix, name, " ", sha)));
      }
      std::filesystem::remove_all(dir);
    }
  }
  return absl::OkStatus();
}

// The samples an eval point carries: a 4x2 grid of grey levels of x, and a
// 0.4 s tone whose pitch follows x.
absl::Status AddSamples(const std::string& run_dir, double x, v1::MetricPoint* point) {
  std::vector<uint8_t> pixels(16 * 8);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 37 + 100 * x)) % 256;
  RETURN_IF_ERROR(data::WritePng(run_dir + "/grid.png", 16, 8, 1, pixels.data()));
  ASSIGN_OR_RETURN(std::string png, ReadFile(run_dir + "/grid.png"));
  point->set_image_grid_png(png);
  data::Audio audio;
  audio.sample_rate = 8000;
  for (int i = 0; i < 3200; ++i) audio.samples.push_back(0.3f * std::sin(i * (0.2 + 0.1 * x)));
  RETURN_IF_ERROR(data::WriteWavFile(run_dir + "/speech.wav", audio));
  ASSIGN_OR_RETURN(std::string wav, ReadFile(run_dir + "/speech.wav"));
  (*point->mutable_speech_wav())["7"] = wav;
  return absl::OkStatus();
}

absl::Status RunEvaluator(WorkerClient* client, const std::string& run_dir) {
  int64_t finished = -1;
  for (;;) {
    if (client->stop_requested()) return absl::OkStatus();
    ASSIGN_OR_RETURN(v1::AwaitCheckpointResponse next,
                     client->AwaitCheckpoint(finished, absl::Seconds(2)));
    if (next.job_done()) return absl::OkStatus();
    if (!next.has_checkpoint()) continue;
    const v1::CheckpointInfo& checkpoint = next.checkpoint();
    const std::string dir = absl::StrCat(run_dir, "/ckpt-", checkpoint.step());
    RETURN_IF_ERROR(client->DownloadCheckpoint(checkpoint, dir));
    int64_t step = 0;
    double x = 0;
    RETURN_IF_ERROR(ReadState(dir, 0, &step, &x));
    for (const v1::CheckpointFile& file : checkpoint.files()) {
      ASSIGN_OR_RETURN(std::string sha, Sha256File(dir + "/" + file.path()));
      RETURN_IF_ERROR(AppendLine(run_dir + "/downloads.txt",
                                 absl::StrCat(checkpoint.step(), " ", file.path(), " ", sha)));
    }
    v1::MetricPoint point;
    point.set_kind("eval");
    point.set_step(checkpoint.step());
    point.set_flops(checkpoint.flops());
    point.set_checkpoint_step(checkpoint.step());
    for (const auto& [name, value] : Losses(x)) (*point.mutable_losses())[name] = value + 0.2;
    (*point.mutable_scalars())["digit_accuracy"] = 1.0 - 0.1 * x;
    RETURN_IF_ERROR(AddSamples(run_dir, x, &point));
    client->ReportMetrics({point});
    std::filesystem::remove_all(dir);
    finished = checkpoint.step();
  }
}

absl::Status Run() {
  ASSIGN_OR_RETURN(WorkerClientOptions options, WorkerOptionsFromEnv());
  if (absl::GetFlag(FLAGS_rank) != options.ref.rank() ||
      absl::GetFlag(FLAGS_coordinator) != options.connection.address) {
    return absl::InvalidArgumentError("flags and environment disagree");
  }
  ASSIGN_OR_RETURN(std::string spec_text, ReadFile(absl::GetFlag(FLAGS_job_spec)));
  ASSIGN_OR_RETURN(v1::JobSpec spec_file, ParseJobSpec(spec_text, absl::GetFlag(FLAGS_job_spec)));
  const auto behaviour = LoadBehaviour(spec_file.dataset_dir());
  options.retry_for = absl::Milliseconds(Int(behaviour, "retry_for_ms", 20000));
  ASSIGN_OR_RETURN(std::unique_ptr<WorkerClient> client, WorkerClient::Connect(options));
  absl::StatusOr<v1::RegisterResponse> registered = client->Register();
  if (!registered.ok()) return registered.status();
  if (!google::protobuf::util::MessageDifferencer::Equals(registered->spec(), spec_file)) {
    return absl::InternalError("the spec file differs from the registered spec");
  }
  const std::string run_dir = absl::GetFlag(FLAGS_run_dir);
  absl::Status status = options.ref.role() == v1::ROLE_TRAINER
                            ? RunTrainer(client.get(), *registered, behaviour, run_dir)
                            : RunEvaluator(client.get(), run_dir);
  if (client->stop_requested()) return absl::OkStatus();
  absl::Status done = client->Done(status.ok(), status.ToString());
  return status.ok() ? done : status;
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status status = modamba::Run();
  if (!status.ok()) {
    std::cerr << "fake_worker: " << status << std::endl;
    return 1;
  }
  std::cerr << "fake_worker: done" << std::endl;
  return 0;
}
