// One layer of the trunk, whatever its kind: the language model
// (core/model.h) is embed -> a stack of Blocks -> final norm -> head. A block
// maps the residual stream x_l to x_{l+1} (it holds its own norms and
// residual adds), in three modes:
//   Forward / Backward  a whole batch of sequences (training, evaluation);
//   Step                one token of each of several independent streams
//                       (recurrent generation), carrying a State per stream
//                       that Forward never needs (a Mamba block's conv and
//                       SSM state, a Transformer block's KV cache).
// Step computes what Forward computes at the same position. Activations and
// State are opaque to the model: each block kind defines its own.
#ifndef MODAMBA_CORE_BLOCK_H_
#define MODAMBA_CORE_BLOCK_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "core/layers.h"

namespace modamba {

// One recurrent step: row i is one token of stream streams[i].
struct StepContext {
  StepLayout layout;  // the rows' streams and document resets, on the device
  // The same on the host, for blocks that keep per-stream counters.
  const std::vector<int32_t>* streams = nullptr;
  const std::vector<uint8_t>* reset = nullptr;
  const Routing* by_modality = nullptr;
  const Routing* shared = nullptr;
  // The rows as a batch of one-token sequences, for the layers' Forward.
  BatchContext AsBatch() const {
    return BatchContext{layout.AsSequences(), by_modality, shared};
  }
};

class Block {
 public:
  // What Forward keeps for Backward.
  class Activations {
   public:
    virtual ~Activations() = default;
  };
  // The recurrent state of a number of independent streams.
  class State {
   public:
    virtual ~State() = default;
  };

  virtual ~Block() = default;
  virtual void Init(uint64_t seed) = 0;

  virtual std::unique_ptr<Activations> NewActivations() const = 0;
  // out = x_{l+1} for the stream x = x_l ([N, D], distinct buffers).
  virtual void Forward(const BatchContext& ctx, Mat x, Mat out, Activations* acts) const = 0;
  // dstream holds d(loss)/d(x_{l+1}) and is overwritten with d(loss)/d(x_l);
  // parameter gradients accumulate.
  virtual void Backward(const BatchContext& ctx, Mat x, const Activations& acts,
                        Mat dstream) const = 0;

  // All zero: no token seen yet.
  virtual std::unique_ptr<State> NewState(int streams) const = 0;
  // Overwrites `to` (as many streams) with `from`.
  virtual void CopyState(const State& from, State* to) const = 0;
  // x ([rows, D], in the model's dtype) advances from x_l to x_{l+1} in place;
  // the listed streams' state advances by their token, a reset row's first.
  virtual void Step(const StepContext& ctx, Mat x, State* state) const = 0;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_BLOCK_H_
