// Byte-level BPE speed: trains a tokenizer on a text (tinyshakespeare by
// default) or loads a tokenizer.json, then encodes the text on 1..N threads
// and prints a table. The first pass starts with an empty word cache; the
// warm figures are the median of the passes after it (per wall second, and
// per CPU second of the encoding threads).
//
//   bazel run -c opt //core/data:bpe_bench -- --vocab_sizes=8192,32768
//   bazel run -c opt //core/data:bpe_bench -- --tokenizer=DIR/tokenizer.json
//   bazel run -c opt //core/data:bpe_bench -- --vocab_sizes=8192 --save_dir=DIR --ids_out=IDS
#include <algorithm>
#include <stdlib.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/data/bpe.h"
#include "core/data/raw_data.h"
#include "core/data/text_tokenizer.h"
#include "core/file_util.h"
#include "glog/logging.h"

ABSL_FLAG(std::string, text, "",
          "UTF-8 text to train on and encode (default: tinyshakespeare in the raw data)");
ABSL_FLAG(std::vector<std::string>, vocab_sizes, std::vector<std::string>({"8192"}),
          "vocabularies to train");
ABSL_FLAG(std::string, tokenizer, "", "bench this tokenizer.json instead of training");
ABSL_FLAG(std::string, save_dir, "", "write the (last) trained tokenizer.json here");
ABSL_FLAG(std::string, ids_out, "", "write the ids of the whole text here, space-separated");
ABSL_FLAG(int, passes, 5, "encoding passes per thread count");
ABSL_FLAG(std::vector<std::string>, threads, std::vector<std::string>({"1", "2"}),
          "thread counts");

namespace modamba::data {
namespace {

void Check(const absl::Status& status) { CHECK(status.ok()) << status; }

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

double ThreadCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

struct Pass {
  double wall = 0;  // of the slowest thread
  double cpu = 0;   // of all threads
  bool operator<(const Pass& o) const { return wall < o.wall; }
};

// Documents of consecutive lines, each closed once it reaches 4096 bytes, as
// tools/data/bpe_reference.mjs cuts them; dealt out to `n` threads in
// contiguous runs.
std::vector<std::vector<std::string_view>> Documents(const std::string& text, int n) {
  std::vector<std::string_view> docs;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start + 4095);
    end = end == std::string::npos ? text.size() : end + 1;
    docs.emplace_back(text.data() + start, end - start);
    start = end;
  }
  std::vector<std::vector<std::string_view>> out(n);
  for (size_t d = 0; d < docs.size(); ++d) out[d * n / docs.size()].push_back(docs[d]);
  return out;
}

// One thread per run of documents encodes them `passes` times (each thread
// keeps its word cache across passes, as a builder's worker does).
std::vector<Pass> EncodePasses(const TextTokenizer& tok,
                               const std::vector<std::vector<std::string_view>>& chunks,
                               int passes, int64_t* tokens) {
  std::vector<std::vector<Pass>> times(chunks.size(), std::vector<Pass>(passes));
  std::vector<int64_t> counts(chunks.size());
  std::vector<std::thread> workers;
  for (size_t k = 0; k < chunks.size(); ++k) {
    workers.emplace_back([&, k] {
      for (int p = 0; p < passes; ++p) {
        std::vector<int32_t> ids;
        const double cpu = ThreadCpuSeconds();
        const auto start = std::chrono::steady_clock::now();
        for (const std::string_view doc : chunks[k]) Check(tok.Encode(doc, &ids));
        times[k][p] = {Seconds(start), ThreadCpuSeconds() - cpu};
        counts[k] = ids.size();
      }
    });
  }
  for (std::thread& w : workers) w.join();
  std::vector<Pass> out(passes);
  for (int p = 0; p < passes; ++p) {
    for (const auto& t : times) {
      out[p].wall = std::max(out[p].wall, t[p].wall);
      out[p].cpu += t[p].cpu;
    }
  }
  *tokens = 0;
  for (const int64_t c : counts) *tokens += c;
  return out;
}

