// A judge of one or more classifiers (mlp.h) over the same inputs, averaged:
// its log-probabilities are the mean of its members' log-softmax. Members
// trained from different seeds make partly different mistakes, so the mean
// errs less often than one of them. Its features (for Frechet distances) are
// the first member's last hidden layer: the dimension, and so the distance's
// sample-size bias, stay those of one network.
#ifndef MODAMBA_EVALUATOR_ENSEMBLE_H_
#define MODAMBA_EVALUATOR_ENSEMBLE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/backend.h"
#include "evaluator/mlp.h"

namespace modamba::eval {

class Ensemble {
 public:
  // Members of the same input size and classes (checked).
  static absl::StatusOr<std::unique_ptr<Ensemble>> Create(std::vector<std::unique_ptr<Mlp>> members);
  // One file: a single member as Mlp::Save writes it; several behind the
  // prefixes "member.K." with "ensemble_members" = their count.
  static absl::StatusOr<std::unique_ptr<Ensemble>> Load(
      const std::string& path, Backend* backend,
      std::map<std::string, std::string>* metadata = nullptr);
  absl::Status Save(const std::string& path,
                    const std::map<std::string, std::string>& metadata) const;

  int members() const { return static_cast<int>(members_.size()); }
  const Mlp& member(int k) const { return *members_[k]; }
  int input_dim() const { return members_[0]->spec().input; }
  int classes() const { return members_[0]->spec().classes; }
  int feature_dim() const { return members_[0]->feature_dim(); }

  // Mean log-softmax [n, classes] and the first member's features
  // [n, feature_dim] (either may be null) of n host examples [n, input].
  void Forward(const float* x, int64_t n, float* log_probs, float* features);
  // Argmax class of each example.
  std::vector<int32_t> Predict(const float* x, int64_t n);

 private:
  explicit Ensemble(std::vector<std::unique_ptr<Mlp>> members) : members_(std::move(members)) {}

  std::vector<std::unique_ptr<Mlp>> members_;
};

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_ENSEMBLE_H_
