#include "core/data/manifest.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba::data {
namespace {

using nlohmann::json;

json ByModality(const std::array<int64_t, kNumModalities>& v) {
  json j = json::object();
  for (int m = 0; m < kNumModalities; ++m) j[ModalityName(m)] = v[m];
  return j;
}

json ByDocType(const std::array<int64_t, kNumDocTypes>& v) {
  json j = json::object();
  for (int t = 0; t < kNumDocTypes; ++t) j[DocTypeName(static_cast<DocType>(t))] = v[t];
  return j;
}

json SplitToJson(const SplitStats& s) {
  json shards = json::array();
  for (const ShardEntry& e : s.shards) {
    shards.push_back({{"file", e.file}, {"sequences", e.sequences}, {"sha256", e.sha256}});
  }
  return {{"shards", shards},
          {"sequences", s.sequences},
          {"tokens", ByModality(s.tokens)},
          {"targets", ByModality(s.targets)},
          {"pad_tokens", s.pad_tokens},
          {"patches", s.patches},
          {"documents", ByDocType(s.documents)},
          {"dropped_documents", ByDocType(s.dropped_documents)},
          {"items", s.items},
          {"skipped", s.skipped}};
}

// Reads fields and remembers the first problem, naming the file and field.
class Parser {
 public:
  explicit Parser(std::string path) : path_(std::move(path)) {}

  const json& At(const json& j, const std::string& key) {
    static const json kNull;
    if (!j.is_object() || !j.contains(key)) {
      Fail(key, "missing");
      return kNull;
    }
    return j.at(key);
  }
  template <typename T>
  T Get(const json& j, const std::string& key) {
    const json& v = At(j, key);
    if (v.is_null()) return T();
    try {
      return v.get<T>();
    } catch (const json::exception&) {
      Fail(key, "has the wrong type");
      return T();
    }
  }
  template <size_t N, typename NameFn>
  std::array<int64_t, N> Counts(const json& j, const std::string& key, NameFn name) {
    std::array<int64_t, N> out{};
    const json& v = At(j, key);
    // A count a manifest lacks (a document type newer than it) is zero.
    for (size_t i = 0; i < N && v.is_object(); ++i) {
      if (v.contains(name(i))) out[i] = Get<int64_t>(v, name(i));
    }
    return out;
  }
  void Fail(const std::string& key, const std::string& what) {
    if (status_.ok()) status_ = absl::DataLossError(absl::StrCat(path_, ": field '", key, "' ", what));
  }
  const absl::Status& status() const { return status_; }

 private:
  std::string path_;
  absl::Status status_;
};

SplitStats ParseSplit(const json& sj, Parser* parser) {
  Parser& p = *parser;
  SplitStats s;
  for (const json& e : p.At(sj, "shards")) {
    s.shards.push_back({p.Get<std::string>(e, "file"), p.Get<int64_t>(e, "sequences"),
                        p.Get<std::string>(e, "sha256")});
  }
  s.sequences = p.Get<int64_t>(sj, "sequences");
  auto modality = [](size_t i) { return std::string(ModalityName(static_cast<int>(i))); };
  auto doc_type = [](size_t i) { return std::string(DocTypeName(static_cast<DocType>(i))); };
  s.tokens = p.Counts<kNumModalities>(sj, "tokens", modality);
  s.targets = p.Counts<kNumModalities>(sj, "targets", modality);
  s.pad_tokens = p.Get<int64_t>(sj, "pad_tokens");
  s.patches = p.Get<int64_t>(sj, "patches");
  s.documents = p.Counts<kNumDocTypes>(sj, "documents", doc_type);
  s.dropped_documents = p.Counts<kNumDocTypes>(sj, "dropped_documents", doc_type);
  s.items = p.Get<std::map<std::string, int64_t>>(sj, "items");
  if (sj.contains("skipped")) s.skipped = p.Get<std::vector<std::string>>(sj, "skipped");
  return s;
}

}  // namespace

void CountPackedTokens(const PackedSequences& data, SplitStats* stats) {
  for (size_t i = 0; i < data.tokens.size(); ++i) {
    if (data.tokens[i] == kPad && data.modality[i] == kText) {
      ++stats->pad_tokens;
      continue;
    }
    ++stats->tokens[data.modality[i]];
    stats->targets[data.modality[i]] += data.loss_mask[i];
  }
  stats->patches += data.patch_dim > 0 ? data.patch_begin.back() : 0;
}

std::string SplitStatsToJson(const SplitStats& stats) { return SplitToJson(stats).dump(); }

absl::StatusOr<SplitStats> SplitStatsFromJson(const std::string& text, const std::string& what) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::DataLossError(absl::StrCat(what, ": not a JSON object"));
  Parser p(what);
  SplitStats s = ParseSplit(j, &p);
  RETURN_IF_ERROR(p.status());
  return s;
}

