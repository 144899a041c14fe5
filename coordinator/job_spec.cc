#include "coordinator/job_spec.h"

#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/batch_source.h"
#include "core/config.h"
#include "core/data/manifest.h"
#include "core/file_util.h"
#include "core/flops.h"
#include "core/status_macros.h"

namespace modamba {
namespace {

absl::Status FieldError(const std::string& source, absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", why));
}

// `value` (unset: `fallback`) must lie in [lo, hi].
absl::Status Count(const std::string& source, const char* field, bool has, int32_t* value,
                   int32_t fallback, int32_t lo, int32_t hi) {
  if (!has) *value = fallback;
  if (*value < lo || *value > hi) {
    return FieldError(source, field, absl::StrCat(*value, " is outside [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RealPath(const std::string& path) {
  char buffer[PATH_MAX];
  if (realpath(path.c_str(), buffer) == nullptr) return absl::NotFoundError("does not exist");
  return std::string(buffer);
}

// Resolves `path` (relative paths start at the data root) and checks that it
// exists inside the data root once symlinks are followed, so a spec can
// never point a worker at files the operator did not offer.
absl::StatusOr<std::string> InsideDataRoot(const std::string& source, const char* field,
                                           const std::string& path, const std::string& data_root,
                                           bool want_dir) {
  if (data_root.empty()) return FieldError(source, field, "the coordinator has no --data_root");
  auto root = RealPath(data_root);
  if (!root.ok()) return FieldError(source, field, "the coordinator's data root does not exist");
  const std::string joined = absl::StartsWith(path, "/") ? path : absl::StrCat(*root, "/", path);
  auto real = RealPath(joined);
  if (!real.ok()) return FieldError(source, field, absl::StrCat("'", path, "' does not exist"));
  if (*real != *root && !absl::StartsWith(*real, absl::StrCat(*root, "/"))) {
    return FieldError(source, field, absl::StrCat("'", path, "' is outside the data root"));
  }
  struct stat st;
  if (stat(real->c_str(), &st) != 0 || S_ISDIR(st.st_mode) != want_dir) {
    return FieldError(source, field,
                      absl::StrCat("'", path, "' is not a ", want_dir ? "directory" : "file"));
  }
  return *real;
}

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

std::string GiB(int64_t bytes) { return absl::StrFormat("%.2f GiB", bytes / 1073741824.0); }

}  // namespace

absl::StatusOr<v1::JobSpec> ParseJobSpec(absl::string_view text, const std::string& source) {
  if (text.size() > kMaxJobSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": larger than ", kMaxJobSpecBytes, " bytes"));
  }
  return ParseTextProto<v1::JobSpec>(std::string(text), source);
}

absl::Status ResolveJobSpec(v1::JobSpec* spec, const SpecContext& context,
                            const std::string& source) {
  if (!ValidName(spec->name())) {
    return FieldError(source, "name", "required: 1 to 64 characters of [A-Za-z0-9._-]");
  }
  if (!spec->has_train()) return FieldError(source, "train", "required");
  if (!spec->train().checkpoint_dir().empty()) {
    return FieldError(source, "train.checkpoint_dir",
                      "the coordinator stores checkpoints; leave it empty");
  }
  RETURN_IF_ERROR(ResolveTrainConfig(spec->mutable_train(), absl::StrCat(source, ": train")));
  if (!spec->train().text_path().empty()) {
    ASSIGN_OR_RETURN(std::string text_path,
                     InsideDataRoot(source, "train.text_path", spec->train().text_path(),
                                    context.data_root, /*want_dir=*/false));
    spec->mutable_train()->set_text_path(text_path);
  }

  if (!spec->has_world_size()) return FieldError(source, "world_size", "required");
  int32_t value = spec->world_size();
  RETURN_IF_ERROR(Count(source, "world_size", true, &value, 0, 1, 1024));
  value = spec->n_evaluators();
  RETURN_IF_ERROR(Count(source, "n_evaluators", spec->has_n_evaluators(), &value, 0, 0, 64));
  spec->set_n_evaluators(value);
  if (value > 0 && !context.has_evaluator_binary) {
    return FieldError(source, "n_evaluators", "this coordinator has no --evaluator_binary");
  }
  value = spec->max_restarts();
  RETURN_IF_ERROR(Count(source, "max_restarts", spec->has_max_restarts(), &value, 3, 0, 1000));
  spec->set_max_restarts(value);
  const int32_t every = spec->train().checkpoint_every() > 0 ? spec->train().checkpoint_every()
                                                             : spec->train().steps();
  value = spec->checkpoint_every_steps();
  RETURN_IF_ERROR(Count(source, "checkpoint_every_steps", spec->has_checkpoint_every_steps(),
                        &value, every, 1, 1 << 30));
  spec->set_checkpoint_every_steps(value);
  spec->mutable_train()->set_checkpoint_every(value);
  value = spec->keep_last_checkpoints();
  RETURN_IF_ERROR(Count(source, "keep_last_checkpoints", spec->has_keep_last_checkpoints(), &value,
                        3, 1, 1000));
  spec->set_keep_last_checkpoints(value);

  v1::ClusterRequest* cluster = spec->mutable_cluster();
  value = cluster->nodes();
  RETURN_IF_ERROR(Count(source, "cluster.nodes", cluster->has_nodes(), &value, 1, 1,
                        spec->world_size()));
  cluster->set_nodes(value);
  if (spec->world_size() % value != 0) {
    return FieldError(source, "cluster.nodes",
                      absl::StrCat(value, " nodes do not divide world_size ", spec->world_size(),
                                   ": every node runs the same number of ranks"));
  }
  if (!cluster->partition().empty() && !ValidName(cluster->partition())) {
    return FieldError(source, "cluster.partition", "1 to 64 characters of [A-Za-z0-9._-]");
  }
  if (cluster->has_time_limit_minutes() && cluster->time_limit_minutes() <= 0) {
    return FieldError(source, "cluster.time_limit_minutes", "must be > 0");
  }

  if (spec->device().empty()) spec->set_device("cpu");
  if (spec->device() != "cpu" && spec->device() != "gpu") {
    return FieldError(source, "device", "must be \"cpu\" or \"gpu\"");
  }
  const bool gpu = spec->device() == "gpu";
  const int have = gpu ? context.gpus : context.cpu_slots;
  if (WorkersOf(*spec) > have) {
    return FieldError(
        source, "world_size",
        absl::StrCat(spec->world_size(), " trainers + ", spec->n_evaluators(), " evaluators need ",
                     WorkersOf(*spec), gpu ? " GPUs" : " CPU slots", "; this host has ", have));
  }

  if (spec->dataset_dir().empty()) return FieldError(source, "dataset_dir", "required");
  ASSIGN_OR_RETURN(std::string dataset_dir,
                   InsideDataRoot(source, "dataset_dir", spec->dataset_dir(), context.data_root,
                                  /*want_dir=*/true));
  spec->set_dataset_dir(dataset_dir);
  // Packed shards: the spec must fit them, or it could never run.
  if (FileExists(absl::StrCat(dataset_dir, "/", data::kManifestFile))) {
    ASSIGN_OR_RETURN(data::DatasetManifest manifest, data::ReadDatasetManifest(dataset_dir));
    v1::TrainConfig train = spec->train();
    train.set_dataset_dir(dataset_dir);
    RETURN_IF_ERROR(CheckDatasetFits(train, manifest, absl::StrCat(source, ": train.")));
  }

  const int64_t budget = gpu ? context.gpu_memory_bytes : context.worker_memory_bytes;
  const MemoryEstimate need = EstimateTrainerMemory(*spec);
  if (budget > 0 && need.total() > budget) {
    return FieldError(
        source, "train.batch_size",
        absl::StrCat("a trainer rank needs about ", need.Describe(), "; ",
                     gpu ? "a GPU has " : "a CPU worker may use ", GiB(budget),
                     gpu ? " (--gpu_memory_gib)" : " (--worker_memory_gib)",
                     ": lower batch_size or seq_len, raise world_size or grad_accum_steps"));
  }
  return absl::OkStatus();
}

MemoryEstimate EstimateTrainerMemory(const v1::JobSpec& spec) {
  const v1::TrainConfig& t = spec.train();
  const v1::ModelConfig& m = t.model();
  const int64_t params = TotalParams(m);
  const int64_t ranks = std::max(1, spec.world_size());
  const int64_t d_inner = int64_t{m.expand()} * m.d_model();
  const int64_t embed_head = int64_t{m.vocab_size()} * m.d_model() * (m.tie_embeddings() ? 1 : 2);
  const int64_t largest_bucket = std::max(embed_head, (params - embed_head) / std::max(1, m.n_layer()));
  const int64_t tokens =
      int64_t{t.batch_size()} / (ranks * std::max(1, t.grad_accum_steps())) * t.seq_len();
  // Per token: each layer keeps xz, u, y, the dt/B/C projections and its
  // residual input; the head's logits, their gradient and softmax. Measured
  // on the CPU trainer (4 layers, d_model 64, vocab 256): a peak RSS of 0.26,
  // 0.45 and 1.17 GiB at 8, 64 and 256 x 256 tokens; this gives 0.28, 0.48
  // and 1.16.
  const int64_t per_token = int64_t{m.n_layer()} * (4 * d_inner + m.dt_rank() + 2 * m.d_state() +
                                                    3 * m.d_model()) +
                            3 * int64_t{m.vocab_size()};
  MemoryEstimate e;
  e.state = 16 * ((params + ranks - 1) / ranks);
  e.gathered = ranks > 1 ? 16 * largest_bucket : 0;
  e.activations = 4 * tokens * per_token;
  e.runtime = int64_t{256} << 20;
  return e;
}

std::string MemoryEstimate::Describe() const {
  return absl::StrCat(GiB(total()), " (parameters, gradients and AdamW moments ", GiB(state),
                      ", gathered layers ", GiB(gathered), ", activations ", GiB(activations),
                      ", runtime ", GiB(runtime), ")");
}

int WorkersOf(const v1::JobSpec& spec) { return spec.world_size() + spec.n_evaluators(); }

}  // namespace modamba
