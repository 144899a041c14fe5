// The FSDP cost model's table (trainer/fsdp_cost.h) for a model and a GPU
// count: predicted exposed communication, step time and strong scaling for
// every layers_per_bucket, the best of them, and the floor compute alone
// sets. The defaults are the 80M tri-modal Mixture-of-Mamba on 4 H200s, with
// the measurements of docs/results ("FSDP scaling on 8 GPUs"): one GPU's step
// 65.0 ms on 16 sequences and 31.4 ms on 4 (a rank's share on 4 GPUs); the
// bus bandwidth from that table's 4-GPU "comm per step" (8.9 ms for 36
// layer collectives of 79.6 MB, 74 MiB, and 3 of the head's).
//
//   bazel-bin/trainer/fsdp_plan --config=tools/experiments/scaling/mom-80m.textproto
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "core/config.h"
#include "core/flops.h"
#include "trainer/fsdp_cost.h"

ABSL_FLAG(std::string, config, "tools/experiments/scaling/mom-80m.textproto",
          "TrainConfig whose model is sharded.");
ABSL_FLAG(int, ranks, 4, "GPUs sharing the buckets.");
ABSL_FLAG(double, busbw_gbs, 240, "Measured all-gather / reduce-scatter bus bandwidth, GB/s.");
ABSL_FLAG(double, latency_us, 30, "Fixed cost of one collective, us (assumed, not measured).");
ABSL_FLAG(double, compute_ms, 31.4, "One rank's step without communication, on its share, ms.");
ABSL_FLAG(double, layer_share, 0.85,
          "Fraction of that compute in the layers (assumed); the backward takes 2/3 of it.");
ABSL_FLAG(double, single_gpu_ms, 65.0, "One GPU's step on the whole batch, ms.");

namespace modamba {
namespace {

int Run() {
  auto config = LoadTrainConfig(absl::GetFlag(FLAGS_config));
  if (!config.ok()) {
    std::fprintf(stderr, "fsdp_plan: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  const v1::ModelConfig& model = config->model();
  v1::ModelConfig no_layers = model;
  no_layers.set_n_layer(0);
  constexpr double kBytes = 4;  // fp32 master weights are what FSDP moves
  FsdpCostInputs in;
  in.ranks = absl::GetFlag(FLAGS_ranks);
  in.layers = model.n_layer();
  in.head_bytes = kBytes * TotalParams(no_layers);
  in.layer_bytes = kBytes * (TotalParams(model) - TotalParams(no_layers)) / model.n_layer();
  in.bus_bandwidth = absl::GetFlag(FLAGS_busbw_gbs) * 1e9;
  in.latency_s = absl::GetFlag(FLAGS_latency_us) * 1e-6;
  const double compute = absl::GetFlag(FLAGS_compute_ms) * 1e-3;
  const double per_layer = compute * absl::GetFlag(FLAGS_layer_share) / model.n_layer();
  in.layer_forward_s = per_layer / 3;
  in.layer_backward_s = per_layer * 2 / 3;
  in.other_compute_s = compute * (1 - absl::GetFlag(FLAGS_layer_share));
  in.single_gpu_step_s = absl::GetFlag(FLAGS_single_gpu_ms) * 1e-3;
  auto plan = PlanBuckets(in);
  if (!plan.ok()) {
    std::fprintf(stderr, "fsdp_plan: %s\n", std::string(plan.status().message()).c_str());
    return 1;
  }
  std::printf("%d layers of %.1f MB, head bucket %.1f MB; %d ranks at %.0f GB/s bus bandwidth, "
              "%.0f us per collective\n",
              in.layers, in.layer_bytes / 1e6, in.head_bytes / 1e6, in.ranks,
              in.bus_bandwidth / 1e9, in.latency_s * 1e6);
  std::printf("per-rank compute %.1f ms (a layer: %.2f ms forward, %.2f ms backward); one GPU's "
              "step %.1f ms\n\n",
              compute * 1e3, in.layer_forward_s * 1e3, in.layer_backward_s * 1e3,
              in.single_gpu_step_s * 1e3);
  std::printf("| layers per bucket | bucket MB | collective ms | exposed ms | step ms | strong scaling |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const FsdpCostPoint& p : plan->points) {
    std::printf("| %d%s | %.1f | %.3f | %.2f | %.2f | %.1f%% |\n", p.layers_per_bucket,
                &p == &plan->chosen() ? " (best)" : "", p.layers_per_bucket * in.layer_bytes / 1e6,
                p.collective_s * 1e3, p.exposed_s * 1e3, p.step_s * 1e3, 100 * p.efficiency);
  }
  const FsdpCostPoint& best = plan->chosen();
  std::printf("\npredicted best: layers_per_bucket %d, step %.2f ms, strong scaling %.1f%%; "
              "compute alone (no communication) caps it at %.1f%%\n",
              best.layers_per_bucket, best.step_s * 1e3, 100 * best.efficiency,
              100 * in.single_gpu_step_s / (in.ranks * best.compute_s));
  return 0;
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return modamba::Run();
}
