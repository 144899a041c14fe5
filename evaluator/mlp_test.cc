#include "evaluator/mlp.h"

#include <cmath>

#include "core/file_util.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

// Three Gaussian blobs in 10 dimensions.
void Blobs(int n, uint64_t seed, std::vector<float>* x, std::vector<int32_t>* y) {
  Rng rng(seed);
  x->resize(n * 10);
  y->resize(n);
  for (int i = 0; i < n; ++i) {
    (*y)[i] = i % 3;
    for (int j = 0; j < 10; ++j) {
      (*x)[i * 10 + j] = static_cast<float>(rng.Normal(j % 3 == (*y)[i] ? 2.0 : 0.0, 1.0) + 5.0);
    }
  }
}

TEST(Mlp, LearnsSeparableClasses) {
  auto be = NewCpuBackend();
  auto mlp = Mlp::Create({10, {32, 16}, 3}, be.get(), 1);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  std::vector<float> x, test_x;
  std::vector<int32_t> y, test_y;
  Blobs(600, 1, &x, &y);
  Blobs(300, 2, &test_x, &test_y);
  (*mlp)->SetInputNormalisation(std::vector<float>(10, 5.f), std::vector<float>(10, 1.f));
  double first = 0, last = 0;
  for (int step = 1; step <= 300; ++step) {
    const int begin = (step * 60) % 600;
    AdamWStep s;
    s.lr = 3e-3;
    s.beta2 = 0.999;
    s.weight_decay = 1e-4;
    s.step = step;
    const double loss = (*mlp)->TrainStep(&x[begin * 10], &y[begin], 60, s);
    if (step == 1) first = loss;
    last = loss;
  }
  EXPECT_LT(last, 0.5 * first);
  std::vector<int32_t> pred = (*mlp)->Predict(test_x.data(), 300);
  int correct = 0;
  for (int i = 0; i < 300; ++i) correct += pred[i] == test_y[i];
  EXPECT_GT(correct, 285);  // the Bayes rate is about 98%

  // Save and load: identical logits and features.
  const std::string path = ::testing::TempDir() + "/mlp.safetensors";
  ASSERT_TRUE((*mlp)->Save(path, {{"what", "blobs"}}).ok());
  auto loaded = Mlp::Load(path, be.get());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->feature_dim(), 16);
  std::vector<float> la(900), lb(900), fa(300 * 16), fb(300 * 16);
  (*mlp)->Forward(test_x.data(), 300, la.data(), fa.data());
  (*loaded)->Forward(test_x.data(), 300, lb.data(), fb.data());
  EXPECT_EQ(la, lb);
  EXPECT_EQ(fa, fb);
}

// Central differences in double against Gradients, for every parameter of
// a network with the temporal conv front-end (two conv layers of 3 taps over
// 5 frames of 4 features, then two hidden layers).
TEST(Mlp, GradientsMatchFiniteDifferencesInDouble) {
  auto be = NewCpuBackend();
  MlpSpec spec{20, {6, 5}, 3, /*frames=*/5, /*conv_taps=*/3, /*conv=*/{4, 3}};
  auto mlp = Mlp::Create(spec, be.get(), 7, DType::kF64);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  constexpr int kN = 7;
  Rng rng(3);
  std::vector<float> x(kN * 20);
  for (float& v : x) v = static_cast<float>(rng.Normal(0, 1));
  const std::vector<int32_t> y = {0, 2, 1, 1, 0, 2, 2};
  (*mlp)->Gradients(x.data(), y.data(), kN);
  // Copied first: every call below overwrites the gradients.
  std::vector<std::vector<double>> analytics;
  for (auto [param, grad] : (*mlp)->ParametersAndGradients()) {
    ASSERT_EQ(grad->dtype(), DType::kF64);
    analytics.emplace_back(grad->data<double>(), grad->data<double>() + grad->numel());
  }
  int checked = 0;
  for (auto [param, grad] : (*mlp)->ParametersAndGradients()) {
    const std::vector<double>& analytic = analytics[checked];
    for (int64_t i = 0; i < param->numel(); ++i) {
      double* p = param->data<double>() + i;
      const double saved = *p, h = 1e-5;
      *p = saved + h;
      const double up = (*mlp)->Gradients(x.data(), y.data(), kN);
      *p = saved - h;
      const double down = (*mlp)->Gradients(x.data(), y.data(), kN);
      *p = saved;
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(analytic[i], numeric, 1e-7 + 1e-6 * std::abs(numeric))
          << "parameter " << checked << " element " << i;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 3 * 4 + 2);  // w, bias, taps of 4 layers; w, bias of the output
}

TEST(Mlp, ConvFrontEndSavesAndLoads) {
  auto be = NewCpuBackend();
  MlpSpec spec{12, {8}, 3, /*frames=*/4, /*conv_taps=*/2, /*conv=*/{5}};
  auto mlp = Mlp::Create(spec, be.get(), 1);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  std::vector<float> x(10 * 12);
  Rng rng(5);
  for (float& v : x) v = static_cast<float>(rng.Normal(0, 1));
  const std::string path = ::testing::TempDir() + "/conv_mlp.safetensors";
  ASSERT_TRUE((*mlp)->Save(path, {}).ok());
  auto loaded = Mlp::Load(path, be.get());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->spec().conv, spec.conv);
  EXPECT_EQ((*loaded)->spec().frames, 4);
  std::vector<float> la(30), lb(30);
  (*mlp)->Forward(x.data(), 10, la.data(), nullptr);
  (*loaded)->Forward(x.data(), 10, lb.data(), nullptr);
  EXPECT_EQ(la, lb);
  // A frame count that does not divide the input is refused.
  spec.frames = 5;
  EXPECT_FALSE(Mlp::Create(spec, be.get(), 1).ok());
}

TEST(Mlp, LoadNamesWhatIsMissing) {
  const std::string path = ::testing::TempDir() + "/broken_mlp.safetensors";
  Tensor w(DType::kF32, {4, 3});
  ASSERT_TRUE(SaveSafetensors(path, {{"layers.0.weight", &w}}, {{"mlp_spec", "3,4,2"}}).ok());
  auto be = NewCpuBackend();
  auto loaded = Mlp::Load(path, be.get());
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("layers.0.bias"), std::string::npos) << loaded.status();
  EXPECT_FALSE(Mlp::Create({3, {}, 2}, be.get(), 0).ok());
}

}  // namespace
}  // namespace modamba::eval
