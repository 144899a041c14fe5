#include "tools/compare/compare.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <utility>
#include <vector>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/config.h"
#include "core/data/manifest.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "tools/cli/artifacts.h"
#include "tools/cli/flags.h"
#include "tools/compare/plot.h"

namespace modamba {
namespace {

// The modality metrics in table order, with their display names.
const std::vector<std::pair<std::string, std::string>>& Metrics() {
  static const auto* metrics = new std::vector<std::pair<std::string, std::string>>{
      {"text", "text"}, {"image", "image"}, {"diffusion_mse", "image (diffusion MSE)"},
      {"speech", "speech"}};
  return *metrics;
}

// "dense", "MoM" or the routed Mamba projections ("in+out"); for
// Transformers "dense Transformer", "MoT" or "Transformer qkv+norms".
std::string Variant(const v1::ModelConfig& m) {
  const bool transformer = m.architecture() == v1::ModelConfig::TRANSFORMER;
  const std::vector<std::pair<const char*, bool>> switches =
      transformer ? std::vector<std::pair<const char*, bool>>{{"qkv", m.route_qkv()},
                                                              {"attn_out", m.route_attn_out()},
                                                              {"ffn_in", m.route_ffn_in()},
                                                              {"ffn_out", m.route_ffn_out()},
                                                              {"norms", m.route_norms()}}
                  : std::vector<std::pair<const char*, bool>>{{"in", m.route_in()},
                                                              {"x", m.route_x()},
                                                              {"dt", m.route_dt()},
                                                              {"out", m.route_out()}};
  std::vector<std::string> routed;
  for (const auto& [name, on] : switches) {
    if (on) routed.push_back(name);
  }
  if (routed.empty()) return transformer ? "dense Transformer" : "dense";
  if (routed.size() == switches.size()) return transformer ? "MoT" : "MoM";
  return (transformer ? "Transformer " : "") + absl::StrJoin(routed, "+");
}

const uint32_t kColors[] = {0xd62728, 0x1f77b4, 0x2ca02c, 0xff7f0e, 0x9467bd, 0x8c564b};

// Table and legend order: the baselines and full models, then the ablations.
// A label is a variant, or a variant, a space and a shape.
bool VariantBefore(const std::string& a, const std::string& b) {
  static const std::string kOrder[] = {"dense", "MoM", "dense Transformer", "MoT"};
  auto rank = [](const std::string& label) {
    size_t best = std::size(kOrder), longest = 0;
    for (size_t i = 0; i < std::size(kOrder); ++i) {
      const std::string& v = kOrder[i];
      if ((label == v || absl::StartsWith(label, v + " ")) && v.size() > longest) {
        best = i;
        longest = v.size();
      }
    }
    return best;
  };
  return rank(a) != rank(b) ? rank(a) < rank(b) : a < b;
}

struct VariantOrder {
  bool operator()(const std::string& a, const std::string& b) const { return VariantBefore(a, b); }
};

// label -> runs (seeds)
using Variants = std::map<std::string, std::vector<Run>, VariantOrder>;

struct Group {
  std::string title;  // "trimodal d576x10" or "trimodal d576x10+d576x5"
  Variants variants;
};

// By setting, then by training budget (compare.h).
std::vector<Group> GroupRuns(std::vector<Run> runs) {
  std::stable_sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) {
    return a.setting != b.setting ? a.setting < b.setting : a.train_flops < b.train_flops;
  });
  std::vector<Group> groups;
  for (size_t begin = 0; begin < runs.size();) {
    size_t end = begin + 1;
    while (end < runs.size() && runs[end].setting == runs[begin].setting &&
           runs[end].train_flops <= 1.15 * runs[begin].train_flops) {
      ++end;
    }
    std::vector<std::string> scales;
    for (size_t i = begin; i < end; ++i) {
      if (std::find(scales.begin(), scales.end(), runs[i].scale) == scales.end()) {
        scales.push_back(runs[i].scale);
      }
    }
    Group g;
    g.title = absl::StrCat(runs[begin].setting, " ", absl::StrJoin(scales, "+"));
    for (size_t i = begin; i < end; ++i) {
      std::string label = runs[i].variant;
      if (scales.size() > 1) absl::StrAppend(&label, " ", runs[i].scale);
      g.variants[label].push_back(std::move(runs[i]));
    }
    groups.push_back(std::move(g));
    begin = end;
  }
  return groups;
}

// The label of the group's runs of `variant`, or "" when it has none.
std::string LabelOf(const Variants& variants, const std::string& variant) {
  for (const auto& [label, runs] : variants) {
    if (runs.front().variant == variant) return label;
  }
  return "";
}

