// Analytic FLOPs accounting (docs/DESIGN.md, "The model"), so runs can be compared at
// equal compute: 6 FLOPs per matmul parameter a token uses (forward 2,
// backward 4) plus the scan's 9 * d_inner * d_state per token per layer, or
// the Transformer's attention, tripled for training.
#ifndef MODAMBA_CORE_FLOPS_H_
#define MODAMBA_CORE_FLOPS_H_

#include <cstdint>

#include "proto/config.pb.h"

namespace modamba {

// Matmul parameters one token passes through (one modality's copy of each
// routed projection, plus the LM head). Embedding lookups are not matmuls.
int64_t ActiveMatmulParams(const v1::ModelConfig& config);
// All stored parameters (routed projections count every modality's copy).
int64_t TotalParams(const v1::ModelConfig& config);
// Forward + backward FLOPs per trained token in sequences of seq_len. A
// Transformer's attention adds 4 * d_model FLOPs per layer and context token
// (q.k and p.v) over the mean causal context (seq_len + 1) / 2, tripled for
// training: an upper bound where packed documents shorten the context.
double TrainingFlopsPerToken(const v1::ModelConfig& config, int64_t seq_len);

}  // namespace modamba

#endif  // MODAMBA_CORE_FLOPS_H_
