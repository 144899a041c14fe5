#include "tools/data/data_command.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/data/builder.h"
#include "core/data/corpus_builder.h"
#include "core/data/decode.h"
#include "core/data/manifest.h"
#include "core/data/raw_data.h"
#include "core/data/reader.h"
#include "core/data/verify.h"
#include "core/file_util.h"

namespace modamba {
namespace {

using data::DatasetManifest;

constexpr char kUsage[] =
    "usage:\n"
    "  modamba data build [--raw=DIR] --out=DIR [--setting=all|chameleon|transfusion|trimodal]\n"
    "      [--seq_len=1024] [--seed=1234] [--image_codes=512] [--speech_units=256]\n"
    "      [--kmeans_iterations=25] [--image_kmeans_patches=200000]\n"
    "      [--speech_kmeans_frames=100000] [--shard_sequences=1024]\n"
    "      [--limit_{mnist,fsdd,cathy,text}_{train,val}=N]   (slices, for quick trials)\n"
    "      [--fsdd_val_takes=0-4] [--cathy_val=361-400] [--skip_bad]\n"
    "      [--text_tokenizer=bytes|bpe:N|PATH/tokenizer.json]\n"
    "    the digits world from the raw data; or a corpus of your own (core/data/README.md):\n"
    "  modamba data build --train=GLOBS (--val=GLOBS | --val_fraction=F) --out=DIR\n"
    "      [--setting=...] [--seq_len=1024] [--seed=1234] [--text_tokenizer=bytes|bpe:N|PATH]\n"
    "      [--image_height=28] [--image_width=28] [--image_channels=1] [--image_codes=512]\n"
    "      [--image_codebook=FILE.safetensors]\n"
    "      [--speech_units=256] [--speech_sample_rate=8000] [--kmeans_iterations=25]\n"
    "      [--image_kmeans_patches=200000] [--speech_kmeans_frames=100000]\n"
    "      [--speech_kmeans_recordings=4000] [--unit_documents=8192] [--threads=0]\n"
    "      [--skip_bad] [--append]\n"
    "  modamba data export-digits --out=DIR [--raw=DIR] [--seq_len=1024] [--seed=1234]\n"
    "      [--limit_...]   the digits world as JSONL + PNG + FLAC, a corpus to build from\n"
    "  modamba data inspect DIR [--split=val] [--sample=0] [--decode_dir=DIR]\n"
    "      [--griffin_lim_iterations=32] [--verify [--raw=DIR]]\n"
    "DIR of inspect is one setting's directory, e.g. OUT/chameleon. The raw directory\n"
    "defaults to $MODAMBA_DATA_DIR, else ../shared/data beside the repository.\n";

// --name=value flags (a bare --name sets a boolean) and positional arguments.
class Flags {
 public:
  explicit Flags(std::string command) : command_(std::move(command)) {}

  void String(const std::string& name, std::string* target) {
    setters_[name] = [target](absl::string_view v) {
      *target = std::string(v);
      return true;
    };
  }
  template <typename T>
  void Number(const std::string& name, T* target) {
    setters_[name] = [target](absl::string_view v) {
      if constexpr (std::is_floating_point_v<T>) {
        return absl::SimpleAtod(v, target);
      } else {
        return absl::SimpleAtoi(v, target);
      }
    };
  }
  // "A-B", A <= B.
  void Range(const std::string& name, std::pair<int, int>* target) {
    setters_[name] = [target](absl::string_view v) {
      const std::vector<std::string> parts = absl::StrSplit(v, '-');
      std::pair<int, int> r;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &r.first) ||
          !absl::SimpleAtoi(parts[1], &r.second) || r.first > r.second) {
        return false;
      }
      *target = r;
      return true;
    };
  }
  void Bool(const std::string& name, bool* target) {
    bools_.insert({name, target});
    setters_[name] = [target](absl::string_view v) { return absl::SimpleAtob(v, target); };
  }