double MeanTokensPerSecond(const std::vector<Run>& runs) {
  double sum = 0;
  for (const Run& r : runs) {
    if (r.tokens_per_s <= 0) return 0;
    sum += r.tokens_per_s / runs.size();
  }
  return sum;
}

// The evaluation with the lowest loss of `metric` (runs always have one).
const EvalPoint& Best(const std::vector<EvalPoint>& curve, const std::string& metric) {
  const EvalPoint* best = &curve.back();
  for (const EvalPoint& p : curve) {
    auto it = p.loss.find(metric);
    if (it != p.loss.end() && it->second < best->loss.at(metric)) best = &p;
  }
  return *best;
}

// The FLOPs-to-match table of `variants` against the baseline's runs, with
// each variant's training speed.
void AppendTable(const std::string& baseline, const std::vector<Run>& dense, const Variants& variants,
                 const std::vector<std::pair<std::string, std::string>>& metrics, std::string* md_out) {
  std::string& md = *md_out;
  absl::StrAppend(&md, "| variant | seeds |");
  for (const auto& m : metrics) absl::StrAppend(&md, " ", m.second, " |");
  absl::StrAppend(&md, " training tokens/s |\n|---|---|");
  for (size_t i = 0; i <= metrics.size(); ++i) absl::StrAppend(&md, "---|");
  absl::StrAppend(&md, "\n");
  const double dense_speed = MeanTokensPerSecond(dense);
  for (const auto& [variant, runs] : variants) {
    absl::StrAppend(&md, "| ", variant, " | ", runs.size(), " |");
    for (const auto& [metric, name] : metrics) {
      double target = 0, dense_flops = 0, dense_total = 0;
      for (const Run& d : dense) {
        const EvalPoint& best = Best(d.val, metric);
        target += best.loss.at(metric) / dense.size();
        dense_flops += best.flops / dense.size();
        dense_total += d.val.back().flops / dense.size();
      }
      if (variant == baseline) {
        absl::StrAppendFormat(&md, " best %.4f at %.0f%% |", target, 100 * dense_flops / dense_total);
        continue;
      }
      std::vector<double> fractions;
      for (const Run& r : runs) {
        auto f = FlopsToReach(r.val, metric, target);
        if (f) fractions.push_back(*f / dense_flops);
      }
      if (fractions.size() < runs.size()) {
        double best = 0;  // mean over seeds
        for (const Run& r : runs) best += Best(r.val, metric).loss.at(metric) / runs.size();
        if (fractions.empty()) {
          absl::StrAppendFormat(&md, " not reached (best %.4f vs %.4f) |", best, target);
        } else {
          absl::StrAppendFormat(&md, " %d of %d seeds reach it (best %.4f vs %.4f) |",
                                fractions.size(), runs.size(), best, target);
        }
        continue;
      }
      double mean = 0;
      for (double f : fractions) mean += f / fractions.size();
      auto [lo, hi] = std::minmax_element(fractions.begin(), fractions.end());
      if (fractions.size() > 1) {
        absl::StrAppendFormat(&md, " %.1f%% [%.1f, %.1f] |", 100 * mean, 100 * *lo, 100 * *hi);
      } else {
        absl::StrAppendFormat(&md, " %.1f%% |", 100 * mean);
      }
    }
    const double speed = MeanTokensPerSecond(runs);
    if (speed <= 0) {
      absl::StrAppend(&md, " - |\n");
    } else if (variant == baseline || dense_speed <= 0) {
      absl::StrAppendFormat(&md, " %.0f |\n", speed);
    } else {
      absl::StrAppendFormat(&md, " %.0f (%.2fx) |\n", speed, speed / dense_speed);
    }
  }
}

}  // namespace

