#include "core/data/text_tokenizer.h"

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/test_util.h"
#include "core/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace modamba::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kTestText[] = "core/data/testdata/bpe_test.txt";
// Written by Hugging Face tokenizers 0.23.2 (tools/data/bpe_reference.mjs build):
// its trainer's first 150 merges on bpe_train.txt, the missing bytes, and the
// added tokens <|endoftext|> (special) and [[note]].
constexpr char kReferenceTokenizer[] = "core/data/testdata/reference_tokenizer.json";
// The ids both reference libraries give bpe_test.txt with that tokenizer.
constexpr char kReferenceIds[] = "core/data/testdata/reference_ids.json";

std::vector<std::string> Pieces(std::string_view text) {
  std::vector<std::string> pieces;
  EXPECT_TRUE(PreTokenize(text, [&](std::string_view p) { pieces.emplace_back(p); }).ok());
  return pieces;
}

std::vector<int32_t> ReferenceIds(const std::string& path) {
  return nlohmann::json::parse(ReadFile(path).value())["ids"].get<std::vector<int32_t>>();
}

std::vector<int32_t> EncodeOrDie(const TextTokenizer& tok, std::string_view text) {
  std::vector<int32_t> ids;
  const absl::Status status = tok.Encode(text, &ids);
  EXPECT_TRUE(status.ok()) << status;
  return ids;
}

TEST(PreTokenizeTest, SplitsAsTheGpt2Pattern) {
  EXPECT_THAT(Pieces("Hello world's 123abc!!"),
              ElementsAre("Hello", " world", "'s", " 123", "abc", "!!"));
  // A whitespace run gives its last space to the next piece; a lone newline
  // before a word stays alone; a run at the end stays whole.
  EXPECT_THAT(Pieces("a   b\n\nc\n d  "),
              ElementsAre("a", "  ", " b", "\n", "\n", "c", "\n", " d", "  "));
  EXPECT_THAT(Pieces("they're I'll we've ?'s '"),
              ElementsAre("they", "'re", " I", "'ll", " we", "'ve", " ?'", "s", " '"));
  // Unicode classes: letters (with a combining mark apart, as \p{L} excludes
  // it), numbers of other scripts, NBSP as whitespace, emoji as punctuation.
  EXPECT_THAT(Pieces("café e\xCC\x81 ٣Ⅻ½ x\xC2\xA0y 🌊!"),
              ElementsAre("café", " e", "\xCC\x81", " ٣Ⅻ½", " x", "\xC2\xA0", "y", " 🌊!"));
  // U+0085 is White_Space, as in tokenizers 0.23.2 (not in JavaScript's \s).
  EXPECT_THAT(Pieces("\xC2\x85'd"), ElementsAre("\xC2\x85", "'d"));
  EXPECT_THAT(Pieces(""), ElementsAre());
}

TEST(PreTokenizeTest, InvalidUtf8NamesTheOffset) {
  for (const auto& [text, offset] : std::vector<std::pair<std::string, int>>{
           {"ab\x80", 2},              // lone continuation byte
           {"abc\xC0\x80", 3},         // overlong NUL
           {"a \xED\xA0\x80", 2},      // surrogate U+D800
           {"x\xE2\x82", 1},           // truncated
           {"\xF5\x80\x80\x80", 0},    // above U+10FFFF
           {"ok \xF0\x9F\x8C", 3}}) {  // truncated emoji after a space
    const absl::Status status = PreTokenize(text, [](std::string_view) {});
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message(), absl::StrCat("invalid UTF-8 at byte ", offset)) << text;
  }
}

TEST(ByteTokenizerTest, IdsAreBytes) {
  const auto tok = MakeByteTokenizer();
  EXPECT_EQ(tok->vocab_size(), 256);
  std::vector<int32_t> ids = {7};
  ASSERT_TRUE(tok->Encode("hé", &ids).ok());
  EXPECT_THAT(ids, ElementsAre(7, 'h', 0xC3, 0xA9));
  EXPECT_EQ(tok->Decode({'h', 0xC3, 0xA9}), "hé");
  const absl::Status bad = tok->Encode("ok\xFF", &ids);
  EXPECT_EQ(bad.message(), "invalid UTF-8 at byte 2");
  EXPECT_EQ(ids.size(), 4u);  // nothing appended
  EXPECT_EQ(tok->Describe()["type"], "bytes");
}

TEST(BpeTokenizerTest, ReferenceTokenizerGivesTheReferenceIds) {
  const auto tok = LoadTextTokenizer(kReferenceTokenizer);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 408);
  const std::string text = ReadFile(kTestText).value();
  const std::vector<int32_t> ids = EncodeOrDie(**tok, text);
  EXPECT_EQ(ids, ReferenceIds(kReferenceIds));
  EXPECT_EQ((*tok)->Decode(ids), text);
}

