// `modamba compare RUN... --out=DIR`: how many training FLOPs each variant
// needs to reach the dense baseline's best validation loss, per modality, in
// the style of the Mixture-of-Mamba paper's tables.
//
// A run is a directory with config.textproto (its TrainConfig) and
// metrics.jsonl (trainer/run_log.h): what `modamba train`, a coordinator job
// (RUN_ROOT/<job>/) and tools/experiments/run.sh write. Repeated steps (a
// resumed run) count once, from their latest line.
//
// Runs are grouped by setting (the dataset manifest's) and training budget:
// the runs of a setting whose training FLOPs lie within 15% of the smallest
// form one group, so models of equal cost but other shapes (a 10-layer Mamba
// and a 5-layer Transformer) are compared with each other. Within a group a
// variant is which weights are routed (dense, MoM, a single-projection
// ablation; dense Transformer, MoT) and, where the group holds several
// shapes, its shape (d_model x n_layer); the runs of a variant differ only in
// seed.
//
// The rule: the target is the dense group's best validation loss (the mean
// over its seeds of each run's lowest evaluation; with no overfitting that is
// the final loss, as in the paper, and with overfitting it is not fooled by a
// dense curve that rises again). A variant run reaches it at the first
// evaluation where its validation loss is at or below the target,
// interpolating linearly in FLOPs between that evaluation and the one before
// (no smoothing: validation runs on a fixed set). The fraction is that FLOPs
// count over the FLOPs at which the dense run reached its best; with several
// seeds the table gives their mean and the [min, max] band over seeds. The
// dense run is dense Mamba; a group that also holds a dense Transformer gets
// a second table of the Transformers against it (MoT's own comparison). Each
// row also gives the training speed: the median of the run's logged
// tokens/s (the first logged step, with its warm-up, left out).
#ifndef MODAMBA_TOOLS_COMPARE_COMPARE_H_
#define MODAMBA_TOOLS_COMPARE_COMPARE_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/config.pb.h"

namespace modamba {

struct EvalPoint {
  int64_t step = 0;
  double flops = 0;
  std::map<std::string, double> loss;  // metric -> validation loss
};

struct Run {
  std::string dir;
  v1::TrainConfig config;
  std::string setting;  // "chameleon", "transfusion", "trimodal" or "text"
  std::string scale;    // "d512x8"
  std::string variant;  // "dense", "MoM", "in", "x+dt", ..., "dense Transformer", "MoT"
  double train_flops = 0;   // at the last logged step
  double tokens_per_s = 0;  // median over logged steps; 0 when none logged it
  std::vector<EvalPoint> val;
};

absl::StatusOr<Run> LoadRun(const std::string& dir);

// FLOPs at which `curve` (metric `metric`) first reaches `target`, by the rule
// above; nullopt when it never does.
std::optional<double> FlopsToReach(const std::vector<EvalPoint>& curve, const std::string& metric,
                                   double target);

// Writes results.md and one PNG + SVG chart per (group, metric) into
// out_dir (a group without a dense run gets its curves, without a table);
// returns the Markdown. `charts` (optional) receives each chart file's path
// and title.
absl::StatusOr<std::string> Compare(
    const std::vector<std::string>& run_dirs, const std::string& out_dir,
    std::vector<std::pair<std::string, std::string>>* charts = nullptr);

// The command: argv[0] = "compare", then run directories and --out=DIR.
int RunCompareCommand(int argc, char** argv);

}  // namespace modamba

#endif  // MODAMBA_TOOLS_COMPARE_COMPARE_H_
