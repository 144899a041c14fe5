// The Transformer block, dense or Mixture-of-Transformers (arXiv 2411.04996):
// a pre-norm layer of causal multi-head self-attention with rotary position
// embeddings and a SwiGLU feed-forward network. Every projection and both
// norms may be routed by token modality; attention itself runs over the whole
// interleaved sequence, inside each packed document.
//
//   h1  = norm1[m](x)                          [N, D]
//   qkv = qkv_proj[m](h1)                      [N, 3D]  q | k | v, heads of head_dim
//   q, k = rope(q), rope(k)                    by the position inside the document
//   a   = attention(q, k, v)                   causal, no key before the document start
//   x1  = x + out_proj[m](a)
//   h2  = norm2[m](x1)
//   gu  = ffn_in[m](h2)                        [N, 2F]  gate | up
//   out = x1 + ffn_out[m](silu(gate) * up)     [N, D]
//
// Stepped, the block carries per stream the rotated keys and the values of
// the stream's document so far (Backend::AttentionStep).
#ifndef MODAMBA_CORE_TRANSFORMER_BLOCK_H_
#define MODAMBA_CORE_TRANSFORMER_BLOCK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/block.h"
#include "core/layers.h"
#include "proto/config.pb.h"

namespace modamba {

class TransformerBlock : public Block {
 public:
  // `config` is resolved with architecture TRANSFORMER; `name` is the
  // layer's ("layers.3").
  TransformerBlock(ParamSet* params, const std::string& name, const v1::ModelConfig& config);

  void Init(uint64_t seed) override;
  std::unique_ptr<Block::Activations> NewActivations() const override;
  void Forward(const BatchContext& ctx, Mat x, Mat out, Block::Activations* acts) const override;
  void Backward(const BatchContext& ctx, Mat x, const Block::Activations& acts,
                Mat dstream) const override;
  // The state is each stream's key-value cache, grown as its document does.
  std::unique_ptr<Block::State> NewState(int streams) const override;
  void CopyState(const Block::State& from, Block::State* to) const override;
  // The step's rows must be grouped by modality when any weight is routed
  // (LanguageModel::Step orders them so, as the model does a batch's rows).
  void Step(const StepContext& ctx, Mat x, Block::State* state) const override;

 private:
  struct Activations;
  struct State;
  // The block around its attention: attend(qkv, a, lse) fills a from qkv.
  template <typename Attend>
  void Run(const BatchContext& ctx, Mat x, Mat out, Activations* acts, Attend attend) const;
  // Makes room in every stream's cache for `length` tokens.
  void Reserve(int64_t length, State* state) const;

  ParamSet* params_;
  const v1::ModelConfig config_;
  const int d_model_, n_head_, head_dim_, d_ff_;
  RmsNorm norm1_, norm2_;
  Linear qkv_proj_, out_proj_, ffn_in_, ffn_out_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_TRANSFORMER_BLOCK_H_
