// The Transformer block on the CPU, in double: its gradients against finite
// differences (dense and routed, packed documents, rows grouped by modality
// through a row map), Mixture-of-Transformers with one modality against the
// dense block bit for bit, and packed documents that never see each other.
#include "core/transformer_block.h"

#include <cmath>
#include <algorithm>
#include <functional>
#include <numeric>
#include <vector>

#include "core/config.h"
#include "core/rng.h"
#include "glog/logging.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

// A packed batch: its sequences, documents and modalities by position, the
// rows grouped by modality through a row map (as the model lays them out).
struct Packed {
  int64_t batch, seq_len;
  std::vector<uint8_t> doc_start;
  std::vector<int32_t> modality;  // by position
};

class Harness {
 public:
  Harness(const v1::ModelConfig& config, const Packed& p, uint64_t seed = 7)
      : params_(be_.get(), DType::kF64), block_(&params_, "layers.0", config) {
    block_.Init(seed);
    const int64_t n = p.batch * p.seq_len;
    // Row of each position: modality 0's positions first, sequence order inside.
    std::vector<int32_t> row_of(n), by_row(n);
    int32_t next = 0;
    for (int m = 0; m < config.n_modalities(); ++m) {
      for (int64_t i = 0; i < n; ++i) {
        if (p.modality[i] == m) {
          by_row[next] = m;
          row_of[i] = next++;
        }
      }
    }
    doc_start_ = Upload(be_.get(), DType::kU8, p.doc_start);
    rows_ = Upload(be_.get(), DType::kI32, row_of);
    by_modality_ = be_->MakeRouting(by_row.data(), n, config.n_modalities());
    std::vector<int32_t> zeros(n, 0);
    shared_ = be_->MakeRouting(zeros.data(), n, 1);
    ctx_ = BatchContext{SeqLayout{p.batch, p.seq_len, &doc_start_, &rows_}, by_modality_.get(),
                        shared_.get()};
  }

  Tensor Forward(const Tensor& x) {
    Tensor out(DType::kF64, x.shape());
    block_.Forward(ctx_, x.mat(), out.mat(), acts_.get());
    return out;
  }
  // dx of L = sum(out * r); parameter gradients accumulate into params().
  Tensor Backward(const Tensor& x, const Tensor& r) {
    Forward(x);
    Tensor dx(DType::kF64, x.shape());
    be_->Copy(r.mat(), dx.mat());
    block_.Backward(ctx_, x.mat(), *acts_, dx.mat());
    return dx;
  }
  const ParamSet& params() const { return params_; }
  int64_t RowOf(int64_t position) const { return rows_.data<int32_t>()[position]; }

 private:
  std::unique_ptr<Backend> be_ = NewCpuBackend();
  ParamSet params_;
  TransformerBlock block_;
  Tensor doc_start_, rows_;
  std::unique_ptr<Routing> by_modality_, shared_;
  BatchContext ctx_;
  std::unique_ptr<Block::Activations> acts_ = block_.NewActivations();
};

Tensor Random(const Shape& shape, Rng* rng) {
  Tensor t(DType::kF64, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<double>()[i] = rng->Normal(0, 1);
  return t;
}

double Dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += a.data<double>()[i] * b.data<double>()[i];
  return s;
}

// Two sequences of 7 positions, several documents each, modalities interleaved.
Packed TwoSequences() {
  Packed p{2, 7, {}, {}};
  p.doc_start = {1, 0, 0, 1, 0, 0, 0,  /**/ 1, 0, 1, 0, 0, 0, 1};
  p.modality = {0, 1, 1, 0, 2, 2, 0,  /**/ 1, 1, 0, 2, 0, 1, 1};
  return p;
}

v1::ModelConfig Small(bool routed, int modalities = 3) {
  v1::ModelConfig c;
  c.set_architecture(v1::ModelConfig::TRANSFORMER);
  c.set_d_model(8);
  c.set_n_layer(2);
  c.set_vocab_size(16);
  c.set_n_head(2);
  c.set_d_ff(12);
  c.set_n_modalities(modalities);
  for (auto set : {&v1::ModelConfig::set_route_qkv, &v1::ModelConfig::set_route_attn_out,
                   &v1::ModelConfig::set_route_ffn_in, &v1::ModelConfig::set_route_ffn_out,
                   &v1::ModelConfig::set_route_norms}) {
    (c.*set)(routed);
  }
  const absl::Status resolved = ResolveModelConfig(&c, "test config");
  CHECK(resolved.ok()) << resolved;
  return c;
}

