#include "trainer/train_loop.h"

#include <chrono>

#include "absl/strings/str_format.h"
#include "core/checkpoint.h"
#include "core/file_util.h"
#include "core/flops.h"
#include "core/optimizer.h"
#include "core/rng.h"
#include "core/status_macros.h"
#include "core/text_corpus.h"

namespace modamba {
namespace {

absl::StatusOr<double> Validate(MambaLM* model, const ByteCorpus& corpus,
                                const v1::TrainConfig& c) {
  LossReport total{std::vector<double>(c.model().n_modalities(), 0.0),
                   std::vector<int64_t>(c.model().n_modalities(), 0)};
  for (int i = 0; i < c.eval_batches(); ++i) {
    Batch b = corpus.Get(ByteCorpus::Split::kVal, c.seed(), i, c.batch_size(), c.seq_len());
    ASSIGN_OR_RETURN(LossReport r, model->Evaluate(b));
    total.Add(r);
  }
  return total.mean();
}

}  // namespace

absl::StatusOr<std::vector<StepRecord>> TrainText(const v1::TrainConfig& c, Backend* backend,
                                                  const TrainOptions& options) {
  if (c.text_path().empty()) {
    return absl::InvalidArgumentError("text_path: required for text training");
  }
  if (c.model().vocab_size() < 256) {
    return absl::InvalidArgumentError("model.vocab_size: byte-level text needs at least 256");
  }
  ASSIGN_OR_RETURN(ByteCorpus corpus, ByteCorpus::Load(c.text_path(), c.val_fraction()));
  RETURN_IF_ERROR(corpus.CheckFits(c.seq_len()));
  ASSIGN_OR_RETURN(std::unique_ptr<MambaLM> model,
                   MambaLM::Create(c.model(), backend, DType::kF32, c.seed()));
  AdamWOptimizer optimizer(c.optimizer(), model->mutable_params());
  const double flops_per_token = TrainingFlopsPerToken(c.model());
  const int64_t tokens_per_step = int64_t{c.batch_size()} * c.seq_len();

  // Resume from the newest checkpoint, if any.
  int64_t first_step = 1;
  double flops = 0;
  Rng rng(c.seed());
  if (!c.checkpoint_dir().empty()) {
    ASSIGN_OR_RETURN(std::string latest, LatestCheckpoint(c.checkpoint_dir()));
    if (!latest.empty()) {
      ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(latest));
      RETURN_IF_ERROR(LoadCheckpoint(latest, model->mutable_params(), &optimizer.m(), &optimizer.v()));
      first_step = manifest.step() + 1;
      flops = manifest.flops();
      ASSIGN_OR_RETURN(rng, Rng::Deserialize(manifest.rng_state()));
      if (options.log) *options.log << "resumed from " << latest << " at step " << manifest.step() << "\n";
    }
  }
  auto checkpoint = [&](int64_t step) -> absl::Status {
    if (c.checkpoint_dir().empty()) return absl::OkStatus();
    RETURN_IF_ERROR(MakeDirs(c.checkpoint_dir()));
    v1::CheckpointManifest manifest;
    *manifest.mutable_config() = c;
    manifest.set_step(step);
    manifest.set_flops(flops);
    manifest.set_rng_state(rng.Serialize());
    manifest.set_data_position(step);  // batch index of the next step is step + 1
    const std::string dir = CheckpointPath(c.checkpoint_dir(), step);
    RETURN_IF_ERROR(SaveCheckpoint(dir, model->params(), optimizer.m(), optimizer.v(), manifest));
    if (options.log) *options.log << "checkpoint " << dir << "\n";
    return absl::OkStatus();
  };

  std::vector<StepRecord> records;
  const int64_t last_step = options.stop_after > 0 ? std::min<int64_t>(options.stop_after, c.steps())
                                                   : c.steps();
  for (int64_t step = first_step; step <= last_step; ++step) {
    auto start = std::chrono::steady_clock::now();
    Batch batch = corpus.Get(ByteCorpus::Split::kTrain, c.seed(), step, c.batch_size(), c.seq_len());
    StepRecord rec;
    rec.step = step;
    ASSIGN_OR_RETURN(rec.loss, model->ForwardBackward(batch));
    AdamWOptimizer::StepInfo info = optimizer.Step(step, c.steps());
    backend->Synchronize();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    flops += flops_per_token * tokens_per_step;
    rec.lr = info.lr;
    rec.grad_norm = info.grad_norm;
    rec.tokens_per_second = tokens_per_step / seconds;
    rec.flops = flops;
    if (c.eval_every() > 0 && (step % c.eval_every() == 0 || step == c.steps())) {
      ASSIGN_OR_RETURN(rec.val_loss, Validate(model.get(), corpus, c));
    }
    if (options.log && (step % c.log_every() == 0 || step == last_step || rec.val_loss >= 0)) {
      *options.log << absl::StrFormat(
          "step %5d/%d | loss %.4f | lr %.2e | grad norm %.3f | %8.0f tok/s | %.3e FLOPs%s\n", step,
          c.steps(), rec.loss.mean(), rec.lr, rec.grad_norm, rec.tokens_per_second, rec.flops,
          rec.val_loss >= 0 ? absl::StrFormat(" | val loss %.4f", rec.val_loss) : "");
      options.log->flush();
    }
    records.push_back(rec);
    const bool periodic = c.checkpoint_every() > 0 && step % c.checkpoint_every() == 0;
    if (periodic || step == last_step) RETURN_IF_ERROR(checkpoint(step));
  }
  return records;
}

}  // namespace modamba
