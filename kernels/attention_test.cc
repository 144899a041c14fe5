// The Transformer block's CUDA ops against the CPU references, on fresh
// random inputs of awkward sizes: sequence lengths that are not multiples of
// the attention tiles, packed documents of many lengths (one token, longer
// than a tile), rows permuted by a row map, q, k and v as column views of one
// fused projection output, F32 and BF16 inputs. Device outputs are
// NaN-poisoned first. The backward gives the same bits run to run. Then the
// whole block, dense and routed, on the GPU against the CPU. Skips without a
// GPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/config.h"
#include "core/model.h"
#include "core/transformer_block.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"
#include "kernels/test_util.h"

namespace modamba {
namespace {

using testing::DeviceError;
using testing::OutputPair;
using testing::Pair;
using testing::RandomPair;
using testing::RelError;
using testing::ToDeviceBf16;
using testing::ToHostF32;

using testing::kTolBf16;
using testing::kTolF32;

// A packed layout on both backends: document starts by position (documents
// of 1 to max_doc positions) and, when mapped, a random row map.
struct Layout {
  int64_t batch, seq_len;
  Pair doc_start, rows;
  bool mapped;
  SeqLayout host() const {
    return {batch, seq_len, &doc_start.host, mapped ? &rows.host : nullptr};
  }
  SeqLayout dev() const { return {batch, seq_len, &doc_start.dev, mapped ? &rows.dev : nullptr}; }
};

// The default backend (bf16 products): activations may be BF16.
class AttentionTest : public testing::GpuVsCpuTest {
 protected:
  Layout MakeLayout(int64_t batch, int64_t seq_len, int64_t max_doc, bool mapped) {
    const int64_t n = batch * seq_len;
    Tensor starts(DType::kU8, {n});
    std::uniform_int_distribution<int64_t> len(1, max_doc);
    for (int64_t b = 0; b < batch; ++b) {
      int64_t next = 0;
      for (int64_t t = 0; t < seq_len; ++t) {
        starts.data<uint8_t>()[b * seq_len + t] = t == next;
        if (t == next) next += len(rng_);
      }
    }
    Tensor rows(DType::kI32, {n});
    std::iota(rows.data<int32_t>(), rows.data<int32_t>() + n, 0);
    std::shuffle(rows.data<int32_t>(), rows.data<int32_t>() + n, rng_);
    return Layout{batch, seq_len, testing::Upload(gpu_.get(), std::move(starts)),
                  testing::Upload(gpu_.get(), std::move(rows)), mapped};
  }

