#include "core/data/corpus_builder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/data/audio.h"
#include "core/data/bpe.h"
#include "core/data/corpus.h"
#include "core/data/documents.h"
#include "core/data/image.h"
#include "core/data/image_io.h"
#include "core/data/image_tokenizer.h"
#include "core/data/packing.h"
#include "core/data/permutation.h"
#include "core/data/shard.h"
#include "core/data/tokenizer_key.h"
#include "core/data/speech_tokenizer.h"
#include "core/data/text_tokenizer.h"
#include "core/file_util.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "core/status_macros.h"
#include "glog/logging.h"

namespace modamba::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Text and pre-tokenized runs shorter than this are too common to mean
// a leak when a train document repeats a val one.
constexpr size_t kMinLeakTextBytes = 64;
constexpr size_t kMinLeakTokens = 16;

// Runs work() on `threads` threads over the items produce() hands out (on the
// calling thread), and consume() on the calling thread in production order,
// with at most `window` items produced but not consumed. The first error of
// produce or consume stops everything and is returned.
template <typename Item, typename Result>
absl::Status RunOrdered(int threads, int window, const std::function<absl::StatusOr<bool>(Item*)>& produce,
                        const std::function<Result(Item&)>& work,
                        const std::function<absl::Status(Result&)>& consume) {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int64_t, Item>> queue;
  std::map<int64_t, Result> done;
  bool stop = false;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      while (true) {
        std::pair<int64_t, Item> job;
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait(lock, [&] { return stop || !queue.empty(); });
          if (queue.empty()) return;
          job = std::move(queue.front());
          queue.pop_front();
        }
        Result r = work(job.second);
        std::lock_guard<std::mutex> lock(mu);
        done.emplace(job.first, std::move(r));
        cv.notify_all();
      }
    });
  }
  absl::Status status;
  int64_t produced = 0, consumed = 0;
  bool more = true;
  while (status.ok()) {
    while (more && produced - consumed < window) {
      Item item;
      absl::StatusOr<bool> got = produce(&item);
      if (!got.ok()) status = got.status();
      if (!got.ok() || !*got) {
        more = false;
        break;
      }
      std::lock_guard<std::mutex> lock(mu);
      queue.emplace_back(produced++, std::move(item));
      cv.notify_all();
    }
    if (!status.ok() || consumed == produced) break;
    Result r;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return done.count(consumed) > 0; });
      r = std::move(done.at(consumed));
      done.erase(consumed);
    }
    ++consumed;
    status = consume(r);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
    queue.clear();
    cv.notify_all();
  }
  for (std::thread& t : pool) t.join();
  return status;
}


uint64_t Hash64(uint64_t seed, absl::string_view name) { return Rng::ForName(seed, name).NextU64(); }

// A document of an input file, with where it came from.
struct InputDoc {
  int file = 0;
  RawDocument raw;
};

// `unit_documents` consecutive documents of a split.
struct Unit {
  int split = kTrain;
  int64_t index = 0;
  std::vector<InputDoc> docs;
};

// A split's documents, unit by unit: its files in order, and with a
// val_fraction only the lines its seeded hash gives this split.
class UnitStream {
 public:
  UnitStream(const std::vector<std::string>& files, int split, const CorpusBuildOptions& o,
             bool by_fraction)
      : files_(files), split_(split), o_(o), by_fraction_(by_fraction) {}

  absl::StatusOr<bool> Next(Unit* unit) {
    unit->split = split_;
    unit->index = next_index_;
    unit->docs.clear();
    while (static_cast<int64_t>(unit->docs.size()) < o_.unit_documents) {
      if (reader_ == nullptr) {
        if (file_ + 1 >= static_cast<int>(files_.size())) break;
        ++file_;
        ASSIGN_OR_RETURN(reader_, CorpusFileReader::Open(files_[file_], o_.seq_len - 2));
      }
      InputDoc doc;
      doc.file = file_;
      ASSIGN_OR_RETURN(const bool more, reader_->Next(&doc.raw));
      if (!more) {
        reader_.reset();
        continue;
      }
      if (by_fraction_ && IsVal(file_, doc.raw.line) != (split_ == kVal)) continue;
      unit->docs.push_back(std::move(doc));
    }
    if (unit->docs.empty()) return false;
    ++next_index_;
    return true;
  }

 private:
  // By the file's place among the inputs, not its name, so that a renamed or
  // recompressed corpus splits the same.
  bool IsVal(int file, int64_t line) const {
    const uint64_t h = Hash64(o_.seed, absl::StrCat("val_fraction/", file, ":", line));
    return (h >> 11) * 0x1.0p-53 < o_.val_fraction;
  }

  const std::vector<std::string>& files_;
  int split_;
  const CorpusBuildOptions& o_;
  bool by_fraction_;
  int file_ = -1;
  std::unique_ptr<CorpusFileReader> reader_;
  int64_t next_index_ = 0;
};

struct MediaRef {
  uint64_t hash = 0;
  std::string path;
  bool operator<(const MediaRef& o) const { return std::tie(hash, path) < std::tie(o.hash, o.path); }
};

// The `limit` items of smallest hash seen so far.
class BottomK {
 public:
  explicit BottomK(int64_t limit) : limit_(limit) {}
  void Add(MediaRef ref) {
    if (limit_ <= 0) return;
    if (static_cast<int64_t>(set_.size()) == limit_) {
      if (!(ref < *set_.rbegin())) return;
      set_.erase(std::prev(set_.end()));
    }
    set_.insert(std::move(ref));
  }
  const std::set<MediaRef>& items() const { return set_; }

 private:
  int64_t limit_;
  std::set<MediaRef> set_;
};

std::string Where(const std::vector<std::string>& files, const InputDoc& d) {
  return absl::StrCat(files[d.file], ":", d.raw.line);
}

