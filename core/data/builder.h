// `modamba data build`: raw data -> tokenizers -> documents -> packed shards,
// one self-contained dataset directory per setting:
//
//   OUT/<setting>/manifest.json              see manifest.h
//   OUT/<setting>/tokenizers/manifest.json   what each tokenizer is and its hash
//   OUT/<setting>/tokenizers/*.safetensors   image_vq, speech_units (as needed)
//   OUT/<setting>/{train,val}/shard-NNNNN.bin  see shard.h
//
// Settings (the paper's three): chameleon = text + discrete images;
// transfusion = text + continuous images; trimodal = text + discrete images +
// speech units. Documents per split:
//   text               tinyshakespeare chunks of up to seq_len - 2 bytes
//   caption_image /    each MNIST image once, direction drawn at random
//   image_caption
//   transcript_speech  (trimodal) each FSDD and cathy recording in both
//   speech_transcript  directions
//   digit_triple       (trimodal) each FSDD recording with a random MNIST
//                      image of its digit and its word, in a random order
// The train split uses only training items and the val split only held-out
// items (raw_data.h). Tokenizers learn from training items only.
//
// Everything random derives from one seed through named streams, so the same
// options give the same bytes, and building one setting alone gives the same
// bytes as building it among others. Each setting is written to a staging
// directory and renamed into place only when every setting has been built:
// an error leaves the output directory as it was.
#ifndef MODAMBA_CORE_DATA_BUILDER_H_
#define MODAMBA_CORE_DATA_BUILDER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/image_tokenizer.h"
#include "core/data/manifest.h"
#include "core/data/raw_data.h"
#include "core/data/speech_tokenizer.h"
#include "core/data/text_tokenizer.h"

namespace modamba::data {

enum class Setting { kChameleon, kTransfusion, kTrimodal };
const char* SettingName(Setting setting);
// "chameleon", "transfusion", "trimodal", "all", or a comma-separated list.
absl::StatusOr<std::vector<Setting>> ParseSettings(const std::string& text);

struct BuildOptions {
  std::string raw_dir;
  std::string out_dir;
  std::vector<Setting> settings = {Setting::kChameleon, Setting::kTransfusion,
                                   Setting::kTrimodal};
  int seq_len = 1024;
  uint64_t seed = 1234;
  std::string text_tokenizer = "bytes";  // see ParseTextTokenizerFlag
  int image_codes = 512;
  int speech_units = 256;
  int kmeans_iterations = 25;
  int64_t image_kmeans_patches = 200000;
  int64_t speech_kmeans_frames = 100000;
  int64_t shard_sequences = 1024;
  // Slices of the raw data (its images / speech / text switches are set from
  // the settings).
  RawSelection selection;
};

// --text_tokenizer: "bytes", "bpe:VOCAB_SIZE" (byte-level BPE trained on the
// train text, VOCAB_SIZE >= 256) or the path of a Hugging Face tokenizer.json.
struct TextTokenizerFlag {
  int32_t bpe_vocab_size = 0;  // > 0: train one
  std::string path;            // non-empty: load it
};
absl::StatusOr<TextTokenizerFlag> ParseTextTokenizerFlag(const std::string& flag);

inline constexpr char kImageVqFile[] = "tokenizers/image_vq.safetensors";
inline constexpr char kSpeechUnitsFile[] = "tokenizers/speech_units.safetensors";
inline constexpr char kTextTokenizerFile[] = "tokenizers/tokenizer.json";

// Writes DIR/tokenizers/: the text tokenizer's tokenizer.json (unless bytes),
// the image codebook (continuous: says the images are patches of `shape`; no
// codebook: says the image codes came pre-tokenized), the speech units (none
// with speech_ids: pre-tokenized units), and manifest.json saying what each
// is; records each file in manifest->tokenizers (manifest->vocab must be set).
absl::Status WriteTokenizerFiles(const std::string& dir, const TextTokenizer& text,
                                 const ImageShape& shape, bool continuous, const ImageVq* vq,
                                 const SpeechUnits* speech, bool speech_ids, uint64_t seed,
                                 DatasetManifest* manifest);

// Builds every requested setting; returns their manifests.
absl::StatusOr<std::vector<DatasetManifest>> BuildDatasets(const BuildOptions& options);

// The digits world as a user's corpus (corpus.h), in options.out_dir (which
// must not exist; written aside and renamed into place):
//   {train,val}.jsonl      the tri-modal setting's documents, one a line, in
//                          its seeded order (chameleon and transfusion builds
//                          leave out the speech documents, as they do here)
//   images/{train,val}/NNNNN.png   every MNIST image once
//   audio/{fsdd,cathy}/ID.flac     the raw recordings as they are
// Uses raw_dir, seq_len (text chunks), seed and selection.
absl::Status ExportDigitsWorld(const BuildOptions& options);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_BUILDER_H_
