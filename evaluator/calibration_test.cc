#include "evaluator/calibration.h"

#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

TEST(CalibrationTable, PutsTheJudgesRealAccuracyBesideTheModelsScores) {
  const std::map<std::string, double> metrics = {
      {"val/loss", 2.5},
      {"speech/accuracy", 0.25},
      {"speech/cer", 0.625},
      {"speech/frechet", 51.5},
      {"speech/ref_real_accuracy", 0.99},
      {"speech/ref_augmented_accuracy", 0.95},
      {"speech/ref_real_cer", 0.0125},
      {"speech/ref_real_frechet", 9.25},
      {"speech/ref_train_test_frechet", 1.5},
      {"speech/ref_units_accuracy", 0.85},
      {"speech/ref_units_cer", 0.125}};
  EXPECT_EQ(CalibrationTable(metrics, {{"speech", "fsdd-mlp/2, 2700 training items"}}),
            "speech judge on real FSDD test takes: 0.9900, augmented 0.9500, cer 0.0125; "
            "through the units 0.8500, cer 0.1250\n"
            "       model: accuracy 0.2500, cer 0.6250, frechet 51.50 (real at this sample size "
            "9.25, train vs test floor 1.50)\n"
            "       judge: fsdd-mlp/2, 2700 training items\n");
  EXPECT_EQ(CalibrationTable({{"val/loss", 2.5}}), "");
}

}  // namespace
}  // namespace modamba::eval
