// modamba-trainer: one trainer rank.
//
// Standalone (trainer/launch, or alone):
//   modamba-trainer --config=TRAIN.textproto [--device=cpu|gpu] [--metrics_out=FILE]
// takes its group from MODAMBA_RANK, MODAMBA_WORLD_SIZE and MODAMBA_STORE (a
// rendezvous store address; without them it trains alone) and checkpoints
// into the config's checkpoint_dir.
//
// Under the coordinator (it passes --job_spec; coordinator/README.md has the
// protocol): registers, resumes from the checkpoint the coordinator names,
// meets its group through the coordinator's store, reports metrics (rank 0)
// and uploads its own checkpoint files, and stops when asked.
#include <cerrno>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "kernels/cuda_backend.h"
#include "kernels/cuda_context.h"
#include "rendezvous/open_store.h"
#include "trainer/gloo_collectives.h"
#include "trainer/nccl_collectives.h"
#include "trainer/process_groups.h"
#include "trainer/run_log.h"
#include "trainer/train_loop.h"
#include "worker/worker_client.h"

ABSL_FLAG(std::string, config, "", "TrainConfig textproto (standalone)");
ABSL_FLAG(std::string, device, "cpu", "cpu (Gloo between ranks) or gpu (NCCL; one GPU per rank)");
ABSL_FLAG(std::string, metrics_out, "", "JSON lines of per-step metrics (rank 0)");
ABSL_FLAG(int, stop_after, 0, "stop after this step (checkpointing first)");
ABSL_FLAG(int, peer_timeout_s, 30, "seconds a collective waits for a peer before naming it lost");
ABSL_FLAG(std::string, hostname, "127.0.0.1", "address other ranks reach this one at");
ABSL_FLAG(int, fault_kill_rank, -1, "fault injection: this rank SIGKILLs itself ...");
ABSL_FLAG(int, fault_kill_step, 0, "... after this step");
ABSL_FLAG(int, fault_kill_prefetch, 0, "... or just after issuing this many prefetches (1-based)");
// Set by the coordinator (its environment carries the same).
ABSL_FLAG(std::string, job_spec, "", "resolved JobSpec textproto (under the coordinator)");
ABSL_FLAG(int, rank, -1, "this rank (under the coordinator)");
ABSL_FLAG(int, world_size, -1, "trainer ranks (under the coordinator)");
ABSL_FLAG(std::string, coordinator, "", "coordinator address (also MODAMBA_COORDINATOR)");
ABSL_FLAG(std::string, token_file, "", "bearer token file (also MODAMBA_TOKEN_FILE)");
ABSL_FLAG(std::string, run_dir, "", "this worker's directory");

namespace modamba {
namespace {

absl::StatusOr<int> EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr) return fallback;
  int out;
  if (!absl::SimpleAtoi(v, &out)) {
    return absl::InvalidArgumentError(absl::StrCat(name, "='", v, "' is not an integer"));
  }
  return out;
}

// This rank's GPU: MODAMBA_LOCAL_RANK (else the rank) modulo the visible GPUs.
int CudaDeviceIndex(int rank) {
  auto local = EnvInt("MODAMBA_LOCAL_RANK", rank);
  const int gpus = std::max(1, CudaDeviceCount());
  return (local.ok() ? *local : rank) % gpus;
}

// The group's members, built for the chosen device.
struct Group {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Collectives> comm;
  // Connects a subgroup of the ranks (hybrid sharding), on the same store.
  CommFactory new_comm;
};

absl::StatusOr<Group> MakeGroup(const std::string& device, int rank, int world, KvStore* store) {
  if (world < 1 || rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " must lie in [0, world_size = ", world, ")"));
  }
  if (world > 1 && store == nullptr) {
    return absl::InvalidArgumentError("MODAMBA_STORE: required with several ranks");
  }
  CollectivesOptions group;
  group.rank = rank;
  group.world_size = world;
  group.timeout = absl::Seconds(absl::GetFlag(FLAGS_peer_timeout_s));
  Group g;
  const int gpu = device == "gpu" ? CudaDeviceIndex(rank) : 0;
  ASSIGN_OR_RETURN(g.backend, NewBackend(device, gpu));
  auto connect = [device, gpu, store](const CollectivesOptions& options)
      -> absl::StatusOr<std::unique_ptr<Collectives>> {
    if (device == "gpu") {
      NcclOptions nccl;
      nccl.group = options;
      nccl.device = gpu;
      nccl.compute_stream = cuda::ContextFor(gpu).stream();
      return NewNcclCollectives(store, nccl);
    }
    GlooOptions gloo;
    gloo.group = options;
    gloo.hostname = absl::GetFlag(FLAGS_hostname);
    return NewGlooCollectives(store, gloo);
  };
  if (world > 1) {
    ASSIGN_OR_RETURN(g.comm, connect(group));
  }
  // A subgroup keeps its keys under the group's prefix.
  g.new_comm = [connect, group](const CollectivesOptions& sub) {
    CollectivesOptions options = sub;
    options.prefix = absl::StrCat(group.prefix, "/", sub.prefix);
    options.timeout = group.timeout;
    options.job_prefix = group.prefix;
    options.job_world_size = group.world_size;
    return connect(options);
  };
  return g;
}

