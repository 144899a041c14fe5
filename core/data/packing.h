// Packing documents into fixed-length training sequences.
//
// First fit over a window of open sequences: each document goes into the
// first open sequence with room for it; when none has room and the window is
// full, the fullest open sequence is closed (padded with PAD) and a new one
// opened. Documents never straddle sequences, so every sequence starts at a
// document start. A document longer than the sequence length is dropped and
// counted. The padding run is a document of its own (doc_start = 1 on its
// first PAD) with loss_mask 0, modality text.
#ifndef MODAMBA_CORE_DATA_PACKING_H_
#define MODAMBA_CORE_DATA_PACKING_H_

#include <array>
#include <cstdint>
#include <deque>
#include <vector>

#include "core/data/documents.h"

namespace modamba::data {

// Packed sequences, struct of arrays; the per-token arrays are
// [num_sequences * seq_len].
struct PackedSequences {
  int seq_len = 0;
  int patch_dim = 0;  // 0: no continuous payload (and patch_flag is empty)
  int64_t num_sequences = 0;
  std::vector<int32_t> tokens;
  std::vector<uint8_t> modality;
  std::vector<uint8_t> loss_mask;
  std::vector<uint8_t> doc_start;
  std::vector<uint8_t> patch_flag;
  std::vector<float> patches;  // [total flagged tokens, patch_dim], in token order
  // Sequence i's patches are rows [patch_begin[i], patch_begin[i + 1]).
  std::vector<int64_t> patch_begin = {0};
};

struct PackingStats {
  std::array<int64_t, kNumDocTypes> documents{};  // packed
  std::array<int64_t, kNumDocTypes> dropped{};    // longer than seq_len
};

class Packer {
 public:
  Packer(int seq_len, int patch_dim, int open_sequences = 16);

  void Add(Document doc);
  // Closes every open sequence (in the order they were opened).
  PackedSequences Finish();
  const PackingStats& stats() const { return stats_; }

 private:
  struct Open {
    std::vector<Document> docs;
    int64_t used = 0;
  };
  void Emit(Open* open);

  int open_limit_;
  PackingStats stats_;
  std::deque<Open> open_;
  PackedSequences out_;
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_PACKING_H_
