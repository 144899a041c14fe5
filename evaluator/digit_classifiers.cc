#include "evaluator/digit_classifiers.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/data/audio.h"
#include "core/data/documents.h"
#include "core/file_util.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "core/status_macros.h"
#include "evaluator/augment.h"
#include "evaluator/frechet.h"
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
                   loss / per_epoch,
                   Accuracy(mlp->Predict(test_x.data(), test_y.size()), test_y));
    }
  }
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Classifier inputs of `copies` versions of each recording augmented by `a`,
// the streams named by `seed`, `tag`, the recording and the copy; `masks`
// adds SpecAugment's (training copies).
std::vector<float> AugmentedRecordingInputs(const std::vector<data::Recording>& recordings,
                                            const SpeechAugmentation& a, int copies,
                                            uint64_t seed, const std::string& tag, bool masks) {
  const data::MelAnalyzer mel{data::MelConfig{}};
  const int n_mels = mel.config().n_mels;
  std::vector<float> out;
  for (const data::Recording& r : recordings) {
    for (int c = 0; c < copies; ++c) {
      Rng rng = Rng::ForName(seed, absl::StrCat(tag, "/", r.id, "/", c));
      std::vector<float> log_mel =
          mel.LogMel(AugmentWaveform(a, r.audio.sample_rate, &rng, r.audio.samples));
      WarpMelAxis(a, n_mels, &rng, &log_mel);
      WarpVocalTract(a, mel.config(), &rng, &log_mel);
      VoicedFrames voiced = ResampleVoiced(log_mel, n_mels);
      if (masks) MaskSpeechInput(a, kSpeechFrames, n_mels, &rng, voiced.grid.data());
      const std::vector<float> input = SpeechFeatures(voiced, n_mels);
      out.insert(out.end(), input.begin(), input.end());
    }
  }
  return out;
}

std::vector<int32_t> Digits(const std::vector<data::Recording>& recordings) {
  std::vector<int32_t> out;
  for (const data::Recording& r : recordings) out.push_back(r.digit);
  return out;
}

// Speech classifier inputs of recordings, computed once: each clean take,
// `copies` augmented training versions of it (streams named by `seed` and
// the take) and, for a test set, one augmented test version.
struct SpeechSet {
  int copies = 0;
  std::vector<float> clean, augmented_copies, augmented_test;  // rows of SpeechInputDim
  std::vector<int32_t> digits;
};

// A training set gets `o`'s augmented copies (its count, VTLP and seed), a
// test set its augmented test version.
SpeechSet PrepareSpeech(const std::vector<data::Recording>& recordings,
                        const ClassifierTraining& o, bool train, bool test) {
  SpeechSet set;
  set.copies = !train || !o.augment ? 0 : o.speech_copies > 0 ? o.speech_copies : 6;
  set.clean = RecordingInputs(recordings);
  set.digits = Digits(recordings);
  if (set.copies > 0) {
    SpeechAugmentation a;
    a.max_vtlp = o.vtlp;
    set.augmented_copies = AugmentedRecordingInputs(recordings, a, set.copies, o.seed,
                                                    "speech_train", /*masks=*/true);
  }
  if (test) set.augmented_test = AugmentedSpeechInputs(recordings, kAugmentedTestSeed);
  return set;
}

// The rows of `set` for the takes `rows`.
SpeechSet Select(const SpeechSet& set, const std::vector<size_t>& rows) {
  const size_t dim = SpeechInputDim();
  SpeechSet out;
  out.copies = set.copies;
  auto take = [dim](const std::vector<float>& from, size_t row, size_t count,
                    std::vector<float>* to) {
    if (from.empty()) return;
    to->insert(to->end(), from.begin() + row * dim, from.begin() + (row + count) * dim);
  };
  for (size_t r : rows) {
    take(set.clean, r, 1, &out.clean);
    take(set.augmented_copies, r * set.copies, set.copies, &out.augmented_copies);
    take(set.augmented_test, r, 1, &out.augmented_test);
    out.digits.push_back(set.digits[r]);
  }
  return out;
}

// The speech judge's members: five time-delay networks (two conv layers of
// 5 taps over the frames, every frame kept, then one hidden layer), trained
// from different seeds.
std::vector<MlpSpec> SpeechMembers() {
  const MlpSpec tdnn{SpeechInputDim(), {256}, kDigitClasses, kSpeechFrames, /*conv_taps=*/5,
                     /*conv=*/{64, 64}};
  return {tdnn, tdnn, tdnn, tdnn, tdnn};
}

