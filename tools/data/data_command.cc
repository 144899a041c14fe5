#include "tools/data/data_command.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/data/corpus_builder.h"
#include "absl/time/clock.h"
#include "core/data/builder.h"
#include "core/data/corpus_builder.h"
#include "core/data/decode.h"
#include "core/data/manifest.h"
#include "core/data/raw_data.h"
#include "core/data/reader.h"
#include "core/data/verify.h"
#include "core/file_util.h"
#include "tools/cli/artifacts.h"
#include "tools/cli/flags.h"

namespace modamba {
namespace {

using data::DatasetManifest;

constexpr char kUsage[] =
    "usage: modamba data build|export-digits|inspect [flags]   (modamba data build --help lists\n"
    "the flags; with --train=GLOBS it builds a corpus of your own: core/data/README.md)\n";

std::string FormatManifest(const DatasetManifest& m) {
  std::string out = absl::StrFormat(
      "setting %s: seq_len %d, vocab %d (text [0, 256)%s, specials [256, 263), image [%d, %d), "
      "speech [%d, %d)), %d modalities, patch_dim %d, seed %d\n",
      m.setting, m.seq_len, m.vocab.size(),
      m.vocab.text_end() > data::kImageBase
          ? absl::StrFormat(" and [%d, %d)", data::kImageBase, m.vocab.text_end())
          : "",
      m.vocab.image_begin(), m.vocab.image_end(),
      m.vocab.speech_begin(), m.vocab.speech_end(), m.num_modalities, m.patch_dim, m.seed);
  for (const char* name : {"train", "val"}) {
    auto it = m.splits.find(name);
    if (it == m.splits.end()) continue;
    const data::SplitStats& s = it->second;
    int64_t total = s.pad_tokens;
    for (int64_t t : s.tokens) total += t;
    absl::StrAppendFormat(&out, "  %s: %d sequences in %d shards; tokens", name, s.sequences,
                          s.shards.size());
    for (int mod = 0; mod < data::kNumModalities; ++mod) {
      absl::StrAppendFormat(&out, " %s %d (targets %d)", data::ModalityName(mod), s.tokens[mod],
                            s.targets[mod]);
    }
    absl::StrAppendFormat(&out, ", padding %d (%.2f%%)", s.pad_tokens,
                          total > 0 ? 100.0 * s.pad_tokens / total : 0.0);
    if (s.patches > 0) absl::StrAppendFormat(&out, ", continuous patches %d", s.patches);
    out.append("\n    documents:");
    for (int t = 0; t < data::kNumDocTypes; ++t) {
      if (s.documents[t] == 0 && s.dropped_documents[t] == 0) continue;
      absl::StrAppendFormat(&out, " %s %d", data::DocTypeName(static_cast<data::DocType>(t)),
                            s.documents[t]);
      if (s.dropped_documents[t] > 0) {
        absl::StrAppendFormat(&out, " (%d too long, dropped)", s.dropped_documents[t]);
      }
    }
    out.append("\n    raw items:");
    for (const auto& [source, n] : s.items) absl::StrAppendFormat(&out, " %s %d", source, n);
    out.append("\n");
  }
  for (const auto& [name, t] : m.tokenizers) {
    absl::StrAppendFormat(&out, "  tokenizer %s: %s sha256 %s\n", name, t.file, t.sha256);
  }
  for (const auto& [name, value] : m.metrics) {
    absl::StrAppendFormat(&out, "  %s = %.4f\n", name, value);
  }
  return out;
}

// Under `bazel run` the working directory is the runfiles tree; relative
// paths the user typed mean the directory they typed them in.
std::string UserPath(const std::string& path) {
  const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || cwd == nullptr || *cwd == '\0') return path;
  return absl::StrCat(cwd, "/", path);
}

void AddLimitFlags(cli::FlagSet* flags, data::BuildOptions* o) {
  for (int s = 0; s < data::kNumSplits; ++s) {
    const std::string split = data::SplitName(s);
    flags->Int("limit_mnist_" + split, &o->selection.mnist[s],
               "use only the first N MNIST images of " + split + " (-1: all)");
    flags->Int("limit_fsdd_" + split, &o->selection.fsdd[s],
               "use only the first N FSDD recordings of " + split + " (-1: all)");
    flags->Int("limit_cathy_" + split, &o->selection.cathy[s],
               "use only the first N cathy recordings of " + split + " (-1: all)");
    flags->Int("limit_text_" + split, &o->selection.text_bytes[s],
               "use only the first N bytes of " + split + " text (-1: all)");
  }
}

// "A-B" with A <= B into `range`; false otherwise.
bool ParseRange(absl::string_view text, std::pair<int, int>* range) {
  const std::vector<std::string> parts = absl::StrSplit(text, '-');
  std::pair<int, int> r;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &r.first) ||
      !absl::SimpleAtoi(parts[1], &r.second) || r.first > r.second) {
    return false;
  }
  *range = r;
  return true;
}

