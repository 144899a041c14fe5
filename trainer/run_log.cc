#include "trainer/run_log.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "google/protobuf/text_format.h"

namespace modamba {

std::map<std::string, double> LossMetrics(const LossReport& r) {
  std::map<std::string, double> out;
  for (size_t m = 0; m < r.count.size(); ++m) {
    if (r.count[m] > 0) out[ModalityLabel(m)] = r.mean(m);
  }
  if (r.diffusion_count > 0) out["diffusion_mse"] = r.diffusion_mse();
  return out;
}

std::map<std::string, double> StepScalars(const StepRecord& r) {
  std::map<std::string, double> out = {{"objective", r.loss.objective()}, {"lr", r.lr},
                                       {"grad_norm", r.grad_norm},
                                       {"tokens_per_s", r.tokens_per_second}};
  if (r.mfu > 0) out["mfu"] = r.mfu;
  for (size_t m = 0; m < r.loss.count.size(); ++m) {
    if (r.loss.count[m] > 0) out[ModalityLabel(m) + "_tokens"] = r.loss.count[m];
  }
  return out;
}

std::string MetricsLine(const StepRecord& r) {
  nlohmann::json j = {{"step", r.step}, {"flops", r.flops}, {"loss", LossMetrics(r.loss)},
                      {"scalars", StepScalars(r)}};
  j["loss"]["objective"] = r.loss.objective();
  if (r.evaluated) {
    j["val"] = LossMetrics(r.val);
    j["val"]["objective"] = r.val.objective();
  }
  if (!r.profile.empty()) {
    nlohmann::json& p = j["profile"];
    for (const StepProfile& rank : r.profile) {
      p["step_ms"].push_back(1e3 * rank.step_s);
      p["compute_ms"].push_back(1e3 * rank.compute_s);
      p["exposed_comm_ms"].push_back(1e3 * rank.exposed_comm_s);
      p["idle_ms"].push_back(1e3 * rank.idle_s);
    }
  }
  return j.dump();
}

absl::Status WriteRunConfig(const std::string& dir, const v1::TrainConfig& config) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(config, &text);
  RETURN_IF_ERROR(MakeDirs(dir));
  return WriteFileAtomic(dir + "/config.textproto", text);
}

absl::StatusOr<std::unique_ptr<MetricsFile>> MetricsFile::Open(const std::string& path) {
  auto file = std::make_unique<MetricsFile>();
  file->path_ = path;
  file->out_.open(path, std::ios::app);
  if (!file->out_) return absl::UnavailableError(absl::StrCat(path, ": cannot open for appending"));
  return file;
}

absl::Status MetricsFile::Append(const StepRecord& record) {
  out_ << MetricsLine(record) << std::endl;
  if (!out_) return absl::DataLossError(absl::StrCat(path_, ": write failed"));
  return absl::OkStatus();
}

}  // namespace modamba
