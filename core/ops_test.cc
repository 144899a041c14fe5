// Finite-difference gradient checks, in double, of every backward op of the
// CPU backend: each op's input and parameter gradients against central
// differences of L = sum(out * R) for a fixed random R.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

constexpr double kTol = 1e-6;

class OpsGradTest : public ::testing::Test {
 protected:
  Tensor Random(Shape shape, double scale = 1.0) {
    Tensor t(DType::kF64, shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<double>()[i] = rng_.Normal(0, scale);
    return t;
  }
  Tensor Zeros(Shape shape) { return Tensor::Zeros(DType::kF64, shape); }

  // Checks grad (analytic) against d loss / d t by central differences.
  void ExpectGradient(const std::string& what, Tensor* t, const Tensor& grad,
                      const std::function<double()>& loss) {
    double err2 = 0, ref2 = 0;
    const double h = 1e-4;
    for (int64_t i = 0; i < t->numel(); ++i) {
      double& x = t->data<double>()[i];
      const double saved = x;
      auto at = [&](double offset) {
        x = saved + offset;
        return loss();
      };
      // Fourth-order central difference: truncation O(h^4), rounding O(eps / h).
      double numeric = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h);
      x = saved;
      double diff = grad.data<double>()[i] - numeric;
      err2 += diff * diff;
      ref2 += numeric * numeric;
    }
    ASSERT_GT(ref2, 0) << what << ": gradient is all zero; the check would be vacuous";
    double rel = std::sqrt(err2 / ref2);
    EXPECT_LT(rel, kTol) << what;
    EXPECT_FALSE(std::isnan(rel)) << what;
  }

  static double Dot(const Tensor& a, const Tensor& b) {
    double s = 0;
    for (int64_t i = 0; i < a.numel(); ++i) s += a.data<double>()[i] * b.data<double>()[i];
    return s;
  }

  std::unique_ptr<Backend> be_ = NewCpuBackend();
  Rng rng_{1234};
};

TEST_F(OpsGradTest, RmsNorm) {
  const int n = 5, d = 7;
  Tensor x = Random({n, d}), w = Random({d}), r = Random({n, d});
  Tensor y = Zeros({n, d}), rstd = Zeros({n});
  auto loss = [&] {
    be_->RmsNormForward(x.mat(), w, 1e-5, y.mat(), &rstd);
    return Dot(y, r);
  };
  loss();
  Tensor dx = Zeros({n, d}), dw = Zeros({d});
  be_->RmsNormBackward(x.mat(), w, rstd, r.mat(), dx.mat(), &dw);
  ExpectGradient("rmsnorm dx", &x, dx, loss);
  ExpectGradient("rmsnorm dw", &w, dw, loss);
}

TEST_F(OpsGradTest, CausalConvWithDocumentResets) {
  const int b = 2, l = 9, e = 5, k = 4;
  Tensor doc = Tensor::Zeros(DType::kU8, {b * l});
  doc.data<uint8_t>()[3] = doc.data<uint8_t>()[l + 5] = 1;
  SeqLayout seq{b, l, &doc};
  // x is a column slice of a wider matrix, as it is inside the block.
  Tensor xz = Random({b * l, 2 * e}), w = Random({e, k}, 0.5), bias = Random({e}, 0.5);
  Tensor r = Random({b * l, e}), u = Zeros({b * l, e});
  Mat x = xz.mat().Cols(0, e);
  auto loss = [&] {
    be_->ConvForward(seq, x, w, bias, u.mat());
    return Dot(u, r);
  };
  loss();
  Tensor dxz = Zeros({b * l, 2 * e}), dw = Zeros({e, k}), db = Zeros({e});
  be_->ConvBackward(seq, x, w, bias, r.mat(), dxz.mat().Cols(0, e), &dw, &db);
  ExpectGradient("conv dx", &xz, dxz, loss);
  ExpectGradient("conv dw", &w, dw, loss);
  ExpectGradient("conv db", &bias, db, loss);
}

TEST_F(OpsGradTest, ConvDoesNotSeeThePreviousDocument) {
  const int l = 6, e = 2, k = 4;
  Tensor doc = Tensor::Zeros(DType::kU8, {l});
  doc.data<uint8_t>()[3] = 1;
  SeqLayout seq{1, l, &doc};
  Tensor x = Random({l, e}), w = Random({e, k}), bias = Random({e});
  Tensor u1 = Zeros({l, e}), u2 = Zeros({l, e});
  be_->ConvForward(seq, x.mat(), w, bias, u1.mat());
  for (int i = 0; i < 3 * e; ++i) x.data<double>()[i] += 1.0;  // change document 1 only
  be_->ConvForward(seq, x.mat(), w, bias, u2.mat());
  for (int i = 3 * e; i < l * e; ++i) EXPECT_EQ(u1.data<double>()[i], u2.data<double>()[i]);
}