int Fail(const absl::Status& status) {
  std::cerr << "modamba data: " << status.message() << "\n";
  return 1;
}

// Draws the build's progress: a bar with an ETA on a terminal, a plain line
// every few seconds otherwise.
class ProgressPrinter {
 public:
  ProgressPrinter() : tty_(isatty(STDERR_FILENO) == 1) {}
  // Ends the bar's line.
  void Finish() {
    if (tty_ && drawn_) std::cerr << "\n";
    drawn_ = false;
  }
  void operator()(const data::BuildProgress& p) {
    const bool new_phase = p.phase != phase_;
    if (new_phase && tty_ && drawn_) std::cerr << "\n";
    if (new_phase) {
      phase_ = p.phase;
      last_line_ = absl::ZeroDuration();
    }
    const double seconds = absl::ToDoubleSeconds(p.elapsed);
    const double rate = seconds > 0 ? p.done / seconds : 0;
    std::string line = absl::StrFormat("%-12s", p.phase);
    if (p.total > 0) {
      const double f = std::min(1.0, static_cast<double>(p.done) / p.total);
      const int filled = static_cast<int>(f * 30);
      absl::StrAppendFormat(&line, " [%s%s] %3d%% %d/%d documents", std::string(filled, '#'),
                            std::string(30 - filled, '.'), static_cast<int>(f * 100), p.done,
                            p.total);
      if (rate > 0) {
        const int64_t eta = static_cast<int64_t>((p.total - p.done) / rate);
        absl::StrAppendFormat(&line, ", %.0f/s, ETA %d:%02d", rate, eta / 60, eta % 60);
      }
    } else {
      absl::StrAppendFormat(&line, " %d documents", p.done);
      if (rate > 0) absl::StrAppendFormat(&line, ", %.0f/s", rate);
    }
    if (tty_) {
      std::cerr << "\r" << line << "\x1b[K" << std::flush;
      drawn_ = true;
    } else if (new_phase || p.elapsed - last_line_ >= absl::Seconds(5) ||
               (p.total > 0 && p.done >= p.total)) {
      std::cerr << line << "\n";
      last_line_ = p.elapsed;
    }
  }

 private:
  bool tty_;
  bool drawn_ = false;
  std::string phase_;
  absl::Duration last_line_;
};

void PrintSkipped(const DatasetManifest& m) {
  for (const auto& [name, split] : m.splits) {
    auto it = split.items.find("skipped_bad");
    if (it == split.items.end()) continue;
    std::cout << "  " << name << ": skipped " << it->second << " bad documents (--skip_bad):\n";
    for (const std::string& s : split.skipped) std::cout << "    " << s << "\n";
    if (static_cast<int64_t>(split.skipped.size()) < it->second) {
      std::cout << "    ... (the manifest lists the first " << split.skipped.size() << ")\n";
    }
  }
}

// What a build made: each setting's statistics, skipped inputs, the time and
// one artifact line per setting; the exit code.
int Report(const std::string& out_dir, const absl::StatusOr<std::vector<DatasetManifest>>& manifests,
           absl::Time start) {
  if (!manifests.ok()) return Fail(manifests.status());
  for (const DatasetManifest& m : *manifests) {
    std::cout << out_dir << "/" << m.setting << "\n" << FormatManifest(m);
    PrintSkipped(m);
  }
  std::cout << "built in " << absl::FormatDuration(absl::Now() - start) << "\n";
  for (const DatasetManifest& m : *manifests) {
    cli::PrintArtifact(std::cout, absl::StrCat(out_dir, "/", m.setting),
                       absl::StrCat("the ", m.setting, " dataset (manifest.json, tokenizers, ",
                                    m.splits.size(), " splits of packed shards)"));
  }
  return 0;
}

