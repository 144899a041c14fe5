#include "kernels/cuda_backend.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_context.h"
#include "kernels/kernels.h"

namespace modamba {
namespace {

using cuda::ConstView;
using cuda::View;

void CheckF32(const Mat& m, const char* what) {
  CHECK(m.device == Device::kCuda) << what << ": expected a CUDA view";
  CHECK(m.dtype == DType::kF32) << what << ": expected F32, got " << DTypeName(m.dtype);
  CHECK(m.ld >= m.cols) << what << ": row stride " << m.ld << " < " << m.cols << " columns";
}

void CheckTensor(const Tensor& t, DType dtype, const char* what) {
  CHECK(t.device() == Device::kCuda) << what << ": expected a CUDA tensor";
  CHECK(t.dtype() == dtype) << what << ": expected " << DTypeName(dtype) << ", got "
                            << DTypeName(t.dtype());
}

void CheckRows(const Mat& m, int64_t rows, const char* what) {
  CHECK_EQ(m.rows, rows) << what << ": rows";
}

View ToView(const Mat& m) { return View{m.ptr<float>(), m.rows, m.cols, m.ld}; }
ConstView ToConst(const Mat& m) { return ConstView(m.ptr<float>(), m.rows, m.cols, m.ld); }

// Rows grouped by modality: perm lists the rows of group 0, then group 1, ...
// each in ascending order; group[n] is row n's group. When the rows are
// grouped already (perm is the identity), routed projections use row ranges.
class CudaRouting : public Routing {
 public:
  CudaRouting(const int32_t* modality, int64_t n, int num_groups, Allocator* alloc,
              cudaStream_t stream)
      : host_perm_(n), host_group_(modality, modality + n) {
    CHECK_GE(num_groups, 1) << "routing: no groups";
    num_rows_ = n;
    grouped_ = std::is_sorted(modality, modality + n);
    counts_.assign(num_groups, 0);
    for (int64_t i = 0; i < n; ++i) {
      CHECK(modality[i] >= 0 && modality[i] < num_groups)
          << "row " << i << " has group " << modality[i] << " outside [0, " << num_groups << ")";
      counts_[modality[i]]++;
    }
    offsets_.assign(num_groups + 1, 0);
    for (int g = 0; g < num_groups; ++g) offsets_[g + 1] = offsets_[g] + counts_[g];
    std::vector<int64_t> next(offsets_.begin(), offsets_.end() - 1);
    for (int64_t i = 0; i < n; ++i) host_perm_[next[modality[i]]++] = static_cast<int32_t>(i);
    CHECK_LT(n, int64_t(1) << 31) << "routing: too many rows";
    perm_ = Tensor(DType::kI32, {n}, alloc);
    group_ = Tensor(DType::kI32, {n}, alloc);
    if (n > 0) {
      CUDA_CHECK(cudaMemcpyAsync(perm_.raw(), host_perm_.data(), n * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, stream));
      CUDA_CHECK(cudaMemcpyAsync(group_.raw(), host_group_.data(), n * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, stream));
    }
  }
  int64_t offset(int g) const { return offsets_[g]; }
  const int32_t* perm() const { return perm_.data<int32_t>(); }
  const int32_t* group() const { return group_.data<int32_t>(); }

 private:
  // Host copies stay alive until the asynchronous uploads have read them.
  std::vector<int32_t> host_perm_, host_group_;
  std::vector<int64_t> offsets_;
  Tensor perm_, group_;
};

const CudaRouting& AsCuda(const Routing& r) {
  const auto* c = dynamic_cast<const CudaRouting*>(&r);
  CHECK(c != nullptr) << "CUDA backend got a routing from another backend";
  return *c;
}

class CudaBackend : public Backend {
 public:
  CudaBackend(cuda::DeviceContext* ctx, MatmulPrecision precision)
      : ctx_(ctx), stream_(ctx->stream()), precision_(precision) {}

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return absl::StrCat("cuda:", ctx_->device()); }
  Allocator* allocator() override { return ctx_->allocator(); }
  void Synchronize() override { ctx_->SyncAndCheck(); }
  DType MatmulInputDType(DType dtype) const override {
    return precision_ == MatmulPrecision::kBf16 && dtype == DType::kF32 ? DType::kBF16 : dtype;
  }

  void Copy(Mat src, Mat dst) override {
    CHECK(src.rows == dst.rows && src.cols == dst.cols) << "copy: shapes differ";
    CHECK(src.dtype == dst.dtype) << "copy: dtypes differ";
    if (src.rows == 0 || src.cols == 0) return;
    const size_t es = DTypeSize(src.dtype);
    CUDA_CHECK(cudaMemcpy2DAsync(dst.data, dst.ld * es, src.data, src.ld * es, src.cols * es,
                                 src.rows, cudaMemcpyDefault, stream_));
    // Host memory may be reused (or read) as soon as we return.
    if (src.device == Device::kCpu || dst.device == Device::kCpu) ctx_->SyncAndCheck();
  }

  void Fill(Mat x, double value) override {
    CHECK(x.device == Device::kCuda) << "fill: expected a CUDA view";
    uint64_t bits = 0;
    switch (x.dtype) {
      case DType::kF32: {
        float f = static_cast<float>(value);
        uint32_t u;
        std::memcpy(&u, &f, 4);
        bits = u;
        break;
      }
      case DType::kF64:
        std::memcpy(&bits, &value, 8);
        break;
      case DType::kBF16:
        bits = Bf16Bits(static_cast<float>(value));
        break;
      case DType::kI32:
        bits = static_cast<uint32_t>(static_cast<int32_t>(value));
        break;
      case DType::kU8:
        bits = static_cast<uint8_t>(value);
        break;
    }
    cuda::Fill(x.data, x.rows, x.cols, x.ld, static_cast<int>(DTypeSize(x.dtype)), bits, stream_);
  }

  std::unique_ptr<Routing> MakeRouting(const int32_t* modality, int64_t n,
                                       int num_groups) override {
    return std::make_unique<CudaRouting>(modality, n, num_groups, allocator(), stream_);
  }

