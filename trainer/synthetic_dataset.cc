#include "trainer/synthetic_dataset.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/documents.h"
#include "core/data/manifest.h"
#include "core/data/packing.h"
#include "core/data/shard.h"
#include "core/file_util.h"
#include "core/rng.h"
#include "core/status_macros.h"

namespace modamba {

absl::Status WriteSyntheticDataset(const std::string& dir, const std::string& setting,
                                   int seq_len, int train_sequences, int val_sequences) {
  const bool patches = setting == "transfusion", speech = setting == "trimodal";
  const int patch_dim = patches ? 16 : 0;
  data::DatasetManifest manifest;
  manifest.setting = setting;
  manifest.seq_len = seq_len;
  manifest.patch_dim = patch_dim;
  manifest.num_modalities = speech ? 3 : 2;
  manifest.seed = 1;
  Rng rng(setting.size());
  for (auto [split, wanted] : {std::pair{"train", train_sequences}, std::pair{"val", val_sequences}}) {
    data::Packer packer(seq_len, patch_dim);
    data::PackedSequences packed;
    // Documents until the packer has produced enough sequences.
    for (int doc = 0;; ++doc) {
      data::DocumentWriter w(data::DocType::kCaptionImage, manifest.vocab, patch_dim);
      w.Text(data::DigitCaption(doc % 10));
      if (patches) {
        std::vector<float> p(6 * patch_dim);
        for (float& x : p) x = static_cast<float>(rng.Normal(0, 1));
        w.ImagePatches(p.data(), 6);
      } else {
        std::vector<int32_t> codes(6);
        for (int32_t& c : codes) c = static_cast<int32_t>(rng.Below(manifest.vocab.image_codes));
        w.ImageCodes(codes.data(), codes.size());
      }
      if (speech) {
        std::vector<int32_t> units(5);
        for (int32_t& u : units) u = static_cast<int32_t>(rng.Below(manifest.vocab.speech_units));
        w.Speech(units);
      }
      data::Document d = w.Finish();
      if (d.size() > seq_len) {
        return absl::InvalidArgumentError(absl::StrCat("seq_len ", seq_len, " is shorter than a ",
                                                       setting, " document (", d.size(), " tokens)"));
      }
      packer.Add(std::move(d));
      if (doc % 8 == 7) {
        data::Packer probe = packer;
        if (probe.Finish().num_sequences >= wanted) break;
      }
    }
    packed = packer.Finish();
    data::SplitStats& stats = manifest.splits[split];
    RETURN_IF_ERROR(MakeDirs(absl::StrCat(dir, "/", split)));
    data::ShardEntry entry;
    entry.file = absl::StrFormat("%s/shard-00000.bin", split);
    entry.sequences = std::min<int64_t>(wanted, packed.num_sequences);
    RETURN_IF_ERROR(data::WriteShard(absl::StrCat(dir, "/", entry.file), packed, 0, entry.sequences));
    ASSIGN_OR_RETURN(entry.sha256, Sha256File(absl::StrCat(dir, "/", entry.file)));
    stats.sequences = entry.sequences;
    stats.shards.push_back(entry);
  }
  return data::WriteDatasetManifest(dir, manifest);
}

}  // namespace modamba