int BuildCorpus(int argc, char** argv) {
  data::CorpusBuildOptions o;
  std::string settings = "all";
  cli::FlagSet flags(
      "modamba data build", "--train=GLOBS (--val=GLOBS | --val_fraction=F) --out=DIR [flags]",
      "Builds the three settings from a corpus of your own: JSON Lines documents (plain, gzip or "
      "zstd) or pre-tokenized .npy/.safetensors arrays (core/data/README.md).",
      "modamba data build --train='corpus/*.jsonl.zst' --val_fraction=0.01 --out=data");
  flags.String("out", &o.out_dir, "DIR", "where the settings' directories go");
  flags.Require("out");
  flags.String("setting", &settings, "all|chameleon|transfusion|trimodal", "which settings");
  flags.String("train", &o.train_inputs, "GLOBS", "comma-separated training inputs");
  flags.String("val", &o.val_inputs, "GLOBS", "comma-separated held-out inputs");
  flags.Double("val_fraction", &o.val_fraction, "or: this fraction of the documents is held out (seeded)");
  flags.Int("seq_len", &o.seq_len, "tokens per packed sequence");
  flags.Int("seed", &o.seed, "seed of every random choice");
  flags.String("text_tokenizer", &o.text_tokenizer, "bytes|bpe:N|PATH/tokenizer.json",
               "UTF-8 bytes, a byte-level BPE of N ids trained here, or a Hugging Face tokenizer");
  flags.Int("image_height", &o.image_height, "images are resized to this height");
  flags.Int("image_width", &o.image_width, "images are resized to this width");
  flags.Int("image_channels", &o.image_channels, "1 (grey) or 3 (RGB)");
  flags.Int("image_codes", &o.image_codes, "VQ codebook size for image patches");
  flags.String("image_codebook", &o.image_codebook, "FILE.safetensors",
               "your own codebook (centroids [K, 16 x channels]) instead of training one");
  flags.Int("speech_units", &o.speech_units, "k-means units of log-mel speech frames");
  flags.Int("speech_sample_rate", &o.speech_sample_rate, "audio is resampled to this rate");
  flags.Int("kmeans_iterations", &o.kmeans_iterations, "k-means iterations of both tokenizers");
  flags.Int("image_kmeans_patches", &o.image_kmeans_patches, "patches the image codebook trains on");
  flags.Int("speech_kmeans_frames", &o.speech_kmeans_frames, "frames the speech units train on");
  flags.Int("speech_kmeans_recordings", &o.speech_kmeans_recordings,
            "recordings the speech units' frames are drawn from");
  flags.Int("unit_documents", &o.unit_documents, "documents per unit of work (and of resume)");
  flags.Int("threads", &o.threads, "encoding threads (0: every core)");
  flags.Bool("skip_bad", &o.skip_bad, "skip and count bad documents instead of failing");
  flags.Bool("append", &o.append, "add new input files to an existing build");
  if (std::optional<int> exit = flags.Parse(argc, argv, 2, nullptr)) return *exit;
  absl::StatusOr<std::vector<data::Setting>> parsed = data::ParseSettings(settings);
  if (!parsed.ok()) return flags.UsageError(parsed.status().message());
  o.settings = *parsed;
  o.out_dir = UserPath(o.out_dir);
  // Globs are relative to where the user typed them, like --out.
  for (std::string* inputs : {&o.train_inputs, &o.val_inputs}) {
    std::vector<std::string> patterns;
    for (absl::string_view p : absl::StrSplit(*inputs, ',', absl::SkipEmpty())) {
      patterns.push_back(UserPath(std::string(p)));
    }
    *inputs = absl::StrJoin(patterns, ",");
  }
  if (absl::StrContains(o.text_tokenizer, '/')) o.text_tokenizer = UserPath(o.text_tokenizer);
  if (!o.image_codebook.empty()) o.image_codebook = UserPath(o.image_codebook);
  ProgressPrinter printer;
  o.progress = [&](const data::BuildProgress& p) { printer(p); };
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<DatasetManifest>> manifests = data::BuildCorpusDatasets(o);
  printer.Finish();
  return Report(o.out_dir, manifests, start);
}