std::vector<MlpSpec> ImageMembers() {
  return {MlpSpec{data::kImagePixels, {1024, 512}, kDigitClasses}};
}

// Trains each member (member k from seed + k) on the clean takes and their
// augmented copies, then measures the ensemble on the test set, clean and
// augmented.
absl::StatusOr<TrainedClassifier> FitSpeech(const SpeechSet& train, const SpeechSet& test,
                                            Backend* backend, const ClassifierTraining& options) {
  const int dim = SpeechInputDim();
  std::vector<float> x = train.clean;
  x.insert(x.end(), train.augmented_copies.begin(), train.augmented_copies.end());
  std::vector<int32_t> y = train.digits;
  for (int32_t d : train.digits) y.insert(y.end(), train.copies, d);
  std::vector<std::unique_ptr<Mlp>> members;
  for (const MlpSpec& spec : SpeechMembers()) {
    ClassifierTraining o = options;
    o.seed = options.seed + members.size();
    o.batch = std::min<int>(o.batch, static_cast<int>(y.size()));
    ASSIGN_OR_RETURN(std::unique_ptr<Mlp> mlp, Mlp::Create(spec, backend, o.seed));
    Standardise(x, dim, mlp.get());
    Fit(mlp.get(), x, y, options.epochs > 0 ? options.epochs : (train.copies > 0 ? 8 : 25), o,
        nullptr, test.clean, test.digits);
    members.push_back(std::move(mlp));
  }
  TrainedClassifier out;
  ASSIGN_OR_RETURN(out.classifier, Ensemble::Create(std::move(members)));
  out.test_accuracy = Accuracy(out.classifier.get(), test.clean, test.digits);
  out.augmented_test_accuracy = Accuracy(out.classifier.get(), test.augmented_test, test.digits);
  return out;
}

struct Recipe {
  const char* name;
  const char* file;
  const char* version;
  std::vector<MlpSpec> members;
};

Recipe RecipeOf(JudgeKind kind) {
  return kind == JudgeKind::kImage
             ? Recipe{"mnist", kImageClassifierFile, kImageJudgeVersion, ImageMembers()}
             : Recipe{"fsdd", kSpeechClassifierFile, kSpeechJudgeVersion, SpeechMembers()};
}

// The members' shapes, "; " between them.
std::string DescribeMembers(const std::vector<MlpSpec>& specs) {
  std::vector<std::string> parts;
  for (const MlpSpec& s : specs) parts.push_back(Describe(s));
  return absl::StrJoin(parts, "; ");
}

// The first `train_items` of the raw train split (-1: all) and the whole
// held-out split.
absl::StatusOr<data::RawCorpus> LoadJudgeData(JudgeKind kind, const std::string& raw_dir,
                                              int64_t train_items) {
  data::RawSelection sel;
  sel.images = kind == JudgeKind::kImage;
  sel.speech = kind == JudgeKind::kSpeech;
  sel.text = false;
  sel.cathy = {0, 0};
  sel.mnist = {train_items, -1};
  sel.fsdd = {train_items, -1};
  return data::LoadRawCorpus(raw_dir, sel);
}

int64_t TrainItems(JudgeKind kind, const data::RawCorpus& corpus) {
  return kind == JudgeKind::kImage ? corpus.images[data::kTrain].count()
                                   : static_cast<int64_t>(corpus.fsdd[data::kTrain].size());
}

// Why a cached judge's key does not match (empty when it does): its code
// version, its training data or the shapes of its members.
std::string KeyMismatch(const std::map<std::string, std::string>& meta, const Ensemble& judge,
                        const Recipe& recipe, const std::string& data_sha256) {
  auto get = [&](const char* key) {
    auto it = meta.find(key);
    return it == meta.end() ? std::string("(none recorded)") : it->second;
  };
  std::string why;
  if (get("code_version") != recipe.version) {
    why = absl::StrCat("it was trained by code version ", get("code_version"), ", this build is ",
                       recipe.version);
  }
  if (get("data_sha256") != data_sha256) {
    absl::StrAppend(&why, why.empty() ? "" : "; ", "its training data had sha256 ",
                    get("data_sha256"), ", the same items of the raw data now hash to ",
                    data_sha256);
  }
  std::vector<MlpSpec> held;
  for (int k = 0; k < judge.members(); ++k) held.push_back(judge.member(k).spec());
  if (DescribeMembers(held) != DescribeMembers(recipe.members)) {
    absl::StrAppend(&why, why.empty() ? "" : "; ", "it holds the networks ", DescribeMembers(held),
                    ", this build's recipe ", DescribeMembers(recipe.members));
  }
  return why;
}

