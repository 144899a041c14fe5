// The two digit classifiers that score generated samples, trained by
// Modamba's own ops (evaluator/mlp.h):
//   image:  MNIST digits, pixels / 255 -> MLP, trained on MNIST train with
//           the image augmentations of evaluator/augment.h, measured on
//           MNIST test, clean and augmented
//   speech: FSDD spoken digits, log-mel frames (core/data/audio.h) -> the
//           voiced part resampled to a fixed number of frames, mean-removed
//           cepstra of each and the log duration -> five time-delay
//           networks (mlp.h's conv front-end over the frames) from different
//           seeds, their log-probabilities averaged (ensemble.h), trained on
//           takes 5-49 and augmented copies of them (speed, pitch, loudness,
//           noise, reverb, SpecAugment masks), measured on takes 0-4, clean
//           and augmented; leave-one-speaker-out by LeaveOneSpeakerOut
// Both are cached as safetensors, keyed by the sha256 of their training data
// and the version of the recipe (LoadOrTrainJudge), with their accuracies in
// the metadata.
#ifndef MODAMBA_EVALUATOR_DIGIT_CLASSIFIERS_H_
#define MODAMBA_EVALUATOR_DIGIT_CLASSIFIERS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend.h"
#include "core/data/mnist.h"
#include "core/data/raw_data.h"
#include "evaluator/ensemble.h"
#include "evaluator/mlp.h"

