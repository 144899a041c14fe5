// modamba-trainer: one trainer rank.
//
//   modamba-trainer --config=TRAIN.textproto [--metrics_out=FILE]
//
// The group comes from the environment the launcher (trainer/launch) or the
// coordinator sets: MODAMBA_RANK, MODAMBA_WORLD_SIZE and MODAMBA_STORE (a
// rendezvous store address); without them the rank trains alone.
// --metrics_out appends one JSON line per step (rank 0 only).
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "core/status_macros.h"
#include "kernels/cuda_backend.h"
#include "kernels/cuda_context.h"
#include "trainer/gloo_collectives.h"
#include "trainer/kv_store.h"
#include "trainer/nccl_collectives.h"
#include "trainer/train_loop.h"

ABSL_FLAG(std::string, config, "", "TrainConfig textproto");
ABSL_FLAG(std::string, device, "cpu", "cpu (Gloo between ranks) or gpu (NCCL; one GPU per rank)");
ABSL_FLAG(std::string, metrics_out, "", "JSON lines of per-step metrics (rank 0)");
ABSL_FLAG(int, stop_after, 0, "stop after this step (checkpointing first)");
ABSL_FLAG(int, peer_timeout_s, 30, "seconds a collective waits for a peer before naming it lost");
ABSL_FLAG(std::string, hostname, "127.0.0.1", "address other ranks reach this one at");
ABSL_FLAG(int, fault_kill_rank, -1, "fault injection: this rank SIGKILLs itself ...");
ABSL_FLAG(int, fault_kill_step, 0, "... after this step");

namespace modamba {
namespace {

absl::StatusOr<int> EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr) return fallback;
  int out;
  if (!absl::SimpleAtoi(v, &out)) return absl::InvalidArgumentError(absl::StrCat(name, "='", v, "' is not an integer"));
  return out;
}

nlohmann::json ToJson(const LossReport& r) {
  nlohmann::json j = {{"objective", r.objective()}};
  for (size_t m = 0; m < r.count.size(); ++m) {
    if (r.count[m] > 0) {
      j[ModalityLabel(m)] = r.mean(m);
      j[ModalityLabel(m) + "_tokens"] = r.count[m];
    }
  }
  if (r.diffusion_count > 0) j["diffusion_mse"] = r.diffusion_mse();
  return j;
}

absl::Status Run() {
  ASSIGN_OR_RETURN(v1::TrainConfig config, LoadTrainConfig(absl::GetFlag(FLAGS_config)));
  ASSIGN_OR_RETURN(int rank, EnvInt("MODAMBA_RANK", 0));
  ASSIGN_OR_RETURN(int world, EnvInt("MODAMBA_WORLD_SIZE", 1));
  if (world < 1 || rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(absl::StrCat("MODAMBA_RANK=", rank, " must lie in [0, MODAMBA_WORLD_SIZE=",
                                                   world, ")"));
  }
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu" && device != "gpu") {
    return absl::InvalidArgumentError(absl::StrCat("--device='", device, "': must be cpu or gpu"));
  }
  CollectivesOptions group;
  group.rank = rank;
  group.world_size = world;
  group.timeout = absl::Seconds(absl::GetFlag(FLAGS_peer_timeout_s));
  std::unique_ptr<KvStore> store;
  if (world > 1) {
    const char* address = std::getenv("MODAMBA_STORE");
    if (address == nullptr) return absl::InvalidArgumentError("MODAMBA_STORE: required with several ranks");
    ASSIGN_OR_RETURN(store, OpenKvStore(address));
  }
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Collectives> comm;
  if (device == "gpu") {
    const int gpus = CudaDeviceCount();
    if (gpus == 0) return absl::FailedPreconditionError("--device=gpu: no CUDA device is visible");
    ASSIGN_OR_RETURN(int local_rank, EnvInt("MODAMBA_LOCAL_RANK", rank));
    CudaBackendOptions options;
    options.device = local_rank % gpus;
    ASSIGN_OR_RETURN(backend, NewCudaBackend(options));
    if (world > 1) {
      NcclOptions nccl;
      nccl.group = group;
      nccl.device = options.device;
      nccl.compute_stream = cuda::ContextFor(options.device).stream();
      ASSIGN_OR_RETURN(comm, NewNcclCollectives(store.get(), nccl));
    }
  } else {
    backend = NewCpuBackend();
    if (world > 1) {
      GlooOptions gloo;
      gloo.group = group;
      gloo.hostname = absl::GetFlag(FLAGS_hostname);
      ASSIGN_OR_RETURN(comm, NewGlooCollectives(store.get(), gloo));
    }
  }
  std::ofstream metrics;
  if (rank == 0 && !absl::GetFlag(FLAGS_metrics_out).empty()) {
    metrics.open(absl::GetFlag(FLAGS_metrics_out), std::ios::app);
  }
  TrainContext ctx;
  ctx.backend = backend.get();
  ctx.comm = comm.get();
  ctx.log = &std::cout;
  ctx.stop_after = absl::GetFlag(FLAGS_stop_after);
  ctx.on_step = [&](const StepRecord& r) {
    if (rank == absl::GetFlag(FLAGS_fault_kill_rank) && r.step == absl::GetFlag(FLAGS_fault_kill_step)) {
      std::cout << "fault injection: rank " << rank << " kills itself after step " << r.step << std::endl;
      raise(SIGKILL);
    }
    if (!metrics.is_open()) return;
    nlohmann::json j = {{"step", r.step}, {"loss", ToJson(r.loss)}, {"lr", r.lr},
                        {"grad_norm", r.grad_norm}, {"tokens_per_second", r.tokens_per_second},
                        {"flops", r.flops}};
    if (r.evaluated) j["val"] = ToJson(r.val);
    metrics << j.dump() << std::endl;
  };
  return Train(config, ctx).status();
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status status = modamba::Run();
  if (!status.ok()) {
    std::cerr << "modamba-trainer: " << status.message() << std::endl;
    return 1;
  }
  return 0;
}
