// CPU training throughput of the MoM language model: forward + backward +
// AdamW per step, median of timed steps, printed as a table.
//
//   bazel run -c opt //core:model_bench -- --d_model=128 --n_layer=4 --seq_len=256
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "core/config.h"
#include "core/flops.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "core/rng.h"

ABSL_FLAG(int, d_model, 128, "model width");
ABSL_FLAG(int, n_layer, 4, "layers");
ABSL_FLAG(int, batch, 4, "sequences per step");
ABSL_FLAG(int, seq_len, 256, "tokens per sequence");
ABSL_FLAG(int, vocab, 256, "vocabulary size");
ABSL_FLAG(int, steps, 5, "timed steps (after one warm-up step)");

namespace modamba {
namespace {

void Run(bool routed) {
  v1::ModelConfig c;
  c.set_d_model(absl::GetFlag(FLAGS_d_model));
  c.set_n_layer(absl::GetFlag(FLAGS_n_layer));
  c.set_vocab_size(absl::GetFlag(FLAGS_vocab));
  c.set_n_modalities(routed ? 3 : 1);
  c.set_route_in(routed);
  c.set_route_x(routed);
  c.set_route_dt(routed);
  c.set_route_out(routed);
  if (!ResolveModelConfig(&c, "bench").ok()) return;
  auto be = NewCpuBackend();
  auto model = LanguageModel::Create(c, be.get(), DType::kF32, 1).value();
  v1::OptimizerConfig opt;
  opt.set_lr(1e-3);
  opt.set_beta1(0.9);
  opt.set_beta2(0.95);
  opt.set_eps(1e-8);
  AdamWOptimizer optimizer(opt, model->mutable_params());

  Batch b;
  b.batch = absl::GetFlag(FLAGS_batch);
  b.seq_len = absl::GetFlag(FLAGS_seq_len);
  Rng rng(3);
  for (int64_t i = 0; i < b.rows(); ++i) {
    // Contiguous modality spans of 64 tokens, as packed documents give.
    int m = routed ? static_cast<int>((i / 64) % 3) : 0;
    b.tokens.push_back(static_cast<int32_t>(rng.Below(c.vocab_size())));
    b.targets.push_back(static_cast<int32_t>(rng.Below(c.vocab_size())));
    b.modality.push_back(m);
    b.target_modality.push_back(m);
    b.doc_start.push_back(0);
    b.loss_mask.push_back(1);
  }
  std::vector<double> ms;
  for (int s = 0; s <= absl::GetFlag(FLAGS_steps); ++s) {
    auto start = std::chrono::steady_clock::now();
    if (!model->ForwardBackward(b).ok()) return;
    optimizer.Step(s + 1, 100);
    double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (s > 0) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const double tokens = b.rows();
  std::printf("| %-5s | %7d | %7d | %8d | %10.1f | %10.0f | %8.2f |\n", routed ? "MoM" : "dense",
              c.d_model(), c.n_layer(), b.seq_len, med, tokens / med * 1e3,
              TrainingFlopsPerToken(c, b.seq_len) * tokens / med * 1e-6);
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::printf("| model | d_model | n_layer | seq_len | ms/step    | tokens/s   | GFLOP/s  |\n");
  std::printf("|-------|---------|---------|----------|------------|------------|----------|\n");
  modamba::Run(false);
  modamba::Run(true);
  return 0;
}