  void Gemm(bool ta, bool tb, double alpha, Mat a, Mat b, double beta, Mat c) override {
    CheckF32(a, "gemm A");
    CheckF32(b, "gemm B");
    CheckF32(c, "gemm C");
    const int64_t m = c.rows, n = c.cols, k = ta ? a.rows : a.cols;
    CHECK_EQ(ta ? a.cols : a.rows, m) << "gemm: A rows";
    CHECK_EQ(tb ? b.rows : b.cols, n) << "gemm: B cols";
    CHECK_EQ(tb ? b.cols : b.rows, k) << "gemm: inner size";
    cuda::GemmF32(ctx_->cublas(), precision_, ta, tb, m, n, k, static_cast<float>(alpha),
                  a.ptr<float>(), a.ld, b.ptr<float>(), b.ld, static_cast<float>(beta),
                  c.ptr<float>(), c.ld);
  }

  void RoutedLinear(const Routing& routing, Mat x, const Tensor& w, Mat y) override {
    const CudaRouting& r = AsCuda(routing);
    CheckMatmulInput(x, "routed linear x");
    CheckF32(y, "routed linear y");
    CheckWeight(r, w, y.cols, x.cols, "routed linear weight");
    CheckRows(x, r.num_rows(), "routed linear x");
    CheckRows(y, r.num_rows(), "routed linear y");
    const int64_t out = w.dim(1), in = w.dim(2);
    if (r.grouped() &&
        cuda::GroupedUsesBf16Copies(precision_, in, out, x.dtype == DType::kBF16)) {
      cuda::GroupedLinearBf16(ctx_->lanes(), Ranges(r), in, out, ToOperand(x),
                              w.data<float>(), ToView(y));
      return;
    }
    if (r.grouped()) {  // fp32 operands: one plain GEMM per group, on its rows
      ctx_->lanes().Parallel(r.num_groups(), [&](int g, cublasHandle_t handle) {
        if (r.count(g) == 0) return;
        const Mat xg = x.Rows(r.offset(g), r.count(g)), yg = y.Rows(r.offset(g), r.count(g));
        cuda::GemmF32(handle, precision_, false, true, xg.rows, out, in, 1.f, xg.ptr<float>(),
                      xg.ld, GroupWeight(w, g), in, 0.f, yg.ptr<float>(), yg.ld);
      });
      return;
    }
    CHECK(x.dtype == DType::kF32) << "routed linear x: BF16 needs rows grouped by modality";
    if (std::min(in, out) <= kNarrow) {
      RoutedForwardNarrow(r, x, w, y);
    } else if (precision_ == MatmulPrecision::kBf16) {
      RoutedForwardWide<__nv_bfloat16>(r, x, w, y);
    } else {
      RoutedForwardWide<float>(r, x, w, y);
    }
  }

  void RoutedLinearBackward(const Routing& routing, Mat x, const Tensor& w, Mat dy, Mat dx,
                            bool accumulate_dx, Tensor* dw) override {
    const CudaRouting& r = AsCuda(routing);
    CheckMatmulInput(x, "routed linear backward x");
    CheckMatmulInput(dy, "routed linear backward dy");
    CheckF32(dx, "routed linear backward dx");
    CheckWeight(r, w, dy.cols, x.cols, "routed linear backward weight");
    CheckWeight(r, *dw, dy.cols, x.cols, "routed linear backward dw");
    CheckRows(x, r.num_rows(), "routed linear backward x");
    CheckRows(dy, r.num_rows(), "routed linear backward dy");
    CheckRows(dx, r.num_rows(), "routed linear backward dx");
    CHECK_EQ(dx.cols, x.cols) << "routed linear backward dx: columns";
    const int64_t out = w.dim(1), in = w.dim(2);
    if (r.grouped() && cuda::GroupedUsesBf16Copies(precision_, in, out,
                                                   x.dtype == DType::kBF16 ||
                                                       dy.dtype == DType::kBF16)) {
      cuda::GroupedLinearBackwardBf16(ctx_->lanes(), Ranges(r), in, out, ToOperand(x),
                                      w.data<float>(), ToOperand(dy), accumulate_dx ? 1.f : 0.f,
                                      ToView(dx), dw->data<float>());
      return;
    }
    if (r.grouped()) {  // fp32 operands: one product pair per group, on its rows
      ctx_->lanes().Parallel(r.num_groups(), [&](int g, cublasHandle_t handle) {
        if (r.count(g) == 0) return;
        const Mat xg = x.Rows(r.offset(g), r.count(g)), dyg = dy.Rows(r.offset(g), r.count(g));
        const Mat dxg = dx.Rows(r.offset(g), r.count(g));
        cuda::GemmF32(handle, precision_, false, false, dyg.rows, in, out, 1.f, dyg.ptr<float>(),
                      dyg.ld, GroupWeight(w, g), in, accumulate_dx ? 1.f : 0.f, dxg.ptr<float>(),
                      dxg.ld);
        cuda::GemmF32(handle, precision_, true, false, out, in, dyg.rows, 1.f, dyg.ptr<float>(),
                      dyg.ld, xg.ptr<float>(), xg.ld, 1.f, dw->data<float>() + g * out * in, in);
      });
      return;
    }
    CHECK(x.dtype == DType::kF32 && dy.dtype == DType::kF32)
        << "routed linear backward: BF16 x or dy needs rows grouped by modality";
    if (out <= kNarrow && out <= in) {
      RoutedBackwardNarrowOut(r, x, w, dy, dx, accumulate_dx, dw);
    } else if (precision_ == MatmulPrecision::kBf16) {
      RoutedBackwardWide<__nv_bfloat16>(r, x, w, dy, dx, accumulate_dx, dw);
    } else {
      RoutedBackwardWide<float>(r, x, w, dy, dx, accumulate_dx, dw);
    }
  }

  void EmbeddingForward(const Tensor& tokens, const Tensor& table, Mat out) override {
    CheckTensor(tokens, DType::kI32, "embedding tokens");
    CheckTensor(table, DType::kF32, "embedding table");
    CheckF32(out, "embedding out");
    CHECK_EQ(table.shape().size(), 2u) << "embedding table: expected [V, D]";
    CHECK_EQ(out.rows, tokens.numel()) << "embedding out: rows";
    CHECK_EQ(out.cols, table.dim(1)) << "embedding out: columns";
    cuda::EmbeddingForward(tokens.data<int32_t>(), tokens.numel(), table.data<float>(),
                           table.dim(0), ToView(out), ctx_->error_flag(), stream_);
  }

