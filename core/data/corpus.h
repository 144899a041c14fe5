// A user's corpus, the input of `modamba data build --train=... --val=...`
// (core/data/README.md documents the format for users):
//
//   JSON Lines, one document per line, each line an array of segments in
//   document order:
//     {"text": "..."}                          UTF-8 text
//     {"image": "images/0001.png"}             PNG or JPEG, path relative to the file
//     {"audio": "speech/0001.flac"}            any libsndfile format, relative path
//     {"tokens": [3, 17, ...], "modality": "image"|"speech"|"text"}
//                                              ids of the modality's own range
//                                              (image codes, speech units, text ids)
//   Files may be gzip (.gz) or zstd (.zst) compressed, told apart by their
//   first bytes. Blank lines are allowed and skipped.
//
//   Pre-tokenized arrays: X.npy (tokens) beside X.modality.npy (one modality id
//   per token: 0 text, 1 image, 2 speech) and optionally X.offsets.npy (D + 1
//   document offsets; without it the tokens are one document per
//   --seq_len - 2 tokens), or one X.safetensors holding tensors `tokens`,
//   `modality` and optionally `offsets`. Integer arrays of any width; each run
//   of one modality in a document is one "tokens" segment.
//
// Every error names the file and line (the document number for arrays).
#ifndef MODAMBA_CORE_DATA_CORPUS_H_
#define MODAMBA_CORE_DATA_CORPUS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modamba::data {

struct Segment {
  enum Kind { kText, kImage, kAudio, kTokens } kind = kText;
  std::string value;            // the text, or the media file's resolved path
  std::vector<int32_t> tokens;  // kTokens
  int modality = 0;             // kTokens: kText, kImage or kSpeech
};

struct CorpusDocument {
  std::vector<Segment> segments;
};

// Parses one JSON line; relative media paths resolve against `base_dir`.
// Errors say what is wrong ("malformed JSON at column 12: ...", "invalid
// UTF-8 at byte offset 40", "segment 2: unknown key 'img'"); callers add file:line.
absl::StatusOr<CorpusDocument> ParseDocumentLine(absl::string_view line,
                                                 const std::string& base_dir);

// The files of comma-separated glob patterns, each pattern's matches sorted,
// duplicates removed, the sidecars of pre-tokenized arrays (*.modality.npy,
// *.offsets.npy) left out. A pattern matching nothing is an error naming it.
absl::StatusOr<std::vector<std::string>> ExpandInputs(const std::string& patterns);

// One document of an input file with where it came from.
struct RawDocument {
  int64_t line = 0;   // 1-based line (JSONL) or document number (arrays)
  std::string text;   // the JSON line; empty for arrays
  std::unique_ptr<CorpusDocument> parsed;  // arrays: already segments
};

// Reads the documents of one input file in order, decompressing as needed.
class CorpusFileReader {
 public:
  // `array_document_tokens`: tokens per document of arrays without offsets.
  static absl::StatusOr<std::unique_ptr<CorpusFileReader>> Open(const std::string& path,
                                                                int64_t array_document_tokens);
  virtual ~CorpusFileReader() = default;
  // False at the end. Errors (corrupt or truncated compression, an array
  // file that does not parse) name the file.
  virtual absl::StatusOr<bool> Next(RawDocument* doc) = 0;
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_CORPUS_H_
