#include "core/data/raw_data.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <map>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/data/documents.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba::data {
namespace {

namespace fs = std::filesystem;

constexpr int kSampleRate = 8000;

// The source tree's root, walking up from `start`. Bazel's execroot and
// runfiles trees hold links to the source tree's folders rather than the
// tree itself, so a linked "core" folder leads back to it too.
std::optional<fs::path> WorkspaceRootFrom(const fs::path& start) {
  std::error_code ec;  // a missing entry is an answer here, not an error
  fs::path p = fs::absolute(start, ec);
  if (ec) return std::nullopt;
  for (;; p = p.parent_path()) {
    if (fs::exists(p / "WORKSPACE", ec)) return fs::canonical(p, ec);
    if (fs::is_symlink(p / "core", ec)) {
      const fs::path root = fs::canonical(p / "core", ec).parent_path();
      if (fs::exists(root / "WORKSPACE", ec)) return root;
    }
    if (p == p.root_path() || p.empty()) return std::nullopt;
  }
}

absl::StatusOr<Audio> ReadSpeech(const std::string& path) {
  ASSIGN_OR_RETURN(Audio audio, ReadAudioFile(path));
  if (audio.sample_rate != kSampleRate) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": sample rate ", audio.sample_rate, " Hz, expected 8000 Hz"));
  }
  return audio;
}

// Bad files are an error (the first named, with how many there are) or, with
// skip_bad, listed.
absl::Status Skip(const std::vector<std::string>& bad, const RawSelection& selection,
                  RawCorpus* corpus) {
  if (bad.empty()) return absl::OkStatus();
  if (!selection.skip_bad) {
    return absl::InvalidArgumentError(absl::StrCat(
        bad[0], bad.size() > 1 ? absl::StrCat(" (and ", bad.size() - 1, " more)") : "",
        "; --skip_bad skips them"));
  }
  corpus->skipped.insert(corpus->skipped.end(), bad.begin(), bad.end());
  return absl::OkStatus();
}

// Both splits of a source hold items, unless a limit of 0 asks for none.
absl::Status CheckNotEmpty(const std::string& dir, const std::array<std::vector<Recording>, kNumSplits>& splits,
                           const std::array<int64_t, kNumSplits>& limits, const std::string& rule) {
  for (int s = 0; s < kNumSplits; ++s) {
    if (splits[s].empty() && limits[s] != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, ": no recordings in split ", SplitName(s), " (split rule ", rule, ")"));
    }
  }
  return absl::OkStatus();
}

bool CathyIsHeldOut(const std::string& id, const RawSelection& selection) {
  absl::string_view number = id;
  int n;
  return absl::ConsumePrefix(&number, "arctic_a") && absl::SimpleAtoi(number, &n) &&
         n >= selection.cathy_val_numbers.first && n <= selection.cathy_val_numbers.second;
}

absl::Status LoadFsdd(const std::string& raw_dir, const RawSelection& selection,
                      RawCorpus* corpus) {
  const std::string dir = absl::StrCat(raw_dir, "/fsdd/recordings");
  struct Entry {
    int take, digit;
    std::string speaker, name;
  };
  std::vector<Entry> entries;
  std::error_code ec;
  std::vector<std::string> bad;
  for (const auto& file : fs::directory_iterator(dir, ec)) {
    const std::string name = file.path().filename().string();
    absl::string_view stem = name;
    Entry e;
    std::vector<std::string> parts;
    if (absl::ConsumeSuffix(&stem, ".flac")) parts = absl::StrSplit(stem, '_');
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &e.digit) ||
        !absl::SimpleAtoi(parts[2], &e.take) || e.digit < 0 || e.digit > 9 || e.take < 0) {
      bad.push_back(absl::StrCat(file.path().string(),
                                 ": not a recording named {digit}_{speaker}_{take}.flac"));
      continue;
    }
    e.speaker = parts[1];
    e.name = name;
    entries.push_back(std::move(e));
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  std::sort(bad.begin(), bad.end());
  RETURN_IF_ERROR(Skip(bad, selection, corpus));
  if (entries.empty()) return absl::NotFoundError(absl::StrCat(dir, ": no .flac recordings"));
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.take, a.speaker, a.digit) < std::tie(b.take, b.speaker, b.digit);
  });
  for (const Entry& e : entries) {
    const int split = e.take >= selection.fsdd_val_takes.first &&
                              e.take <= selection.fsdd_val_takes.second
                          ? kVal
                          : kTrain;
    const int64_t limit = selection.fsdd[split];
    if (limit >= 0 && static_cast<int64_t>(corpus->fsdd[split].size()) >= limit) continue;
    Recording r;
    r.id = absl::StrCat("fsdd/", e.name.substr(0, e.name.size() - 5));
    r.digit = e.digit;
    r.transcript = DigitWord(e.digit);
    ASSIGN_OR_RETURN(r.audio, ReadSpeech(absl::StrCat(dir, "/", e.name)));
    corpus->fsdd[split].push_back(std::move(r));
  }
  return CheckNotEmpty(dir, corpus->fsdd, selection.fsdd,
                       absl::StrFormat("--fsdd_val_takes=%d-%d: recordings of takes %d..%d are val",
                                       selection.fsdd_val_takes.first, selection.fsdd_val_takes.second,
                                       selection.fsdd_val_takes.first, selection.fsdd_val_takes.second));
}