  void EmbeddingBackward(const Tensor& tokens, Mat dout, Tensor* dtable) override {
    CheckTensor(tokens, DType::kI32, "embedding backward tokens");
    CheckTensor(*dtable, DType::kF32, "embedding backward dtable");
    CheckF32(dout, "embedding backward dout");
    CHECK_EQ(dout.rows, tokens.numel()) << "embedding backward dout: rows";
    CHECK_EQ(dout.cols, dtable->dim(1)) << "embedding backward dout: columns";
    cuda::EmbeddingBackward(tokens.data<int32_t>(), tokens.numel(), ToConst(dout),
                            dtable->data<float>(), dtable->dim(0), stream_);
  }

  void GatherRows(Mat src, const Tensor& rows, Mat dst) override {
    CheckF32(src, "gather src");
    CheckF32(dst, "gather dst");
    CheckTensor(rows, DType::kI32, "gather rows");
    CHECK(dst.rows == rows.numel() && dst.cols == src.cols) << "gather dst: shape";
    cuda::GatherRows(rows.data<int32_t>(), rows.numel(), ToConst(src), ToView(dst),
                     ctx_->error_flag(), stream_);
  }

  void ScatterAddRows(Mat src, const Tensor& rows, Mat dst) override {
    CheckF32(src, "scatter src");
    CheckF32(dst, "scatter dst");
    CheckTensor(rows, DType::kI32, "scatter rows");
    CHECK(src.rows == rows.numel() && dst.cols == src.cols) << "scatter src: shape";
    cuda::ScatterRows(rows.data<int32_t>(), rows.numel(), ToConst(src), ToView(dst),
                      /*accumulate=*/true, ctx_->error_flag(), stream_);
  }

  void RmsNormForward(Mat x, const Tensor& w, double eps, Mat y, Tensor* rstd) override {
    CheckNormForward(x, w, y, *rstd);
    cuda::RmsNormForward(ToConst(x), w.data<float>(), static_cast<float>(eps), ToOut(y),
                         rstd->data<float>(), stream_);
  }

  // One pass instead of Axpy's over x, add and x, then the norm's over x.
  void AddRmsNormForward(Mat x, Mat add, const Tensor& w, double eps, Mat y,
                         Tensor* rstd) override {
    CheckF32(add, "rmsnorm add");
    CHECK(add.rows == x.rows && add.cols == x.cols) << "rmsnorm add: shape";
    CheckNormForward(x, w, y, *rstd);
    cuda::AddRmsNormForward(ToView(x), ToConst(add), w.data<float>(), static_cast<float>(eps),
                            ToOut(y), rstd->data<float>(), stream_);
  }

  void RmsNormBackward(Mat x, const Tensor& w, const Tensor& rstd, Mat dy, Mat dx,
                       Tensor* dw) override {
    CheckF32(x, "rmsnorm backward x");
    CheckF32(dy, "rmsnorm backward dy");
    CheckF32(dx, "rmsnorm backward dx");
    CheckTensor(w, DType::kF32, "rmsnorm backward weight");
    CheckTensor(rstd, DType::kF32, "rmsnorm backward rstd");
    CheckTensor(*dw, DType::kF32, "rmsnorm backward dw");
    CHECK(dy.rows == x.rows && dy.cols == x.cols) << "rmsnorm backward dy: shape";
    CHECK(dx.rows == x.rows && dx.cols == x.cols) << "rmsnorm backward dx: shape";
    CHECK(w.numel() == x.cols && dw->numel() == x.cols) << "rmsnorm backward weight: size";
    CHECK_EQ(rstd.numel(), x.rows) << "rmsnorm backward rstd: size";
    cuda::RmsNormBackward(ToConst(x), w.data<float>(), rstd.data<float>(), ToConst(dy), ToView(dx),
                          dw->data<float>(), stream_);
  }

  void ConvForward(const SeqLayout& seq, Mat x, const Tensor& w, const Tensor& b, Mat u) override {
    cuda::ConvArgs a = MakeConvArgs(seq, x, w, b, "conv");
    CheckF32(u, "conv u");
    CHECK(u.rows == x.rows && u.cols == x.cols) << "conv u: shape";
    cuda::ConvForward(a, ToView(u), stream_);
  }

  void ConvBackward(const SeqLayout& seq, Mat x, const Tensor& w, const Tensor& b, Mat du, Mat dx,
                    Tensor* dw, Tensor* db) override {
    cuda::ConvArgs a = MakeConvArgs(seq, x, w, b, "conv backward");
    CheckF32(du, "conv backward du");
    CheckMatmulInput(dx, "conv backward dx");
    CheckTensor(*dw, DType::kF32, "conv backward dw");
    CheckTensor(*db, DType::kF32, "conv backward db");
    CHECK(du.rows == x.rows && du.cols == x.cols) << "conv backward du: shape";
    CHECK(dx.rows == x.rows && dx.cols == x.cols) << "conv backward dx: shape";
    CHECK(dw->numel() == w.numel() && db->numel() == b.numel()) << "conv backward grads: size";
    cuda::ConvBackward(a, ToConst(du), ToOut(dx), dw->data<float>(), db->data<float>(), stream_);
  }

  void ScanForward(const SeqLayout& seq, const Routing& dt_routing, const ScanInputs& in,
                   Mat y) override {
    cuda::ScanArgs a = MakeScanArgs(seq, dt_routing, in);
    CheckMatmulInput(y, "scan y");
    CHECK(y.rows == seq.num_rows() && y.cols == a.e_dim) << "scan y: shape";
    if (in.saved != nullptr) {
      const int64_t size = cuda::ScanSavedStatesSize(seq.batch, seq.seq_len, a.e_dim);
      if (in.saved->numel() != size || in.saved->device() != Device::kCuda) {
        *in.saved = Empty(DType::kF32, {size});
      }
      a.saved_states = in.saved->data<float>();
    }
    cuda::ScanForward(a, ToOut(y), stream_);
  }