class ScanGradTest : public OpsGradTest {
 protected:
  void Run(int groups) {
    const int b = 2, l = 7, e = 3, s = 4, g = groups;
    Tensor doc = Tensor::Zeros(DType::kU8, {b * l});
    doc.data<uint8_t>()[4] = 1;
    SeqLayout seq{b, l, &doc};
    std::vector<int32_t> modality(b * l);
    for (int i = 0; i < b * l; ++i) modality[i] = (i / 3) % g;
    auto routing = be_->MakeRouting(modality.data(), b * l, g);
    Tensor u = Random({b * l, e}), dr = Random({b * l, e}), dbc = Random({b * l, 2 * s});
    Tensor xz = Random({b * l, 2 * e}), bias = Random({g, e}, 0.5);
    Tensor a_log = Random({e, s}, 0.5), d = Random({e}), r = Random({b * l, e});
    Tensor y = Zeros({b * l, e});
    ScanInputs in{u.mat(), dr.mat(), dbc.mat().Cols(0, s), dbc.mat().Cols(s, s),
                  xz.mat().Cols(e, e), &bias, &a_log, &d};
    auto loss = [&] {
      be_->ScanForward(seq, *routing, in, y.mat());
      return Dot(y, r);
    };
    loss();
    Tensor du = Zeros({b * l, e}), ddr = Zeros({b * l, e}), ddbc = Zeros({b * l, 2 * s});
    Tensor dxz = Zeros({b * l, 2 * e}), dbias = Zeros({g, e}), da = Zeros({e, s}), dd = Zeros({e});
    ScanGrads grads{du.mat(), ddr.mat(), ddbc.mat().Cols(0, s), ddbc.mat().Cols(s, s),
                    dxz.mat().Cols(e, e), &dbias, &da, &dd};
    be_->ScanBackward(seq, *routing, in, r.mat(), grads);
    ExpectGradient("scan du", &u, du, loss);
    ExpectGradient("scan ddelta", &dr, ddr, loss);
    ExpectGradient("scan dB dC", &dbc, ddbc, loss);
    ExpectGradient("scan dz", &xz, dxz, loss);
    ExpectGradient("scan ddt_bias", &bias, dbias, loss);
    ExpectGradient("scan dA_log", &a_log, da, loss);
    ExpectGradient("scan dD", &d, dd, loss);
  }
};

TEST_F(ScanGradTest, SharedDtBias) { Run(1); }
TEST_F(ScanGradTest, RoutedDtBias) { Run(3); }

TEST_F(OpsGradTest, RoutedLinearWithAnEmptyGroup) {
  const int n = 7, in = 5, out = 4, g = 3;
  // Group 1 has no rows; rows interleaved (gathered), then grouped (row ranges).
  for (std::vector<int32_t> modality : {std::vector<int32_t>{0, 2, 2, 0, 0, 2, 0},
                                        std::vector<int32_t>{0, 0, 0, 0, 2, 2, 2}}) {
    auto routing = be_->MakeRouting(modality.data(), n, g);
    SCOPED_TRACE(routing->grouped() ? "grouped rows" : "interleaved rows");
    Tensor x = Random({n, in}), w = Random({g, out, in}), r = Random({n, out});
    Tensor y = Zeros({n, out});
    auto loss = [&] {
      be_->RoutedLinear(*routing, x.mat(), w, y.mat());
      return Dot(y, r);
    };
    loss();
    Tensor dx = Zeros({n, in}), dw = Zeros({g, out, in});
    be_->RoutedLinearBackward(*routing, x.mat(), w, r.mat(), dx.mat(), false, &dw);
    ExpectGradient("routed dx", &x, dx, loss);
    for (int i = 0; i < out * in; ++i) EXPECT_EQ(dw.data<double>()[out * in + i], 0.0);
    // Check groups 0 and 2 only (group 1's numeric gradient is zero too).
    for (int i = 0; i < out * in; ++i) dw.data<double>()[out * in + i] = 0;
    ExpectGradient("routed dw", &w, dw, loss);
  }
}

