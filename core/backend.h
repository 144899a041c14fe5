// The Backend: every op the Mixture-of-Mamba language model needs, behind one
// interface. core/cpu_backend.cc implements it on the host (fp32 and fp64;
// OpenBLAS for GEMM, the templated references of core/ops/ for the rest);
// kernels/cuda_backend.cc implements it on NVIDIA GPUs.
//
// Layout (the one place it is written down): activations are matrices of
// [N = B * L tokens, features]; token n = b * L + t is its sequence position.
// Rows are stored in sequence order, (B, L, D) row-major, unless a SeqLayout
// carries a row map: then position n is stored at row rows[n] of every
// [N, *] activation. The language model uses one to keep each modality's
// tokens contiguous for the whole step (group 0's rows first, sequence order
// inside a group), so routed projections run one GEMM per group on a row
// range. Row-wise ops never see the order; only the conv and the scan, which
// read sequence neighbours, go through the map. Per-position inputs that are
// not activations (doc_start) stay in sequence order.
// Weights of a projection are [G, out, in] (G = 1 when shared, M when routed
// by modality); y = x W^T. The conv weight is [E, d_conv], A_log is [E, S].
//
// Conventions: forward ops overwrite their outputs. Backward ops always
// *accumulate* into parameter gradients (so gradient accumulation and tied
// weights need no extra code) and overwrite input gradients unless the
// argument says `accumulate`.
#ifndef MODAMBA_CORE_BACKEND_H_
#define MODAMBA_CORE_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace modamba {

// Which rows use which weight group, built once per batch from the modality
// ids and reused by every routed projection of every layer.
class Routing {
 public:
  virtual ~Routing() = default;
  int num_groups() const { return static_cast<int>(counts_.size()); }
  int64_t num_rows() const { return num_rows_; }
  // Rows of group g.
  int64_t count(int g) const { return counts_[g]; }
  // Whether the group ids never decrease: each group's rows are one range,
  // group 0's first, and routed projections need no gather or scatter.
  bool grouped() const { return grouped_; }

 protected:
  std::vector<int64_t> counts_;
  int64_t num_rows_ = 0;
  bool grouped_ = false;
};

// The token stream's shape: N = batch * seq_len positions. A position with
// doc_start[n] != 0 (and every one with t == 0) begins a document: the conv
// window and the scan state restart there.
struct SeqLayout {
  int64_t batch = 0;
  int64_t seq_len = 0;
  const Tensor* doc_start = nullptr;  // U8 [N] on the backend's device, by position
  const Tensor* rows = nullptr;       // I32 [N] on the device: the row of each position; null: n
  int64_t num_rows() const { return batch * seq_len; }
};

// The selective scan's inputs: the shared parameters and the per-token
// streams (column views of the projections' outputs).
struct ScanInputs {
  Mat u;                          // [N, E] conv output
  Mat delta_raw;                  // [N, E] dt_proj output before bias
  Mat b;                          // [N, S]
  Mat c;                          // [N, S]
  Mat z;                          // [N, E] gate branch
  const Tensor* dt_bias = nullptr;  // [G, E], fp32 math; group by routing
  const Tensor* a_log = nullptr;    // [E, S]
  const Tensor* d = nullptr;        // [E]
  // Optional: ScanForward may keep here what ScanBackward would otherwise
  // recompute (the CUDA backend: the state every 32 steps, fp32, 1/2 of the
  // bytes of u); ScanBackward reuses it when it was filled for these inputs.
  Tensor* saved = nullptr;
};

// The rows of one decoding step: row i advances token stream streams[i] by
// one token, reading and updating row streams[i] of a per-stream state
// tensor. A row with reset[i] != 0 begins a document: its stream's earlier
// state reads as zero, as before a doc_start flag of a SeqLayout.
struct StepLayout {
  const Tensor* streams = nullptr;  // I32 [N] on the backend's device, distinct
  const Tensor* reset = nullptr;    // U8 [N] on the backend's device
  int64_t num_rows() const { return streams->numel(); }
  // The rows as one-token sequences whose document starts are the resets, in
  // row order (no row map): how the step ops reuse the Forward ops' arguments.
  SeqLayout AsSequences() const { return SeqLayout{num_rows(), 1, reset, nullptr}; }
};

struct ScanGrads {
  Mat du;                         // overwritten
  Mat ddelta_raw;                 // overwritten; may be MatmulInputDType
  Mat db;                         // overwritten
  Mat dc;                         // overwritten
  Mat dz;                         // overwritten; may be MatmulInputDType
  Tensor* ddt_bias = nullptr;     // accumulated
  Tensor* da_log = nullptr;       // accumulated
  Tensor* dd = nullptr;           // accumulated
};

struct AdamWStep {
  double lr = 0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0;  // decoupled: p -= lr * wd * p
  int64_t step = 1;         // 1-based, for bias correction
  double grad_scale = 1;    // applied to the gradient first (clipping)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual Allocator* allocator() = 0;

