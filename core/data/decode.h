// Turning packed sequences back into something a person can read, see and
// hear: a text rendering of each document, images as PNG, speech as a
// mel-spectrogram PNG and a Griffin-Lim WAV.
#ifndef MODAMBA_CORE_DATA_DECODE_H_
#define MODAMBA_CORE_DATA_DECODE_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/data/image_tokenizer.h"
#include "core/data/manifest.h"
#include "core/data/reader.h"
#include "core/data/speech_tokenizer.h"
#include "core/data/text_tokenizer.h"

namespace modamba::data {

class SequenceDecoder {
 public:
  // Loads the tokenizers the dataset names.
  static absl::StatusOr<SequenceDecoder> Open(const std::string& dataset_dir);

  // Renders row `row` of `batch`, one line per document: text as text,
  // specials as <BOS>, images and speech as placeholders. When out_dir is
  // non-empty each image becomes <prefix>_docD_imageK.png and each speech span
  // <prefix>_docD_speechK.wav and <prefix>_docD_speechK_mel.png there.
  absl::StatusOr<std::string> Decode(const PackedBatch& batch, int row,
                                     const std::string& out_dir, const std::string& prefix,
                                     int griffin_lim_iterations = 32) const;

 private:
  DatasetManifest manifest_;
  std::unique_ptr<TextTokenizer> text_;  // a tokenizer.json's; null for bytes
  std::optional<ImageVq> vq_;
  std::optional<SpeechUnits> speech_;
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_DECODE_H_