  void ScanBackward(const SeqLayout& seq, const Routing& dt_routing, const ScanInputs& in, Mat dy,
                    const ScanGrads& grads) override {
    cuda::ScanArgs a = MakeScanArgs(seq, dt_routing, in);
    const int64_t n = seq.num_rows(), e = a.e_dim, s = a.s_dim;
    if (in.saved != nullptr && in.saved->device() == Device::kCuda &&
        in.saved->numel() == cuda::ScanSavedStatesSize(seq.batch, seq.seq_len, e)) {
      a.saved_states = in.saved->data<float>();
    }
    cuda::ScanGradArgs g;
    auto out = [&](const Mat& m, int64_t cols, const char* what) {
      CheckF32(m, what);
      CHECK(m.rows == n && m.cols == cols) << what << ": shape";
      return ToView(m);
    };
    CheckF32(dy, "scan backward dy");
    CHECK(dy.rows == n && dy.cols == e) << "scan backward dy: shape";
    g.dy = ToConst(dy);
    g.du = out(grads.du, e, "scan backward du");
    CheckMatmulInput(grads.ddelta_raw, "scan backward ddelta_raw");
    CHECK(grads.ddelta_raw.rows == n && grads.ddelta_raw.cols == e)
        << "scan backward ddelta_raw: shape";
    g.ddelta_raw = ToOut(grads.ddelta_raw);
    g.db = out(grads.db, s, "scan backward db");
    g.dc = out(grads.dc, s, "scan backward dc");
    CheckMatmulInput(grads.dz, "scan backward dz");
    CHECK(grads.dz.rows == n && grads.dz.cols == e) << "scan backward dz: shape";
    g.dz = ToOut(grads.dz);
    CheckTensor(*grads.ddt_bias, DType::kF32, "scan backward ddt_bias");
    CheckTensor(*grads.da_log, DType::kF32, "scan backward da_log");
    CheckTensor(*grads.dd, DType::kF32, "scan backward dd");
    CHECK_EQ(grads.ddt_bias->numel(), in.dt_bias->numel()) << "scan backward ddt_bias: size";
    CHECK_EQ(grads.da_log->numel(), e * s) << "scan backward da_log: size";
    CHECK_EQ(grads.dd->numel(), e) << "scan backward dd: size";
    g.ddt_bias = grads.ddt_bias->data<float>();
    g.da_log = grads.da_log->data<float>();
    g.dd = grads.dd->data<float>();
    cuda::ScanBackward(a, g, stream_);
  }

  // One token per stream: the Forward ops' arguments over the step's rows.
  void ConvStep(const StepLayout& step, Mat x, const Tensor& w, const Tensor& b, Tensor* state,
                Mat u) override {
    cuda::ConvArgs a = MakeConvArgs(step.AsSequences(), x, w, b, "conv step");
    CheckF32(u, "conv step u");
    CHECK(u.rows == x.rows && u.cols == x.cols) << "conv step u: shape";
    CHECK(state->shape() == Shape({state->dim(0), a.k_width - 1, x.cols}))
        << "conv step state: expected [streams, K-1, E]";
    cuda::ConvStep(a, MakeStepState(step, state, "conv step"), ToView(u), stream_);
  }

  void ScanStep(const StepLayout& step, const Routing& dt_routing, const ScanInputs& in,
                Tensor* state, Mat y) override {
    cuda::ScanArgs a = MakeScanArgs(step.AsSequences(), dt_routing, in);
    CheckF32(y, "scan step y");
    CHECK(y.rows == step.num_rows() && y.cols == a.e_dim) << "scan step y: shape";
    CHECK(state->shape() == Shape({state->dim(0), a.e_dim, a.s_dim}))
        << "scan step state: expected [streams, E, S]";
    cuda::ScanStep(a, MakeStepState(step, state, "scan step"), ToView(y), stream_);
  }

  void SwigluForward(Mat gate, Mat up, Mat y) override {
    CheckF32(gate, "swiglu gate");
    CheckF32(up, "swiglu up");
    CheckMatmulInput(y, "swiglu y");
    CHECK(SameShape(gate, y) && SameShape(up, y)) << "swiglu: shapes differ";
    cuda::SwigluForward(ToConst(gate), ToConst(up), ToOut(y), stream_);
  }

  void SwigluBackward(Mat gate, Mat up, Mat dy, Mat dgate, Mat dup) override {
    CheckF32(gate, "swiglu backward gate");
    CheckF32(up, "swiglu backward up");
    CheckF32(dy, "swiglu backward dy");
    CheckMatmulInput(dgate, "swiglu backward dgate");
    CheckMatmulInput(dup, "swiglu backward dup");
    CHECK(SameShape(gate, dy) && SameShape(up, dy) && SameShape(dgate, dy) && SameShape(dup, dy))
        << "swiglu backward: shapes differ";
    cuda::SwigluBackward(ToConst(gate), ToConst(up), ToConst(dy), ToOut(dgate), ToOut(dup),
                         stream_);
  }

  void Rope(const SeqLayout& seq, int head_dim, double theta, bool inverse, Mat x,
            Mat y) override {
    CheckF32(x, "rope x");
    CheckF32(y, "rope y");
    CHECK(SameShape(x, y) && x.rows == seq.num_rows()) << "rope: shapes";
    CHECK(head_dim > 0 && head_dim % 2 == 0 && x.cols % head_dim == 0)
        << "rope: " << x.cols << " columns are not heads of an even head_dim " << head_dim;
    cuda::Scratch scratch(stream_);
    cuda::Rope(seq.batch, seq.seq_len, RowMap(seq, "rope"), DocFirst(seq, &scratch), head_dim,
               static_cast<float>(theta), inverse, ToConst(x), ToView(y), stream_);
  }

  void AttentionForward(const SeqLayout& seq, int heads, Mat q, Mat k, Mat v, Mat out,
                        Tensor* lse) override {
    cuda::Scratch scratch(stream_);
    const cuda::AttentionArgs a = MakeAttentionArgs(seq, heads, q, k, v, &scratch);
    CheckMatmulInput(out, "attention out");
    CHECK(SameShape(out, q)) << "attention out: shape";
    CheckTensor(*lse, DType::kF32, "attention lse");
    CHECK_EQ(lse->numel(), seq.num_rows() * heads) << "attention lse: size";
    cuda::AttentionForward(a, ToOut(out), lse->data<float>(), stream_);
  }

