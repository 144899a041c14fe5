// Shard files: fixed-length packed sequences that many workers read by offset.
//
// Format version 1, all integers little-endian:
//
//   offset  bytes  field
//   0       8      magic "MMBSHRD1"
//   8       4      u32 version (1)
//   12      4      u32 seq_len L
//   16      8      u64 num_sequences N
//   24      4      u32 patch_dim P (0: no continuous payload)
//   28      4      u32 zero
//   32      8      u64 num_patches NP
//   40      4      u32 CRC-32 of bytes [0, 40)
//   44      20     zero
//   64      4N     u32 CRC-32 of each sequence: its record, then its patches
//   align8         u64 patch_begin[N + 1] (only when P > 0): sequence i's
//                  patches are rows [patch_begin[i], patch_begin[i + 1])
//   align8         N records of R = L * (7 + (P > 0)) bytes each:
//                    i32 token[L] | u8 modality[L] | u8 loss_mask[L] |
//                    u8 doc_start[L] | u8 patch_flag[L] (only when P > 0)
//   then           f32 patches[NP][P]
//
// Sequence i's record is at records_offset + i * R, so a reader needs only the
// header to seek anywhere. Per token: loss_mask = 1 where the token is a
// prediction target (predicted from the tokens before it in its document),
// doc_start = 1 on the first token of each document (and of the padding run),
// patch_flag = 1 where the position carries a continuous image patch (the next
// row of the sequence's patches, in token order). The file size is exact: a
// truncated shard is detected at open, a corrupt record when it is read.
#ifndef MODAMBA_CORE_DATA_SHARD_H_
#define MODAMBA_CORE_DATA_SHARD_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/packing.h"

namespace modamba::data {

// Writes sequences [begin, end) of `data` to `path` (a temporary file renamed
// into place).
absl::Status WriteShard(const std::string& path, const PackedSequences& data, int64_t begin,
                        int64_t end);

// Destination of one sequence: row `row` of per-token arrays of seq_len
// entries per row; patches are appended.
struct SequenceSink {
  int32_t* tokens;
  int32_t* modality;
  uint8_t* loss_mask;
  uint8_t* doc_start;
  uint8_t* patch_flag;
  std::vector<float>* patches;
};

class ShardFile {
 public:
  // Checks the header and the exact file size.
  static absl::StatusOr<std::unique_ptr<ShardFile>> Open(const std::string& path);
  ~ShardFile();

  const std::string& path() const { return path_; }
  int seq_len() const { return seq_len_; }
  int patch_dim() const { return patch_dim_; }
  int64_t num_sequences() const { return num_sequences_; }

  // Reads sequence i (checking its CRC). Thread-safe (pread).
  absl::Status Read(int64_t i, const SequenceSink& sink) const;

 private:
  ShardFile() = default;

  std::string path_;
  int fd_ = -1;
  int seq_len_ = 0;
  int patch_dim_ = 0;
  int64_t num_sequences_ = 0;
  int64_t records_offset_ = 0;
  int64_t record_bytes_ = 0;
  int64_t patches_offset_ = 0;
  std::vector<uint32_t> crc_;
  std::vector<int64_t> patch_begin_;
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_SHARD_H_
