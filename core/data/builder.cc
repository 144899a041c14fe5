#include "core/data/builder.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/data/audio.h"
#include "core/data/bpe.h"
#include "core/data/documents.h"
#include "core/data/image_tokenizer.h"
#include "core/data/packing.h"
#include "core/data/permutation.h"
#include "core/data/png_io.h"
#include "core/data/shard.h"
#include "core/data/speech_tokenizer.h"
#include "core/data/text_tokenizer.h"
#include "core/file_util.h"
#include "core/rng.h"
#include "core/status_macros.h"
#include "glog/logging.h"

namespace modamba::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

uint64_t StreamSeed(uint64_t seed, const std::string& name) {
  return Rng::ForName(seed, name).NextU64();
}

bool UsesDiscreteImages(Setting s) { return s != Setting::kTransfusion; }
bool UsesSpeech(Setting s) { return s == Setting::kTrimodal; }

// Tokenizers learnt from the training items, and every item encoded once.
struct Tokenized {
  std::unique_ptr<TextTokenizer> text;
  std::optional<ImageVq> vq;
  std::array<std::vector<int32_t>, kNumSplits> image_codes;  // [n, 49] per split
  std::optional<SpeechUnits> speech;
  std::array<std::vector<std::vector<int32_t>>, kNumSplits> fsdd_units, cathy_units;
  std::map<std::string, double> image_metrics, speech_metrics;
};

absl::Status TokenizeImages(const RawCorpus& raw, const BuildOptions& o, Tokenized* t) {
  ImageVqOptions options;
  options.k = o.image_codes;
  options.iterations = o.kmeans_iterations;
  options.max_patches = o.image_kmeans_patches;
  options.seed = StreamSeed(o.seed, "image_vq");
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(ImageVq vq, ImageVq::Train(raw.images[kTrain], options));
  for (int s = 0; s < kNumSplits; ++s) {
    t->image_codes[s] = vq.Encode(raw.images[s].pixels.data(), raw.images[s].count());
    std::vector<bool> used(vq.k(), false);
    for (int32_t c : t->image_codes[s]) used[c] = true;
    const double dead = static_cast<double>(std::count(used.begin(), used.end(), false)) / vq.k();
    t->image_metrics[absl::StrCat("image_vq.", SplitName(s), "_dead_code_fraction")] = dead;
  }
  const MnistSet& val = raw.images[kVal];
  double psnr = 0;
  uint8_t decoded[kImagePixels];
  for (int64_t i = 0; i < val.count(); ++i) {
    RETURN_IF_ERROR(vq.Decode(t->image_codes[kVal].data() + i * kPatchesPerImage, decoded));
    psnr += Psnr(val.image(i), decoded, kImagePixels);
  }
  if (val.count() > 0) t->image_metrics["image_vq.val_psnr_db"] = psnr / val.count();
  LOG(INFO) << "image VQ: k=" << vq.k() << " trained in " << absl::Now() - start
            << ", val PSNR " << t->image_metrics["image_vq.val_psnr_db"] << " dB";
  t->vq = std::move(vq);
  return absl::OkStatus();
}

