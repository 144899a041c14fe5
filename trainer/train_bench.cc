// Training-step throughput on one GPU: the trainer's own step (forward +
// backward, then FSDP's clipping and AdamW over one rank's flat buckets) of
// the dense Mamba baseline and of Mixture-of-Mamba (3 modalities, every
// projection routed, contiguous modality spans as packed documents give), at
// the shapes of the anchor table. Prints tokens/s, ms/step, MFU
// (6 x active matmul params x tokens / time / 989 TFLOP/s) and peak memory.
//
//   .bundle/run.sh train_bench --vocab=50280 --tie_embeddings=true
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "core/config.h"
#include "core/flops.h"
#include "core/model.h"
#include "glog/logging.h"
#include "kernels/cuda_backend.h"
#include "kernels/op_profile.h"
#include "trainer/fsdp.h"
#include "trainer/local_collectives.h"

ABSL_FLAG(int, vocab, 50280, "Vocabulary size.");
ABSL_FLAG(bool, tie_embeddings, true, "Share the embedding and the LM head.");
ABSL_FLAG(std::string, shapes, "24x768x8x2048,8x512x16x1024",
          "Comma-separated n_layer x d_model x batch x seq_len.");
ABSL_FLAG(std::string, models, "dense,mom", "Comma-separated: dense, mom.");
ABSL_FLAG(int, steps, 10, "Timed steps (after --warmup steps).");
ABSL_FLAG(int, warmup, 2, "Untimed steps first.");
ABSL_FLAG(bool, profile, false,
          "After each model's row, a table of GPU time per op (events around every op).");

namespace modamba {
namespace {

constexpr double kPeakFlops = 989e12;  // H100 SXM dense bf16

struct Shape4 {
  int n_layer, d_model, batch, seq_len;
};

// Packed documents: text runs, 49-token images, longer speech runs.
Batch MakeBatch(const v1::ModelConfig& c, const Shape4& s, std::mt19937* rng) {
  Batch b;
  b.batch = s.batch;
  b.seq_len = s.seq_len;
  const int64_t n = b.rows();
  const int m = c.n_modalities();
  std::uniform_int_distribution<int> text(20, 200), speech(50, 300), pick(0, m - 1);
  std::uniform_int_distribution<int> token(0, c.vocab_size() - 1);
  int64_t i = 0;
  while (i < n) {
    const int g = pick(*rng);
    const int len = g == 0 ? text(*rng) : g == 1 ? 49 : speech(*rng);
    for (int k = 0; k < len && i < n; ++k, ++i) {
      b.tokens.push_back(token(*rng));
      b.targets.push_back(token(*rng));
      b.modality.push_back(g);
      b.target_modality.push_back(g);
      b.doc_start.push_back(i % 700 == 0);
      b.loss_mask.push_back(1.f);
    }
  }
  return b;
}

void Run(const Shape4& s, bool mom) {
  v1::ModelConfig c;
  c.set_d_model(s.d_model);
  c.set_n_layer(s.n_layer);
  c.set_vocab_size(absl::GetFlag(FLAGS_vocab));
  c.set_tie_embeddings(absl::GetFlag(FLAGS_tie_embeddings));
  c.set_n_modalities(mom ? 3 : 1);
  c.set_route_in(mom);
  c.set_route_x(mom);
  c.set_route_dt(mom);
  c.set_route_out(mom);
  CHECK(ResolveModelConfig(&c, "train_bench").ok());

  auto backend = NewCudaBackend();
  CHECK(backend.ok()) << backend.status();
  Backend* be = backend->get();
  std::unique_ptr<ProfiledBackend> profiled;
  if (absl::GetFlag(FLAGS_profile)) {
    profiled = std::make_unique<ProfiledBackend>(be);
    be = profiled.get();
  }
  ResetCudaPeakMemory();
  auto model = MambaLM::Create(c, be, DType::kF32, 1);
  CHECK(model.ok()) << model.status();
  v1::OptimizerConfig o;
  o.set_lr(1e-4f);
  o.set_min_lr_ratio(0.1f);
  o.set_beta1(0.9f);
  o.set_beta2(0.95f);
  o.set_eps(1e-8f);
  o.set_weight_decay(0.1f);
  o.set_grad_clip(1.0f);
  std::unique_ptr<Collectives> one_rank = NewLocalCollectives(be);
  auto fsdp = Fsdp::Create((*model)->mutable_params(), one_rank.get(), o);
  CHECK(fsdp.ok()) << fsdp.status();
  (*model)->set_bucket_hooks(fsdp->get());
  std::mt19937 rng(7);
  const Batch batch = MakeBatch(c, s, &rng);

  const int warmup = absl::GetFlag(FLAGS_warmup), steps = absl::GetFlag(FLAGS_steps);
  std::vector<double> ms;
  double loss = 0;
  for (int step = 1; step <= warmup + steps; ++step) {
    be->Synchronize();
    const auto start = std::chrono::steady_clock::now();
    auto report = (*model)->ForwardBackward(batch);
    CHECK(report.ok()) << report.status();
    auto info = (*fsdp)->Step(step, warmup + steps);
    CHECK(info.ok()) << info.status();
    be->Synchronize();
    const double t =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (step > warmup) ms.push_back(t);
    if (profiled != nullptr) {
      profiled->Collect();
      if (step == warmup) profiled->Clear();
    }
    loss = report->objective();
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const double tokens = double(s.batch) * s.seq_len;
  const double mfu = 6.0 * ActiveMatmulParams(c) * tokens / (med * 1e-3) / kPeakFlops;
  const double peak_gib = GetCudaMemoryStats().peak_bytes / double(1 << 30);
  std::printf("| %s | %dL d%d, %dx%d | %.0f | %.1f | %.1f%% | %.1f | %.1f M | %.3f |\n",
              mom ? "MoM (3 modalities)" : "dense Mamba", s.n_layer, s.d_model, s.batch, s.seq_len,
              tokens / med * 1e3, med, 100 * mfu, peak_gib, ActiveMatmulParams(c) / 1e6, loss);
  if (profiled != nullptr) {
    double sum = 0;
    for (double t : ms) sum += t;
    std::printf("\n%s\n", profiled->Table(sum / steps, steps).c_str());
  }
  std::fflush(stdout);
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  google::InitGoogleLogging(argv[0]);
  if (modamba::CudaDeviceCount() == 0) {
    std::fprintf(stderr, "train_bench: no CUDA device\n");
    return 1;
  }
  std::printf(
      "## Training step, fp32 master weights, bf16 GEMM operands, vocab %d, %s embeddings\n\n",
      absl::GetFlag(FLAGS_vocab), absl::GetFlag(FLAGS_tie_embeddings) ? "tied" : "untied");
  std::printf(
      "| model | shape | tokens/s | ms/step | MFU | peak GiB | active matmul params | loss |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (absl::string_view shape : absl::StrSplit(absl::GetFlag(FLAGS_shapes), ',')) {
    std::vector<std::string> f = absl::StrSplit(shape, 'x');
    CHECK_EQ(f.size(), 4u) << "--shapes: expected LxDxBxT, got " << shape;
    modamba::Shape4 s{std::stoi(f[0]), std::stoi(f[1]), std::stoi(f[2]), std::stoi(f[3])};
    for (absl::string_view m : absl::StrSplit(absl::GetFlag(FLAGS_models), ',')) {
      CHECK(m == "dense" || m == "mom") << "--models: unknown model " << m;
      modamba::Run(s, m == "mom");
    }
  }
  return 0;
}
