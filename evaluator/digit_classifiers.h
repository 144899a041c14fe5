// The two digit classifiers that score generated samples, trained by
// Modamba's own ops (evaluator/mlp.h):
//   image:  MNIST digits, pixels / 255 -> MLP, trained on MNIST train with
//           random shifts of up to 2 pixels, measured on MNIST test
//   speech: FSDD spoken digits, log-mel frames (core/data/audio.h) -> the
//           voiced part resampled to a fixed number of frames, plus its log
//           duration -> MLP, trained on takes 5-49, measured on takes 0-4
// Both are cached as safetensors (with their test accuracy in the metadata)
// so every evaluation reuses the same classifier.
#ifndef MODAMBA_EVALUATOR_DIGIT_CLASSIFIERS_H_
#define MODAMBA_EVALUATOR_DIGIT_CLASSIFIERS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend.h"
#include "core/data/mnist.h"
#include "core/data/raw_data.h"
#include "evaluator/mlp.h"

namespace modamba::eval {

inline constexpr int kDigitClasses = 10;
inline constexpr int kSpeechFrames = 32;

// Image classifier inputs: [n, 784] pixels / 255.
std::vector<float> ImageInputs(const uint8_t* pixels, int64_t n);

// Speech classifier input of one utterance's log-mel frames [frames, n_mels]:
// the frames from the first to the last whose mean log-mel lies within
// kVoicedRange nats of the loudest frame's, linearly resampled to
// kSpeechFrames frames, then the log of the voiced frame count.
inline constexpr float kVoicedRange = 6.f;
int SpeechInputDim(int n_mels);
std::vector<float> SpeechInput(const std::vector<float>& log_mel, int n_mels);
// SpeechInput of each utterance, concatenated.
std::vector<float> SpeechInputs(const std::vector<std::vector<float>>& log_mels, int n_mels);

struct ClassifierTraining {
  int epochs = 0;  // 0: the recipe's default
  int batch = 128;
  double lr = 2e-3;
  double weight_decay = 1e-4;
  uint64_t seed = 1;
  bool verbose = false;  // an epoch line on stderr
};

struct TrainedClassifier {
  std::unique_ptr<Mlp> mlp;
  double test_accuracy = 0;
  double seconds = 0;
};

absl::StatusOr<TrainedClassifier> TrainImageClassifier(const data::MnistSet& train,
                                                       const data::MnistSet& test,
                                                       Backend* backend,
                                                       const ClassifierTraining& options);

absl::StatusOr<TrainedClassifier> TrainSpeechClassifier(
    const std::vector<data::Recording>& train, const std::vector<data::Recording>& test,
    Backend* backend, const ClassifierTraining& options);

// Accuracy of `mlp` on inputs [n, input] with labels.
double Accuracy(Mlp* mlp, const std::vector<float>& inputs, const std::vector<int32_t>& labels);

// $MODAMBA_CLASSIFIER_DIR, else $HOME/.cache/modamba/classifiers.
std::string DefaultClassifierDir();
inline constexpr char kImageClassifierFile[] = "mnist_mlp.safetensors";
inline constexpr char kSpeechClassifierFile[] = "fsdd_mlp.safetensors";

// Loads <dir>/<file>, or trains it from the raw data directory and saves it
// there first.
absl::StatusOr<std::unique_ptr<Mlp>> LoadOrTrainImageClassifier(const std::string& dir,
                                                                const std::string& raw_dir,
                                                                Backend* backend);
absl::StatusOr<std::unique_ptr<Mlp>> LoadOrTrainSpeechClassifier(const std::string& dir,
                                                                 const std::string& raw_dir,
                                                                 Backend* backend);

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_DIGIT_CLASSIFIERS_H_