// A SeqLayout row map (core/backend.h): the conv and the scan on rows stored
// at row_of[n] give, bit for bit, the unmapped op's results on the same
// values in sequence order, moved to those rows; parameter gradients are
// identical. Inputs are column views, as in the block; outputs start as NaN,
// so a row the op misses shows.
class RowMapTest : public ::testing::TestWithParam<DType> {
 protected:
  // Random row map over b sequences of l positions with random document starts.
  void MakeLayout(int64_t b, int64_t l) {
    const int64_t n = b * l;
    doc_ = Tensor::Zeros(DType::kU8, {n});
    for (int64_t i = 0; i < n; ++i) doc_.data<uint8_t>()[i] = rng_.Uniform() < 0.1;
    row_of_.resize(n);
    for (int64_t i = 0; i < n; ++i) row_of_[i] = static_cast<int32_t>(i);
    for (int64_t i = n - 1; i > 0; --i) std::swap(row_of_[i], row_of_[rng_.Below(i + 1)]);
    map_ = Tensor(DType::kI32, {n});
    std::copy(row_of_.begin(), row_of_.end(), map_.data<int32_t>());
    plain_ = SeqLayout{b, l, &doc_};
    mapped_ = SeqLayout{b, l, &doc_, &map_};
  }

  Tensor Filled(Shape shape, const std::function<double()>& next) {
    Tensor t(GetParam(), shape);
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (GetParam() == DType::kF64) t.data<double>()[i] = next();
      else t.data<float>()[i] = static_cast<float>(next());
    }
    return t;
  }
  Tensor Random(Shape shape, double scale = 1.0) {
    return Filled(shape, [&] { return rng_.Normal(0, scale); });
  }
  Tensor Poisoned(Shape shape) { return Filled(shape, [] { return std::nan(""); }); }
  Tensor Copy(const Tensor& t) {
    Tensor c(t.dtype(), t.shape());
    std::memcpy(c.raw(), t.raw(), t.nbytes());
    return c;
  }
  // t's row n moved to row row_of_[n].
  Tensor ToRows(const Tensor& t) {
    Tensor out(t.dtype(), t.shape());
    const size_t row_bytes = t.nbytes() / t.dim(0);
    for (int64_t i = 0; i < t.dim(0); ++i) {
      std::memcpy(static_cast<char*>(out.raw()) + row_of_[i] * row_bytes,
                  static_cast<const char*>(t.raw()) + i * row_bytes, row_bytes);
    }
    return out;
  }
  void ExpectSameBits(const std::string& what, const Tensor& want, const Tensor& got) {
    ASSERT_EQ(want.nbytes(), got.nbytes()) << what;
    EXPECT_EQ(std::memcmp(want.raw(), got.raw(), want.nbytes()), 0) << what;
  }

  std::unique_ptr<Backend> be_ = NewCpuBackend();
  Rng rng_{2024};
  Tensor doc_, map_;
  std::vector<int32_t> row_of_;
  SeqLayout plain_, mapped_;
};

TEST_P(RowMapTest, Conv) {
  const int64_t b = 3, l = 37, e = 5, n = b * l;
  MakeLayout(b, l);
  for (int k : {4, 1}) {
    SCOPED_TRACE("K=" + std::to_string(k));
    Tensor xz = Random({n, 2 * e}), w = Random({e, k}, 0.5), bias = Random({e}, 0.5);
    Tensor xz_r = ToRows(xz);
    Tensor u = Poisoned({n, e}), u_r = Poisoned({n, e});
    be_->ConvForward(plain_, xz.mat().Cols(0, e), w, bias, u.mat());
    be_->ConvForward(mapped_, xz_r.mat().Cols(0, e), w, bias, u_r.mat());
    ExpectSameBits("conv u", ToRows(u), u_r);

    Tensor du = Random({n, e}), du_r = ToRows(du);
    Tensor dxz = Poisoned({n, 2 * e}), dxz_r = Poisoned({n, 2 * e});
    Tensor dw = Random({e, k}), db = Random({e});
    Tensor dw_r = Copy(dw), db_r = Copy(db);
    be_->ConvBackward(plain_, xz.mat().Cols(0, e), w, bias, du.mat(), dxz.mat().Cols(0, e), &dw,
                      &db);
    be_->ConvBackward(mapped_, xz_r.mat().Cols(0, e), w, bias, du_r.mat(),
                      dxz_r.mat().Cols(0, e), &dw_r, &db_r);
    ExpectSameBits("conv dx", ToRows(dxz), dxz_r);
    ExpectSameBits("conv dw", dw, dw_r);
    ExpectSameBits("conv db", db, db_r);
  }
}

