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

constexpr int64_t kChunk = 1024;  // examples per forward pass at inference

// Host values into a backend tensor of its own dtype (F32 or F64).
template <typename V>
void UploadInto(Backend* be, const V* host, Tensor* t) {
  Tensor h(t->dtype(), t->shape());
  if (t->dtype() == DType::kF64) {
    std::copy_n(host, h.numel(), h.data<double>());
  } else {
    std::copy_n(host, h.numel(), h.data<float>());
  }
  be->Copy(h.mat(), t->mat());
}

template <typename V>
void Download(Backend* be, const Tensor& t, V* host) {
  Tensor h(t.dtype(), t.shape());
  be->Copy(t.mat(), h.mat());
  if (t.dtype() == DType::kF64) {
    std::copy_n(h.data<double>(), h.numel(), host);
  } else {
    std::copy_n(h.data<float>(), h.numel(), host);
  }
}

// The contiguous tensor t as `rows` rows (a conv layer's [n * frames, c] is
// the next layer's [n, frames * c]).
Mat AsRows(const Tensor& t, int64_t rows) {
  Mat m = t.mat();
  m.rows = rows;
  m.cols = m.ld = t.numel() / rows;
  return m;
}

std::string SpecString(const MlpSpec& s) {
  return absl::StrCat(s.input, ",", absl::StrJoin(s.hidden, ","), ",", s.classes);
}

// "frames,taps,c1,c2,..." of the temporal front-end.
std::string ConvString(const MlpSpec& s) {
  return absl::StrCat(s.frames, ",", s.conv_taps, ",", absl::StrJoin(s.conv, ","));
}

absl::StatusOr<std::vector<int>> ParseInts(const std::string& path, const std::string& key,
                                           const std::string& value) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::DataLossError(absl::StrCat(path, ": bad ", key, " '", value, "'"));
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace

std::string Describe(const MlpSpec& spec) {
  return spec.conv.empty() ? SpecString(spec)
                           : absl::StrCat(SpecString(spec), " conv ", ConvString(spec));
}

Mlp::Mlp(const MlpSpec& spec, Backend* backend, DType dtype)
    : spec_(spec),
      be_(backend),
      dtype_(dtype),
      input_mean_(spec.input, 0.f),
      input_scale_(spec.input, 1.f) {}

Mlp::Layer Mlp::MakeLayer(int in, int out, int taps, bool conv) {
  Layer l;
  auto zeros = [this](Shape shape) {
    Tensor t = be_->Empty(dtype_, std::move(shape));
    be_->Fill(t.mat(), 0);
    return t;
  };
  l.conv = conv;
  l.w = zeros({out, in});
  l.scale = zeros({out, taps});
  l.bias = zeros({out});
  l.gw = zeros({out, in});
  l.gscale = zeros({out, taps});
  l.gbias = zeros({out});
  l.mw = zeros({out, in});
  l.vw = zeros({out, in});
  l.ms = zeros({out, taps});
  l.vs = zeros({out, taps});
  l.mb = zeros({out});
  l.vb = zeros({out});
  return l;
}

