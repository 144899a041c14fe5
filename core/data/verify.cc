#include "core/data/verify.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/data/audio.h"
#include "core/data/image_tokenizer.h"
#include "core/data/manifest.h"
#include "core/data/reader.h"
#include "core/data/spans.h"
#include "core/data/speech_tokenizer.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba::data {
namespace {

constexpr size_t kMinTextDocBytes = 64;
constexpr size_t kMaxExamples = 5;

template <typename T>
std::string Fingerprint(const T* data, size_t n) {
  return Sha256Hex(absl::string_view(reinterpret_cast<const char*>(data), n * sizeof(T)));
}

// Which splits' raw items have a given content.
class FingerprintIndex {
 public:
  void Add(const std::string& fingerprint, int split) { splits_[fingerprint] |= 1 << split; }
  int Lookup(const std::string& fingerprint) const {
    auto it = splits_.find(fingerprint);
    return it == splits_.end() ? 0 : it->second;
  }
  int64_t CountHeldOut() const {
    int64_t n = 0;
    for (const auto& [f, mask] : splits_) n += (mask >> kVal) & 1;
    return n;
  }

 private:
  std::map<std::string, int> splits_;
};

void Classify(int mask, const std::string& what, LeakReport* report) {
  ++report->train_spans;
  const bool held_out = (mask >> kVal) & 1;
  const bool train = (mask >> kTrain) & 1;
  if (held_out && train) {
    ++report->shared;
  } else if (held_out) {
    ++report->leaks;
    if (report->examples.size() < kMaxExamples) report->examples.push_back(what);
  } else if (!train) {
    ++report->unmatched;
  }
}

}  // namespace