TEST_P(RowMapTest, Scan) {
  const int64_t b = 2, l = 29, e = 6, s = 5, r = 3, n = b * l;
  const int g = 3;
  MakeLayout(b, l);
  // dt groups by position (group 1 empty), and the same groups by row.
  std::vector<int32_t> modality(n), modality_r(n);
  for (int64_t i = 0; i < n; ++i) modality_r[row_of_[i]] = modality[i] = 2 * rng_.Below(2);
  auto routing = be_->MakeRouting(modality.data(), n, g);
  auto routing_r = be_->MakeRouting(modality_r.data(), n, g);
  Tensor u = Random({n, e}), dr = Random({n, e}, 0.5), dbc = Random({n, r + 2 * s});
  Tensor xz = Random({n, 2 * e}), bias = Random({g, e}, 0.5), a_log = Random({e, s}, 0.5);
  Tensor d = Random({e});
  Tensor u_r = ToRows(u), dr_r = ToRows(dr), dbc_r = ToRows(dbc), xz_r = ToRows(xz);
  auto inputs = [&](const Tensor& u, const Tensor& dr, const Tensor& dbc, const Tensor& xz) {
    return ScanInputs{u.mat(), dr.mat(), dbc.mat().Cols(r, s), dbc.mat().Cols(r + s, s),
                      xz.mat().Cols(e, e), &bias, &a_log, &d};
  };
  const ScanInputs in = inputs(u, dr, dbc, xz), in_r = inputs(u_r, dr_r, dbc_r, xz_r);
  Tensor y = Poisoned({n, e}), y_r = Poisoned({n, e});
  be_->ScanForward(plain_, *routing, in, y.mat());
  be_->ScanForward(mapped_, *routing_r, in_r, y_r.mat());
  ExpectSameBits("scan y", ToRows(y), y_r);

  Tensor dy = Random({n, e}), dy_r = ToRows(dy);
  struct Grads {
    Tensor du, ddr, ddbc, dxz, dbias, da, dd;
    ScanGrads View(int64_t r, int64_t s, int64_t e) {
      return ScanGrads{du.mat(), ddr.mat(), ddbc.mat().Cols(r, s), ddbc.mat().Cols(r + s, s),
                       dxz.mat().Cols(e, e), &dbias, &da, &dd};
    }
  };
  Grads p{Poisoned({n, e}), Poisoned({n, e}), Poisoned({n, r + 2 * s}), Poisoned({n, 2 * e}),
          Random({g, e}), Random({e, s}), Random({e})};
  Grads q{Poisoned({n, e}), Poisoned({n, e}), Poisoned({n, r + 2 * s}), Poisoned({n, 2 * e}),
          Copy(p.dbias), Copy(p.da), Copy(p.dd)};
  be_->ScanBackward(plain_, *routing, in, dy.mat(), p.View(r, s, e));
  be_->ScanBackward(mapped_, *routing_r, in_r, dy_r.mat(), q.View(r, s, e));
  ExpectSameBits("scan du", ToRows(p.du), q.du);
  ExpectSameBits("scan ddelta_raw", ToRows(p.ddr), q.ddr);
  ExpectSameBits("scan dB dC", ToRows(p.ddbc), q.ddbc);
  ExpectSameBits("scan dz", ToRows(p.dxz), q.dxz);
  ExpectSameBits("scan ddt_bias", p.dbias, q.dbias);
  ExpectSameBits("scan dA_log", p.da, q.da);
  ExpectSameBits("scan dD", p.dd, q.dd);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RowMapTest, ::testing::Values(DType::kF64, DType::kF32),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST_F(OpsGradTest, CrossEntropyWithMask) {
  const int n = 6, v = 9;
  Tensor logits = Random({n, v}, 2.0);
  Tensor targets(DType::kI32, {n}), weight(DType::kF32, {n}), losses(DType::kF64, {n});
  for (int i = 0; i < n; ++i) {
    targets.data<int32_t>()[i] = (i * 5) % v;
    weight.data<float>()[i] = i == 2 ? 0.f : 0.25f;
  }
  Tensor dlogits = Zeros({n, v});
  auto loss = [&] {
    double total = 0;
    for (int i = 0; i < n; ++i) {
      if (weight.data<float>()[i] == 0) continue;
      const double* li = logits.data<double>() + i * v;
      double mx = li[0], sum = 0;
      for (int j = 1; j < v; ++j) mx = std::max(mx, li[j]);
      for (int j = 0; j < v; ++j) sum += std::exp(li[j] - mx);
      total += weight.data<float>()[i] * (mx + std::log(sum) - li[targets.data<int32_t>()[i]]);
    }
    return total;
  };
  be_->CrossEntropy(logits.mat(), targets, weight, &losses, dlogits.mat());
  ExpectGradient("cross-entropy dlogits", &logits, dlogits, loss);
  EXPECT_EQ(losses.data<double>()[2], 0.0);
  for (int j = 0; j < v; ++j) EXPECT_EQ(dlogits.data<double>()[2 * v + j], 0.0);
}

TEST_F(OpsGradTest, AdamWMatchesClosedFormFirstStep) {
  Tensor p = Random({5}), g = Random({5}), m = Zeros({5}), v = Zeros({5});
  Tensor p0 = Zeros({5});
  for (int i = 0; i < 5; ++i) p0.data<double>()[i] = p.data<double>()[i];
  AdamWStep s;
  s.lr = 0.1;
  s.weight_decay = 0.5;
  s.eps = 1e-12;
  be_->AdamW(s, g, &p, &m, &v);
  for (int i = 0; i < 5; ++i) {
    // Step 1: mhat = g, vhat = g^2, so the update is sign(g).
    double gi = g.data<double>()[i], pi = p0.data<double>()[i];
    double expect = pi - 0.1 * (gi / (std::fabs(gi) + 1e-12) + 0.5 * pi);
    EXPECT_NEAR(p.data<double>()[i], expect, 1e-12);
  }
}

// The decoding steps against the parallel ops: `streams` sequences run as one
// batch through ConvForward / ScanForward, and token by token (each step's
// rows in a fresh shuffled stream order) through ConvStep / ScanStep. The
// outputs must be equal, since both go through the same reference code. Each
// sequence begins a document at t = 0, over a state of garbage that the reset
// must hide, and again mid-way.
class StepMatchesParallelTest : public ::testing::TestWithParam<DType> {
 protected:
  static constexpr int kStreams = 3, kLen = 10, kE = 37, kS = 5, kR = 3;

  void SetUp() override {
    doc_ = Tensor::Zeros(DType::kU8, {kStreams * kLen});
    for (int s = 0; s < kStreams; ++s) doc_.data<uint8_t>()[s * kLen] = 1;
    doc_.data<uint8_t>()[4] = doc_.data<uint8_t>()[2 * kLen + 7] = 1;
  }

  Tensor Random(Shape shape, double scale = 1, double mean = 0) {
    Tensor t(GetParam(), shape);
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double v = mean + rng_.Normal(0, scale);
      if (GetParam() == DType::kF64) t.data<double>()[i] = v;
      else t.data<float>()[i] = static_cast<float>(v);
    }
    return t;
  }
  Tensor Empty(Shape shape) { return Tensor(GetParam(), shape); }

  // The streams in a random order: a step's rows.
  std::vector<int32_t> Shuffled() {
    std::vector<int32_t> order(kStreams);
    for (int i = 0; i < kStreams; ++i) order[i] = i;
    for (int i = kStreams - 1; i > 0; --i) std::swap(order[i], order[rng_.Below(i + 1)]);
    return order;
  }
  // Step t's rows of m, in `order`, as a new matrix.
  Tensor Rows(const Tensor& m, const std::vector<int32_t>& order, int t) {
    Tensor out = Empty({kStreams, m.dim(1)});
    for (int i = 0; i < kStreams; ++i) {
      be_->Copy(m.mat().Rows(order[i] * kLen + t, 1), out.mat().Rows(i, 1));
    }
    return out;
  }
  // The step's layout: streams in `order`, reset where a document begins.
  StepLayout Step(const std::vector<int32_t>& order, int t, Tensor* streams, Tensor* reset) {
    *streams = Tensor(DType::kI32, {kStreams});
    *reset = Tensor(DType::kU8, {kStreams});
    for (int i = 0; i < kStreams; ++i) {
      streams->data<int32_t>()[i] = order[i];
      reset->data<uint8_t>()[i] = doc_.data<uint8_t>()[order[i] * kLen + t];
    }
    return StepLayout{streams, reset};
  }
  // Row i of `step` equals row (order[i], t) of `parallel`, exactly.
  void ExpectRowsEqual(const Tensor& step, const Tensor& parallel,
                       const std::vector<int32_t>& order, int t, const std::string& what) {
    auto at = [](const Tensor& m, int64_t i) {
      return m.dtype() == DType::kF64 ? m.data<double>()[i] : m.data<float>()[i];
    };
    const int64_t cols = step.dim(1);
    for (int i = 0; i < kStreams; ++i) {
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t n = order[i] * kLen + t;
        ASSERT_EQ(at(step, i * cols + c), at(parallel, n * cols + c))
            << what << ": stream " << order[i] << ", t = " << t << ", column " << c;
      }
    }
  }

  std::unique_ptr<Backend> be_ = NewCpuBackend();
  Rng rng_{77};
  Tensor doc_;
};