  absl::Status Parse(int argc, char** argv, int first, std::vector<std::string>* positional) {
    for (int i = first; i < argc; ++i) {
      absl::string_view arg = argv[i];
      if (!absl::ConsumePrefix(&arg, "--")) {
        positional->emplace_back(arg);
        continue;
      }
      const size_t eq = arg.find('=');
      const std::string name(arg.substr(0, eq));
      auto it = setters_.find(name);
      if (it == setters_.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown flag --", name, " for 'data ", command_, "'"));
      }
      if (eq == absl::string_view::npos) {
        auto b = bools_.find(name);
        if (b == bools_.end()) {
          return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value (--", name, "=...)"));
        }
        *b->second = true;
        continue;
      }
      if (!it->second(arg.substr(eq + 1))) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad value '", arg.substr(eq + 1), "' for flag --", name));
      }
    }
    return absl::OkStatus();
  }

 private:
  std::string command_;
  std::map<std::string, std::function<bool(absl::string_view)>> setters_;
  std::map<std::string, bool*> bools_;
};

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

void AddLimitFlags(Flags* flags, data::BuildOptions* o) {
  for (int s = 0; s < data::kNumSplits; ++s) {
    const std::string split = data::SplitName(s);
    flags->Number("limit_mnist_" + split, &o->selection.mnist[s]);
    flags->Number("limit_fsdd_" + split, &o->selection.fsdd[s]);
    flags->Number("limit_cathy_" + split, &o->selection.cathy[s]);
    flags->Number("limit_text_" + split, &o->selection.text_bytes[s]);
  }
}

int Fail(const absl::Status& status) {
  std::cerr << "modamba data: " << status.message() << "\n";
  return 1;
}