absl::Status LoadCathy(const std::string& raw_dir, const RawSelection& selection,
                       RawCorpus* corpus) {
  const std::string tsv = absl::StrCat(raw_dir, "/cathy/transcripts.tsv");
  ASSIGN_OR_RETURN(std::string text, ReadFile(tsv));
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    absl::ConsumeSuffix(&line, "\r");
    if (line.empty()) continue;
    const std::vector<std::string> fields = absl::StrSplit(line, absl::MaxSplits('\t', 1));
    if (fields.size() != 2 || fields[0].empty() || fields[1].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(tsv, ":", line_number, ": expected id<TAB>sentence"));
    }
    const int split = CathyIsHeldOut(fields[0], selection) ? kVal : kTrain;
    const int64_t limit = selection.cathy[split];
    if (limit >= 0 && static_cast<int64_t>(corpus->cathy[split].size()) >= limit) continue;
    Recording r;
    r.id = absl::StrCat("cathy/", fields[0]);
    r.transcript = fields[1];
    ASSIGN_OR_RETURN(r.audio,
                     ReadSpeech(absl::StrCat(raw_dir, "/cathy/recordings/", fields[0], ".flac")));
    corpus->cathy[split].push_back(std::move(r));
  }
  return CheckNotEmpty(absl::StrCat(raw_dir, "/cathy"), corpus->cathy, selection.cathy,
                       absl::StrFormat("--cathy_val=%d-%d: utterances arctic_a%04d..arctic_a%04d "
                                       "are val",
                                       selection.cathy_val_numbers.first,
                                       selection.cathy_val_numbers.second,
                                       selection.cathy_val_numbers.first,
                                       selection.cathy_val_numbers.second));
}

// A train item whose content (pixels, samples) equals a held-out item's is a
// leak: an error naming both, or with skip_bad dropped from train and listed.
template <typename Item, typename Content, typename Name>
absl::Status CheckNoSharedContent(std::vector<Item>* train, const std::vector<Item>& val,
                                  Content content, Name name, const RawSelection& selection,
                                  RawCorpus* corpus) {
  std::map<std::string, size_t> held_out;
  for (size_t i = 0; i < val.size(); ++i) held_out.emplace(Sha256Hex(content(val[i])), i);
  std::vector<Item> kept;
  std::vector<std::string> bad;
  for (size_t i = 0; i < train->size(); ++i) {
    auto it = held_out.find(Sha256Hex(content((*train)[i])));
    if (it == held_out.end()) {
      kept.push_back(std::move((*train)[i]));
      continue;
    }
    bad.push_back(absl::StrCat(name(kTrain, i), ": same content as held-out ",
                               name(kVal, it->second), " (a train item must not repeat a val one)"));
  }
  RETURN_IF_ERROR(Skip(bad, selection, corpus));
  *train = std::move(kept);
  return absl::OkStatus();
}

}  // namespace

const char* SplitName(int split) { return split == kTrain ? "train" : "val"; }

size_t TextSplitOffset(size_t bytes) { return bytes * 9 / 10; }