absl::StatusOr<std::unique_ptr<Mlp>> Mlp::Create(const MlpSpec& spec, Backend* backend,
                                                 uint64_t seed, DType dtype) {
  auto positive = [](const std::vector<int>& v) {
    return v.empty() || *std::min_element(v.begin(), v.end()) >= 1;
  };
  if (spec.input < 1 || spec.hidden.empty() || spec.classes < 2 || !positive(spec.hidden) ||
      !positive(spec.conv)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MLP spec ", SpecString(spec), ": needs an input, hidden layers and >= 2 classes"));
  }
  if (!spec.conv.empty() && (spec.frames < 1 || spec.input % spec.frames != 0 ||
                             spec.conv_taps < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("MLP conv front-end ", ConvString(spec), ": the input of ", spec.input,
                     " needs a whole number of frames and at least one tap"));
  }
  if (dtype != DType::kF32 && dtype != DType::kF64) {
    return absl::InvalidArgumentError("MLP: F32 or F64 only");
  }
  std::unique_ptr<Mlp> mlp(new Mlp(spec, backend, dtype));
  const int frames = mlp->Frames();
  int in = spec.input / frames;
  std::vector<int> outs = spec.conv;
  outs.insert(outs.end(), spec.hidden.begin(), spec.hidden.end());
  outs.push_back(spec.classes);
  for (size_t i = 0; i < outs.size(); ++i) {
    const bool conv = i < spec.conv.size();
    const int taps = conv ? spec.conv_taps : 1;
    if (!conv && i == spec.conv.size() && i > 0) in *= frames;  // the frames concatenated
    Layer layer = mlp->MakeLayer(in, outs[i], taps, conv);
    // He-uniform for the SiLU layers, 1 / sqrt(in) for the logits.
    const bool last = i + 1 == outs.size();
    const double bound = last ? 1.0 / std::sqrt(in) : std::sqrt(6.0 / in);
    Rng rng = Rng::ForName(seed, absl::StrCat("mlp/", i));
    std::vector<double> w(static_cast<size_t>(outs[i]) * in);
    for (double& x : w) x = static_cast<float>(rng.Uniform(-bound, bound));
    UploadInto(backend, w.data(), &layer.w);
    // A conv's taps keep the variance (uniform, variance 1 / taps in all);
    // a hidden layer's one tap starts at 1.
    std::vector<double> taps_w(static_cast<size_t>(outs[i]) * taps, 1.0);
    if (conv) {
      const double tap_bound = std::sqrt(3.0 / taps);
      for (double& x : taps_w) x = static_cast<float>(rng.Uniform(-tap_bound, tap_bound));
    }
    UploadInto(backend, taps_w.data(), &layer.scale);
    mlp->layers_.push_back(std::move(layer));
    in = outs[i];
  }
  return mlp;
}

void Mlp::SetInputNormalisation(std::vector<float> mean, std::vector<float> scale) {
  input_mean_ = std::move(mean);
  input_scale_ = std::move(scale);
}

SeqLayout Mlp::Sequences(size_t l, const Pass& pass) const {
  return layers_[l].conv ? SeqLayout{pass.n, Frames(), &pass.frame_start}
                         : SeqLayout{pass.n, 1, &pass.doc_start};
}

void Mlp::RunForward(const float* x, int64_t n, Pass* pass) {
  const size_t hidden = layers_.size() - 1;
  if (pass->n != n) {
    pass->n = n;
    std::vector<float> ones(n, 1.f);
    pass->ones = be_->Empty(dtype_, {n, 1});
    UploadInto(be_, ones.data(), &pass->ones);
    std::vector<uint8_t> starts(n, 1), frame_starts(n * Frames(), 0);
    pass->doc_start = be_->Empty(DType::kU8, {n});
    be_->Copy(Mat{starts.data(), DType::kU8, Device::kCpu, 1, n, n}, pass->doc_start.mat());
    pass->frame_start = be_->Empty(DType::kU8, {n * Frames()});
    be_->Copy(Mat{frame_starts.data(), DType::kU8, Device::kCpu, 1, n * Frames(), n * Frames()},
              pass->frame_start.mat());
    pass->pre.clear();
    pass->act.clear();
    pass->act.push_back(be_->Empty(dtype_, {n, spec_.input}));
    for (size_t l = 0; l < hidden; ++l) {
      const int64_t out = layers_[l].w.dim(0);
      pass->pre.push_back(be_->Empty(dtype_, {Rows(l, n), out}));
      pass->act.push_back(be_->Empty(dtype_, {Rows(l, n), out}));
    }
    pass->logits = be_->Empty(dtype_, {n, spec_.classes});
  }
  std::vector<double> normed(static_cast<size_t>(n) * spec_.input);
  for (int64_t i = 0; i < n; ++i) {
    for (int j = 0; j < spec_.input; ++j) {
      normed[i * spec_.input + j] =
          (static_cast<double>(x[i * spec_.input + j]) - input_mean_[j]) * input_scale_[j];
    }
  }
  UploadInto(be_, normed.data(), &pass->act[0]);
  for (size_t l = 0; l < hidden; ++l) {
    be_->Gemm(false, true, 1.0, AsRows(pass->act[l], Rows(l, n)), layers_[l].w.mat(), 0.0,
              pass->pre[l].mat());
    be_->ConvForward(Sequences(l, *pass), pass->pre[l].mat(), layers_[l].scale, layers_[l].bias,
                     pass->act[l + 1].mat());
  }
  const Layer& out = layers_.back();
  be_->Gemm(false, true, 1.0, AsRows(pass->act[hidden], n), out.w.mat(), 0.0, pass->logits.mat());
  be_->Gemm(false, false, 1.0, pass->ones.mat(), out.bias.mat(), 1.0, pass->logits.mat());
}

