// Speech units: log-mel frames (25 ms windows every 10 ms at 8 kHz, see
// audio.h), standardised per mel band, clustered by k-means into K units;
// runs of one unit collapse to a single token, as HuBERT-style unit language
// models do. Decoding expands every unit to its mean run length in the
// training data, so decoded speech keeps roughly its original duration, and
// then maps it to its centroid's log-mel frame.
#ifndef MODAMBA_CORE_DATA_SPEECH_TOKENIZER_H_
#define MODAMBA_CORE_DATA_SPEECH_TOKENIZER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/audio.h"
#include "core/data/kmeans.h"
#include "core/data/tokenizer_key.h"

namespace modamba::data {

struct SpeechUnitsOptions {
  int k = 256;
  int iterations = 25;
  int64_t max_frames = 100000;  // k-means trains on a random subset
  uint64_t seed = 0;
};

class SpeechUnits {
 public:
  // `log_mels`: training utterances, each [frames, n_mels].
  static absl::StatusOr<SpeechUnits> Train(const std::vector<std::vector<float>>& log_mels,
                                           const MelConfig& mel,
                                           const SpeechUnitsOptions& options);
  static absl::StatusOr<SpeechUnits> Load(const std::string& path);
  absl::Status Save(const std::string& path,
                    const std::map<std::string, std::string>& metadata) const;

  int k() const { return model_.k; }
  const MelConfig& mel_config() const { return mel_; }
  // What trained it: the sha256 of the training log-mel frames, and
  // kSpeechUnitsVersion.
  const TokenizerKey& key() const { return key_; }
  // The unit of every frame.
  std::vector<int32_t> FrameUnits(const std::vector<float>& log_mel) const;
  static std::vector<int32_t> Collapse(const std::vector<int32_t>& frame_units);
  // FrameUnits then Collapse: the token sequence of an utterance.
  std::vector<int32_t> Encode(const std::vector<float>& log_mel) const {
    return Collapse(FrameUnits(log_mel));
  }
  // Units back to log-mel frames [frames, n_mels]; units outside [0, k) are
  // an error.
  absl::StatusOr<std::vector<float>> Decode(const std::vector<int32_t>& units) const;

 private:
  MelConfig mel_;
  std::vector<float> mean_, stddev_;  // per mel band, of the training frames
  KMeansModel model_;                 // centroids in standardised space
  std::vector<float> mean_run_;       // frames per run of each unit in training
  TokenizerKey key_;
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_SPEECH_TOKENIZER_H_
