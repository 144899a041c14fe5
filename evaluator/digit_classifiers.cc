#include "evaluator/digit_classifiers.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/audio.h"
#include "core/file_util.h"
#include "core/rng.h"
#include "core/status_macros.h"
#include "glog/logging.h"

namespace modamba::eval {
namespace {

// Alters one training example in place (augmentation).
using Augment = std::function<void(Rng*, float*)>;

// Per-input mean and 1 / std of the training inputs (std floored).
void Standardise(const std::vector<float>& x, int dim, Mlp* mlp) {
  const int64_t n = x.size() / dim;
  std::vector<double> sum(dim, 0), sq(dim, 0);
  for (int64_t i = 0; i < n; ++i) {
    for (int j = 0; j < dim; ++j) {
      sum[j] += x[i * dim + j];
      sq[j] += static_cast<double>(x[i * dim + j]) * x[i * dim + j];
    }
  }
  std::vector<float> mean(dim), scale(dim);
  for (int j = 0; j < dim; ++j) {
    mean[j] = static_cast<float>(sum[j] / n);
    const double var = std::max(0.0, sq[j] / n - (sum[j] / n) * (sum[j] / n));
    scale[j] = static_cast<float>(1.0 / std::max(std::sqrt(var), 1e-2));
  }
  mlp->SetInputNormalisation(std::move(mean), std::move(scale));
}

// Mini-batch AdamW over shuffled epochs, linear warmup then cosine decay.
void Fit(Mlp* mlp, const std::vector<float>& x, const std::vector<int32_t>& y, int epochs,
         const ClassifierTraining& o, const Augment& augment, const std::vector<float>& test_x,
         const std::vector<int32_t>& test_y) {
  const int dim = mlp->spec().input;
  const int64_t n = y.size();
  const int64_t per_epoch = n / o.batch;
  const int64_t total = per_epoch * epochs;
  const int64_t warmup = std::min<int64_t>(200, total / 10);
  Rng rng = Rng::ForName(o.seed, "classifier_batches");
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<float> bx(static_cast<size_t>(o.batch) * dim);
  std::vector<int32_t> by(o.batch);
  int64_t step = 0;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.Below(i + 1)]);
    double loss = 0;
    for (int64_t b = 0; b < per_epoch; ++b) {
      for (int i = 0; i < o.batch; ++i) {
        const int64_t src = order[b * o.batch + i];
        std::copy_n(&x[src * dim], dim, &bx[static_cast<size_t>(i) * dim]);
        if (augment) augment(&rng, &bx[static_cast<size_t>(i) * dim]);
        by[i] = y[src];
      }
      ++step;
      AdamWStep s;
      s.beta2 = 0.999;
      s.weight_decay = o.weight_decay;
      s.step = step;
      s.lr = step <= warmup ? o.lr * step / warmup
                            : o.lr * 0.5 * (1 + std::cos(M_PI * (step - warmup) /
                                                         std::max<int64_t>(1, total - warmup)));
      loss += mlp->TrainStep(bx.data(), by.data(), o.batch, s);
    }
    if (o.verbose) {
      std::fprintf(stderr, "epoch %d: train loss %.4f, test accuracy %.4f\n", epoch + 1,
                   loss / per_epoch, Accuracy(mlp, test_x, test_y));
    }
  }
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Shifts a 28x28 image by up to 2 pixels each way, filling with zero.
void ShiftImage(Rng* rng, float* image) {
  const int dx = static_cast<int>(rng->Below(5)) - 2, dy = static_cast<int>(rng->Below(5)) - 2;
  if (dx == 0 && dy == 0) return;
  float out[data::kImagePixels];
  for (int r = 0; r < data::kImageSide; ++r) {
    for (int c = 0; c < data::kImageSide; ++c) {
      const int sr = r - dy, sc = c - dx;
      const bool inside = sr >= 0 && sr < data::kImageSide && sc >= 0 && sc < data::kImageSide;
      out[r * data::kImageSide + c] = inside ? image[sr * data::kImageSide + sc] : 0.f;
    }
  }
  std::copy_n(out, data::kImagePixels, image);
}