  void AttentionBackward(const SeqLayout& seq, int heads, Mat q, Mat k, Mat v, Mat out,
                         const Tensor& lse, Mat dout, Mat dq, Mat dk, Mat dv) override {
    cuda::Scratch scratch(stream_);
    const cuda::AttentionArgs a = MakeAttentionArgs(seq, heads, q, k, v, &scratch);
    CheckAttentionInput(out, "attention backward out");
    CheckAttentionInput(dout, "attention backward dout");
    CheckTensor(lse, DType::kF32, "attention backward lse");
    CHECK_EQ(lse.numel(), seq.num_rows() * heads) << "attention backward lse: size";
    for (const Mat* m : {&out, &dout, &dq, &dk, &dv}) {
      CHECK(SameShape(*m, q)) << "attention backward: out, dout, dq, dk and dv need q's shape";
    }
    CheckMatmulInput(dq, "attention backward dq");
    CheckMatmulInput(dk, "attention backward dk");
    CheckMatmulInput(dv, "attention backward dv");
    int64_t lddo = 0;
    const __nv_bfloat16* dout_bf16 = Bf16Rows(dout, &scratch, &lddo);
    cuda::AttentionBackward(a, ToOperand(out), lse.data<float>(), dout_bf16, lddo, ToOut(dq),
                            ToOut(dk), ToOut(dv), stream_);
  }

  void AttentionStep(const StepLayout& step, int heads, double theta, Mat q, Mat k, Mat v,
                     Tensor* k_cache, Tensor* v_cache, Tensor* lengths, Mat out) override {
    CheckF32(q, "attention step q");
    CheckF32(k, "attention step k");
    CheckF32(v, "attention step v");
    CheckMatmulInput(out, "attention step out");
    const int64_t rows = step.num_rows();
    CHECK(q.rows == rows && SameShape(q, k) && SameShape(q, v) && SameShape(q, out))
        << "attention step: q, k, v and out need one row per stream";
    CHECK(heads > 0 && q.cols % heads == 0 && (q.cols / heads) % 2 == 0)
        << "attention step: " << q.cols << " columns are not " << heads << " even heads";
    CheckTensor(*k_cache, DType::kF32, "attention step k cache");
    CheckTensor(*v_cache, DType::kF32, "attention step v cache");
    CheckTensor(*lengths, DType::kI32, "attention step lengths");
    CHECK(k_cache->shape().size() == 3 && k_cache->dim(0) == lengths->numel() &&
          k_cache->dim(2) == q.cols && v_cache->shape() == k_cache->shape())
        << "attention step: caches are not [streams, max_len, " << q.cols << "]";
    CheckTensor(*step.streams, DType::kI32, "attention step streams");
    CheckTensor(*step.reset, DType::kU8, "attention step reset");
    cuda::AttentionStepArgs a;
    a.rows = rows;
    a.heads = heads;
    a.head_dim = static_cast<int>(q.cols / heads);
    a.log2_theta = static_cast<float>(std::log2(theta));
    a.streams = step.streams->data<int32_t>();
    a.reset = step.reset->data<uint8_t>();
    a.q = ToConst(q);
    a.k = ToConst(k);
    a.v = ToConst(v);
    a.num_streams = lengths->numel();
    a.max_len = k_cache->dim(1);
    a.k_cache = k_cache->data<float>();
    a.v_cache = v_cache->data<float>();
    a.lengths = lengths->data<int32_t>();
    a.error = ctx_->error_flag();
    cuda::AttentionStep(a, ToOut(out), stream_);
  }

  void CrossEntropy(Mat logits, const Tensor& targets, const Tensor& weight, Tensor* losses,
                    Mat dlogits) override {
    CheckF32(logits, "cross-entropy logits");
    CheckF32(dlogits, "cross-entropy dlogits");
    CheckTensor(targets, DType::kI32, "cross-entropy targets");
    CheckTensor(weight, DType::kF32, "cross-entropy weight");
    CheckTensor(*losses, DType::kF32, "cross-entropy losses");
    const int64_t n = logits.rows;
    CHECK(targets.numel() == n && weight.numel() == n && losses->numel() == n)
        << "cross-entropy: targets, weight and losses need one entry per row";
    CHECK(dlogits.rows == n && dlogits.cols == logits.cols) << "cross-entropy dlogits: shape";
    cuda::CrossEntropy(ToConst(logits), targets.data<int32_t>(), weight.data<float>(),
                       losses->data<float>(), ToView(dlogits), ctx_->error_flag(), stream_);
  }

  void LmHeadCrossEntropy(Mat h, Mat w, const Tensor& targets, const Tensor& weight,
                          Tensor* losses, Mat dh, Mat dw) override {
    if (precision_ != MatmulPrecision::kBf16) {
      Backend::LmHeadCrossEntropy(h, w, targets, weight, losses, dh, dw);
      return;
    }
    for (const auto& [m, what] : {std::pair{h, "lm head h"}, {w, "lm head w"}, {dh, "lm head dh"},
                                  {dw, "lm head dw"}}) {
      CheckF32(m, what);
    }
    CheckTensor(targets, DType::kI32, "lm head targets");
    CheckTensor(weight, DType::kF32, "lm head weight");
    CheckTensor(*losses, DType::kF32, "lm head losses");
    const int64_t n = h.rows;
    CHECK(targets.numel() == n && weight.numel() == n && losses->numel() == n)
        << "lm head: targets, weight and losses need one entry per row";
    CHECK_EQ(w.cols, h.cols) << "lm head w: columns";
    CHECK(dh.rows == n && dh.cols == h.cols) << "lm head dh: shape";
    CHECK(dw.rows == w.rows && dw.cols == w.cols) << "lm head dw: shape";
    cuda::LmHeadCrossEntropyBf16(ctx_->cublas(), ToConst(h), ToConst(w), targets.data<int32_t>(),
                                 weight.data<float>(), losses->data<float>(), ToView(dh),
                                 ToView(dw), ctx_->error_flag(), stream_);
  }

  void AdamW(const AdamWStep& step, const Tensor& grad, Tensor* param, Tensor* m,
             Tensor* v) override {
    CheckTensor(grad, DType::kF32, "adamw grad");
    CheckTensor(*param, DType::kF32, "adamw param");
    CheckTensor(*m, DType::kF32, "adamw m");
    CheckTensor(*v, DType::kF32, "adamw v");
    const int64_t n = param->numel();
    CHECK(grad.numel() == n && m->numel() == n && v->numel() == n) << "adamw: sizes differ";
    CHECK_GE(step.step, 1) << "adamw: step is 1-based";
    cuda::AdamWArgs a;
    a.lr = static_cast<float>(step.lr);
    a.beta1 = static_cast<float>(step.beta1);
    a.beta2 = static_cast<float>(step.beta2);
    a.eps = static_cast<float>(step.eps);
    a.weight_decay = static_cast<float>(step.weight_decay);
    a.grad_scale = static_cast<float>(step.grad_scale);
    a.bias_c1 = static_cast<float>(1 - std::pow(step.beta1, step.step));
    a.bias_c2 = static_cast<float>(1 - std::pow(step.beta2, step.step));
    cuda::AdamW(a, n, grad.data<float>(), param->data<float>(), m->data<float>(), v->data<float>(),
                stream_);
  }