absl::Status TokenizeSpeech(const RawCorpus& raw, const BuildOptions& o, Tokenized* t) {
  const absl::Time start = absl::Now();
  const MelAnalyzer analyzer{MelConfig()};
  std::array<std::vector<std::vector<float>>, kNumSplits> fsdd_mel, cathy_mel;
  for (int s = 0; s < kNumSplits; ++s) {
    for (const Recording& r : raw.fsdd[s]) fsdd_mel[s].push_back(analyzer.LogMel(r.audio.samples));
    for (const Recording& r : raw.cathy[s]) cathy_mel[s].push_back(analyzer.LogMel(r.audio.samples));
  }
  std::vector<std::vector<float>> train = fsdd_mel[kTrain];
  train.insert(train.end(), cathy_mel[kTrain].begin(), cathy_mel[kTrain].end());
  SpeechUnitsOptions options;
  options.k = o.speech_units;
  options.iterations = o.kmeans_iterations;
  options.max_frames = o.speech_kmeans_frames;
  options.seed = StreamSeed(o.seed, "speech_units");
  ASSIGN_OR_RETURN(SpeechUnits units, SpeechUnits::Train(train, analyzer.config(), options));

  for (int s = 0; s < kNumSplits; ++s) {
    std::vector<bool> used(units.k(), false);
    int64_t unit_count = 0, frames = 0, decoded_frames = 0;
    double seconds = 0;
    auto encode = [&](const std::vector<std::vector<float>>& mels,
                      const std::vector<Recording>& recordings,
                      std::vector<std::vector<int32_t>>* out) -> absl::Status {
      for (size_t i = 0; i < mels.size(); ++i) {
        const std::vector<int32_t> frame_units = units.FrameUnits(mels[i]);
        for (int32_t u : frame_units) used[u] = true;
        out->push_back(SpeechUnits::Collapse(frame_units));
        unit_count += static_cast<int64_t>(out->back().size());
        frames += static_cast<int64_t>(frame_units.size());
        seconds += recordings[i].audio.seconds();
        ASSIGN_OR_RETURN(std::vector<float> mel, units.Decode(out->back()));
        decoded_frames += static_cast<int64_t>(mel.size()) / analyzer.config().n_mels;
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(encode(fsdd_mel[s], raw.fsdd[s], &t->fsdd_units[s]));
    RETURN_IF_ERROR(encode(cathy_mel[s], raw.cathy[s], &t->cathy_units[s]));
    if (seconds <= 0) continue;
    const std::string prefix = absl::StrCat("speech_units.", SplitName(s), "_");
    t->speech_metrics[prefix + "units_per_second"] = unit_count / seconds;
    t->speech_metrics[prefix + "codebook_usage"] =
        static_cast<double>(std::count(used.begin(), used.end(), true)) / units.k();
    t->speech_metrics[prefix + "mean_run_frames"] = static_cast<double>(frames) / unit_count;
    t->speech_metrics[prefix + "decoded_duration_ratio"] =
        static_cast<double>(decoded_frames) / frames;
  }
  LOG(INFO) << "speech units: k=" << units.k() << " trained in " << absl::Now() - start
            << ", val " << t->speech_metrics["speech_units.val_units_per_second"]
            << " units/s";
  t->speech = std::move(units);
  return absl::OkStatus();
}

// Text chunks of at most max_bytes, ending after a newline where one falls in
// the second half of the window.
std::vector<std::pair<size_t, size_t>> TextChunks(const std::string& text, size_t max_bytes) {
  std::vector<std::pair<size_t, size_t>> chunks;
  if (max_bytes == 0) return chunks;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = std::min(text.size(), begin + max_bytes);
    if (end < text.size()) {
      const size_t newline = text.rfind('\n', end - 1);
      if (newline != std::string::npos && newline >= begin + max_bytes / 2) end = newline + 1;
    }
    chunks.emplace_back(begin, end);
    begin = end;
  }
  return chunks;
}

enum class Source { kText, kMnist, kFsdd, kCathy };

struct DocSpec {
  DocType type;
  Source source;
  int64_t item;   // image / recording index, or text chunk begin
  int64_t aux;    // text chunk end, or the image of a digit triple
  int order = 0;  // digit triple: one of the 6 orders of word, image, speech
};

std::vector<DocSpec> PlanDocuments(const RawCorpus& raw, Setting setting, int split,
                                   int seq_len, uint64_t seed) {
  Rng rng = Rng::ForName(seed, absl::StrCat("documents/", SettingName(setting), "/",
                                            SplitName(split)));
  std::vector<DocSpec> specs;
  for (const auto& [begin, end] : TextChunks(raw.text[split], std::max(0, seq_len - 2))) {
    specs.push_back({DocType::kText, Source::kText, static_cast<int64_t>(begin),
                     static_cast<int64_t>(end)});
  }
  const MnistSet& images = raw.images[split];
  for (int64_t i = 0; i < images.count(); ++i) {
    const DocType type = rng.Below(2) ? DocType::kCaptionImage : DocType::kImageCaption;
    specs.push_back({type, Source::kMnist, i, 0});
  }
  if (UsesSpeech(setting)) {
    for (Source source : {Source::kFsdd, Source::kCathy}) {
      const auto& recordings = source == Source::kFsdd ? raw.fsdd[split] : raw.cathy[split];
      for (size_t i = 0; i < recordings.size(); ++i) {
        specs.push_back({DocType::kTranscriptSpeech, source, static_cast<int64_t>(i), 0});
        specs.push_back({DocType::kSpeechTranscript, source, static_cast<int64_t>(i), 0});
      }
    }
    std::array<std::vector<int64_t>, 10> by_digit;
    for (int64_t i = 0; i < images.count(); ++i) by_digit[images.labels[i]].push_back(i);
    for (size_t i = 0; i < raw.fsdd[split].size(); ++i) {
      const auto& candidates = by_digit[raw.fsdd[split][i].digit];
      if (candidates.empty()) continue;  // only in slices too small to hold every digit
      const int64_t image = candidates[rng.Below(candidates.size())];
      specs.push_back({DocType::kDigitTriple, Source::kFsdd, static_cast<int64_t>(i), image,
                       static_cast<int>(rng.Below(6))});
    }
  }
  Rng order_rng = Rng::ForName(seed, absl::StrCat("document_order/", SettingName(setting),
                                                  "/", SplitName(split)));
  const std::vector<int64_t> order = Permutation(static_cast<int64_t>(specs.size()), &order_rng);
  std::vector<DocSpec> shuffled;
  shuffled.reserve(specs.size());
  for (int64_t i : order) shuffled.push_back(specs[i]);
  return shuffled;
}

class DocumentFactory {
 public:
  DocumentFactory(const RawCorpus& raw, const Tokenized& tok, Setting setting,
                  const Vocab& vocab, int split)
      : raw_(raw), tok_(tok), setting_(setting), vocab_(vocab), split_(split) {}

  absl::StatusOr<Document> Make(const DocSpec& spec) const {
    DocumentWriter w(spec.type, vocab_, setting_ == Setting::kTransfusion ? kPatchDim : 0);
    absl::Status status;
    // Through the text tokenizer (bytes: the same ids as the bytes themselves).
    auto text = [&](absl::string_view t) {
      std::vector<int32_t> ids;
      if (absl::Status s = tok_.text->Encode(std::string_view(t.data(), t.size()), &ids);
          !s.ok() && status.ok()) {
        status = s;
      }
      w.TextIds(ids);
    };
    switch (spec.type) {
      case DocType::kText:
        text(absl::string_view(raw_.text[split_]).substr(spec.item, spec.aux - spec.item));
        break;
      case DocType::kCaptionImage:
        text(DigitCaption(raw_.images[split_].labels[spec.item]));
        Image(spec.item, &w);
        break;
      case DocType::kImageCaption:
        Image(spec.item, &w);
        text(DigitCaption(raw_.images[split_].labels[spec.item]));
        break;
      case DocType::kTranscriptSpeech:
        text(Recordings(spec.source)[spec.item].transcript);
        w.Speech(Units(spec.source)[spec.item]);
        break;
      case DocType::kSpeechTranscript:
        w.Speech(Units(spec.source)[spec.item]);
        text(Recordings(spec.source)[spec.item].transcript);
        break;
      case DocType::kDigitTriple: {
        static constexpr int kOrders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                              {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
        for (int part : kOrders[spec.order]) {
          if (part == 0) text(raw_.fsdd[split_][spec.item].transcript);
          if (part == 1) Image(spec.aux, &w);
          if (part == 2) w.Speech(tok_.fsdd_units[split_][spec.item]);
        }
        break;
      }
      case DocType::kCorpus:
        LOG(FATAL) << "corpus documents come from corpus_builder";
    }
    RETURN_IF_ERROR(status);
    return w.Finish();
  }

 private:
  void Image(int64_t i, DocumentWriter* w) const {
    if (setting_ == Setting::kTransfusion) {
      float patches[kPatchesPerImage * kPatchDim];
      ContinuousPatches(raw_.images[split_].image(i), patches);
      w->ImagePatches(patches, kPatchesPerImage);
    } else {
      w->ImageCodes(tok_.image_codes[split_].data() + i * kPatchesPerImage, kPatchesPerImage);
    }
  }
  const std::vector<Recording>& Recordings(Source s) const {
    return s == Source::kFsdd ? raw_.fsdd[split_] : raw_.cathy[split_];
  }
  const std::vector<std::vector<int32_t>>& Units(Source s) const {
    return s == Source::kFsdd ? tok_.fsdd_units[split_] : tok_.cathy_units[split_];
  }

  const RawCorpus& raw_;
  const Tokenized& tok_;
  Setting setting_;
  const Vocab& vocab_;
  int split_;
};

// Staging directories that are removed unless committed.
class Staging {
 public:
  explicit Staging(std::string out_dir) : out_dir_(std::move(out_dir)) {}
  ~Staging() {
    std::error_code ec;
    for (const auto& [final_dir, staging] : dirs_) fs::remove_all(staging, ec);
  }
  absl::StatusOr<std::string> Create(const std::string& name) {
    const std::string staging = absl::StrCat(out_dir_, "/.staging-", name, "-", getpid());
    std::error_code ec;
    fs::remove_all(staging, ec);
    RETURN_IF_ERROR(MakeDirs(staging));
    dirs_.emplace_back(absl::StrCat(out_dir_, "/", name), staging);
    return staging;
  }
  // Swaps every staging directory into place.
  absl::Status Commit() {
    std::error_code ec;
    for (const auto& [final_dir, staging] : dirs_) {
      const std::string old = absl::StrCat(staging, ".old");
      if (fs::exists(final_dir, ec)) fs::rename(final_dir, old, ec);
      if (!ec) fs::rename(staging, final_dir, ec);
      if (ec) return absl::InternalError(absl::StrCat(final_dir, ": cannot commit: ", ec.message()));
      fs::remove_all(old, ec);
    }
    dirs_.clear();
    return absl::OkStatus();
  }

 private:
  std::string out_dir_;
  std::vector<std::pair<std::string, std::string>> dirs_;
};

absl::Status BuildSetting(const RawCorpus& raw, const Tokenized& tok, Setting setting,
                          const BuildOptions& o, const std::string& dir,
                          DatasetManifest* manifest) {
  const absl::Time start = absl::Now();
  manifest->setting = SettingName(setting);
  manifest->seq_len = o.seq_len;
  manifest->patch_dim = setting == Setting::kTransfusion ? kPatchDim : 0;
  manifest->vocab.text_tokens = std::max(kNumByteTokens, tok.text->vocab_size());
  manifest->vocab.image_codes = o.image_codes;
  manifest->vocab.speech_units = o.speech_units;
  manifest->num_modalities = UsesSpeech(setting) ? 3 : 2;
  manifest->seed = o.seed;
  manifest->build_options = {
      {"seq_len", std::to_string(o.seq_len)},
      {"image_codes", std::to_string(o.image_codes)},
      {"speech_units", std::to_string(o.speech_units)},
      {"kmeans_iterations", std::to_string(o.kmeans_iterations)},
      {"image_kmeans_patches", std::to_string(o.image_kmeans_patches)},
      {"speech_kmeans_frames", std::to_string(o.speech_kmeans_frames)},
      {"shard_sequences", std::to_string(o.shard_sequences)},
  };
  const RawSelection& sel = o.selection;
  for (int s = 0; s < kNumSplits; ++s) {
    const std::string suffix = absl::StrCat("_limit_", SplitName(s));
    for (const auto& [name, limit] :
         {std::pair<const char*, int64_t>{"mnist", sel.mnist[s]}, {"fsdd", sel.fsdd[s]},
          {"cathy", sel.cathy[s]}, {"text_bytes", sel.text_bytes[s]}}) {
      if (limit >= 0) manifest->build_options[name + suffix] = std::to_string(limit);
    }
  }
  const RawSelection defaults;
  if (sel.fsdd_val_takes != defaults.fsdd_val_takes) {
    manifest->build_options["fsdd_val_takes"] =
        absl::StrCat(sel.fsdd_val_takes.first, "-", sel.fsdd_val_takes.second);
  }
  if (sel.cathy_val_numbers != defaults.cathy_val_numbers) {
    manifest->build_options["cathy_val"] =
        absl::StrCat(sel.cathy_val_numbers.first, "-", sel.cathy_val_numbers.second);
  }
  if (sel.skip_bad) manifest->build_options["skip_bad"] = "true";
  if (UsesDiscreteImages(setting)) manifest->metrics.insert(tok.image_metrics.begin(), tok.image_metrics.end());
  if (UsesSpeech(setting)) manifest->metrics.insert(tok.speech_metrics.begin(), tok.speech_metrics.end());
  if (o.text_tokenizer != "bytes") manifest->build_options["text_tokenizer"] = o.text_tokenizer;
  RETURN_IF_ERROR(WriteTokenizerFiles(dir, *tok.text, ImageShape(),
                                      !UsesDiscreteImages(setting),
                                      UsesDiscreteImages(setting) ? &*tok.vq : nullptr,
                                      UsesSpeech(setting) ? &*tok.speech : nullptr,
                                      UsesSpeech(setting), o.seed, manifest));

  for (int split = 0; split < kNumSplits; ++split) {
    SplitStats& stats = manifest->splits[SplitName(split)];
    const DocumentFactory factory(raw, tok, setting, manifest->vocab, split);
    Packer packer(o.seq_len, manifest->patch_dim);
    for (const DocSpec& spec : PlanDocuments(raw, setting, split, o.seq_len, o.seed)) {
      ASSIGN_OR_RETURN(Document doc, factory.Make(spec));
      packer.Add(std::move(doc));
    }
    stats.documents = packer.stats().documents;
    stats.dropped_documents = packer.stats().dropped;
    const PackedSequences data = packer.Finish();
    CountPackedTokens(data, &stats);
    stats.sequences = data.num_sequences;
    stats.items["mnist_images"] = raw.images[split].count();
    if (split == kTrain && !raw.skipped.empty()) {
      stats.items["skipped_bad"] = static_cast<int64_t>(raw.skipped.size());
      stats.skipped.assign(raw.skipped.begin(),
                           raw.skipped.begin() + std::min(raw.skipped.size(), kMaxListedSkips));
    }
    if (!raw.text[split].empty()) stats.items["tinyshakespeare_bytes"] = raw.text[split].size();
    if (UsesSpeech(setting)) {
      stats.items["fsdd_recordings"] = raw.fsdd[split].size();
      stats.items["cathy_recordings"] = raw.cathy[split].size();
    }
    RETURN_IF_ERROR(MakeDirs(absl::StrCat(dir, "/", SplitName(split))));
    for (int64_t begin = 0, index = 0; begin < data.num_sequences;
         begin += o.shard_sequences, ++index) {
      const int64_t end = std::min(data.num_sequences, begin + o.shard_sequences);
      ShardEntry entry;
      entry.file = absl::StrFormat("%s/shard-%05d.bin", SplitName(split), index);
      entry.sequences = end - begin;
      const std::string path = absl::StrCat(dir, "/", entry.file);
      RETURN_IF_ERROR(WriteShard(path, data, begin, end));
      ASSIGN_OR_RETURN(entry.sha256, Sha256File(path));
      stats.shards.push_back(std::move(entry));
    }
  }
  RETURN_IF_ERROR(WriteDatasetManifest(dir, *manifest));
  LOG(INFO) << SettingName(setting) << ": " << manifest->splits["train"].sequences
            << " train and " << manifest->splits["val"].sequences << " val sequences in "
            << absl::Now() - start;
  return absl::OkStatus();
}

}  // namespace

const char* SettingName(Setting setting) {
  switch (setting) {
    case Setting::kChameleon: return "chameleon";
    case Setting::kTransfusion: return "transfusion";
    case Setting::kTrimodal: return "trimodal";
  }
  return "unknown";
}

absl::StatusOr<std::vector<Setting>> ParseSettings(const std::string& text) {
  const std::vector<Setting> all = {Setting::kChameleon, Setting::kTransfusion,
                                    Setting::kTrimodal};
  std::vector<Setting> out;
  for (absl::string_view name : absl::StrSplit(text, ',')) {
    if (name == "all") {
      out = all;
      continue;
    }
    auto it = std::find_if(all.begin(), all.end(),
                           [&](Setting s) { return name == SettingName(s); });
    if (it == all.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown setting '", name, "' (chameleon, transfusion, trimodal or all)"));
    }
    if (std::find(out.begin(), out.end(), *it) == out.end()) out.push_back(*it);
  }
  if (out.empty()) return absl::InvalidArgumentError("no setting given");
  return out;
}

absl::StatusOr<TextTokenizerFlag> ParseTextTokenizerFlag(const std::string& flag) {
  TextTokenizerFlag out;
  absl::string_view size = flag;
  if (flag == "bytes") return out;
  if (absl::ConsumePrefix(&size, "bpe:")) {
    if (!absl::SimpleAtoi(size, &out.bpe_vocab_size) || out.bpe_vocab_size < kNumByteTokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--text_tokenizer=", flag, ": bpe:VOCAB_SIZE needs a size of at least 256"));
    }
    return out;
  }
  if (flag.empty()) return absl::InvalidArgumentError("--text_tokenizer is empty");
  out.path = flag;
  return out;
}

absl::Status WriteTokenizerFiles(const std::string& dir, const TextTokenizer& text,
                                 const ImageShape& shape, bool continuous, const ImageVq* vq,
                                 const SpeechUnits* speech, bool speech_ids, uint64_t seed,
                                 DatasetManifest* manifest) {
  RETURN_IF_ERROR(MakeDirs(absl::StrCat(dir, "/tokenizers")));
  json specials = json::object();
  for (int32_t id = kBos; id < kBos + kNumSpecials; ++id) specials[SpecialName(id)] = id;
  auto add = [&](const std::string& name, const std::string& file) -> absl::StatusOr<json> {
    ASSIGN_OR_RETURN(std::string sha, Sha256File(absl::StrCat(dir, "/", file)));
    manifest->tokenizers[name] = {file, sha};
    return json{{"file", fs::path(file).filename().string()}, {"sha256", sha}};
  };
  json j;
  const json described = text.Describe();
  if (described.value("type", "") == "bytes") {
    j["text"] = {{"kind", "utf8_bytes"}, {"ids", {0, kNumByteTokens}}, {"specials", specials}};
  } else {
    RETURN_IF_ERROR(text.Save(absl::StrCat(dir, "/tokenizers")));
    ASSIGN_OR_RETURN(json entry, add("text", kTextTokenizerFile));
    entry["kind"] = described;
    entry["ids"] = {{0, kNumByteTokens}, {kImageBase, manifest->vocab.text_end()}};
    entry["id_mapping"] = "tokenizer id t is token t below 256, t + 7 from 256 on";
    entry["specials"] = specials;
    j["text"] = entry;
  }
  if (!continuous && vq == nullptr) {
    j["image_codes"] = {{"kind", "pre-tokenized"},
                        {"k", manifest->vocab.image_codes},
                        {"token_ids", {manifest->vocab.image_begin(), manifest->vocab.image_end()}}};
  } else if (vq != nullptr) {
    const std::map<std::string, std::string> meta = {
        {"seed", std::to_string(StreamSeed(seed, "image_vq"))}};
    RETURN_IF_ERROR(vq->Save(absl::StrCat(dir, "/", kImageVqFile), meta));
    ASSIGN_OR_RETURN(json entry, add("image_vq", kImageVqFile));
    entry["seed"] = StreamSeed(seed, "image_vq");
    entry["kind"] = "kmeans_vq";
    entry["k"] = vq->k();
    entry["patch_side"] = kPatchSide;
    entry["patches_per_image"] = shape.patches();
    entry["image_shape"] = {shape.height, shape.width, shape.channels};
    entry["pixel_value"] = "p / 255";
    entry["token_ids"] = {manifest->vocab.image_begin(), manifest->vocab.image_end()};
    j["image_vq"] = entry;
  } else {
    j["image_continuous"] = {{"kind", "patches"},
                             {"patch_side", kPatchSide},
                             {"patches_per_image", shape.patches()},
                             {"patch_dim", shape.patch_dim()},
                             {"image_shape", {shape.height, shape.width, shape.channels}},
                             {"pixel_value", "2 * p / 255 - 1"}};
  }
  if (speech != nullptr) {
    const std::map<std::string, std::string> meta = {
        {"seed", std::to_string(StreamSeed(seed, "speech_units"))}};
    RETURN_IF_ERROR(speech->Save(absl::StrCat(dir, "/", kSpeechUnitsFile), meta));
    ASSIGN_OR_RETURN(json entry, add("speech_units", kSpeechUnitsFile));
    entry["seed"] = StreamSeed(seed, "speech_units");
    const MelConfig& mel = speech->mel_config();
    entry["kind"] = "kmeans_log_mel_units";
    entry["k"] = speech->k();
    entry["collapse_repeats"] = true;
    entry["mel"] = {{"sample_rate", mel.sample_rate}, {"window", mel.window},
                    {"hop", mel.hop},                 {"n_fft", mel.n_fft},
                    {"n_mels", mel.n_mels},           {"f_min", mel.f_min},
                    {"f_max", mel.f_max},             {"log_floor", mel.log_floor}};
    entry["token_ids"] = {manifest->vocab.speech_begin(), manifest->vocab.speech_end()};
    j["speech_units"] = entry;
  } else if (speech_ids) {
    j["speech_units"] = {{"kind", "pre-tokenized"},
                         {"k", manifest->vocab.speech_units},
                         {"token_ids", {manifest->vocab.speech_begin(), manifest->vocab.speech_end()}}};
  }
  return WriteFileAtomic(absl::StrCat(dir, "/tokenizers/manifest.json"), j.dump(2) + "\n");
}

absl::StatusOr<std::vector<DatasetManifest>> BuildDatasets(const BuildOptions& o) {
  if (o.seq_len < 2 || o.image_codes < 1 || o.speech_units < 1 || o.kmeans_iterations < 1 ||
      o.shard_sequences < 1 || o.settings.empty()) {
    return absl::InvalidArgumentError(
        "build options: seq_len >= 2, image_codes, speech_units, kmeans_iterations, "
        "shard_sequences >= 1 and at least one setting are required");
  }
  if (o.out_dir.empty()) return absl::InvalidArgumentError("build options: no output directory");
  const bool discrete = std::any_of(o.settings.begin(), o.settings.end(), UsesDiscreteImages);
  const bool speech = std::any_of(o.settings.begin(), o.settings.end(), UsesSpeech);

  RawSelection selection = o.selection;
  selection.images = true;
  selection.text = true;
  selection.speech = speech;
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(const RawCorpus raw, LoadRawCorpus(o.raw_dir, selection));
  LOG(INFO) << "raw data read in " << absl::Now() - start << ": "
            << raw.images[kTrain].count() << "+" << raw.images[kVal].count() << " images, "
            << raw.fsdd[kTrain].size() + raw.cathy[kTrain].size() << "+"
            << raw.fsdd[kVal].size() + raw.cathy[kVal].size() << " recordings, "
            << raw.text[kTrain].size() << "+" << raw.text[kVal].size() << " text bytes";

  Tokenized tok;
  ASSIGN_OR_RETURN(const TextTokenizerFlag text, ParseTextTokenizerFlag(o.text_tokenizer));
  if (text.bpe_vocab_size > 0) {
    // The train text of every setting's documents: the text, each caption and
    // each transcript as often as documents hold them.
    BpeTrainer trainer(text.bpe_vocab_size);
    RETURN_IF_ERROR(trainer.Add(raw.text[kTrain]));
    for (uint8_t label : raw.images[kTrain].labels) RETURN_IF_ERROR(trainer.Add(DigitCaption(label)));
    for (const auto* recordings : {&raw.fsdd[kTrain], &raw.cathy[kTrain]}) {
      for (const Recording& r : *recordings) RETURN_IF_ERROR(trainer.Add(r.transcript));
    }
    ASSIGN_OR_RETURN(tok.text, trainer.Finish());
  } else if (!text.path.empty()) {
    ASSIGN_OR_RETURN(tok.text, LoadTextTokenizer(text.path));
  } else {
    tok.text = MakeByteTokenizer();
  }
  if (discrete) RETURN_IF_ERROR(TokenizeImages(raw, o, &tok));
  if (speech) RETURN_IF_ERROR(TokenizeSpeech(raw, o, &tok));

  RETURN_IF_ERROR(MakeDirs(o.out_dir));
  Staging staging(o.out_dir);
  std::vector<DatasetManifest> manifests;
  for (Setting setting : o.settings) {
    ASSIGN_OR_RETURN(std::string dir, staging.Create(SettingName(setting)));
    DatasetManifest manifest;
    RETURN_IF_ERROR(BuildSetting(raw, tok, setting, o, dir, &manifest));
    manifests.push_back(std::move(manifest));
  }
  RETURN_IF_ERROR(staging.Commit());
  return manifests;
}

absl::Status ExportDigitsWorld(const BuildOptions& o) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("export: no output directory");
  std::error_code ec;
  if (fs::exists(o.out_dir, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(o.out_dir, ": exists; export writes a new directory"));
  }
  RawSelection selection = o.selection;
  selection.images = selection.speech = selection.text = true;
  ASSIGN_OR_RETURN(const RawCorpus raw, LoadRawCorpus(o.raw_dir, selection));
  // Written beside the target and renamed into place when complete.
  const std::string staging = absl::StrCat(o.out_dir, ".partial-", getpid());
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      if (!dir.empty()) fs::remove_all(dir, ec);
    }
  } cleanup{staging};
  for (const char* sub : {"images/train", "images/val", "audio/fsdd", "audio/cathy"}) {
    RETURN_IF_ERROR(MakeDirs(absl::StrCat(staging, "/", sub)));
  }
  for (int split = 0; split < kNumSplits; ++split) {
    const MnistSet& images = raw.images[split];
    for (int64_t i = 0; i < images.count(); ++i) {
      RETURN_IF_ERROR(WritePng(
          absl::StrFormat("%s/images/%s/%05d.png", staging, SplitName(split), i), kImageSide,
          kImageSide, 1, images.image(i)));
    }
    for (const auto* recordings : {&raw.fsdd[split], &raw.cathy[split]}) {
      for (const Recording& r : *recordings) {
        // The raw FLAC files as they are: fsdd/7_jackson_32 -> fsdd/recordings/7_jackson_32.flac.
        const size_t slash = r.id.find('/');
        const std::string from = absl::StrCat(o.raw_dir, "/", r.id.substr(0, slash),
                                              "/recordings/", r.id.substr(slash + 1), ".flac");
        fs::copy_file(from, absl::StrCat(staging, "/audio/", r.id, ".flac"), ec);
        if (ec) return absl::InternalError(absl::StrCat(from, ": cannot copy: ", ec.message()));
      }
    }
    auto image = [&](int64_t i) {
      return json{{"image", absl::StrFormat("images/%s/%05d.png", SplitName(split), i)}};
    };
    auto audio = [](const Recording& r) { return json{{"audio", absl::StrCat("audio/", r.id, ".flac")}}; };
    auto text = [](absl::string_view t) { return json{{"text", std::string(t)}}; };
    std::string lines;
    for (const DocSpec& spec : PlanDocuments(raw, Setting::kTrimodal, split, o.seq_len, o.seed)) {
      const std::vector<Recording>& recs = spec.source == Source::kFsdd ? raw.fsdd[split] : raw.cathy[split];
      json doc = json::array();
      switch (spec.type) {
        case DocType::kText:
          doc.push_back(text(absl::string_view(raw.text[split]).substr(spec.item, spec.aux - spec.item)));
          break;
        case DocType::kCaptionImage:
          doc = {text(DigitCaption(raw.images[split].labels[spec.item])), image(spec.item)};
          break;
        case DocType::kImageCaption:
          doc = {image(spec.item), text(DigitCaption(raw.images[split].labels[spec.item]))};
          break;
        case DocType::kTranscriptSpeech:
          doc = {text(recs[spec.item].transcript), audio(recs[spec.item])};
          break;
        case DocType::kSpeechTranscript:
          doc = {audio(recs[spec.item]), text(recs[spec.item].transcript)};
          break;
        case DocType::kDigitTriple: {
          static constexpr int kOrders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                                {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
          const Recording& r = raw.fsdd[split][spec.item];
          for (int part : kOrders[spec.order]) {
            doc.push_back(part == 0 ? text(r.transcript) : part == 1 ? image(spec.aux) : audio(r));
          }
          break;
        }
        case DocType::kCorpus:
          break;
      }
      absl::StrAppend(&lines, doc.dump(), "\n");
    }
    RETURN_IF_ERROR(WriteFileAtomic(absl::StrCat(staging, "/", SplitName(split), ".jsonl"), lines));
  }
  fs::rename(staging, o.out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(o.out_dir, ": cannot rename into place: ", ec.message()));
  cleanup.dir.clear();
  return absl::OkStatus();
}

}  // namespace modamba::data
