// The host backend: OpenBLAS for matrix products, the templated references of
// core/ops/ for everything else. F32 for training, F64 for gradient checks.
#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/ops/adamw.h"
#include "core/ops/attention.h"
#include "core/ops/conv.h"
#include "core/ops/loss.h"
#include "core/ops/norm.h"
#include "core/ops/scan.h"
#include "glog/logging.h"

namespace modamba {
namespace {

class CpuRouting : public Routing {
 public:
  CpuRouting(const int32_t* modality, int64_t n, int num_groups) : group_(modality, modality + n) {
    num_rows_ = n;
    grouped_ = std::is_sorted(modality, modality + n);
    counts_.assign(num_groups, 0);
    rows_.resize(num_groups);
    for (int64_t i = 0; i < n; ++i) {
      CHECK(modality[i] >= 0 && modality[i] < num_groups)
          << "row " << i << " has group " << modality[i] << " outside [0, " << num_groups << ")";
      counts_[modality[i]]++;
      rows_[modality[i]].push_back(i);
    }
  }
  const std::vector<int64_t>& rows(int g) const { return rows_[g]; }
  const int32_t* group() const { return group_.data(); }

 private:
  std::vector<int32_t> group_;
  std::vector<std::vector<int64_t>> rows_;
};

const CpuRouting& AsCpu(const Routing& r) { return static_cast<const CpuRouting&>(r); }

void CheckHost(const Mat& m) { CHECK(m.device == Device::kCpu) << "CPU backend got a device view"; }

// Runs fn<float> or fn<double> by dtype.
#define DISPATCH_FLOAT(dtype, ...)                                   \
  switch (dtype) {                                                   \
    case DType::kF32: { using T = float; __VA_ARGS__; break; }       \
    case DType::kF64: { using T = double; __VA_ARGS__; break; }      \
    default: LOG(FATAL) << "CPU backend: unsupported dtype " << DTypeName(dtype); \
  }

template <typename T>
void GemmT(bool ta, bool tb, double alpha, const Mat& a, const Mat& b, double beta, const Mat& c) {
  const int64_t m = c.rows, n = c.cols, k = ta ? a.rows : a.cols;
  CHECK_EQ(ta ? a.cols : a.rows, m) << "gemm: A rows";
  CHECK_EQ(tb ? b.rows : b.cols, n) << "gemm: B cols";
  CHECK_EQ(tb ? b.cols : b.rows, k) << "gemm: inner size";
  if (m == 0 || n == 0) return;
  auto opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a.ptr<float>(), a.ld, b.ptr<float>(),
                b.ld, beta, c.ptr<float>(), c.ld);
  } else {
    cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a.ptr<double>(), a.ld, b.ptr<double>(),
                b.ld, beta, c.ptr<double>(), c.ld);
  }
}

// Copies the listed rows of `src` into a contiguous matrix, or back.
template <typename T>
void GatherToContiguous(const Mat& src, const std::vector<int64_t>& rows, T* dst) {
  for (size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(dst + i * src.cols, src.ptr<T>() + rows[i] * src.ld, src.cols * sizeof(T));
  }
}

template <typename T>
void ScatterFromContiguous(const T* src, const std::vector<int64_t>& rows, bool accumulate, const Mat& dst) {
  for (size_t i = 0; i < rows.size(); ++i) {
    T* d = dst.ptr<T>() + rows[i] * dst.ld;
    const T* s = src + i * dst.cols;
    for (int64_t j = 0; j < dst.cols; ++j) d[j] = accumulate ? d[j] + s[j] : s[j];
  }
}

Mat GroupWeight(const Tensor& w, int g) {
  const int64_t out = w.dim(1), in = w.dim(2);
  Mat m = w.mat();
  m.rows = out;
  m.cols = in;
  m.ld = in;
  m.data = static_cast<char*>(w.raw()) + g * out * in * DTypeSize(w.dtype());
  return m;
}

Mat Contiguous(void* data, DType dtype, int64_t rows, int64_t cols) {
  return Mat{data, dtype, Device::kCpu, rows, cols, cols};
}

