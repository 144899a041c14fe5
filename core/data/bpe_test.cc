#include "core/data/bpe.h"

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/data/test_util.h"
#include "core/data/text_tokenizer.h"
#include "core/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace modamba::data {
namespace {

constexpr char kTrainText[] = "core/data/testdata/bpe_train.txt";
constexpr char kTestText[] = "core/data/testdata/bpe_test.txt";
// Hugging Face tokenizers 0.23.2 and @huggingface/tokenizers 0.2.0 loaded the
// tokenizer.json that training on bpe_train.txt at vocab 400 saves (its sha256
// is in the file) and both gave these ids for bpe_test.txt
// (tools/data/bpe_reference.mjs encode).
constexpr char kTrainedIds[] = "core/data/testdata/trained_ids.json";

std::unique_ptr<TextTokenizer> Train(const std::vector<std::string>& docs, int32_t vocab_size) {
  BpeTrainer trainer(vocab_size);
  for (const std::string& d : docs) EXPECT_TRUE(trainer.Add(d).ok());
  auto tok = trainer.Finish();
  EXPECT_TRUE(tok.ok()) << tok.status();
  return std::move(tok).value();
}

std::vector<std::string> TokenStrings(const TextTokenizer& tok) {
  std::vector<std::string> out;
  for (int32_t id = 0; id < tok.vocab_size(); ++id) out.push_back(tok.Decode({id}));
  return out;
}

// The definition the incremental trainer must match: recount every pair of
// every piece before each merge.
std::vector<std::string> RecountingTrainer(const std::vector<std::string>& docs, int32_t vocab_size) {
  std::map<std::string, int64_t> counts;
  for (const std::string& d : docs) {
    EXPECT_TRUE(PreTokenize(d, [&](std::string_view p) { ++counts[std::string(p)]; }).ok());
  }
  std::vector<std::pair<std::vector<int32_t>, int64_t>> words;
  for (const auto& [piece, count] : counts) {
    std::vector<int32_t> symbols;
    for (const char c : piece) symbols.push_back(static_cast<uint8_t>(c));
    words.emplace_back(symbols, count);
  }
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.emplace_back(1, static_cast<char>(b));
  while (static_cast<int32_t>(tokens.size()) < vocab_size) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pairs;
    for (const auto& [s, count] : words) {
      for (size_t i = 0; i + 1 < s.size(); ++i) pairs[{s[i], s[i + 1]}] += count;
    }
    if (pairs.empty()) break;
    auto best = pairs.begin();  // ascending pairs: the first of the highest count
    for (auto it = pairs.begin(); it != pairs.end(); ++it) {
      if (it->second > best->second) best = it;
    }
    const auto [a, b] = best->first;
    const std::string spelled = tokens[a] + tokens[b];
    const auto existing = std::find(tokens.begin(), tokens.end(), spelled);
    const int32_t merged = existing - tokens.begin();
    if (existing == tokens.end()) tokens.push_back(spelled);
    for (auto& [s, count] : words) {
      std::vector<int32_t> out;
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          out.push_back(merged);
          i += 2;
        } else {
          out.push_back(s[i++]);
        }
      }
      s = out;
    }
  }
  return tokens;
}