int ExportDigits(int argc, char** argv) {
  data::BuildOptions o;
  std::string raw;
  cli::FlagSet flags("modamba data export-digits", "--out=DIR [flags]",
                     "Writes the digits world as a corpus of your own would be: train.jsonl, "
                     "val.jsonl, images/ (PNG) and audio/ (FLAC).",
                     "modamba data export-digits --out=digits-corpus --limit_mnist_train=2000");
  flags.String("raw", &raw, "DIR", "raw data ($MODAMBA_DATA_DIR, else ../shared/data)");
  flags.String("out", &o.out_dir, "DIR", "where the corpus goes");
  flags.Require("out");
  flags.Int("seq_len", &o.seq_len, "documents longer than this are dropped, as in a build");
  flags.Int("seed", &o.seed, "seed of every random choice");
  AddLimitFlags(&flags, &o);
  if (std::optional<int> exit = flags.Parse(argc, argv, 2, nullptr)) return *exit;
  o.out_dir = UserPath(o.out_dir);
  absl::StatusOr<std::string> raw_dir = data::FindRawDataDir(UserPath(raw));
  if (!raw_dir.ok()) return Fail(raw_dir.status());
  o.raw_dir = *raw_dir;
  if (absl::Status s = data::ExportDigitsWorld(o); !s.ok()) return Fail(s);
  cli::PrintArtifact(std::cout, o.out_dir,
                     "the digits world as a corpus (train.jsonl, val.jsonl, images/, audio/)");
  std::cout << "build it: modamba data build --train=" << o.out_dir << "/train.jsonl --val="
            << o.out_dir << "/val.jsonl --out=DATA\n";
  return 0;
}

int Build(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    if (absl::StartsWith(argv[i], "--train=")) return BuildCorpus(argc, argv);
  }
  data::BuildOptions o;
  std::string raw, settings = "all";
  cli::FlagSet flags(
      "modamba data build", "--out=DIR [flags]",
      "Trains the tokenizers and packs the raw data into checksummed shards, one directory per "
      "setting (core/data/README.md).",
      "modamba data build --out=data --setting=trimodal --limit_mnist_train=2000");
  flags.String("raw", &raw, "DIR", "raw data ($MODAMBA_DATA_DIR, else ../shared/data)");
  flags.String("out", &o.out_dir, "DIR", "where the settings' directories go");
  flags.Require("out");
  flags.String("setting", &settings, "all|chameleon|transfusion|trimodal", "which settings");
  flags.Int("seq_len", &o.seq_len, "tokens per packed sequence");
  flags.Int("seed", &o.seed, "seed of every random choice");
  flags.Int("image_codes", &o.image_codes, "VQ codebook size for image patches");
  flags.Int("speech_units", &o.speech_units, "k-means units of log-mel speech frames");
  flags.Int("kmeans_iterations", &o.kmeans_iterations, "k-means iterations of both tokenizers");
  flags.Int("image_kmeans_patches", &o.image_kmeans_patches, "patches the image codebook trains on");
  flags.Int("speech_kmeans_frames", &o.speech_kmeans_frames, "frames the speech units train on");
  flags.Int("shard_sequences", &o.shard_sequences, "sequences per shard file");
  AddLimitFlags(&flags, &o);
  flags.String("text_tokenizer", &o.text_tokenizer, "bytes|bpe:N|PATH/tokenizer.json",
               "UTF-8 bytes, a byte-level BPE of N ids trained here, or a Hugging Face tokenizer");
  const auto range_text = [](std::pair<int, int> r) { return absl::StrCat(r.first, "-", r.second); };
  std::string fsdd_val = range_text(o.selection.fsdd_val_takes);
  std::string cathy_val = range_text(o.selection.cathy_val_numbers);
  flags.String("fsdd_val_takes", &fsdd_val, "A-B", "FSDD takes held out (every speaker and digit)");
  flags.String("cathy_val", &cathy_val, "A-B", "cathy utterances (arctic_aNNNN) held out");
  flags.Bool("skip_bad", &o.selection.skip_bad, "skip and list unreadable raw files instead of failing");
  if (std::optional<int> exit = flags.Parse(argc, argv, 2, nullptr)) return *exit;
  if (!ParseRange(fsdd_val, &o.selection.fsdd_val_takes)) {
    return flags.UsageError("--fsdd_val_takes: expected A-B with A <= B, e.g. 0-4");
  }
  if (!ParseRange(cathy_val, &o.selection.cathy_val_numbers)) {
    return flags.UsageError("--cathy_val: expected A-B with A <= B, e.g. 361-400");
  }
  o.out_dir = UserPath(o.out_dir);
  absl::StatusOr<std::vector<data::Setting>> parsed = data::ParseSettings(settings);
  if (!parsed.ok()) return flags.UsageError(parsed.status().message());
  o.settings = *parsed;
  if (absl::StrContains(o.text_tokenizer, '/')) o.text_tokenizer = UserPath(o.text_tokenizer);
  absl::StatusOr<std::string> raw_dir = data::FindRawDataDir(UserPath(raw));
  if (!raw_dir.ok()) return Fail(raw_dir.status());
  o.raw_dir = *raw_dir;

  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<DatasetManifest>> manifests = data::BuildDatasets(o);
  return Report(o.out_dir, manifests, start);
}