TEST(BpeTokenizerTest, MergesAsStringsLoadAlike) {
  nlohmann::json j = nlohmann::json::parse(ReadFile(kReferenceTokenizer).value());
  for (auto& m : j["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  const std::string path = testing::ScratchDir("string_merges") + "/tokenizer.json";
  ASSERT_TRUE(WriteFileAtomic(path, j.dump()).ok());
  const auto tok = LoadTextTokenizer(path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(EncodeOrDie(**tok, ReadFile(kTestText).value()), ReferenceIds(kReferenceIds));
}

TEST(BpeTokenizerTest, SaveAndLoadKeepIdsAndTokens) {
  const auto tok = LoadTextTokenizer(kReferenceTokenizer).value();
  const std::string dir = testing::ScratchDir("save");
  ASSERT_TRUE(tok->Save(dir).ok());
  const auto again = LoadTextTokenizer(dir + "/tokenizer.json");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(EncodeOrDie(**again, ReadFile(kTestText).value()), ReferenceIds(kReferenceIds));
  EXPECT_EQ((*again)->Describe(), tok->Describe());
  const nlohmann::json saved = nlohmann::json::parse(ReadFile(dir + "/tokenizer.json").value());
  EXPECT_EQ(saved["added_tokens"][0]["content"], "<|endoftext|>");
  EXPECT_EQ(saved["added_tokens"][0]["special"], true);
  EXPECT_EQ(saved["model"]["merges"][0], nlohmann::json({"t", "h"}));
  EXPECT_FALSE(saved["model"]["vocab"].contains("<|endoftext|>"));
}

TEST(BpeTokenizerTest, AddedTokensMatchFirstAndInvalidUtf8IsAnError) {
  const auto tok = LoadTextTokenizer(kReferenceTokenizer).value();
  const std::vector<int32_t> ids = EncodeOrDie(*tok, "x<|endoftext|>[[note]]");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_THAT(std::vector<int32_t>(ids.end() - 2, ids.end()), ElementsAre(406, 407));
  std::vector<int32_t> out = {1, 2};
  const absl::Status bad = tok->Encode("ab<|endoftext|>c\xC3", &out);
  EXPECT_EQ(bad.message(), "invalid UTF-8 at byte 16");
  EXPECT_THAT(out, ElementsAre(1, 2));
}

TEST(BpeTokenizerTest, LongPiecesRoundTrip) {
  const auto tok = LoadTextTokenizer(kReferenceTokenizer).value();
  for (const std::string& text : {std::string(20000, '7'), std::string(5000, ' ') + "x",
                                  std::string(3000, 'e') + "\n"}) {
    EXPECT_EQ(tok->Decode(EncodeOrDie(*tok, text)), text);
  }
}

std::unique_ptr<TextTokenizer> LoadEdited(const std::string& name,
                                          const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = nlohmann::json::parse(ReadFile(kReferenceTokenizer).value());
  edit(j);
  const std::string path = testing::ScratchDir(name) + "/tokenizer.json";
  EXPECT_TRUE(WriteFileAtomic(path, j.dump()).ok());
  return LoadTextTokenizer(path).value();
}

TEST(BpeTokenizerTest, IgnoreMergesTakesWholePiecesFromTheVocabulary) {
  const auto no_merges = [](nlohmann::json& j) { j["model"]["merges"] = nlohmann::json::array(); };
  const auto bytes = LoadEdited("no_merges", no_merges);
  const auto whole = LoadEdited("ignore_merges", [&](nlohmann::json& j) {
    no_merges(j);
    j["model"]["ignore_merges"] = true;
  });
  const int32_t th = nlohmann::json::parse(ReadFile(kReferenceTokenizer).value())["model"]["vocab"]["th"];
  EXPECT_THAT(EncodeOrDie(*whole, "th"), ElementsAre(th));
  EXPECT_EQ(EncodeOrDie(*bytes, "th").size(), 2u);
}

// Hugging Face tokenizers 0.23.2 cuts out added tokens with normalized=false
// before those with normalized=true: with "zz" (false) and "yzz" (true) it
// encodes "ayzzc" as "ay", "zz", "c" (tokenizers.js 0.2.0 differs: "a", "yzz", "c").
TEST(BpeTokenizerTest, UnnormalizedAddedTokensAreCutOutFirst) {
  const auto tok = LoadEdited("two_kinds", [](nlohmann::json& j) {
    j["added_tokens"].push_back({{"id", 408}, {"content", "zz"}, {"normalized", false}, {"special", true}});
    j["added_tokens"].push_back({{"id", 409}, {"content", "yzz"}, {"normalized", true}, {"special", false}});
  });
  // The ids tokenizers 0.23.2 gives.
  EXPECT_THAT(EncodeOrDie(*tok, "ayzzc"), ElementsAre(171, 408, 46));
  EXPECT_THAT(EncodeOrDie(*tok, " yzz"), ElementsAre(113, 67, 408));
  EXPECT_THAT(EncodeOrDie(*tok, "[[note]]yzz"), ElementsAre(407, 67, 408));
}

// add_prefix_space puts a space before each stretch of text between added
// tokens that lacks one (as tokenizers 0.23.2 does).
TEST(BpeTokenizerTest, AddPrefixSpacePerSegment) {
  const auto plain = LoadTextTokenizer(kReferenceTokenizer).value();
  const auto prefixed = LoadEdited("prefix", [](nlohmann::json& j) {
    j["pre_tokenizer"]["add_prefix_space"] = true;
  });
  std::vector<int32_t> want = EncodeOrDie(*plain, " a");
  want.push_back(406);
  for (const int32_t id : EncodeOrDie(*plain, " b c")) want.push_back(id);
  EXPECT_EQ(EncodeOrDie(*prefixed, "a<|endoftext|> b c"), want);
  EXPECT_EQ(EncodeOrDie(*prefixed, "a<|endoftext|>b c"), want);
  EXPECT_EQ(prefixed->Decode(EncodeOrDie(*prefixed, "x")), " x");
}

// Threads share a tokenizer; a thread that switches tokenizers gets each
// one's own ids (the word caches are per thread and per tokenizer).
TEST(BpeTokenizerTest, ThreadsAndSwitchingTokenizers) {
  const auto full = LoadTextTokenizer(kReferenceTokenizer).value();
  const auto short_merges = LoadEdited("short", [](nlohmann::json& j) {
    j["model"]["merges"].erase(j["model"]["merges"].begin() + 20, j["model"]["merges"].end());
  });
  const std::string text = ReadFile(kTestText).value();
  const std::vector<int32_t> want = ReferenceIds(kReferenceIds);
  const std::vector<int32_t> want_short = EncodeOrDie(*short_merges, text);
  ASSERT_NE(want_short, want);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        std::vector<int32_t> a, b;
        ok[t] += full->Encode(text, &a).ok() && short_merges->Encode(text, &b).ok() &&
                 a == want && b == want_short;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_THAT(ok, ElementsAre(20, 20, 20, 20));
}

// Each edit of the reference file, and the field its error must name.
TEST(BpeTokenizerTest, UnsupportedOrBrokenFilesNameTheField) {
  const nlohmann::json good = nlohmann::json::parse(ReadFile(kReferenceTokenizer).value());
  struct Case {
    std::string field;
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Case> cases = {
      {"normalizer", [](nlohmann::json& j) { j["normalizer"] = {{"type", "NFC"}}; }},
      {"pre_tokenizer", [](nlohmann::json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }},
      {"pre_tokenizer", [](nlohmann::json& j) { j["pre_tokenizer"] = nullptr; }},
      {"post_processor", [](nlohmann::json& j) { j["post_processor"] = {{"type", "TemplateProcessing"}}; }},
      {"model.type", [](nlohmann::json& j) { j["model"]["type"] = "WordPiece"; }},
      {"model.dropout", [](nlohmann::json& j) { j["model"]["dropout"] = 0.1; }},
      {"model.merges[3]", [](nlohmann::json& j) { j["model"]["merges"][3] = {"t", "nowhere"}; }},
      {"model.merges[0]", [](nlohmann::json& j) { j["model"]["merges"][0] = "a b c"; }},
      {"model.vocab", [](nlohmann::json& j) {  // byte 0 ("Ā") renamed
         j["model"]["vocab"]["Āx"] = j["model"]["vocab"]["Ā"];
         j["model"]["vocab"].erase("Ā");
       }},
      {"model.vocab[\"!\"]", [](nlohmann::json& j) { j["model"]["vocab"]["!"] = 5000; }},
      {"added_tokens[1].lstrip", [](nlohmann::json& j) { j["added_tokens"][1]["lstrip"] = true; }},
      {"added_tokens[0]", [](nlohmann::json& j) { j["added_tokens"][0]["id"] = 3; }},
  };
  const std::string dir = testing::ScratchDir("bad");
  for (const Case& c : cases) {
    nlohmann::json j = good;
    c.edit(j);
    const std::string path = dir + "/tokenizer.json";
    ASSERT_TRUE(WriteFileAtomic(path, j.dump()).ok());
    const auto tok = LoadTextTokenizer(path);
    ASSERT_FALSE(tok.ok()) << c.field;
    EXPECT_THAT(std::string(tok.status().message()), HasSubstr(absl::StrCat(path, ": ", c.field, ":")));
  }
  const std::string broken = dir + "/broken.json";
  ASSERT_TRUE(WriteFileAtomic(broken, "{\"model\": ").ok());
  EXPECT_THAT(std::string(LoadTextTokenizer(broken).status().message()), HasSubstr(broken));
  EXPECT_FALSE(LoadTextTokenizer(dir + "/missing.json").ok());
}

}  // namespace
}  // namespace modamba::data
