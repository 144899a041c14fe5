// Training-step throughput on one GPU: the trainer's own step (forward +
// backward, then FSDP's clipping and AdamW over one rank's flat buckets) of
// the dense Mamba baseline and of Mixture-of-Mamba (3 modalities, every
// projection routed, contiguous modality spans as packed documents give), at
// the shapes of the anchor table; and of the dense Transformer and
// Mixture-of-Transformers (heads of 64) at the shapes asked for. Prints tokens/s, ms/step, MFU
// (6 x active matmul params x tokens / time / 989 TFLOP/s) and peak memory.
// Under `launch --nproc=N` each rank takes a GPU and the batch (per rank),
// FSDP shards over NCCL, and a second table gives every rank's step profile
// (median compute, exposed communication and idle ms; trainer/fsdp.h).
//
//   .bundle/run.sh train_bench --vocab=50280 --tie_embeddings=true
//   launch --nproc=4 -- train_bench --shapes=12x1024x4x1024 --models=mom --overlap=false
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/config.h"
#include "core/flops.h"
#include "core/model.h"
#include "glog/logging.h"
#include "rendezvous/open_store.h"
#include "kernels/cuda_backend.h"
#include "kernels/cuda_context.h"
#include "kernels/op_profile.h"
#include "trainer/fsdp.h"
#include "trainer/local_collectives.h"
#include "trainer/nccl_collectives.h"

ABSL_FLAG(int, vocab, 50280, "Vocabulary size.");
ABSL_FLAG(bool, tie_embeddings, true, "Share the embedding and the LM head.");
ABSL_FLAG(std::string, shapes, "24x768x8x2048,8x512x16x1024",
          "Comma-separated n_layer x d_model x batch x seq_len.");
ABSL_FLAG(std::string, models, "dense,mom",
          "Comma-separated: dense, mom (Mamba); transformer, mot (Transformer).");
ABSL_FLAG(int, steps, 10, "Timed steps (after --warmup steps).");
ABSL_FLAG(int, warmup, 2, "Untimed steps first.");
ABSL_FLAG(bool, profile, false,
          "After each model's row, a table of GPU time per op (events around every op).");
ABSL_FLAG(bool, overlap, true, "FSDP's overlapped schedule (false: serial).");
ABSL_FLAG(bool, recompute, false, "Recompute each layer's activations in the backward.");
ABSL_FLAG(int, layers_per_bucket, 1, "Layers per FSDP communication bucket.");

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

// This rank's place in the group, from the launcher's environment.
struct Group {
  int rank = 0, world = 1, gpu = 0;
  std::unique_ptr<KvStore> store;
};

