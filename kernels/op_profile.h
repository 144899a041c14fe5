// Where a training step's GPU time goes, op by op.
//
// ProfiledBackend forwards every op to a CUDA backend and brackets it with
// CUDA events on the device's stream, keyed by op name (and by shape for
// matrix products, whose cost depends on it). Events do not synchronise, so
// the step runs as it would unprofiled; Collect() waits once and adds up.
// Used by `train_bench --profile`.
#ifndef MODAMBA_KERNELS_OP_PROFILE_H_
#define MODAMBA_KERNELS_OP_PROFILE_H_

#include <map>
#include <memory>
#include <string>

#include "core/backend.h"

namespace modamba {

struct OpTime {
  double ms = 0;
  int64_t calls = 0;
};

class ProfiledBackend : public Backend {
 public:
  // `inner` must be a CUDA backend and outlive this one.
  explicit ProfiledBackend(Backend* inner);
  ~ProfiledBackend() override;

  // Waits for the queued ops and adds their times to the totals.
  void Collect();
  const std::map<std::string, OpTime>& totals() const { return totals_; }
  void Clear() { totals_.clear(); }
  // A markdown table of the totals, largest first, with each op's share of
  // `step_ms` x `steps` and the time no op was running.
  std::string Table(double step_ms, int steps) const;

  Device device() const override { return inner_->device(); }
  std::string name() const override { return inner_->name(); }
  Allocator* allocator() override { return inner_->allocator(); }
  void Copy(Mat src, Mat dst) override;
  void Fill(Mat x, double value) override;
  void Synchronize() override { inner_->Synchronize(); }
  DType MatmulInputDType(DType dtype) const override { return inner_->MatmulInputDType(dtype); }
  std::unique_ptr<Routing> MakeRouting(const int32_t* modality, int64_t n,
                                       int num_groups) override;
  void Gemm(bool trans_a, bool trans_b, double alpha, Mat a, Mat b, double beta,
            Mat c) override;
  void RoutedLinear(const Routing& routing, Mat x, const Tensor& w, Mat y) override;
  void RoutedLinearBackward(const Routing& routing, Mat x, const Tensor& w, Mat dy, Mat dx,
                            bool accumulate_dx, Tensor* dw) override;
  void EmbeddingForward(const Tensor& tokens, const Tensor& table, Mat out) override;
  void EmbeddingBackward(const Tensor& tokens, Mat dout, Tensor* dtable) override;
  void GatherRows(Mat src, const Tensor& rows, Mat dst) override;
  void ScatterAddRows(Mat src, const Tensor& rows, Mat dst) override;
  void RmsNormForward(Mat x, const Tensor& w, double eps, Mat y, Tensor* rstd) override;
  void AddRmsNormForward(Mat x, Mat add, const Tensor& w, double eps, Mat y,
                         Tensor* rstd) override;
  void RmsNormBackward(Mat x, const Tensor& w, const Tensor& rstd, Mat dy, Mat dx,
                       Tensor* dw) override;
  void ConvForward(const SeqLayout& seq, Mat x, const Tensor& w, const Tensor& b,
                   Mat u) override;
  void ConvBackward(const SeqLayout& seq, Mat x, const Tensor& w, const Tensor& b, Mat du,
                    Mat dx, Tensor* dw, Tensor* db) override;
  void ScanForward(const SeqLayout& seq, const Routing& dt_routing, const ScanInputs& in,
                   Mat y) override;
  void ScanBackward(const SeqLayout& seq, const Routing& dt_routing, const ScanInputs& in,
                    Mat dy, const ScanGrads& grads) override;
  void ConvStep(const StepLayout& step, Mat x, const Tensor& w, const Tensor& b, Tensor* state,
                Mat u) override;
  void ScanStep(const StepLayout& step, const Routing& dt_routing, const ScanInputs& in,
                Tensor* state, Mat y) override;
  void SwigluForward(Mat gate, Mat up, Mat y) override;
  void SwigluBackward(Mat gate, Mat up, Mat dy, Mat dgate, Mat dup) override;
  void Rope(const SeqLayout& seq, int head_dim, double theta, bool inverse, Mat x,
            Mat y) override;
  void AttentionForward(const SeqLayout& seq, int heads, Mat q, Mat k, Mat v, Mat out,
                        Tensor* lse) override;
  void AttentionBackward(const SeqLayout& seq, int heads, Mat q, Mat k, Mat v, Mat out,
                         const Tensor& lse, Mat dout, Mat dq, Mat dk, Mat dv) override;
  void AttentionStep(const StepLayout& step, int heads, double theta, Mat q, Mat k, Mat v,
                     Tensor* k_cache, Tensor* v_cache, Tensor* lengths, Mat out) override;
  void CrossEntropy(Mat logits, const Tensor& targets, const Tensor& weight, Tensor* losses,
                    Mat dlogits) override;
  void LmHeadCrossEntropy(Mat h, Mat w, const Tensor& targets, const Tensor& weight,
                          Tensor* losses, Mat dh, Mat dw) override;
  void AdamW(const AdamWStep& step, const Tensor& grad, Tensor* param, Tensor* m,
             Tensor* v) override;
  void Axpy(double alpha, Mat x, Mat y) override;
  void Scale(double alpha, Mat x) override;
  double SumSquares(const std::vector<Mat>& xs) override;

 private:
  struct Span;
  // Runs `op` between two events recorded under `key`.
  template <typename Op>
  auto Timed(std::string key, Op op);

  Backend* inner_;
  void* stream_;  // cudaStream_t of the inner backend's device
  std::vector<std::unique_ptr<Span>> free_, pending_;
  std::map<std::string, OpTime> totals_;
};

}  // namespace modamba

#endif  // MODAMBA_KERNELS_OP_PROFILE_H_
