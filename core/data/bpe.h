// Training a byte-level BPE tokenizer (text_tokenizer.h), as Hugging Face's
// BpeTrainer does with the ByteLevel pre-tokenizer: documents are split into
// GPT-2 pieces and only the counts of distinct pieces are kept, so memory is
// bounded by the number of distinct pieces (and their pairs), not by the corpus.
//
// The vocabulary is the 256 bytes (id = byte) followed by one token per merge.
// Each merge joins the adjacent pair with the highest count over all pieces
// (weighted by how often each piece occurs); ties go to the pair with the
// smaller (left id, right id). Training stops when the vocabulary is full or no
// pair is left. Only the counts matter, so the same documents in any order give
// the same tokenizer. Pair counts are updated incrementally after each merge.
#ifndef MODAMBA_CORE_DATA_BPE_H_
#define MODAMBA_CORE_DATA_BPE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/text_tokenizer.h"

namespace modamba::data {

class BpeTrainer {
 public:
  // vocab_size counts the 256 byte tokens; it must be at least 256.
  explicit BpeTrainer(int32_t vocab_size);

  // Counts the pieces of one document. Invalid UTF-8 is an error naming the
  // byte offset, and the document is not counted.
  absl::Status Add(std::string_view text);

  // Learns the merges. Refuses a vocab_size below 256.
  absl::StatusOr<std::unique_ptr<TextTokenizer>> Finish();

 private:
  int32_t vocab_size_;
  absl::flat_hash_map<std::string, int64_t> piece_counts_;
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_BPE_H_