  void Axpy(double alpha, Mat x, Mat y) override {
    CheckF32(x, "axpy x");
    CheckF32(y, "axpy y");
    CHECK(x.rows == y.rows && x.cols == y.cols) << "axpy: shapes differ";
    cuda::Axpy(static_cast<float>(alpha), ToConst(x), ToView(y), stream_);
  }

  void Scale(double alpha, Mat x) override {
    CheckF32(x, "scale x");
    cuda::Scale(static_cast<float>(alpha), ToView(x), stream_);
  }

  double SumSquares(const std::vector<Mat>& xs) override {
    std::vector<ConstView> views;
    for (const Mat& x : xs) {
      CheckF32(x, "sum of squares x");
      views.push_back(ToConst(x));
    }
    return cuda::SumSquares(views, stream_);
  }

 private:
  // An activation that only feeds products: F32, or BF16 with bf16 products.
  void CheckMatmulInput(const Mat& m, const char* what) const {
    CHECK(m.device == Device::kCuda) << what << ": expected a CUDA view";
    const bool bf16_ok = precision_ == MatmulPrecision::kBf16;
    CHECK(m.dtype == DType::kF32 || (bf16_ok && m.dtype == DType::kBF16))
        << what << ": expected F32" << (bf16_ok ? " or BF16" : "") << ", got "
        << DTypeName(m.dtype);
    CHECK(m.ld >= m.cols) << what << ": row stride " << m.ld << " < " << m.cols << " columns";
  }
  // RmsNormForward's and AddRmsNormForward's x, w, y and rstd.
  void CheckNormForward(const Mat& x, const Tensor& w, const Mat& y, const Tensor& rstd) const {
    CheckF32(x, "rmsnorm x");
    CheckMatmulInput(y, "rmsnorm y");
    CheckTensor(w, DType::kF32, "rmsnorm weight");
    CheckTensor(rstd, DType::kF32, "rmsnorm rstd");
    CHECK_EQ(w.numel(), x.cols) << "rmsnorm weight: size";
    CHECK_EQ(rstd.numel(), x.rows) << "rmsnorm rstd: size";
    CHECK(y.rows == x.rows && y.cols == x.cols) << "rmsnorm y: shape";
  }
  static cuda::Operand ToOperand(const Mat& m) {
    return {m.data, m.ld, m.dtype == DType::kBF16};
  }
  static cuda::OutView ToOut(const Mat& m) {
    return {m.data, m.rows, m.cols, m.ld, m.dtype == DType::kBF16};
  }

  static void CheckWeight(const CudaRouting& r, const Tensor& w, int64_t out, int64_t in,
                          const char* what) {
    CheckTensor(w, DType::kF32, what);
    CHECK_EQ(w.shape().size(), 3u) << what << ": expected [G, out, in]";
    CHECK_EQ(w.dim(0), r.num_groups()) << what << ": groups";
    CHECK_EQ(w.dim(1), out) << what << ": out";
    CHECK_EQ(w.dim(2), in) << what << ": in";
  }

  static std::vector<cuda::RowRange> Ranges(const CudaRouting& r) {
    std::vector<cuda::RowRange> ranges;
    for (int g = 0; g < r.num_groups(); ++g) ranges.push_back({r.offset(g), r.count(g)});
    return ranges;
  }

  static const float* GroupWeight(const Tensor& w, int g) {
    return w.data<float>() + g * w.dim(1) * w.dim(2);
  }

  // A GEMM operand: fp32 as given (any row stride), or a contiguous bf16 copy.
  template <typename T>
  struct Operand {
    const T* data;
    int64_t ld;
  };
  template <typename T>
  Operand<T> AsOperand(const float* data, int64_t rows, int64_t cols, int64_t ld,
                       cuda::Scratch* scratch) {
    if constexpr (std::is_same_v<T, float>) {
      return {data, ld};
    } else {
      T* copy = scratch->Alloc<T>(rows * cols);
      cuda::ConvertToBf16(ConstView(data, rows, cols, ld), copy, stream_);
      return {copy, cols};
    }
  }

  // C (fp32) = op(A) op(B) + beta C.
  template <typename T>
  void Matmul(bool ta, bool tb, int64_t m, int64_t n, int64_t k, Operand<T> a, Operand<T> b,
              float beta, float* c, int64_t ldc) {
    if constexpr (std::is_same_v<T, float>) {
      cuda::GemmF32(ctx_->cublas(), precision_, ta, tb, m, n, k, 1.f, a.data, a.ld, b.data, b.ld,
                    beta, c, ldc);
    } else {
      cuda::GemmBf16(ctx_->cublas(), ta, tb, m, n, k, 1.f, a.data, a.ld, b.data, b.ld, beta, c,
                     ldc);
    }
  }

  // Projections with a side at most this wide (x_proj's output, dt_proj's
  // input) run as one GEMM over all groups, G times the FLOPs of a thin
  // product, instead of gathering and scattering the wide side row by row;
  // the wide operand goes to cuBLAS as fp32 (measured: kernels/NOTES.md).
  static constexpr int64_t kNarrow = 128;

  void Gemm32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
              const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    cuda::GemmF32(ctx_->cublas(), precision_, ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc);
  }

  void RoutedForwardNarrow(const CudaRouting& r, const Mat& x, const Tensor& w, const Mat& y) {
    const int groups = r.num_groups();
    const int64_t out = w.dim(1), in = w.dim(2), n = r.num_rows();
    cuda::Scratch scratch(stream_);
    if (out <= in) {
      // Every group's output, then each row's own: w is [G * out, in] as stored.
      float* y_all = scratch.Alloc<float>(n * groups * out);
      Gemm32(false, true, n, groups * out, in, x.ptr<float>(), x.ld, w.data<float>(), in, 0.f,
             y_all, groups * out);
      cuda::SelectGroupCols(r.group(), groups, y_all, ToView(y), false, stream_);
    } else {
      // Each row's input in its group's block of columns, against the groups'
      // weights side by side.
      float* x_exp = scratch.Alloc<float>(n * groups * in);
      float* w_cat = scratch.Alloc<float>(out * groups * in);
      cuda::ExpandRows(r.group(), groups, ToConst(x), x_exp, stream_);
      cuda::ConcatGroups(w.data<float>(), groups, out, in, w_cat, stream_);
      Gemm32(false, true, n, out, groups * in, x_exp, groups * in, w_cat, groups * in, 0.f,
             y.ptr<float>(), y.ld);
    }
  }

