#include "core/batch_source.h"

#include "absl/strings/str_cat.h"
#include "core/diffusion.h"
#include "core/rng.h"
#include "core/status_macros.h"
#include "core/text_corpus.h"

namespace modamba {
namespace {

template <typename T>
std::vector<T> Rows(const std::vector<T>& v, int64_t begin, int64_t n, int64_t width) {
  return std::vector<T>(v.begin() + begin * width, v.begin() + (begin + n) * width);
}

// Splits this rank's share of a global batch into micro-batches.
std::vector<Batch> Micro(const Batch& mine, int micro) {
  std::vector<Batch> out;
  const int64_t per = mine.batch / micro;
  for (int i = 0; i < micro; ++i) out.push_back(SliceBatch(mine, i * per, per));
  return out;
}

class TextSource : public BatchSource {
 public:
  TextSource(ByteCorpus corpus, const v1::TrainConfig& c, int rank, int world)
      : corpus_(std::move(corpus)), c_(c), rank_(rank), world_(world) {}

  absl::StatusOr<std::vector<Batch>> NextStep() override {
    ++position_;
    return Micro(Mine(corpus_.Get(ByteCorpus::Split::kTrain, c_.seed(), position_,
                                  c_.batch_size(), c_.seq_len())),
                 c_.grad_accum_steps());
  }
  int64_t position() const override { return position_; }
  absl::Status Seek(int64_t position) override {
    position_ = position;
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<Batch>> Validation() override {
    std::vector<Batch> out;
    for (int i = 0; i < c_.eval_batches(); ++i) {
      out.push_back(Mine(corpus_.Get(ByteCorpus::Split::kVal, c_.seed(), i, c_.batch_size(),
                                     c_.seq_len())));
    }
    return out;
  }

 private:
  Batch Mine(const Batch& global) const {
    const int64_t per = global.batch / world_;
    return SliceBatch(global, rank_ * per, per);
  }

  ByteCorpus corpus_;
  v1::TrainConfig c_;
  int rank_, world_;
  int64_t position_ = 0;  // steps consumed
};

class ShardSource : public BatchSource {
 public:
  ShardSource(std::unique_ptr<data::ShardReader> train, const v1::TrainConfig& c, int rank,
              int world)
      : train_(std::move(train)), c_(c), rank_(rank), world_(world) {}

  absl::StatusOr<std::vector<Batch>> NextStep() override {
    ASSIGN_OR_RETURN(Batch mine, Read(train_.get(), c_.batch_size() / world_));
    return Micro(mine, c_.grad_accum_steps());
  }
  int64_t position() const override { return train_->position(); }
  absl::Status Seek(int64_t position) override { return train_->Seek(position); }
  absl::StatusOr<std::vector<Batch>> Validation() override {
    ASSIGN_OR_RETURN(auto val, data::ShardReader::Open(c_.dataset_dir(), "val", rank_, world_));
    std::vector<Batch> out;
    for (int i = 0; i < c_.eval_batches(); ++i) {
      ASSIGN_OR_RETURN(Batch b, Read(val.get(), c_.batch_size() / world_));
      out.push_back(std::move(b));
    }
    return out;
  }

 private:
  absl::StatusOr<Batch> Read(data::ShardReader* reader, int n) {
    // Row j of this rank is global stream item position + j * world + rank.
    const int64_t start = reader->position();
    data::PackedBatch packed;
    RETURN_IF_ERROR(reader->Next(n, &packed));
    std::vector<int64_t> items(n);
    for (int j = 0; j < n; ++j) items[j] = start + int64_t{j} * world_ + rank_;
    return ToModelBatch(packed, c_.model(), c_.seed(), items);
  }

