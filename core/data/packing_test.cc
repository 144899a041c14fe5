#include "core/data/packing.h"

#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

// A document of `n` tokens (BOS + n - 2 bytes + EOS) whose bytes encode its id,
// with `patches` continuous positions when patch_dim > 0.
Document MakeDoc(int id, int n, int patch_dim, int patches = 0) {
  const Vocab vocab;
  DocumentWriter w(DocType::kText, vocab, patch_dim);
  std::string text(n - 2 - (patches > 0 ? patches + 2 : 0), static_cast<char>('a' + id % 26));
  w.Text(text);
  if (patches > 0) {
    std::vector<float> p(patches * patch_dim);
    for (size_t i = 0; i < p.size(); ++i) p[i] = id + 0.001f * i;
    w.ImagePatches(p.data(), patches);
  }
  return w.Finish();
}

TEST(PackingTest, DocumentsStayWholeAndFlagsAreRight) {
  constexpr int kLen = 64;
  Packer packer(kLen, 0);
  Rng rng(3);
  int64_t tokens = 0;
  for (int i = 0; i < 200; ++i) {
    const int n = 3 + static_cast<int>(rng.Below(40));
    tokens += n;
    packer.Add(MakeDoc(i, n, 0));
  }
  packer.Add(MakeDoc(999, kLen + 1, 0));  // too long
  EXPECT_EQ(packer.stats().documents[0], 200);
  EXPECT_EQ(packer.stats().dropped[0], 1);
  const PackedSequences p = packer.Finish();
  ASSERT_EQ(p.tokens.size(), static_cast<size_t>(p.num_sequences) * kLen);
  int64_t docs = 0, real = 0;
  for (int64_t s = 0; s < p.num_sequences; ++s) {
    const size_t base = s * kLen;
    EXPECT_EQ(p.doc_start[base], 1);  // every sequence starts a document
    EXPECT_EQ(p.tokens[base], kBos);
    for (int t = 0; t < kLen; ++t) {
      const size_t i = base + t;
      if (p.tokens[i] == kBos) {
        EXPECT_EQ(p.doc_start[i], 1);
        EXPECT_EQ(p.loss_mask[i], 0);
        ++docs;
      }
      if (p.tokens[i] == kPad) {
        EXPECT_EQ(p.loss_mask[i], 0);
        EXPECT_EQ(p.doc_start[i], p.tokens[i - 1] == kEos ? 1 : 0);
      } else {
        ++real;
      }
      if (p.tokens[i] == kEos) {
        EXPECT_TRUE(t + 1 == kLen || p.doc_start[i + 1] == 1);
      }
    }
  }
  EXPECT_EQ(docs, 200);
  EXPECT_EQ(real, tokens);
  // The window of open sequences keeps padding low.
  EXPECT_LT(p.num_sequences * kLen - tokens, p.num_sequences * kLen / 10);
}

TEST(PackingTest, PatchesFollowTheirFlags) {
  constexpr int kLen = 128;
  constexpr int kDim = 3;
  Packer packer(kLen, kDim, 2);
  for (int i = 0; i < 30; ++i) packer.Add(MakeDoc(i, 20 + i, kDim, 5 + i % 4));
  const PackedSequences p = packer.Finish();
  ASSERT_EQ(p.patch_begin.size(), static_cast<size_t>(p.num_sequences) + 1);
  int64_t row = 0;
  for (int64_t s = 0; s < p.num_sequences; ++s) {
    EXPECT_EQ(p.patch_begin[s], row);
    int doc_id = -1;
    for (int t = 0; t < kLen; ++t) {
      const size_t i = s * kLen + t;
      if (p.tokens[i] < 256 && p.tokens[i] >= 'a') doc_id = p.tokens[i] - 'a';
      if (!p.patch_flag[i]) continue;
      EXPECT_EQ(p.tokens[i], kPad);
      EXPECT_EQ(p.modality[i], kImage);
      EXPECT_EQ(p.loss_mask[i], 0);
      // The patch row belongs to the document around it.
      EXPECT_EQ(static_cast<int>(p.patches[row * kDim]) % 26, doc_id);
      ++row;
    }
  }
  EXPECT_EQ(p.patch_begin.back(), row);
  EXPECT_EQ(p.patches.size(), static_cast<size_t>(row) * kDim);
}

}  // namespace
}  // namespace modamba::data