// Parses a document (or takes an array file's) and checks that its media exist.
absl::StatusOr<CorpusDocument> ParseAndCheck(const std::vector<std::string>& files,
                                             InputDoc& d) {
  if (d.raw.parsed != nullptr) return std::move(*d.raw.parsed);
  ASSIGN_OR_RETURN(CorpusDocument doc,
                   ParseDocumentLine(d.raw.text, fs::path(files[d.file]).parent_path().string()));
  for (size_t i = 0; i < doc.segments.size(); ++i) {
    const Segment& s = doc.segments[i];
    if (s.kind != Segment::kImage && s.kind != Segment::kAudio) continue;
    struct stat st;
    if (stat(s.value.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return absl::NotFoundError(
          absl::StrCat("segment ", i + 1, ": ", s.value, ": no such file"));
    }
  }
  return doc;
}

// --- Scan -------------------------------------------------------------------

struct ScanResult {
  int64_t documents = 0;
  std::string key;  // SHA-256 of the unit's documents
  std::vector<MediaRef> images, audio;
  std::vector<std::string> texts;  // BPE training text
  std::vector<std::string> bad;    // "FILE:LINE: what"
};

// What a unit's documents are, for the unit key: their place, their bytes
// and their media files' sizes and modification times.
void HashDocument(const std::vector<std::string>& files, const InputDoc& d,
                  const CorpusDocument& doc, Sha256* sha) {
  sha->Update(absl::StrCat(files[d.file], ":", d.raw.line, "\n"));
  for (const Segment& s : doc.segments) {
    sha->Update(absl::StrCat(s.kind, "/", s.modality, "/", s.value.size(), ":"));
    sha->Update(s.value);
    sha->Update(absl::string_view(reinterpret_cast<const char*>(s.tokens.data()),
                                  s.tokens.size() * sizeof(int32_t)));
    if (s.kind == Segment::kImage || s.kind == Segment::kAudio) {
      struct stat st;
      if (stat(s.value.c_str(), &st) == 0) {
        sha->Update(absl::StrCat(st.st_size, "/", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec));
      }
    }
  }
}

// --- Tokenizers ---------------------------------------------------------------

struct Tokenizers {
  std::unique_ptr<TextTokenizer> text;
  std::optional<ImageVq> vq;
  std::optional<SpeechUnits> speech;
  MelConfig mel;
  std::optional<MelAnalyzer> analyzer;  // one for all threads: FFTW plans are made once
};

// --- Staging ------------------------------------------------------------------

// OUT/.staging-<name>: where one setting is built, renamed to OUT/<name> on
// success and removed on failure. A killed build leaves it behind for the next
// build to resume from; a lock keeps two builds out of one.
class StagingDir {
 public:
  static absl::StatusOr<std::unique_ptr<StagingDir>> Open(const std::string& out_dir,
                                                          const std::string& name) {
    auto dir = std::unique_ptr<StagingDir>(new StagingDir);
    dir->final_ = absl::StrCat(out_dir, "/", name);
    dir->path_ = absl::StrCat(out_dir, "/.staging-", name);
    RETURN_IF_ERROR(MakeDirs(dir->path_));
    dir->lock_fd_ = open(dir->path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir->lock_fd_ < 0 || flock(dir->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      return absl::UnavailableError(
          absl::StrCat(dir->path_, ": another build of this directory is running"));
    }
    return dir;
  }
  ~StagingDir() {
    if (!committed_) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
    if (lock_fd_ >= 0) close(lock_fd_);
  }
  const std::string& path() const { return path_; }
  const std::string& final_path() const { return final_; }
  absl::Status Commit() {
    std::error_code ec;
    const std::string old = path_ + ".old";
    fs::remove_all(old, ec);
    if (fs::exists(final_, ec)) fs::rename(final_, old, ec);
    if (!ec) fs::rename(path_, final_, ec);
    if (ec) return absl::InternalError(absl::StrCat(final_, ": cannot commit: ", ec.message()));
    fs::remove_all(old, ec);
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  StagingDir() = default;
  std::string path_, final_;
  int lock_fd_ = -1;
  bool committed_ = false;
};

// --- Encode -------------------------------------------------------------------

// A document's segments decoded once for every setting.
struct DecodedSegment {
  Segment::Kind kind;
  int modality = kText;
  std::vector<int32_t> ids;     // text ids, pre-tokenized ids, VQ codes or speech units
  std::vector<uint8_t> pixels;  // images at the configured shape
};

struct UnitOutput {
  SplitStats stats;  // with its one shard (or none)
  std::string key;
};

struct EncodeResult {
  absl::Status status;
  int64_t documents = 0;
  std::vector<UnitOutput> settings;  // per setting
  std::vector<std::pair<uint64_t, std::string>> val_content;  // val units: content -> where
};

class CorpusBuilder {
 public:
  explicit CorpusBuilder(const CorpusBuildOptions& o)
      : o_(o), shape_{o.image_height, o.image_width, o.image_channels} {}

  absl::StatusOr<std::vector<DatasetManifest>> Build();

 private:
  bool Discrete() const {
    return std::any_of(o_.settings.begin(), o_.settings.end(),
                       [](Setting s) { return s != Setting::kTransfusion; });
  }
  bool Speech() const {
    return std::find(o_.settings.begin(), o_.settings.end(), Setting::kTrimodal) !=
           o_.settings.end();
  }
  int Threads() const {
    return o_.threads > 0 ? o_.threads : std::max(1u, std::thread::hardware_concurrency());
  }
  const std::vector<std::string>& Files(int split) const { return files_[split]; }
  std::string SplitRule() const {
    if (o_.val_inputs.empty()) {
      return absl::StrFormat("--val_fraction=%g of --train=%s with --seed=%d", o_.val_fraction,
                             o_.train_inputs, o_.seed);
    }
    return absl::StrCat("--train=", o_.train_inputs, " --val=", o_.val_inputs);
  }
  void Progress(const std::string& phase, int64_t done, int64_t total) {
    if (!o_.progress) return;
    const absl::Time now = absl::Now();
    if (phase != phase_) {
      phase_ = phase;
      phase_start_ = now;
    } else if ((total == 0 || done < total) && now - last_progress_ < absl::Milliseconds(200)) {
      return;
    }
    last_progress_ = now;
    o_.progress({phase, done, total, now - phase_start_});
  }

  absl::Status Scan(int split);
  absl::Status TrainTokenizers();
  absl::Status LoadCommittedTokenizers();
  absl::Status WriteSettingTokenizers();
  absl::StatusOr<DatasetManifest> FinishSetting(int s);
  absl::StatusOr<std::vector<uint8_t>> DecodeImage(const std::string& path) const;
  absl::StatusOr<std::vector<float>> DecodeAudio(const std::string& path) const;
  absl::Status Encode(int split);
  EncodeResult EncodeUnit(Unit& unit);
  absl::StatusOr<std::optional<Document>> MakeDocument(const std::vector<DecodedSegment>& segs,
                                                       Setting setting, const Vocab& vocab,
                                                       SplitStats* stats) const;
  absl::Status Bad(int split, const std::string& where, const absl::Status& status);

  const CorpusBuildOptions& o_;
  const ImageShape shape_;
  absl::Time start_ = absl::Now(), phase_start_, last_progress_;
  std::string phase_;
  std::array<std::vector<std::string>, kNumSplits> files_;
  std::array<int64_t, kNumSplits> documents_{};
  std::array<std::vector<std::string>, kNumSplits> bad_;
  std::array<int64_t, kNumSplits> bad_count_{};
  BottomK image_sample_{0}, audio_sample_{0};
  TextTokenizerFlag text_flag_;
  std::unique_ptr<BpeTrainer> bpe_;
  Sha256 train_key_;
  Tokenizers tok_;
  std::string tokenizer_key_;  // what trained the tokenizers
  std::vector<std::string> dirs_;  // staging directory per setting
  bool ReuseUnit(int s, int split, int64_t index, UnitOutput* out) const;
  std::vector<std::string> setting_keys_;  // options and tokenizer files per setting
  std::vector<Vocab> vocab_;
  std::vector<std::map<std::string, SplitStats>> splits_;  // per setting
  std::vector<std::unique_ptr<StagingDir>> staging_;
  std::array<int64_t, kNumSplits> units_{};  // units per split
  std::vector<std::map<std::string, TokenizerEntry>> tokenizer_files_;  // per setting
  std::map<uint64_t, std::string> val_content_;  // leak check: val contents -> where
};

absl::Status CorpusBuilder::Bad(int split, const std::string& where, const absl::Status& status) {
  const std::string what = absl::StrCat(where, ": ", status.message());
  if (!o_.skip_bad) {
    return absl::Status(status.code(), absl::StrCat(what, " (--skip_bad skips bad documents)"));
  }
  ++bad_count_[split];
  if (bad_[split].size() < kMaxListedSkips) bad_[split].push_back(what);
  return absl::OkStatus();
}

absl::Status CorpusBuilder::Scan(int split) {
  UnitStream stream(Files(split), split, o_, o_.val_inputs.empty());
  // Enough images for the k-means sample of patches.
  const int64_t image_limit = (o_.image_kmeans_patches + shape_.patches() - 1) / shape_.patches();
  if (split == kTrain) {
    image_sample_ = BottomK(Discrete() ? image_limit : 0);
    audio_sample_ = BottomK(Speech() ? o_.speech_kmeans_recordings : 0);
  }
  const bool train = split == kTrain;
  const bool want_texts = train && bpe_ != nullptr;
  const std::string phase = absl::StrCat("scan ", SplitName(split));
  Progress(phase, 0, 0);
  return RunOrdered<Unit, ScanResult>(
      Threads(), 2 * Threads(), [&](Unit* u) { return stream.Next(u); },
      [&](Unit& u) {
        ScanResult r;
        Sha256 sha;
        for (InputDoc& d : u.docs) {
          absl::StatusOr<CorpusDocument> doc = ParseAndCheck(Files(split), d);
          if (!doc.ok()) {
            r.bad.push_back(absl::StrCat(Where(Files(split), d), "\t", doc.status().ToString()));
            continue;
          }
          ++r.documents;
          HashDocument(Files(split), d, *doc, &sha);
          if (!train) continue;
          for (size_t i = 0; i < doc->segments.size(); ++i) {
            const Segment& s = doc->segments[i];
            // By place, not name, as IsVal.
            const std::string name = absl::StrCat(d.file, ":", d.raw.line, "/", i);
            if (s.kind == Segment::kImage) r.images.push_back({Hash64(o_.seed, "image/" + name), s.value});
            if (s.kind == Segment::kAudio) r.audio.push_back({Hash64(o_.seed, "audio/" + name), s.value});
            if (s.kind == Segment::kText && want_texts) r.texts.push_back(s.value);
          }
        }
        r.key = sha.HexDigest();
        return r;
      },
      [&](ScanResult& r) -> absl::Status {
        for (const std::string& b : r.bad) {
          // "where\tstatus": keep the parse error's code and message.
          const size_t tab = b.find('\t');
          RETURN_IF_ERROR(Bad(split, b.substr(0, tab),
                              absl::InvalidArgumentError(b.substr(tab + 1))));
        }
        documents_[split] += r.documents;
        if (train) {
          train_key_.Update(r.key);
          for (MediaRef& m : r.images) image_sample_.Add(std::move(m));
          for (MediaRef& m : r.audio) audio_sample_.Add(std::move(m));
          for (const std::string& t : r.texts) RETURN_IF_ERROR(bpe_->Add(t));
        }
        Progress(phase, documents_[split], 0);
        return absl::OkStatus();
      });
}

absl::StatusOr<std::vector<uint8_t>> CorpusBuilder::DecodeImage(const std::string& path) const {
  ASSIGN_OR_RETURN(const Image image, ReadImage(path));
  return ResizeImage(image, shape_.height, shape_.width, shape_.channels).pixels;
}

absl::StatusOr<std::vector<float>> CorpusBuilder::DecodeAudio(const std::string& path) const {
  return ReadAudio(path, o_.speech_sample_rate);
}

absl::Status CorpusBuilder::TrainTokenizers() {
  // Text.
  if (bpe_ != nullptr) {
    ASSIGN_OR_RETURN(tok_.text, bpe_->Finish());
  } else if (!text_flag_.path.empty()) {
    ASSIGN_OR_RETURN(tok_.text, LoadTextTokenizer(text_flag_.path));
  } else {
    tok_.text = MakeByteTokenizer();
  }
  const int threads = Threads();
  // Decodes the sampled files in hash order, on every core.
  auto decode_all = [&](const std::set<MediaRef>& refs, auto decode, auto* out) -> absl::Status {
    std::vector<const MediaRef*> list;
    for (const MediaRef& r : refs) list.push_back(&r);
    size_t next = 0;
    return RunOrdered<const MediaRef*, std::pair<std::string, decltype(decode(std::string()))>>(
        threads, 4 * threads,
        [&](const MediaRef** r) -> absl::StatusOr<bool> {
          if (next == list.size()) return false;
          *r = list[next++];
          return true;
        },
        [&](const MediaRef*& r) { return std::make_pair(r->path, decode(r->path)); },
        [&](auto& result) -> absl::Status {
          // A file that does not decode is left out of the sample; the encode
          // pass meets it again and reports it with its file and line.
          if (!result.second.ok()) return absl::OkStatus();
          out->push_back(*std::move(result.second));
          return absl::OkStatus();
        });
  };
  if (Discrete() && !o_.image_codebook.empty()) {
    ASSIGN_OR_RETURN(tok_.vq, ImageVq::LoadCodebook(o_.image_codebook, shape_));
  } else if (Discrete()) {
    std::vector<std::vector<uint8_t>> images;
    RETURN_IF_ERROR(decode_all(image_sample_.items(),
                               [&](const std::string& p) { return DecodeImage(p); }, &images));
    // Without image files in train, images come as codes (a user's own
    // tokenizer's) and need no codebook.
    if (!images.empty()) {
    ImageVqOptions options;
    options.k = o_.image_codes;
    options.iterations = o_.kmeans_iterations;
    options.max_patches = o_.image_kmeans_patches;
    options.seed = Hash64(o_.seed, "image_vq");
    std::vector<uint8_t> pixels;
    for (const auto& img : images) pixels.insert(pixels.end(), img.begin(), img.end());
    ASSIGN_OR_RETURN(tok_.vq, ImageVq::Train(pixels.data(), static_cast<int64_t>(images.size()),
                                             shape_, options));
    }
  }
  if (Speech()) {
    std::vector<std::vector<float>> recordings;
    RETURN_IF_ERROR(decode_all(audio_sample_.items(),
                               [&](const std::string& p) { return DecodeAudio(p); }, &recordings));
    // Likewise speech without audio files in train comes as units.
    if (recordings.empty()) return absl::OkStatus();
    tok_.mel.sample_rate = o_.speech_sample_rate;
    tok_.mel.f_max = o_.speech_sample_rate / 2.0f;
    tok_.analyzer.emplace(tok_.mel);
    std::vector<std::vector<float>> mels;
    for (const auto& r : recordings) mels.push_back(tok_.analyzer->LogMel(r));
    SpeechUnitsOptions options;
    options.k = o_.speech_units;
    options.iterations = o_.kmeans_iterations;
    options.max_frames = o_.speech_kmeans_frames;
    options.seed = Hash64(o_.seed, "speech_units");
    ASSIGN_OR_RETURN(tok_.speech, SpeechUnits::Train(mels, tok_.mel, options));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Document>> CorpusBuilder::MakeDocument(
    const std::vector<DecodedSegment>& segs, Setting setting, const Vocab& vocab,
    SplitStats* stats) const {
  const bool continuous = setting == Setting::kTransfusion;
  for (const DecodedSegment& s : segs) {
    if (setting != Setting::kTrimodal &&
        (s.kind == Segment::kAudio || (s.kind == Segment::kTokens && s.modality == kSpeech))) {
      ++stats->items["left_out_speech_documents"];
      return std::nullopt;
    }
    if (continuous && s.kind == Segment::kTokens && s.modality == kImage) {
      ++stats->items["left_out_image_token_documents"];
      return std::nullopt;
    }
  }
  const int patches = shape_.patches();
  const int patch_dim = shape_.patch_dim();
  DocumentWriter w(DocType::kCorpus, vocab, continuous ? patch_dim : 0);
  for (const DecodedSegment& s : segs) {
    switch (s.kind) {
      case Segment::kText:
        w.TextIds(s.ids);
        break;
      case Segment::kImage:
        if (continuous) {
          std::vector<float> p(static_cast<size_t>(patches) * patch_dim);
          ContinuousPatches(s.pixels.data(), p.data(), shape_);
          w.ImagePatches(p.data(), patches);
        } else {
          w.ImageCodes(s.ids.data(), static_cast<int>(s.ids.size()));  // the VQ codes
        }
        break;
      case Segment::kAudio:
        w.Speech(s.ids);
        break;
      case Segment::kTokens:
        if (s.modality == kText) w.TextIds(s.ids);
        if (s.modality == kImage) w.ImageCodes(s.ids.data(), static_cast<int>(s.ids.size()));
        if (s.modality == kSpeech) w.Speech(s.ids);
        break;
    }
  }
  return w.Finish();
}

// A finished unit of the same key: in the staging directory (an interrupted
// build), or with --append in the built dataset, whose shard is linked over.
bool CorpusBuilder::ReuseUnit(int s, int split, int64_t index, UnitOutput* out) const {
  const std::string base = absl::StrFormat("%s/shard-%05d", SplitName(split), index);
  for (const std::string& dir : {dirs_[s], staging_[s]->final_path()}) {
    if (dir != dirs_[s] && !o_.append) break;
    absl::StatusOr<std::string> text = ReadFile(absl::StrCat(dir, "/", base, ".json"));
    if (!text.ok()) continue;
    const json j = json::parse(*text, nullptr, false);
    if (!j.is_object() || j.value("key", "") != out->key || !j.contains("stats")) continue;
    absl::StatusOr<SplitStats> stats = SplitStatsFromJson(j["stats"].dump(), base);
    if (!stats.ok()) continue;
    if (dir != dirs_[s]) {
      std::error_code ec;
      for (const char* ext : {".bin", ".json"}) {
        const std::string from = absl::StrCat(dir, "/", base, ext);
        const std::string to = absl::StrCat(dirs_[s], "/", base, ext);
        fs::remove(to, ec);
        if (fs::exists(from)) fs::create_hard_link(from, to, ec);
        if (ec) fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
        if (ec) return false;
      }
    }
    out->stats = *std::move(stats);
    return true;
  }
  return false;
}

EncodeResult CorpusBuilder::EncodeUnit(Unit& unit) {
  EncodeResult r;
  const int split = unit.split;
  const std::vector<std::string>& files = Files(split);
  Sha256 sha;
  std::vector<std::optional<CorpusDocument>> parsed(unit.docs.size());
  for (size_t i = 0; i < unit.docs.size(); ++i) {
    absl::StatusOr<CorpusDocument> doc = ParseAndCheck(files, unit.docs[i]);
    if (!doc.ok()) continue;  // the scan has reported (or skipped) it
    HashDocument(files, unit.docs[i], *doc, &sha);
    parsed[i] = *std::move(doc);
  }
  const std::string content_key = sha.HexDigest();
  const int n_settings = static_cast<int>(o_.settings.size());
  r.settings.resize(n_settings);
  std::vector<bool> todo(n_settings, false);
  bool any = false;
  for (int s = 0; s < n_settings; ++s) {
    UnitOutput& out = r.settings[s];
    out.key = Sha256Hex(absl::StrCat(setting_keys_[s], "/", SplitName(split), "/", unit.index, "/",
                                     content_key));
    if (ReuseUnit(s, split, unit.index, &out)) continue;
    todo[s] = true;
    any = true;
  }
  r.documents = static_cast<int64_t>(unit.docs.size());
  if (!any && split == kTrain) return r;

  Rng rng = Rng::ForName(o_.seed, absl::StrCat("corpus_units/", SplitName(split), "/", unit.index));
  const std::vector<int64_t> order = Permutation(static_cast<int64_t>(unit.docs.size()), &rng);
  std::vector<std::unique_ptr<Packer>> packers(n_settings);
  const int patch_dim = shape_.patch_dim();
  for (int s = 0; s < n_settings; ++s) {
    packers[s] = std::make_unique<Packer>(o_.seq_len,
                                          o_.settings[s] == Setting::kTransfusion ? patch_dim : 0);
  }
  auto fail = [&](const InputDoc& d, const absl::Status& status) -> bool {
    const std::string what = absl::StrCat(Where(files, d), ": ", status.message());
    if (!o_.skip_bad) {
      r.status = absl::Status(status.code(), absl::StrCat(what, " (--skip_bad skips bad documents)"));
      return false;
    }
    for (int s = 0; s < n_settings; ++s) {
      if (!todo[s]) continue;  // a reused unit's statistics count it already
      SplitStats& stats = r.settings[s].stats;
      ++stats.items["skipped_bad"];
      if (stats.skipped.size() < kMaxListedSkips) stats.skipped.push_back(what);
    }
    return true;
  };
  const Vocab* vocabs = vocab_.data();
  // Decoded documents in the unit's shuffled order.
  std::vector<std::vector<DecodedSegment>> decoded;
  std::vector<const InputDoc*> decoded_docs;
  for (int64_t i : order) {
    if (!parsed[i]) continue;
    const InputDoc& d = unit.docs[i];
    const CorpusDocument& doc = *parsed[i];
    std::vector<DecodedSegment> segs;
    absl::Status status;
    std::vector<std::pair<uint64_t, std::string>> contents;
    for (size_t k = 0; k < doc.segments.size() && status.ok(); ++k) {
      const Segment& seg = doc.segments[k];
      DecodedSegment out{seg.kind, seg.modality, {}, {}};
      const std::string at = absl::StrCat("segment ", k + 1, ": ");
      switch (seg.kind) {
        case Segment::kText: {
          status = tok_.text->Encode(seg.value, &out.ids);
          if (seg.value.size() >= kMinLeakTextBytes) {
            contents.emplace_back(Hash64(0, "text/" + seg.value), "text");
          }
          break;
        }
        case Segment::kImage: {
          if (Discrete() && !tok_.vq) {
            status = absl::FailedPreconditionError(
                "an image file, but the train split has none to learn a codebook from "
                "(--image_codebook gives one)");
            break;
          }
          absl::StatusOr<std::vector<uint8_t>> px = DecodeImage(seg.value);
          if (!px.ok()) {
            status = px.status();
            break;
          }
          out.pixels = *std::move(px);
          contents.emplace_back(
              Hash64(0, absl::StrCat("image/", absl::string_view(
                                                   reinterpret_cast<const char*>(out.pixels.data()),
                                                   out.pixels.size()))),
              "image");
          break;
        }
        case Segment::kAudio: {
          if (!Speech()) break;  // only trimodal keeps speech; the document is left out
          if (!tok_.speech) {
            status = absl::FailedPreconditionError(
                "an audio file, but the train split has none to learn speech units from");
            break;
          }
          absl::StatusOr<std::vector<float>> samples = DecodeAudio(seg.value);
          if (!samples.ok()) {
            status = samples.status();
            break;
          }
          contents.emplace_back(
              Hash64(0, absl::StrCat("audio/", absl::string_view(
                                                   reinterpret_cast<const char*>(samples->data()),
                                                   samples->size() * sizeof(float)))),
              "audio");
          out.ids = tok_.speech->Encode(tok_.analyzer->LogMel(*samples));
          break;
        }
        case Segment::kTokens: {
          const int32_t limit = seg.modality == kText    ? tok_.text->vocab_size()
                                : seg.modality == kImage ? vocab_[0].image_codes
                                                         : o_.speech_units;
          for (int32_t t : seg.tokens) {
            if (t >= limit) {
              status = absl::OutOfRangeError(absl::StrCat(
                  ModalityName(seg.modality), " token ", t, " is outside 0..", limit - 1,
                  seg.modality == kImage    ? " (--image_codes)"
                  : seg.modality == kSpeech ? " (--speech_units)"
                                            : " (the text tokenizer's ids)"));
              break;
            }
          }
          out.ids = seg.tokens;
          if (seg.tokens.size() >= kMinLeakTokens) {
            contents.emplace_back(
                Hash64(0, absl::StrCat("tokens/", seg.modality, "/",
                                       absl::string_view(reinterpret_cast<const char*>(seg.tokens.data()),
                                                         seg.tokens.size() * sizeof(int32_t)))),
                "tokens");
          }
          break;
        }
      }
      if (!status.ok()) status = absl::Status(status.code(), at + std::string(status.message()));
      segs.push_back(std::move(out));
    }
    if (status.ok() && split == kTrain) {
      for (size_t k = 0; k < contents.size() && status.ok(); ++k) {
        auto it = val_content_.find(contents[k].first);
        if (it != val_content_.end()) {
          status = absl::FailedPreconditionError(
              absl::StrCat("a train document repeats the ", contents[k].second, " of val ",
                           it->second, " (held-out content in train)"));
        }
      }
    }
    if (!status.ok()) {
      if (!fail(d, status)) return r;
      continue;
    }
    if (split == kVal) {
      for (auto& [hash, kind] : contents) r.val_content.emplace_back(hash, Where(files, d));
    }
    decoded.push_back(std::move(segs));
    decoded_docs.push_back(&d);
  }
  // The unit's images in one VQ pass.
  if (tok_.vq) {
    std::vector<uint8_t> pixels;
    for (const auto& segs : decoded) {
      for (const DecodedSegment& seg : segs) pixels.insert(pixels.end(), seg.pixels.begin(), seg.pixels.end());
    }
    const int64_t image_bytes = shape_.pixels();
    const std::vector<int32_t> codes = tok_.vq->Encode(pixels.data(), pixels.size() / image_bytes);
    const size_t per_image = codes.size() / std::max<size_t>(1, pixels.size() / image_bytes);
    size_t next = 0;
    for (auto& segs : decoded) {
      for (DecodedSegment& seg : segs) {
        if (seg.kind != Segment::kImage) continue;
        seg.ids.assign(codes.begin() + next, codes.begin() + next + per_image);
        next += per_image;
      }
    }
  }
  for (size_t i = 0; i < decoded.size(); ++i) {
    for (int s = 0; s < n_settings; ++s) {
      if (!todo[s]) continue;
      absl::StatusOr<std::optional<Document>> made =
          MakeDocument(decoded[i], o_.settings[s], vocabs[s], &r.settings[s].stats);
      if (!made.ok()) {
        if (!fail(*decoded_docs[i], made.status())) return r;
        break;
      }
      if (*made) packers[s]->Add(**std::move(made));
    }
  }
  for (int s = 0; s < n_settings; ++s) {
    if (!todo[s]) continue;
    UnitOutput& out = r.settings[s];
    SplitStats& stats = out.stats;
    stats.documents = packers[s]->stats().documents;
    stats.dropped_documents = packers[s]->stats().dropped;
    const PackedSequences data = packers[s]->Finish();
    CountPackedTokens(data, &stats);
    stats.sequences = data.num_sequences;
    stats.items["documents"] = stats.documents[static_cast<int>(DocType::kCorpus)];
    const std::string base = absl::StrFormat("%s/shard-%05d", SplitName(split), unit.index);
    if (data.num_sequences > 0) {
      ShardEntry entry{base + ".bin", data.num_sequences, ""};
      const std::string path = absl::StrCat(dirs_[s], "/", entry.file);
      if (absl::Status st = WriteShard(path, data, 0, data.num_sequences); !st.ok()) {
        r.status = st;
        return r;
      }
      absl::StatusOr<std::string> sha256 = Sha256File(path);
      if (!sha256.ok()) {
        r.status = sha256.status();
        return r;
      }
      entry.sha256 = *sha256;
      stats.shards.push_back(entry);
    }
    const json sidecar = {{"key", out.key}, {"stats", json::parse(SplitStatsToJson(stats))}};
    if (absl::Status st = WriteFileAtomic(absl::StrCat(dirs_[s], "/", base, ".json"), sidecar.dump() + "\n");
        !st.ok()) {
      r.status = st;
      return r;
    }
  }
  return r;
}

void AddStats(const SplitStats& from, SplitStats* to) {
  to->shards.insert(to->shards.end(), from.shards.begin(), from.shards.end());
  to->sequences += from.sequences;
  to->pad_tokens += from.pad_tokens;
  to->patches += from.patches;
  for (int m = 0; m < kNumModalities; ++m) {
    to->tokens[m] += from.tokens[m];
    to->targets[m] += from.targets[m];
  }
  for (int t = 0; t < kNumDocTypes; ++t) {
    to->documents[t] += from.documents[t];
    to->dropped_documents[t] += from.dropped_documents[t];
  }
  for (const auto& [k, v] : from.items) to->items[k] += v;
  for (const std::string& s : from.skipped) {
    if (to->skipped.size() < kMaxListedSkips) to->skipped.push_back(s);
  }
}

absl::Status CorpusBuilder::Encode(int split) {
  UnitStream stream(Files(split), split, o_, o_.val_inputs.empty());
  const std::string phase = absl::StrCat("encode ", SplitName(split));
  int64_t done = 0;
  Progress(phase, 0, documents_[split] + bad_count_[split]);
  return RunOrdered<Unit, EncodeResult>(
      Threads(), 2 * Threads(), [&](Unit* u) { return stream.Next(u); },
      [&](Unit& u) { return EncodeUnit(u); },
      [&](EncodeResult& r) -> absl::Status {
        RETURN_IF_ERROR(r.status);
        for (size_t s = 0; s < r.settings.size(); ++s) {
          SplitStats& to = splits_[s][SplitName(split)];
          AddStats(r.settings[s].stats, &to);
        }
        for (auto& [hash, where] : r.val_content) val_content_.emplace(hash, std::move(where));
        done += r.documents;
        ++units_[split];
        Progress(phase, done, documents_[split] + bad_count_[split]);
        return absl::OkStatus();
      });
}

absl::StatusOr<std::vector<DatasetManifest>> CorpusBuilder::Build() {
  const CorpusBuildOptions& o = o_;
  if (o.seq_len < 2 || o.image_codes < 1 || o.speech_units < 1 || o.kmeans_iterations < 1 ||
      o.unit_documents < 1 || o.settings.empty() || o.speech_sample_rate < 1000) {
    return absl::InvalidArgumentError(
        "build options: seq_len >= 2, image_codes, speech_units, kmeans_iterations, "
        "unit_documents >= 1, speech_sample_rate >= 1000 and at least one setting are required");
  }
  RETURN_IF_ERROR(ValidateImageShape(shape_));
  if (o.out_dir.empty()) return absl::InvalidArgumentError("build options: no output directory");
  if (o.train_inputs.empty()) return absl::InvalidArgumentError("--train=GLOBS is required");
  if (o.val_inputs.empty() == (o.val_fraction <= 0) || o.val_fraction >= 1) {
    return absl::InvalidArgumentError(
        "give the validation split as --val=GLOBS or as --val_fraction=F with 0 < F < 1");
  }
  ASSIGN_OR_RETURN(files_[kTrain], ExpandInputs(o.train_inputs));
  if (o.val_inputs.empty()) {
    files_[kVal] = files_[kTrain];
  } else {
    ASSIGN_OR_RETURN(files_[kVal], ExpandInputs(o.val_inputs));
  }
  ASSIGN_OR_RETURN(text_flag_, ParseTextTokenizerFlag(o.text_tokenizer));
  if (text_flag_.bpe_vocab_size > 0 && !o.append) {
    bpe_ = std::make_unique<BpeTrainer>(text_flag_.bpe_vocab_size);
  }

  for (int split : {kVal, kTrain}) RETURN_IF_ERROR(Scan(split));
  for (int split : {kVal, kTrain}) {
    if (documents_[split] == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "split ", SplitName(split), " has no documents (split rule: ", SplitRule(), ")"));
    }
  }
  LOG(INFO) << "scanned " << documents_[kTrain] << " train and " << documents_[kVal]
            << " val documents in " << absl::Now() - start_;

  RETURN_IF_ERROR(MakeDirs(o.out_dir));
  for (Setting setting : o.settings) {
    ASSIGN_OR_RETURN(std::unique_ptr<StagingDir> dir, StagingDir::Open(o.out_dir, SettingName(setting)));
    dirs_.push_back(dir->path());
    staging_.push_back(std::move(dir));
  }
  RETURN_IF_ERROR(o.append ? LoadCommittedTokenizers() : TrainTokenizers());
  RETURN_IF_ERROR(WriteSettingTokenizers());
  splits_.resize(o.settings.size());
  for (int split : {kVal, kTrain}) {
    for (size_t s = 0; s < o.settings.size(); ++s) {
      RETURN_IF_ERROR(MakeDirs(absl::StrCat(dirs_[s], "/", SplitName(split))));
    }
    RETURN_IF_ERROR(Encode(split));
  }
  std::vector<DatasetManifest> manifests;
  for (size_t s = 0; s < o.settings.size(); ++s) {
    ASSIGN_OR_RETURN(DatasetManifest m, FinishSetting(static_cast<int>(s)));
    manifests.push_back(std::move(m));
  }
  for (auto& dir : staging_) RETURN_IF_ERROR(dir->Commit());
  return manifests;
}

absl::Status CorpusBuilder::LoadCommittedTokenizers() {
  const std::string dir = staging_[0]->final_path();
  ASSIGN_OR_RETURN(const DatasetManifest m, ReadDatasetManifest(dir));
  auto path = [&](const std::string& name) -> absl::StatusOr<std::string> {
    auto it = m.tokenizers.find(name);
    if (it == m.tokenizers.end()) {
      return absl::NotFoundError(absl::StrCat(dir, ": --append needs its ", name, " tokenizer"));
    }
    return absl::StrCat(dir, "/", it->second.file);
  };
  if (m.tokenizers.count("text")) {
    ASSIGN_OR_RETURN(const std::string p, path("text"));
    ASSIGN_OR_RETURN(tok_.text, LoadTextTokenizer(p));
  } else {
    tok_.text = MakeByteTokenizer();
  }
  // Without a codebook or units the built dataset's images or speech came
  // pre-tokenized, and stay so.
  // The kept tokenizers encode the new documents, so they must be this
  // code's: one of another version would encode them unlike the old ones.
  const std::string remedy =
      "--append keeps a dataset's tokenizers only when this code version trained them; build "
      "the dataset afresh without --append";
  if (Discrete() && m.tokenizers.count("image_vq")) {
    ASSIGN_OR_RETURN(const std::string p, path("image_vq"));
    ASSIGN_OR_RETURN(tok_.vq, ImageVq::Load(p));
    RETURN_IF_ERROR(
        CheckTokenizerKey("image codebook", p, tok_.vq->key(), {"", kImageVqVersion}, remedy));
  }
  if (Speech()) {
    // The tri-modal dataset holds the speech units.
    const int t = static_cast<int>(std::find(o_.settings.begin(), o_.settings.end(), Setting::kTrimodal) -
                                   o_.settings.begin());
    const std::string p = absl::StrCat(staging_[t]->final_path(), "/", kSpeechUnitsFile);
    if (FileExists(p)) {
      ASSIGN_OR_RETURN(tok_.speech, SpeechUnits::Load(p));
      RETURN_IF_ERROR(CheckTokenizerKey("speech units", p, tok_.speech->key(),
                                        {"", kSpeechUnitsVersion}, remedy));
      tok_.mel = tok_.speech->mel_config();
      tok_.analyzer.emplace(tok_.mel);
    }
  }
  return absl::OkStatus();
}

absl::Status CorpusBuilder::WriteSettingTokenizers() {
  for (size_t s = 0; s < o_.settings.size(); ++s) {
    const Setting setting = o_.settings[s];
    Vocab vocab;
    vocab.text_tokens = std::max(kNumByteTokens, tok_.text->vocab_size());
    vocab.image_codes = tok_.vq ? tok_.vq->k() : o_.image_codes;
    vocab.speech_units = o_.speech_units;
    vocab_.push_back(vocab);
    DatasetManifest m;
    m.vocab = vocab;
    RETURN_IF_ERROR(WriteTokenizerFiles(
        dirs_[s], *tok_.text, shape_, setting == Setting::kTransfusion,
        setting != Setting::kTransfusion && tok_.vq ? &*tok_.vq : nullptr,
        setting == Setting::kTrimodal && tok_.speech ? &*tok_.speech : nullptr,
        setting == Setting::kTrimodal, o_.seed, &m));
    std::string key = absl::StrCat(SettingName(setting), "/", o_.seq_len, "/", o_.seed, "/",
                                   shape_.height, "x", shape_.width, "x", shape_.channels,
                                   "/", o_.image_codes, "/", o_.speech_units, "/",
                                   o_.speech_sample_rate, "/", o_.unit_documents);
    for (const auto& [name, entry] : m.tokenizers) absl::StrAppend(&key, "/", name, "=", entry.sha256);
    setting_keys_.push_back(Sha256Hex(key));
    tokenizer_files_.push_back(m.tokenizers);
  }
  return absl::OkStatus();
}

absl::StatusOr<DatasetManifest> CorpusBuilder::FinishSetting(int s) {
  const Setting setting = o_.settings[s];
  DatasetManifest m;
  m.setting = SettingName(setting);
  m.seq_len = o_.seq_len;
  m.patch_dim = setting == Setting::kTransfusion ? shape_.patch_dim() : 0;
  m.vocab = vocab_[s];
  m.num_modalities = setting == Setting::kTrimodal ? 3 : 2;
  m.seed = o_.seed;
  m.splits = splits_[s];
  m.tokenizers = tokenizer_files_[s];
  m.build_options = {
      {"train", o_.train_inputs},
      {"split_rule", SplitRule()},
      {"seq_len", std::to_string(o_.seq_len)},
      {"text_tokenizer", o_.text_tokenizer},
      {"image_shape", absl::StrCat(shape_.height, "x", shape_.width, "x", shape_.channels)},
      {"image_codes", std::to_string(o_.image_codes)},
      {"speech_units", std::to_string(o_.speech_units)},
      {"speech_sample_rate", std::to_string(o_.speech_sample_rate)},
      {"kmeans_iterations", std::to_string(o_.kmeans_iterations)},
      {"image_kmeans_patches", std::to_string(o_.image_kmeans_patches)},
      {"speech_kmeans_frames", std::to_string(o_.speech_kmeans_frames)},
      {"speech_kmeans_recordings", std::to_string(o_.speech_kmeans_recordings)},
      {"unit_documents", std::to_string(o_.unit_documents)},
      {"skip_bad", o_.skip_bad ? "true" : "false"},
  };
  if (!o_.val_inputs.empty()) m.build_options["val"] = o_.val_inputs;
  if (!o_.image_codebook.empty()) m.build_options["image_codebook"] = o_.image_codebook;
  for (int split : {kTrain, kVal}) {
    SplitStats& stats = m.splits[SplitName(split)];
    // The scan's skips (unparsable lines) come first, then the encode's.
    std::vector<std::string> skipped = bad_[split];
    for (std::string& k : stats.skipped) {
      if (skipped.size() < kMaxListedSkips) skipped.push_back(std::move(k));
    }
    stats.skipped = std::move(skipped);
    stats.items["skipped_bad"] += bad_count_[split];
    if (stats.items["skipped_bad"] == 0) stats.items.erase("skipped_bad");
    const std::string where = absl::StrCat(m.setting, " split ", SplitName(split), " (",
                                           SplitRule(), ")");
    if (stats.sequences == 0) {
      return absl::FailedPreconditionError(absl::StrCat(where, " has no documents of this setting"));
    }
    for (int mod = 1; mod < m.num_modalities; ++mod) {
      if (stats.tokens[mod] == 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            where, " has no ", ModalityName(mod), " tokens: setting ", m.setting, " needs ",
            mod == kImage ? "image" : "audio", " segments in both splits"));
      }
    }
    // Files of units that an earlier, different build left in the staging directory.
    std::set<std::string> keep;
    for (const ShardEntry& e : stats.shards) keep.insert(fs::path(e.file).filename().string());
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(absl::StrCat(dirs_[s], "/", SplitName(split)), ec)) {
      const std::string name = e.path().filename().string();
      int64_t index;
      const bool sidecar = absl::EndsWith(name, ".json") &&
                           absl::SimpleAtoi(name.substr(6, 5), &index) && index < units_[split];
      if (!sidecar && !keep.count(name)) fs::remove(e.path(), ec);
    }
  }
  RETURN_IF_ERROR(WriteDatasetManifest(dirs_[s], m));
  LOG(INFO) << m.setting << ": " << m.splits["train"].sequences << " train and "
            << m.splits["val"].sequences << " val sequences";
  return m;
}

}  // namespace

absl::StatusOr<std::vector<DatasetManifest>> BuildCorpusDatasets(const CorpusBuildOptions& options) {
  return CorpusBuilder(options).Build();
}

}  // namespace modamba::data