absl::StatusOr<Judge> TrainAndSave(JudgeKind kind, const std::string& path,
                                   data::RawCorpus corpus, Backend* backend,
                                   const ClassifierTraining& training) {
  const Recipe recipe = RecipeOf(kind);
  LOG(INFO) << "training the " << recipe.name << " judge (" << TrainItems(kind, corpus)
            << " training items; saved to " << path << ")";
  absl::StatusOr<TrainedClassifier> trained =
      kind == JudgeKind::kImage
          ? TrainImageClassifier(corpus.images[data::kTrain], corpus.images[data::kVal], backend,
                                 training)
          : TrainSpeechClassifier(corpus.fsdd[data::kTrain], corpus.fsdd[data::kVal], backend,
                                  training);
  RETURN_IF_ERROR(trained.status());
  Judge judge;
  judge.path = path;
  judge.metadata = {{"classifier", recipe.name},
                    {"code_version", recipe.version},
                    {"data_sha256", JudgeDataSha256(kind, corpus)},
                    {"train_items", absl::StrCat(TrainItems(kind, corpus))},
                    {"test_accuracy", absl::StrFormat("%.4f", trained->test_accuracy)},
                    {"augmented_test_accuracy",
                     absl::StrFormat("%.4f", trained->augmented_test_accuracy)},
                    {"train_seconds", absl::StrFormat("%.1f", trained->seconds)}};
  LOG(INFO) << recipe.name << " judge: test accuracy " << trained->test_accuracy
            << ", augmented " << trained->augmented_test_accuracy << ", trained in "
            << trained->seconds << " s";
  RETURN_IF_ERROR(MakeDirs(path.substr(0, path.find_last_of('/'))));
  RETURN_IF_ERROR(trained->classifier->Save(path, judge.metadata));
  judge.classifier = std::move(trained->classifier);
  judge.corpus = std::move(corpus);
  judge.trained = true;
  return judge;
}

}  // namespace

std::vector<float> ImageInputs(const uint8_t* pixels, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n) * data::kImagePixels);
  for (size_t i = 0; i < out.size(); ++i) out[i] = pixels[i] / 255.f;
  return out;
}

int SpeechInputDim() { return kSpeechFrames * kSpeechFrameDim; }

VoicedFrames ResampleVoiced(const std::vector<float>& log_mel, int n_mels) {
  const int frames = static_cast<int>(log_mel.size() / n_mels);
  VoicedFrames out;
  out.grid.assign(static_cast<size_t>(kSpeechFrames) * n_mels, 0.f);
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
      out.grid[static_cast<size_t>(k) * n_mels + j] =
          static_cast<float>((1 - w) * log_mel[static_cast<size_t>(lo) * n_mels + j] +
                             w * log_mel[static_cast<size_t>(hi) * n_mels + j]);
    }
  }
  out.log_frames = std::log(static_cast<float>(voiced));
  return out;
}

std::vector<float> SpeechFeatures(const VoicedFrames& voiced, int n_mels) {
  std::vector<float> out(SpeechInputDim(), 0.f);
  std::vector<double> band_mean(n_mels, 0.0);
  for (int k = 0; k < kSpeechFrames; ++k) {
    for (int j = 0; j < n_mels; ++j) band_mean[j] += voiced.grid[static_cast<size_t>(k) * n_mels + j];
  }
  for (double& m : band_mean) m /= kSpeechFrames;
  for (int k = 0; k < kSpeechFrames; ++k) {
    float* frame = &out[static_cast<size_t>(k) * kSpeechFrameDim];
    for (int c = 0; c < kSpeechCepstra; ++c) {
      // Orthonormal DCT-II over the bands.
      double s = 0;
      for (int j = 0; j < n_mels; ++j) {
        s += (voiced.grid[static_cast<size_t>(k) * n_mels + j] - band_mean[j]) *
             std::cos(M_PI / n_mels * (j + 0.5) * c);
      }
      frame[c] = static_cast<float>(s * std::sqrt((c == 0 ? 1.0 : 2.0) / n_mels));
    }
    frame[kSpeechCepstra] = voiced.log_frames;
  }
  return out;
}

