// Byte-level BPE speed: trains a tokenizer on a text (tinyshakespeare by
// default) or loads a tokenizer.json, then encodes the text on 1..N threads
// and prints a table. The first pass starts with an empty word cache; the
// warm figure is the median of the passes after it.
//
//   bazel run -c opt //core/data:bpe_bench -- --vocab_sizes=8192,32768
//   bazel run -c opt //core/data:bpe_bench -- --tokenizer=DIR/tokenizer.json
//   bazel run -c opt //core/data:bpe_bench -- --vocab_sizes=8192 --save_dir=DIR --ids_out=IDS
#include <algorithm>
#include <stdlib.h>

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

// Contiguous chunks of `text` cut after newlines, one per thread.
std::vector<std::string_view> Chunks(const std::string& text, int n) {
  std::vector<std::string_view> chunks;
  size_t start = 0;
  for (int k = 1; k <= n; ++k) {
    size_t end = k == n ? text.size() : text.find('\n', text.size() * k / n);
    end = end == std::string::npos ? text.size() : std::min(text.size(), end + 1);
    chunks.emplace_back(text.data() + start, end - start);
    start = end;
  }
  return chunks;
}

// Seconds of one pass of `threads` threads, each encoding its chunk.
double EncodePass(const TextTokenizer& tok, const std::vector<std::string_view>& chunks,
                  int64_t* tokens) {
  std::vector<std::vector<int32_t>> ids(chunks.size());
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (size_t k = 0; k < chunks.size(); ++k) {
    workers.emplace_back([&, k] { Check(tok.Encode(chunks[k], &ids[k])); });
  }
  for (std::thread& w : workers) w.join();
  const double s = Seconds(start);
  *tokens = 0;
  for (const auto& v : ids) *tokens += v.size();
  return s;
}

// Benches the tokenizer.json at `path`, loading a fresh copy per thread count
// so that each first pass starts cold.
void Bench(const std::string& name, double train_s, const std::string& path,
           const std::string& text) {
  std::vector<int32_t> ids;
  const std::unique_ptr<TextTokenizer> check = LoadTextTokenizer(path).value();
  Check(check->Encode(text, &ids));
  CHECK(check->Decode(ids) == text) << "round trip failed";
  for (const std::string& t : absl::GetFlag(FLAGS_threads)) {
    const int threads = std::stoi(t);
    const std::unique_ptr<TextTokenizer> tok = LoadTextTokenizer(path).value();
    const std::vector<std::string_view> chunks = Chunks(text, threads);
    int64_t tokens = 0;
    const double cold = EncodePass(*tok, chunks, &tokens);
    std::vector<double> warm;
    for (int p = 0; p < absl::GetFlag(FLAGS_passes); ++p) {
      warm.push_back(EncodePass(*tok, chunks, &tokens));
    }
    std::sort(warm.begin(), warm.end());
    const double w = warm[warm.size() / 2];
    std::printf("| %s | %d | %s | %d | %lld | %.2f | %.2f | %.2f | %.1f |\n", name.c_str(),
                tok->vocab_size(), train_s > 0 ? absl::StrFormat("%.2f", train_s).c_str() : "-",
                threads, static_cast<long long>(tokens), text.size() / static_cast<double>(tokens),
                tokens / cold / 1e6, tokens / w / 1e6, text.size() / w / 1e6);
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
  std::printf("| tokenizer | vocab | train s | threads | tokens | bytes/token | cold Mtok/s | warm Mtok/s | warm MB/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
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
