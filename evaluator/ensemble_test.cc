#include "evaluator/ensemble.h"

#include <cmath>

#include "core/rng.h"
#include "core/safetensors.h"
#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

constexpr int kInput = 12, kClasses = 3, kN = 7;

std::vector<std::unique_ptr<Mlp>> TwoMembers(Backend* be) {
  std::vector<std::unique_ptr<Mlp>> members;
  for (const MlpSpec& spec :
       {MlpSpec{kInput, {8}, kClasses, /*frames=*/4, /*conv_taps=*/2, /*conv=*/{5}},
        MlpSpec{kInput, {6, 4}, kClasses}}) {
    auto m = Mlp::Create(spec, be, members.size() + 1);
    EXPECT_TRUE(m.ok()) << m.status();
    members.push_back(std::move(*m));
  }
  return members;
}

std::vector<float> Inputs() {
  std::vector<float> x(kN * kInput);
  Rng rng(3);
  for (float& v : x) v = static_cast<float>(rng.Normal(0, 1));
  return x;
}

TEST(Ensemble, AveragesLogSoftmaxAndHasTheFirstMembersFeatures) {
  auto be = NewCpuBackend();
  auto ensemble = Ensemble::Create(TwoMembers(be.get()));
  ASSERT_TRUE(ensemble.ok()) << ensemble.status();
  Ensemble& e = **ensemble;
  EXPECT_EQ(e.feature_dim(), 8);
  const std::vector<float> x = Inputs();
  std::vector<float> log_probs(kN * kClasses), features(kN * e.feature_dim());
  e.Forward(x.data(), kN, log_probs.data(), features.data());
  // The members one by one, in double.
  std::vector<double> expected(kN * kClasses, 0.0);
  for (int k = 0; k < 2; ++k) {
    Mlp& m = const_cast<Mlp&>(e.member(k));
    std::vector<float> logits(kN * kClasses), f(kN * m.feature_dim());
    m.Forward(x.data(), kN, logits.data(), f.data());
    for (int i = 0; i < kN; ++i) {
      double z = 0;
      for (int c = 0; c < kClasses; ++c) z += std::exp(double{logits[i * kClasses + c]});
      for (int c = 0; c < kClasses; ++c) {
        expected[i * kClasses + c] += (logits[i * kClasses + c] - std::log(z)) / 2;
      }
    }
    if (k == 0) {
      EXPECT_EQ(features, f);
    }
  }
  std::vector<float> features_only(features.size());
  e.Forward(x.data(), kN, nullptr, features_only.data());
  EXPECT_EQ(features_only, features);
  for (int i = 0; i < kN * kClasses; ++i) EXPECT_NEAR(log_probs[i], expected[i], 1e-5);
  const std::vector<int32_t> predicted = e.Predict(x.data(), kN);
  for (int i = 0; i < kN; ++i) {
    const float* row = &log_probs[i * kClasses];
    EXPECT_EQ(predicted[i], std::max_element(row, row + kClasses) - row);
  }
}

TEST(Ensemble, SavesAndLoadsEveryMemberInOneFile) {
  auto be = NewCpuBackend();
  auto ensemble = Ensemble::Create(TwoMembers(be.get()));
  ASSERT_TRUE(ensemble.ok());
  const std::string path = ::testing::TempDir() + "/ensemble.safetensors";
  ASSERT_TRUE((*ensemble)->Save(path, {{"code_version", "v"}}).ok());
  std::map<std::string, std::string> meta;
  auto loaded = Ensemble::Load(path, be.get(), &meta);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(meta["code_version"], "v");
  EXPECT_EQ(meta["ensemble_members"], "2");
  ASSERT_EQ((*loaded)->members(), 2);
  EXPECT_EQ((*loaded)->member(0).spec().conv, std::vector<int>{5});
  EXPECT_EQ((*loaded)->member(1).spec().hidden, (std::vector<int>{6, 4}));
  const std::vector<float> x = Inputs();
  std::vector<float> a(kN * kClasses), b(kN * kClasses);
  (*ensemble)->Forward(x.data(), kN, a.data(), nullptr);
  (*loaded)->Forward(x.data(), kN, b.data(), nullptr);
  EXPECT_EQ(a, b);

  // One member is a plain network file, which loads as an ensemble of one.
  std::vector<std::unique_ptr<Mlp>> one;
  one.push_back(std::move(TwoMembers(be.get())[1]));
  auto single = Ensemble::Create(std::move(one));
  ASSERT_TRUE(single.ok());
  ASSERT_TRUE((*single)->Save(path, {}).ok());
  ASSERT_TRUE(Mlp::Load(path, be.get()).ok());
  auto again = Ensemble::Load(path, be.get());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->members(), 1);
}

TEST(Ensemble, RefusesMismatchedMembersAndABadMemberCount) {
  auto be = NewCpuBackend();
  std::vector<std::unique_ptr<Mlp>> members = TwoMembers(be.get());
  members.push_back(std::move(*Mlp::Create({kInput + 1, {4}, kClasses}, be.get(), 1)));
  EXPECT_FALSE(Ensemble::Create(std::move(members)).ok());
  EXPECT_FALSE(Ensemble::Create({}).ok());
  const std::string path = ::testing::TempDir() + "/bad_ensemble.safetensors";
  Tensor w(DType::kF32, {4, 3});
  ASSERT_TRUE(SaveSafetensors(path, {{"w", &w}}, {{"ensemble_members", "two"}}).ok());
  auto loaded = Ensemble::Load(path, be.get());
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("ensemble_members"), std::string::npos);
  ASSERT_TRUE(SaveSafetensors(path, {{"w", &w}}, {{"ensemble_members", "2"}}).ok());
  loaded = Ensemble::Load(path, be.get());
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("member.0.mlp_spec"), std::string::npos)
      << loaded.status();
}

}  // namespace
}  // namespace modamba::eval
