// Launchers of the CUDA kernels behind kernels/cuda_backend.cc. They take raw
// device pointers and strided fp32 views (no core/ types, so the .cu files
// compile without them), enqueue on the given stream and check each launch.
//
// Layout: every activation is a matrix of [N = B * L rows, features] with a
// row stride `ld` (column slices of a fused projection output have ld > cols),
// one row per token: (B, L, D) row-major, or rows in any order given by a row
// map (core/backend.h), which only the conv and the scan need to follow. No
// kernel transposes to (B, D, L): the scan walks time inside a thread and
// reads rows of channels, which are contiguous in this layout.
#ifndef MODAMBA_KERNELS_KERNELS_H_
#define MODAMBA_KERNELS_KERNELS_H_

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/precision.h"

namespace modamba::cuda {

// Strided row-major fp32 matrices on the device.
struct View {
  float* data = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
};
struct ConstView {
  const float* data = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
  ConstView() = default;
  ConstView(const float* d, int64_t r, int64_t c, int64_t l) : data(d), rows(r), cols(c), ld(l) {}
  ConstView(const View& v) : data(v.data), rows(v.rows), cols(v.cols), ld(v.ld) {}  // NOLINT
};

// An output that feeds only matrix products may be stored in bf16
// (Backend::MatmulInputDType); the kernel rounds when it stores.
struct OutView {
  void* data = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
  bool bf16 = false;
};

// Temporary device memory for one op, from the stream-ordered pool; freed
// (in stream order) when the Scratch goes out of scope.
class Scratch {
 public:
  explicit Scratch(cudaStream_t stream) : stream_(stream) {}
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* Alloc(size_t bytes);
  template <typename T>
  T* Alloc(int64_t count) {
    return static_cast<T*>(Alloc(sizeof(T) * count));
  }

