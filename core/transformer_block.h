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
// Unlike the Mamba mixer, the block maps the residual stream to the next one:
// it holds two residual branches, each behind its own norm.
#ifndef MODAMBA_CORE_TRANSFORMER_BLOCK_H_
#define MODAMBA_CORE_TRANSFORMER_BLOCK_H_

#include <cstdint>
#include <string>

#include "core/layers.h"

namespace modamba {

struct TransformerConfig {
  int d_model = 0;
  int n_head = 0;  // head_dim = d_model / n_head, even
  int d_ff = 0;    // SwiGLU hidden width F
  int n_layer = 1;  // scales the branches' output projections at init
  int n_modalities = 1;
  double norm_eps = 1e-5;
  double rope_theta = 10000;
  // Which weights are chosen by modality: all off is the dense Transformer,
  // all on is Mixture-of-Transformers.
  bool route_qkv = false;
  bool route_attn_out = false;
  bool route_ffn_in = false;
  bool route_ffn_out = false;
  bool route_norms = false;
  int head_dim() const { return d_model / n_head; }
};

class TransformerBlock {
 public:
  // What the forward keeps for the backward (all [N, *] on the device). h1,
  // a, h2 and s feed only products and are in the backend's MatmulInputDType.
  struct Activations {
    Tensor h1, rstd1, qkv, a, lse, x1, h2, rstd2, gu, s;
  };

  // What decoding carries per stream: the rotated keys and the values of
  // the stream's current document, and how many there are.
  struct State {
    Tensor k_cache, v_cache;  // [num_streams, max_len, D]
    Tensor lengths;           // I32 [num_streams]
  };

  TransformerBlock(ParamSet* params, const std::string& name, const TransformerConfig& config);
  void Init(uint64_t seed);
  // out = block(x), x the residual stream. Allocates `acts` on first use.
  void Forward(const BatchContext& ctx, Mat x, Mat out, Activations* acts) const;
  // dx is overwritten with d(loss)/d(x).
  void Backward(const BatchContext& ctx, Mat x, const Activations& acts, Mat dout, Mat dx) const;

  // Empty caches for `num_streams` streams of documents up to `max_len` tokens.
  State NewState(int64_t num_streams, int64_t max_len) const;
  // Decoding: row i of x is the next token of stream step.streams[i] (a new
  // document where step.reset[i]); out is what Forward gives at that
  // position. ctx's routings are over the step's rows, which must be grouped
  // by modality when any weight is routed (as the model groups a batch's).
  void Step(const BatchContext& ctx, const StepLayout& step, Mat x, Mat out, State* state) const;

 private:
  // The block around its attention: attend(qkv, a, lse) fills a from qkv.
  template <typename Attend>
  void Run(const BatchContext& ctx, Mat x, Mat out, Activations* acts, Attend attend) const;

  ParamSet* params_;
  const TransformerConfig config_;
  RmsNorm norm1_, norm2_;
  Linear qkv_proj_, out_proj_, ffn_in_, ffn_out_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_TRANSFORMER_BLOCK_H_