double Mlp::Gradients(const float* x, const int32_t* labels, int n) {
  Pass& pass = train_pass_;
  RunForward(x, n, &pass);
  const size_t hidden = layers_.size() - 1;
  Tensor targets = be_->Empty(DType::kI32, {n});
  be_->Copy(Mat{const_cast<int32_t*>(labels), DType::kI32, Device::kCpu, 1, n, n}, targets.mat());
  std::vector<float> w(n, 1.f / n);
  Tensor weight = be_->Empty(DType::kF32, {n});
  UploadInto(be_, w.data(), &weight);
  Tensor losses = be_->Empty(dtype_, {n});
  Tensor dlogits = be_->Empty(dtype_, {n, spec_.classes});
  be_->CrossEntropy(pass.logits.mat(), targets, weight, &losses, dlogits.mat());

  // Backward: the output layer, then each layer's conv (taps, bias, SiLU)
  // and Gemm.
  Layer& out = layers_.back();
  const Mat last = AsRows(pass.act[hidden], n);
  be_->Gemm(true, false, 1.0, dlogits.mat(), last, 0.0, out.gw.mat());
  be_->Gemm(true, false, 1.0, pass.ones.mat(), dlogits.mat(), 0.0, out.gbias.mat());
  Tensor da = be_->Empty(dtype_, {n, last.cols});
  be_->Gemm(false, false, 1.0, dlogits.mat(), out.w.mat(), 0.0, da.mat());
  for (size_t l = hidden; l-- > 0;) {
    Layer& layer = layers_[l];
    const int64_t rows = Rows(l, n);
    Tensor dpre = be_->Empty(dtype_, {rows, layer.w.dim(0)});
    be_->Fill(layer.gscale.mat(), 0);
    be_->Fill(layer.gbias.mat(), 0);
    be_->ConvBackward(Sequences(l, pass), pass.pre[l].mat(), layer.scale, layer.bias,
                      AsRows(da, rows), dpre.mat(), &layer.gscale, &layer.gbias);
    be_->Gemm(true, false, 1.0, dpre.mat(), AsRows(pass.act[l], rows), 0.0, layer.gw.mat());
    if (l > 0) {
      da = be_->Empty(dtype_, {rows, layer.w.dim(1)});
      be_->Gemm(false, false, 1.0, dpre.mat(), layer.w.mat(), 0.0, da.mat());
    }
  }
  std::vector<double> host(n);
  Download(be_, losses, host.data());
  double sum = 0;
  for (double v : host) sum += v;
  return sum / n;
}

double Mlp::TrainStep(const float* x, const int32_t* labels, int n, const AdamWStep& step) {
  const double loss = Gradients(x, labels, n);
  AdamWStep no_decay = step;
  no_decay.weight_decay = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    be_->AdamW(step, layer.gw, &layer.w, &layer.mw, &layer.vw);
    be_->AdamW(no_decay, layer.gbias, &layer.bias, &layer.mb, &layer.vb);
    if (l + 1 < layers_.size()) be_->AdamW(no_decay, layer.gscale, &layer.scale, &layer.ms, &layer.vs);
  }
  return loss;
}

std::vector<std::pair<Tensor*, const Tensor*>> Mlp::ParametersAndGradients() {
  std::vector<std::pair<Tensor*, const Tensor*>> out;
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    out.emplace_back(&layer.w, &layer.gw);
    out.emplace_back(&layer.bias, &layer.gbias);
    if (l + 1 < layers_.size()) out.emplace_back(&layer.scale, &layer.gscale);
  }
  return out;
}