int Usage(const absl::Status& status) {
  std::cerr << "modamba data: " << status.message() << "\n" << kUsage;
  return 2;
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

int BuildCorpus(int argc, char** argv) {
  data::CorpusBuildOptions o;
  std::string settings = "all";
  Flags flags("build");
  flags.String("out", &o.out_dir);
  flags.String("setting", &settings);
  flags.String("train", &o.train_inputs);
  flags.String("val", &o.val_inputs);
  flags.Number("val_fraction", &o.val_fraction);
  flags.Number("seq_len", &o.seq_len);
  flags.Number("seed", &o.seed);
  flags.String("text_tokenizer", &o.text_tokenizer);
  flags.Number("image_height", &o.image_height);
  flags.Number("image_width", &o.image_width);
  flags.Number("image_channels", &o.image_channels);
  flags.Number("image_codes", &o.image_codes);
  flags.String("image_codebook", &o.image_codebook);
  flags.Number("speech_units", &o.speech_units);
  flags.Number("speech_sample_rate", &o.speech_sample_rate);
  flags.Number("kmeans_iterations", &o.kmeans_iterations);
  flags.Number("image_kmeans_patches", &o.image_kmeans_patches);
  flags.Number("speech_kmeans_frames", &o.speech_kmeans_frames);
  flags.Number("speech_kmeans_recordings", &o.speech_kmeans_recordings);
  flags.Number("unit_documents", &o.unit_documents);
  flags.Number("threads", &o.threads);
  flags.Bool("skip_bad", &o.skip_bad);
  flags.Bool("append", &o.append);
  std::vector<std::string> positional;
  if (absl::Status s = flags.Parse(argc, argv, 2, &positional); !s.ok()) return Usage(s);
  if (!positional.empty()) {
    return Usage(absl::InvalidArgumentError(absl::StrCat("unexpected argument '", positional[0], "'")));
  }
  if (o.out_dir.empty()) return Usage(absl::InvalidArgumentError("--out=DIR is required"));
  absl::StatusOr<std::vector<data::Setting>> parsed = data::ParseSettings(settings);
  if (!parsed.ok()) return Usage(parsed.status());
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
  if (!manifests.ok()) return Fail(manifests.status());
  for (const DatasetManifest& m : *manifests) {
    std::cout << o.out_dir << "/" << m.setting << "\n" << FormatManifest(m);
    PrintSkipped(m);
  }
  std::cout << "built in " << absl::FormatDuration(absl::Now() - start) << "\n";
  return 0;
}

int ExportDigits(int argc, char** argv) {
  data::BuildOptions o;
  std::string raw;
  Flags flags("export-digits");
  flags.String("raw", &raw);
  flags.String("out", &o.out_dir);
  flags.Number("seq_len", &o.seq_len);
  flags.Number("seed", &o.seed);
  AddLimitFlags(&flags, &o);
  std::vector<std::string> positional;
  if (absl::Status s = flags.Parse(argc, argv, 2, &positional); !s.ok()) return Usage(s);
  if (o.out_dir.empty() || !positional.empty()) {
    return Usage(absl::InvalidArgumentError("export-digits needs --out=DIR and no arguments"));
  }
  o.out_dir = UserPath(o.out_dir);
  absl::StatusOr<std::string> raw_dir = data::FindRawDataDir(UserPath(raw));
  if (!raw_dir.ok()) return Fail(raw_dir.status());
  o.raw_dir = *raw_dir;
  if (absl::Status s = data::ExportDigitsWorld(o); !s.ok()) return Fail(s);
  std::cout << o.out_dir << ": the digits world as a corpus (train.jsonl, val.jsonl, images/, audio/)\n"
            << "build it: modamba data build --train=" << o.out_dir << "/train.jsonl --val="
            << o.out_dir << "/val.jsonl --out=DATA\n";
  return 0;
}

int Build(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    if (absl::StartsWith(argv[i], "--train=")) return BuildCorpus(argc, argv);
  }
  data::BuildOptions o;
  std::string raw, settings = "all";
  Flags flags("build");
  flags.String("raw", &raw);
  flags.String("out", &o.out_dir);
  flags.String("setting", &settings);
  flags.Number("seq_len", &o.seq_len);
  flags.Number("seed", &o.seed);
  flags.Number("image_codes", &o.image_codes);
  flags.Number("speech_units", &o.speech_units);
  flags.Number("kmeans_iterations", &o.kmeans_iterations);
  flags.Number("image_kmeans_patches", &o.image_kmeans_patches);
  flags.Number("speech_kmeans_frames", &o.speech_kmeans_frames);
  flags.Number("shard_sequences", &o.shard_sequences);
  AddLimitFlags(&flags, &o);
  flags.String("text_tokenizer", &o.text_tokenizer);
  flags.Range("fsdd_val_takes", &o.selection.fsdd_val_takes);
  flags.Range("cathy_val", &o.selection.cathy_val_numbers);
  flags.Bool("skip_bad", &o.selection.skip_bad);
  std::vector<std::string> positional;
  if (absl::Status s = flags.Parse(argc, argv, 2, &positional); !s.ok()) return Usage(s);
  if (!positional.empty()) {
    return Usage(absl::InvalidArgumentError(absl::StrCat("unexpected argument '", positional[0], "'")));
  }
  if (o.out_dir.empty()) return Usage(absl::InvalidArgumentError("--out=DIR is required"));
  o.out_dir = UserPath(o.out_dir);
  absl::StatusOr<std::vector<data::Setting>> parsed = data::ParseSettings(settings);
  if (!parsed.ok()) return Usage(parsed.status());
  o.settings = *parsed;
  if (absl::StrContains(o.text_tokenizer, '/')) o.text_tokenizer = UserPath(o.text_tokenizer);
  absl::StatusOr<std::string> raw_dir = data::FindRawDataDir(UserPath(raw));
  if (!raw_dir.ok()) return Fail(raw_dir.status());
  o.raw_dir = *raw_dir;

  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<DatasetManifest>> manifests = data::BuildDatasets(o);
  if (!manifests.ok()) return Fail(manifests.status());
  for (const DatasetManifest& m : *manifests) {
    std::cout << o.out_dir << "/" << m.setting << "\n" << FormatManifest(m);
    PrintSkipped(m);
  }
  std::cout << "built in " << absl::FormatDuration(absl::Now() - start) << "\n";
  return 0;
}

int Inspect(int argc, char** argv) {
  std::string dir, split = "val", decode_dir, raw;
  int64_t sample = 0;
  int griffin_lim_iterations = 32;
  bool verify = false;
  Flags flags("inspect");
  flags.String("dir", &dir);
  flags.String("split", &split);
  flags.Number("sample", &sample);
  flags.String("decode_dir", &decode_dir);
  flags.Number("griffin_lim_iterations", &griffin_lim_iterations);
  flags.Bool("verify", &verify);
  flags.String("raw", &raw);
  std::vector<std::string> positional;
  if (absl::Status s = flags.Parse(argc, argv, 2, &positional); !s.ok()) return Usage(s);
  if (dir.empty() && positional.size() == 1) dir = positional[0];
  if (dir.empty() || positional.size() > 1) {
    return Usage(absl::InvalidArgumentError("inspect needs exactly one dataset directory"));
  }
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
  return Usage(absl::InvalidArgumentError(
      sub.empty() ? "missing subcommand" : absl::StrCat("unknown subcommand '", sub, "'")));
}

}  // namespace modamba