const int32_t* RowMap(const SeqLayout& seq) {
  return seq.rows != nullptr ? seq.rows->data<int32_t>() : nullptr;
}

template <typename T>
ops::ScanRef<T> MakeScanRef(const SeqLayout& seq, const CpuRouting& r, const ScanInputs& in) {
  return ops::ScanRef<T>{seq.batch, seq.seq_len, in.u.cols, in.b.cols,
                         seq.doc_start->data<uint8_t>(), RowMap(seq), r.group(),
                         in.u.ptr<T>(), in.u.ld, in.delta_raw.ptr<T>(), in.delta_raw.ld,
                         in.b.ptr<T>(), in.b.ld, in.c.ptr<T>(), in.c.ld, in.z.ptr<T>(), in.z.ld,
                         in.dt_bias->data<T>(), in.a_log->data<T>(), in.d->data<T>()};
}

template <typename T>
ops::AttentionRef<T> MakeAttentionRef(const SeqLayout& seq, int heads, const Mat& q, const Mat& k,
                                      const Mat& v) {
  CHECK(heads > 0 && q.cols % heads == 0) << "attention: " << q.cols << " columns, " << heads
                                          << " heads";
  CHECK(k.cols == q.cols && v.cols == q.cols) << "attention: q, k and v differ in columns";
  return ops::AttentionRef<T>{seq.batch, seq.seq_len, heads, q.cols / heads,
                              seq.doc_start->data<uint8_t>(), RowMap(seq), q.ptr<T>(), q.ld,
                              k.ptr<T>(), k.ld, v.ptr<T>(), v.ld};
}

// The step's stream ids, each a row of `state` ([num_streams, ...]).
const int32_t* CheckedStreams(const StepLayout& step, const Tensor& state) {
  const int32_t* streams = step.streams->data<int32_t>();
  for (int64_t i = 0; i < step.num_rows(); ++i) {
    CHECK(streams[i] >= 0 && streams[i] < state.dim(0))
        << "step row " << i << ": stream " << streams[i] << " outside [0, " << state.dim(0) << ")";
  }
  return streams;
}

class CpuBackend : public Backend {
 public:
  Device device() const override { return Device::kCpu; }
  std::string name() const override { return "cpu"; }
  Allocator* allocator() override { return CpuAllocator(); }

  void Copy(Mat src, Mat dst) override {
    CheckHost(src);
    CheckHost(dst);
    CHECK(src.rows == dst.rows && src.cols == dst.cols && src.dtype == dst.dtype) << "copy shape";
    const size_t es = DTypeSize(src.dtype);
    for (int64_t r = 0; r < src.rows; ++r) {
      std::memcpy(static_cast<char*>(dst.data) + r * dst.ld * es,
                  static_cast<const char*>(src.data) + r * src.ld * es, src.cols * es);
    }
  }

  void Fill(Mat x, double value) override {
    CheckHost(x);
    DISPATCH_FLOAT(x.dtype, for (int64_t r = 0; r < x.rows; ++r) {
      for (int64_t c = 0; c < x.cols; ++c) x.ptr<T>()[r * x.ld + c] = T(value);
    });
  }

  std::unique_ptr<Routing> MakeRouting(const int32_t* modality, int64_t n, int num_groups) override {
    return std::make_unique<CpuRouting>(modality, n, num_groups);
  }

  void Gemm(bool ta, bool tb, double alpha, Mat a, Mat b, double beta, Mat c) override {
    DISPATCH_FLOAT(c.dtype, GemmT<T>(ta, tb, alpha, a, b, beta, c));
  }

  void RoutedLinear(const Routing& routing, Mat x, const Tensor& w, Mat y) override {
    const CpuRouting& r = AsCpu(routing);
    CHECK_EQ(w.dim(0), r.num_groups()) << "routed weight groups";
    CHECK(x.rows == r.num_rows() && y.rows == r.num_rows()) << "routed linear rows";
    DISPATCH_FLOAT(x.dtype, RoutedLinearT<T>(r, x, w, y));
  }

