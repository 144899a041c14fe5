#include "core/data/vocab.h"

#include <string>

#include "gtest/gtest.h"

namespace modamba::data {
namespace {

TEST(VocabTest, DefaultRangesAreDisjointAndContiguous) {
  const Vocab v;
  EXPECT_EQ(v.image_begin(), 263);
  EXPECT_EQ(v.image_end(), 775);
  EXPECT_EQ(v.speech_begin(), 775);
  EXPECT_EQ(v.size(), 1031);
  EXPECT_EQ(v.ImageToken(0), 263);
  EXPECT_EQ(v.SpeechToken(255), 1030);
}

TEST(VocabTest, ModalityOfIdFollowsTheRanges) {
  Vocab v;
  v.image_codes = 10;
  v.speech_units = 5;
  EXPECT_EQ(v.ModalityOfId(0), kText);
  EXPECT_EQ(v.ModalityOfId(kPad), kText);  // specials are text
  EXPECT_EQ(v.ModalityOfId(263), kImage);
  EXPECT_EQ(v.ModalityOfId(272), kImage);
  EXPECT_EQ(v.ModalityOfId(273), kSpeech);
  EXPECT_EQ(v.ModalityOfId(277), kSpeech);
  EXPECT_EQ(v.ModalityOfId(278), -1);
  EXPECT_EQ(v.ModalityOfId(-1), -1);
}

TEST(VocabTest, ATextTokenizerOfMoreThanBytesShiftsTheImageAndSpeechRanges) {
  Vocab v;
  v.text_tokens = 1000;
  v.image_codes = 10;
  v.speech_units = 5;
  EXPECT_EQ(v.TextToken(255), 255);
  EXPECT_EQ(v.TextToken(256), 263);  // past the specials, which keep their ids
  EXPECT_EQ(v.TextToken(999), 1006);
  EXPECT_EQ(v.TextId(1006), 999);
  EXPECT_EQ(v.TextId(kBos), -1);
  EXPECT_EQ(v.TextId(1007), -1);
  EXPECT_EQ(v.image_begin(), 1007);
  EXPECT_EQ(v.ModalityOfId(1006), kText);
  EXPECT_EQ(v.ModalityOfId(1007), kImage);
  EXPECT_EQ(v.size(), 1007 + 10 + 5);
}

TEST(VocabTest, Names) {
  EXPECT_EQ(std::string(SpecialName(kBosSpeech)), "BOS_SPEECH");
  EXPECT_EQ(SpecialName('a'), nullptr);
  EXPECT_EQ(std::string(ModalityName(kSpeech)), "speech");
}

}  // namespace
}  // namespace modamba::data