Group FromEnv() {
  Group g;
  auto env = [](const char* name, int otherwise) {
    const char* v = std::getenv(name);
    int n = otherwise;
    CHECK(v == nullptr || absl::SimpleAtoi(v, &n)) << name << "=" << v;
    return n;
  };
  g.rank = env("MODAMBA_RANK", 0);
  g.world = env("MODAMBA_WORLD_SIZE", 1);
  g.gpu = env("MODAMBA_LOCAL_RANK", g.rank) % modamba::CudaDeviceCount();
  if (g.world > 1) {
    auto store = OpenKvStore(std::getenv("MODAMBA_STORE"));
    CHECK(store.ok()) << "MODAMBA_STORE: " << store.status();
    g.store = std::move(*store);
  }
  return g;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// `model`: dense, mom, transformer or mot.
void Run(const Shape4& s, const std::string& model_kind, Group& group) {
  const bool transformer = model_kind == "transformer" || model_kind == "mot";
  const bool mom = model_kind == "mom" || model_kind == "mot";  // routed, 3 modalities
  v1::ModelConfig c;
  c.set_d_model(s.d_model);
  c.set_n_layer(s.n_layer);
  c.set_vocab_size(absl::GetFlag(FLAGS_vocab));
  c.set_tie_embeddings(absl::GetFlag(FLAGS_tie_embeddings));
  c.set_n_modalities(mom ? 3 : 1);
  if (transformer) {
    c.set_architecture(v1::ModelConfig::TRANSFORMER);
    c.set_n_head(s.d_model / 64);
    c.set_route_qkv(mom);
    c.set_route_attn_out(mom);
    c.set_route_ffn_in(mom);
    c.set_route_ffn_out(mom);
    c.set_route_norms(mom);
  } else {
    c.set_route_in(mom);
    c.set_route_x(mom);
    c.set_route_dt(mom);
    c.set_route_out(mom);
  }
  CHECK(ResolveModelConfig(&c, "train_bench").ok());

  CudaBackendOptions backend_options;
  backend_options.device = group.gpu;
  auto backend = NewCudaBackend(backend_options);
  CHECK(backend.ok()) << backend.status();
  Backend* be = backend->get();
  std::unique_ptr<ProfiledBackend> profiled;
  if (absl::GetFlag(FLAGS_profile)) {
    profiled = std::make_unique<ProfiledBackend>(be);
    be = profiled.get();
  }
  ResetCudaPeakMemory(group.gpu);
  auto model = LanguageModel::Create(c, be, DType::kF32, 1);
  CHECK(model.ok()) << model.status();
  v1::OptimizerConfig o;
  o.set_lr(1e-4f);
  o.set_min_lr_ratio(0.1f);
  o.set_beta1(0.9f);
  o.set_beta2(0.95f);
  o.set_eps(1e-8f);
  o.set_weight_decay(0.1f);
  o.set_grad_clip(1.0f);
  std::unique_ptr<Collectives> comm = NewLocalCollectives(be);
  if (group.world > 1) {
    NcclOptions nccl;
    nccl.group.rank = group.rank;
    nccl.group.world_size = group.world;
    nccl.group.prefix = absl::StrCat("train_bench/", s.n_layer, "x", s.d_model, "/", model_kind);
    nccl.device = group.gpu;
    nccl.compute_stream = cuda::ContextFor(group.gpu).stream();
    auto made = NewNcclCollectives(group.store.get(), nccl);
    CHECK(made.ok()) << made.status();
    comm = std::move(*made);
  }
  FsdpOptions fsdp_options;
  fsdp_options.overlap = absl::GetFlag(FLAGS_overlap);
  fsdp_options.layers_per_bucket = absl::GetFlag(FLAGS_layers_per_bucket);
  auto fsdp = Fsdp::Create((*model)->mutable_params(), comm.get(), o, fsdp_options);
  CHECK(fsdp.ok()) << fsdp.status();
  (*model)->set_bucket_hooks(fsdp->get());
  (*model)->set_recompute_activations(absl::GetFlag(FLAGS_recompute));
  std::mt19937 rng(7);
  const Batch batch = MakeBatch(c, s, &rng);

  const int warmup = absl::GetFlag(FLAGS_warmup), steps = absl::GetFlag(FLAGS_steps);
  std::vector<double> ms;
  // [rank][step]: compute, exposed communication, idle (ms).
  std::vector<std::vector<double>> compute(group.world), exposed(group.world), idle(group.world);
  double loss = 0;
  for (int step = 1; step <= warmup + steps; ++step) {
    be->Synchronize();
    const auto start = std::chrono::steady_clock::now();
    (*fsdp)->StartProfile();
    auto report = (*model)->ForwardBackward(batch);
    CHECK(report.ok()) << report.status();
    auto info = (*fsdp)->Step(step, warmup + steps);
    CHECK(info.ok()) << info.status();
    be->Synchronize();
    const double t =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    auto profile = (*fsdp)->EndProfile();
    CHECK(profile.ok()) << profile.status();
    if (step > warmup) {
      ms.push_back(t);
      for (int r = 0; r < group.world; ++r) {
        compute[r].push_back(1e3 * (*profile)[r].compute_s);
        exposed[r].push_back(1e3 * (*profile)[r].exposed_comm_s);
        idle[r].push_back(1e3 * (*profile)[r].idle_s);
      }
    }
    if (profiled != nullptr) {
      profiled->Collect();
      if (step == warmup) profiled->Clear();
    }
    loss = report->objective();
  }
  const double med = Median(ms);
  const double tokens = double(s.batch) * s.seq_len * group.world;
  const double mfu =
      6.0 * ActiveMatmulParams(c) * tokens / (med * 1e-3) / (kPeakFlops * group.world);
  const double peak_gib = GetCudaMemoryStats(group.gpu).peak_bytes / double(1 << 30);
  if (group.rank != 0) return;
  std::printf("| %s | %dL d%d, %dx%d | %.0f | %.1f | %.1f%% | %.1f | %.1f M | %.3f |\n",
              transformer ? (mom ? "MoT (3 modalities)" : "dense Transformer")
                          : (mom ? "MoM (3 modalities)" : "dense Mamba"),
              s.n_layer, s.d_model, s.batch, s.seq_len,
              tokens / med * 1e3, med, 100 * mfu, peak_gib, ActiveMatmulParams(c) / 1e6, loss);
  if (group.world > 1) {
    std::printf("\n| rank | compute ms | exposed comm ms | idle ms |\n|---|---|---|---|\n");
    for (int r = 0; r < group.world; ++r) {
      std::printf("| %d | %.2f | %.2f | %.2f |\n", r, Median(compute[r]), Median(exposed[r]),
                  Median(idle[r]));
    }
    std::printf("\n");
  }
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
  modamba::Group group = modamba::FromEnv();
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
      CHECK(m == "dense" || m == "mom" || m == "transformer" || m == "mot")
          << "--models: unknown model " << m;
      modamba::Run(s, std::string(m), group);
    }
  }
  return 0;
}