void Mlp::Forward(const float* x, int64_t n, float* logits, float* features) {
  Pass pass;
  const size_t hidden = layers_.size() - 1;
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

void Mlp::Export(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>* tensors,
                 std::map<std::string, std::string>* metadata) const {
  auto add = [&](const std::string& name, const Tensor& t) {
    Tensor h(DType::kF32, t.shape());
    Download(be_, t, h.data<float>());
    tensors->emplace_back(prefix + name, std::move(h));
  };
  for (size_t l = 0; l < layers_.size(); ++l) {
    const std::string layer = absl::StrCat("layers.", l);
    add(layer + ".weight", layers_[l].w);
    add(layer + ".bias", layers_[l].bias);
    if (l + 1 < layers_.size()) add(layer + ".scale", layers_[l].scale);
  }
  Tensor mean(DType::kF32, {spec_.input}), scale(DType::kF32, {spec_.input});
  std::memcpy(mean.raw(), input_mean_.data(), mean.nbytes());
  std::memcpy(scale.raw(), input_scale_.data(), scale.nbytes());
  tensors->emplace_back(prefix + "input_mean", std::move(mean));
  tensors->emplace_back(prefix + "input_scale", std::move(scale));
  (*metadata)[prefix + "mlp_spec"] = SpecString(spec_);
  if (!spec_.conv.empty()) (*metadata)[prefix + "mlp_conv"] = ConvString(spec_);
}

absl::Status Mlp::Save(const std::string& path,
                       const std::map<std::string, std::string>& metadata) const {
  std::vector<std::pair<std::string, Tensor>> host;
  std::map<std::string, std::string> meta = metadata;
  Export("", &host, &meta);
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  for (const auto& [name, t] : host) tensors.emplace_back(name, &t);
  return SaveSafetensors(path, tensors, meta);
}

absl::StatusOr<std::unique_ptr<Mlp>> Mlp::Load(const std::string& path, Backend* backend,
                                               std::map<std::string, std::string>* metadata) {
  ASSIGN_OR_RETURN(SafetensorsFile file, LoadSafetensors(path));
  if (metadata != nullptr) *metadata = file.metadata;
  return Import(file, "", path, backend);
}

absl::StatusOr<std::unique_ptr<Mlp>> Mlp::Import(const SafetensorsFile& file,
                                                 const std::string& prefix,
                                                 const std::string& path, Backend* backend) {
  auto it = file.metadata.find(prefix + "mlp_spec");
  if (it == file.metadata.end()) {
    return absl::DataLossError(absl::StrCat(path, ": no ", prefix, "mlp_spec"));
  }
  ASSIGN_OR_RETURN(std::vector<int> sizes, ParseInts(path, "mlp_spec", it->second));
  if (sizes.size() < 3) return absl::DataLossError(absl::StrCat(path, ": bad ", prefix, "mlp_spec"));
  MlpSpec spec{sizes.front(), std::vector<int>(sizes.begin() + 1, sizes.end() - 1), sizes.back()};
  if (auto conv = file.metadata.find(prefix + "mlp_conv"); conv != file.metadata.end()) {
    ASSIGN_OR_RETURN(std::vector<int> c, ParseInts(path, "mlp_conv", conv->second));
    if (c.size() < 3) return absl::DataLossError(absl::StrCat(path, ": bad ", prefix, "mlp_conv"));
    spec.frames = c[0];
    spec.conv_taps = c[1];
    spec.conv.assign(c.begin() + 2, c.end());
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Mlp> mlp, Create(spec, backend, 0));
  auto take = [&](const std::string& name, Tensor* into) -> absl::Status {
    auto t = file.tensors.find(prefix + name);
    if (t == file.tensors.end()) {
      return absl::DataLossError(absl::StrCat(path, ": no tensor ", prefix, name));
    }
    if (t->second.dtype() != DType::kF32 || t->second.numel() != into->numel()) {
      return absl::DataLossError(absl::StrCat(path, ": tensor ", prefix, name, " has shape ",
                                              ShapeString(t->second.shape()), ", expected ",
                                              ShapeString(into->shape())));
    }
    backend->Copy(Mat{t->second.raw(), DType::kF32, Device::kCpu, into->mat().rows,
                      into->mat().cols, into->mat().cols},
                  into->mat());
    return absl::OkStatus();
  };
  for (size_t l = 0; l < mlp->layers_.size(); ++l) {
    const std::string layer = absl::StrCat("layers.", l);
    RETURN_IF_ERROR(take(layer + ".weight", &mlp->layers_[l].w));
    RETURN_IF_ERROR(take(layer + ".bias", &mlp->layers_[l].bias));
    if (l + 1 < mlp->layers_.size()) RETURN_IF_ERROR(take(layer + ".scale", &mlp->layers_[l].scale));
  }
  for (const char* name : {"input_mean", "input_scale"}) {
    auto t = file.tensors.find(prefix + name);
    if (t == file.tensors.end() || t->second.numel() != spec.input ||
        t->second.dtype() != DType::kF32) {
      return absl::DataLossError(absl::StrCat(path, ": missing or mis-sized ", prefix, name));
    }
    const float* v = t->second.data<float>();
    (std::string(name) == "input_mean" ? mlp->input_mean_ : mlp->input_scale_)
        .assign(v, v + spec.input);
  }
  return mlp;
}

}  // namespace modamba::eval
