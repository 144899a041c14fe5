// Benchmark of the fused causal attention kernels, printed as a table: the
// forward, the backward (delta, the key-tile pass and dq's conversion) and
// their sum, per case, with the achieved rate over the causal FLOPs (4 per
// visible query-key pair and head dimension in the forward, 2.5 times that in
// the backward, as FlashAttention counts). Inputs are bf16 [B * L, H * D]
// rows, the layout q, k and v have in the model; kernels/attention_bench_torch.py
// times PyTorch's scaled_dot_product_attention on the same shapes.
// Times are medians over --reps runs after warm-up, taken with CUDA events.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "glog/logging.h"
#include "kernels/bench_util.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_context.h"
#include "kernels/kernels.h"

ABSL_FLAG(std::string, cases, "8x12x2048x64,8x12x2048x64/256,2x12x8192x64",
          "Comma-separated BxHxLxD cases; /N packs documents of N tokens.");
ABSL_FLAG(int, reps, 20, "Timed repetitions per measurement.");

namespace modamba::cuda {
namespace {

struct Case {
  int64_t batch, heads, seq_len, head_dim, doc_len;
};

Case ParseCase(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, absl::ByAnyChar("x/"));
  CHECK(parts.size() == 4 || parts.size() == 5) << "--cases: expected BxHxLxD[/N], got " << text;
  int64_t v[5] = {0, 0, 0, 0, 0};
  for (size_t i = 0; i < parts.size(); ++i) {
    CHECK(absl::SimpleAtoi(parts[i], &v[i]) && v[i] > 0) << "--cases: bad number in " << text;
  }
  return Case{v[0], v[1], v[2], v[3], parts.size() == 5 ? v[4] : v[2]};
}

void Run(const Case& c, int reps) {
  DeviceContext& ctx = ContextFor(0);
  cudaStream_t stream = ctx.stream();
  const int64_t n = c.batch * c.seq_len, d = c.heads * c.head_dim;
  Scratch s(stream);
  auto random_bf16 = [&](int64_t count, uint64_t seed) {
    float* f = s.Alloc<float>(count);
    FillUniform(f, count, seed, -1.f, 1.f, stream);
    auto* b = s.Alloc<__nv_bfloat16>(count);
    ConvertToBf16(f, count, b, stream);
    return b;
  };
  const __nv_bfloat16* q = random_bf16(n * d, 1);
  const __nv_bfloat16* k = random_bf16(n * d, 2);
  const __nv_bfloat16* v = random_bf16(n * d, 3);
  const __nv_bfloat16* dout = random_bf16(n * d, 4);
  std::vector<uint8_t> starts(n);
  int64_t pairs = 0;  // visible (query, key) pairs per head
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = i % c.seq_len, in_doc = t % c.doc_len;
    starts[i] = in_doc == 0;
    pairs += in_doc + 1;
  }
  auto* doc_start = s.Alloc<uint8_t>(n);
  CUDA_CHECK(cudaMemcpyAsync(doc_start, starts.data(), n, cudaMemcpyHostToDevice, stream));
  auto* first = s.Alloc<int32_t>(n);
  DocFirst(doc_start, c.batch, c.seq_len, first, stream);

  AttentionArgs a;
  a.batch = c.batch;
  a.seq_len = c.seq_len;
  a.heads = static_cast<int>(c.heads);
  a.head_dim = static_cast<int>(c.head_dim);
  a.first = first;
  a.q = q;
  a.k = k;
  a.v = v;
  a.ldq = a.ldk = a.ldv = d;
  auto* out = s.Alloc<__nv_bfloat16>(n * d);
  auto* lse = s.Alloc<float>(n * c.heads);
  auto* grads = s.Alloc<__nv_bfloat16>(3 * n * d);
  const OutView out_view{out, n, d, d, true};
  auto grad = [&](int i) { return OutView{grads + i * n * d, n, d, d, true}; };
  auto forward = [&] { AttentionForward(a, out_view, lse, stream); };
  auto backward = [&] {
    AttentionBackward(a, Operand{out, d, true}, lse, dout, d, grad(0), grad(1), grad(2), stream);
  };
  const double fwd = TimeMs(ctx, reps, /*warmup=*/3, forward);
  const double bwd = TimeMs(ctx, reps, /*warmup=*/3, backward);
  const double flops = 4.0 * pairs * c.heads * c.head_dim;
  std::printf("| %lld x %lld x %lld x %lld | %lld | %.3f | %.0f | %.3f | %.0f | %.3f |\n",
              static_cast<long long>(c.batch), static_cast<long long>(c.heads),
              static_cast<long long>(c.seq_len), static_cast<long long>(c.head_dim),
              static_cast<long long>(c.doc_len), fwd, flops / fwd / 1e9, bwd,
              2.5 * flops / bwd / 1e9, fwd + bwd);
}

}  // namespace
}  // namespace modamba::cuda

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::printf("\nfused causal attention (bf16 in, fp32 accumulate), median of %d\n\n",
              absl::GetFlag(FLAGS_reps));
  std::printf("| B x H x L x D | document | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s | "
              "fwd+bwd ms |\n|---|---|---|---|---|---|---|\n");
  for (absl::string_view text : absl::StrSplit(absl::GetFlag(FLAGS_cases), ',')) {
    modamba::cuda::Run(modamba::cuda::ParseCase(std::string(text)), absl::GetFlag(FLAGS_reps));
  }
  return 0;
}