absl::StatusOr<const SplitStats*> DatasetManifest::split(const std::string& name) const {
  auto it = splits.find(name);
  if (it == splits.end()) {
    return absl::NotFoundError(absl::StrCat("dataset has no split '", name, "'"));
  }
  return &it->second;
}

absl::Status WriteDatasetManifest(const std::string& dataset_dir,
                                  const DatasetManifest& m) {
  json splits = json::object();
  for (const auto& [name, s] : m.splits) splits[name] = SplitToJson(s);
  json tokenizers = json::object();
  for (const auto& [name, t] : m.tokenizers) {
    tokenizers[name] = {{"file", t.file}, {"sha256", t.sha256}};
  }
  json specials = json::object();
  for (int32_t id = kBos; id < kBos + kNumSpecials; ++id) specials[SpecialName(id)] = id;
  json modalities = json::array();
  for (int i = 0; i < m.num_modalities; ++i) modalities.push_back(ModalityName(i));
  const json j = {
      {"format", "modamba-dataset"},
      {"format_version", m.format_version},
      {"setting", m.setting},
      {"seq_len", m.seq_len},
      {"patch_dim", m.patch_dim},
      {"modalities", modalities},
      {"vocab",
       {{"vocab_size", m.vocab.size()},
        {"text_bytes", {0, kNumByteTokens}},
        {"text_tokens", m.vocab.text_tokens},
        {"text", {{0, kNumByteTokens}, {kImageBase, m.vocab.text_end()}}},
        {"specials", specials},
        {"image_codes", m.vocab.image_codes},
        {"image", {m.vocab.image_begin(), m.vocab.image_end()}},
        {"speech_units", m.vocab.speech_units},
        {"speech", {m.vocab.speech_begin(), m.vocab.speech_end()}}}},
      {"seed", m.seed},
      {"splits", splits},
      {"tokenizers", tokenizers},
      {"metrics", m.metrics},
      {"build_options", m.build_options},
  };
  return WriteFileAtomic(absl::StrCat(dataset_dir, "/", kManifestFile), j.dump(2) + "\n");
}

absl::StatusOr<DatasetManifest> ReadDatasetManifest(const std::string& dataset_dir) {
  const std::string path = absl::StrCat(dataset_dir, "/", kManifestFile);
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not a JSON object"));
  }
  Parser p(path);
  DatasetManifest m;
  if (p.Get<std::string>(j, "format") != "modamba-dataset") p.Fail("format", "is not modamba-dataset");
  m.format_version = p.Get<int>(j, "format_version");
  if (p.status().ok() && m.format_version != kManifestVersion) {
    p.Fail("format_version", absl::StrCat("is ", m.format_version, ", this reader knows ",
                                          kManifestVersion));
  }
  m.setting = p.Get<std::string>(j, "setting");
  m.seq_len = p.Get<int>(j, "seq_len");
  m.patch_dim = p.Get<int>(j, "patch_dim");
  m.num_modalities = static_cast<int>(p.At(j, "modalities").size());
  const json& vocab = p.At(j, "vocab");
  // Datasets from before text tokenizers other than bytes have no text_tokens.
  m.vocab.text_tokens =
      vocab.contains("text_tokens") ? p.Get<int32_t>(vocab, "text_tokens") : kNumByteTokens;
  m.vocab.image_codes = p.Get<int32_t>(vocab, "image_codes");
  m.vocab.speech_units = p.Get<int32_t>(vocab, "speech_units");
  if (p.status().ok() && p.Get<int32_t>(vocab, "vocab_size") != m.vocab.size()) {
    p.Fail("vocab.vocab_size", "disagrees with the text, image and speech ranges");
  }
  m.seed = p.Get<uint64_t>(j, "seed");
  const json& splits = p.At(j, "splits");
  for (auto it = splits.begin(); splits.is_object() && it != splits.end(); ++it) {
    m.splits[it.key()] = ParseSplit(it.value(), &p);
  }
  const json& tokenizers = p.At(j, "tokenizers");
  for (auto it = tokenizers.begin(); tokenizers.is_object() && it != tokenizers.end(); ++it) {
    m.tokenizers[it.key()] = {p.Get<std::string>(it.value(), "file"),
                              p.Get<std::string>(it.value(), "sha256")};
  }
  m.metrics = p.Get<std::map<std::string, double>>(j, "metrics");
  m.build_options = p.Get<std::map<std::string, std::string>>(j, "build_options");
  RETURN_IF_ERROR(p.status());
  if (m.seq_len < 2 || m.patch_dim < 0 || m.num_modalities < 1 ||
      m.num_modalities > kNumModalities) {
    return absl::DataLossError(absl::StrCat(path, ": implausible seq_len, patch_dim or modalities"));
  }
  return m;
}

}  // namespace modamba::data