std::vector<float> SpeechInput(const std::vector<float>& log_mel, int n_mels) {
  return SpeechFeatures(ResampleVoiced(log_mel, n_mels), n_mels);
}

std::vector<float> SpeechInputs(const std::vector<std::vector<float>>& log_mels, int n_mels) {
  std::vector<float> out;
  for (const auto& mel : log_mels) {
    const std::vector<float> in = SpeechInput(mel, n_mels);
    out.insert(out.end(), in.begin(), in.end());
  }
  return out;
}

std::vector<float> RecordingInputs(const std::vector<data::Recording>& recordings) {
  const data::MelAnalyzer mel{data::MelConfig{}};
  std::vector<float> out;
  for (const data::Recording& r : recordings) {
    const std::vector<float> input = SpeechInput(mel.LogMel(r.audio.samples), mel.config().n_mels);
    out.insert(out.end(), input.begin(), input.end());
  }
  return out;
}

std::vector<float> AugmentedImageInputs(const data::MnistSet& test, uint64_t seed) {
  std::vector<float> out = ImageInputs(test.pixels.data(), test.count());
  const ImageAugmentation a;
  for (int64_t i = 0; i < test.count(); ++i) {
    Rng rng = Rng::ForName(seed, absl::StrCat("image_test/", i));
    AugmentImage(a, &rng, &out[i * data::kImagePixels]);
  }
  return out;
}

std::vector<float> AugmentedSpeechInputs(const std::vector<data::Recording>& test, uint64_t seed) {
  return AugmentedRecordingInputs(test, SpeechAugmentation{}, 1, seed, "speech_test",
                                  /*masks=*/false);
}

double Accuracy(const std::vector<int32_t>& predicted, const std::vector<int32_t>& labels) {
  if (labels.empty()) return 0;
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += predicted[i] == labels[i];
  return static_cast<double>(correct) / labels.size();
}

double Accuracy(Ensemble* classifier, const std::vector<float>& inputs,
                const std::vector<int32_t>& labels) {
  return Accuracy(classifier->Predict(inputs.data(), labels.size()), labels);
}

absl::StatusOr<TrainedClassifier> TrainImageClassifier(const data::MnistSet& train,
                                                       const data::MnistSet& test,
                                                       Backend* backend,
                                                       const ClassifierTraining& options) {
  const auto start = std::chrono::steady_clock::now();
  if (train.count() == 0) return absl::InvalidArgumentError("image classifier: no training images");
  ASSIGN_OR_RETURN(std::unique_ptr<Mlp> mlp, Mlp::Create(ImageMembers()[0], backend, options.seed));
  const std::vector<float> x = ImageInputs(train.pixels.data(), train.count());
  const std::vector<float> test_x = ImageInputs(test.pixels.data(), test.count());
  const std::vector<int32_t> y(train.labels.begin(), train.labels.end());
  const std::vector<int32_t> test_y(test.labels.begin(), test.labels.end());
  // One scalar normalisation for every pixel, so moved strokes see the same.
  double sum = 0, sq = 0;
  for (float v : x) {
    sum += v;
    sq += v * v;
  }
  const double mean = sum / x.size(), stddev = std::sqrt(sq / x.size() - mean * mean);
  mlp->SetInputNormalisation(std::vector<float>(data::kImagePixels, mean),
                             std::vector<float>(data::kImagePixels, 1.0 / stddev));
  const ImageAugmentation a;
  Augment augment;
  if (options.augment) augment = [&a](Rng* rng, float* image) { AugmentImage(a, rng, image); };
  Fit(mlp.get(), x, y, options.epochs > 0 ? options.epochs : 45, options, augment, test_x, test_y);
  std::vector<std::unique_ptr<Mlp>> members;
  members.push_back(std::move(mlp));
  TrainedClassifier out;
  ASSIGN_OR_RETURN(out.classifier, Ensemble::Create(std::move(members)));
  out.test_accuracy = Accuracy(out.classifier.get(), test_x, test_y);
  out.augmented_test_accuracy =
      Accuracy(out.classifier.get(), AugmentedImageInputs(test, kAugmentedTestSeed), test_y);
  out.seconds = Seconds(start);
  return out;
}

