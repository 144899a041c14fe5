#include "core/config.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace modamba {
namespace {

class CollectFirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (error_.empty()) error_ = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

absl::Status FieldError(const std::string& where, const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", field, ": ", why));
}

// Checks lo <= value <= hi for a field.
template <typename V>
absl::Status InRange(const std::string& where, const std::string& field, V value, V lo, V hi) {
  if (!(value >= lo && value <= hi)) {  // also rejects NaN
    return FieldError(where, field, absl::StrCat(value, " is outside [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseTextProtoInto(const std::string& text, const std::string& source,
                                google::protobuf::Message* message) {
  CollectFirstError errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, message)) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", errors.error()));
  }
  return absl::OkStatus();
}

namespace {
// The block kind's own fields: the Transformer's defaults, and neither
// kind's switches on the other.
absl::Status ResolveArchitecture(v1::ModelConfig* m, const std::string& where,
                                 const std::string& prefix) {
  auto f = [&](const char* name) { return prefix + name; };
  const bool transformer = m->architecture() == v1::ModelConfig::TRANSFORMER;
  const char* other = transformer ? "applies to architecture MAMBA only"
                                  : "applies to architecture TRANSFORMER only";
  const std::vector<std::pair<const char*, bool>> mamba_only = {
      {"route_in", m->route_in()}, {"route_x", m->route_x()},
      {"route_dt", m->route_dt()}, {"route_out", m->route_out()}};
  const std::vector<std::pair<const char*, bool>> transformer_only = {
      {"route_qkv", m->route_qkv()},         {"route_attn_out", m->route_attn_out()},
      {"route_ffn_in", m->route_ffn_in()},   {"route_ffn_out", m->route_ffn_out()},
      {"route_norms", m->route_norms()},     {"n_head", m->n_head() != 0},
      {"d_ff", m->d_ff() != 0},              {"rope_theta", m->rope_theta() != 0}};
  for (const auto& [name, set] : transformer ? mamba_only : transformer_only) {
    if (set) return FieldError(where, f(name), other);
  }
  if (!transformer) return absl::OkStatus();
  if (m->n_head() == 0) m->set_n_head(std::max(1, m->d_model() / 64));
  RETURN_IF_ERROR(InRange(where, f("n_head"), m->n_head(), 1, m->d_model()));
  if (m->d_model() % m->n_head() != 0 || (m->d_model() / m->n_head()) % 2 != 0) {
    return FieldError(where, f("n_head"),
                      absl::StrCat(m->n_head(), " heads do not split d_model ", m->d_model(),
                                   " into heads of an even size"));
  }
  if (m->d_ff() == 0) m->set_d_ff((8 * m->d_model() / 3 + 7) / 8 * 8);
  RETURN_IF_ERROR(InRange(where, f("d_ff"), m->d_ff(), 1, 1 << 20));
  if (m->rope_theta() == 0) m->set_rope_theta(10000);
  return InRange(where, f("rope_theta"), m->rope_theta(), 1.0f, 1e9f);
}
}  // namespace

absl::Status ResolveModelConfig(v1::ModelConfig* m, const std::string& where,
                                const std::string& prefix) {
  auto f = [&](const char* name) { return prefix + name; };
  if (!m->has_d_model()) return FieldError(where, f("d_model"), "required");
  if (!m->has_n_layer()) return FieldError(where, f("n_layer"), "required");
  if (!m->has_vocab_size()) return FieldError(where, f("vocab_size"), "required");
  RETURN_IF_ERROR(InRange(where, f("d_model"), m->d_model(), 1, 1 << 16));
  RETURN_IF_ERROR(InRange(where, f("n_layer"), m->n_layer(), 1, 1024));
  RETURN_IF_ERROR(InRange(where, f("vocab_size"), m->vocab_size(), 1, 1 << 24));
  if (m->n_modalities() == 0) m->set_n_modalities(1);
  RETURN_IF_ERROR(InRange(where, f("n_modalities"), m->n_modalities(), 1, 8));
  if (m->d_state() == 0) m->set_d_state(16);
  RETURN_IF_ERROR(InRange(where, f("d_state"), m->d_state(), 1, 256));
  if (m->d_conv() == 0) m->set_d_conv(4);
  RETURN_IF_ERROR(InRange(where, f("d_conv"), m->d_conv(), 2, 4));
  if (m->expand() == 0) m->set_expand(2);
  RETURN_IF_ERROR(InRange(where, f("expand"), m->expand(), 1, 16));
  if (m->dt_rank() == 0) m->set_dt_rank((m->d_model() + 15) / 16);
  RETURN_IF_ERROR(InRange(where, f("dt_rank"), m->dt_rank(), 1, m->d_model()));
  if (m->norm_eps() == 0) m->set_norm_eps(1e-5f);
  RETURN_IF_ERROR(InRange(where, f("norm_eps"), m->norm_eps(), 1e-12f, 1.0f));
  if (m->dt_min() == 0) m->set_dt_min(1e-3f);
  if (m->dt_max() == 0) m->set_dt_max(1e-1f);
  if (m->dt_init_floor() == 0) m->set_dt_init_floor(1e-4f);
  RETURN_IF_ERROR(InRange(where, f("dt_min"), m->dt_min(), 1e-8f, 10.0f));
  RETURN_IF_ERROR(InRange(where, f("dt_max"), m->dt_max(), m->dt_min(), 10.0f));
  RETURN_IF_ERROR(InRange(where, f("dt_init_floor"), m->dt_init_floor(), 0.0f, 10.0f));
  if (m->init_std() == 0) m->set_init_std(0.02f);
  RETURN_IF_ERROR(InRange(where, f("init_std"), m->init_std(), 1e-8f, 10.0f));
  RETURN_IF_ERROR(InRange(where, f("patch_dim"), m->patch_dim(), 0, 4096));
  if (!m->has_diffusion_weight()) m->set_diffusion_weight(5.0f);
  RETURN_IF_ERROR(InRange(where, f("diffusion_weight"), m->diffusion_weight(), 0.0f, 1e4f));
  if (m->diffusion_steps() == 0) m->set_diffusion_steps(1000);
  RETURN_IF_ERROR(InRange(where, f("diffusion_steps"), m->diffusion_steps(), 1, 1 << 20));
  return ResolveArchitecture(m, where, prefix);
}

absl::Status ResolveTrainConfig(v1::TrainConfig* c, const std::string& where) {
  if (!c->has_model()) return FieldError(where, "model", "required");
  RETURN_IF_ERROR(ResolveModelConfig(c->mutable_model(), where));
  if (!c->has_optimizer()) return FieldError(where, "optimizer", "required");
  v1::OptimizerConfig* o = c->mutable_optimizer();
  if (!o->has_lr()) return FieldError(where, "optimizer.lr", "required");
  RETURN_IF_ERROR(InRange(where, "optimizer.lr", o->lr(), 1e-12f, 10.0f));
  if (!o->has_min_lr_ratio()) o->set_min_lr_ratio(0.1f);
  RETURN_IF_ERROR(InRange(where, "optimizer.min_lr_ratio", o->min_lr_ratio(), 0.0f, 1.0f));
  RETURN_IF_ERROR(InRange(where, "optimizer.warmup_steps", o->warmup_steps(), 0, 1 << 30));
  if (o->beta1() == 0) o->set_beta1(0.9f);
  if (o->beta2() == 0) o->set_beta2(0.95f);
  if (o->eps() == 0) o->set_eps(1e-8f);
  RETURN_IF_ERROR(InRange(where, "optimizer.beta1", o->beta1(), 0.0f, 0.99999f));
  RETURN_IF_ERROR(InRange(where, "optimizer.beta2", o->beta2(), 0.0f, 0.99999f));
  RETURN_IF_ERROR(InRange(where, "optimizer.eps", o->eps(), 1e-30f, 1.0f));
  if (!o->has_weight_decay()) o->set_weight_decay(0.1f);
  RETURN_IF_ERROR(InRange(where, "optimizer.weight_decay", o->weight_decay(), 0.0f, 10.0f));
  if (!o->has_grad_clip()) o->set_grad_clip(1.0f);
  RETURN_IF_ERROR(InRange(where, "optimizer.grad_clip", o->grad_clip(), 0.0f, 1e6f));

  if (!c->has_steps()) return FieldError(where, "steps", "required");
  if (!c->has_batch_size()) return FieldError(where, "batch_size", "required");
  if (!c->has_seq_len()) return FieldError(where, "seq_len", "required");
  RETURN_IF_ERROR(InRange(where, "steps", c->steps(), 1, 1 << 30));
  RETURN_IF_ERROR(InRange(where, "batch_size", c->batch_size(), 1, 1 << 20));
  RETURN_IF_ERROR(InRange(where, "seq_len", c->seq_len(), 2, 1 << 24));
  if (c->grad_accum_steps() == 0) c->set_grad_accum_steps(1);
  RETURN_IF_ERROR(InRange(where, "grad_accum_steps", c->grad_accum_steps(), 1, c->batch_size()));
  if (c->batch_size() % c->grad_accum_steps() != 0) {
    return FieldError(where, "grad_accum_steps", absl::StrCat(c->grad_accum_steps(),
                      " does not divide batch_size ", c->batch_size()));
  }
  if (!c->has_val_fraction()) c->set_val_fraction(0.1f);
  RETURN_IF_ERROR(InRange(where, "val_fraction", c->val_fraction(), 0.0f, 0.9f));
  if (c->log_every() == 0) c->set_log_every(1);
  RETURN_IF_ERROR(InRange(where, "log_every", c->log_every(), 1, 1 << 30));
  RETURN_IF_ERROR(InRange(where, "eval_every", c->eval_every(), 0, 1 << 30));
  if (c->eval_batches() == 0) c->set_eval_batches(4);
  RETURN_IF_ERROR(InRange(where, "eval_batches", c->eval_batches(), 1, 1 << 20));
  RETURN_IF_ERROR(InRange(where, "checkpoint_every", c->checkpoint_every(), 0, 1 << 30));
  if (c->on_nonfinite().empty()) c->set_on_nonfinite("fail");
  if (c->on_nonfinite() != "fail" && c->on_nonfinite() != "skip_step" &&
      c->on_nonfinite() != "rollback") {
    return FieldError(where, "on_nonfinite",
                      absl::StrCat("'", c->on_nonfinite(), "' is not fail, skip_step or rollback"));
  }
  if (!c->has_max_nonfinite_steps()) c->set_max_nonfinite_steps(10);
  RETURN_IF_ERROR(InRange(where, "max_nonfinite_steps", c->max_nonfinite_steps(), 0, 1 << 30));
  return absl::OkStatus();
}

absl::StatusOr<v1::TrainConfig> LoadTrainConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  ASSIGN_OR_RETURN(v1::TrainConfig config, ParseTextProto<v1::TrainConfig>(text, path));
  RETURN_IF_ERROR(ResolveTrainConfig(&config, path));
  return config;
}

}  // namespace modamba
