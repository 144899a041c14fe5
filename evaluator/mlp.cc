#include "evaluator/mlp.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/status_macros.h"

namespace modamba::eval {
namespace {

constexpr int64_t kChunk = 1024;  // rows per forward pass at inference

// Uploads host floats into a backend tensor of `shape`.
Tensor Upload(Backend* be, const float* host, Shape shape) {
  Tensor t = be->Empty(DType::kF32, shape);
  Mat src{const_cast<float*>(host), DType::kF32, Device::kCpu, t.mat().rows, t.mat().cols,
          t.mat().cols};
  be->Copy(src, t.mat());
  return t;
}

Tensor Zeros(Backend* be, Shape shape) {
  Tensor t = be->Empty(DType::kF32, shape);
  be->Fill(t.mat(), 0);
  return t;
}

void Download(Backend* be, const Tensor& t, float* host) {
  be->Copy(t.mat(), Mat{host, DType::kF32, Device::kCpu, t.mat().rows, t.mat().cols,
                        t.mat().cols});
}

std::string SpecString(const MlpSpec& s) {
  return absl::StrCat(s.input, ",", absl::StrJoin(s.hidden, ","), ",", s.classes);
}

}  // namespace

Mlp::Mlp(const MlpSpec& spec, Backend* backend)
    : spec_(spec), be_(backend), input_mean_(spec.input, 0.f), input_scale_(spec.input, 1.f) {}

Mlp::Layer Mlp::MakeLayer(int in, int out) {
  Layer l;
  l.w = be_->Empty(DType::kF32, {out, in});
  l.scale = be_->Empty(DType::kF32, {out, 1});
  be_->Fill(l.scale.mat(), 1);
  l.bias = Zeros(be_, {out});
  l.gw = Zeros(be_, {out, in});
  l.gscale = Zeros(be_, {out, 1});
  l.gbias = Zeros(be_, {out});
  l.mw = Zeros(be_, {out, in});
  l.vw = Zeros(be_, {out, in});
  l.ms = Zeros(be_, {out, 1});
  l.vs = Zeros(be_, {out, 1});
  l.mb = Zeros(be_, {out});
  l.vb = Zeros(be_, {out});
  return l;
}

absl::StatusOr<std::unique_ptr<Mlp>> Mlp::Create(const MlpSpec& spec, Backend* backend,
                                                 uint64_t seed) {
  if (spec.input < 1 || spec.hidden.empty() || spec.classes < 2 ||
      *std::min_element(spec.hidden.begin(), spec.hidden.end()) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("MLP spec ", SpecString(spec),
                                                   ": needs an input, hidden layers and >= 2 classes"));
  }
  std::unique_ptr<Mlp> mlp(new Mlp(spec, backend));
  int in = spec.input;
  std::vector<int> outs = spec.hidden;
  outs.push_back(spec.classes);
  for (size_t i = 0; i < outs.size(); ++i) {
    Layer layer = mlp->MakeLayer(in, outs[i]);
    // He-uniform for the SiLU layers, 1 / sqrt(in) for the logits.
    const bool last = i + 1 == outs.size();
    const double bound = last ? 1.0 / std::sqrt(in) : std::sqrt(6.0 / in);
    Rng rng = Rng::ForName(seed, absl::StrCat("mlp/", i));
    std::vector<float> w(static_cast<size_t>(outs[i]) * in);
    for (float& x : w) x = static_cast<float>(rng.Uniform(-bound, bound));
    layer.w = Upload(backend, w.data(), {outs[i], in});
    mlp->layers_.push_back(std::move(layer));
    in = outs[i];
  }
  return mlp;
}

void Mlp::SetInputNormalisation(std::vector<float> mean, std::vector<float> scale) {
  input_mean_ = std::move(mean);
  input_scale_ = std::move(scale);
}

