#include "evaluator/generation.h"

#include <cmath>

#include "core/config.h"
#include "core/diffusion.h"
#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

TEST(SampleToken, GreedyTopKAndAllowedIds) {
  const std::vector<float> logits = {0.f, 3.f, 1.f, 2.f, 5.f};
  Rng rng(1);
  EXPECT_EQ(SampleToken(logits.data(), 5, {}, {0.f, 0}, &rng), 4);
  TokenSet low{{{0, 4}}};
  EXPECT_EQ(SampleToken(logits.data(), 5, low, {0.f, 0}, &rng), 1);
  EXPECT_EQ(SampleToken(logits.data(), 5, low, {1.f, 1}, &rng), 1);
  TokenSet none{{{7, 9}}};
  EXPECT_EQ(SampleToken(logits.data(), 5, none, {1.f, 0}, &rng), -1);
  // top_k = 2 over {0, 2, 3}: only 3 and 2, in the ratio e^2 : e^1.
  TokenSet split{{{0, 1}, {2, 4}}};
  int count[5] = {};
  for (int i = 0; i < 20000; ++i) count[SampleToken(logits.data(), 5, split, {1.f, 2}, &rng)]++;
  EXPECT_EQ(count[0] + count[1] + count[4], 0);
  EXPECT_NEAR(static_cast<double>(count[3]) / 20000, std::exp(1.0) / (1 + std::exp(1.0)), 0.015);
  // Temperature 2 flattens: p(3) / p(2) = e^0.5.
  for (int& c : count) c = 0;
  for (int i = 0; i < 20000; ++i) count[SampleToken(logits.data(), 5, split, {2.f, 2}, &rng)]++;
  EXPECT_NEAR(static_cast<double>(count[3]) / 20000, std::exp(0.5) / (1 + std::exp(0.5)), 0.015);
}

TEST(Diffusion, ScheduleRunsFromTDownToOne) {
  for (int steps : {1, 2, 50, 1000, 5000}) {
    std::vector<int32_t> s = DiffusionSchedule(1000, steps);
    ASSERT_FALSE(s.empty());
    EXPECT_EQ(s.front(), 1000);
    if (steps > 1) {
      EXPECT_EQ(s.back(), 1);
    }
    EXPECT_EQ(s.size(), std::min(steps, 1000));
    for (size_t i = 1; i < s.size(); ++i) EXPECT_LT(s[i], s[i - 1]);
  }
}

TEST(Diffusion, DdimWithTheTrueNoiseRecoversTheImage) {
  Rng rng(3);
  const int n = 64;
  std::vector<float> x0(n), x(n), eps(n);
  for (float& v : x0) v = static_cast<float>(rng.Uniform(-1, 1));
  NoisePatches(x0.data(), 1, n, 700, 1000, &rng, x.data(), eps.data());
  // eta = 0: x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps.
  DiffusionOptions opts;
  const double abar = CosineAlphaBar(700, 1000), prev = CosineAlphaBar(300, 1000);
  std::vector<float> step = x;
  DdimUpdate(abar, prev, opts, n, eps.data(), &rng, step.data());
  for (int i = 0; i < n; ++i) {
    EXPECT_NEAR(step[i], std::sqrt(prev) * x0[i] + std::sqrt(1 - prev) * eps[i], 1e-5);
  }
  // Down to abar_prev = 1 the step lands on x0 itself, with or without eta.
  opts.eta = 1;
  step = x;
  DdimUpdate(abar, 1.0, opts, n, eps.data(), &rng, step.data());
  for (int i = 0; i < n; ++i) EXPECT_NEAR(step[i], x0[i], 1e-5);
}

v1::ModelConfig SmallConfig(int patch_dim) {
  v1::ModelConfig c;
  c.set_d_model(16);
  c.set_n_layer(2);
  c.set_vocab_size(data::Vocab{}.size());
  c.set_n_modalities(3);
  c.set_route_in(true);
  c.set_route_out(true);
  c.set_patch_dim(patch_dim);
  EXPECT_TRUE(ResolveModelConfig(&c, "test").ok());
  return c;
}