 private:
  cudaStream_t stream_;
  std::vector<void*> ptrs_;
};

// ---- elementwise (elementwise.cu) ----
// Writes the `elem_size`-byte pattern `bits` into every element.
void Fill(void* data, int64_t rows, int64_t cols, int64_t ld, int elem_size, uint64_t bits,
          cudaStream_t stream);
void Axpy(float alpha, ConstView x, View y, cudaStream_t stream);
void Scale(float alpha, View x, cudaStream_t stream);
// Sum of squares in fp64, in a fixed order; blocks until done.
// Over every element of every view; waits for the result.
double SumSquares(const std::vector<ConstView>& xs, cudaStream_t stream);
void ConvertToBf16(const float* src, int64_t n, __nv_bfloat16* dst, cudaStream_t stream);
// A strided fp32 matrix into a contiguous bf16 one (gemm.cu).
void ConvertToBf16(ConstView src, __nv_bfloat16* dst, cudaStream_t stream);
// Uniform values in [lo, hi) from a counter-based hash of (seed, index):
// benchmark inputs without a host round trip.
void FillUniform(float* data, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t stream);

// ---- embedding (embedding.cu) ----
// Out-of-range tokens set *error (a device int) to 1 and read as zeros.
void EmbeddingForward(const int32_t* tokens, int64_t n, const float* table, int64_t vocab, View out,
                      int* error, cudaStream_t stream);
// dtable[tok[i]] += dout[i], summed per token in row order (deterministic).
void EmbeddingBackward(const int32_t* tokens, int64_t n, ConstView dout, float* dtable,
                       int64_t vocab, cudaStream_t stream);

// ---- RMSNorm (norm.cu) ----
void RmsNormForward(ConstView x, const float* w, float eps, OutView y, float* rstd,
                    cudaStream_t stream);
// x += add, then RmsNormForward of x, in one pass; bitwise the same as Axpy
// then RmsNormForward. A null add.data skips the add.
void AddRmsNormForward(View x, ConstView add, const float* w, float eps, OutView y, float* rstd,
                       cudaStream_t stream);
// dx += ..., dw += ... (dw summed over rows in a fixed order).
void RmsNormBackward(ConstView x, const float* w, const float* rstd, ConstView dy, View dx,
                     float* dw, cudaStream_t stream);

// ---- causal depthwise conv1d + SiLU (conv.cu) ----
struct ConvArgs {
  int64_t batch = 0, seq_len = 0, k_width = 0;
  const uint8_t* doc_start = nullptr;  // [N] by position
  const int32_t* rows = nullptr;       // [N] row of each position of x, u, du, dx; null: n
  ConstView x;                         // [N, E]
  const float* w = nullptr;            // [E, K]
  const float* b = nullptr;            // [E]
};
void ConvForward(const ConvArgs& a, View u, cudaStream_t stream);
// dx overwritten; dw, db accumulate.
void ConvBackward(const ConvArgs& a, ConstView du, OutView dx, float* dw, float* db,
                  cudaStream_t stream);

// ---- selective scan (scan.cu) ----
struct ScanArgs {
  int64_t batch = 0, seq_len = 0;
  int64_t e_dim = 0, s_dim = 0;        // s_dim <= 16
  const uint8_t* doc_start = nullptr;  // [N] by position
  const int32_t* rows = nullptr;       // [N] row of each position of every [N, *] view; null: n
  const int32_t* group = nullptr;      // [N] dt_bias row of each row; null: row 0
  int64_t dt_groups = 1;               // rows of dt_bias (<= 8)
  ConstView u, delta_raw, b, c, z;
  const float* dt_bias = nullptr;  // [G, E]
  const float* a_log = nullptr;    // [E, S]
  const float* d = nullptr;        // [E]
  // [batch][ceil(L / 32)][E][16]: the state before every 32nd step, written
  // by ScanForward and read by ScanBackward (which otherwise recomputes it);
  // null: not kept.
  float* saved_states = nullptr;
};
int64_t ScanSavedStatesSize(int64_t batch, int64_t seq_len, int64_t e_dim);
struct ScanGradArgs {
  ConstView dy;
  View du, db, dc;            // overwritten
  OutView ddelta_raw, dz;     // overwritten
  float* ddt_bias = nullptr;        // [G, E] accumulated
  float* da_log = nullptr;          // [E, S] accumulated
  float* dd = nullptr;              // [E] accumulated
};
constexpr int kScanMaxState = 16;
void ScanForward(const ScanArgs& a, OutView y, cudaStream_t stream);
void ScanBackward(const ScanArgs& a, const ScanGradArgs& g, cudaStream_t stream);

// ---- cross-entropy (loss.cu) ----
// logits and dlogits may be the same memory. Targets outside [0, V) set *error.
void CrossEntropy(ConstView logits, const int32_t* targets, const float* weight, float* losses,
                  View dlogits, int* error, cudaStream_t stream);
// The LM head and its loss with bf16 products (Backend::LmHeadCrossEntropy):
// h [N, D] and W [V, D] are converted once, the logits [N, V] are bf16 and
// become dlogits in place, which the dh and dW products read directly.
void LmHeadCrossEntropyBf16(cublasHandle_t handle, ConstView h, ConstView w,
                            const int32_t* targets, const float* weight, float* losses, View dh,
                            View dw, int* error, cudaStream_t stream);

// ---- AdamW (optimizer.cu) ----
struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
  float bias_c1, bias_c2;  // 1 - beta^step, computed on the host in fp64
};
void AdamW(const AdamWArgs& a, int64_t n, const float* grad, float* param, float* m, float* v,
           cudaStream_t stream);

