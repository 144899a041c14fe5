#include "core/config.h"

#include "core/file_util.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

constexpr char kValid[] = R"pb(
  model { d_model: 64 n_layer: 2 vocab_size: 256 n_modalities: 3 }
  optimizer { lr: 1e-3 }
  steps: 10
  batch_size: 2
  seq_len: 32
)pb";

absl::Status Load(const std::string& text) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/bad.textproto";
  EXPECT_TRUE(WriteFileAtomic(path, text).ok());
  return LoadTrainConfig(path).status();
}

void ExpectError(const std::string& text, const std::string& needle) {
  absl::Status st = Load(text);
  ASSERT_FALSE(st.ok()) << "accepted: " << text;
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("bad.textproto"), std::string::npos) << st.message();
}

TEST(Config, ValidConfigGetsDefaults) {
  auto c = ParseTextProto<v1::TrainConfig>(kValid, "inline");
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(ResolveTrainConfig(&*c, "inline").ok());
  EXPECT_EQ(c->model().d_state(), 16);
  EXPECT_EQ(c->model().d_conv(), 4);
  EXPECT_EQ(c->model().expand(), 2);
  EXPECT_EQ(c->model().dt_rank(), 4);  // ceil(64 / 16)
  EXPECT_FLOAT_EQ(c->optimizer().weight_decay(), 0.1f);
  EXPECT_EQ(c->on_nonfinite(), "fail");
  EXPECT_EQ(c->max_nonfinite_steps(), 10);
}

TEST(Config, UnknownFieldNamesTheFieldAndLine) {
  ExpectError("model { d_modle: 3 }", "d_modle");
  ExpectError("model {\n d_model: 8\n n_layer: 1\n vocab_size: 4\n colour: 1 }", "5:");
}

TEST(Config, SyntaxErrorIsReported) { ExpectError("model { d_model: }", "1:"); }

TEST(Config, MissingRequiredValues) {
  ExpectError("optimizer { lr: 1 } steps: 1 batch_size: 1 seq_len: 2", "model: required");
  ExpectError("model { n_layer: 1 vocab_size: 4 } optimizer { lr: 1 } steps: 1 batch_size: 1 seq_len: 2",
              "model.d_model: required");
  ExpectError("model { d_model: 8 n_layer: 1 vocab_size: 4 } steps: 1 batch_size: 1 seq_len: 2",
              "optimizer: required");
  ExpectError("model { d_model: 8 n_layer: 1 vocab_size: 4 } optimizer { lr: 1 } batch_size: 1 seq_len: 2",
              "steps: required");
}

TEST(Config, OutOfRangeValuesNameTheField) {
  const std::string tail = " optimizer { lr: 1e-3 } steps: 1 batch_size: 1 seq_len: 8";
  ExpectError("model { d_model: 0 n_layer: 1 vocab_size: 4 }" + tail, "model.d_model");
  ExpectError("model { d_model: -5 n_layer: 1 vocab_size: 4 }" + tail, "model.d_model");
  ExpectError("model { d_model: 8 n_layer: 1 vocab_size: 4 n_modalities: 9 }" + tail,
              "model.n_modalities: 9 is outside [1, 8]");
  ExpectError("model { d_model: 8 n_layer: 1 vocab_size: 4 d_conv: 5 }" + tail, "model.d_conv");
  ExpectError("model { d_model: 8 n_layer: 1 vocab_size: 4 d_conv: 1 }" + tail, "model.d_conv");
  ExpectError("model { d_model: 8 n_layer: 1 vocab_size: 4 } optimizer { lr: -1 } steps: 1 "
              "batch_size: 1 seq_len: 8", "optimizer.lr");
  ExpectError("model { d_model: 8 n_layer: 1 vocab_size: 4 }" +
                  std::string(" optimizer { lr: 1e-3 } steps: 1 batch_size: 0 seq_len: 8"),
              "batch_size");
  ExpectError("model { d_model: 8 n_layer: 1 vocab_size: 4 }" +
                  std::string(" optimizer { lr: 1e-3 beta2: 1.5 } steps: 1 batch_size: 1 seq_len: 8"),
              "optimizer.beta2");
  ExpectError("model { d_model: 8 n_layer: 1 vocab_size: 4 }" + tail + " on_nonfinite: \"ignore\"",
              "on_nonfinite: 'ignore' is not fail, skip_step or rollback");
  ExpectError("model { d_model: 8 n_layer: 1 vocab_size: 4 }" + tail + " max_nonfinite_steps: -1",
              "max_nonfinite_steps");
}

TEST(Config, MissingFileNamesIt) {
  auto c = LoadTrainConfig("/no/such/config.textproto");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/no/such/config.textproto"), std::string::npos);
}

}  // namespace
}  // namespace modamba