// A metrics line that cannot be written is reported, but does not stop training.
void WarnIfFailed(const absl::Status& status) {
  if (!status.ok()) std::cerr << "modamba-trainer: " << status.message() << std::endl;
}

// Fault injection for the tests: a real, abrupt death.
void MaybeKillSelf(int rank, int64_t step) {
  if (rank == absl::GetFlag(FLAGS_fault_kill_rank) && step == absl::GetFlag(FLAGS_fault_kill_step)) {
    std::cout << "fault injection: rank " << rank << " kills itself after step " << step << std::endl;
    raise(SIGKILL);
  }
}

// Fault injection: rank --fault_kill_rank dies just after issuing its
// --fault_kill_prefetch-th prefetch, while that all-gather is in flight.
std::function<void(int)> PrefetchFault(int rank) {
  if (rank != absl::GetFlag(FLAGS_fault_kill_rank) || absl::GetFlag(FLAGS_fault_kill_prefetch) <= 0) {
    return nullptr;
  }
  return [rank, count = 0](int group) mutable {
    if (++count < absl::GetFlag(FLAGS_fault_kill_prefetch)) return;
    std::cout << "fault injection: rank " << rank << " kills itself with the prefetch of bucket "
              << group << " in flight" << std::endl;
    raise(SIGKILL);
  };
}

absl::Status RunStandalone() {
  ASSIGN_OR_RETURN(v1::TrainConfig config, LoadTrainConfig(absl::GetFlag(FLAGS_config)));
  ASSIGN_OR_RETURN(int rank, EnvInt("MODAMBA_RANK", 0));
  ASSIGN_OR_RETURN(int world, EnvInt("MODAMBA_WORLD_SIZE", 1));
  std::unique_ptr<KvStore> store;
  if (const char* address = std::getenv("MODAMBA_STORE"); address != nullptr && world > 1) {
    ASSIGN_OR_RETURN(store, OpenKvStore(address));
  }
  ASSIGN_OR_RETURN(Group g, MakeGroup(absl::GetFlag(FLAGS_device), rank, world, store.get()));
  std::unique_ptr<MetricsFile> metrics;
  if (rank == 0 && !absl::GetFlag(FLAGS_metrics_out).empty()) {
    ASSIGN_OR_RETURN(metrics, MetricsFile::Open(absl::GetFlag(FLAGS_metrics_out)));
  }
  TrainContext ctx;
  ctx.backend = g.backend.get();
  ctx.comm = g.comm.get();
  ctx.new_comm = g.new_comm;
  ctx.on_prefetch = PrefetchFault(rank);
  ctx.log = &std::cout;
  ctx.stop_after = absl::GetFlag(FLAGS_stop_after);
  ctx.on_step = [&](const StepRecord& r) {
    MaybeKillSelf(rank, r.step);
    if (metrics) WarnIfFailed(metrics->Append(r));
  };
  absl::Status status = Train(config, ctx).status();
  if (absl::GetFlag(FLAGS_device) == "gpu") {
    std::cout << absl::StrFormat("rank %d: peak GPU memory %.2f GiB\n", rank,
                                 GetCudaMemoryStats(CudaDeviceIndex(rank)).peak_bytes / 1073741824.0);
  }
  return status;
}

