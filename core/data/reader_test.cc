#include "core/data/reader.h"

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/data/packing.h"
#include "core/data/shard.h"
#include "core/data/test_util.h"
#include "core/file_util.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

constexpr int kLen = 48;
constexpr int kDim = 4;

// A dataset with continuous patches whose train split is cut into shards of
// 5, 6 and the rest; returns the packed train data.
PackedSequences WriteDataset(const std::string& dir) {
  const Vocab vocab;
  DatasetManifest m;
  m.setting = "transfusion";
  m.seq_len = kLen;
  m.patch_dim = kDim;
  m.num_modalities = 2;
  m.seed = 99;
  PackedSequences train;
  for (const char* split : {"train", "val"}) {
    Packer packer(kLen, kDim, 3);
    Rng rng(std::string(split) == "train" ? 1 : 2);
    const int docs = std::string(split) == "train" ? 60 : 10;
    for (int d = 0; d < docs; ++d) {
      DocumentWriter w(DocType::kCaptionImage, vocab, kDim);
      w.Text(std::string(1 + rng.Below(12), static_cast<char>('a' + d % 26)));
      const int n = static_cast<int>(rng.Below(4));
      std::vector<float> patches(n * kDim);
      for (float& x : patches) x = static_cast<float>(rng.Uniform());
      if (n > 0) w.ImagePatches(patches.data(), n);
      packer.Add(w.Finish());
    }
    PackedSequences data = packer.Finish();
    SplitStats& stats = m.splits[split];
    std::filesystem::create_directories(absl::StrCat(dir, "/", split));
    const std::vector<int64_t> cuts = std::string(split) == "train"
                                          ? std::vector<int64_t>{0, 5, 11, data.num_sequences}
                                          : std::vector<int64_t>{0, data.num_sequences};
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      ShardEntry e{absl::StrCat(split, "/shard-", i, ".bin"), cuts[i + 1] - cuts[i], ""};
      EXPECT_TRUE(WriteShard(absl::StrCat(dir, "/", e.file), data, cuts[i], cuts[i + 1]).ok());
      e.sha256 = *Sha256File(absl::StrCat(dir, "/", e.file));
      stats.shards.push_back(e);
    }
    stats.sequences = data.num_sequences;
    if (std::string(split) == "train") train = std::move(data);
  }
  EXPECT_TRUE(WriteDatasetManifest(dir, m).ok());
  return train;
}

// Checks that row b of `batch` is exactly sequence `s` of `data`.
void ExpectRowIs(const PackedBatch& batch, int b, int64_t patch_row, const PackedSequences& data,
                 int64_t s) {
  for (int t = 0; t < kLen; ++t) {
    const size_t i = static_cast<size_t>(b) * kLen + t;
    const size_t j = s * kLen + t;
    ASSERT_EQ(batch.tokens[i], data.tokens[j]);
    ASSERT_EQ(batch.modality[i], data.modality[j]);
    ASSERT_EQ(batch.loss_mask[i], data.loss_mask[j]);
    ASSERT_EQ(batch.doc_start[i], data.doc_start[j]);
    ASSERT_EQ(batch.patch_flag[i], data.patch_flag[j]);
  }
  const int64_t n = data.patch_begin[s + 1] - data.patch_begin[s];
  for (int64_t k = 0; k < n * kDim; ++k) {
    ASSERT_EQ(batch.patches[patch_row * kDim + k], data.patches[data.patch_begin[s] * kDim + k]);
  }
}

int64_t FlaggedBefore(const PackedBatch& batch, int row) {
  int64_t n = 0;
  for (int i = 0; i < row * kLen; ++i) n += batch.patch_flag[i];
  return n;
}

TEST(ReaderTest, RanksReadExactlyWhatWasPacked) {
  const std::string dir = testing::ScratchDir("reader_exact");
  const PackedSequences data = WriteDataset(dir);
  const int64_t n = data.num_sequences;
  ASSERT_GT(n, 13);
  for (int world = 1; world <= 3; ++world) {
    std::vector<std::unique_ptr<ShardReader>> readers;
    for (int r = 0; r < world; ++r) {
      auto reader = ShardReader::Open(dir, "train", r, world);
      ASSERT_TRUE(reader.ok()) << reader.status();
      readers.push_back(std::move(*reader));
    }
    // Exactly one epoch, in global batches of world * 2.
    std::multiset<int64_t> seen;
    PackedBatch batch;
    for (int64_t consumed = 0; consumed + world * 2 <= n; consumed += world * 2) {
      for (int r = 0; r < world; ++r) {
        ASSERT_TRUE(readers[r]->Next(2, &batch).ok());
        ASSERT_EQ(batch.batch, 2);
        for (int b = 0; b < 2; ++b) {
          seen.insert(batch.sequence_index[b]);
          ExpectRowIs(batch, b, FlaggedBefore(batch, b), data, batch.sequence_index[b]);
        }
      }
    }
    // The rest of the epoch one sequence at a time, round robin.
    while (readers[0]->position() < n) {
      for (int r = 0; r < world; ++r) {
        ASSERT_TRUE(readers[r]->Next(1, &batch).ok());
        if (readers[r]->position() - world + r < n) {
          seen.insert(batch.sequence_index[0]);
          ExpectRowIs(batch, 0, 0, data, batch.sequence_index[0]);
        }
      }
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(n)) << "world " << world;
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), static_cast<size_t>(n))
        << "world " << world;
    for (auto& reader : readers) EXPECT_EQ(reader->position(), readers[0]->position());
  }
}

