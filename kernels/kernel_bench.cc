// Kernel benchmarks of the CUDA backend, printed as tables:
//   - the device's two ceilings (copy bandwidth, bf16 GEMM rate), measured;
//   - the selective scan, forward and forward + backward, against the bytes
//     floor (every input read once, every output written once);
//   - routed (per-modality) GEMMs against one dense GEMM of the same size;
//   - the glue ops of a training step.
// Times are medians over --reps runs after warm-up, taken with CUDA events.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/backend.h"
#include "glog/logging.h"
#include "kernels/cuda_backend.h"
#include "kernels/bench_util.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_context.h"
#include "kernels/kernels.h"

ABSL_FLAG(int64_t, batch, 8, "Sequences per batch.");
ABSL_FLAG(int64_t, seq_len, 2048, "Tokens per sequence.");
ABSL_FLAG(int64_t, d_model, 768, "Model width (d_inner = 2 d_model).");
ABSL_FLAG(int64_t, d_state, 16, "Scan state size.");
ABSL_FLAG(int64_t, vocab, 50280, "Vocabulary of the cross-entropy benchmark.");
ABSL_FLAG(int, modalities, 3, "Modality groups of the routed GEMMs.");
ABSL_FLAG(int, reps, 20, "Timed repetitions per measurement.");
ABSL_FLAG(std::string, sections, "scan,gemm,gemm_paths,glue",
          "Comma-separated tables to print after the device ceilings: scan, gemm, gemm_paths, "
          "glue.");

namespace modamba {
namespace {

using cuda::DeviceContext;

class Bench {
 public:
  Bench() : ctx_(cuda::ContextFor(0)), rng_(1234) {
    CudaBackendOptions options;
    gpu_ = NewCudaBackend(options).value();
  }

  // A device tensor of uniform values in mean +- scale (never zeros).
  Tensor Random(const Shape& shape, float scale = 1, float mean = 0) {
    Tensor dev = gpu_->Empty(DType::kF32, shape);
    cuda::FillUniform(dev.data<float>(), dev.numel(), rng_(), mean - scale, mean + scale,
                      ctx_.stream());
    return dev;
  }

  double Ms(const std::function<void()>& fn) {
    return cuda::TimeMs(ctx_, absl::GetFlag(FLAGS_reps), /*warmup=*/2, fn);
  }

  void Ceilings() {
    const int64_t bytes = int64_t(1) << 30;
    void *a, *b;
    CUDA_CHECK(cudaMalloc(&a, bytes));
    CUDA_CHECK(cudaMalloc(&b, bytes));
    CUDA_CHECK(cudaMemset(a, 1, bytes));
    double ms = Ms(
        [&] { CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, ctx_.stream())); });
    copy_gbs_ = 2.0 * bytes / ms / 1e6;
    CUDA_CHECK(cudaFree(a));
    CUDA_CHECK(cudaFree(b));

    const int64_t n = 8192;
    Tensor x = Random({n, n}), y = Random({n, n}), c = Random({n, n});
    cuda::Scratch s(ctx_.stream());
    auto* xb = s.Alloc<__nv_bfloat16>(n * n);
    auto* yb = s.Alloc<__nv_bfloat16>(n * n);
    cuda::ConvertToBf16(x.data<float>(), n * n, xb, ctx_.stream());
    cuda::ConvertToBf16(y.data<float>(), n * n, yb, ctx_.stream());
    ms = Ms([&] {
      cuda::GemmBf16(ctx_.cublas(), false, true, n, n, n, 1.f, xb, n, yb, n, 0.f, c.data<float>(),
                     n);
    });
    gemm_tflops_ = 2.0 * n * n * n / ms / 1e9;
    std::printf("\n## Device ceilings (measured)\n\n| what | value |\n|---|---|\n");
    std::printf("| device-to-device copy (read + write) | %.0f GB/s |\n", copy_gbs_);
    std::printf("| bf16 GEMM 8192^3, fp32 out (cuBLAS) | %.0f TFLOP/s |\n", gemm_tflops_);
  }