// Relative L2 error of the analytic gradient of every parameter and of x
// against fourth-order central differences of L = sum(block(x) * r).
void CheckGradients(const v1::ModelConfig& config) {
  const Packed p = TwoSequences();
  Harness h(config, p);
  Rng rng(11);
  const int64_t n = p.batch * p.seq_len;
  Tensor x = Random({n, config.d_model()}, &rng), r = Random({n, config.d_model()}, &rng);
  Tensor dx = h.Backward(x, r);
  auto check = [&](const std::string& what, double* values, const double* grad, int64_t size) {
    double err2 = 0, ref2 = 0;
    const double step = 1e-4;
    for (int64_t i = 0; i < size; ++i) {
      const double saved = values[i];
      auto at = [&](double offset) {
        values[i] = saved + offset;
        return Dot(h.Forward(x), r);
      };
      const double numeric =
          (-at(2 * step) + 8 * at(step) - 8 * at(-step) + at(-2 * step)) / (12 * step);
      values[i] = saved;
      err2 += (grad[i] - numeric) * (grad[i] - numeric);
      ref2 += numeric * numeric;
    }
    ASSERT_GT(ref2, 0) << what << ": all-zero gradient";
    EXPECT_LT(std::sqrt(err2 / ref2), 1e-7) << what;
  };
  check("x", x.data<double>(), dx.data<double>(), x.numel());
  for (const auto& param : h.params().all()) {
    check(param->name, param->value.data<double>(), param->grad.data<double>(),
          param->value.numel());
  }
}

TEST(TransformerBlockTest, DenseGradients) { CheckGradients(Small(false)); }
TEST(TransformerBlockTest, RoutedGradients) { CheckGradients(Small(true)); }

TEST(TransformerBlockTest, OneModalityMixtureEqualsDenseBitForBit) {
  Packed p = TwoSequences();
  std::fill(p.modality.begin(), p.modality.end(), 0);
  Harness a(Small(false, 1), p), b(Small(true, 1), p);
  Rng rng(3);
  Tensor x = Random({14, 8}, &rng), r = Random({14, 8}, &rng);
  Tensor ya = a.Forward(x), yb = b.Forward(x);
  Tensor da = a.Backward(x, r), db = b.Backward(x, r);
  for (int64_t i = 0; i < ya.numel(); ++i) {
    ASSERT_EQ(ya.data<double>()[i], yb.data<double>()[i]) << "out " << i;
    ASSERT_EQ(da.data<double>()[i], db.data<double>()[i]) << "dx " << i;
  }
  ASSERT_EQ(a.params().all().size(), b.params().all().size());
  for (size_t k = 0; k < a.params().all().size(); ++k) {
    const Param& pa = *a.params().all()[k];
    const Param& pb = *b.params().all()[k];
    ASSERT_EQ(pa.name, pb.name);
    ASSERT_EQ(pa.value.numel(), pb.value.numel()) << pa.name;
    for (int64_t i = 0; i < pa.value.numel(); ++i) {
      ASSERT_EQ(pa.value.data<double>()[i], pb.value.data<double>()[i]) << pa.name;
      ASSERT_EQ(pa.grad.data<double>()[i], pb.grad.data<double>()[i]) << pa.name;
    }
  }
}