std::vector<float> RecordingInputs(const std::vector<data::Recording>& recordings,
                                   std::vector<int32_t>* labels) {
  const data::MelAnalyzer mel{data::MelConfig{}};
  const int n_mels = mel.config().n_mels;
  std::vector<float> out;
  for (const data::Recording& r : recordings) {
    const std::vector<float> input = SpeechInput(mel.LogMel(r.audio.samples), n_mels);
    out.insert(out.end(), input.begin(), input.end());
    labels->push_back(r.digit);
  }
  return out;
}

absl::StatusOr<data::RawCorpus> LoadDigits(const std::string& raw_dir, bool images) {
  data::RawSelection sel;
  sel.images = images;
  sel.speech = !images;
  sel.text = false;
  sel.cathy = {0, 0};
  return data::LoadRawCorpus(raw_dir, sel);
}

template <typename TrainFn>
absl::StatusOr<std::unique_ptr<Mlp>> LoadOrTrain(const std::string& path, const char* what,
                                                 TrainFn train, Backend* backend) {
  if (FileExists(path)) return Mlp::Load(path, backend);
  LOG(INFO) << "training the " << what << " classifier (cached at " << path << ")";
  ASSIGN_OR_RETURN(TrainedClassifier trained, train());
  LOG(INFO) << what << " classifier: test accuracy " << trained.test_accuracy << " after "
            << trained.seconds << " s";
  RETURN_IF_ERROR(MakeDirs(path.substr(0, path.find_last_of('/'))));
  RETURN_IF_ERROR(trained.mlp->Save(
      path, {{"classifier", what}, {"test_accuracy", absl::StrFormat("%.4f", trained.test_accuracy)}}));
  return std::move(trained.mlp);
}

}  // namespace

std::vector<float> ImageInputs(const uint8_t* pixels, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n) * data::kImagePixels);
  for (size_t i = 0; i < out.size(); ++i) out[i] = pixels[i] / 255.f;
  return out;
}

int SpeechInputDim(int n_mels) { return kSpeechFrames * n_mels + 1; }

std::vector<float> SpeechInput(const std::vector<float>& log_mel, int n_mels) {
  const int frames = static_cast<int>(log_mel.size() / n_mels);
  std::vector<float> out(SpeechInputDim(n_mels), 0.f);
  if (frames == 0) return out;
  std::vector<float> energy(frames);
  for (int t = 0; t < frames; ++t) {
    double s = 0;
    for (int j = 0; j < n_mels; ++j) s += log_mel[static_cast<size_t>(t) * n_mels + j];
    energy[t] = static_cast<float>(s / n_mels);
  }
  const float loudest = *std::max_element(energy.begin(), energy.end());
  int first = 0, last = frames - 1;
  while (energy[first] < loudest - kVoicedRange) ++first;
  while (energy[last] < loudest - kVoicedRange) --last;
  const int voiced = last - first + 1;
  for (int k = 0; k < kSpeechFrames; ++k) {
    // Centre of output frame k in input frame coordinates.
    const double pos = first + (k + 0.5) * voiced / kSpeechFrames - 0.5;
    const double p = std::clamp(pos, static_cast<double>(first), static_cast<double>(last));
    const int lo = static_cast<int>(std::floor(p));
    const int hi = std::min(lo + 1, last);
    const double w = p - lo;
    for (int j = 0; j < n_mels; ++j) {
      out[static_cast<size_t>(k) * n_mels + j] =
          static_cast<float>((1 - w) * log_mel[static_cast<size_t>(lo) * n_mels + j] +
                             w * log_mel[static_cast<size_t>(hi) * n_mels + j]);
    }
  }
  out.back() = std::log(static_cast<float>(voiced));
  return out;
}

std::vector<float> SpeechInputs(const std::vector<std::vector<float>>& log_mels, int n_mels) {
  std::vector<float> out;
  for (const auto& mel : log_mels) {
    const std::vector<float> in = SpeechInput(mel, n_mels);
    out.insert(out.end(), in.begin(), in.end());
  }
  return out;
}

double Accuracy(Mlp* mlp, const std::vector<float>& inputs, const std::vector<int32_t>& labels) {
  if (labels.empty()) return 0;
  const std::vector<int32_t> pred = mlp->Predict(inputs.data(), labels.size());
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += pred[i] == labels[i];
  return static_cast<double>(correct) / labels.size();
}