  void Scan() {
    const int64_t batch = absl::GetFlag(FLAGS_batch), len = absl::GetFlag(FLAGS_seq_len);
    const int64_t e = 2 * absl::GetFlag(FLAGS_d_model), s = absl::GetFlag(FLAGS_d_state);
    const int64_t n = batch * len, r = (absl::GetFlag(FLAGS_d_model) + 15) / 16;
    // Laid out as the model lays them out: z inside xz, B and C inside dBC.
    Tensor xz = Random({n, 2 * e}), u = Random({n, e}), dr = Random({n, e}, 1.f, -1.f);
    Tensor dbc = Random({n, r + 2 * s}), y = gpu_->Empty(DType::kF32, {n, e});
    Tensor dt_bias = Random({1, e}, 1.f, -4.f), a_log = Random({e, s}, 1.f, 1.5f);
    Tensor d = Random({e}, 0.1f, 1.f);
    std::vector<uint8_t> docs(n, 0);
    for (int64_t i = 0; i < n; i += 700) docs[i] = 1;  // packed documents
    Tensor doc_host(DType::kU8, {n});
    std::copy(docs.begin(), docs.end(), doc_host.data<uint8_t>());
    Tensor doc = gpu_->Empty(DType::kU8, {n});
    gpu_->Copy(doc_host.mat(), doc.mat());
    std::vector<int32_t> mod(n, 0);
    auto routing = gpu_->MakeRouting(mod.data(), n, 1);
    SeqLayout seq{batch, len, &doc};
    ScanInputs in;
    in.u = u.mat();
    in.delta_raw = dr.mat();
    in.b = dbc.mat().Cols(r, s);
    in.c = dbc.mat().Cols(r + s, s);
    in.z = xz.mat().Cols(e, e);
    in.dt_bias = &dt_bias;
    in.a_log = &a_log;
    in.d = &d;
    Tensor dy = Random({n, e}), du = gpu_->Empty(DType::kF32, {n, e});
    Tensor ddr = gpu_->Empty(DType::kF32, {n, e}), ddbc = gpu_->Empty(DType::kF32, {n, r + 2 * s});
    Tensor dxz = gpu_->Empty(DType::kF32, {n, 2 * e});
    Tensor ddt = Random({1, e}), da = Random({e, s}), dd = Random({e});
    ScanGrads g;
    g.du = du.mat();
    g.ddelta_raw = ddr.mat();
    g.db = ddbc.mat().Cols(r, s);
    g.dc = ddbc.mat().Cols(r + s, s);
    g.dz = dxz.mat().Cols(e, e);
    g.ddt_bias = &ddt;
    g.da_log = &da;
    g.dd = &dd;

    const double ne = double(n) * e * 4, ns = double(n) * s * 4;
    const double fwd_bytes = 3 * ne + 2 * ns + ne;               // u, delta, z, B, C -> y
    const double bwd_bytes = 4 * ne + 2 * ns + 3 * ne + 2 * ns;  // + dy -> du, ddelta, dz, dB, dC
    const double fwd_ms = Ms([&] { gpu_->ScanForward(seq, *routing, in, y.mat()); });
    const double bwd_ms = Ms([&] { gpu_->ScanBackward(seq, *routing, in, dy.mat(), g); });
    // As in training: the forward keeps its 32-step states for the backward.
    Tensor saved;
    ScanInputs kept = in;
    kept.saved = &saved;
    const double fwd_saving_ms = Ms([&] { gpu_->ScanForward(seq, *routing, kept, y.mat()); });
    const double bwd_saved_ms = Ms([&] { gpu_->ScanBackward(seq, *routing, kept, dy.mat(), g); });
    // As a MoM model runs it: rows grouped by modality, positions through a row map.
    const int groups = absl::GetFlag(FLAGS_modalities);
    const std::vector<int32_t> spans = Spans(n, groups), row_of = GroupedRowMap(spans);
    Tensor map = Upload(row_of);
    const SeqLayout mapped{batch, len, &doc, &map};
    const double fwd_mapped_ms = Ms([&] { gpu_->ScanForward(mapped, *routing, kept, y.mat()); });
    const double bwd_mapped_ms =
        Ms([&] { gpu_->ScanBackward(mapped, *routing, kept, dy.mat(), g); });
    // And with dt_bias routed by modality (a group lookup per position), in
    // sequence order and through the row map (a MoM layer).
    std::vector<int32_t> mod_of_row(n);
    for (int64_t i = 0; i < n; ++i) mod_of_row[row_of[i]] = spans[i];
    auto routed = gpu_->MakeRouting(spans.data(), n, groups);
    auto routed_rows = gpu_->MakeRouting(mod_of_row.data(), n, groups);
    Tensor dt_bias_g = Random({groups, e}, 1.f, -4.f), ddt_g = Random({groups, e});
    ScanInputs kept_g = kept;
    kept_g.dt_bias = &dt_bias_g;
    ScanGrads g_g = g;
    g_g.ddt_bias = &ddt_g;
    const double fwd_routed_ms = Ms([&] { gpu_->ScanForward(seq, *routed, kept_g, y.mat()); });
    const double bwd_routed_ms =
        Ms([&] { gpu_->ScanBackward(seq, *routed, kept_g, dy.mat(), g_g); });
    const double fwd_routed_mapped_ms =
        Ms([&] { gpu_->ScanForward(mapped, *routed_rows, kept_g, y.mat()); });
    const double bwd_routed_mapped_ms =
        Ms([&] { gpu_->ScanBackward(mapped, *routed_rows, kept_g, dy.mat(), g_g); });
    int dev = 0, sms = 0, clock_khz = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev));
    // One exp2 per (token, channel, state) on the 16 per clock per SM special-function units.
    const double exp_ms = double(n) * e * s / (16.0 * sms * clock_khz * 1e3) * 1e3;
    auto row = [&](const char* what, double ms, double bytes, double exps) {
      const double floor_ms = std::max(bytes / (copy_gbs_ * 1e6), exps * exp_ms);
      std::printf("| %s | %.3f | %.0f | %.0f | %.3f | %.2fx |\n", what, ms, bytes / 1e6,
                  bytes / ms / 1e6, floor_ms, ms / floor_ms);
    };
    std::printf("\n## Selective scan, batch %ld, d_inner %ld, L %ld, d_state %ld (fp32 I/O)\n\n",
                batch, e, len, s);
    std::printf("| pass | ms | MB moved (floor) | GB/s | floor ms | x floor |\n");
    std::printf("|---|---|---|---|---|---|\n");
    row("forward", fwd_ms, fwd_bytes, 1);
    row("backward", bwd_ms, bwd_bytes, 1);
    row("forward + backward", fwd_ms + bwd_ms, fwd_bytes + bwd_bytes, 2);
    row("forward keeping states", fwd_saving_ms, fwd_bytes, 1);
    row("backward from kept states", bwd_saved_ms, bwd_bytes, 1);
    row("forward + backward, states kept (training)", fwd_saving_ms + bwd_saved_ms,
        fwd_bytes + bwd_bytes, 2);
    row("the same, rows grouped by modality (row map)", fwd_mapped_ms + bwd_mapped_ms,
        fwd_bytes + bwd_bytes, 2);
    row("the same, dt_bias routed by modality, sequence order", fwd_routed_ms + bwd_routed_ms,
        fwd_bytes + bwd_bytes, 2);
    row("the same, dt_bias routed, row map (a MoM layer)",
        fwd_routed_mapped_ms + bwd_routed_mapped_ms, fwd_bytes + bwd_bytes, 2);
    std::printf(
        "\nexp2 floor per pass over all states: %.3f ms (%d SMs at %.2f GHz); "
        "mamba_ssm (bf16 I/O, H100): forward 0.446 ms, forward + backward 2.306 ms\n",
        exp_ms, sms, clock_khz / 1e6);

    // Both passes by time chunks per sequence (forced as the variables allow).
    std::printf("\n| time chunks | forward keeping states ms | backward from kept states ms |\n");
    std::printf("|---|---|---|\n");
    std::printf("| chosen | %.3f | %.3f |\n", fwd_saving_ms, bwd_saved_ms);
    for (int chunks : {1, 2, 3, 4, 5, 6, 8, 12, 16}) {
      const std::string v = std::to_string(chunks);
      setenv("MODAMBA_SCAN_FWD_CHUNKS", v.c_str(), 1);
      setenv("MODAMBA_SCAN_CHUNKS", v.c_str(), 1);
      const double f = Ms([&] { gpu_->ScanForward(seq, *routing, kept, y.mat()); });
      const double b = Ms([&] { gpu_->ScanBackward(seq, *routing, kept, dy.mat(), g); });
      std::printf("| %d | %.3f | %.3f |\n", chunks, f, b);
    }
    unsetenv("MODAMBA_SCAN_FWD_CHUNKS");
    unsetenv("MODAMBA_SCAN_CHUNKS");
  }

  // Contiguous modality spans as in packed multi-modal documents: text
  // runs, 49-token images, longer speech runs.
  std::vector<int32_t> Spans(int64_t n, int groups) {
    std::vector<int32_t> m(n);
    std::uniform_int_distribution<int> text(20, 200), speech(50, 300), pick(0, groups - 1);
    for (int64_t i = 0; i < n;) {
      const int g = pick(rng_);
      const int len = g == 0 ? text(rng_) : g == 1 ? 49 : speech(rng_);
      for (int k = 0; k < len && i < n; ++k) m[i++] = g;
    }
    return m;
  }

  // The row of each position when rows are grouped by modality (stable).
  static std::vector<int32_t> GroupedRowMap(const std::vector<int32_t>& modality) {
    std::vector<int32_t> order(modality.size()), row_of(modality.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return modality[a] < modality[b]; });
    for (size_t r = 0; r < order.size(); ++r) row_of[order[r]] = static_cast<int32_t>(r);
    return row_of;
  }

  Tensor Upload(const std::vector<int32_t>& host) {
    Tensor t(DType::kI32, {static_cast<int64_t>(host.size())});
    std::copy(host.begin(), host.end(), t.data<int32_t>());
    Tensor dev = gpu_->Empty(DType::kI32, t.shape());
    gpu_->Copy(t.mat(), dev.mat());
    return dev;
  }

  void RoutedGemm() {
    const int64_t n = absl::GetFlag(FLAGS_batch) * absl::GetFlag(FLAGS_seq_len);
    const int64_t dm = absl::GetFlag(FLAGS_d_model), e = 2 * dm;
    const int64_t r = (dm + 15) / 16, s = absl::GetFlag(FLAGS_d_state);
    const int groups = absl::GetFlag(FLAGS_modalities);
    std::vector<int32_t> spans = Spans(n, groups), one(n, 0);
    std::vector<int32_t> sorted = spans;
    std::sort(sorted.begin(), sorted.end());
    auto routed = gpu_->MakeRouting(spans.data(), n, groups);
    auto grouped = gpu_->MakeRouting(sorted.data(), n, groups);  // as LanguageModel stores rows
    auto dense = gpu_->MakeRouting(one.data(), n, 1);
    struct Shape2 {
      const char* name;
      int64_t in, out;
    };
    const std::vector<Shape2> shapes = {
        {"in_proj", dm, 2 * e}, {"x_proj", e, r + 2 * s}, {"dt_proj", r, e}, {"out_proj", e, dm}};
    std::printf(
        "\n## Routed GEMMs, %ld tokens, %d modalities in contiguous spans (bf16 operands)\n\n", n,
        groups);
    std::printf(
        "| projection | pass | routed ms | grouped rows ms | dense ms | routed TFLOP/s | "
        "dense TFLOP/s | routed / dense | grouped / dense |\n"
        "|---|---|---|---|---|---|---|---|---|\n");
    for (const Shape2& sh : shapes) {
      Tensor x = Random({n, sh.in}), y = gpu_->Empty(DType::kF32, {n, sh.out});
      Tensor dy = Random({n, sh.out}), dx = gpu_->Empty(DType::kF32, {n, sh.in});
      Tensor wr = Random({groups, sh.out, sh.in}, 0.05f), wd = Random({1, sh.out, sh.in}, 0.05f);
      Tensor dwr = Random({groups, sh.out, sh.in}), dwd = Random({1, sh.out, sh.in});
      const double flops = 2.0 * n * sh.in * sh.out;
      const double fr = Ms([&] { gpu_->RoutedLinear(*routed, x.mat(), wr, y.mat()); });
      const double fg = Ms([&] { gpu_->RoutedLinear(*grouped, x.mat(), wr, y.mat()); });
      const double fd = Ms([&] { gpu_->RoutedLinear(*dense, x.mat(), wd, y.mat()); });
      const double br = Ms([&] {
        gpu_->RoutedLinearBackward(*routed, x.mat(), wr, dy.mat(), dx.mat(), false, &dwr);
      });
      const double bg = Ms([&] {
        gpu_->RoutedLinearBackward(*grouped, x.mat(), wr, dy.mat(), dx.mat(), false, &dwr);
      });
      const double bd = Ms([&] {
        gpu_->RoutedLinearBackward(*dense, x.mat(), wd, dy.mat(), dx.mat(), false, &dwd);
      });
      std::printf("| %s %ldx%ld | forward | %.3f | %.3f | %.3f | %.0f | %.0f | %.2f | %.2f |\n",
                  sh.name, sh.in, sh.out, fr, fg, fd, flops / fr / 1e9, flops / fd / 1e9, fr / fd,
                  fg / fd);
      std::printf("| %s %ldx%ld | backward | %.3f | %.3f | %.3f | %.0f | %.0f | %.2f | %.2f |\n",
                  sh.name, sh.in, sh.out, br, bg, bd, 2 * flops / br / 1e9, 2 * flops / bd / 1e9,
                  br / bd, bg / bd);
    }
    // cuBLAS on operands already in bf16: what the fp32 interface costs.
    const int64_t in = dm, out = 2 * e;
    Tensor x = Random({n, in}), w = Random({out, in}), y = gpu_->Empty(DType::kF32, {n, out});
    cuda::Scratch sc(ctx_.stream());
    auto* xb = sc.Alloc<__nv_bfloat16>(n * in);
    auto* wb = sc.Alloc<__nv_bfloat16>(out * in);
    cuda::ConvertToBf16(x.data<float>(), n * in, xb, ctx_.stream());
    cuda::ConvertToBf16(w.data<float>(), out * in, wb, ctx_.stream());
    const double pure = Ms([&] {
      cuda::GemmBf16(ctx_.cublas(), false, true, n, out, in, 1.f, xb, in, wb, in, 0.f,
                     y.data<float>(), out);
    });
    std::printf(
        "\nin_proj forward with bf16 operands prepared in advance: %.3f ms (%.0f TFLOP/s)\n", pure,
        2.0 * n * in * out / pure / 1e9);
  }

  // Every GEMM of a training step, fp32 operands with bf16 products: cuBLAS
  // converting inside the kernel against a conversion pass first.
  void GemmPaths() {
    const int64_t n = absl::GetFlag(FLAGS_batch) * absl::GetFlag(FLAGS_seq_len);
    const int64_t dm = absl::GetFlag(FLAGS_d_model), e = 2 * dm, v = absl::GetFlag(FLAGS_vocab);
    const int64_t r = (dm + 15) / 16, s = absl::GetFlag(FLAGS_d_state);
    struct G {
      std::string name;
      bool ta, tb;
      int64_t m, n, k;
    };
    std::vector<G> gemms;
    auto proj = [&](const std::string& name, int64_t in, int64_t out) {
      gemms.push_back({name + " y=xW'", false, true, n, out, in});
      gemms.push_back({name + " dx=dyW", false, false, n, in, out});
      gemms.push_back({name + " dW=dy'x", true, false, out, in, n});
    };
    proj("in_proj", dm, 2 * e);
    proj("x_proj", e, r + 2 * s);
    proj("dt_proj", r, e);
    proj("out_proj", e, dm);
    gemms.push_back({"lm_head logits", false, true, n, v, dm});
    gemms.push_back({"lm_head dx", false, false, n, dm, v});
    gemms.push_back({"lm_head dW", true, false, v, dm, n});
    std::printf("\n## GEMM paths, fp32 operands, bf16 products, %ld tokens\n\n", n);
    std::printf(
        "| GEMM | m x n x k | in-kernel ms | convert-first ms | faster |\n|---|---|---|---|---|\n");
    for (const G& g : gemms) {
      Tensor a = Random({g.ta ? g.k : g.m, g.ta ? g.m : g.k});
      Tensor b = Random({g.tb ? g.n : g.k, g.tb ? g.k : g.n});
      Tensor c = gpu_->Empty(DType::kF32, {g.m, g.n});
      const int64_t lda = a.dim(1), ldb = b.dim(1);
      const double fast = Ms([&] {
        cuda::GemmF32InKernelBf16(ctx_.cublas(), g.ta, g.tb, g.m, g.n, g.k, 1.f, a.data<float>(),
                                  lda, b.data<float>(), ldb, 0.f, c.data<float>(), g.n);
      });
      const double conv = Ms([&] {
        cuda::GemmF32ConvertedBf16(ctx_.cublas(), g.ta, g.tb, g.m, g.n, g.k, 1.f, a.data<float>(),
                                   lda, b.data<float>(), ldb, 0.f, c.data<float>(), g.n);
      });
      std::printf("| %s | %ldx%ldx%ld | %.3f | %.3f | %s |\n", g.name.c_str(), g.m, g.n, g.k, fast,
                  conv, fast <= conv ? "in-kernel" : "convert-first");
    }
  }

  void Glue() {
    const int64_t batch = absl::GetFlag(FLAGS_batch), len = absl::GetFlag(FLAGS_seq_len);
    const int64_t n = batch * len, dm = absl::GetFlag(FLAGS_d_model), e = 2 * dm;
    const int64_t v = absl::GetFlag(FLAGS_vocab);
    std::printf("\n## Glue ops, %ld tokens\n\n| op | ms | MB moved | GB/s |\n|---|---|---|---|\n",
                n);
    auto row = [&](const std::string& what, double ms, double bytes) {
      std::printf("| %s | %.3f | %.0f | %.0f |\n", what.c_str(), ms, bytes / 1e6, bytes / ms / 1e6);
    };
    {
      Tensor xz = Random({n, 2 * e}), u = gpu_->Empty(DType::kF32, {n, e});
      Tensor w = Random({e, 4}, 0.5f), b = Random({e}, 0.5f), du = Random({n, e});
      Tensor dxz = gpu_->Empty(DType::kF32, {n, 2 * e}), dw = Random({e, 4}), db = Random({e});
      Tensor doc = gpu_->Empty(DType::kU8, {n});
      gpu_->Fill(doc.mat(), 0);
      SeqLayout seq{batch, len, &doc};
      row("conv forward", Ms([&] { gpu_->ConvForward(seq, xz.mat().Cols(0, e), w, b, u.mat()); }),
          2.0 * n * e * 4);
      row("conv backward", Ms([&] {
            gpu_->ConvBackward(seq, xz.mat().Cols(0, e), w, b, du.mat(), dxz.mat().Cols(0, e), &dw,
                               &db);
          }),
          3.0 * n * e * 4);
    }
    {
      Tensor x = Random({n, dm}), w = Random({dm}, 0.1f, 1.f),
             y = gpu_->Empty(DType::kF32, {n, dm});
      Tensor rstd = gpu_->Empty(DType::kF32, {n}), dy = Random({n, dm}), dx = Random({n, dm});
      Tensor dw = Random({dm});
      row("rmsnorm forward", Ms([&] { gpu_->RmsNormForward(x.mat(), w, 1e-5, y.mat(), &rstd); }),
          2.0 * n * dm * 4);
      row("rmsnorm backward",
          Ms([&] { gpu_->RmsNormBackward(x.mat(), w, rstd, dy.mat(), dx.mat(), &dw); }),
          4.0 * n * dm * 4);
      // The model's residual add fused in; x grows by `skip` each call, staying finite.
      Tensor skip = Random({n, dm});
      row("residual add + rmsnorm forward",
          Ms([&] { gpu_->AddRmsNormForward(x.mat(), skip.mat(), w, 1e-5, y.mat(), &rstd); }),
          4.0 * n * dm * 4);
    }
    {
      Tensor logits = Random({n, v}, 3.f), losses = gpu_->Empty(DType::kF32, {n});
      std::vector<int32_t> t(n);
      std::vector<float> wt(n, 1.f);
      std::uniform_int_distribution<int> id(0, v - 1);
      for (auto& x : t) x = id(rng_);
      Tensor th(DType::kI32, {n}), wh(DType::kF32, {n});
      std::copy(t.begin(), t.end(), th.data<int32_t>());
      std::copy(wt.begin(), wt.end(), wh.data<float>());
      Tensor targets = gpu_->Empty(DType::kI32, {n}), weight = gpu_->Empty(DType::kF32, {n});
      gpu_->Copy(th.mat(), targets.mat());
      gpu_->Copy(wh.mat(), weight.mat());
      // In place, as the model runs it; the values drift but stay finite.
      row("cross-entropy V=" + std::to_string(v) + " (in place)",
          Ms([&] { gpu_->CrossEntropy(logits.mat(), targets, weight, &losses, logits.mat()); }),
          3.0 * n * v * 4);
    }
    {
      const int64_t p = 128 << 20;
      Tensor g = Random({p}, 0.01f), w = Random({p}), m = Random({p}, 0.01f);
      Tensor v2 = Random({p}, 0.001f, 0.002f);
      AdamWStep step;
      step.lr = 1e-4;
      row("AdamW, 128M params", Ms([&] { gpu_->AdamW(step, g, &w, &m, &v2); }), 7.0 * p * 4);
    }
  }

 private:
  DeviceContext& ctx_;
  std::mt19937 rng_;
  std::unique_ptr<Backend> gpu_;
  double copy_gbs_ = 0, gemm_tflops_ = 0;
};

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  google::InitGoogleLogging(argv[0]);
  if (modamba::CudaDeviceCount() == 0) {
    std::fprintf(stderr, "kernel_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# Modamba kernel benchmarks on %s (%d SMs)\n", prop.name, prop.multiProcessorCount);
  modamba::Bench bench;
  bench.Ceilings();
  for (absl::string_view section : absl::StrSplit(absl::GetFlag(FLAGS_sections), ',')) {
    if (section == "scan") {
      bench.Scan();
    } else if (section == "gemm") {
      bench.RoutedGemm();
    } else if (section == "gemm_paths") {
      bench.GemmPaths();
    } else if (section == "glue") {
      bench.Glue();
    } else {
      std::fprintf(stderr, "kernel_bench: unknown section '%s'\n", std::string(section).c_str());
      return 2;
    }
  }
  return 0;
}