TEST(BpeTrainerTest, TrainedTokenizerGivesTheReferenceIds) {
  const auto tok = Train({ReadFile(kTrainText).value()}, 400);
  ASSERT_EQ(tok->vocab_size(), 400);
  const nlohmann::json fixture = nlohmann::json::parse(ReadFile(kTrainedIds).value());
  // The reference ran on exactly this tokenizer.json ...
  EXPECT_EQ(tok->Describe()["sha256"], fixture["tokenizer_sha256"]);
  // ... and it loads back from the saved file with the same ids.
  const std::string dir = testing::ScratchDir("trained");
  ASSERT_TRUE(tok->Save(dir).ok());
  const auto loaded = LoadTextTokenizer(dir + "/tokenizer.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const std::string text = ReadFile(kTestText).value();
  for (const TextTokenizer* t : {tok.get(), loaded->get()}) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(t->Encode(text, &ids).ok());
    EXPECT_EQ(ids, fixture["ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(t->Decode(ids), text);
  }
}

TEST(BpeTrainerTest, MatchesFullRecounting) {
  std::vector<std::string> docs;
  const std::string train = ReadFile(kTrainText).value();
  for (size_t start = 0; start < train.size();) {  // one document per line
    const size_t end = std::min(train.find('\n', start), train.size() - 1) + 1;
    docs.push_back(train.substr(start, end - start));
    start = end;
  }
  docs.push_back(std::string(9, 'a') + " aaa aaa aaaa " + std::string(50, '1'));
  const auto tok = Train(docs, 700);
  EXPECT_EQ(TokenStrings(*tok), RecountingTrainer(docs, 700));
}

TEST(BpeTrainerTest, TiesGoToTheSmallerPairAndTrainingStopsWithoutPairs) {
  // Pieces "ab" and " cd": every pair occurs once, so the smallest goes
  // first: (' ', c), then (a, b) before (" c", d).
  const std::vector<std::string> tokens = TokenStrings(*Train({"ab cd"}, 1000));
  ASSERT_EQ(tokens.size(), 259u);
  EXPECT_THAT(std::vector<std::string>(tokens.begin() + 256, tokens.end()),
              ::testing::ElementsAre(" c", "ab", " cd"));
  EXPECT_EQ(tokens[10], "\n");  // byte b is id b
}

TEST(BpeTrainerTest, DeterministicAndDocumentOrderOnlyMattersThroughCounts) {
  const std::string text = ReadFile(kTrainText).value();
  const std::string dir1 = testing::ScratchDir("a"), dir2 = testing::ScratchDir("b");
  ASSERT_TRUE(Train({text, "more text"}, 500)->Save(dir1).ok());
  ASSERT_TRUE(Train({"more text", text}, 500)->Save(dir2).ok());
  EXPECT_EQ(ReadFile(dir1 + "/tokenizer.json").value(), ReadFile(dir2 + "/tokenizer.json").value());
}

TEST(BpeTrainerTest, RoundTripsRandomUtf8) {
  const auto tok = Train({ReadFile(kTrainText).value()}, 600);
  std::mt19937 rng(7);
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x17F}, {0x370, 0x3FF}, {0x400, 0x4FF},
      {0x2000, 0x206F}, {0x3000, 0x30FF}, {0x4E00, 0x4E80}, {0xAC00, 0xAC80}, {0x1F300, 0x1F64F}};
  for (int round = 0; round < 200; ++round) {
    std::string s;
    const int n = rng() % 60;
    for (int k = 0; k < n; ++k) {
      const auto [lo, hi] = ranges[rng() % ranges.size()];
      const char32_t c = lo + rng() % (hi - lo + 1);
      if (c < 0x80) {
        s += static_cast<char>(c);
      } else if (c < 0x800) {
        s += {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
      } else if (c < 0x10000) {
        s += {static_cast<char>(0xE0 | (c >> 12)), static_cast<char>(0x80 | ((c >> 6) & 0x3F)),
              static_cast<char>(0x80 | (c & 0x3F))};
      } else {
        s += {static_cast<char>(0xF0 | (c >> 18)), static_cast<char>(0x80 | ((c >> 12) & 0x3F)),
              static_cast<char>(0x80 | ((c >> 6) & 0x3F)), static_cast<char>(0x80 | (c & 0x3F))};
      }
    }
    std::vector<int32_t> ids;
    ASSERT_TRUE(tok->Encode(s, &ids).ok()) << s;
    ASSERT_EQ(tok->Decode(ids), s);
  }
}

TEST(BpeTrainerTest, BadInput) {
  BpeTrainer trainer(300);
  const absl::Status bad = trainer.Add("fine, then \xC3(");
  EXPECT_EQ(bad.message(), "invalid UTF-8 at byte 11");
  ASSERT_TRUE(trainer.Add("xy xy").ok());
  // The bad document was not counted: "xy" and " xy" are all there is.
  const std::vector<std::string> tokens = TokenStrings(*trainer.Finish().value());
  EXPECT_THAT(std::vector<std::string>(tokens.begin() + 256, tokens.end()),
              ::testing::ElementsAre("xy", " xy"));
  EXPECT_FALSE(BpeTrainer(255).Finish().ok());
}

}  // namespace
}  // namespace modamba::data
