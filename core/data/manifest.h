// The dataset manifest (manifest.json at the root of a dataset directory):
// what a trainer needs to size its model (vocabulary, ranges, modalities,
// sequence length, patch dimension), where the shards are, and what went in
// (tokens per modality and documents per type per split, seeds, tokenizer
// files and their SHA-256, tokenizer quality numbers).
#ifndef MODAMBA_CORE_DATA_MANIFEST_H_
#define MODAMBA_CORE_DATA_MANIFEST_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/documents.h"
#include "core/data/packing.h"
#include "core/data/vocab.h"

namespace modamba::data {

inline constexpr int kManifestVersion = 1;
inline constexpr char kManifestFile[] = "manifest.json";

struct ShardEntry {
  std::string file;  // relative to the dataset directory
  int64_t sequences = 0;
  std::string sha256;
};

struct SplitStats {
  std::vector<ShardEntry> shards;
  int64_t sequences = 0;
  std::array<int64_t, kNumModalities> tokens{};   // non-padding tokens by modality
  std::array<int64_t, kNumModalities> targets{};  // tokens with loss_mask = 1
  int64_t pad_tokens = 0;
  int64_t patches = 0;  // continuous patch positions
  std::array<int64_t, kNumDocTypes> documents{};
  std::array<int64_t, kNumDocTypes> dropped_documents{};  // longer than seq_len
  std::map<std::string, int64_t> items;  // raw items used, by source
  // Inputs skipped as bad (--skip_bad), "FILE:LINE: what"; at most
  // kMaxListedSkips are listed, items["skipped_bad"] counts them all.
  std::vector<std::string> skipped;
};
inline constexpr size_t kMaxListedSkips = 1000;

struct TokenizerEntry {
  std::string file;  // relative to the dataset directory
  std::string sha256;
};

struct DatasetManifest {
  int format_version = kManifestVersion;
  std::string setting;  // "chameleon", "transfusion" or "trimodal"
  int seq_len = 0;
  int patch_dim = 0;  // 16 for Transfusion, else 0
  Vocab vocab;
  int num_modalities = 0;  // modalities 0..num_modalities-1 occur
  uint64_t seed = 0;
  std::map<std::string, SplitStats> splits;           // "train", "val"
  std::map<std::string, TokenizerEntry> tokenizers;   // "image_vq", "speech_units"
  std::map<std::string, double> metrics;              // tokenizer quality on val
  std::map<std::string, std::string> build_options;

  absl::StatusOr<const SplitStats*> split(const std::string& name) const;
};

absl::StatusOr<DatasetManifest> ReadDatasetManifest(const std::string& dataset_dir);

// Adds the token, target, padding and patch counts of packed sequences.
void CountPackedTokens(const PackedSequences& data, SplitStats* stats);

// One split's statistics as the manifest stores them (without the shard list's
// owner), and back; `what` names the source in errors.
std::string SplitStatsToJson(const SplitStats& stats);
absl::StatusOr<SplitStats> SplitStatsFromJson(const std::string& text, const std::string& what);
absl::Status WriteDatasetManifest(const std::string& dataset_dir, const DatasetManifest& manifest);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_MANIFEST_H_