// Benches the tokenizer.json at `path`, loading a fresh copy per thread count
// so that each first pass starts cold.
void Bench(const std::string& name, double train_s, const std::string& path,
           const std::string& text) {
  std::vector<int32_t> ids;
  const std::unique_ptr<TextTokenizer> check = LoadTextTokenizer(path).value();
  Check(check->Encode(text, &ids));
  // Only add_prefix_space (in loaded files) adds text.
  if (check->Decode(ids) != text) std::printf("(%s: Decode(Encode(text)) != text)\n", path.c_str());
  for (const std::string& t : absl::GetFlag(FLAGS_threads)) {
    const int threads = std::stoi(t);
    const std::unique_ptr<TextTokenizer> tok = LoadTextTokenizer(path).value();
    const std::vector<std::vector<std::string_view>> chunks = Documents(text, threads);
    int64_t tokens = 0;
    std::vector<Pass> passes = EncodePasses(*tok, chunks, absl::GetFlag(FLAGS_passes) + 1, &tokens);
    const Pass cold = passes[0];
    std::vector<Pass> warm(passes.begin() + 1, passes.end());
    std::sort(warm.begin(), warm.end());
    const Pass w = warm[warm.size() / 2];
    std::printf("| %s | %d | %s | %d | %lld | %.2f | %.2f | %.2f | %.1f | %.2f |\n", name.c_str(),
                tok->vocab_size(), train_s > 0 ? absl::StrFormat("%.2f", train_s).c_str() : "-",
                threads, static_cast<long long>(tokens), text.size() / static_cast<double>(tokens),
                tokens / cold.wall / 1e6, tokens / w.wall / 1e6, text.size() / w.wall / 1e6,
                tokens / w.cpu / 1e6);
  }
  if (!absl::GetFlag(FLAGS_ids_out).empty()) {
    Check(WriteFileAtomic(absl::GetFlag(FLAGS_ids_out), absl::StrJoin(ids, " ") + "\n"));
  }
}

int Main() {
  std::string path = absl::GetFlag(FLAGS_text);
  if (path.empty()) path = FindRawDataDir("").value() + "/tinyshakespeare/input.txt";
  const std::string text = ReadFile(path).value();
  std::printf("text: %s, %zu bytes; encode: Mtokens/s of the first (cold cache) and the median warm pass\n\n",
              path.c_str(), text.size());
  const double cpu = ThreadCpuSeconds();
  int64_t pieces = 0;
  Check(PreTokenize(text, [&](std::string_view) { ++pieces; }));
  std::printf("pre-tokenizer alone: %lld pieces, %.1f MB/CPU-s\n\n", static_cast<long long>(pieces),
              text.size() / (ThreadCpuSeconds() - cpu) / 1e6);
  std::printf("| tokenizer | vocab | train s | threads | tokens | bytes/token | cold Mtok/s | warm Mtok/s "
              "| warm MB/s | warm Mtok/CPU-s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  const std::string load = absl::GetFlag(FLAGS_tokenizer);
  if (!load.empty()) {
    Bench("loaded", 0, load, text);
    return 0;
  }
  std::string dir = absl::GetFlag(FLAGS_save_dir);
  if (dir.empty()) {
    char tmpl[] = "/tmp/bpe_bench_XXXXXX";
    CHECK(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
  }
  Check(MakeDirs(dir));
  for (const std::string& v : absl::GetFlag(FLAGS_vocab_sizes)) {
    const auto start = std::chrono::steady_clock::now();
    BpeTrainer trainer(std::stoi(v));
    Check(trainer.Add(text));
    std::unique_ptr<TextTokenizer> tok = trainer.Finish().value();
    const double train_s = Seconds(start);
    Check(tok->Save(dir));
    Bench("trained here", train_s, dir + "/tokenizer.json", text);
  }
  return 0;
}

}  // namespace
}  // namespace modamba::data

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return modamba::data::Main();
}
