#include "trainer/flat_bucket.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "trainer/test_util.h"

namespace modamba {
namespace {

// 3*5 + 7 + 24 + 1 + 22 + 2 = 71 elements: no world size of 2..4 divides it.
const std::vector<Shape> kShapes = {{3, 5}, {7}, {2, 3, 4}, {1}, {11, 2}, {2}};

// Parameters whose every element is distinct, so any misplaced copy shows.
std::vector<Tensor> MakeParams(DType dtype) {
  std::vector<Tensor> params;
  int next = 1;
  for (const Shape& shape : kShapes) {
    Tensor& t = params.emplace_back(dtype, shape);
    for (int64_t i = 0; i < t.numel(); ++i, ++next) {
      if (dtype == DType::kF32) {
        t.data<float>()[i] = next * 0.5f;
      } else {
        t.data<double>()[i] = next * 0.25;
      }
    }
  }
  return params;
}

std::vector<const Tensor*> Pointers(const std::vector<Tensor>& tensors) {
  std::vector<const Tensor*> p;
  for (const Tensor& t : tensors) p.push_back(&t);
  return p;
}

std::vector<Tensor> AllShards(const FlatLayout& layout, const std::vector<Tensor>& params) {
  std::vector<Tensor> shards;
  for (int r = 0; r < layout.world_size(); ++r) {
    shards.push_back(*ShardOf(layout, r, Pointers(params)));
  }
  return shards;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(FlatLayoutTest, PadsToEqualShards) {
  for (int n : {1, 2, 3, 4, 7}) {
    FlatLayout layout = *FlatLayout::Create(kShapes, n);
    EXPECT_EQ(layout.numel(), 71);
    EXPECT_EQ(layout.shard_numel(), (71 + n - 1) / n);
    EXPECT_EQ(layout.padded_numel(), n * layout.shard_numel());
    EXPECT_GE(layout.padded_numel(), 71);
    EXPECT_LT(layout.padded_numel() - 71, n);
    EXPECT_EQ(layout.shard_offset(n - 1), (n - 1) * layout.shard_numel());
  }
  FlatLayout layout = *FlatLayout::Create(kShapes, 3);
  EXPECT_EQ(layout.offset(0), 0);
  EXPECT_EQ(layout.offset(1), 15);
  EXPECT_EQ(layout.offset(2), 22);
  EXPECT_EQ(layout.offset(5), 69);
}

TEST(FlatLayoutTest, AlignsShards) {
  FlatLayout layout = *FlatLayout::Create(kShapes, 3, /*shard_alignment=*/32);
  EXPECT_EQ(layout.shard_numel(), 32);
  EXPECT_EQ(layout.padded_numel(), 96);
  FlatLayout wider = *layout.WithWorldSize(2);
  EXPECT_EQ(wider.shard_numel(), 64);
}

TEST(FlatLayoutTest, RefusesBadInput) {
  EXPECT_FALSE(FlatLayout::Create(kShapes, 0).ok());
  EXPECT_FALSE(FlatLayout::Create({{2, -1}}, 2).ok());
  EXPECT_FALSE(FlatLayout::Create(kShapes, 2, 0).ok());
  FlatLayout layout = *FlatLayout::Create(kShapes, 2);
  std::vector<Tensor> params = MakeParams(DType::kF32);
  std::vector<const Tensor*> p = Pointers(params);
  p.pop_back();
  EXPECT_FALSE(ShardOf(layout, 0, p).ok());
  std::vector<Tensor> wrong = MakeParams(DType::kF32);
  wrong[0] = Tensor(DType::kF32, {5, 3});  // the first parameter transposed
  EXPECT_FALSE(ShardOf(layout, 0, Pointers(wrong)).ok());
  std::vector<Tensor> mixed = MakeParams(DType::kF32);
  mixed[2] = Tensor::Zeros(DType::kF64, kShapes[2]);
  EXPECT_FALSE(ShardOf(layout, 0, Pointers(mixed)).ok());
  EXPECT_FALSE(ShardOf(layout, 2, Pointers(params)).ok());
}

TEST(FlatBucketTest, PackAndUnpackRoundTrip) {
  for (DType dtype : {DType::kF32, DType::kF64}) {
    FlatLayout layout = *FlatLayout::Create(kShapes, 4);
    std::vector<Tensor> params = MakeParams(dtype);
    Tensor flat(dtype, {layout.padded_numel()});
    memset(flat.raw(), 0xff, flat.nbytes());  // the padding must be zeroed
    ASSERT_TRUE(PackParams(layout, Pointers(params), BufferView::Of(flat)).ok());
    for (int64_t i = layout.numel(); i < layout.padded_numel(); ++i) {
      EXPECT_EQ(dtype == DType::kF32 ? flat.data<float>()[i] : flat.data<double>()[i], 0);
    }
    // ParamView points at each parameter inside the flat buffer.
    for (int i = 0; i < layout.num_params(); ++i) {
      Mat view = layout.ParamView(BufferView::Of(flat), i);
      const Mat want = params[i].mat();
      EXPECT_EQ(view.rows, want.rows);
      EXPECT_EQ(view.cols, want.cols);
      EXPECT_EQ(memcmp(view.data, params[i].raw(), params[i].nbytes()), 0);
    }
    std::vector<Tensor> back;
    std::vector<Tensor*> out;
    for (const Shape& s : kShapes) back.emplace_back(Tensor::Zeros(dtype, s));
    for (Tensor& t : back) out.push_back(&t);
    ASSERT_TRUE(UnpackParams(layout, BufferView::Of(flat), out).ok());
    for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(SameBytes(params[i], back[i]));
    Tensor too_small(dtype, {layout.padded_numel() - 1});
    EXPECT_FALSE(PackParams(layout, Pointers(params), BufferView::Of(too_small)).ok());
  }
}

TEST(FlatBucketTest, ShardsConsolidateExactly) {
  for (int n : {1, 2, 3, 4}) {
    FlatLayout layout = *FlatLayout::Create(kShapes, n);
    std::vector<Tensor> params = MakeParams(DType::kF64);
    std::vector<Tensor> shards = AllShards(layout, params);
    // The shards are the padded flat buffer cut in n.
    Tensor flat(DType::kF64, {layout.padded_numel()});
    ASSERT_TRUE(PackParams(layout, Pointers(params), BufferView::Of(flat)).ok());
    for (int r = 0; r < n; ++r) {
      EXPECT_EQ(
          memcmp(shards[r].raw(), flat.data<double>() + layout.shard_offset(r), shards[r].nbytes()),
          0);
    }
    std::vector<Tensor> back = *Consolidate(layout, Pointers(shards));
    ASSERT_EQ(back.size(), params.size());
    for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(SameBytes(params[i], back[i]));
  }
}

// Save with 2 ranks, load with 3 (and back, and onto other sizes): every new
// shard equals the one cut directly from the consolidated parameters.
TEST(FlatBucketTest, ReshardsBetweenWorldSizes) {
  std::vector<Tensor> params = MakeParams(DType::kF32);
  for (auto [from_n, to_n] :
       std::vector<std::pair<int, int>>{{2, 3}, {3, 2}, {4, 1}, {1, 4}, {3, 7}}) {
    FlatLayout from = *FlatLayout::Create(kShapes, from_n);
    FlatLayout to = *from.WithWorldSize(to_n);
    std::vector<Tensor> saved = AllShards(from, params);
    std::vector<Tensor> loaded;
    for (int r = 0; r < to_n; ++r) {
      // Only the shards the new rank needs are given.
      std::vector<const Tensor*> available(from_n, nullptr);
      for (int k : SourceShards(from, to, r)) available[k] = &saved[k];
      absl::StatusOr<Tensor> shard = Reshard(from, available, to, r);
      ASSERT_TRUE(shard.ok()) << shard.status();
      EXPECT_TRUE(SameBytes(*shard, *ShardOf(to, r, Pointers(params))))
          << from_n << " -> " << to_n << ", rank " << r;
      loaded.push_back(*std::move(shard));
    }
    std::vector<Tensor> back = *Consolidate(to, Pointers(loaded));
    for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(SameBytes(params[i], back[i]));
  }
}

TEST(FlatBucketTest, SourceShardsAreTheOverlappingRanks) {
  FlatLayout two = *FlatLayout::Create(kShapes, 2);  // shards of 36
  FlatLayout three = *two.WithWorldSize(3);          // shards of 24
  EXPECT_EQ(SourceShards(two, three, 0), std::vector<int>({0}));
  EXPECT_EQ(SourceShards(two, three, 1), std::vector<int>({0, 1}));
  EXPECT_EQ(SourceShards(two, three, 2), std::vector<int>({1}));
  // 8 ranks get shards of 9: rank 7 holds elements 63..70 and one of padding.
  FlatLayout eight = *two.WithWorldSize(8);
  EXPECT_EQ(SourceShards(two, eight, 7), std::vector<int>({1}));
  FlatLayout many = *two.WithWorldSize(80);  // shards of 1: the last 9 are padding
  EXPECT_TRUE(SourceShards(two, many, 75).empty());
  std::vector<Tensor> params = MakeParams(DType::kF32);
  std::vector<Tensor> saved = AllShards(two, params);
  Tensor padding = *Reshard(two, Pointers(saved), many, 75);
  EXPECT_EQ(padding.numel(), 1);
  EXPECT_EQ(padding.data<float>()[0], 0.0f);
}

TEST(FlatBucketTest, ReshardRefusesOtherParameters) {
  FlatLayout from = *FlatLayout::Create(kShapes, 2);
  std::vector<Shape> other = kShapes;
  other[1] = {8};
  FlatLayout to = *FlatLayout::Create(other, 3);
  std::vector<Tensor> params = MakeParams(DType::kF32);
  std::vector<Tensor> saved = AllShards(from, params);
  EXPECT_FALSE(Reshard(from, Pointers(saved), to, 0).ok());
  FlatLayout three = *from.WithWorldSize(3);
  std::vector<const Tensor*> missing = {&saved[0], nullptr};
  EXPECT_FALSE(Reshard(from, missing, three, 1).ok());
}

// A full FSDP round with 3 ranks as processes: gather the bucket from the
// shards, reduce-scatter the gradients into them.
TEST(FlatBucketTest, GatherAndReduceScatterAcrossRanks) {
  RanksRun run = RunRanks("trainer/test_worker", 3, {"--mode=flat_bucket"});
  for (int r = 0; r < 3; ++r) EXPECT_EQ(run.result.ranks[r].code, 0) << run.logs[r];
}

}  // namespace
}  // namespace modamba
