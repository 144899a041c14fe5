#include "evaluator/ensemble.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/safetensors.h"
#include "core/status_macros.h"

namespace modamba::eval {
namespace {

constexpr char kMembersKey[] = "ensemble_members";

std::string MemberPrefix(int k) { return absl::StrCat("member.", k, "."); }

}  // namespace

absl::StatusOr<std::unique_ptr<Ensemble>> Ensemble::Create(
    std::vector<std::unique_ptr<Mlp>> members) {
  if (members.empty()) return absl::InvalidArgumentError("an ensemble needs a member");
  for (const auto& m : members) {
    if (m->spec().input != members[0]->spec().input ||
        m->spec().classes != members[0]->spec().classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ensemble members differ: inputs ", m->spec().input, " and ", members[0]->spec().input,
          ", classes ", m->spec().classes, " and ", members[0]->spec().classes));
    }
  }
  return std::unique_ptr<Ensemble>(new Ensemble(std::move(members)));
}

absl::StatusOr<std::unique_ptr<Ensemble>> Ensemble::Load(
    const std::string& path, Backend* backend, std::map<std::string, std::string>* metadata) {
  ASSIGN_OR_RETURN(SafetensorsFile file, LoadSafetensors(path));
  if (metadata != nullptr) *metadata = file.metadata;
  std::vector<std::unique_ptr<Mlp>> members;
  auto it = file.metadata.find(kMembersKey);
  if (it == file.metadata.end()) {
    ASSIGN_OR_RETURN(std::unique_ptr<Mlp> only, Mlp::Import(file, "", path, backend));
    members.push_back(std::move(only));
  } else {
    int count = 0;
    if (!absl::SimpleAtoi(it->second, &count) || count < 1) {
      return absl::DataLossError(absl::StrCat(path, ": bad ", kMembersKey, " '", it->second, "'"));
    }
    for (int k = 0; k < count; ++k) {
      ASSIGN_OR_RETURN(std::unique_ptr<Mlp> m, Mlp::Import(file, MemberPrefix(k), path, backend));
      members.push_back(std::move(m));
    }
  }
  absl::StatusOr<std::unique_ptr<Ensemble>> out = Create(std::move(members));
  if (!out.ok()) return absl::DataLossError(absl::StrCat(path, ": ", out.status().message()));
  return out;
}

absl::Status Ensemble::Save(const std::string& path,
                            const std::map<std::string, std::string>& metadata) const {
  if (members_.size() == 1) return members_[0]->Save(path, metadata);
  std::vector<std::pair<std::string, Tensor>> host;
  std::map<std::string, std::string> meta = metadata;
  meta[kMembersKey] = absl::StrCat(members_.size());
  for (size_t k = 0; k < members_.size(); ++k) members_[k]->Export(MemberPrefix(k), &host, &meta);
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  for (const auto& [name, t] : host) tensors.emplace_back(name, &t);
  return SaveSafetensors(path, tensors, meta);
}

void Ensemble::Forward(const float* x, int64_t n, float* log_probs, float* features) {
  if (log_probs == nullptr) {
    members_[0]->Forward(x, n, nullptr, features);
    return;
  }
  const int c = classes();
  std::vector<float> logits(static_cast<size_t>(n) * c);
  std::fill(log_probs, log_probs + n * c, 0.f);
  for (size_t k = 0; k < members_.size(); ++k) {
    members_[k]->Forward(x, n, logits.data(), k == 0 ? features : nullptr);
    for (int64_t i = 0; i < n; ++i) {
      const float* row = &logits[i * c];
      const float top = *std::max_element(row, row + c);
      double sum = 0;
      for (int j = 0; j < c; ++j) sum += std::exp(row[j] - top);
      const double log_z = top + std::log(sum);
      for (int j = 0; j < c; ++j) {
        log_probs[i * c + j] += static_cast<float>((row[j] - log_z) / members_.size());
      }
    }
  }
}

std::vector<int32_t> Ensemble::Predict(const float* x, int64_t n) {
  const int c = classes();
  std::vector<float> log_probs(static_cast<size_t>(n) * c);
  Forward(x, n, log_probs.data(), nullptr);
  std::vector<int32_t> out(n);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = &log_probs[i * c];
    out[i] = static_cast<int32_t>(std::max_element(row, row + c) - row);
  }
  return out;
}

}  // namespace modamba::eval