absl::StatusOr<TrainedClassifier> TrainSpeechClassifier(
    const std::vector<data::Recording>& train, const std::vector<data::Recording>& test,
    Backend* backend, const ClassifierTraining& options) {
  const auto start = std::chrono::steady_clock::now();
  if (train.empty()) return absl::InvalidArgumentError("speech classifier: no training recordings");
  ASSIGN_OR_RETURN(TrainedClassifier out,
                   FitSpeech(PrepareSpeech(train, options, /*train=*/true, /*test=*/false),
                             PrepareSpeech(test, options, /*train=*/false, /*test=*/true), backend,
                             options));
  out.seconds = Seconds(start);
  return out;
}

double DigitWordCer(const std::vector<int>& recognised, const std::vector<int>& asked) {
  int64_t edits = 0, chars = 0;
  for (size_t i = 0; i < asked.size() && i < recognised.size(); ++i) {
    const std::string want = data::DigitWord(asked[i]), got = data::DigitWord(recognised[i]);
    // Levenshtein distance, one row at a time.
    std::vector<int> row(got.size() + 1);
    std::iota(row.begin(), row.end(), 0);
    for (size_t a = 1; a <= want.size(); ++a) {
      int diagonal = row[0];
      row[0] = static_cast<int>(a);
      for (size_t b = 1; b <= got.size(); ++b) {
        const int up = row[b];
        row[b] = std::min({row[b] + 1, row[b - 1] + 1, diagonal + (want[a - 1] != got[b - 1])});
        diagonal = up;
      }
    }
    edits += row.back();
    chars += want.size();
  }
  return chars > 0 ? static_cast<double>(edits) / chars : 0;
}

std::string SpeakerOf(const data::Recording& recording) {
  const size_t first = recording.id.find('_'), last = recording.id.rfind('_');
  return first == std::string::npos || last <= first
             ? std::string()
             : recording.id.substr(first + 1, last - first - 1);
}

absl::StatusOr<std::vector<SpeakerFold>> LeaveOneSpeakerOut(
    const std::vector<data::Recording>& recordings, Backend* backend,
    const ClassifierTraining& options, const std::vector<std::string>& held_out) {
  std::set<std::string> speakers;
  for (const data::Recording& r : recordings) speakers.insert(SpeakerOf(r));
  if (speakers.size() < 2) {
    return absl::InvalidArgumentError("leave-one-speaker-out needs recordings of >= 2 speakers");
  }
  for (const std::string& s : held_out) {
    if (!speakers.count(s)) {
      return absl::InvalidArgumentError(absl::StrCat("leave-one-speaker-out: no speaker '", s, "'"));
    }
  }
  if (!held_out.empty()) speakers = std::set<std::string>(held_out.begin(), held_out.end());
  // Every take's inputs once (streams are named by the take, so a fold sees
  // what training on its takes alone would).
  const SpeechSet all = PrepareSpeech(recordings, options, /*train=*/true, /*test=*/true);
  std::vector<SpeakerFold> out;
  for (const std::string& speaker : speakers) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<size_t> train, test;
    for (size_t i = 0; i < recordings.size(); ++i) {
      (SpeakerOf(recordings[i]) == speaker ? test : train).push_back(i);
    }
    ASSIGN_OR_RETURN(TrainedClassifier trained,
                     FitSpeech(Select(all, train), Select(all, test), backend, options));
    out.push_back({speaker, static_cast<int64_t>(test.size()), trained.test_accuracy,
                   trained.augmented_test_accuracy, Seconds(start)});
    LOG(INFO) << "held out " << speaker << ": " << trained.test_accuracy << " clean, "
              << trained.augmented_test_accuracy << " augmented";
  }
  return out;
}

std::string DefaultClassifierDir() {
  if (const char* dir = std::getenv("MODAMBA_CLASSIFIER_DIR"); dir != nullptr && *dir) return dir;
  const char* home = std::getenv("HOME");
  return absl::StrCat(home != nullptr ? home : ".", "/.cache/modamba/classifiers");
}