  // Narrow output (x_proj): dy in its group's block of columns gives
  // dx = dy_exp W_stack and dW_stack += dy_exp^T x. (A narrow input gains
  // nothing here: the gathered path is faster for dt_proj's backward.)
  void RoutedBackwardNarrowOut(const CudaRouting& r, const Mat& x, const Tensor& w, const Mat& dy,
                               const Mat& dx, bool accumulate_dx, Tensor* dw) {
    const int groups = r.num_groups();
    const int64_t out = w.dim(1), in = w.dim(2), n = r.num_rows();
    cuda::Scratch scratch(stream_);
    float* dy_exp = scratch.Alloc<float>(n * groups * out);
    cuda::ExpandRows(r.group(), groups, ToConst(dy), dy_exp, stream_);
    Gemm32(false, false, n, in, groups * out, dy_exp, groups * out, w.data<float>(), in,
           accumulate_dx ? 1.f : 0.f, dx.ptr<float>(), dx.ld);
    Gemm32(true, false, groups * out, in, n, dy_exp, groups * out, x.ptr<float>(), x.ld, 1.f,
           dw->data<float>(), in);
  }

  // Rows gathered by group (as GEMM operands of type T), one GEMM per group,
  // results scattered back.
  template <typename T>
  void RoutedForwardWide(const CudaRouting& r, const Mat& x, const Tensor& w, const Mat& y) {
    const int groups = r.num_groups();
    const int64_t out = w.dim(1), in = w.dim(2), n = r.num_rows();
    cuda::Scratch scratch(stream_);
    T* xp = scratch.Alloc<T>(n * in);
    float* yp = scratch.Alloc<float>(n * out);
    Gather(r, x, xp);
    for (int g = 0; g < groups; ++g) {
      if (r.count(g) == 0) continue;
      const int64_t off = r.offset(g);
      Matmul<T>(false, true, r.count(g), out, in, Operand<T>{xp + off * in, in},
                AsOperand<T>(GroupWeight(w, g), out, in, in, &scratch), 0.f, yp + off * out, out);
    }
    cuda::ScatterRows(r.perm(), n, ConstView(yp, n, out, out), ToView(y), false, nullptr, stream_);
  }

  template <typename T>
  void RoutedBackwardWide(const CudaRouting& r, const Mat& x, const Tensor& w, const Mat& dy,
                          const Mat& dx, bool accumulate_dx, Tensor* dw) {
    const int groups = r.num_groups();
    const int64_t out = w.dim(1), in = w.dim(2), n = r.num_rows();
    float* dw_data = dw->data<float>();
    cuda::Scratch scratch(stream_);
    T* xp = scratch.Alloc<T>(n * in);
    T* dyp = scratch.Alloc<T>(n * out);
    float* dxp = scratch.Alloc<float>(n * in);
    Gather(r, x, xp);
    Gather(r, dy, dyp);
    for (int g = 0; g < groups; ++g) {
      if (r.count(g) == 0) continue;
      const int64_t off = r.offset(g), cnt = r.count(g);
      const Operand<T> dyg{dyp + off * out, out};
      Matmul<T>(false, false, cnt, in, out, dyg,
                AsOperand<T>(GroupWeight(w, g), out, in, in, &scratch), 0.f, dxp + off * in, in);
      Matmul<T>(true, false, out, in, cnt, dyg, Operand<T>{xp + off * in, in}, 1.f,
                dw_data + g * out * in, in);
    }
    cuda::ScatterRows(r.perm(), n, ConstView(dxp, n, in, in), ToView(dx), accumulate_dx, nullptr,
                      stream_);
  }

  // Rows of m in group order into a contiguous matrix.
  void Gather(const CudaRouting& r, const Mat& m, float* dst) {
    cuda::GatherRows(r.perm(), r.num_rows(), ToConst(m), View{dst, m.rows, m.cols, m.cols}, nullptr,
                     stream_);
  }
  void Gather(const CudaRouting& r, const Mat& m, __nv_bfloat16* dst) {
    cuda::GatherRowsBf16(r.perm(), r.num_rows(), ToConst(m), dst, stream_);
  }

  static const uint8_t* DocStarts(const SeqLayout& seq, const char* what) {
    CHECK(seq.doc_start != nullptr) << what << ": missing doc_start";
    CheckTensor(*seq.doc_start, DType::kU8, what);
    CHECK_EQ(seq.doc_start->numel(), seq.num_rows()) << what << ": doc_start size";
    return seq.doc_start->data<uint8_t>();
  }

  static const int32_t* RowMap(const SeqLayout& seq, const char* what) {
    if (seq.rows == nullptr) return nullptr;
    CheckTensor(*seq.rows, DType::kI32, what);
    CHECK_EQ(seq.rows->numel(), seq.num_rows()) << what << ": row map size";
    return seq.rows->data<int32_t>();
  }

  static bool SameShape(const Mat& a, const Mat& b) { return a.rows == b.rows && a.cols == b.cols; }