// ---- matrix products (gemm.cu) ----
// Row-major C[m, n] = alpha * op(A) op(B) + beta * C on fp32 data.
void GemmF32(cublasHandle_t handle, MatmulPrecision precision, bool trans_a, bool trans_b,
             int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
             const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
// The two ways to run fp32 operands with bf16 products: cuBLAS converting
// inside the kernel, or a conversion pass first (kernel_bench compares them).
void GemmF32InKernelBf16(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n,
                         int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                         int64_t ldb, float beta, float* c, int64_t ldc);
void GemmF32ConvertedBf16(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n,
                          int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                          int64_t ldb, float beta, float* c, int64_t ldc);
// Same with bf16 operands and fp32 C.
void GemmBf16(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
              float alpha, const __nv_bfloat16* a, int64_t lda, const __nv_bfloat16* b, int64_t ldb,
              float beta, float* c, int64_t ldc);
// A matrix operand held as fp32 or bf16 (activations that only feed
// products may be stored in bf16: Backend::MatmulInputDType).
struct Operand {
  const void* data;
  int64_t ld;
  bool bf16;
};
// Streams on which independent products of one op (a routed projection's
// groups) run side by side, each with its own cuBLAS handle and workspace of
// the main handle's size, so cuBLAS picks the same algorithms as on the
// main stream. Parallel(n, f) calls f(i, handle) for i < n, item i on side
// lane i % lanes: the lanes first wait for the main stream's work so far,
// and the main stream then waits for them. Items must write disjoint memory;
// results equal those of running the items in turn on the main stream.
struct Lanes {
  cublasHandle_t main = nullptr;
  std::vector<cublasHandle_t> side;
  cudaEvent_t fork = nullptr;
  std::vector<cudaEvent_t> done;  // one per side lane

  template <class F>
  void Parallel(int n, F&& f) const {
    if (side.empty() || n <= 1) {
      for (int i = 0; i < n; ++i) f(i, main);
      return;
    }
    const int used = n < static_cast<int>(side.size()) ? n : static_cast<int>(side.size());
    CUDA_CHECK(cudaEventRecord(fork, StreamOf(main)));
    for (int l = 0; l < used; ++l) CUDA_CHECK(cudaStreamWaitEvent(StreamOf(side[l]), fork, 0));
    for (int i = 0; i < n; ++i) f(i, side[i % side.size()]);
    for (int l = 0; l < used; ++l) {
      CUDA_CHECK(cudaEventRecord(done[l], StreamOf(side[l])));
      CUDA_CHECK(cudaStreamWaitEvent(StreamOf(main), done[l], 0));
    }
  }
  static cudaStream_t StreamOf(cublasHandle_t handle) {
    cudaStream_t stream;
    CUBLAS_CHECK(cublasGetStream(handle, &stream));
    return stream;
  }
};

// Projections over rows grouped by modality (group g holds rows
// [offset, offset + count) and weight w[g], [out, in]). With bf16 products
// and a bf16 operand or wide dimensions, every fp32 operand is converted
// once for all groups (GroupedUsesBf16Copies), then each group runs its
// products on its row range, the groups side by side (Lanes): y = x W[g]^T,
// and dx = dy W[g] + beta_dx dx, dW[g] += dy^T x.
struct RowRange {
  int64_t offset, count;
};
bool GroupedUsesBf16Copies(MatmulPrecision precision, int64_t in, int64_t out, bool any_bf16);
void GroupedLinearBf16(const Lanes& lanes, const std::vector<RowRange>& groups, int64_t in,
                       int64_t out, Operand x, const float* w, View y);
void GroupedLinearBackwardBf16(const Lanes& lanes, const std::vector<RowRange>& groups,
                               int64_t in, int64_t out, Operand x, const float* w, Operand dy,
                               float beta_dx, View dx, float* dw);
// C = op(A) op(B) with bf16 operands and output, fp32 accumulation; k >= 1.
void GemmBf16ToBf16(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n,
                    int64_t k, const __nv_bfloat16* a, int64_t lda, const __nv_bfloat16* b,
                    int64_t ldb, __nv_bfloat16* c, int64_t ldc);
// dst[i] = src[rows[i]]. A row outside src raises *error (if given).
void GatherRows(const int32_t* rows, int64_t n, ConstView src, View dst, int* error,
                cudaStream_t stream);
// The same into a contiguous bf16 matrix (GEMM operands); rows must be valid.
void GatherRowsBf16(const int32_t* rows, int64_t n, ConstView src, __nv_bfloat16* dst,
                    cudaStream_t stream);
// dst[rows[i]] (=|+=) src[i]; rows distinct. A row outside dst raises *error.
void ScatterRows(const int32_t* rows, int64_t n, ConstView src, View dst, bool accumulate,
                 int* error, cudaStream_t stream);

// Routed projections whose input or output is narrow run as one GEMM over
// all groups instead of gathering and scattering the wide side:
// dst[n, g * W + j] = (g == group[n]) ? src[n, j] : 0, dst [N, G * W] contiguous.
void ExpandRows(const int32_t* group, int groups, ConstView src, float* dst, cudaStream_t stream);
// dst[n, j] (=|+=) src[n, group[n] * W + j], src [N, G * W] contiguous.
void SelectGroupCols(const int32_t* group, int groups, const float* src, View dst, bool accumulate,
                     cudaStream_t stream);
// dst[o, g * I + i] = w[g, o, i]: a [G, O, I] weight as one [O, G * I] matrix.
void ConcatGroups(const float* w, int groups, int64_t out, int64_t in, float* dst,
                  cudaStream_t stream);

// ---- the Transformer block (attention.cu) ----
// y = silu(gate) * up; the backward overwrites dgate and dup.
void SwigluForward(ConstView gate, ConstView up, OutView y, cudaStream_t stream);
void SwigluBackward(ConstView gate, ConstView up, ConstView dy, OutView dgate, OutView dup,
                    cudaStream_t stream);
// first[n] = the position inside its sequence where position n's document
// starts ([batch * seq_len], by position).
void DocFirst(const uint8_t* doc_start, int64_t batch, int64_t seq_len, int32_t* first,
              cudaStream_t stream);
// Backend::Rope over fp32 rows (through `rows` when not null); y may be x.
void Rope(int64_t batch, int64_t seq_len, const int32_t* rows, const int32_t* first, int head_dim,
          float theta, bool inverse, ConstView x, View y, cudaStream_t stream);
// Causal attention of bf16 q, k, v ([N, heads * head_dim], rows on 16 bytes;
// head_dim 32, 64 or 128) with packed documents (Backend::AttentionForward).
struct AttentionArgs {
  int64_t batch = 0, seq_len = 0;
  int heads = 0, head_dim = 0;
  const int32_t* rows = nullptr;   // the row of each position; null: n
  const int32_t* first = nullptr;  // DocFirst of the layout
  const __nv_bfloat16* q = nullptr;
  const __nv_bfloat16* k = nullptr;
  const __nv_bfloat16* v = nullptr;
  int64_t ldq = 0, ldk = 0, ldv = 0;
};
// lse: [N, heads] by row, the natural log-sum-exp of each query's scores.
void AttentionForward(const AttentionArgs& a, OutView out, float* lse, cudaStream_t stream);
// Backend::AttentionStep in fp32: one row per stream, caches [num_streams,
// max_len, heads * head_dim]. A stream outside [0, num_streams) or a full one
// raises *error and its row is skipped.
struct AttentionStepArgs {
  int64_t rows = 0;
  int heads = 0, head_dim = 0;
  float log2_theta = 0;
  const int32_t* streams = nullptr;
  const uint8_t* reset = nullptr;
  ConstView q, k, v;
  int64_t num_streams = 0, max_len = 0;
  float* k_cache = nullptr;
  float* v_cache = nullptr;
  int32_t* lengths = nullptr;
  int* error = nullptr;
};
void AttentionStep(const AttentionStepArgs& a, OutView out, cudaStream_t stream);
// dq, dk and dv are overwritten; dout is bf16 like q.
void AttentionBackward(const AttentionArgs& a, Operand out, const float* lse,
                       const __nv_bfloat16* dout, int64_t lddo, OutView dq, OutView dk,
                       OutView dv, cudaStream_t stream);

// ---- recurrent decoding: one token per stream (decode.cu) ----
// ConvForward and ScanForward of one new row per stream. The ConvArgs and
// ScanArgs hold the step's rows as one-token sequences whose doc_start flags
// are the resets; row n starts from state row streams[n] and leaves its new
// state there (streams distinct). A stream outside [0, num_streams) raises
// *error and its row is skipped.
struct StepState {
  const int32_t* streams = nullptr;  // [rows]
  int64_t num_streams = 0;
  float* state = nullptr;  // conv: [num_streams, K-1, E], oldest first; scan: [num_streams, E, S]
  int* error = nullptr;
};
void ConvStep(const ConvArgs& a, const StepState& st, View u, cudaStream_t stream);
void ScanStep(const ScanArgs& a, const StepState& st, View y, cudaStream_t stream);

}  // namespace modamba::cuda

#endif  // MODAMBA_KERNELS_KERNELS_H_
