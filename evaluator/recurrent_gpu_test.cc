// The recurrent decoder on the GPU backend (fp32 products): its logits and
// Transfusion eps against the parallel forward on the GPU and against the
// decoder on the CPU, for the same models. Skips without a GPU.
#include <cstdio>
#include <memory>
#include <string>

#include "evaluator/recurrent.h"
#include "evaluator/recurrent_test_util.h"
#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"

namespace modamba::eval {
namespace {

using testing::EpsRelError;
using testing::MaxRelError;
using testing::ParallelLogits;
using testing::RandomBatch;
using testing::RecurrentOutputs;
using testing::RunRecurrent;
using testing::SettingConfig;

// fp32 on both backends, in different orders of summation (and the GPU's
// approximate exponentials): well above the CPU test's 3e-6, far below
// what a wrong row, state or routing group gives.
constexpr double kTol = 2e-5;

class RecurrentGpu : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    CudaBackendOptions options;
    options.matmul = MatmulPrecision::kFp32;
    auto gpu = NewCudaBackend(options);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = std::move(gpu).value();
    cpu_ = NewCpuBackend();
  }

  std::unique_ptr<Backend> cpu_, gpu_;
};

TEST_P(RecurrentGpu, MatchesParallelForwardAndCpuDecoder) {
  for (bool routed : {true, false}) {
    SCOPED_TRACE(routed ? "routed" : "dense");
    const v1::ModelConfig c = SettingConfig(GetParam(), routed);
    auto on_gpu = LanguageModel::Create(c, gpu_.get(), DType::kF32, 11);
    auto on_cpu = LanguageModel::Create(c, cpu_.get(), DType::kF32, 11);
    ASSERT_TRUE(on_gpu.ok() && on_cpu.ok());
    const Batch batch = RandomBatch(c, 37, 5);
    const std::vector<float> parallel = ParallelLogits(on_gpu->get(), batch);

    auto lm_gpu = RecurrentLM::FromModel(**on_gpu);
    auto lm_cpu = RecurrentLM::FromModel(**on_cpu);
    ASSERT_TRUE(lm_gpu.ok() && lm_cpu.ok());
    const RecurrentOutputs want = RunRecurrent(**lm_cpu, batch, true);
    for (bool together : {true, false}) {
      const char* how = together ? "together" : "one by one";
      const RecurrentOutputs got = RunRecurrent(**lm_gpu, batch, together);
      const double vs_parallel = MaxRelError(got.logits, parallel);
      const double vs_cpu = MaxRelError(got.logits, want.logits);
      EXPECT_LT(vs_parallel, kTol) << how << ": logits against the GPU's parallel forward";
      EXPECT_LT(vs_cpu, kTol) << how << ": logits against the CPU decoder";
      std::printf("%s %s %s: logits max rel error %.3g (parallel, GPU), %.3g (decoder, CPU)\n",
                  GetParam().c_str(), routed ? "routed" : "dense", how, vs_parallel, vs_cpu);
      if (c.patch_dim() > 0) {
        const double eps_parallel = EpsRelError(on_gpu->get(), batch, got.eps);
        const double eps_cpu = MaxRelError(got.eps, want.eps);
        EXPECT_LT(eps_parallel, kTol) << how << ": eps against the GPU's parallel forward";
        EXPECT_LT(eps_cpu, kTol) << how << ": eps against the CPU decoder";
        std::printf("  eps relative error %.3g (parallel, GPU), max rel %.3g (decoder, CPU)\n",
                    eps_parallel, eps_cpu);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Settings, RecurrentGpu,
                         ::testing::Values("chameleon", "transfusion", "trimodal"));

}  // namespace
}  // namespace modamba::eval