  // Attention computes in bf16 whatever the product precision: F32 inputs
  // are rounded into a copy.
  static void CheckAttentionInput(const Mat& m, const char* what) {
    CHECK(m.device == Device::kCuda) << what << ": expected a CUDA view";
    CHECK(m.dtype == DType::kF32 || m.dtype == DType::kBF16)
        << what << ": expected F32 or BF16, got " << DTypeName(m.dtype);
  }
  // m's rows as bf16: m itself, or a contiguous rounded copy in `scratch`.
  const __nv_bfloat16* Bf16Rows(const Mat& m, cuda::Scratch* scratch, int64_t* ld) {
    if (m.dtype == DType::kBF16) {
      *ld = m.ld;
      return m.ptr<__nv_bfloat16>();
    }
    auto* copy = scratch->Alloc<__nv_bfloat16>(m.rows * m.cols);
    cuda::ConvertToBf16(ToConst(m), copy, stream_);
    *ld = m.cols;
    return copy;
  }
  const int32_t* DocFirst(const SeqLayout& seq, cuda::Scratch* scratch) {
    auto* first = scratch->Alloc<int32_t>(seq.num_rows());
    cuda::DocFirst(DocStarts(seq, "document starts"), seq.batch, seq.seq_len, first, stream_);
    return first;
  }
  cuda::AttentionArgs MakeAttentionArgs(const SeqLayout& seq, int heads, const Mat& q,
                                        const Mat& k, const Mat& v, cuda::Scratch* scratch) {
    CheckAttentionInput(q, "attention q");
    CheckAttentionInput(k, "attention k");
    CheckAttentionInput(v, "attention v");
    CHECK(SameShape(q, k) && SameShape(q, v) && q.rows == seq.num_rows())
        << "attention: q, k and v need [N, heads * head_dim]";
    CHECK(heads > 0 && q.cols % heads == 0) << "attention: " << q.cols << " columns, " << heads
                                            << " heads";
    cuda::AttentionArgs a;
    a.batch = seq.batch;
    a.seq_len = seq.seq_len;
    a.heads = heads;
    a.head_dim = static_cast<int>(q.cols / heads);
    a.rows = RowMap(seq, "attention");
    a.first = DocFirst(seq, scratch);
    a.q = Bf16Rows(q, scratch, &a.ldq);
    a.k = Bf16Rows(k, scratch, &a.ldk);
    a.v = Bf16Rows(v, scratch, &a.ldv);
    return a;
  }

  cuda::ConvArgs MakeConvArgs(const SeqLayout& seq, const Mat& x, const Tensor& w, const Tensor& b,
                              const char* what) {
    CheckF32(x, what);
    CheckTensor(w, DType::kF32, what);
    CheckTensor(b, DType::kF32, what);
    CHECK_EQ(x.rows, seq.num_rows()) << what << ": x rows";
    CHECK(w.shape().size() == 2 && w.dim(0) == x.cols) << what << ": weight is not [E, K]";
    CHECK_EQ(b.numel(), x.cols) << what << ": bias size";
    cuda::ConvArgs a;
    a.batch = seq.batch;
    a.seq_len = seq.seq_len;
    a.k_width = w.dim(1);
    a.doc_start = DocStarts(seq, what);
    a.rows = RowMap(seq, what);
    a.x = ToConst(x);
    a.w = w.data<float>();
    a.b = b.data<float>();
    return a;
  }

  cuda::ScanArgs MakeScanArgs(const SeqLayout& seq, const Routing& routing, const ScanInputs& in) {
    const CudaRouting& r = AsCuda(routing);
    const int64_t n = seq.num_rows(), e = in.u.cols, s = in.b.cols;
    CHECK_EQ(r.num_rows(), n) << "scan routing: rows";
    auto input = [&](const Mat& m, int64_t cols, const char* what) {
      CheckF32(m, what);
      CHECK(m.rows == n && m.cols == cols) << what << ": shape";
      return ToConst(m);
    };
    cuda::ScanArgs a;
    a.batch = seq.batch;
    a.seq_len = seq.seq_len;
    a.e_dim = e;
    a.s_dim = s;
    a.doc_start = DocStarts(seq, "scan");
    a.rows = RowMap(seq, "scan");
    a.u = input(in.u, e, "scan u");
    a.delta_raw = input(in.delta_raw, e, "scan delta_raw");
    a.b = input(in.b, s, "scan B");
    a.c = input(in.c, s, "scan C");
    a.z = input(in.z, e, "scan z");
    CheckTensor(*in.dt_bias, DType::kF32, "scan dt_bias");
    CheckTensor(*in.a_log, DType::kF32, "scan A_log");
    CheckTensor(*in.d, DType::kF32, "scan D");
    const int64_t groups = in.dt_bias->numel() / std::max<int64_t>(e, 1);
    CHECK_EQ(in.dt_bias->numel(), groups * e) << "scan dt_bias: expected [G, E]";
    CHECK(groups == 1 || groups == r.num_groups())
        << "scan dt_bias: " << groups << " rows for " << r.num_groups() << " routing groups";
    CHECK_EQ(in.a_log->numel(), e * s) << "scan A_log: size";
    CHECK_EQ(in.d->numel(), e) << "scan D: size";
    CHECK_LE(s, cuda::kScanMaxState)
        << "scan: the CUDA kernels support d_state up to " << cuda::kScanMaxState;
    a.dt_groups = groups;
    a.group = groups > 1 ? r.group() : nullptr;
    a.dt_bias = in.dt_bias->data<float>();
    a.a_log = in.a_log->data<float>();
    a.d = in.d->data<float>();
    return a;
  }

  cuda::StepState MakeStepState(const StepLayout& step, Tensor* state, const char* what) {
    CheckTensor(*step.streams, DType::kI32, what);
    CheckTensor(*state, DType::kF32, what);
    return cuda::StepState{step.streams->data<int32_t>(), state->dim(0), state->data<float>(),
                           ctx_->error_flag()};
  }

  cuda::DeviceContext* ctx_;
  cudaStream_t stream_;
  MatmulPrecision precision_;
};

}  // namespace

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<Backend>> NewBackend(absl::string_view device, int gpu) {
  if (device == "cpu") return NewCpuBackend();
  if (device != "gpu") {
    return absl::InvalidArgumentError(absl::StrCat("device '", device, "': must be cpu or gpu"));
  }
  if (CudaDeviceCount() == 0) return absl::FailedPreconditionError("device gpu: no CUDA device is visible");
  CudaBackendOptions options;
  options.device = gpu;
  return NewCudaBackend(options);
}

absl::StatusOr<std::unique_ptr<Backend>> NewCudaBackend(const CudaBackendOptions& options) {
  const int count = CudaDeviceCount();
  if (options.device < 0 || options.device >= count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA device ", options.device, " requested but ", count, " device(s) are usable"));
  }
  return std::unique_ptr<Backend>(
      new CudaBackend(&cuda::ContextFor(options.device), options.matmul));
}

CudaMemoryStats GetCudaMemoryStats(int device) {
  cuda::DeviceContext& ctx = cuda::ContextFor(device);
  CudaMemoryStats s;
  s.in_use_bytes = ctx.BytesInUse();
  s.peak_bytes = ctx.PeakBytes();
  return s;
}

void ResetCudaPeakMemory(int device) { cuda::ContextFor(device).ResetPeak(); }

}  // namespace modamba