  void RoutedLinearBackward(const Routing& routing, Mat x, const Tensor& w, Mat dy, Mat dx,
                            bool accumulate_dx, Tensor* dw) override {
    const CpuRouting& r = AsCpu(routing);
    DISPATCH_FLOAT(x.dtype, RoutedLinearBackwardT<T>(r, x, w, dy, dx, accumulate_dx, dw));
  }

  void EmbeddingForward(const Tensor& tokens, const Tensor& table, Mat out) override {
    const int32_t* tok = tokens.data<int32_t>();
    const int64_t d = table.dim(1);
    DISPATCH_FLOAT(table.dtype(), for (int64_t i = 0; i < tokens.numel(); ++i) {
      CHECK(tok[i] >= 0 && tok[i] < table.dim(0)) << "token " << tok[i] << " outside the vocab";
      std::memcpy(out.ptr<T>() + i * out.ld, table.data<T>() + tok[i] * d, d * sizeof(T));
    });
  }

  void EmbeddingBackward(const Tensor& tokens, Mat dout, Tensor* dtable) override {
    const int32_t* tok = tokens.data<int32_t>();
    const int64_t d = dtable->dim(1);
    DISPATCH_FLOAT(dtable->dtype(), for (int64_t i = 0; i < tokens.numel(); ++i) {
      T* row = dtable->data<T>() + tok[i] * d;
      const T* g = dout.ptr<T>() + i * dout.ld;
      for (int64_t j = 0; j < d; ++j) row[j] += g[j];
    });
  }

  void GatherRows(Mat src, const Tensor& rows, Mat dst) override {
    const int32_t* r = rows.data<int32_t>();
    DISPATCH_FLOAT(src.dtype, for (int64_t i = 0; i < rows.numel(); ++i) {
      CHECK(r[i] >= 0 && r[i] < src.rows) << "gather row " << r[i] << " out of range";
      std::memcpy(dst.ptr<T>() + i * dst.ld, src.ptr<T>() + r[i] * src.ld, src.cols * sizeof(T));
    });
  }

  void ScatterAddRows(Mat src, const Tensor& rows, Mat dst) override {
    const int32_t* r = rows.data<int32_t>();
    DISPATCH_FLOAT(src.dtype, for (int64_t i = 0; i < rows.numel(); ++i) {
      CHECK(r[i] >= 0 && r[i] < dst.rows) << "scatter row " << r[i] << " out of range";
      T* d = dst.ptr<T>() + r[i] * dst.ld;
      const T* s = src.ptr<T>() + i * src.ld;
      for (int64_t j = 0; j < src.cols; ++j) d[j] += s[j];
    });
  }

  void RmsNormForward(Mat x, const Tensor& w, double eps, Mat y, Tensor* rstd) override {
    DISPATCH_FLOAT(x.dtype, ops::RmsNormForward<T>(x.rows, x.cols, x.ptr<T>(), x.ld,
                                                     w.data<T>(), eps, y.ptr<T>(), y.ld,
                                                     rstd->data<T>()));
  }

  void RmsNormBackward(Mat x, const Tensor& w, const Tensor& rstd, Mat dy, Mat dx,
                       Tensor* dw) override {
    DISPATCH_FLOAT(x.dtype, ops::RmsNormBackward<T>(x.rows, x.cols, x.ptr<T>(), x.ld,
                                                      w.data<T>(), rstd.data<T>(), dy.ptr<T>(), dy.ld,
                                                      dx.ptr<T>(), dx.ld, dw->data<T>()));
  }

  void ConvForward(const SeqLayout& seq, Mat x, const Tensor& w, const Tensor& b, Mat u) override {
    DISPATCH_FLOAT(x.dtype, ops::ConvForward<T>(seq.batch, seq.seq_len, x.cols, w.dim(1),
                                                  seq.doc_start->data<uint8_t>(), RowMap(seq),
                                                  x.ptr<T>(), x.ld, w.data<T>(), b.data<T>(),
                                                  u.ptr<T>(), u.ld));
  }

