#include "tools/data/data_command.h"

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "core/data/builder.h"
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
    "usage: modamba data build|inspect [flags]   (modamba data build --help lists the flags)\n";

std::string FormatManifest(const DatasetManifest& m) {
  std::string out = absl::StrFormat(
      "setting %s: seq_len %d, vocab %d (text [0, 256), specials [256, 263), image [%d, %d), "
      "speech [%d, %d)), %d modalities, patch_dim %d, seed %d\n",
      m.setting, m.seq_len, m.vocab.size(), m.vocab.image_begin(), m.vocab.image_end(),
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

int Fail(const absl::Status& status) {
  std::cerr << "modamba data: " << status.message() << "\n";
  return 1;
}

int Build(int argc, char** argv) {
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
  for (int s = 0; s < data::kNumSplits; ++s) {
    const std::string split = data::SplitName(s);
    flags.Int("limit_mnist_" + split, &o.selection.mnist[s],
              "use only the first N MNIST images of " + split + " (-1: all)");
    flags.Int("limit_fsdd_" + split, &o.selection.fsdd[s],
              "use only the first N FSDD recordings of " + split + " (-1: all)");
    flags.Int("limit_cathy_" + split, &o.selection.cathy[s],
              "use only the first N cathy recordings of " + split + " (-1: all)");
    flags.Int("limit_text_" + split, &o.selection.text_bytes[s],
              "use only the first N bytes of " + split + " text (-1: all)");
  }
  if (std::optional<int> exit = flags.Parse(argc, argv, 2, nullptr)) return *exit;
  o.out_dir = UserPath(o.out_dir);
  absl::StatusOr<std::vector<data::Setting>> parsed = data::ParseSettings(settings);
  if (!parsed.ok()) return flags.UsageError(parsed.status().message());
  o.settings = *parsed;
  absl::StatusOr<std::string> raw_dir = data::FindRawDataDir(UserPath(raw));
  if (!raw_dir.ok()) return Fail(raw_dir.status());
  o.raw_dir = *raw_dir;

  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<DatasetManifest>> manifests = data::BuildDatasets(o);
  if (!manifests.ok()) return Fail(manifests.status());
  for (const DatasetManifest& m : *manifests) {
    std::cout << o.out_dir << "/" << m.setting << "\n" << FormatManifest(m);
  }
  std::cout << "built in " << absl::FormatDuration(absl::Now() - start) << "\n";
  for (const DatasetManifest& m : *manifests) {
    cli::PrintArtifact(std::cout, absl::StrCat(o.out_dir, "/", m.setting),
                       absl::StrCat("the ", m.setting, " dataset (manifest.json, tokenizers, ",
                                    m.splits.size(), " splits of packed shards)"));
  }
  return 0;
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
  if (sub == "help" || sub == "--help" || sub == "-h") {
    std::cout << kUsage;
    return 0;
  }
  std::cerr << "modamba data: "
            << (sub.empty() ? "missing subcommand (build or inspect)"
                            : cli::UnknownName("subcommand", sub, {"build", "inspect"}).message())
            << "\n" << kUsage;
  return 2;
}

}  // namespace modamba