absl::StatusOr<TrainedClassifier> TrainImageClassifier(const data::MnistSet& train,
                                                       const data::MnistSet& test,
                                                       Backend* backend,
                                                       const ClassifierTraining& options) {
  const auto start = std::chrono::steady_clock::now();
  TrainedClassifier out;
  ASSIGN_OR_RETURN(out.mlp,
                   Mlp::Create({data::kImagePixels, {512, 256}, kDigitClasses}, backend, options.seed));
  const std::vector<float> x = ImageInputs(train.pixels.data(), train.count());
  const std::vector<float> test_x = ImageInputs(test.pixels.data(), test.count());
  const std::vector<int32_t> y(train.labels.begin(), train.labels.end());
  const std::vector<int32_t> test_y(test.labels.begin(), test.labels.end());
  // One scalar normalisation for every pixel, so shifted images see the same.
  double sum = 0, sq = 0;
  for (float v : x) {
    sum += v;
    sq += v * v;
  }
  const double mean = sum / x.size(), stddev = std::sqrt(sq / x.size() - mean * mean);
  out.mlp->SetInputNormalisation(std::vector<float>(data::kImagePixels, mean),
                                 std::vector<float>(data::kImagePixels, 1.0 / stddev));
  Fit(out.mlp.get(), x, y, options.epochs > 0 ? options.epochs : 12, options, ShiftImage, test_x,
      test_y);
  out.test_accuracy = Accuracy(out.mlp.get(), test_x, test_y);
  out.seconds = Seconds(start);
  return out;
}

absl::StatusOr<TrainedClassifier> TrainSpeechClassifier(
    const std::vector<data::Recording>& train, const std::vector<data::Recording>& test,
    Backend* backend, const ClassifierTraining& options) {
  const auto start = std::chrono::steady_clock::now();
  if (train.empty()) return absl::InvalidArgumentError("speech classifier: no training recordings");
  TrainedClassifier out;
  std::vector<int32_t> y, test_y;
  const std::vector<float> x = RecordingInputs(train, &y);
  const std::vector<float> test_x = RecordingInputs(test, &test_y);
  const int dim = SpeechInputDim(data::MelConfig{}.n_mels);
  ASSIGN_OR_RETURN(out.mlp, Mlp::Create({dim, {256, 128}, kDigitClasses}, backend, options.seed));
  Standardise(x, dim, out.mlp.get());
  ClassifierTraining o = options;
  o.batch = std::min<int>(o.batch, static_cast<int>(y.size()));
  Fit(out.mlp.get(), x, y, options.epochs > 0 ? options.epochs : 25, o, nullptr, test_x, test_y);
  out.test_accuracy = Accuracy(out.mlp.get(), test_x, test_y);
  out.seconds = Seconds(start);
  return out;
}

std::string DefaultClassifierDir() {
  if (const char* dir = std::getenv("MODAMBA_CLASSIFIER_DIR"); dir != nullptr && *dir) return dir;
  const char* home = std::getenv("HOME");
  return absl::StrCat(home != nullptr ? home : ".", "/.cache/modamba/classifiers");
}

absl::StatusOr<std::unique_ptr<Mlp>> LoadOrTrainImageClassifier(const std::string& dir,
                                                                const std::string& raw_dir,
                                                                Backend* backend) {
  auto train = [&]() -> absl::StatusOr<TrainedClassifier> {
    ASSIGN_OR_RETURN(data::RawCorpus corpus, LoadDigits(raw_dir, /*images=*/true));
    return TrainImageClassifier(corpus.images[data::kTrain], corpus.images[data::kVal], backend, {});
  };
  return LoadOrTrain(absl::StrCat(dir, "/", kImageClassifierFile), "mnist", train, backend);
}

absl::StatusOr<std::unique_ptr<Mlp>> LoadOrTrainSpeechClassifier(const std::string& dir,
                                                                 const std::string& raw_dir,
                                                                 Backend* backend) {
  auto train = [&]() -> absl::StatusOr<TrainedClassifier> {
    ASSIGN_OR_RETURN(data::RawCorpus corpus, LoadDigits(raw_dir, /*images=*/false));
    return TrainSpeechClassifier(corpus.fsdd[data::kTrain], corpus.fsdd[data::kVal], backend, {});
  };
  return LoadOrTrain(absl::StrCat(dir, "/", kSpeechClassifierFile), "fsdd", train, backend);
}

}  // namespace modamba::eval