absl::StatusOr<std::string> FindRawDataDir(const std::string& flag) {
  std::error_code ec;
  auto check = [&](const std::string& dir, const std::string& from) -> absl::StatusOr<std::string> {
    if (!fs::is_directory(dir, ec)) {
      return absl::NotFoundError(absl::StrCat("raw data directory ", dir, " (from ", from,
                                              ") does not exist"));
    }
    return dir;
  };
  if (!flag.empty()) return check(flag, "--raw");
  const char* env = std::getenv("MODAMBA_DATA_DIR");
  if (env != nullptr && *env != '\0') return check(env, "MODAMBA_DATA_DIR");

  std::vector<fs::path> starts;
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) starts.emplace_back(ws);
  starts.push_back(fs::current_path(ec));
  starts.push_back(fs::read_symlink("/proc/self/exe", ec).parent_path());
  for (const fs::path& start : starts) {
    if (start.empty()) continue;
    std::optional<fs::path> root = WorkspaceRootFrom(start);
    if (!root) continue;
    const fs::path data = root->parent_path() / "shared" / "data";
    if (fs::is_directory(data, ec)) return data.string();
  }
  return absl::NotFoundError(
      "no raw data directory: pass --raw=DIR, set MODAMBA_DATA_DIR, or put the data at "
      "../shared/data beside the repository; with internet, tools/data/download_raw.sh DIR "
      "downloads it");
}

absl::StatusOr<RawCorpus> LoadRawCorpus(const std::string& raw_dir,
                                        const RawSelection& selection) {
  RawCorpus corpus;
  if (selection.images) {
    const std::string mnist = absl::StrCat(raw_dir, "/mnist/");
    ASSIGN_OR_RETURN(corpus.images[kTrain],
                     ReadMnist(mnist + "train-images-idx3-ubyte.gz",
                               mnist + "train-labels-idx1-ubyte.gz", selection.mnist[kTrain]));
    ASSIGN_OR_RETURN(corpus.images[kVal],
                     ReadMnist(mnist + "t10k-images-idx3-ubyte.gz",
                               mnist + "t10k-labels-idx1-ubyte.gz", selection.mnist[kVal]));
    // CheckNoSharedContent's check, for images, which live in one array per split.
    const MnistSet& val = corpus.images[kVal];
    std::map<std::string, int64_t> held_out;
    for (int64_t i = 0; i < val.count(); ++i) {
      held_out.emplace(Sha256Hex(absl::string_view(reinterpret_cast<const char*>(val.image(i)), kImagePixels)), i);
    }
    MnistSet& train = corpus.images[kTrain];
    MnistSet kept;
    std::vector<std::string> bad;
    for (int64_t i = 0; i < train.count(); ++i) {
      auto it = held_out.find(
          Sha256Hex(absl::string_view(reinterpret_cast<const char*>(train.image(i)), kImagePixels)));
      if (it == held_out.end()) {
        kept.pixels.insert(kept.pixels.end(), train.image(i), train.image(i) + kImagePixels);
        kept.labels.push_back(train.labels[i]);
        continue;
      }
      bad.push_back(absl::StrCat(mnist, "train-images-idx3-ubyte.gz image ", i,
                                 ": same pixels as held-out ", mnist, "t10k-images-idx3-ubyte.gz image ",
                                 it->second, " (a train item must not repeat a val one)"));
    }
    RETURN_IF_ERROR(Skip(bad, selection, &corpus));
    if (!bad.empty()) train = std::move(kept);
  }
  if (selection.speech) {
    RETURN_IF_ERROR(LoadFsdd(raw_dir, selection, &corpus));
    RETURN_IF_ERROR(LoadCathy(raw_dir, selection, &corpus));
    auto samples = [](const Recording& r) {
      return absl::string_view(reinterpret_cast<const char*>(r.audio.samples.data()),
                               r.audio.samples.size() * sizeof(float));
    };
    for (auto* source : {&corpus.fsdd, &corpus.cathy}) {
      RETURN_IF_ERROR(CheckNoSharedContent(
          &(*source)[kTrain], (*source)[kVal], samples,
          [&](int s, size_t i) { return (*source)[s][i].id; }, selection, &corpus));
    }
  }
  if (selection.text) {
    const std::string path = absl::StrCat(raw_dir, "/tinyshakespeare/input.txt");
    ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    if (text.empty()) return absl::DataLossError(absl::StrCat(path, ": empty"));
    const size_t split = TextSplitOffset(text.size());
    corpus.text[kTrain] = text.substr(0, split);
    corpus.text[kVal] = text.substr(split);
    for (int s = 0; s < kNumSplits; ++s) {
      if (selection.text_bytes[s] >= 0 &&
          static_cast<size_t>(selection.text_bytes[s]) < corpus.text[s].size()) {
        corpus.text[s].resize(selection.text_bytes[s]);
      }
    }
  }
  return corpus;
}

}  // namespace modamba::data