  std::unique_ptr<data::ShardReader> train_;
  v1::TrainConfig c_;
  int rank_, world_;
};

}  // namespace

Batch SliceBatch(const Batch& b, int64_t begin, int64_t n) {
  Batch out;
  out.batch = n;
  out.seq_len = b.seq_len;
  const int64_t L = b.seq_len;
  out.tokens = Rows(b.tokens, begin, n, L);
  out.modality = Rows(b.modality, begin, n, L);
  out.doc_start = Rows(b.doc_start, begin, n, L);
  out.targets = Rows(b.targets, begin, n, L);
  out.target_modality = Rows(b.target_modality, begin, n, L);
  out.loss_mask = Rows(b.loss_mask, begin, n, L);
  const int64_t pd = b.patch_rows.empty() ? 0 : b.patch_input.size() / b.patch_rows.size();
  for (size_t i = 0; i < b.patch_rows.size(); ++i) {
    const int64_t row = b.patch_rows[i];
    if (row < begin * L || row >= (begin + n) * L) continue;
    out.patch_rows.push_back(static_cast<int32_t>(row - begin * L));
    out.patch_timestep.push_back(b.patch_timestep[i]);
    out.patch_input.insert(out.patch_input.end(), b.patch_input.begin() + i * pd,
                           b.patch_input.begin() + (i + 1) * pd);
    out.patch_target.insert(out.patch_target.end(), b.patch_target.begin() + i * pd,
                            b.patch_target.begin() + (i + 1) * pd);
  }
  return out;
}

Batch ToModelBatch(const data::PackedBatch& p, const v1::ModelConfig& model, uint64_t seed,
                   const std::vector<int64_t>& stream_items) {
  Batch b;
  b.batch = p.batch;
  b.seq_len = p.seq_len;
  const int64_t n = b.rows(), L = p.seq_len;
  b.tokens = p.tokens;
  b.modality = p.modality;
  b.doc_start = p.doc_start;
  b.targets.assign(n, 0);
  b.target_modality.assign(n, 0);
  b.loss_mask.assign(n, 0.f);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = i % L;
    if (t + 1 == L || p.doc_start[i + 1] || !p.loss_mask[i + 1]) continue;
    b.targets[i] = p.tokens[i + 1];
    b.target_modality[i] = p.modality[i + 1];
    b.loss_mask[i] = 1.f;
  }
  const int pd = p.patch_dim;
  if (pd == 0 || model.patch_dim() == 0) return b;
  // Images are maximal runs of patch positions; each gets one timestep.
  int64_t patch = 0;
  for (int64_t row = 0; row < p.batch; ++row) {
    int image = 0;
    for (int64_t t = 0; t < L;) {
      if (!p.patch_flag[row * L + t]) {
        ++t;
        continue;
      }
      int64_t end = t;
      while (end < L && p.patch_flag[row * L + end]) ++end;
      Rng rng = Rng::ForName(seed, absl::StrCat("noise/", stream_items[row], "/", image++));
      const int32_t step = 1 + static_cast<int32_t>(rng.Below(model.diffusion_steps()));
      const int64_t count = end - t;
      std::vector<float> x_t(count * pd), eps(count * pd);
      NoisePatches(&p.patches[patch * pd], count, pd, step, model.diffusion_steps(), &rng,
                   x_t.data(), eps.data());
      for (int64_t k = 0; k < count; ++k) {
        b.patch_rows.push_back(static_cast<int32_t>(row * L + t + k));
        b.patch_timestep.push_back(step);
      }
      b.patch_input.insert(b.patch_input.end(), x_t.begin(), x_t.end());
      b.patch_target.insert(b.patch_target.end(), eps.begin(), eps.end());
      patch += count;
      t = end;
    }
  }
  return b;
}

absl::Status CheckDatasetFits(const v1::TrainConfig& c, const data::DatasetManifest& m,
                              const std::string& where) {
  if (m.seq_len != c.seq_len()) {
    return absl::InvalidArgumentError(absl::StrCat(where, "seq_len: ", c.seq_len(),
                                                   " but the shards in ", c.dataset_dir(),
                                                   " hold sequences of ", m.seq_len));
  }
  if (m.vocab.size() > c.model().vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat(where, "model.vocab_size: ",
                                                   c.model().vocab_size(),
                                                   " is smaller than the dataset's ", m.vocab.size()));
  }
  if (m.patch_dim != c.model().patch_dim()) {
    return absl::InvalidArgumentError(absl::StrCat(where, "model.patch_dim: ",
                                                   c.model().patch_dim(),
                                                   " but the dataset's patches have ", m.patch_dim));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BatchSource>> OpenBatchSource(const v1::TrainConfig& c, int rank,
                                                             int world_size) {
  const int64_t per_rank = int64_t{world_size} * c.grad_accum_steps();
  if (c.batch_size() % per_rank != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch_size: ", c.batch_size(), " does not divide into ", world_size, " ranks x ",
        c.grad_accum_steps(), " micro-batches"));
  }
  if (!c.dataset_dir().empty()) {
    ASSIGN_OR_RETURN(auto reader, data::ShardReader::Open(c.dataset_dir(), "train", rank, world_size));
    const auto& m = reader->manifest();
    RETURN_IF_ERROR(CheckDatasetFits(c, m, ""));
    if (m.num_modalities > c.model().n_modalities()) {
      return absl::InvalidArgumentError(absl::StrCat("model.n_modalities: ", c.model().n_modalities(),
                                                     " but the dataset has ", m.num_modalities));
    }
    return std::unique_ptr<BatchSource>(new ShardSource(std::move(reader), c, rank, world_size));
  }
  if (c.text_path().empty()) {
    return absl::InvalidArgumentError("dataset_dir or text_path: one is required");
  }
  if (c.model().vocab_size() < 256) {
    return absl::InvalidArgumentError("model.vocab_size: byte-level text needs at least 256");
  }
  ASSIGN_OR_RETURN(ByteCorpus corpus, ByteCorpus::Load(c.text_path(), c.val_fraction()));
  RETURN_IF_ERROR(corpus.CheckFits(c.seq_len()));
  return std::unique_ptr<BatchSource>(new TextSource(std::move(corpus), c, rank, world_size));
}

}  // namespace modamba
