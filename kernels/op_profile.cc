#include "kernels/op_profile.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_context.h"

namespace modamba {

struct ProfiledBackend::Span {
  cudaEvent_t start = nullptr, stop = nullptr;
  std::string key;
  Span() {
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~Span() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
};

namespace {

std::string Dims(const Mat& m) { return absl::StrCat(m.rows, "x", m.cols); }

}  // namespace

ProfiledBackend::ProfiledBackend(Backend* inner) : inner_(inner) {
  CHECK(inner->device() == Device::kCuda) << "ProfiledBackend needs a CUDA backend";
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  stream_ = cuda::ContextFor(device).stream();
}

ProfiledBackend::~ProfiledBackend() { Collect(); }

template <typename Op>
auto ProfiledBackend::Timed(std::string key, Op op) {
  std::unique_ptr<Span> span;
  if (free_.empty()) {
    span = std::make_unique<Span>();
  } else {
    span = std::move(free_.back());
    free_.pop_back();
  }
  span->key = std::move(key);
  auto stream = static_cast<cudaStream_t>(stream_);
  CUDA_CHECK(cudaEventRecord(span->start, stream));
  struct Stop {  // records the stop event after `op`, whatever it returns
    ProfiledBackend* self;
    std::unique_ptr<Span>* span;
    ~Stop() {
      CUDA_CHECK(cudaEventRecord((*span)->stop, static_cast<cudaStream_t>(self->stream_)));
      self->pending_.push_back(std::move(*span));
    }
  } stop{this, &span};
  return op();
}

void ProfiledBackend::Collect() {
  for (std::unique_ptr<Span>& span : pending_) {
    CUDA_CHECK(cudaEventSynchronize(span->stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, span->start, span->stop));
    OpTime& t = totals_[span->key];
    t.ms += ms;
    t.calls++;
    free_.push_back(std::move(span));
  }
  pending_.clear();
}

std::string ProfiledBackend::Table(double step_ms, int steps) const {
  std::vector<std::pair<std::string, OpTime>> rows(totals_.begin(), totals_.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  const double total = step_ms * steps;
  double busy = 0;
  std::string out = "| op | calls/step | ms/step | share |\n|---|---|---|---|\n";
  for (const auto& [key, t] : rows) {
    busy += t.ms;
    absl::StrAppendFormat(&out, "| %s | %.0f | %.3f | %.1f%% |\n", key,
                          double(t.calls) / steps, t.ms / steps, 100 * t.ms / total);
  }
  absl::StrAppendFormat(&out, "| (no op running) | - | %.3f | %.1f%% |\n", (total - busy) / steps,
                        100 * (total - busy) / total);
  return out;
}

void ProfiledBackend::Copy(Mat src, Mat dst) {
  Timed("Copy", [&] { inner_->Copy(src, dst); });
}
void ProfiledBackend::Fill(Mat x, double value) {
  Timed("Fill", [&] { inner_->Fill(x, value); });
}
std::unique_ptr<Routing> ProfiledBackend::MakeRouting(const int32_t* modality, int64_t n,
                                                      int num_groups) {
  return Timed("MakeRouting", [&] { return inner_->MakeRouting(modality, n, num_groups); });
}
void ProfiledBackend::Gemm(bool ta, bool tb, double alpha, Mat a, Mat b, double beta, Mat c) {
  const int64_t k = ta ? a.rows : a.cols;
  Timed(absl::StrCat("Gemm ", c.rows, "x", c.cols, "x", k),
        [&] { inner_->Gemm(ta, tb, alpha, a, b, beta, c); });
}
void ProfiledBackend::RoutedLinear(const Routing& r, Mat x, const Tensor& w, Mat y) {
  Timed(absl::StrCat("RoutedLinear ", Dims(x), "->", y.cols, " G", w.dim(0)),
        [&] { inner_->RoutedLinear(r, x, w, y); });
}
void ProfiledBackend::RoutedLinearBackward(const Routing& r, Mat x, const Tensor& w, Mat dy,
                                           Mat dx, bool acc, Tensor* dw) {
  Timed(absl::StrCat("RoutedLinearBackward ", Dims(x), "->", dy.cols, " G", w.dim(0)),
        [&] { inner_->RoutedLinearBackward(r, x, w, dy, dx, acc, dw); });
}
void ProfiledBackend::EmbeddingForward(const Tensor& tokens, const Tensor& table, Mat out) {
  Timed("EmbeddingForward", [&] { inner_->EmbeddingForward(tokens, table, out); });
}
void ProfiledBackend::EmbeddingBackward(const Tensor& tokens, Mat dout, Tensor* dtable) {
  Timed("EmbeddingBackward", [&] { inner_->EmbeddingBackward(tokens, dout, dtable); });
}
void ProfiledBackend::GatherRows(Mat src, const Tensor& rows, Mat dst) {
  Timed("GatherRows", [&] { inner_->GatherRows(src, rows, dst); });
}
void ProfiledBackend::ScatterAddRows(Mat src, const Tensor& rows, Mat dst) {
  Timed("ScatterAddRows", [&] { inner_->ScatterAddRows(src, rows, dst); });
}
void ProfiledBackend::RmsNormForward(Mat x, const Tensor& w, double eps, Mat y, Tensor* rstd) {
  Timed("RmsNormForward", [&] { inner_->RmsNormForward(x, w, eps, y, rstd); });
}
void ProfiledBackend::AddRmsNormForward(Mat x, Mat add, const Tensor& w, double eps, Mat y,
                                        Tensor* rstd) {
  Timed("AddRmsNormForward", [&] { inner_->AddRmsNormForward(x, add, w, eps, y, rstd); });
}
void ProfiledBackend::RmsNormBackward(Mat x, const Tensor& w, const Tensor& rstd, Mat dy, Mat dx,
                                      Tensor* dw) {
  Timed("RmsNormBackward", [&] { inner_->RmsNormBackward(x, w, rstd, dy, dx, dw); });
}
void ProfiledBackend::ConvForward(const SeqLayout& seq, Mat x, const Tensor& w, const Tensor& b,
                                  Mat u) {
  Timed("ConvForward", [&] { inner_->ConvForward(seq, x, w, b, u); });
}
void ProfiledBackend::ConvBackward(const SeqLayout& seq, Mat x, const Tensor& w, const Tensor& b,
                                   Mat du, Mat dx, Tensor* dw, Tensor* db) {
  Timed("ConvBackward", [&] { inner_->ConvBackward(seq, x, w, b, du, dx, dw, db); });
}
void ProfiledBackend::ScanForward(const SeqLayout& seq, const Routing& r, const ScanInputs& in,
                                  Mat y) {
  Timed("ScanForward", [&] { inner_->ScanForward(seq, r, in, y); });
}
void ProfiledBackend::ScanBackward(const SeqLayout& seq, const Routing& r, const ScanInputs& in,
                                   Mat dy, const ScanGrads& grads) {
  Timed(in.saved != nullptr && in.saved->numel() > 0 ? "ScanBackward (saved states)" : "ScanBackward", [&] { inner_->ScanBackward(seq, r, in, dy, grads); });
}
void ProfiledBackend::ConvStep(const StepLayout& step, Mat x, const Tensor& w, const Tensor& b,
                               Tensor* state, Mat u) {
  Timed("ConvStep", [&] { inner_->ConvStep(step, x, w, b, state, u); });
}
void ProfiledBackend::ScanStep(const StepLayout& step, const Routing& r, const ScanInputs& in,
                               Tensor* state, Mat y) {
  Timed("ScanStep", [&] { inner_->ScanStep(step, r, in, state, y); });
}
void ProfiledBackend::SwigluForward(Mat gate, Mat up, Mat y) {
  Timed("SwigluForward", [&] { inner_->SwigluForward(gate, up, y); });
}
void ProfiledBackend::SwigluBackward(Mat gate, Mat up, Mat dy, Mat dgate, Mat dup) {
  Timed("SwigluBackward", [&] { inner_->SwigluBackward(gate, up, dy, dgate, dup); });
}
void ProfiledBackend::Rope(const SeqLayout& seq, int head_dim, double theta, bool inverse, Mat x,
                           Mat y) {
  Timed("Rope", [&] { inner_->Rope(seq, head_dim, theta, inverse, x, y); });
}
void ProfiledBackend::AttentionForward(const SeqLayout& seq, int heads, Mat q, Mat k, Mat v,
                                       Mat out, Tensor* lse) {
  Timed("AttentionForward", [&] { inner_->AttentionForward(seq, heads, q, k, v, out, lse); });
}
void ProfiledBackend::AttentionBackward(const SeqLayout& seq, int heads, Mat q, Mat k, Mat v,
                                        Mat out, const Tensor& lse, Mat dout, Mat dq, Mat dk,
                                        Mat dv) {
  Timed("AttentionBackward",
        [&] { inner_->AttentionBackward(seq, heads, q, k, v, out, lse, dout, dq, dk, dv); });
}
void ProfiledBackend::AttentionStep(const StepLayout& step, int heads, double theta, Mat q, Mat k,
                                    Mat v, Tensor* k_cache, Tensor* v_cache, Tensor* lengths,
                                    Mat out) {
  Timed("AttentionStep", [&] {
    inner_->AttentionStep(step, heads, theta, q, k, v, k_cache, v_cache, lengths, out);
  });
}
void ProfiledBackend::CrossEntropy(Mat logits, const Tensor& targets, const Tensor& weight,
                                   Tensor* losses, Mat dlogits) {
  Timed(absl::StrCat("CrossEntropy ", Dims(logits)),
        [&] { inner_->CrossEntropy(logits, targets, weight, losses, dlogits); });
}
void ProfiledBackend::LmHeadCrossEntropy(Mat h, Mat w, const Tensor& targets,
                                         const Tensor& weight, Tensor* losses, Mat dh, Mat dw) {
  Timed(absl::StrCat("LmHeadCrossEntropy ", Dims(h), "->", w.rows),
        [&] { inner_->LmHeadCrossEntropy(h, w, targets, weight, losses, dh, dw); });
}
void ProfiledBackend::AdamW(const AdamWStep& step, const Tensor& grad, Tensor* param, Tensor* m,
                            Tensor* v) {
  Timed("AdamW", [&] { inner_->AdamW(step, grad, param, m, v); });
}
void ProfiledBackend::Axpy(double alpha, Mat x, Mat y) {
  Timed("Axpy", [&] { inner_->Axpy(alpha, x, y); });
}
void ProfiledBackend::Scale(double alpha, Mat x) {
  Timed("Scale", [&] { inner_->Scale(alpha, x); });
}
double ProfiledBackend::SumSquares(const std::vector<Mat>& xs) {
  return Timed("SumSquares (waits for the result)", [&] { return inner_->SumSquares(xs); });
}

}  // namespace modamba