  void ConvBackward(const SeqLayout& seq, Mat x, const Tensor& w, const Tensor& b, Mat du,
                    Mat dx, Tensor* dw, Tensor* db) override {
    DISPATCH_FLOAT(x.dtype,
                   ops::ConvBackward<T>(seq.batch, seq.seq_len, x.cols, w.dim(1),
                                        seq.doc_start->data<uint8_t>(), RowMap(seq), x.ptr<T>(),
                                        x.ld, w.data<T>(), b.data<T>(), du.ptr<T>(), du.ld,
                                        dx.ptr<T>(), dx.ld, dw->data<T>(), db->data<T>()));
  }

  void ScanForward(const SeqLayout& seq, const Routing& dt_routing, const ScanInputs& in,
                   Mat y) override {
    DISPATCH_FLOAT(y.dtype, ops::ScanForward<T>(MakeScanRef<T>(seq, AsCpu(dt_routing), in),
                                                  y.ptr<T>(), y.ld));
  }

  void ScanBackward(const SeqLayout& seq, const Routing& dt_routing, const ScanInputs& in, Mat dy,
                    const ScanGrads& g) override {
    DISPATCH_FLOAT(dy.dtype,
                   ops::ScanBackward<T>(MakeScanRef<T>(seq, AsCpu(dt_routing), in), dy.ptr<T>(),
                                        dy.ld, g.du.ptr<T>(), g.du.ld, g.ddelta_raw.ptr<T>(),
                                        g.ddelta_raw.ld, g.db.ptr<T>(), g.db.ld, g.dc.ptr<T>(),
                                        g.dc.ld, g.dz.ptr<T>(), g.dz.ld, g.ddt_bias->data<T>(),
                                        g.da_log->data<T>(), g.dd->data<T>()));
  }

  void ConvStep(const StepLayout& step, Mat x, const Tensor& w, const Tensor& b, Tensor* state,
                Mat u) override {
    const int32_t* streams = CheckedStreams(step, *state);
    DISPATCH_FLOAT(x.dtype, ops::ConvStep<T>(step.num_rows(), x.cols, w.dim(1), streams,
                                               step.reset->data<uint8_t>(), x.ptr<T>(), x.ld,
                                               w.data<T>(), b.data<T>(), state->data<T>(),
                                               u.ptr<T>(), u.ld));
  }

  void ScanStep(const StepLayout& step, const Routing& dt_routing, const ScanInputs& in,
                Tensor* state, Mat y) override {
    const int32_t* streams = CheckedStreams(step, *state);
    DISPATCH_FLOAT(y.dtype,
                   ops::ScanStep<T>(MakeScanRef<T>(step.AsSequences(), AsCpu(dt_routing), in),
                                    streams, state->data<T>(), y.ptr<T>(), y.ld));
  }

  void SwigluForward(Mat gate, Mat up, Mat y) override {
    DISPATCH_FLOAT(y.dtype, for (int64_t r = 0; r < y.rows; ++r) {
      for (int64_t c = 0; c < y.cols; ++c) {
        y.ptr<T>()[r * y.ld + c] =
            ops::Silu(gate.ptr<T>()[r * gate.ld + c]) * up.ptr<T>()[r * up.ld + c];
      }
    });
  }

  void SwigluBackward(Mat gate, Mat up, Mat dy, Mat dgate, Mat dup) override {
    DISPATCH_FLOAT(dy.dtype, for (int64_t r = 0; r < dy.rows; ++r) {
      for (int64_t c = 0; c < dy.cols; ++c) {
        const T g = gate.ptr<T>()[r * gate.ld + c], u = up.ptr<T>()[r * up.ld + c];
        const T d = dy.ptr<T>()[r * dy.ld + c];
        dgate.ptr<T>()[r * dgate.ld + c] = d * u * ops::SiluGrad(g);
        dup.ptr<T>()[r * dup.ld + c] = d * ops::Silu(g);
      }
    });
  }