TEST_P(StepMatchesParallelTest, Conv) {
  SeqLayout seq{kStreams, kLen, &doc_};
  for (int k : {4, 2}) {
    SCOPED_TRACE("d_conv " + std::to_string(k));
    // x is a column window of a wider matrix, as inside the block.
    Tensor xz = Random({kStreams * kLen, 2 * kE + 1}), w = Random({kE, k}, 0.5);
    Tensor b = Random({kE}, 0.5), u = Empty({kStreams * kLen, kE});
    be_->ConvForward(seq, xz.mat().Cols(1, kE), w, b, u.mat());
    Tensor state = Random({kStreams, k - 1, kE});
    for (int t = 0; t < kLen; ++t) {
      const std::vector<int32_t> order = Shuffled();
      Tensor streams, reset, u_step = Empty({kStreams, kE});
      const StepLayout step = Step(order, t, &streams, &reset);
      Tensor x = Rows(xz, order, t);
      be_->ConvStep(step, x.mat().Cols(1, kE), w, b, &state, u_step.mat());
      ExpectRowsEqual(u_step, u, order, t, "conv u");
    }
  }
}

TEST_P(StepMatchesParallelTest, Scan) {
  const int64_t n = kStreams * kLen, groups = 2;
  SeqLayout seq{kStreams, kLen, &doc_};
  std::vector<int32_t> modality(n);
  for (auto& m : modality) m = static_cast<int32_t>(rng_.Below(groups));
  auto routing = be_->MakeRouting(modality.data(), n, groups);
  Tensor u = Random({n, kE}), dr = Random({n, kE}), dbc = Random({n, kR + 2 * kS});
  Tensor xz = Random({n, 2 * kE}), bias = Random({groups, kE}, 0.5, -2);
  Tensor a_log = Random({kE, kS}, 0.5), d = Random({kE}), y = Empty({n, kE});
  auto inputs = [&](const Tensor& u, const Tensor& dr, const Tensor& dbc, const Tensor& xz) {
    return ScanInputs{u.mat(), dr.mat(), dbc.mat().Cols(kR, kS), dbc.mat().Cols(kR + kS, kS),
                      xz.mat().Cols(kE, kE), &bias, &a_log, &d};
  };
  be_->ScanForward(seq, *routing, inputs(u, dr, dbc, xz), y.mat());
  Tensor state = Random({kStreams, kE, kS});
  for (int t = 0; t < kLen; ++t) {
    const std::vector<int32_t> order = Shuffled();
    Tensor streams, reset, y_step = Empty({kStreams, kE});
    const StepLayout step = Step(order, t, &streams, &reset);
    std::vector<int32_t> step_modality(kStreams);
    for (int i = 0; i < kStreams; ++i) step_modality[i] = modality[order[i] * kLen + t];
    auto step_routing = be_->MakeRouting(step_modality.data(), kStreams, groups);
    Tensor u_t = Rows(u, order, t), dr_t = Rows(dr, order, t), dbc_t = Rows(dbc, order, t);
    Tensor xz_t = Rows(xz, order, t);
    be_->ScanStep(step, *step_routing, inputs(u_t, dr_t, dbc_t, xz_t), &state, y_step.mat());
    ExpectRowsEqual(y_step, y, order, t, "scan y");
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, StepMatchesParallelTest,
                         ::testing::Values(DType::kF32, DType::kF64),
                         [](const ::testing::TestParamInfo<DType>& p) {
                           return std::string(DTypeName(p.param));
                         });

}  // namespace
}  // namespace modamba