TEST(Decoder, SamplesAreSeededPerStreamAndStayInTheAllowedSet) {
  auto be = NewCpuBackend();
  auto model = LanguageModel::Create(SmallConfig(0), be.get(), DType::kF32, 2);
  ASSERT_TRUE(model.ok());
  auto lm = RecurrentLM::FromModel(**model);
  ASSERT_TRUE(lm.ok());
  const data::Vocab vocab;
  const TokenSet speech{{{vocab.speech_begin(), vocab.speech_end()}, {data::kEosSpeech, data::kEosSpeech + 1}}};
  auto run = [&](int streams, uint64_t seed) {
    Decoder dec(lm->get(), vocab, streams, seed);
    EXPECT_TRUE(dec.FeedAll({data::kBos, 's', 'i', 'x', data::kBosSpeech}).ok());
    auto out = dec.Sample(speech, data::kEosSpeech, 30, {1.f, 0});
    EXPECT_TRUE(out.ok());
    return *out;
  };
  auto three = run(3, 9), one = run(1, 9), other = run(1, 10);
  EXPECT_EQ(three[0], one[0]);
  EXPECT_NE(three[0], three[1]);
  EXPECT_NE(one[0], other[0]);
  for (const auto& s : three) {
    EXPECT_LE(s.size(), 30u);
    for (int32_t id : s) EXPECT_TRUE(id >= vocab.speech_begin() && id < vocab.speech_end()) << id;
  }
}

TEST(Decoder, SampleImageLeavesTheStateAfterTheCleanPatches) {
  auto be = NewCpuBackend();
  auto model = LanguageModel::Create(SmallConfig(16), be.get(), DType::kF32, 4);
  ASSERT_TRUE(model.ok());
  auto lm = RecurrentLM::FromModel(**model);
  ASSERT_TRUE(lm.ok());
  const data::Vocab vocab;
  const std::vector<int32_t> prompt = {data::kBos, 'a', data::kBoi};
  Decoder dec(lm->get(), vocab, 2, 5);
  ASSERT_TRUE(dec.FeedAll(prompt).ok());
  DiffusionOptions opts;
  opts.steps = 8;
  auto image = dec.SampleImage(5, opts);
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->size(), 2u * 5 * 16);
  for (float v : *image) EXPECT_TRUE(v >= -1.f && v <= 1.f) << v;
  EXPECT_NE(std::vector<float>(image->begin(), image->begin() + 80),
            std::vector<float>(image->begin() + 80, image->end()));
  ASSERT_TRUE(dec.FeedAll({data::kEoi}).ok());

  // Replaying prompt, patches (at step 1) and EOI from scratch gives the
  // same next-token logits.
  RecurrentState state = (*lm)->NewState(1);
  std::vector<float> logits(vocab.size());
  for (int32_t t : prompt) {
    StepInput in;
    in.token = t;
    ASSERT_TRUE((*lm)->Step({in}, &state, logits.data(), nullptr).ok());
  }
  for (int p = 0; p < 5; ++p) {
    StepInput in;
    in.token = data::kPad;
    in.modality = data::kImage;
    in.patch = &(*image)[p * 16];
    in.timestep = 1;
    ASSERT_TRUE((*lm)->Step({in}, &state, logits.data(), nullptr).ok());
  }
  StepInput eoi;
  eoi.token = data::kEoi;
  ASSERT_TRUE((*lm)->Step({eoi}, &state, logits.data(), nullptr).ok());
  for (int i = 0; i < vocab.size(); ++i) EXPECT_NEAR(logits[i], dec.logits(0)[i], 1e-6);

  // Seeded: the same seed samples the same image.
  Decoder again(lm->get(), vocab, 2, 5);
  ASSERT_TRUE(again.FeedAll(prompt).ok());
  EXPECT_EQ(*again.SampleImage(5, opts), *image);
}

}  // namespace
}  // namespace modamba::eval