void Mlp::RunForward(const float* x, int64_t n, Pass* pass) {
  const int hidden = static_cast<int>(spec_.hidden.size());
  if (pass->n != n) {
    pass->n = n;
    std::vector<float> ones(n, 1.f);
    pass->ones = Upload(be_, ones.data(), {n, 1});
    std::vector<uint8_t> starts(n, 1);
    pass->doc_start = be_->Empty(DType::kU8, {n});
    be_->Copy(Mat{starts.data(), DType::kU8, Device::kCpu, 1, n, n}, pass->doc_start.mat());
    pass->pre.clear();
    pass->act.clear();
    pass->act.push_back(be_->Empty(DType::kF32, {n, spec_.input}));
    for (int l = 0; l < hidden; ++l) {
      pass->pre.push_back(be_->Empty(DType::kF32, {n, spec_.hidden[l]}));
      pass->act.push_back(be_->Empty(DType::kF32, {n, spec_.hidden[l]}));
    }
    pass->logits = be_->Empty(DType::kF32, {n, spec_.classes});
  }
  std::vector<float> normed(static_cast<size_t>(n) * spec_.input);
  for (int64_t i = 0; i < n; ++i) {
    for (int j = 0; j < spec_.input; ++j) {
      normed[i * spec_.input + j] = (x[i * spec_.input + j] - input_mean_[j]) * input_scale_[j];
    }
  }
  be_->Copy(Mat{normed.data(), DType::kF32, Device::kCpu, n, spec_.input, spec_.input},
            pass->act[0].mat());
  // Every row is a one-token sequence, so the conv op sees only its own input.
  const SeqLayout rows{n, 1, &pass->doc_start};
  for (int l = 0; l < hidden; ++l) {
    be_->Gemm(false, true, 1.0, pass->act[l].mat(), layers_[l].w.mat(), 0.0, pass->pre[l].mat());
    be_->ConvForward(rows, pass->pre[l].mat(), layers_[l].scale, layers_[l].bias,
                     pass->act[l + 1].mat());
  }
  const Layer& out = layers_.back();
  be_->Gemm(false, true, 1.0, pass->act[hidden].mat(), out.w.mat(), 0.0, pass->logits.mat());
  be_->Gemm(false, false, 1.0, pass->ones.mat(), out.bias.mat(), 1.0, pass->logits.mat());
}

double Mlp::TrainStep(const float* x, const int32_t* labels, int n, const AdamWStep& step) {
  Pass& pass = train_pass_;
  RunForward(x, n, &pass);
  const int hidden = static_cast<int>(spec_.hidden.size());
  Tensor targets = be_->Empty(DType::kI32, {n});
  be_->Copy(Mat{const_cast<int32_t*>(labels), DType::kI32, Device::kCpu, 1, n, n}, targets.mat());
  std::vector<float> w(n, 1.f / n);
  Tensor weight = Upload(be_, w.data(), {n});
  Tensor losses = be_->Empty(DType::kF32, {n});
  Tensor dlogits = be_->Empty(DType::kF32, {n, spec_.classes});
  be_->CrossEntropy(pass.logits.mat(), targets, weight, &losses, dlogits.mat());

  // Backward: the output layer, then each hidden layer's conv (scale, bias,
  // SiLU) and Gemm.
  Layer& out = layers_.back();
  be_->Gemm(true, false, 1.0, dlogits.mat(), pass.act[hidden].mat(), 0.0, out.gw.mat());
  be_->Gemm(true, false, 1.0, pass.ones.mat(), dlogits.mat(), 0.0, out.gbias.mat());
  Tensor da = be_->Empty(DType::kF32, {n, spec_.hidden.back()});
  be_->Gemm(false, false, 1.0, dlogits.mat(), out.w.mat(), 0.0, da.mat());
  const SeqLayout rows{n, 1, &pass.doc_start};
  for (int l = hidden - 1; l >= 0; --l) {
    Layer& layer = layers_[l];
    Tensor dpre = be_->Empty(DType::kF32, {n, spec_.hidden[l]});
    be_->Fill(layer.gscale.mat(), 0);
    be_->Fill(layer.gbias.mat(), 0);
    be_->ConvBackward(rows, pass.pre[l].mat(), layer.scale, layer.bias, da.mat(), dpre.mat(),
                      &layer.gscale, &layer.gbias);
    be_->Gemm(true, false, 1.0, dpre.mat(), pass.act[l].mat(), 0.0, layer.gw.mat());
    if (l > 0) {
      da = be_->Empty(DType::kF32, {n, layer.w.dim(1)});
      be_->Gemm(false, false, 1.0, dpre.mat(), layer.w.mat(), 0.0, da.mat());
    }
  }
  AdamWStep no_decay = step;
  no_decay.weight_decay = 0;
  for (int l = 0; l <= hidden; ++l) {
    Layer& layer = layers_[l];
    be_->AdamW(step, layer.gw, &layer.w, &layer.mw, &layer.vw);
    be_->AdamW(no_decay, layer.gbias, &layer.bias, &layer.mb, &layer.vb);
    if (l < hidden) be_->AdamW(no_decay, layer.gscale, &layer.scale, &layer.ms, &layer.vs);
  }
  std::vector<float> host(n);
  Download(be_, losses, host.data());
  double sum = 0;
  for (float v : host) sum += v;
  return sum / n;
}

void Mlp::Forward(const float* x, int64_t n, float* logits, float* features) {
  Pass pass;
  const int hidden = static_cast<int>(spec_.hidden.size());
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t rows = std::min(kChunk, n - begin);
    RunForward(x + begin * spec_.input, rows, &pass);
    if (logits != nullptr) Download(be_, pass.logits, logits + begin * spec_.classes);
    if (features != nullptr) Download(be_, pass.act[hidden], features + begin * feature_dim());
  }
}

