// Text tokenizers: UTF-8 bytes, or byte-level BPE as GPT-2 and Hugging Face
// `tokenizers` (ByteLevel pre-tokenizer and decoder, BPE model) define it,
// loaded from and saved to a Hugging Face tokenizer.json.
//
// Text ids are [0, vocab_size()). A BPE tokenizer trained here (bpe.h) gives
// byte b the id b and merged tokens the ids from 256 on; a loaded one keeps the
// file's ids.
#ifndef MODAMBA_CORE_DATA_TEXT_TOKENIZER_H_
#define MODAMBA_CORE_DATA_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"

namespace modamba::data {

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;
  // Appends the ids of `utf8`. Invalid UTF-8 is an InvalidArgument error that
  // names the byte offset ("invalid UTF-8 at byte 17"; callers add the file
  // and line) and appends nothing. Thread-safe; BPE keeps a word cache per
  // thread, so long-lived worker threads encode fastest.
  virtual absl::Status Encode(std::string_view utf8,
                              std::vector<int32_t>* ids) const = 0;
  // The bytes the ids stand for: Decode(Encode(s)) == s for valid UTF-8 (BPE
  // files loaded with add_prefix_space keep the added space). Every id must be
  // in [0, vocab_size()).
  virtual std::string Decode(absl::Span<const int32_t> ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  // What the tokenizer is, for the dataset manifest: {"type": "bytes"|"bpe",
  // "vocab_size", and for BPE "merges" and the sha256 of its tokenizer.json}.
  virtual nlohmann::json Describe() const = 0;
  // Writes dir/tokenizer.json (BPE) or nothing (bytes). `dir` must exist.
  virtual absl::Status Save(const std::string& dir) const = 0;
};

// ids = UTF-8 bytes, vocab 256.
std::unique_ptr<TextTokenizer> MakeByteTokenizer();

// A Hugging Face tokenizer.json with a BPE model (merges as "a b" strings or
// [a, b] lists, optional ignore_merges) whose vocabulary holds all 256 bytes,
// a ByteLevel pre-tokenizer, no normalizer, a ByteLevel or no decoder and
// post-processor, and added tokens (matched in the text first, longest at the
// leftmost position, as Hugging Face does). Anything else is refused with an
// error naming the file and the field.
absl::StatusOr<std::unique_ptr<TextTokenizer>> LoadTextTokenizer(
    const std::string& tokenizer_json_path);

// A byte-level BPE tokenizer from its parts (what the trainer produces):
// `tokens[id]` is the token's bytes, the first 256 are the bytes 0..255, and
// `merges` lists (left id, right id) in rank order; each merge's result is the
// token whose bytes are the two concatenated.
absl::StatusOr<std::unique_ptr<TextTokenizer>> MakeBpeTokenizer(
    std::vector<std::string> tokens,
    std::vector<std::pair<int32_t, int32_t>> merges);

// The GPT-2 pre-tokenizer: splits `utf8` into the pieces of
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// and calls `piece` on each in order (BPE never merges across pieces). An
// invalid UTF-8 sequence stops the split with an error naming its offset.
absl::Status PreTokenize(std::string_view utf8,
                         absl::FunctionRef<void(std::string_view)> piece);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_TEXT_TOKENIZER_H_