TEST(ReaderTest, ResumesAtASavedPosition) {
  const std::string dir = testing::ScratchDir("reader_resume");
  WriteDataset(dir);
  auto a = ShardReader::Open(dir, "train", 1, 2);
  ASSERT_TRUE(a.ok());
  PackedBatch batch;
  for (int i = 0; i < 7; ++i) ASSERT_TRUE((*a)->Next(3, &batch).ok());  // crosses epochs
  const int64_t saved = (*a)->position();
  std::vector<PackedBatch> expected(4);
  for (PackedBatch& b : expected) ASSERT_TRUE((*a)->Next(3, &b).ok());

  auto b = ShardReader::Open(dir, "train", 1, 2);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->Seek(saved).ok());
  for (const PackedBatch& e : expected) {
    ASSERT_TRUE((*b)->Next(3, &batch).ok());
    EXPECT_EQ(batch.sequence_index, e.sequence_index);
    EXPECT_EQ(batch.tokens, e.tokens);
    EXPECT_EQ(batch.patches, e.patches);
  }
}

TEST(ReaderTest, SameGlobalStreamForAnyWorldSize) {
  const std::string dir = testing::ScratchDir("reader_world");
  WriteDataset(dir);
  auto single = ShardReader::Open(dir, "train", 0, 1);
  ASSERT_TRUE(single.ok());
  const int64_t start = (*single)->num_sequences() - 5;  // the next 12 cross an epoch end
  ASSERT_TRUE((*single)->Seek(start).ok());
  PackedBatch all;
  ASSERT_TRUE((*single)->Next(12, &all).ok());
  for (int r = 0; r < 3; ++r) {
    auto reader = ShardReader::Open(dir, "train", r, 3);
    ASSERT_TRUE(reader.ok());
    ASSERT_TRUE((*reader)->Seek(start).ok());
    PackedBatch batch;
    ASSERT_TRUE((*reader)->Next(4, &batch).ok());
    for (int b = 0; b < 4; ++b) EXPECT_EQ(batch.sequence_index[b], all.sequence_index[3 * b + r]);
  }
}

TEST(ReaderTest, EpochsAreReshuffledAndValIsInOrder) {
  const std::string dir = testing::ScratchDir("reader_epochs");
  const int n = static_cast<int>(WriteDataset(dir).num_sequences);
  auto train = ShardReader::Open(dir, "train", 0, 1);
  ASSERT_TRUE(train.ok());
  PackedBatch e0, e1;
  ASSERT_TRUE((*train)->Next(n, &e0).ok());
  ASSERT_TRUE((*train)->Next(n, &e1).ok());
  EXPECT_NE(e0.sequence_index, e1.sequence_index);
  EXPECT_EQ(std::set<int64_t>(e1.sequence_index.begin(), e1.sequence_index.end()).size(),
            static_cast<size_t>(n));

  auto val = ShardReader::Open(dir, "val", 0, 1);
  ASSERT_TRUE(val.ok());
  PackedBatch v;
  ASSERT_TRUE((*val)->Next(static_cast<int>((*val)->num_sequences()), &v).ok());
  for (int i = 0; i < v.batch; ++i) EXPECT_EQ(v.sequence_index[i], i);
}

TEST(ReaderTest, DamagedShardsNameTheFile) {
  const std::string dir = testing::ScratchDir("reader_damaged");
  WriteDataset(dir);
  const std::string shard = dir + "/train/shard-1.bin";
  const std::string copy = dir + "/original.bin";
  std::filesystem::copy_file(shard, copy);
  const long size = static_cast<long>(std::filesystem::file_size(shard));

  testing::CopyDamaged(copy, shard, size - 3);  // truncated
  auto truncated = ShardReader::Open(dir, "train", 0, 1);
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find(shard), std::string::npos) << truncated.status();

  testing::CopyDamaged(copy, shard, -1, size - 10);  // a flipped byte in the last record's data
  ReaderOptions in_order;
  in_order.shuffle = false;
  auto corrupt = ShardReader::Open(dir, "train", 0, 1, in_order);
  ASSERT_TRUE(corrupt.ok()) << corrupt.status();
  PackedBatch batch;
  absl::Status status;
  for (int i = 0; i < (*corrupt)->num_sequences() && status.ok(); ++i) {
    status = (*corrupt)->Next(1, &batch);
  }
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(shard), std::string::npos) << status;

  testing::CopyDamaged(copy, shard, -1, 12);  // a flipped header byte
  auto header = ShardReader::Open(dir, "train", 0, 1);
  ASSERT_FALSE(header.ok());
  EXPECT_NE(header.status().message().find(shard), std::string::npos) << header.status();
}

TEST(ReaderTest, RejectsBadRanks) {
  const std::string dir = testing::ScratchDir("reader_ranks");
  WriteDataset(dir);
  EXPECT_FALSE(ShardReader::Open(dir, "train", 2, 2).ok());
  EXPECT_FALSE(ShardReader::Open(dir, "train", 0, 0).ok());
  EXPECT_FALSE(ShardReader::Open(dir, "test", 0, 1).ok());
}

}  // namespace
}  // namespace modamba::data