std::vector<int32_t> Mlp::Predict(const float* x, int64_t n) {
  std::vector<float> logits(static_cast<size_t>(n) * spec_.classes);
  Forward(x, n, logits.data(), nullptr);
  std::vector<int32_t> out(n);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = &logits[i * spec_.classes];
    out[i] = static_cast<int32_t>(std::max_element(row, row + spec_.classes) - row);
  }
  return out;
}

absl::Status Mlp::Save(const std::string& path,
                       const std::map<std::string, std::string>& metadata) const {
  std::vector<Tensor> host;
  std::vector<std::string> names;
  auto add = [&](const std::string& name, const Tensor& t) {
    Tensor h(DType::kF32, t.shape());
    be_->Copy(t.mat(), h.mat());
    host.push_back(std::move(h));
    names.push_back(name);
  };
  for (size_t l = 0; l < layers_.size(); ++l) {
    const std::string prefix = absl::StrCat("layers.", l);
    add(prefix + ".weight", layers_[l].w);
    add(prefix + ".bias", layers_[l].bias);
    if (l + 1 < layers_.size()) add(prefix + ".scale", layers_[l].scale);
  }
  Tensor mean(DType::kF32, {spec_.input}), scale(DType::kF32, {spec_.input});
  std::memcpy(mean.raw(), input_mean_.data(), mean.nbytes());
  std::memcpy(scale.raw(), input_scale_.data(), scale.nbytes());
  host.push_back(std::move(mean));
  names.push_back("input_mean");
  host.push_back(std::move(scale));
  names.push_back("input_scale");
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  for (size_t i = 0; i < host.size(); ++i) tensors.emplace_back(names[i], &host[i]);
  std::map<std::string, std::string> meta = metadata;
  meta["mlp_spec"] = SpecString(spec_);
  return SaveSafetensors(path, tensors, meta);
}

absl::StatusOr<std::unique_ptr<Mlp>> Mlp::Load(const std::string& path, Backend* backend,
                                               std::map<std::string, std::string>* metadata) {
  ASSIGN_OR_RETURN(SafetensorsFile file, LoadSafetensors(path));
  if (metadata != nullptr) *metadata = file.metadata;
  auto it = file.metadata.find("mlp_spec");
  if (it == file.metadata.end()) return absl::DataLossError(absl::StrCat(path, ": no mlp_spec"));
  std::vector<int> sizes;
  for (absl::string_view part : absl::StrSplit(it->second, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::DataLossError(absl::StrCat(path, ": bad mlp_spec '", it->second, "'"));
    }
    sizes.push_back(v);
  }
  if (sizes.size() < 3) return absl::DataLossError(absl::StrCat(path, ": bad mlp_spec"));
  MlpSpec spec{sizes.front(), std::vector<int>(sizes.begin() + 1, sizes.end() - 1), sizes.back()};
  ASSIGN_OR_RETURN(std::unique_ptr<Mlp> mlp, Create(spec, backend, 0));
  auto take = [&](const std::string& name, Tensor* into) -> absl::Status {
    auto t = file.tensors.find(name);
    if (t == file.tensors.end()) return absl::DataLossError(absl::StrCat(path, ": no tensor ", name));
    if (t->second.dtype() != DType::kF32 || t->second.numel() != into->numel()) {
      return absl::DataLossError(absl::StrCat(path, ": tensor ", name, " has shape ",
                                              ShapeString(t->second.shape()), ", expected ",
                                              ShapeString(into->shape())));
    }
    backend->Copy(Mat{t->second.raw(), DType::kF32, Device::kCpu, into->mat().rows,
                      into->mat().cols, into->mat().cols},
                  into->mat());
    return absl::OkStatus();
  };
  for (size_t l = 0; l < mlp->layers_.size(); ++l) {
    const std::string prefix = absl::StrCat("layers.", l);
    RETURN_IF_ERROR(take(prefix + ".weight", &mlp->layers_[l].w));
    RETURN_IF_ERROR(take(prefix + ".bias", &mlp->layers_[l].bias));
    if (l + 1 < mlp->layers_.size()) RETURN_IF_ERROR(take(prefix + ".scale", &mlp->layers_[l].scale));
  }
  for (const char* name : {"input_mean", "input_scale"}) {
    auto t = file.tensors.find(name);
    if (t == file.tensors.end() || t->second.numel() != spec.input ||
        t->second.dtype() != DType::kF32) {
      return absl::DataLossError(absl::StrCat(path, ": missing or mis-sized ", name));
    }
    const float* v = t->second.data<float>();
    (std::string(name) == "input_mean" ? mlp->input_mean_ : mlp->input_scale_)
        .assign(v, v + spec.input);
  }
  return mlp;
}

}  // namespace modamba::eval
