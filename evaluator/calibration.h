// The judges' calibration next to a model's scores: each digit judge's
// accuracy on real held-out data (clean and augmented) beside the accuracy,
// CER and Frechet distance it gives the model's samples, with the real-data
// reference lines, so a reader can tell a model problem from a judge
// problem. Built from an evaluation's metrics (EvalReport::metrics, or the
// scalars of an `eval` metric point).
#ifndef MODAMBA_EVALUATOR_CALIBRATION_H_
#define MODAMBA_EVALUATOR_CALIBRATION_H_

#include <map>
#include <string>

namespace modamba::eval {

// One or two lines per judged modality (image, speech), each line ending in
// a newline; "" when the metrics hold no judged modality. `judges`
// (optional) describes each judge (EvalReport::judges).
std::string CalibrationTable(const std::map<std::string, double>& metrics,
                             const std::map<std::string, std::string>& judges = {});

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_CALIBRATION_H_
