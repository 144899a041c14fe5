#include "evaluator/test_util.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/config.h"
#include "core/data/builder.h"
#include "core/data/manifest.h"
#include "core/data/raw_data.h"
#include "core/status_macros.h"
#include "evaluator/digit_classifiers.h"

namespace modamba::eval::testing {

std::string RawDir() {
  const char* dir = std::getenv("MODAMBA_DATA_DIR");
  return dir != nullptr ? dir : "";
}

absl::StatusOr<std::string> BuildTinyDatasets(const std::string& out) {
  data::BuildOptions o;
  o.raw_dir = RawDir();
  o.out_dir = out;
  o.seq_len = 256;
  o.image_codes = 64;
  o.speech_units = 32;
  o.kmeans_iterations = 6;
  o.shard_sequences = 40;
  o.selection.mnist = {1500, 300};
  o.selection.fsdd = {60, 30};
  o.selection.cathy = {6, 3};
  o.selection.text_bytes = {20000, 4000};
  RETURN_IF_ERROR(data::BuildDatasets(o).status());
  return out;
}

absl::Status TrainQuickClassifiers(const std::string& dir) {
  auto be = NewCpuBackend();
  JudgeOptions quick;
  quick.train_items = 6000;
  quick.training.epochs = 3;
  RETURN_IF_ERROR(TrainJudge(JudgeKind::kImage, dir, RawDir(), be.get(), quick).status());
  quick.train_items = -1;
  quick.training.epochs = 4;
  quick.training.speech_copies = 1;
  return TrainJudge(JudgeKind::kSpeech, dir, RawDir(), be.get(), quick).status();
}

absl::StatusOr<v1::TrainConfig> TinyTrainConfig(const std::string& dataset_dir,
                                                const std::string& checkpoint_dir, int steps,
                                                bool transformer) {
  ASSIGN_OR_RETURN(data::DatasetManifest m, data::ReadDatasetManifest(dataset_dir));
  ASSIGN_OR_RETURN(v1::TrainConfig c, ParseTextProto<v1::TrainConfig>(R"pb(
    optimizer { lr: 5e-3 warmup_steps: 1 }
    batch_size: 2
    seed: 3
    eval_batches: 1
  )pb", "tiny config"));
  ASSIGN_OR_RETURN(
      *c.mutable_model(),
      ParseTextProto<v1::ModelConfig>(
          transformer ? "architecture: TRANSFORMER d_model: 16 n_layer: 2 n_head: 2 route_qkv: true "
                        "route_attn_out: true route_ffn_in: true route_ffn_out: true route_norms: true"
                      : "d_model: 16 n_layer: 2 d_state: 4 route_in: true route_x: true "
                        "route_dt: true route_out: true",
          "tiny model"));
  c.mutable_model()->set_vocab_size(m.vocab.size());
  c.mutable_model()->set_n_modalities(m.num_modalities);
  c.mutable_model()->set_patch_dim(m.patch_dim);
  c.set_seq_len(m.seq_len);
  c.set_steps(steps);
  c.set_dataset_dir(dataset_dir);
  c.set_checkpoint_dir(checkpoint_dir);
  RETURN_IF_ERROR(ResolveTrainConfig(&c, "tiny config"));
  return c;
}

}  // namespace modamba::eval::testing