absl::StatusOr<double> TrainTestFrechet(JudgeKind kind, const Judge& judge) {
  constexpr int64_t kMaxTrain = 10000;
  std::vector<float> train, test;
  if (kind == JudgeKind::kImage) {
    const data::MnistSet& tr = judge.corpus.images[data::kTrain];
    const data::MnistSet& te = judge.corpus.images[data::kVal];
    train = ImageInputs(tr.pixels.data(), std::min(tr.count(), kMaxTrain));
    test = ImageInputs(te.pixels.data(), te.count());
  } else {
    const auto& tr = judge.corpus.fsdd[data::kTrain];
    train = RecordingInputs(std::vector<data::Recording>(
        tr.begin(), tr.begin() + std::min<int64_t>(tr.size(), kMaxTrain)));
    test = RecordingInputs(judge.corpus.fsdd[data::kVal]);
  }
  Ensemble* classifier = judge.classifier.get();
  auto stats = [classifier](const std::vector<float>& x) {
    const int64_t n = x.size() / classifier->input_dim();
    std::vector<float> features(static_cast<size_t>(n) * classifier->feature_dim());
    classifier->Forward(x.data(), n, nullptr, features.data());
    return ComputeFeatureStats(features.data(), n, classifier->feature_dim());
  };
  ASSIGN_OR_RETURN(FeatureStats a, stats(train));
  ASSIGN_OR_RETURN(FeatureStats b, stats(test));
  return FrechetDistance(a, b);
}

std::string JudgeDataSha256(JudgeKind kind, const data::RawCorpus& corpus) {
  Sha256 sha;
  if (kind == JudgeKind::kImage) {
    const data::MnistSet& train = corpus.images[data::kTrain];
    sha.Update(absl::StrCat("mnist train ", train.count(), "\n"));
    sha.Update(absl::string_view(reinterpret_cast<const char*>(train.pixels.data()),
                                 train.pixels.size()));
    sha.Update(absl::string_view(reinterpret_cast<const char*>(train.labels.data()),
                                 train.labels.size() * sizeof(train.labels[0])));
  } else {
    for (const data::Recording& r : corpus.fsdd[data::kTrain]) {
      sha.Update(absl::StrCat(r.id, " ", r.digit, " ", r.audio.sample_rate, " ",
                              r.audio.samples.size(), "\n"));
      sha.Update(absl::string_view(reinterpret_cast<const char*>(r.audio.samples.data()),
                                   r.audio.samples.size() * sizeof(float)));
    }
  }
  return sha.HexDigest();
}

absl::StatusOr<Judge> LoadOrTrainJudge(JudgeKind kind, const std::string& dir,
                                       const std::string& raw_dir, Backend* backend,
                                       const JudgeOptions& options) {
  const Recipe recipe = RecipeOf(kind);
  const std::string path = absl::StrCat(dir, "/", recipe.file);
  if (FileExists(path)) {
    Judge judge;
    judge.path = path;
    ASSIGN_OR_RETURN(judge.classifier, Ensemble::Load(path, backend, &judge.metadata));
    int64_t items = -1;
    if (auto it = judge.metadata.find("train_items");
        it != judge.metadata.end() && !absl::SimpleAtoi(it->second, &items)) {
      return absl::DataLossError(absl::StrCat(path, ": bad train_items '", it->second, "'"));
    }
    ASSIGN_OR_RETURN(judge.corpus, LoadJudgeData(kind, raw_dir, items));
    const std::string why =
        KeyMismatch(judge.metadata, *judge.classifier, recipe, JudgeDataSha256(kind, judge.corpus));
    if (why.empty()) return judge;
    if (!options.retrain_on_mismatch) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the cached ", recipe.name, " judge ", path, " does not match: ", why,
          ". Retrain it (bazel run //evaluator:train_classifiers) or remove the file"));
    }
    LOG(WARNING) << "not reusing the cached " << recipe.name << " judge " << path << ": " << why
                 << "; retraining it";
  }
  ASSIGN_OR_RETURN(data::RawCorpus corpus, LoadJudgeData(kind, raw_dir, options.train_items));
  return TrainAndSave(kind, path, std::move(corpus), backend, options.training);
}

absl::StatusOr<Judge> TrainJudge(JudgeKind kind, const std::string& dir,
                                 const std::string& raw_dir, Backend* backend,
                                 const JudgeOptions& options) {
  ASSIGN_OR_RETURN(data::RawCorpus corpus, LoadJudgeData(kind, raw_dir, options.train_items));
  return TrainAndSave(kind, absl::StrCat(dir, "/", RecipeOf(kind).file), std::move(corpus),
                      backend, options.training);
}

}  // namespace modamba::eval