  void Rope(const SeqLayout& seq, int head_dim, double theta, bool inverse, Mat x,
            Mat y) override {
    CHECK(head_dim > 0 && head_dim % 2 == 0 && x.cols % head_dim == 0)
        << "rope: " << x.cols << " columns are not heads of an even head_dim " << head_dim;
    DISPATCH_FLOAT(x.dtype, ops::Rope<T>(seq.batch, seq.seq_len, x.cols, head_dim, theta,
                                           inverse, seq.doc_start->data<uint8_t>(), RowMap(seq),
                                           x.ptr<T>(), x.ld, y.ptr<T>(), y.ld));
  }

  void AttentionForward(const SeqLayout& seq, int heads, Mat q, Mat k, Mat v, Mat out,
                        Tensor* lse) override {
    CHECK_EQ(lse->numel(), seq.num_rows() * heads) << "attention lse: size";
    DISPATCH_FLOAT(q.dtype, ops::AttentionForward<T>(MakeAttentionRef<T>(seq, heads, q, k, v),
                                                       out.ptr<T>(), out.ld, lse->data<T>()));
  }

  void AttentionBackward(const SeqLayout& seq, int heads, Mat q, Mat k, Mat v, Mat out,
                         const Tensor& lse, Mat dout, Mat dq, Mat dk, Mat dv) override {
    DISPATCH_FLOAT(q.dtype, ops::AttentionBackward<T>(
                                MakeAttentionRef<T>(seq, heads, q, k, v), out.ptr<T>(), out.ld,
                                lse.data<T>(), dout.ptr<T>(), dout.ld, dq.ptr<T>(), dq.ld,
                                dk.ptr<T>(), dk.ld, dv.ptr<T>(), dv.ld));
  }

  void AttentionStep(const StepLayout& step, int heads, double theta, Mat q, Mat k, Mat v,
                     Tensor* k_cache, Tensor* v_cache, Tensor* lengths, Mat out) override {
    const int32_t* streams = CheckedStreams(step, *lengths);
    const int64_t max_len = k_cache->dim(1);
    CHECK(k_cache->shape() == Shape({lengths->dim(0), max_len, q.cols}) &&
          v_cache->shape() == k_cache->shape())
        << "attention step: caches are not [streams, max_len, " << q.cols << "]";
    for (int64_t i = 0; i < step.num_rows(); ++i) {
      const int32_t pos = step.reset->data<uint8_t>()[i] ? 0 : lengths->data<int32_t>()[streams[i]];
      CHECK_LT(pos, max_len) << "attention step: stream " << streams[i] << " is full";
    }
    DISPATCH_FLOAT(q.dtype, ops::AttentionStep<T>(
                                step.num_rows(), heads, q.cols / heads, theta, streams,
                                step.reset->data<uint8_t>(), q.ptr<T>(), q.ld, k.ptr<T>(), k.ld,
                                v.ptr<T>(), v.ld, max_len, k_cache->data<T>(), v_cache->data<T>(),
                                lengths->data<int32_t>(), out.ptr<T>(), out.ld));
  }

  void CrossEntropy(Mat logits, const Tensor& targets, const Tensor& weight, Tensor* losses,
                    Mat dlogits) override {
    const int32_t* t = targets.data<int32_t>();
    for (int64_t i = 0; i < logits.rows; ++i) {
      CHECK(t[i] >= 0 && t[i] < logits.cols) << "target " << t[i] << " outside the vocab";
    }
    DISPATCH_FLOAT(logits.dtype, ops::CrossEntropy<T>(logits.rows, logits.cols, logits.ptr<T>(),
                                                       logits.ld, t, weight.data<float>(),
                                                       losses->data<T>(), dlogits.ptr<T>(),
                                                       dlogits.ld));
  }