absl::Status VerifyShards(const std::string& dataset_dir) {
  ASSIGN_OR_RETURN(const DatasetManifest manifest, ReadDatasetManifest(dataset_dir));
  for (const auto& [name, split] : manifest.splits) {
    for (const ShardEntry& entry : split.shards) {
      const std::string path = absl::StrCat(dataset_dir, "/", entry.file);
      ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
      if (sha != entry.sha256) {
        return absl::DataLossError(absl::StrCat(path, ": SHA-256 ", sha,
                                                " differs from the manifest's ", entry.sha256));
      }
    }
    ReaderOptions options;
    options.shuffle = false;
    ASSIGN_OR_RETURN(auto reader, ShardReader::Open(dataset_dir, name, 0, 1, options));
    PackedBatch batch;
    for (int64_t i = 0; i < reader->num_sequences(); ++i) {
      RETURN_IF_ERROR(reader->ReadSequence(i, &batch));
      // Each token's modality is its id's range, except patch positions (PAD).
      for (int t = 0; t < batch.seq_len; ++t) {
        if (!batch.patch_flag[t] && manifest.vocab.ModalityOfId(batch.tokens[t]) != batch.modality[t]) {
          return absl::DataLossError(absl::StrCat(dataset_dir, ": ", name, " sequence ", i, " token ",
                                                  t, ": id ", batch.tokens[t], " with modality ",
                                                  batch.modality[t]));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LeakReport> CheckHeldOutLeaks(const std::string& dataset_dir,
                                             const std::string& raw_dir,
                                             const RawSelection& selection_in) {
  ASSIGN_OR_RETURN(const DatasetManifest manifest, ReadDatasetManifest(dataset_dir));
  const bool continuous = manifest.patch_dim > 0;
  const bool speech = manifest.tokenizers.count("speech_units") > 0;
  RawSelection selection = selection_in;
  selection.images = selection.text = true;
  selection.speech = speech;
  ASSIGN_OR_RETURN(const RawCorpus raw, LoadRawCorpus(raw_dir, selection));

  FingerprintIndex images, units;
  if (continuous) {
    float patches[kPatchesPerImage * kPatchDim];
    for (int s = 0; s < kNumSplits; ++s) {
      for (int64_t i = 0; i < raw.images[s].count(); ++i) {
        ContinuousPatches(raw.images[s].image(i), patches);
        images.Add(Fingerprint(patches, kPatchesPerImage * kPatchDim), s);
      }
    }
  } else {
    ASSIGN_OR_RETURN(const ImageVq vq,
                     ImageVq::Load(absl::StrCat(dataset_dir, "/", manifest.tokenizers.at("image_vq").file)));
    for (int s = 0; s < kNumSplits; ++s) {
      const std::vector<int32_t> codes = vq.Encode(raw.images[s].pixels.data(), raw.images[s].count());
      for (int64_t i = 0; i < raw.images[s].count(); ++i) {
        images.Add(Fingerprint(codes.data() + i * kPatchesPerImage, kPatchesPerImage), s);
      }
    }
  }
  if (speech) {
    ASSIGN_OR_RETURN(const SpeechUnits tokenizer,
                     SpeechUnits::Load(absl::StrCat(dataset_dir, "/",
                                                    manifest.tokenizers.at("speech_units").file)));
    const MelAnalyzer analyzer(tokenizer.mel_config());
    for (int s = 0; s < kNumSplits; ++s) {
      for (const auto* recordings : {&raw.fsdd[s], &raw.cathy[s]}) {
        for (const Recording& r : *recordings) {
          const std::vector<int32_t> u = tokenizer.Encode(analyzer.LogMel(r.audio.samples));
          units.Add(Fingerprint(u.data(), u.size()), s);
        }
      }
    }
  }

  LeakReport report;
  report.held_out_items = images.CountHeldOut() + units.CountHeldOut() + (raw.text[kVal].empty() ? 0 : 1);
  ReaderOptions options;
  options.shuffle = false;
  ASSIGN_OR_RETURN(auto reader, ShardReader::Open(dataset_dir, "train", 0, 1, options));
  const Vocab& vocab = manifest.vocab;
  PackedBatch batch;
  std::vector<int32_t> ids;
  for (int64_t seq = 0; seq < reader->num_sequences(); ++seq) {
    RETURN_IF_ERROR(reader->ReadSequence(seq, &batch));
    for (const DocumentSpans& doc : FindDocuments(batch, 0)) {
      if (doc.padding) continue;
      for (const Span& span : doc.spans) {
        const std::string where = absl::StrCat("train sequence ", seq, " tokens [", span.begin,
                                               ", ", span.end, ")");
        if (span.kind == Span::kImage && continuous) {
          const float* p = batch.patches.data() + span.first_patch * kPatchDim;
          Classify(images.Lookup(Fingerprint(p, static_cast<size_t>(span.end - span.begin) * kPatchDim)),
                   absl::StrCat("image at ", where), &report);
          continue;
        }
        const int32_t base = span.kind == Span::kImage ? vocab.image_begin() : vocab.speech_begin();
        ids.assign(batch.tokens.begin() + span.begin, batch.tokens.begin() + span.end);
        for (int32_t& id : ids) id -= base;
        const FingerprintIndex& index = span.kind == Span::kImage ? images : units;
        Classify(index.Lookup(Fingerprint(ids.data(), ids.size())),
                 absl::StrCat(span.kind == Span::kImage ? "image" : "speech", " at ", where),
                 &report);
      }
      // A text document: BOS, bytes only, EOS.
      if (!doc.spans.empty() || doc.end - doc.begin < 2) continue;
      std::string text;
      bool bytes_only = true;
      for (int t = doc.begin + 1; t + 1 < doc.end; ++t) {
        if (batch.tokens[t] >= kNumByteTokens) bytes_only = false;
        text.push_back(static_cast<char>(batch.tokens[t]));
      }
      if (!bytes_only || text.size() < kMinTextDocBytes) continue;
      const int mask = (raw.text[kVal].find(text) != std::string::npos ? 1 << kVal : 0) |
                       (raw.text[kTrain].find(text) != std::string::npos ? 1 << kTrain : 0);
      Classify(mask, absl::StrCat("text document at train sequence ", seq, " token ", doc.begin),
               &report);
    }
  }
  return report;
}

}  // namespace modamba::data