  // ---- memory ----
  Tensor Empty(DType dtype, Shape shape) { return Tensor(dtype, std::move(shape), allocator()); }
  // Copies between any two views of equal size and dtype, host or device.
  virtual void Copy(Mat src, Mat dst) = 0;
  virtual void Fill(Mat x, double value) = 0;
  // Blocks until queued work is done.
  virtual void Synchronize() {}
  // The dtype for activations that only feed matrix products, in a model of
  // `dtype`: the CUDA backend with bf16 products stores them in BF16 (half
  // the bytes, no conversion before each product). Ops that accept such a
  // tensor say so; RoutedLinear and its backward then need grouped rows.
  virtual DType MatmulInputDType(DType dtype) const { return dtype; }

  // ---- routing ----
  // modality: host array of N ids, each in [0, num_groups).
  virtual std::unique_ptr<Routing> MakeRouting(const int32_t* modality, int64_t n,
                                               int num_groups) = 0;

  // ---- matrix products ----
  // c = alpha * op(a) * op(b) + beta * c, op = transpose when asked.
  virtual void Gemm(bool trans_a, bool trans_b, double alpha, Mat a, Mat b, double beta,
                    Mat c) = 0;
  // y[n] = x[n] W[g(n)]^T for a weight w of [G, out, in].
  virtual void RoutedLinear(const Routing& routing, Mat x, const Tensor& w, Mat y) = 0;
  // dx (=|+=) dy W[g]; dW[g] += dy_g^T x_g.
  virtual void RoutedLinearBackward(const Routing& routing, Mat x, const Tensor& w, Mat dy,
                                    Mat dx, bool accumulate_dx, Tensor* dw) = 0;

  // ---- embedding ----
  // out[n] = table[tokens[n]]; tokens I32 [N] on the device.
  virtual void EmbeddingForward(const Tensor& tokens, const Tensor& table, Mat out) = 0;
  virtual void EmbeddingBackward(const Tensor& tokens, Mat dout, Tensor* dtable) = 0;

  // ---- row gather / scatter (rows: I32 indices on the device) ----
  // dst[i] = src[rows[i]]
  virtual void GatherRows(Mat src, const Tensor& rows, Mat dst) = 0;
  // dst[rows[i]] += src[i]; rows must be distinct.
  virtual void ScatterAddRows(Mat src, const Tensor& rows, Mat dst) = 0;

  // ---- RMSNorm: y = x / rms(x) * w ----
  // rstd: [N] in x's dtype, saved for the backward.
  virtual void RmsNormForward(Mat x, const Tensor& w, double eps, Mat y, Tensor* rstd) = 0;
  // x += add (a residual stream's skip, in place), then RmsNormForward of x.
  // The default composes Axpy and RmsNormForward.
  virtual void AddRmsNormForward(Mat x, Mat add, const Tensor& w, double eps, Mat y,
                                 Tensor* rstd);
  // dx += d(y)/d(x) . dy (always accumulates: x is a residual stream).
  virtual void RmsNormBackward(Mat x, const Tensor& w, const Tensor& rstd, Mat dy, Mat dx,
                               Tensor* dw) = 0;

  // ---- causal depthwise conv1d + bias + SiLU ----
  // u[n, e] = silu(b[e] + sum_k w[e, k] x[n - (K-1) + k, e]) over positions n
  // (rows through seq.rows), positions before the document start read as zero.
  virtual void ConvForward(const SeqLayout& seq, Mat x, const Tensor& w, const Tensor& b,
                           Mat u) = 0;
  virtual void ConvBackward(const SeqLayout& seq, Mat x, const Tensor& w, const Tensor& b,
                            Mat du, Mat dx, Tensor* dw, Tensor* db) = 0;

  // ---- selective scan, fused ----
  // delta = softplus(delta_raw + dt_bias[g]), g the dt_routing group of the
  // token's row; A = -exp(A_log);
  // h_t = exp(delta A) h_{t-1} + delta B_t u_t (h reset at document starts);
  // y_t = (C_t . h_t + D u_t) * silu(z_t).
  virtual void ScanForward(const SeqLayout& seq, const Routing& dt_routing,
                           const ScanInputs& in, Mat y) = 0;
  // Recomputes the states it needs; nothing per-step is stored by the forward.
  virtual void ScanBackward(const SeqLayout& seq, const Routing& dt_routing,
                            const ScanInputs& in, Mat dy, const ScanGrads& grads) = 0;

