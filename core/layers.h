// Parameters and the small layers the language model is built from. Each layer
// owns its Params and has an explicit Forward and Backward over the Backend.
#ifndef MODAMBA_CORE_LAYERS_H_
#define MODAMBA_CORE_LAYERS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/backend.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace modamba {

struct Param {
  std::string name;
  Tensor value;  // on the backend's device
  Tensor grad;   // same shape; backward ops accumulate into it
  bool decay = true;  // AdamW weight decay applies
  // Which FSDP bucket holds it: 0 for the embedding, head and final norm,
  // 1 + l for layer l. Sharding gathers a bucket right before it is used.
  int bucket = 0;
};

// Called around each bucket's use, so FSDP can gather a bucket's parameters
// just before and release them just after (trainer/fsdp.h). Without hooks,
// every parameter stays resident.
class BucketHooks {
 public:
  virtual ~BucketHooks() = default;
  virtual absl::Status BeforeForward(int bucket) = 0;
  virtual absl::Status AfterForward(int bucket) = 0;
  virtual absl::Status BeforeBackward(int bucket) = 0;
  virtual absl::Status AfterBackward(int bucket) = 0;
};

// The model's parameters in creation order (the checkpoint and optimizer order).
class ParamSet {
 public:
  ParamSet(Backend* backend, DType dtype) : backend_(backend), dtype_(dtype) {}
  Param* Add(const std::string& name, Shape shape, bool decay);
  // Parameters added from now on go to this bucket.
  void set_bucket(int bucket) { bucket_ = bucket; }
  int num_buckets() const;
  const std::vector<std::unique_ptr<Param>>& all() const { return params_; }
  Param* Find(const std::string& name) const;
  // Uploads host values (same dtype as the set) into a parameter.
  void Set(Param* p, const Tensor& host) const;
  void ZeroGrads() const;
  Backend* backend() const { return backend_; }
  DType dtype() const { return dtype_; }

 private:
  Backend* backend_;
  DType dtype_;
  int bucket_ = 0;
  std::vector<std::unique_ptr<Param>> params_;
};

// Host-side initialisers (values drawn in double, stored in the set's dtype).
Tensor UniformInit(DType dtype, const Shape& shape, double bound, Rng* rng);
Tensor NormalInit(DType dtype, const Shape& shape, double std, Rng* rng);
Tensor ConstantInit(DType dtype, const Shape& shape, double value);

// Host data as a new [n] tensor on `be`; T is `dtype`'s element type.
template <typename T>
Tensor Upload(Backend* be, DType dtype, const std::vector<T>& host) {
  Tensor t = be->Empty(dtype, {static_cast<int64_t>(host.size())});
  Mat src{const_cast<T*>(host.data()), dtype, Device::kCpu, 1, t.numel(), t.numel()};
  be->Copy(src, t.mat());
  return t;
}

// Host floats as a new [rows, cols] tensor of `dtype` (F32 or F64) on `be`.
Tensor UploadMatrix(Backend* be, DType dtype, const std::vector<float>& host, int64_t rows,
                    int64_t cols);

// Per-batch state shared by every layer: the token layout and the two routings
// (by modality, and everything-in-one-group for shared projections).
struct BatchContext {
  SeqLayout seq;
  const Routing* by_modality = nullptr;
  const Routing* shared = nullptr;
};

// y = x W[g]^T: a projection with G = n_modalities weight groups when routed,
// one when shared. No bias (dt_proj's bias is fused into the scan).
class Linear {
 public:
  Linear(ParamSet* params, const std::string& name, int in, int out, int groups);
  // U(-bound, bound) per group, each group drawn independently.
  void Init(uint64_t seed, double bound);
  void Forward(const BatchContext& ctx, Mat x, Mat y) const;
  void Backward(const BatchContext& ctx, Mat x, Mat dy, Mat dx, bool accumulate_dx) const;
  const Routing& routing(const BatchContext& ctx) const;
  Param* weight() const { return w_; }
  int in() const { return in_; }
  int out() const { return out_; }

 private:
  ParamSet* params_;
  Param* w_;
  int in_, out_, groups_;
};

// With groups > 1 the weight is [groups, dim], one row per modality (as
// Mixture-of-Transformers routes its norms), else [dim]. A routed norm's
// methods take the batch context and need rows grouped by modality.
class RmsNorm {
 public:
  RmsNorm(ParamSet* params, const std::string& name, int dim, double eps, int groups = 1);
  void Init();
  // rstd: [N] scratch saved for the backward.
  void Forward(Mat x, Mat y, Tensor* rstd) const;
  void Forward(const BatchContext& ctx, Mat x, Mat y, Tensor* rstd) const;
  // x += add first (the residual stream's skip), in the same pass.
  void AddForward(Mat x, Mat add, Mat y, Tensor* rstd) const;
  void AddForward(const BatchContext& ctx, Mat x, Mat add, Mat y, Tensor* rstd) const;
  // dx += ...
  void Backward(Mat x, const Tensor& rstd, Mat dy, Mat dx) const;
  void Backward(const BatchContext& ctx, Mat x, const Tensor& rstd, Mat dy, Mat dx) const;

 private:
  // Calls fn(weight, grad, first row, rows) for each group's row range.
  template <typename Fn>
  void ForEachGroup(const BatchContext& ctx, int64_t rows, Fn fn) const;

  ParamSet* params_;
  Param* w_;
  double eps_;
  int groups_, dim_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_LAYERS_H_