  // Attention forward and backward with q, k, v the three column blocks of
  // one [N, 3D] matrix (F32) or three BF16 matrices.
  void CheckAttention(int64_t batch, int64_t seq_len, int heads, int head_dim, int64_t max_doc,
                      bool mapped, bool bf16_inputs) {
    SCOPED_TRACE(::testing::Message() << "batch " << batch << " seq_len " << seq_len << " heads "
                                      << heads << " head_dim " << head_dim << " docs <= "
                                      << max_doc << (mapped ? " mapped" : "")
                                      << (bf16_inputs ? " bf16" : ""));
    const Layout layout = MakeLayout(batch, seq_len, max_doc, mapped);
    const int64_t n = batch * seq_len, d = int64_t(heads) * head_dim;
    // The inputs the GPU reads, rounded to bf16 on the host too, so both
    // sides start from the same values.
    Tensor qkv = testing::RandomHost({n, 3 * d}, &rng_);
    Tensor dout = testing::RandomHost({n, d}, &rng_);
    Tensor qkv_bf16 = ToDeviceBf16(gpu_.get(), &qkv);
    Tensor dout_bf16 = ToDeviceBf16(gpu_.get(), &dout);
    Tensor qkv_f32 = testing::ToDevice(gpu_.get(), qkv);
    Tensor dout_f32 = testing::ToDevice(gpu_.get(), dout);
    Tensor q16, k16, v16;
    Mat q_dev, k_dev, v_dev;
    if (bf16_inputs) {  // separate contiguous matrices
      for (Tensor* t : {&q16, &k16, &v16}) *t = gpu_->Empty(DType::kBF16, {n, d});
      gpu_->Copy(qkv_bf16.mat().Cols(0, d), q16.mat());
      gpu_->Copy(qkv_bf16.mat().Cols(d, d), k16.mat());
      gpu_->Copy(qkv_bf16.mat().Cols(2 * d, d), v16.mat());
      q_dev = q16.mat();
      k_dev = k16.mat();
      v_dev = v16.mat();
    } else {
      q_dev = qkv_f32.mat().Cols(0, d);
      k_dev = qkv_f32.mat().Cols(d, d);
      v_dev = qkv_f32.mat().Cols(2 * d, d);
    }
    const Mat hq = qkv.mat().Cols(0, d), hk = qkv.mat().Cols(d, d), hv = qkv.mat().Cols(2 * d, d);

    Pair out = OutputPair(gpu_.get(), {n, d});
    Pair lse = OutputPair(gpu_.get(), {n, heads});
    cpu_->AttentionForward(layout.host(), heads, hq, hk, hv, out.h(), &lse.host);
    gpu_->AttentionForward(layout.dev(), heads, q_dev, k_dev, v_dev, out.d(), &lse.dev);
    ExpectClose(DeviceError(gpu_.get(), out), kTolBf16, "attention out");
    ExpectClose(DeviceError(gpu_.get(), lse), kTolBf16, "attention lse");

    Pair dq = OutputPair(gpu_.get(), {n, d}), dk = OutputPair(gpu_.get(), {n, d});
    Pair dv = OutputPair(gpu_.get(), {n, d});
    cpu_->AttentionBackward(layout.host(), heads, hq, hk, hv, out.h(), lse.host, dout.mat(),
                            dq.h(), dk.h(), dv.h());
    gpu_->AttentionBackward(layout.dev(), heads, q_dev, k_dev, v_dev, out.d(), lse.dev,
                            bf16_inputs ? dout_bf16.mat() : dout_f32.mat(), dq.d(), dk.d(),
                            dv.d());
    ExpectClose(DeviceError(gpu_.get(), dq), kTolBf16, "attention dq");
    ExpectClose(DeviceError(gpu_.get(), dk), kTolBf16, "attention dk");
    ExpectClose(DeviceError(gpu_.get(), dv), kTolBf16, "attention dv");
  }
};

TEST_F(AttentionTest, MatchesCpu) {
  CheckAttention(2, 100, 3, 64, 40, true, false);     // documents shorter than a tile
  CheckAttention(1, 333, 2, 32, 1000, false, false);  // one document, 5+ tiles
  CheckAttention(3, 130, 2, 128, 9, true, false);     // many short documents
  CheckAttention(2, 200, 1, 64, 150, false, true);    // BF16 inputs, documents across tiles
  CheckAttention(1, 7, 4, 64, 1, true, false);        // every token its own document
}

// Two backward calls give the same bits, at a size where a thousand blocks
// run in the scheduler's order and up to 32 key tiles meet in each query's
// gradient (fp32 atomics across key tiles would sum in that order).
TEST_F(AttentionTest, BackwardIsBitwiseReproducible) {
  const int64_t batch = 4, seq_len = 2000, n = batch * seq_len;
  const int heads = 8, d = heads * 64;
  const Layout layout = MakeLayout(batch, seq_len, 1500, true);
  Tensor qkv = testing::ToDevice(gpu_.get(), testing::RandomHost({n, 3 * d}, &rng_));
  Tensor dout = testing::ToDevice(gpu_.get(), testing::RandomHost({n, d}, &rng_));
  const Mat q = qkv.mat().Cols(0, d), k = qkv.mat().Cols(d, d), v = qkv.mat().Cols(2 * d, d);
  Tensor out = gpu_->Empty(DType::kF32, {n, d}), lse = gpu_->Empty(DType::kF32, {n, heads});
  gpu_->AttentionForward(layout.dev(), heads, q, k, v, out.mat(), &lse);
  std::vector<std::vector<Tensor>> runs;
  for (int run = 0; run < 2; ++run) {
    Pair dq = OutputPair(gpu_.get(), {n, d}), dk = OutputPair(gpu_.get(), {n, d});
    Pair dv = OutputPair(gpu_.get(), {n, d});
    gpu_->AttentionBackward(layout.dev(), heads, q, k, v, out.mat(), lse, dout.mat(), dq.d(),
                            dk.d(), dv.d());
    runs.emplace_back();
    for (const Pair* p : {&dq, &dk, &dv}) {
      runs.back().push_back(testing::ToHost(gpu_.get(), p->dev));
    }
  }
  const char* names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(std::memcmp(runs[0][i].raw(), runs[1][i].raw(), runs[0][i].nbytes()), 0)
        << "attention " << names[i] << " differs between two runs";
  }
}

TEST_F(AttentionTest, RopeAndSwigluMatchCpu) {
  const Layout layout = MakeLayout(3, 45, 12, true);
  const int64_t n = 3 * 45;
  // Rope in place over q | k of a [N, 3D] view, then back.
  Pair x = RandomPair(gpu_.get(), {n, 3 * 48}, &rng_);
  const Mat hx = x.h(0, 96), dx = x.d(0, 96);
  cpu_->Rope(layout.host(), 16, 10000, false, hx, hx);
  gpu_->Rope(layout.dev(), 16, 10000, false, dx, dx);
  ExpectClose(DeviceError(gpu_.get(), x), kTolF32, "rope");
  Tensor before = testing::ToHost(gpu_.get(), x.dev);
  gpu_->Rope(layout.dev(), 16, 10000, true, dx, dx);
  cpu_->Rope(layout.host(), 16, 10000, true, hx, hx);
  ExpectClose(DeviceError(gpu_.get(), x), kTolF32, "rope inverse");
  EXPECT_GT(RelError(before.mat(), x.host.mat()), 1e-2) << "rope rotated nothing";

  Pair gu = RandomPair(gpu_.get(), {n, 2 * 37}, &rng_, 2.f);
  Pair dy = RandomPair(gpu_.get(), {n, 37}, &rng_);
  Pair y = OutputPair(gpu_.get(), {n, 37});
  cpu_->SwigluForward(gu.h(0, 37), gu.h(37, 37), y.h());
  gpu_->SwigluForward(gu.d(0, 37), gu.d(37, 37), y.d());
  ExpectClose(DeviceError(gpu_.get(), y), kTolF32, "swiglu");
  Pair dgu = OutputPair(gpu_.get(), {n, 2 * 37});
  cpu_->SwigluBackward(gu.h(0, 37), gu.h(37, 37), dy.h(), dgu.h(0, 37), dgu.h(37, 37));
  gpu_->SwigluBackward(gu.d(0, 37), gu.d(37, 37), dy.d(), dgu.d(0, 37), dgu.d(37, 37));
  ExpectClose(DeviceError(gpu_.get(), dgu), kTolF32, "swiglu backward");
}

// Decoding steps of 3 streams (one reset mid-way, rows in shuffled stream
// order) against the CPU's AttentionStep: outputs, caches and lengths.
TEST_F(AttentionTest, StepMatchesCpu) {
  const int heads = 3, head_dim = 64, d = heads * head_dim;
  const int64_t streams = 3, max_len = 70;
  Tensor kc_host = Tensor::Zeros(DType::kF32, {streams, max_len, d});
  Tensor vc_host = Tensor::Zeros(DType::kF32, {streams, max_len, d});
  Tensor len_host = Tensor::Zeros(DType::kI32, {streams});
  Tensor kc = testing::ToDevice(gpu_.get(), kc_host), vc = testing::ToDevice(gpu_.get(), vc_host);
  Tensor len = testing::ToDevice(gpu_.get(), len_host);
  std::vector<int32_t> order = {0, 1, 2};
  for (int t = 0; t < 60; ++t) {
    std::shuffle(order.begin(), order.end(), rng_);
    Tensor ids(DType::kI32, {streams}), reset(DType::kU8, {streams});
    for (int i = 0; i < streams; ++i) {
      ids.data<int32_t>()[i] = order[i];
      reset.data<uint8_t>()[i] = t == 0 || (t == 37 && order[i] == 1);
    }
    Pair ids_p = testing::Upload(gpu_.get(), std::move(ids));
    Pair reset_p = testing::Upload(gpu_.get(), std::move(reset));
    Pair qkv = RandomPair(gpu_.get(), {streams, 3 * d}, &rng_);
    Pair out = OutputPair(gpu_.get(), {streams, d});
    const StepLayout hs{&ids_p.host, &reset_p.host}, ds{&ids_p.dev, &reset_p.dev};
    cpu_->AttentionStep(hs, heads, 10000, qkv.h(0, d), qkv.h(d, d), qkv.h(2 * d, d), &kc_host,
                        &vc_host, &len_host, out.h());
    gpu_->AttentionStep(ds, heads, 10000, qkv.d(0, d), qkv.d(d, d), qkv.d(2 * d, d), &kc, &vc,
                        &len, out.d());
    if (t % 20 == 19 || t == 37) {
      ExpectClose(DeviceError(gpu_.get(), out), kTolF32 * 10, "step out " + std::to_string(t));
    }
  }
  gpu_->Synchronize();
  Tensor got_len = testing::ToHost(gpu_.get(), len);
  for (int s = 0; s < streams; ++s) {
    EXPECT_EQ(got_len.data<int32_t>()[s], len_host.data<int32_t>()[s]) << "stream " << s;
  }
  ExpectClose(RelError(testing::ToHost(gpu_.get(), kc).mat(), kc_host.mat()), kTolF32,
              "step k cache");
  ExpectClose(RelError(testing::ToHost(gpu_.get(), vc).mat(), vc_host.mat()), kTolF32,
              "step v cache");
}

// d_model 128 in 2 heads of 64 (a head size the GPU kernels take), 3
// modalities, every weight routed or none.
v1::ModelConfig TransformerConfig(bool routed) {
  v1::ModelConfig c;
  c.set_architecture(v1::ModelConfig::TRANSFORMER);
  c.set_d_model(128);
  c.set_n_layer(2);
  c.set_n_head(2);
  c.set_vocab_size(61);
  c.set_n_modalities(3);
  c.set_route_qkv(routed);
  c.set_route_attn_out(routed);
  c.set_route_ffn_in(routed);
  c.set_route_ffn_out(routed);
  c.set_route_norms(routed);
  const absl::Status resolved = ResolveModelConfig(&c, "test");
  CHECK(resolved.ok()) << resolved;
  return c;
}

// The block on both backends from the same initial weights, rows grouped by
// modality through a row map as the model lays them out.
void CheckBlock(Backend* cpu, Backend* gpu, std::mt19937* rng, bool routed,
                const std::function<void(double, const std::string&)>& expect) {
  v1::ModelConfig c = TransformerConfig(routed);
  c.set_n_layer(4);
  c.set_d_ff(200);
  const int64_t batch = 2, seq_len = 150, n = batch * seq_len;
  std::vector<uint8_t> starts(n);
  std::vector<int32_t> modality(n);
  std::uniform_int_distribution<int> pick(0, 2);
  for (int64_t i = 0; i < n; ++i) {
    starts[i] = i % seq_len == 0 || (*rng)() % 16 == 0;
    modality[i] = pick(*rng);
  }
  std::vector<int32_t> row_of(n), by_row;
  for (int m = 0; m < 3; ++m) {
    for (int64_t i = 0; i < n; ++i) {
      if (modality[i] == m) {
        row_of[i] = static_cast<int32_t>(by_row.size());
        by_row.push_back(m);
      }
    }
  }
  std::vector<int32_t> zeros(n, 0);
  const int64_t d = c.d_model();
  Tensor x_host = testing::RandomHost({n, d}, rng);
  Tensor r_host = testing::RandomHost({n, d}, rng);
  std::vector<Tensor> outs, dxs;
  std::vector<std::vector<Tensor>> grads(2);
  for (Backend* be : {cpu, gpu}) {
    ParamSet params(be, DType::kF32);
    TransformerBlock block(&params, "layers.0", c);
    block.Init(42);
    Tensor doc = Upload(be, DType::kU8, starts), rows = Upload(be, DType::kI32, row_of);
    auto by_modality = be->MakeRouting(by_row.data(), n, 3);
    auto shared = be->MakeRouting(zeros.data(), n, 1);
    BatchContext ctx{SeqLayout{batch, seq_len, &doc, &rows}, by_modality.get(), shared.get()};
    Tensor x = testing::ToDevice(be, x_host), dx = testing::ToDevice(be, r_host);
    Tensor out = be->Empty(DType::kF32, {n, d});
    be->Fill(out.mat(), std::numeric_limits<double>::quiet_NaN());
    std::unique_ptr<Block::Activations> acts = block.NewActivations();
    block.Forward(ctx, x.mat(), out.mat(), acts.get());
    block.Backward(ctx, x.mat(), *acts, dx.mat());  // dx: d(sum(out * r))/dx, in place
    outs.push_back(ToHostF32(be, out.mat()));
    dxs.push_back(ToHostF32(be, dx.mat()));
    for (const auto& p : params.all()) grads[be == gpu].push_back(ToHostF32(be, p->grad.mat()));
    be->Synchronize();
  }
  const std::string kind = routed ? "routed block " : "dense block ";
  expect(RelError(outs[1].mat(), outs[0].mat()), kind + "out");
  expect(RelError(dxs[1].mat(), dxs[0].mat()), kind + "dx");
  for (size_t i = 0; i < grads[0].size(); ++i) {
    expect(RelError(grads[1][i].mat(), grads[0][i].mat()), kind + "grad " + std::to_string(i));
  }
}

TEST_F(AttentionTest, BlockMatchesCpu) {
  for (bool routed : {false, true}) {
    CheckBlock(cpu_.get(), gpu_.get(), &rng_, routed,
               [&](double err, const std::string& what) { ExpectClose(err, 3e-2, what); });
  }
}

// The language model of Mixture-of-Transformers blocks on the GPU (bf16
// products) against the CPU: the loss and every gradient of one step, then
// KV-cache decoding on the GPU against the GPU's own parallel logits.
TEST_F(AttentionTest, TransformerModelMatchesCpu) {
  const v1::ModelConfig c = TransformerConfig(true);
  Batch b;
  b.batch = 2;
  b.seq_len = 77;
  std::uniform_int_distribution<int> token(0, c.vocab_size() - 1), modality(0, 2);
  for (int64_t i = 0; i < b.rows(); ++i) {
    const int m = modality(rng_);
    b.tokens.push_back(token(rng_));
    b.modality.push_back(m);
    b.doc_start.push_back(i % b.seq_len == 0 || i % b.seq_len == 40);
    b.targets.push_back(token(rng_));
    b.target_modality.push_back(m);
    b.loss_mask.push_back(1.f);
  }
  auto mc = LanguageModel::Create(c, cpu_.get(), DType::kF32, 7);
  auto mg = LanguageModel::Create(c, gpu_.get(), DType::kF32, 7);
  ASSERT_TRUE(mc.ok() && mg.ok());
  auto rc = (*mc)->ForwardBackward(b);
  auto rg = (*mg)->ForwardBackward(b);
  ASSERT_TRUE(rc.ok() && rg.ok());
  ExpectClose(std::abs(rg->objective() - rc->objective()) / rc->objective(), kTolBf16,
              "model objective");
  const auto& pc = (*mc)->params().all();
  const auto& pg = (*mg)->params().all();
  for (size_t i = 0; i < pc.size(); ++i) {
    Tensor got = testing::ToHost(gpu_.get(), pg[i]->grad);
    ExpectClose(RelError(got.mat(), pc[i]->grad.mat()), 5e-2, "gradient of " + pc[i]->name);
  }

  ASSERT_TRUE((*mg)->Evaluate(b).ok());
  Tensor parallel = testing::ToHost(gpu_.get(), (*mg)->logits());
  const int v = c.vocab_size();
  RecurrentState state = (*mg)->NewState(2);
  Tensor stepped(DType::kF32, parallel.shape());
  std::vector<float> logits(2 * v);
  for (int64_t t = 0; t < b.seq_len; ++t) {
    std::vector<StepInput> inputs(2);
    for (int s = 0; s < 2; ++s) {
      const int64_t n = s * b.seq_len + t;
      inputs[s] = StepInput{s, b.tokens[n], b.modality[n], b.doc_start[n] != 0};
    }
    ASSERT_TRUE((*mg)->Step(inputs, &state, logits.data(), nullptr).ok());
    for (int s = 0; s < 2; ++s) {
      std::copy_n(logits.data() + s * v, v, stepped.data<float>() + (s * b.seq_len + t) * v);
    }
  }
  ExpectClose(RelError(stepped.mat(), parallel.mat()), kTolBf16, "KV-cache logits");
}

}  // namespace
}  // namespace modamba