  // ---- recurrent decoding: one token per stream ----
  // Both compute what the Forward op computes at the same position of the
  // same stream, from a state the op carries instead of the earlier rows.
  // ConvForward of row i with the K-1 earlier inputs taken from
  // state[streams[i]] ([num_streams, K-1, E], oldest first); the window then
  // shifts to end with x[i].
  virtual void ConvStep(const StepLayout& step, Mat x, const Tensor& w, const Tensor& b,
                        Tensor* state, Mat u) = 0;
  // ScanForward of row i with h_{t-1} = state[streams[i]] ([num_streams, E, S]
  // in the inputs' dtype), which becomes h_t.
  virtual void ScanStep(const StepLayout& step, const Routing& dt_routing, const ScanInputs& in,
                        Tensor* state, Mat y) = 0;

  // ---- the Transformer block's ops (core/ops/attention.h) ----
  // y = silu(gate) * up, elementwise over [N, F] views; y may be
  // MatmulInputDType.
  virtual void SwigluForward(Mat gate, Mat up, Mat y) = 0;
  // dgate and dup are overwritten; either may be MatmulInputDType.
  virtual void SwigluBackward(Mat gate, Mat up, Mat dy, Mat dgate, Mat dup) = 0;
  // Rotary position embedding: each head of `head_dim` columns of x (rows
  // through seq.rows) rotated by the position inside its document, pair
  // (j, j + head_dim/2) by angle pos * theta^(-2j/head_dim). `inverse`
  // applies the transpose, which is the backward. y may be x.
  virtual void Rope(const SeqLayout& seq, int head_dim, double theta, bool inverse, Mat x,
                    Mat y) = 0;
  // Causal multi-head attention over [N, heads * head_dim] views (rows
  // through seq.rows): out_i = softmax_j(q_i . k_j / sqrt(head_dim)) v_j over
  // the keys j of i's own document up to i, so packed documents never see
  // each other. lse ([N, heads], F32 or the CPU's dtype) keeps each query's
  // log-sum-exp for the backward. The CUDA backend computes in bf16 with
  // fp32 accumulation; out may be MatmulInputDType.
  virtual void AttentionForward(const SeqLayout& seq, int heads, Mat q, Mat k, Mat v, Mat out,
                                Tensor* lse) = 0;
  // dq, dk and dv are overwritten.
  virtual void AttentionBackward(const SeqLayout& seq, int heads, Mat q, Mat k, Mat v, Mat out,
                                 const Tensor& lse, Mat dout, Mat dq, Mat dk, Mat dv) = 0;
  // Decoding with a key-value cache: row i of q, k, v (unrotated) is the
  // next token of stream streams[i], at position pos = lengths[stream] (0
  // after a reset). q and k are rotated by pos, k and v stored at row pos of
  // the stream's caches ([num_streams, max_len, heads * head_dim], the
  // backend's float type), lengths (I32 [num_streams]) becomes pos + 1, and
  // out is what AttentionForward gives at that position. pos must be below
  // max_len.
  virtual void AttentionStep(const StepLayout& step, int heads, double theta, Mat q, Mat k,
                             Mat v, Tensor* k_cache, Tensor* v_cache, Tensor* lengths,
                             Mat out) = 0;

  // ---- loss ----
  // Per row n with weight[n] != 0: losses[n] = -log softmax(logits[n])[target[n]],
  // dlogits[n] = weight[n] * (softmax - onehot). Rows with weight 0 get loss 0
  // and zero gradient. targets I32 [N], weight F32 [N], losses [N] in the
  // logits' dtype. dlogits may be logits itself.
  virtual void CrossEntropy(Mat logits, const Tensor& targets, const Tensor& weight,
                            Tensor* losses, Mat dlogits) = 0;
  // The LM head and its loss in one op, for training: logits = h W^T (W is
  // [V, D]), losses as CrossEntropy, then dh = dlogits W (overwritten) and
  // dW += dlogits^T h. The logits never leave the op, so a backend may hold
  // them in a narrower type (CUDA with bf16 matmuls: bf16 logits and
  // dlogits, as mixed-precision training keeps them) or in pieces. The
  // default composes Gemm and CrossEntropy.
  virtual void LmHeadCrossEntropy(Mat h, Mat w, const Tensor& targets, const Tensor& weight,
                                  Tensor* losses, Mat dh, Mat dw);

  // ---- optimizer and glue ----
  virtual void AdamW(const AdamWStep& step, const Tensor& grad, Tensor* param, Tensor* m,
                     Tensor* v) = 0;
  // y += alpha * x
  virtual void Axpy(double alpha, Mat x, Mat y) = 0;
  virtual void Scale(double alpha, Mat x) = 0;
  // The sum of squares of every element of every view, in fp64, in a fixed
  // order; one wait for the result however many views (a gradient norm over
  // hundreds of tensors costs one synchronisation, not hundreds).
  virtual double SumSquares(const std::vector<Mat>& xs) = 0;
};

// The host backend. Supports F32 and F64 tensors (F64 for gradient checks).
std::unique_ptr<Backend> NewCpuBackend();

}  // namespace modamba

#endif  // MODAMBA_CORE_BACKEND_H_