absl::StatusOr<Run> LoadRun(const std::string& dir) {
  Run run;
  run.dir = dir;
  if (!FileExists(dir + "/config.textproto")) {
    return absl::NotFoundError(absl::StrCat(
        dir, ": not a run directory (no config.textproto; `modamba train`, a coordinator job's "
             "RUN_ROOT/<job>/ and tools/experiments/run.sh write one beside metrics.jsonl)"));
  }
  ASSIGN_OR_RETURN(run.config, LoadTrainConfig(dir + "/config.textproto"));
  run.setting = "text";
  if (!run.config.dataset_dir().empty()) {
    ASSIGN_OR_RETURN(data::DatasetManifest m, data::ReadDatasetManifest(run.config.dataset_dir()));
    run.setting = m.setting;
  }
  run.scale = absl::StrCat("d", run.config.model().d_model(), "x", run.config.model().n_layer());
  run.variant = Variant(run.config.model());
  const std::string path = dir + "/metrics.jsonl";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": missing"));
  int line_no = 0;
  std::vector<std::pair<int64_t, double>> speeds;  // (step, tokens/s)
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step") || !j.contains("flops")) {
      return absl::DataLossError(absl::StrCat(path, ":", line_no, ": not a metrics line"));
    }
    const int64_t step = j["step"].get<int64_t>();
    // A resumed run repeats the steps after its checkpoint: the later lines win.
    while (!run.val.empty() && run.val.back().step >= step) run.val.pop_back();
    while (!speeds.empty() && speeds.back().first >= step) speeds.pop_back();
    run.train_flops = j["flops"].get<double>();
    if (j.contains("scalars") && j["scalars"].contains("tokens_per_s")) {
      speeds.push_back({step, j["scalars"]["tokens_per_s"].get<double>()});
    }
    if (!j.contains("val")) continue;
    EvalPoint p;
    p.step = step;
    p.flops = j["flops"].get<double>();
    for (const auto& [metric, name] : Metrics()) {
      if (j["val"].contains(metric)) p.loss[metric] = j["val"][metric].get<double>();
    }
    run.val.push_back(std::move(p));
  }
  if (run.val.empty()) return absl::FailedPreconditionError(absl::StrCat(path, ": no validation points"));
  if (speeds.size() > 1) speeds.erase(speeds.begin());  // the first step warms up
  if (!speeds.empty()) {
    std::vector<double> v;
    for (const auto& [step, tps] : speeds) v.push_back(tps);
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    run.tokens_per_s = v[v.size() / 2];
  }
  return run;
}

std::optional<double> FlopsToReach(const std::vector<EvalPoint>& curve, const std::string& metric,
                                   double target) {
  double prev_flops = 0, prev_loss = NAN;
  for (const EvalPoint& p : curve) {
    auto it = p.loss.find(metric);
    if (it == p.loss.end()) continue;
    const double loss = it->second;
    if (loss <= target) {
      if (std::isnan(prev_loss)) return p.flops;
      return prev_flops + (prev_loss - target) / (prev_loss - loss) * (p.flops - prev_flops);
    }
    prev_flops = p.flops;
    prev_loss = loss;
  }
  return std::nullopt;
}

