#include "core/data/bpe.h"

#include <queue>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace modamba::data {
namespace {

// (left id, right id) in one integer whose order is the pair's lexicographic
// order.
uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
}
int32_t Left(uint64_t key) { return static_cast<int32_t>(key >> 32); }
int32_t Right(uint64_t key) { return static_cast<int32_t>(key & 0xFFFFFFFFu); }

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

// A queue entry: a pair with its count when it was pushed. The top is the
// highest count, then the smallest pair.
struct Candidate {
  int64_t count;
  uint64_t pair;
  bool operator<(const Candidate& o) const {
    return count != o.count ? count < o.count : pair > o.pair;
  }
};

// Replaces every non-overlapping (a, b) in `word`, left to right, by `merged`,
// and reports each change in the word's adjacent pairs to `delta`.
template <typename F>
void MergeWord(int32_t a, int32_t b, int32_t merged, std::vector<int32_t>* word,
               F&& delta) {
  std::vector<int32_t>& s = *word;
  const size_t n = s.size();
  size_t out = 0;
  for (size_t i = 0; i < n;) {
    if (i + 1 < n && s[i] == a && s[i + 1] == b) {
      if (out > 0) {
        delta(PairKey(s[out - 1], a), -1);
        delta(PairKey(s[out - 1], merged), 1);
      }
      if (i + 2 < n) {
        delta(PairKey(b, s[i + 2]), -1);
        delta(PairKey(merged, s[i + 2]), 1);
      }
      delta(PairKey(a, b), -1);
      s[out++] = merged;
      i += 2;
    } else {
      s[out++] = s[i++];
    }
  }
  s.resize(out);
}

}  // namespace

BpeTrainer::BpeTrainer(int32_t vocab_size) : vocab_size_(vocab_size) {}

absl::Status BpeTrainer::Add(std::string_view text) {
  std::vector<std::string_view> pieces;
  RETURN_IF_ERROR(PreTokenize(text, [&](std::string_view p) { pieces.push_back(p); }));
  for (const std::string_view p : pieces) {
    if (p.size() < 2) continue;  // a single byte has no pair to merge
    const auto it = piece_counts_.find(absl::string_view(p.data(), p.size()));
    if (it != piece_counts_.end()) {
      ++it->second;
    } else {
      piece_counts_.emplace(std::string(p), 1);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TextTokenizer>> BpeTrainer::Finish() {
  if (vocab_size_ < 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("BPE vocab_size ", vocab_size_, " is below the 256 bytes"));
  }
  std::vector<std::string> tokens;
  absl::flat_hash_map<std::string, int32_t> ids;
  for (int b = 0; b < 256; ++b) {
    tokens.emplace_back(1, static_cast<char>(b));
    ids[tokens.back()] = b;
  }

  // Every piece as a word of byte symbols; the pairs' counts and, per pair,
  // the words that may hold it (an index can repeat or go stale: merging a
  // word without the pair changes nothing).
  std::vector<Word> words;
  words.reserve(piece_counts_.size());
  absl::flat_hash_map<uint64_t, int64_t> pair_counts;
  absl::flat_hash_map<uint64_t, std::vector<int32_t>> where;
  const auto note = [&](uint64_t pair, int32_t w) {
    std::vector<int32_t>& v = where[pair];
    if (v.empty() || v.back() != w) v.push_back(w);
  };
  for (const auto& [piece, count] : piece_counts_) {
    Word& word = words.emplace_back(Word{{}, count});
    for (const char c : piece) word.symbols.push_back(static_cast<uint8_t>(c));
    const int32_t w = words.size() - 1;
    for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const uint64_t pair = PairKey(word.symbols[i], word.symbols[i + 1]);
      pair_counts[pair] += count;
      note(pair, w);
    }
  }
  piece_counts_.clear();
  std::priority_queue<Candidate> queue;
  for (const auto& [pair, count] : pair_counts) queue.push({count, pair});

  std::vector<std::pair<int32_t, int32_t>> merges;
  absl::flat_hash_map<uint64_t, int64_t> changes;
  while (static_cast<int32_t>(tokens.size()) < vocab_size_ && !queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const auto counted = pair_counts.find(top.pair);
    const int64_t count = counted == pair_counts.end() ? 0 : counted->second;
    if (count != top.count) {  // stale: counts only fall between pushes
      if (count > 0) queue.push({count, top.pair});
      continue;
    }
    const int32_t a = Left(top.pair), b = Right(top.pair);
    // Two different pairs can spell the same token; it keeps its first id.
    std::string spelled = tokens[a] + tokens[b];
    const auto [it, added] = ids.try_emplace(spelled, tokens.size());
    const int32_t merged = it->second;
    if (added) tokens.push_back(std::move(spelled));
    merges.emplace_back(a, b);

    changes.clear();
    std::vector<int32_t> holders = std::move(where[top.pair]);
    where.erase(top.pair);
    for (const int32_t w : holders) {
      Word& word = words[w];
      MergeWord(a, b, merged, &word.symbols, [&](uint64_t pair, int64_t d) {
        changes[pair] += d * word.count;
        if (d > 0) note(pair, w);
      });
    }
    for (const auto& [pair, d] : changes) {
      if (d == 0) continue;
      const int64_t now = pair_counts[pair] += d;
      if (now == 0) pair_counts.erase(pair);
      if (d > 0) queue.push({now, pair});
    }
  }
  return MakeBpeTokenizer(std::move(tokens), std::move(merges));
}

}  // namespace modamba::data