  void AdamW(const AdamWStep& s, const Tensor& grad, Tensor* param, Tensor* m, Tensor* v) override {
    DISPATCH_FLOAT(param->dtype(),
                   ops::AdamW<T>(param->numel(), grad.data<T>(), param->data<T>(), m->data<T>(),
                                 v->data<T>(), s.lr, s.beta1, s.beta2, s.eps, s.weight_decay,
                                 s.step, s.grad_scale));
  }

  void Axpy(double alpha, Mat x, Mat y) override {
    DISPATCH_FLOAT(x.dtype, for (int64_t r = 0; r < x.rows; ++r) {
      for (int64_t c = 0; c < x.cols; ++c) y.ptr<T>()[r * y.ld + c] += T(alpha) * x.ptr<T>()[r * x.ld + c];
    });
  }

  void Scale(double alpha, Mat x) override {
    DISPATCH_FLOAT(x.dtype, for (int64_t r = 0; r < x.rows; ++r) {
      for (int64_t c = 0; c < x.cols; ++c) x.ptr<T>()[r * x.ld + c] *= T(alpha);
    });
  }

  double SumSquares(const std::vector<Mat>& xs) override {
    double sum = 0;
    for (const Mat& x : xs) {
      DISPATCH_FLOAT(x.dtype, for (int64_t r = 0; r < x.rows; ++r) {
        for (int64_t c = 0; c < x.cols; ++c) {
          double v = x.ptr<T>()[r * x.ld + c];
          sum += v * v;
        }
      });
    }
    return sum;
  }

 private:
  template <typename T>
  void RoutedLinearT(const CpuRouting& r, const Mat& x, const Tensor& w, const Mat& y) {
    for (int g = 0; g < r.num_groups(); ++g) {
      if (r.count(g) == 0) continue;
      Mat wg = GroupWeight(w, g);
      if (r.grouped()) {  // the group's rows are one range: no gather
        const int64_t first = r.rows(g).front();
        GemmT<T>(false, true, 1, x.Rows(first, r.count(g)), wg, 0, y.Rows(first, r.count(g)));
        continue;
      }
      std::vector<T> xg(r.count(g) * x.cols), yg(r.count(g) * y.cols);
      GatherToContiguous(x, r.rows(g), xg.data());
      GemmT<T>(false, true, 1, Contiguous(xg.data(), x.dtype, r.count(g), x.cols), wg, 0,
               Contiguous(yg.data(), y.dtype, r.count(g), y.cols));
      ScatterFromContiguous(yg.data(), r.rows(g), false, y);
    }
  }

  template <typename T>
  void RoutedLinearBackwardT(const CpuRouting& r, const Mat& x, const Tensor& w, const Mat& dy,
                             const Mat& dx, bool accumulate_dx, Tensor* dw) {
    for (int g = 0; g < r.num_groups(); ++g) {
      if (r.count(g) == 0) continue;
      Mat wg = GroupWeight(w, g), dwg = GroupWeight(*dw, g);
      const int64_t n = r.count(g);
      if (r.grouped()) {
        const int64_t first = r.rows(g).front();
        const Mat dyg = dy.Rows(first, n);
        GemmT<T>(false, false, 1, dyg, wg, accumulate_dx ? 1 : 0, dx.Rows(first, n));
        GemmT<T>(true, false, 1, dyg, x.Rows(first, n), 1, dwg);
        continue;
      }
      std::vector<T> xg(n * x.cols), dyg(n * dy.cols), dxg(n * dx.cols);
      GatherToContiguous(x, r.rows(g), xg.data());
      GatherToContiguous(dy, r.rows(g), dyg.data());
      Mat dyg_m = Contiguous(dyg.data(), dy.dtype, n, dy.cols);
      GemmT<T>(false, false, 1, dyg_m, wg, 0, Contiguous(dxg.data(), dx.dtype, n, dx.cols));
      ScatterFromContiguous(dxg.data(), r.rows(g), accumulate_dx, dx);
      GemmT<T>(true, false, 1, dyg_m, Contiguous(xg.data(), x.dtype, n, x.cols), 1, dwg);
    }
  }
};

}  // namespace

std::unique_ptr<Backend> NewCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace modamba