absl::Status RunUnderCoordinator() {
  ASSIGN_OR_RETURN(WorkerClientOptions options, WorkerOptionsFromEnv());
  ASSIGN_OR_RETURN(std::unique_ptr<WorkerClient> client, WorkerClient::Connect(options));
  ASSIGN_OR_RETURN(v1::RegisterResponse reg, client->Register());
  const v1::JobSpec& spec = reg.spec();
  const int rank = options.ref.rank(), world = reg.world_size();
  const std::string run_dir = absl::GetFlag(FLAGS_run_dir);
  if (run_dir.empty()) return absl::InvalidArgumentError("--run_dir: required under the coordinator");
  v1::TrainConfig config = spec.train();
  config.set_dataset_dir(spec.dataset_dir());
  // The ranks of a job share one host (the coordinator's local launcher), so
  // they write checkpoints into one directory beside their own.
  config.set_checkpoint_dir(run_dir + "/../trainer-checkpoints");
  RETURN_IF_ERROR(ResolveTrainConfig(&config, "job spec"));
  // The checkpoint upload below sends one shard per rank; under hybrid
  // sharding only the first group writes shards, one per rank of a group.
  if (const int g = config.fsdp().shard_group_size(); g != 0 && g != world) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job spec: fsdp.shard_group_size ", g, " (hybrid sharding) runs under launch, "
        "not yet under the coordinator"));
  }
  // Rank 0 keeps the job's run directory readable by `modamba compare`
  // (trainer/run_log.h); every generation appends to the same metrics.
  std::unique_ptr<MetricsFile> metrics;
  if (rank == 0) {
    RETURN_IF_ERROR(WriteRunConfig(run_dir + "/..", config));
    ASSIGN_OR_RETURN(metrics, MetricsFile::Open(run_dir + "/../metrics.jsonl"));
  }

  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Group g, MakeGroup(spec.device(), rank, world, client->kv()));
    TrainContext ctx;
    ctx.backend = g.backend.get();
    ctx.comm = g.comm.get();
    ctx.new_comm = g.new_comm;
    ctx.log = &std::cout;
    // Only what the coordinator names: its view of the checkpoints is the truth.
    ctx.resume_local = false;
    ctx.keep_checkpoints = spec.keep_last_checkpoints();
    if (reg.has_resume_checkpoint()) {
      const v1::CheckpointInfo& resume = reg.resume_checkpoint();
      ctx.resume_from = absl::StrFormat("%s/resume/step-%08d", run_dir, resume.step());
      ctx.remove_resume_copy = true;
      RETURN_IF_ERROR(client->DownloadCheckpoint(resume, ctx.resume_from));
    }
    ctx.should_stop = [&] { return client->stop_requested(); };
    ctx.on_step = [&](const StepRecord& r) {
      MaybeKillSelf(rank, r.step);
      client->SetStep(r.step);
      if (rank != 0) return;
      WarnIfFailed(metrics->Append(r));
      std::vector<v1::MetricPoint> points(1);
      points[0].set_kind("train");
      points[0].set_step(r.step);
      points[0].set_flops(r.flops);
      for (const auto& [k, v] : LossMetrics(r.loss)) (*points[0].mutable_losses())[k] = v;
      for (const auto& [k, v] : StepScalars(r)) (*points[0].mutable_scalars())[k] = v;
      if (r.evaluated) {
        v1::MetricPoint& val = points.emplace_back();
        val.set_kind("val");
        val.set_step(r.step);
        val.set_flops(r.flops);
        for (const auto& [k, v] : LossMetrics(r.val)) (*val.mutable_losses())[k] = v;
        (*val.mutable_scalars())["objective"] = r.val.objective();
      }
      client->ReportMetrics(std::move(points));
    };
    ctx.on_checkpoint = [&](const std::string& dir, int64_t step) -> absl::Status {
      // Upload only this rank's files: its shard, and rank 0's layout and manifest.
      ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(dir));
      const std::string mine = absl::StrFormat("%s/upload/step-%08d", run_dir, step);
      RETURN_IF_ERROR(MakeDirs(mine));
      std::vector<std::string> names = {
          absl::StrFormat("shard-%05d-of-%05d.safetensors", rank, world)};
      if (rank == 0) names.insert(names.end(), {"layout.json", "manifest.json"});
      for (const std::string& name : names) {
        const std::string link = mine + "/" + name;
        ::unlink(link.c_str());
        if (::link((dir + "/" + name).c_str(), link.c_str()) != 0) {
          return IoError(absl::StrCat(link, ": cannot link the checkpoint file"), errno);
        }
      }
      absl::Status uploaded = client->UploadCheckpoint(step, manifest.flops(), mine).status();
      for (const std::string& name : names) ::unlink((mine + "/" + name).c_str());
      ::rmdir(mine.c_str());
      return uploaded;
    };
    return Train(config, ctx).status();
  }();
  if (client->stop_requested()) return absl::OkStatus();  // told to stop: not a failure
  absl::Status done = client->Done(status.ok(), status.ok() ? "" : std::string(status.message()),
                                   IsNonfiniteError(status));
  return status.ok() ? done : status;
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status status = absl::GetFlag(FLAGS_job_spec).empty() ? modamba::RunStandalone()
                                                              : modamba::RunUnderCoordinator();
  if (!status.ok()) {
    std::cerr << "modamba-trainer: " << status.message() << std::endl;
    return 1;
  }
  return 0;
}
