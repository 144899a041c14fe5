#include "core/layers.h"

#include <algorithm>
#include <cstring>

#include "glog/logging.h"

namespace modamba {

Param* ParamSet::Add(const std::string& name, Shape shape, bool decay) {
  CHECK(Find(name) == nullptr) << "duplicate parameter " << name;
  auto p = std::make_unique<Param>();
  p->name = name;
  p->value = backend_->Empty(dtype_, shape);
  p->grad = backend_->Empty(dtype_, shape);
  backend_->Fill(p->grad.mat(), 0);
  p->decay = decay;
  p->bucket = bucket_;
  params_.push_back(std::move(p));
  return params_.back().get();
}

int ParamSet::num_buckets() const {
  int n = 0;
  for (const auto& p : params_) n = std::max(n, p->bucket + 1);
  return n;
}

Param* ParamSet::Find(const std::string& name) const {
  for (const auto& p : params_) {
    if (p->name == name) return p.get();
  }
  return nullptr;
}

void ParamSet::Set(Param* p, const Tensor& host) const {
  CHECK(host.shape() == p->value.shape()) << p->name << ": shape " << ShapeString(host.shape())
                                          << " != " << ShapeString(p->value.shape());
  backend_->Copy(host.mat(), p->value.mat());
}

void ParamSet::ZeroGrads() const {
  for (const auto& p : params_) backend_->Fill(p->grad.mat(), 0);
}

namespace {
template <typename F>
Tensor Generate(DType dtype, const Shape& shape, F next) {
  Tensor t(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    double v = next();
    if (dtype == DType::kF64) {
      t.data<double>()[i] = v;
    } else {
      CHECK(dtype == DType::kF32) << "initialisers make F32 or F64";
      t.data<float>()[i] = static_cast<float>(v);
    }
  }
  return t;
}
}  // namespace

Tensor UniformInit(DType dtype, const Shape& shape, double bound, Rng* rng) {
  return Generate(dtype, shape, [&] { return rng->Uniform(-bound, bound); });
}

Tensor NormalInit(DType dtype, const Shape& shape, double std, Rng* rng) {
  return Generate(dtype, shape, [&] { return rng->Normal(0, std); });
}

Tensor ConstantInit(DType dtype, const Shape& shape, double value) {
  return Generate(dtype, shape, [&] { return value; });
}

Tensor UploadMatrix(Backend* be, DType dtype, const std::vector<float>& host, int64_t rows,
                    int64_t cols) {
  Tensor staged(dtype, {rows, cols});
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (dtype == DType::kF64) staged.data<double>()[i] = host[i];
    else staged.data<float>()[i] = host[i];
  }
  Tensor t = be->Empty(dtype, {rows, cols});
  be->Copy(staged.mat(), t.mat());
  return t;
}

Linear::Linear(ParamSet* params, const std::string& name, int in, int out, int groups)
    : params_(params), in_(in), out_(out), groups_(groups) {
  w_ = params->Add(name + ".weight", {groups, out, in}, /*decay=*/true);
}

void Linear::Init(uint64_t seed, double bound) {
  // Group g's stream depends on the name and g only, so a dense model and a
  // one-modality routed model start from identical weights.
  Tensor host(params_->dtype(), w_->value.shape());
  const int64_t per_group = static_cast<int64_t>(out_) * in_;
  for (int g = 0; g < groups_; ++g) {
    Rng rng = Rng::ForName(seed, w_->name + "/" + std::to_string(g));
    Tensor part = UniformInit(params_->dtype(), {per_group}, bound, &rng);
    std::memcpy(static_cast<char*>(host.raw()) + g * part.nbytes(), part.raw(), part.nbytes());
  }
  params_->Set(w_, host);
}

const Routing& Linear::routing(const BatchContext& ctx) const {
  return groups_ == 1 ? *ctx.shared : *ctx.by_modality;
}

void Linear::Forward(const BatchContext& ctx, Mat x, Mat y) const {
  params_->backend()->RoutedLinear(routing(ctx), x, w_->value, y);
}

void Linear::Backward(const BatchContext& ctx, Mat x, Mat dy, Mat dx, bool accumulate_dx) const {
  params_->backend()->RoutedLinearBackward(routing(ctx), x, w_->value, dy, dx, accumulate_dx,
                                           &w_->grad);
}

RmsNorm::RmsNorm(ParamSet* params, const std::string& name, int dim, double eps, int groups)
    : params_(params), eps_(eps), groups_(groups), dim_(dim) {
  w_ = params->Add(name + ".weight", groups == 1 ? Shape{dim} : Shape{groups, dim},
                   /*decay=*/false);
}

void RmsNorm::Init() { params_->Set(w_, ConstantInit(params_->dtype(), w_->value.shape(), 1.0)); }

void RmsNorm::Forward(Mat x, Mat y, Tensor* rstd) const {
  params_->backend()->RmsNormForward(x, w_->value, eps_, y, rstd);
}

void RmsNorm::AddForward(Mat x, Mat add, Mat y, Tensor* rstd) const {
  params_->backend()->AddRmsNormForward(x, add, w_->value, eps_, y, rstd);
}

void RmsNorm::Backward(Mat x, const Tensor& rstd, Mat dy, Mat dx) const {
  params_->backend()->RmsNormBackward(x, w_->value, rstd, dy, dx, &w_->grad);
}

template <typename Fn>
void RmsNorm::ForEachGroup(const BatchContext& ctx, int64_t rows, Fn fn) const {
  if (groups_ == 1) {
    fn(w_->value, &w_->grad, 0, rows);
    return;
  }
  const Routing& r = *ctx.by_modality;
  CHECK(r.grouped()) << w_->name << ": a routed norm needs rows grouped by modality";
  CHECK_EQ(r.num_groups(), groups_) << w_->name << ": routing groups";
  int64_t first = 0;
  for (int g = 0; g < groups_; ++g) {
    if (r.count(g) > 0) {
      Tensor grad = Tensor::View(w_->grad, g * dim_, {dim_});
      fn(Tensor::View(w_->value, g * dim_, {dim_}), &grad, first, r.count(g));
    }
    first += r.count(g);
  }
}

void RmsNorm::Forward(const BatchContext& ctx, Mat x, Mat y, Tensor* rstd) const {
  ForEachGroup(ctx, x.rows, [&](const Tensor& w, Tensor*, int64_t first, int64_t n) {
    Tensor part = Tensor::View(*rstd, first, {n});
    params_->backend()->RmsNormForward(x.Rows(first, n), w, eps_, y.Rows(first, n), &part);
  });
}

void RmsNorm::AddForward(const BatchContext& ctx, Mat x, Mat add, Mat y, Tensor* rstd) const {
  ForEachGroup(ctx, x.rows, [&](const Tensor& w, Tensor*, int64_t first, int64_t n) {
    Tensor part = Tensor::View(*rstd, first, {n});
    params_->backend()->AddRmsNormForward(x.Rows(first, n), add.Rows(first, n), w, eps_,
                                          y.Rows(first, n), &part);
  });
}

void RmsNorm::Backward(const BatchContext& ctx, Mat x, const Tensor& rstd, Mat dy, Mat dx) const {
  ForEachGroup(ctx, x.rows, [&](const Tensor& w, Tensor* dw, int64_t first, int64_t n) {
    Tensor part = Tensor::View(rstd, first, {n});
    params_->backend()->RmsNormBackward(x.Rows(first, n), w, part, dy.Rows(first, n),
                                        dx.Rows(first, n), dw);
  });
}

}  // namespace modamba