// A document's outputs do not depend on the document before it, and equal
// those of the same document alone in its own sequence (rotary positions
// count from the document's start).
TEST(TransformerBlockTest, PackedDocumentsAreIndependent) {
  const v1::ModelConfig c = Small(true);
  Packed packed{1, 9, {1, 0, 0, 0, 1, 0, 0, 0, 0}, {0, 1, 2, 0, 1, 1, 0, 2, 0}};
  Packed alone{1, 5, {1, 0, 0, 0, 0}, {1, 1, 0, 2, 0}};
  Harness hp(c, packed), ha(c, alone);
  Rng rng(5);
  Tensor xp = Random({9, 8}, &rng);
  Tensor xa(DType::kF64, {5, 8});
  for (int64_t t = 0; t < 5; ++t) {
    for (int j = 0; j < 8; ++j) {
      xa.data<double>()[ha.RowOf(t) * 8 + j] = xp.data<double>()[hp.RowOf(4 + t) * 8 + j];
    }
  }
  Tensor yp = hp.Forward(xp);
  Tensor ya = ha.Forward(xa);
  // Another first document: the second's outputs stay exactly the same.
  Tensor xq = Random({9, 8}, &rng);
  for (int64_t t = 4; t < 9; ++t) {
    for (int j = 0; j < 8; ++j) {
      xq.data<double>()[hp.RowOf(t) * 8 + j] = xp.data<double>()[hp.RowOf(t) * 8 + j];
    }
  }
  Tensor yq = hp.Forward(xq);
  for (int64_t t = 0; t < 5; ++t) {
    for (int j = 0; j < 8; ++j) {
      const double want = yp.data<double>()[hp.RowOf(4 + t) * 8 + j];
      EXPECT_EQ(yq.data<double>()[hp.RowOf(4 + t) * 8 + j], want) << "t " << t;
      EXPECT_NEAR(ya.data<double>()[ha.RowOf(t) * 8 + j], want, 1e-12) << "t " << t;
    }
  }
}

// Decoding two streams token by token through the key-value caches gives the
// parallel forward's outputs, documents and all: each step's rows ordered by
// modality, as the routed norms need.
void CheckSteps(const v1::ModelConfig& config) {
  const Packed p = TwoSequences();
  Harness parallel(config, p);
  Rng rng(13);
  const int64_t n = p.batch * p.seq_len, d = config.d_model();
  Tensor x = Random({n, d}, &rng);
  Tensor want = parallel.Forward(x);

  std::unique_ptr<Backend> be = NewCpuBackend();
  ParamSet params(be.get(), DType::kF64);
  TransformerBlock block(&params, "layers.0", config);
  block.Init(7);
  std::unique_ptr<Block::State> state = block.NewState(p.batch);
  for (int64_t t = 0; t < p.seq_len; ++t) {
    std::vector<int32_t> streams(p.batch), modality;
    std::iota(streams.begin(), streams.end(), 0);
    std::stable_sort(streams.begin(), streams.end(), [&](int32_t a, int32_t b) {
      return p.modality[a * p.seq_len + t] < p.modality[b * p.seq_len + t];
    });
    std::vector<uint8_t> reset;
    Tensor xs(DType::kF64, {p.batch, d});
    for (int64_t i = 0; i < p.batch; ++i) {
      const int64_t pos = streams[i] * p.seq_len + t;
      modality.push_back(p.modality[pos]);
      reset.push_back(p.doc_start[pos]);
      std::copy_n(x.data<double>() + parallel.RowOf(pos) * d, d, xs.data<double>() + i * d);
    }
    Tensor streams_t = Upload(be.get(), DType::kI32, streams);
    Tensor reset_t = Upload(be.get(), DType::kU8, reset);
    StepLayout step{&streams_t, &reset_t};
    auto by_modality = be->MakeRouting(modality.data(), p.batch, config.n_modalities());
    std::vector<int32_t> zeros(p.batch, 0);
    auto shared = be->MakeRouting(zeros.data(), p.batch, 1);
    const StepContext ctx{step, &streams, &reset, by_modality.get(), shared.get()};
    block.Step(ctx, xs.mat(), state.get());
    const Tensor& out = xs;
    for (int64_t i = 0; i < p.batch; ++i) {
      const int64_t row = parallel.RowOf(streams[i] * p.seq_len + t);
      for (int64_t j = 0; j < d; ++j) {
        EXPECT_NEAR(out.data<double>()[i * d + j], want.data<double>()[row * d + j], 1e-12)
            << "stream " << streams[i] << " t " << t;
      }
    }
  }
}

TEST(TransformerBlockTest, DenseStepsMatchForward) { CheckSteps(Small(false)); }
TEST(TransformerBlockTest, RoutedStepsMatchForward) { CheckSteps(Small(true)); }

}  // namespace
}  // namespace modamba
