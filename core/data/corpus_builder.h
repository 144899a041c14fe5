// `modamba data build --train=GLOBS [--val=GLOBS | --val_fraction=F]`: a
// user's corpus (corpus.h) -> tokenizers -> packed shards, one dataset
// directory per setting in the layout of builder.h, readable by the same
// ShardReader, trainer and evaluator.
//
// It streams, so memory does not grow with the corpus:
//   1. scan: every document is parsed once (errors name file and line, media
//      paths are checked), counted, and the tokenizers' training items are
//      drawn: the images and recordings whose seeded hash of (the file's place
//      among the inputs, line, segment) is smallest, a fixed number (bottom-k
//      sampling: the same items whatever the thread count, and for the corpus
//      renamed or recompressed); BPE counts the text pieces.
//   2. tokenizers: text (bytes, a tokenizer.json, or BPE trained in step 1),
//      the image VQ codebook (or a user's), the speech units, from training
//      documents only; none for images or speech that come only as ids.
//   3. encode: each split's documents form units of `unit_documents`
//      consecutive documents; a unit is shuffled (seeded by its index), encoded
//      and packed on its own, into one shard per setting. Units run on all
//      cores and their results are gathered in order, so the output is the same
//      bytes for any thread count.
// A unit is named by the SHA-256 of its documents, the options and the
// tokenizers (`train/shard-NNNNN.json` beside its shard), so a build that was
// interrupted resumes from the units it finished (the staging directory
// OUT/.staging-<setting> survives a kill), and --append keeps a built
// dataset's tokenizers and reuses every unit whose documents are unchanged.
//
// Bad input (malformed JSON, invalid UTF-8, a missing path, an unreadable
// image, truncated audio, an id out of range, a train document with the same
// image, audio or long text as a val document) is an error naming the file
// and line, or with skip_bad a skipped document, counted and listed in the
// manifest. A split or a modality of the setting that ends up empty is an
// error naming the inputs and the split rule. A failed build removes its
// staging directory: the output directory is left as it was.
#ifndef MODAMBA_CORE_DATA_CORPUS_BUILDER_H_
#define MODAMBA_CORE_DATA_CORPUS_BUILDER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/data/builder.h"
#include "core/data/manifest.h"

namespace modamba::data {

struct BuildProgress {
  std::string phase;  // "scan train", "encode val", ...
  int64_t done = 0;   // documents
  int64_t total = 0;  // 0: not known yet
  absl::Duration elapsed;  // since the phase began
};

struct CorpusBuildOptions {
  std::string out_dir;
  std::vector<Setting> settings = {Setting::kChameleon, Setting::kTransfusion,
                                   Setting::kTrimodal};
  std::string train_inputs;  // comma-separated globs
  std::string val_inputs;    // comma-separated globs; empty: val_fraction of train_inputs
  double val_fraction = 0;   // documents of train_inputs drawn for val by a seeded hash
  int seq_len = 1024;
  uint64_t seed = 1234;
  std::string text_tokenizer = "bytes";  // bytes | bpe:VOCAB_SIZE | PATH/tokenizer.json
  int image_height = 28;  // every image is resized to this shape (ResizeImage)
  int image_width = 28;
  int image_channels = 1;
  int image_codes = 512;
  std::string image_codebook;  // a user's codebook (ImageVq::LoadCodebook) instead of training one
  int speech_units = 256;
  int speech_sample_rate = 8000;
  int kmeans_iterations = 25;
  int64_t image_kmeans_patches = 200000;
  int64_t speech_kmeans_frames = 100000;
  int64_t speech_kmeans_recordings = 4000;  // recordings drawn for the units' k-means
  int64_t unit_documents = 8192;
  int threads = 0;  // 0: every core
  bool skip_bad = false;
  bool append = false;  // keep OUT/<setting>'s tokenizers, reuse its unchanged units
  // Called from the building thread at most a few times a second.
  std::function<void(const BuildProgress&)> progress;
};

absl::StatusOr<std::vector<DatasetManifest>> BuildCorpusDatasets(const CorpusBuildOptions& options);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_CORPUS_BUILDER_H_