namespace modamba::eval {

inline constexpr int kDigitClasses = 10;
inline constexpr int kSpeechFrames = 32;

// Image classifier inputs: [n, 784] pixels / 255.
std::vector<float> ImageInputs(const uint8_t* pixels, int64_t n);

// Speech classifier input of one utterance's log-mel frames [frames, n_mels]:
// the frames from the first to the last whose mean log-mel lies within
// kVoicedRange nats of the loudest frame's, linearly resampled to
// kSpeechFrames frames (ResampleVoiced); each band's mean over them removed
// (a voice's or a microphone's fixed spectral tilt, and the loudness, drop
// out) and each frame's first kSpeechCepstra orthonormal DCT-II coefficients
// kept (a smooth spectral envelope: the pitch harmonics the narrow low bands
// resolve, which differ between voices, drop out), then the log of the voiced
// frame count beside each frame's cepstra, frame-major (SpeechFeatures).
inline constexpr float kVoicedRange = 6.f;
inline constexpr int kSpeechCepstra = 16;
inline constexpr int kSpeechFrameDim = kSpeechCepstra + 1;  // the cepstra, the log duration
int SpeechInputDim();
struct VoicedFrames {
  std::vector<float> grid;  // [kSpeechFrames, n_mels]
  float log_frames = 0;     // log of the voiced frame count
};
VoicedFrames ResampleVoiced(const std::vector<float>& log_mel, int n_mels);
std::vector<float> SpeechFeatures(const VoicedFrames& voiced, int n_mels);
std::vector<float> SpeechInput(const std::vector<float>& log_mel, int n_mels);
// SpeechInput of each utterance, concatenated.
std::vector<float> SpeechInputs(const std::vector<std::vector<float>>& log_mels, int n_mels);

struct ClassifierTraining {
  int epochs = 0;  // 0: the recipe's default
  int batch = 128;
  double lr = 2e-3;
  double weight_decay = 1e-4;
  uint64_t seed = 1;
  bool augment = true;  // the augmentations of evaluator/augment.h
  int speech_copies = 0;  // augmented copies of each training take (0: the recipe's default)
  // Vocal tract length perturbation of the training copies on top of the
  // recipe's augmentations (augment.h's max_vtlp; 0: none, the recipe).
  double vtlp = 0;
  bool verbose = false;  // an epoch line on stderr
};

struct TrainedClassifier {
  std::unique_ptr<Ensemble> classifier;
  double test_accuracy = 0;            // the clean held-out split
  double augmented_test_accuracy = 0;  // the same, each item augmented once
  double seconds = 0;
};

absl::StatusOr<TrainedClassifier> TrainImageClassifier(const data::MnistSet& train,
                                                       const data::MnistSet& test,
                                                       Backend* backend,
                                                       const ClassifierTraining& options);

absl::StatusOr<TrainedClassifier> TrainSpeechClassifier(
    const std::vector<data::Recording>& train, const std::vector<data::Recording>& test,
    Backend* backend, const ClassifierTraining& options);

// The augmented test sets: every item augmented once, from streams named by
// `seed` and the item, so the set is the same for every run and judge.
inline constexpr uint64_t kAugmentedTestSeed = 20240521;
std::vector<float> AugmentedImageInputs(const data::MnistSet& test, uint64_t seed);
std::vector<float> AugmentedSpeechInputs(const std::vector<data::Recording>& test, uint64_t seed);
// Classifier inputs of clean recordings (SpeechInput of their log-mel).
std::vector<float> RecordingInputs(const std::vector<data::Recording>& recordings);

// The share of `predicted` equal to `labels`; of a classifier's predictions
// of inputs [n, input].
double Accuracy(const std::vector<int32_t>& predicted, const std::vector<int32_t>& labels);
double Accuracy(Ensemble* classifier, const std::vector<float>& inputs,
                const std::vector<int32_t>& labels);

// A character error rate of recognised digits: the Levenshtein distance
// between the recognised and the asked digit word ("seven"), summed, over the
// asked words' characters. 0 when every word is right; "one" for "nine" is
// 2 / 4.
double DigitWordCer(const std::vector<int>& recognised, const std::vector<int>& asked);

// Leave-one-speaker-out: for every FSDD speaker, a speech classifier trained
// on all takes of the other speakers and tested on that speaker's takes
// (clean and augmented); only the speakers `held_out` names, when it names
// any.
struct SpeakerFold {
  std::string speaker;
  int64_t takes = 0;
  double accuracy = 0, augmented_accuracy = 0, seconds = 0;
};
absl::StatusOr<std::vector<SpeakerFold>> LeaveOneSpeakerOut(
    const std::vector<data::Recording>& recordings, Backend* backend,
    const ClassifierTraining& options, const std::vector<std::string>& held_out = {});
// "george" of "fsdd/7_george_12".
std::string SpeakerOf(const data::Recording& recording);

// $MODAMBA_CLASSIFIER_DIR, else $HOME/.cache/modamba/classifiers.
std::string DefaultClassifierDir();
inline constexpr char kImageClassifierFile[] = "mnist_mlp.safetensors";
inline constexpr char kSpeechClassifierFile[] = "fsdd_mlp.safetensors";

// A cached judge is keyed by the sha256 of the data it was trained on and
// the version of the code that trained it. Bump a version whenever its
// recipe (inputs, augmentations, network, training) changes.
enum class JudgeKind { kImage, kSpeech };
inline constexpr char kImageJudgeVersion[] = "mnist-mlp/3";
inline constexpr char kSpeechJudgeVersion[] = "fsdd-tdnn/5";

struct JudgeOptions {
  ClassifierTraining training;
  // Training items from the start of the raw train split when a judge is
  // trained (-1: all); a cached judge is checked against the items it names.
  int64_t train_items = -1;
  // On a key mismatch: retrain (and overwrite), else refuse.
  bool retrain_on_mismatch = true;
};

struct Judge {
  std::unique_ptr<Ensemble> classifier;
  std::string path;
  // data_sha256, code_version, train_items, test_accuracy, ...
  std::map<std::string, std::string> metadata;
  // The raw data it was checked against: its training items (images or
  // fsdd [kTrain]) and the whole held-out split ([kVal]).
  data::RawCorpus corpus;
  bool trained = false;  // trained by this call
};

// The FID floor of a judge: the Frechet distance (frechet.h) between its
// features of (up to) 10,000 of its training items and of the whole held-out
// split, what real data scores with many samples.
absl::StatusOr<double> TrainTestFrechet(JudgeKind kind, const Judge& judge);

// sha256 of what a judge of `kind` trains on in `corpus` (decoded pixels and
// labels; recording ids, digits and samples).
std::string JudgeDataSha256(JudgeKind kind, const data::RawCorpus& corpus);

// Loads <dir>/<file> when its key matches the raw data (sha256 of the items
// it was trained on, and this build's version); otherwise trains it (or
// refuses, naming the file and what differs) and saves it there.
absl::StatusOr<Judge> LoadOrTrainJudge(JudgeKind kind, const std::string& dir,
                                       const std::string& raw_dir, Backend* backend,
                                       const JudgeOptions& options);
// Trains <dir>/<file> afresh (train_classifiers).
absl::StatusOr<Judge> TrainJudge(JudgeKind kind, const std::string& dir,
                                 const std::string& raw_dir, Backend* backend,
                                 const JudgeOptions& options);

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_DIGIT_CLASSIFIERS_H_