absl::StatusOr<std::string> Compare(const std::vector<std::string>& run_dirs,
                                    const std::string& out_dir,
                                    std::vector<std::pair<std::string, std::string>>* charts) {
  std::vector<Run> loaded;
  for (const std::string& dir : run_dirs) {
    ASSIGN_OR_RETURN(Run run, LoadRun(dir));
    loaded.push_back(std::move(run));
  }
  RETURN_IF_ERROR(MakeDirs(out_dir));
  std::string md =
      "# Training FLOPs to reach the dense model's best validation loss\n\n"
      "For each variant and modality: the training FLOPs at which its validation loss first reaches\n"
      "the dense run's best (lowest) validation loss, as a fraction of the FLOPs the dense run took to\n"
      "get there (linear interpolation between evaluations; mean over seeds, [min, max] over seeds;\n"
      "lower is better; \"not reached\" gives the seed-mean best loss against the target). The\n"
      "dense row gives its best loss and the share of its training at which\n"
      "it was reached (100% when the curve still falls at the end). The dense run is dense Mamba,\n"
      "or in a group of Transformers alone the dense Transformer; a group with both has a second\n"
      "table of the Transformers against the dense Transformer. Training tokens/s: the median of\n"
      "each run's logged steps, mean over seeds, and its ratio to the dense run's.\n";
  for (const Group& group : GroupRuns(std::move(loaded))) {
    const std::string& key = group.title;
    const Variants& variants = group.variants;
    const std::string dense_mamba = LabelOf(variants, "dense");
    const std::string dense_transformer = LabelOf(variants, "dense Transformer");
    const std::string baseline_name = dense_mamba.empty() ? dense_transformer : dense_mamba;
    const bool has_dense = !baseline_name.empty();
    const std::vector<Run>& baseline =
        has_dense ? variants.at(baseline_name) : variants.begin()->second;
    std::vector<std::pair<std::string, std::string>> metrics;
    for (const auto& m : Metrics()) {
      if (baseline.front().val.back().loss.count(m.first)) metrics.push_back(m);
    }
    absl::StrAppend(&md, "\n## ", key, "\n\n");
    if (!has_dense) {
      absl::StrAppend(&md, "No dense run to compare against: the validation curves only.\n");
    } else {
      AppendTable(baseline_name, baseline, variants, metrics, &md);
    }
    if (!dense_mamba.empty() && !dense_transformer.empty()) {
      Variants transformers;
      for (const auto& [label, rs] : variants) {
        if (rs.front().config.model().architecture() == v1::ModelConfig::TRANSFORMER) {
          transformers[label] = rs;
        }
      }
      absl::StrAppend(&md, "\nThe Transformers against the dense Transformer:\n\n");
      AppendTable(dense_transformer, variants.at(dense_transformer), transformers, metrics, &md);
    }
    // One chart per metric: every variant's mean curve with its seed band.
    for (const auto& [metric, name] : metrics) {
      plot::Chart chart;
      chart.title = absl::StrCat(key, ": ", name, " validation loss");
      chart.x_label = "training FLOPs";
      chart.y_label = "validation loss";
      chart.log_x = true;
      if (has_dense) chart.reference_label = "dense best";
      int color = 0;
      for (auto& [variant, runs] : variants) {
        plot::Series s;
        s.label = variant;
        s.dashed = variant == baseline_name;
        s.rgb = s.dashed ? 0x444444 : kColors[color++ % 6];
        const Run& first = runs.front();
        for (size_t i = 0; i < first.val.size(); ++i) {
          if (!first.val[i].loss.count(metric)) continue;
          double sum = 0, lo = INFINITY, hi = -INFINITY;
          for (const Run& r : runs) {
            const double v = i < r.val.size() ? r.val[i].loss.at(metric) : first.val[i].loss.at(metric);
            sum += v;
            lo = std::min(lo, v);
            hi = std::max(hi, v);
          }
          s.x.push_back(first.val[i].flops);
          s.y.push_back(sum / runs.size());
          if (runs.size() > 1) {
            s.y_low.push_back(lo);
            s.y_high.push_back(hi);
          }
        }
        if (variant == baseline_name) chart.reference_y = *std::min_element(s.y.begin(), s.y.end());
        chart.series.push_back(std::move(s));
      }
      for (plot::Series& s : chart.series) {
        if (s.label == baseline_name || !has_dense) continue;
        std::vector<EvalPoint> mean_curve;
        for (size_t i = 0; i < s.x.size(); ++i) mean_curve.push_back({0, s.x[i], {{metric, s.y[i]}}});
        if (auto f = FlopsToReach(mean_curve, metric, chart.reference_y)) {
          s.marker_x = *f;
          s.marker_y = chart.reference_y;
        }
      }
      std::string stem = absl::StrCat(out_dir, "/", key, "_", metric);
      std::replace(stem.begin() + out_dir.size() + 1, stem.end(), ' ', '_');
      RETURN_IF_ERROR(WriteFileAtomic(stem + ".svg", plot::RenderSvg(chart)));
      RETURN_IF_ERROR(plot::WritePng(chart, stem + ".png"));
      absl::StrAppend(&md, "\n![", chart.title, "](", stem.substr(out_dir.size() + 1), ".png)\n");
      if (charts != nullptr) {
        charts->push_back({stem + ".png", chart.title});
        charts->push_back({stem + ".svg", chart.title});
      }
    }
  }
  RETURN_IF_ERROR(WriteFileAtomic(out_dir + "/results.md", md));
  return md;
}

int RunCompareCommand(int argc, char** argv) {
  std::vector<std::string> runs;
  std::string out;
  cli::FlagSet flags(
      "modamba compare", "RUN_DIR... --out=DIR",
      "Tables and charts of the training FLOPs each variant needs to reach the dense run's best "
      "validation loss. A RUN_DIR is what `modamba train`, a coordinator job (RUN_ROOT/<job>) or "
      "tools/experiments/run.sh writes: config.textproto and metrics.jsonl.",
      "modamba compare runs/dense runs/mom --out=compare");
  flags.String("out", &out, "DIR", "where results.md and the charts go");
  flags.Require("out");
  if (std::optional<int> exit = flags.Parse(argc, argv, 1, &runs)) return *exit;
  if (runs.empty()) return flags.UsageError("no run directory given");
  std::vector<std::pair<std::string, std::string>> charts;
  auto md = Compare(runs, out, &charts);
  if (!md.ok()) {
    std::cerr << "modamba compare: " << md.status().message() << "\n";
    return 1;
  }
  std::cout << *md << "\n";
  cli::PrintArtifact(std::cout, out + "/results.md", "the FLOPs-to-match tables (Markdown)");
  for (const auto& [path, title] : charts) cli::PrintArtifact(std::cout, path, "chart: " + title);
  return 0;
}

}  // namespace modamba