int Inspect(int argc, char** argv) {
  std::string dir, split = "val", decode_dir, raw;
  int64_t sample = 0;
  int griffin_lim_iterations = 32;
  bool verify = false;
  cli::FlagSet flags("modamba data inspect", "DIR [flags]",
                     "Prints a setting's manifest and decodes one packed sequence; DIR is one "
                     "setting's directory (OUT/chameleon).",
                     "modamba data inspect data/trimodal --sample=3 --decode_dir=/tmp/seq");
  flags.String("split", &split, "train|val", "which split's shards");
  flags.Int("sample", &sample, "which sequence of the split");
  flags.String("decode_dir", &decode_dir, "DIR", "writes the sequence's images (PNG) and speech (WAV) here");
  flags.Int("griffin_lim_iterations", &griffin_lim_iterations, "phase iterations of the speech decoder");
  flags.Bool("verify", &verify, "checks every shard's checksums and the held-out leak check");
  flags.String("raw", &raw, "DIR", "raw data for --verify ($MODAMBA_DATA_DIR, else ../shared/data)");
  std::vector<std::string> positional;
  if (std::optional<int> exit = flags.Parse(argc, argv, 2, &positional)) return *exit;
  if (positional.size() != 1) return flags.UsageError("inspect needs exactly one dataset directory");
  dir = positional[0];
  dir = UserPath(dir);
  decode_dir = UserPath(decode_dir);
  absl::StatusOr<DatasetManifest> manifest = data::ReadDatasetManifest(dir);
  if (!manifest.ok()) return Fail(manifest.status());
  std::cout << dir << "\n" << FormatManifest(*manifest);

  data::ReaderOptions options;
  options.shuffle = false;
  absl::StatusOr<std::unique_ptr<data::ShardReader>> reader =
      data::ShardReader::Open(dir, split, 0, 1, options);
  if (!reader.ok()) return Fail(reader.status());
  absl::StatusOr<data::SequenceDecoder> decoder = data::SequenceDecoder::Open(dir);
  if (!decoder.ok()) return Fail(decoder.status());
  data::PackedBatch batch;
  if (absl::Status s = (*reader)->ReadSequence(sample, &batch); !s.ok()) return Fail(s);
  if (!decode_dir.empty()) {
    if (absl::Status s = MakeDirs(decode_dir); !s.ok()) return Fail(s);
  }
  absl::StatusOr<std::string> text = decoder->Decode(
      batch, 0, decode_dir, absl::StrCat(split, "_", sample), griffin_lim_iterations);
  if (!text.ok()) return Fail(text.status());
  std::cout << "sequence " << sample << " of " << split << ":\n" << *text;

  if (verify) {
    if (absl::Status s = data::VerifyShards(dir); !s.ok()) return Fail(s);
    std::cout << "shards: SHA-256 and every sequence checksum verified\n";
    absl::StatusOr<std::string> raw_dir = data::FindRawDataDir(UserPath(raw));
    if (!raw_dir.ok()) return Fail(raw_dir.status());
    absl::StatusOr<data::LeakReport> leaks =
        data::CheckHeldOutLeaks(dir, *raw_dir, data::RawSelection());
    if (!leaks.ok()) return Fail(leaks.status());
    std::cout << absl::StrFormat(
        "held-out check: %d held-out contents, %d train spans checked: %d leaks, %d with "
        "content shared by both splits' raw items, %d matching no raw item\n",
        leaks->held_out_items, leaks->train_spans, leaks->leaks, leaks->shared,
        leaks->unmatched);
    for (const std::string& e : leaks->examples) std::cout << "  leak: " << e << "\n";
    if (leaks->leaks > 0) {
      return Fail(absl::DataLossError(absl::StrCat(leaks->leaks, " held-out items in train shards")));
    }
  }
  return 0;
}

}  // namespace

int RunDataCommand(int argc, char** argv) {
  const std::string sub = argc >= 2 ? argv[1] : "";
  if (sub == "build") return Build(argc, argv);
  if (sub == "inspect") return Inspect(argc, argv);
  if (sub == "export-digits") return ExportDigits(argc, argv);
  if (sub == "help" || sub == "--help" || sub == "-h") {
    std::cout << kUsage;
    return 0;
  }
  std::cerr << "modamba data: "
            << (sub.empty() ? "missing subcommand (build, export-digits or inspect)"
                            : cli::UnknownName("subcommand", sub, {"build", "export-digits", "inspect"})
                                  .message())
            << "\n" << kUsage;
  return 2;
}

}  // namespace modamba
