// Every CUDA Backend op against the CPU backend, on fresh random inputs of
// awkward sizes (sequence lengths that are not multiples of the kernels'
// tiles, channel counts that are not multiples of 32, batch 1, a modality
// group with no tokens, documents starting mid-sequence, strided and
// misaligned column views). Device outputs are NaN-poisoned first, so an
// element the kernel misses fails the comparison. Skips without a GPU.
#include "kernels/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/backend.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "kernels/test_util.h"

namespace modamba {
namespace {

using testing::DeviceError;
using testing::OutputPair;
using testing::Pair;
using testing::RandomPair;
using testing::RelError;
using testing::ToDevice;
using testing::ToDeviceBf16;
using testing::ToHostF32;
using testing::ToHost;
using testing::Upload;

using testing::kTolBf16;
using testing::kTolF32;

constexpr double kTolScan = 1e-4;  // fp32, long recurrences, approximate exp2 on the GPU

// fp32 products unless a test asks for bf16.
class CudaBackendTest : public testing::GpuVsCpuTest {
 protected:
  CudaBackendTest() : GpuVsCpuTest(MatmulPrecision::kFp32) {}

  Pair Random(const Shape& shape, float scale = 1, float mean = 0) {
    return RandomPair(gpu_.get(), shape, &rng_, scale, mean);
  }
  Pair Output(const Shape& shape) { return OutputPair(gpu_.get(), shape); }
  double Err(const Pair& p) { return DeviceError(gpu_.get(), p); }
  double Err(const Pair& p, int64_t col0, int64_t cols) {
    return DeviceError(gpu_.get(), p, col0, cols);
  }

  template <typename T>
  Pair UploadVector(const std::vector<T>& v, DType dtype) {
    Tensor t(dtype, {static_cast<int64_t>(v.size())});
    std::memcpy(t.raw(), v.data(), v.size() * sizeof(T));
    return Upload(gpu_.get(), std::move(t));
  }

  // Modalities in contiguous spans of random length, drawn from `allowed`.
  std::vector<int32_t> Modalities(int64_t n, const std::vector<int32_t>& allowed) {
    std::vector<int32_t> m(n);
    std::uniform_int_distribution<int> span(1, 20), pick(0, allowed.size() - 1);
    for (int64_t i = 0; i < n;) {
      int32_t g = allowed[pick(rng_)];
      for (int k = span(rng_); k > 0 && i < n; --k) m[i++] = g;
    }
    return m;
  }

  // A random row for each of n positions (a SeqLayout row map).
  std::vector<int32_t> RandomRowMap(int64_t n) {
    std::vector<int32_t> rows(n);
    std::iota(rows.begin(), rows.end(), 0);
    std::shuffle(rows.begin(), rows.end(), rng_);
    return rows;
  }

  std::vector<uint8_t> DocStarts(int64_t n, double prob) {
    std::bernoulli_distribution start(prob);
    std::vector<uint8_t> d(n);
    for (auto& v : d) v = start(rng_) ? 1 : 0;
    return d;
  }
};

TEST_F(CudaBackendTest, CopyAndFill) {
  Pair a = Random({7, 11});
  Tensor back = ToHost(gpu_.get(), a.dev);
  EXPECT_EQ(std::memcmp(back.raw(), a.host.raw(), a.host.nbytes()), 0);
  // Strided device-to-device copy of a column window.
  Pair dst = Output({7, 5});
  gpu_->Copy(a.d(3, 5), dst.d());
  cpu_->Copy(a.h(3, 5), dst.h());
  ExpectClose(Err(dst), 1e-30, "strided copy");
  // Fill of a window leaves the rest alone.
  Pair f = Random({6, 9});
  gpu_->Fill(f.d(2, 4), 2.5);
  cpu_->Fill(f.h(2, 4), 2.5);
  ExpectClose(Err(f), 1e-30, "fill");
  Tensor ints = gpu_->Empty(DType::kI32, {5});
  gpu_->Fill(ints.mat(), -3);
  Tensor ints_host = ToHost(gpu_.get(), ints);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ints_host.data<int32_t>()[i], -3);
}

TEST_F(CudaBackendTest, Gemm) {
  struct Size {
    int64_t m, n, k;
  };
  // Small sizes run cuBLAS's in-kernel bf16 conversion; large ones (every
  // dimension >= 256) a conversion pass first.
  for (const Size& sz : {Size{37, 53, 29}, Size{300, 260, 270}}) {
    const int64_t m = sz.m, n = sz.n, k = sz.k;
    for (MatmulPrecision precision : {MatmulPrecision::kFp32, MatmulPrecision::kBf16}) {
      auto gpu = MakeGpu(precision);
      const double tol = precision == MatmulPrecision::kFp32 ? kTolF32 : kTolBf16;
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          // A and B as column windows of wider matrices (ld > cols).
          Pair a = Random({ta ? k : m, (ta ? m : k) + 3});
          Pair b = Random({tb ? n : k, (tb ? k : n) + 1});
          Pair c = Random({m, n});
          Mat ah = a.h(1, ta ? m : k), ad = a.d(1, ta ? m : k);
          Mat bh = b.h(0, tb ? k : n), bd = b.d(0, tb ? k : n);
          cpu_->Gemm(ta, tb, 0.7, ah, bh, 0.3, c.h());
          gpu->Gemm(ta, tb, 0.7, ad, bd, 0.3, c.d());
          ExpectClose(Err(c), tol,
                      "gemm " + std::to_string(m) + "x" + std::to_string(n) + "x" +
                          std::to_string(k) + " ta=" + std::to_string(ta) +
                          " tb=" + std::to_string(tb) +
                          (precision == MatmulPrecision::kFp32 ? " fp32" : " bf16"));
        }
      }
    }
  }
  const int64_t m = 37, n = 53;
  // An empty inner dimension with beta 0 overwrites C (here NaN-poisoned).
  Pair a = Random({m, 1}), b = Random({1, n});
  Pair c = Output({m, n});
  gpu_->Gemm(false, false, 1, a.d(0, 0), b.d().Rows(0, 0), 0, c.d());
  cpu_->Gemm(false, false, 1, a.h(0, 0), b.h().Rows(0, 0), 0, c.h());
  ExpectClose(Err(c), 1e-30, "gemm k=0");
}

TEST_F(CudaBackendTest, RoutedLinear) {
  const int64_t n = 2 * 37;
  struct Case {
    const char* name;
    int groups;
    std::vector<int32_t> allowed;
    bool grouped = false;  // rows sorted by group: GEMMs on row ranges
  };
  const std::vector<Case> cases = {
      {"3 groups, group 1 empty", 3, {0, 2}},
      {"3 groups, all rows in group 2", 3, {2}},
      {"shared weight", 1, {0}},
      {"3 groups, grouped rows, group 1 empty", 3, {0, 2}, true},
      {"3 groups, grouped rows", 3, {0, 1, 2}, true},
  };
  // Narrow input, narrow output, and both sides wide: the three ways the
  // backend runs a projection split across groups.
  const std::vector<std::pair<int64_t, int64_t>> sizes = {{29, 45}, {300, 20}, {300, 270}};
  for (MatmulPrecision precision : {MatmulPrecision::kFp32, MatmulPrecision::kBf16}) {
    auto gpu = MakeGpu(precision);
    const double tol = precision == MatmulPrecision::kFp32 ? kTolF32 : kTolBf16;
    for (auto [in, out] : sizes) {
      for (const Case& c : cases) {
        const std::string tag = std::string(c.name) + ", " + std::to_string(in) + "->" +
                                std::to_string(out) +
                                (precision == MatmulPrecision::kFp32 ? ", fp32" : ", bf16");
        std::vector<int32_t> mod = Modalities(n, c.allowed);
        if (c.grouped) std::sort(mod.begin(), mod.end());
        auto rc = cpu_->MakeRouting(mod.data(), n, c.groups);
        auto rg = gpu->MakeRouting(mod.data(), n, c.groups);
        Pair x = Random({n, in + 2});  // x as a strided window
        Pair w = Random({c.groups, out, in}, 0.2f);
        Pair y = Output({n, out + 1});
        cpu_->RoutedLinear(*rc, x.h(1, in), w.host, y.h(0, out));
        gpu->RoutedLinear(*rg, x.d(1, in), w.dev, y.d(0, out));
        ExpectClose(Err(y, 0, out), tol, "routed linear y, " + tag);

        Pair dy = Random({n, out});
        Pair dw = Random({c.groups, out, in});
        for (bool accumulate : {false, true}) {
          Pair dx = accumulate ? Random({n, in + 3}) : Output({n, in + 3});
          cpu_->RoutedLinearBackward(*rc, x.h(1, in), w.host, dy.h(), dx.h(2, in), accumulate,
                                     &dw.host);
          gpu->RoutedLinearBackward(*rg, x.d(1, in), w.dev, dy.d(), dx.d(2, in), accumulate,
                                    &dw.dev);
          ExpectClose(Err(dx, 2, in), tol,
                      "routed linear dx" + std::string(accumulate ? " (+=), " : ", ") + tag);
        }
        ExpectClose(Err(dw), tol, "routed linear dw (accumulated twice), " + tag);
      }
    }
  }
}

// With bf16 products the model keeps activations that feed only products
// in BF16 (Backend::MatmulInputDType): producers round when they store,
// projections on grouped rows read them as they are. Compared with the CPU
// in fp32 on the same (bf16-rounded) inputs.
TEST_F(CudaBackendTest, Bf16MatmulInputs) {
  auto gpu = MakeGpu(MatmulPrecision::kBf16);
  ASSERT_EQ(gpu->MatmulInputDType(DType::kF32), DType::kBF16);
  ASSERT_EQ(gpu_->MatmulInputDType(DType::kF32), DType::kF32);  // fp32 products
  auto bf16_error = [&](const Tensor& dev, const Tensor& host) {
    return RelError(ToHostF32(gpu.get(), dev.mat()).mat(), host.mat());
  };
  const int64_t n = 203, d = 300;

  // RMSNorm storing its output in bf16.
  Pair x = Random({n, d}), w = Random({d}, 0.2f, 1.f), rstd = Output({n});
  Tensor y_host = Tensor::Zeros(DType::kF32, {n, d}), y_dev = gpu->Empty(DType::kBF16, {n, d});
  cpu_->RmsNormForward(x.h(), w.host, 1e-5, y_host.mat(), &rstd.host);
  gpu->RmsNormForward(x.d(), w.dev, 1e-5, y_dev.mat(), &rstd.dev);
  ExpectClose(bf16_error(y_dev, y_host), 1e-2, "rmsnorm y in bf16");
  ExpectClose(Err(rstd), kTolF32, "rmsnorm rstd with a bf16 y");

  // A routed projection on grouped rows (one group empty) from bf16 x and dy.
  for (auto [in, out] : std::vector<std::pair<int64_t, int64_t>>{{300, 270}, {29, 45}}) {
    const std::string tag = std::to_string(in) + "->" + std::to_string(out);
    std::vector<int32_t> mod = Modalities(n, {0, 2});
    std::sort(mod.begin(), mod.end());
    auto rc = cpu_->MakeRouting(mod.data(), n, 3);
    auto rg = gpu->MakeRouting(mod.data(), n, 3);
    Tensor xh = testing::RandomHost({n, in}, &rng_), dyh = testing::RandomHost({n, out}, &rng_);
    Tensor xd = ToDeviceBf16(gpu.get(), &xh), dyd = ToDeviceBf16(gpu.get(), &dyh);
    Pair wt = Random({3, out, in}, 0.2f), yo = Output({n, out});
    cpu_->RoutedLinear(*rc, xh.mat(), wt.host, yo.h());
    gpu->RoutedLinear(*rg, xd.mat(), wt.dev, yo.d());
    ExpectClose(Err(yo), kTolBf16, "routed linear from bf16 x, " + tag);
    Pair dx = Output({n, in}), dw = Random({3, out, in});
    cpu_->RoutedLinearBackward(*rc, xh.mat(), wt.host, dyh.mat(), dx.h(), false, &dw.host);
    gpu->RoutedLinearBackward(*rg, xd.mat(), wt.dev, dyd.mat(), dx.d(), false, &dw.dev);
    ExpectClose(Err(dx), kTolBf16, "routed linear dx from bf16 x, dy, " + tag);
    ExpectClose(Err(dw), kTolBf16, "routed linear dw from bf16 x, dy, " + tag);
  }

  // The conv's input gradient stored in bf16.
  const int64_t batch = 2, len = 101, e = 70;
  Pair doc = UploadVector(DocStarts(batch * len, 0.05), DType::kU8);
  SeqLayout sc{batch, len, &doc.host}, sg{batch, len, &doc.dev};
  Pair cx = Random({batch * len, e}), cw = Random({e, 4}, 0.5f), cb = Random({e});
  Pair du = Random({batch * len, e}), dcw = Random({e, 4}), dcb = Random({e});
  Tensor dx_host = Tensor::Zeros(DType::kF32, {batch * len, e});
  Tensor dx_dev = gpu->Empty(DType::kBF16, {batch * len, e});
  cpu_->ConvBackward(sc, cx.h(), cw.host, cb.host, du.h(), dx_host.mat(), &dcw.host, &dcb.host);
  gpu->ConvBackward(sg, cx.d(), cw.dev, cb.dev, du.d(), dx_dev.mat(), &dcw.dev, &dcb.dev);
  ExpectClose(bf16_error(dx_dev, dx_host), 1e-2, "conv dx in bf16");
  ExpectClose(Err(dcw), kTolF32, "conv dw with a bf16 dx");
}

TEST_F(CudaBackendTest, Embedding) {
  const int64_t vocab = 50, d = 37;
  // Runs of one token longer than the backward's chunks, plus random ids.
  std::vector<int32_t> tokens(100, 7);
  tokens.insert(tokens.end(), 40, 3);
  std::uniform_int_distribution<int> id(0, vocab - 1);
  for (int i = 0; i < 83; ++i) tokens.push_back(id(rng_));
  std::shuffle(tokens.begin(), tokens.end(), rng_);
  const int64_t n = tokens.size();
  Pair tok = UploadVector(tokens, DType::kI32);
  Pair table = Random({vocab, d});
  Pair out = Output({n, d + 3});
  cpu_->EmbeddingForward(tok.host, table.host, out.h(0, d));
  gpu_->EmbeddingForward(tok.dev, table.dev, out.d(0, d));
  ExpectClose(Err(out, 0, d), kTolF32, "embedding forward");

  Pair dout = Random({n, d + 3});
  Pair dtable = Random({vocab, d});
  cpu_->EmbeddingBackward(tok.host, dout.h(2, d), &dtable.host);
  gpu_->EmbeddingBackward(tok.dev, dout.d(2, d), &dtable.dev);
  ExpectClose(Err(dtable), kTolF32, "embedding backward");
}

TEST_F(CudaBackendTest, GatherScatterRows) {
  const std::vector<int32_t> rows = {3, 17, 0, 9, 12, 18};
  const int64_t d = 13;
  Pair idx = UploadVector(rows, DType::kI32);
  Pair src = Random({20, d + 2});
  Pair dst = Output({static_cast<int64_t>(rows.size()), d});
  cpu_->GatherRows(src.h(1, d), idx.host, dst.h());
  gpu_->GatherRows(src.d(1, d), idx.dev, dst.d());
  ExpectClose(Err(dst), kTolF32, "gather rows");
  Pair into = Random({20, d + 1});
  cpu_->ScatterAddRows(dst.h(), idx.host, into.h(0, d));
  gpu_->ScatterAddRows(dst.d(), idx.dev, into.d(0, d));
  ExpectClose(Err(into), kTolF32, "scatter-add rows");
}

TEST_F(CudaBackendTest, RmsNorm) {
  // d = 61 in a strided window runs the general backward; d = 384 with
  // aligned rows the vectorised one (and more rows than its blocks cover);
  // d = 2600, aligned, the wide one.
  for (auto [n, d, pad] :
       {std::tuple<int64_t, int64_t, int64_t>{77, 61, 5}, {2500, 384, 4}, {2100, 2600, 8}}) {
    const std::string tag = "d=" + std::to_string(d);
    Pair x = Random({n, d + pad}, 2.f, 0.3f);
    Pair w = Random({d}, 0.2f, 1.f);
    Pair y = Output({n, d});
    Pair rstd = Output({n});
    cpu_->RmsNormForward(x.h(0, d), w.host, 1e-5, y.h(), &rstd.host);
    gpu_->RmsNormForward(x.d(0, d), w.dev, 1e-5, y.d(), &rstd.dev);
    ExpectClose(Err(y), kTolF32, "rmsnorm y, " + tag);
    ExpectClose(Err(rstd), kTolF32, "rmsnorm rstd, " + tag);

    Pair dy = Random({n, d});
    Pair dx = Random({n, d + pad});  // accumulates into a window
    Pair dw = Random({d});
    const int64_t col0 = pad % 4 == 0 ? pad : 1;  // aligned for d = 384 and 2600
    cpu_->RmsNormBackward(x.h(0, d), w.host, rstd.host, dy.h(), dx.h(col0, d), &dw.host);
    gpu_->RmsNormBackward(x.d(0, d), w.dev, rstd.dev, dy.d(), dx.d(col0, d), &dw.dev);
    ExpectClose(Err(dx), kTolF32, "rmsnorm dx, " + tag);
    ExpectClose(Err(dw), kTolF32, "rmsnorm dw, " + tag);
  }
}

// The residual add fused into the next norm, on one row and on rows that
// fill no whole block, a width that leaves lanes idle, the model's and a
// wider one; y in fp32 and in bf16 (the model's layer inputs with bf16
// products). x, add and y are column windows.
struct AddNormCase {
  int64_t n, d;
  bool bf16_y;
  std::string Tag() const {
    return "n=" + std::to_string(n) + " d=" + std::to_string(d) + (bf16_y ? ", bf16 y" : "");
  }
};

std::vector<AddNormCase> AddNormCases() {
  std::vector<AddNormCase> cases;
  for (int64_t n : {1, 333}) {
    for (int64_t d : {37, 768, 1000}) {
      for (bool bf16_y : {false, true}) cases.push_back({n, d, bf16_y});
    }
  }
  return cases;
}

TEST_F(CudaBackendTest, AddRmsNorm) {
  auto bf16_gpu = MakeGpu(MatmulPrecision::kBf16);
  for (const AddNormCase& c : AddNormCases()) {
    const int64_t n = c.n, d = c.d;
    Backend* gpu = c.bf16_y ? bf16_gpu.get() : gpu_.get();
    Pair x = Random({n, d + 3}, 2.f, 0.3f), add = Random({n, d + 1});
    Pair w = Random({d}, 0.2f, 1.f), rstd = Output({n});
    Tensor y_host = Tensor::Zeros(DType::kF32, {n, d});
    Tensor y_dev = gpu->Empty(c.bf16_y ? DType::kBF16 : DType::kF32, {n, d + 2});
    gpu->Fill(y_dev.mat(), std::numeric_limits<double>::quiet_NaN());
    cpu_->AddRmsNormForward(x.h(2, d), add.h(1, d), w.host, 1e-5, y_host.mat(), &rstd.host);
    gpu->AddRmsNormForward(x.d(2, d), add.d(1, d), w.dev, 1e-5, y_dev.mat().Cols(1, d),
                           &rstd.dev);
    // x + add is one rounding on both sides.
    ExpectClose(Err(x), 1e-30, "add+rmsnorm x, " + c.Tag());
    ExpectClose(RelError(ToHostF32(gpu, y_dev.mat().Cols(1, d)).mat(), y_host.mat()),
                c.bf16_y ? kTolBf16 : kTolF32, "add+rmsnorm y, " + c.Tag());
    ExpectClose(Err(rstd), kTolF32, "add+rmsnorm rstd, " + c.Tag());
  }
}

// The fused op sums x + add as Axpy does and reduces in the plain forward's
// order: its x, y and rstd are bitwise those of Axpy then RmsNormForward.
TEST_F(CudaBackendTest, AddRmsNormMatchesAxpyThenRmsNormBitwise) {
  auto bf16_gpu = MakeGpu(MatmulPrecision::kBf16);
  for (const AddNormCase& c : AddNormCases()) {
    const int64_t n = c.n, d = c.d;
    Backend* gpu = c.bf16_y ? bf16_gpu.get() : gpu_.get();
    Pair x = Random({n, d + 3}, 2.f, 0.3f), add = Random({n, d + 1}), w = Random({d}, 0.2f, 1.f);
    std::vector<Tensor> results;  // x, y, rstd; fused first
    for (bool fused : {true, false}) {
      Tensor xs = ToDevice(gpu, x.host);
      Tensor y = gpu->Empty(c.bf16_y ? DType::kBF16 : DType::kF32, {n, d});
      Tensor rstd = gpu->Empty(DType::kF32, {n});
      const Mat xw = xs.mat().Cols(2, d), aw = add.d(1, d);
      if (fused) {
        gpu->AddRmsNormForward(xw, aw, w.dev, 1e-5, y.mat(), &rstd);
      } else {
        gpu->Axpy(1.0, aw, xw);
        gpu->RmsNormForward(xw, w.dev, 1e-5, y.mat(), &rstd);
      }
      for (const Tensor* t : {&xs, &y, &rstd}) results.push_back(ToHost(gpu, *t));
    }
    const char* names[] = {"x", "y", "rstd"};
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(std::memcmp(results[i].raw(), results[3 + i].raw(), results[i].nbytes()), 0)
          << names[i] << " differs from Axpy then RmsNormForward, " << c.Tag() << " (seed "
          << seed_ << ")";
    }
  }
}

TEST_F(CudaBackendTest, Conv) {
  const int64_t batch = 3, len = 45, e = 37, n = batch * len, ld = 2 * e + 3;
  for (auto [k, mapped] : {std::pair{4, false}, {3, false}, {1, false}, {4, true}, {1, true}}) {
    const std::string tag = "K=" + std::to_string(k) + (mapped ? ", row map" : "");
    Pair doc = UploadVector(DocStarts(n, 0.08), DType::kU8);
    Pair map = UploadVector(RandomRowMap(n), DType::kI32);
    SeqLayout sc{batch, len, &doc.host, mapped ? &map.host : nullptr};
    SeqLayout sg{batch, len, &doc.dev, mapped ? &map.dev : nullptr};
    Pair x = Random({n, ld});
    Pair w = Random({e, k}, 0.5f);
    Pair b = Random({e}, 0.5f);
    Pair u = Output({n, e});
    cpu_->ConvForward(sc, x.h(0, e), w.host, b.host, u.h());
    gpu_->ConvForward(sg, x.d(0, e), w.dev, b.dev, u.d());
    ExpectClose(Err(u), kTolF32, "conv u, " + tag);

    Pair du = Random({n, e});
    Pair dx = Output({n, ld});
    Pair dw = Random({e, k}), db = Random({e});
    cpu_->ConvBackward(sc, x.h(0, e), w.host, b.host, du.h(), dx.h(0, e), &dw.host, &db.host);
    gpu_->ConvBackward(sg, x.d(0, e), w.dev, b.dev, du.d(), dx.d(0, e), &dw.dev, &db.dev);
    ExpectClose(Err(dx, 0, e), kTolF32, "conv dx, " + tag);
    ExpectClose(Err(dw), kTolF32, "conv dw, " + tag);
    ExpectClose(Err(db), kTolF32, "conv db, " + tag);
  }
}

struct ScanCase {
  const char* name;
  int64_t batch, len, e, s;
  int groups;
  std::vector<int32_t> allowed;  // modalities present
  bool strided;                  // misaligned column windows, as in a fused projection
  double doc_prob;
  bool mapped = false;           // positions at random rows (a SeqLayout row map)
};

class ScanTest : public CudaBackendTest {
 protected:
  // The scan's inputs and gradients on both backends, laid out as the model
  // lays them out: z inside xz, B and C inside dBC.
  struct Setup {
    int64_t n, e, s, r;
    Pair doc, map, xz, dbc, u, dr, dt_bias, a_log, d;
    std::vector<int32_t> modality;  // by position
    bool mapped;
    std::unique_ptr<Routing> rc, rg;
    int64_t ld_pad;
    ScanInputs In(bool dev) const {
      ScanInputs in;
      auto v = [&](const Pair& p, int64_t col0, int64_t cols) {
        return dev ? p.d(col0, cols) : p.h(col0, cols);
      };
      in.u = v(u, ld_pad, e);
      in.delta_raw = v(dr, ld_pad, e);
      in.b = v(dbc, r, s);
      in.c = v(dbc, r + s, s);
      in.z = v(xz, e + ld_pad, e);
      in.dt_bias = dev ? &dt_bias.dev : &dt_bias.host;
      in.a_log = dev ? &a_log.dev : &a_log.host;
      in.d = dev ? &d.dev : &d.host;
      return in;
    }
  };

  Setup Make(const ScanCase& c) {
    Setup st;
    st.n = c.batch * c.len;
    st.e = c.e;
    st.s = c.s;
    st.ld_pad = c.strided ? 1 : 0;  // shifts every window off 16-byte alignment
    st.r = c.strided ? 3 : 4;       // dt_rank: B and C aligned only when 4 | r
    const int64_t n = st.n, e = c.e, s = c.s;
    // Modalities by position; the routing's are by row.
    std::vector<int32_t> mod = Modalities(n, c.allowed), row_of(n);
    std::iota(row_of.begin(), row_of.end(), 0);
    st.modality = mod;
    st.mapped = c.mapped;
    if (c.mapped) {
      row_of = RandomRowMap(n);
      std::vector<int32_t> by_position = mod;
      for (int64_t i = 0; i < n; ++i) mod[row_of[i]] = by_position[i];
    }
    st.map = UploadVector(row_of, DType::kI32);
    st.rc = cpu_->MakeRouting(mod.data(), n, c.groups);
    st.rg = gpu_->MakeRouting(mod.data(), n, c.groups);
    st.doc = UploadVector(DocStarts(n, c.doc_prob), DType::kU8);
    st.xz = Random({n, 2 * e + 2 * st.ld_pad});
    st.dbc = Random({n, st.r + 2 * s + st.ld_pad});
    st.u = Random({n, e + st.ld_pad});
    st.dr = Random({n, e + st.ld_pad}, 0.5f);
    // dt bias: inverse softplus of dt log-uniform in [1e-3, 1e-1], per group.
    Tensor bias(DType::kF32, {c.groups, e});
    std::uniform_real_distribution<double> logdt(std::log(1e-3), std::log(1e-1));
    for (int64_t i = 0; i < bias.numel(); ++i) {
      double dt = std::exp(logdt(rng_));
      bias.data<float>()[i] = static_cast<float>(dt + std::log(-std::expm1(-dt)));
    }
    st.dt_bias = Upload(gpu_.get(), std::move(bias));
    Tensor alog = testing::RandomHost({e, s}, &rng_, 0.1f);
    for (int64_t i = 0; i < e; ++i) {
      for (int64_t j = 0; j < s; ++j) alog.data<float>()[i * s + j] += std::log(j + 1.0);
    }
    st.a_log = Upload(gpu_.get(), std::move(alog));
    st.d = Random({e}, 0.1f, 1.f);
    return st;
  }

  void Run(const ScanCase& c) {
    SCOPED_TRACE(c.name);
    std::cout << " case: " << c.name << "\n";
    Setup st = Make(c);
    const int64_t n = st.n, e = st.e, s = st.s;
    SeqLayout sc{c.batch, c.len, &st.doc.host, st.mapped ? &st.map.host : nullptr};
    SeqLayout sg{c.batch, c.len, &st.doc.dev, st.mapped ? &st.map.dev : nullptr};
    Pair y = Output({n, e});
    cpu_->ScanForward(sc, *st.rc, st.In(false), y.h());
    gpu_->ScanForward(sg, *st.rg, st.In(true), y.d());
    ExpectClose(Err(y), kTolScan, "scan y");

    Pair dy = Random({n, e});
    Pair du = Output({n, e}), ddr = Output({n, e});
    Pair dbc = Output({n, st.r + 2 * s});
    Pair dxz = Output({n, 2 * e});
    Pair ddt = Random({c.groups, e}), da = Random({e, s}), dd = Random({e});
    auto grads = [&](bool dev) {
      ScanGrads g;
      g.du = dev ? du.d() : du.h();
      g.ddelta_raw = dev ? ddr.d() : ddr.h();
      g.db = dev ? dbc.d(st.r, s) : dbc.h(st.r, s);
      g.dc = dev ? dbc.d(st.r + s, s) : dbc.h(st.r + s, s);
      g.dz = dev ? dxz.d(e, e) : dxz.h(e, e);
      g.ddt_bias = dev ? &ddt.dev : &ddt.host;
      g.da_log = dev ? &da.dev : &da.host;
      g.dd = dev ? &dd.dev : &dd.host;
      return g;
    };
    cpu_->ScanBackward(sc, *st.rc, st.In(false), dy.h(), grads(false));
    gpu_->ScanBackward(sg, *st.rg, st.In(true), dy.d(), grads(true));
    ExpectClose(Err(du), kTolScan, "scan du");
    ExpectClose(Err(ddr), kTolScan, "scan ddelta_raw");
    ExpectClose(Err(dbc, st.r, s), kTolScan, "scan dB");
    ExpectClose(Err(dbc, st.r + s, s), kTolScan, "scan dC");
    ExpectClose(Err(dxz, e, e), kTolScan, "scan dz");
    ExpectClose(Err(ddt), kTolScan, "scan ddt_bias");
    ExpectClose(Err(da), kTolScan, "scan dA_log");
    ExpectClose(Err(dd), kTolScan, "scan dD");

    // With the states the forward saved, the backward skips its own
    // checkpoint pass and must give the same bits.
    struct Written {
      const Pair* pair;
      int64_t col0, cols;
    };
    const std::vector<Written> written = {
        {&du, 0, e}, {&ddr, 0, e}, {&dbc, st.r, 2 * s}, {&dxz, e, e}};
    std::vector<Tensor> before;
    for (const Written& w : written) before.push_back(ToHost(gpu_.get(), w.pair->dev));
    Tensor saved;
    ScanInputs in = st.In(true);
    in.saved = &saved;
    gpu_->ScanForward(sg, *st.rg, in, y.d());
    ASSERT_GT(saved.numel(), 0) << "the forward kept no states";
    for (const Written& w : written) gpu_->Fill(w.pair->d(), std::nan(""));
    gpu_->ScanBackward(sg, *st.rg, in, dy.d(), grads(true));
    for (size_t i = 0; i < written.size(); ++i) {
      const Tensor after = ToHost(gpu_.get(), written[i].pair->dev);
      const int64_t ld = after.dim(1);
      for (int64_t r = 0; r < after.dim(0); ++r) {
        ASSERT_EQ(std::memcmp(after.data<float>() + r * ld + written[i].col0,
                              before[i].data<float>() + r * ld + written[i].col0,
                              written[i].cols * sizeof(float)),
                  0)
            << "output " << i << " row " << r << " differs with saved states";
      }
    }
  }
};

TEST_F(ScanTest, RoutedBiasDocumentsMisaligned) {
  Run({"B=2 L=150 E=70 S=16, 3 dt groups (one empty), docs, misaligned",
       2,
       150,
       70,
       16,
       3,
       {0, 2},
       true,
       0.03});
}

TEST_F(ScanTest, BatchOneAligned) {
  Run({"B=1 L=200 E=128 S=16, shared bias, aligned", 1, 200, 128, 16, 1, {0}, false, 0.0});
}

TEST_F(ScanTest, SmallStateManyDocuments) {
  Run({"B=3 L=64 E=33 S=5, 2 dt groups, dense docs", 3, 64, 33, 5, 2, {0, 1}, true, 0.1});
}

TEST_F(ScanTest, ShortSequences) { Run({"B=2 L=9 E=64 S=16", 2, 9, 64, 16, 1, {0}, false, 0.2}); }

TEST_F(ScanTest, RowMapRoutedBiasDocumentsMisaligned) {
  Run({"B=2 L=150 E=70 S=16, 3 dt groups (one empty), docs, misaligned, row map", 2, 150, 70,
       16, 3, {0, 2}, true, 0.03, true});
}

TEST_F(ScanTest, RowMapAligned) {
  Run({"B=3 L=100 E=128 S=16, 3 dt groups, aligned, row map", 3, 100, 128, 16, 3, {0, 1, 2},
       false, 0.02, true});
}

TEST_F(ScanTest, RowMapSmallStateShortSequences) {
  Run({"B=3 L=9 E=33 S=5, shared bias, dense docs, row map", 3, 9, 33, 5, 1, {0}, true, 0.2,
       true});
}

// Four tiles, the last of one step: the kernels' tile maps cycle through
// every slot and stage a partial tile.
TEST_F(ScanTest, RowMapRoutedBiasOddLength) {
  Run({"B=3 L=97 E=70 S=16, 3 dt groups, docs, misaligned, row map", 3, 97, 70, 16, 3, {0, 1, 2},
       true, 0.03, true});
}

// Both passes split time into chunks whose states (forward) and adjoints
// (backward) are carried across (scan.cu); any chunk counts give the CPU's
// outputs and gradients. Ten tiles in 1 to 4 chunks each way (the last ones
// partial), documents sparse enough that states and adjoints cross chunk
// boundaries, and none at all.
TEST_F(ScanTest, ChunkedAnyChunkCount) {
  struct ScopedEnv {  // unset again however the test ends
    ScopedEnv(const char* name, const std::string& v) : name(name) { setenv(name, v.c_str(), 1); }
    ~ScopedEnv() { unsetenv(name); }
    const char* name;
  };
  for (int fwd = 1; fwd <= 4; ++fwd) {
    const int bwd = 5 - fwd;
    ScopedEnv fwd_env("MODAMBA_SCAN_FWD_CHUNKS", std::to_string(fwd));
    ScopedEnv bwd_env("MODAMBA_SCAN_CHUNKS", std::to_string(bwd));
    SCOPED_TRACE("forward chunks " + std::to_string(fwd) + ", backward " + std::to_string(bwd));
    Run({"B=2 L=300 E=70 S=16, 3 dt groups, sparse docs, misaligned, row map", 2, 300, 70, 16, 3,
         {0, 1, 2}, true, 0.004, true});
    Run({"B=1 L=300 E=128 S=16, shared bias, no docs, aligned", 1, 300, 128, 16, 1, {0}, false,
         0.0});
  }
}

// A row map changes only where each position is read and written: the
// outputs equal, bit for bit, those of the same tokens stored in sequence
// order (partial sums and kept states are by position either way). The
// lengths give 1, 2, 4 and 7 tiles; routed dt_bias, documents, misaligned
// windows.
TEST_F(ScanTest, RowMapMatchesSequenceOrderBitwise) {
  for (int64_t len : {1, 33, 97, 200}) {
    const ScanCase c{"bitwise", 3, len, 70, 16, 3, {0, 1, 2}, true, 0.03, true};
    SCOPED_TRACE("L=" + std::to_string(len));
    Setup st = Make(c);
    const int64_t n = st.n, e = st.e, s = st.s;
    // Position i's row of a [N, *] tensor stored by row.
    auto in_order = [&](const Tensor& by_row) {
      Tensor t = gpu_->Empty(DType::kF32, by_row.shape());
      gpu_->GatherRows(by_row.mat(), st.map.dev, t.mat());
      return t;
    };
    const Tensor u = in_order(st.u.dev), dr = in_order(st.dr.dev), dbc = in_order(st.dbc.dev),
                 xz = in_order(st.xz.dev);
    ScanInputs seq_in = st.In(true);  // the same windows as In() takes
    seq_in.u = u.mat().Cols(st.ld_pad, e);
    seq_in.delta_raw = dr.mat().Cols(st.ld_pad, e);
    seq_in.b = dbc.mat().Cols(st.r, s);
    seq_in.c = dbc.mat().Cols(st.r + s, s);
    seq_in.z = xz.mat().Cols(e + st.ld_pad, e);
    const std::unique_ptr<Routing> seq_routing =
        gpu_->MakeRouting(st.modality.data(), n, c.groups);
    const SeqLayout mapped{c.batch, c.len, &st.doc.dev, &st.map.dev};
    const SeqLayout seq{c.batch, c.len, &st.doc.dev};
    const Pair dy = Random({n, e});  // by row
    const Tensor seq_dy = in_order(dy.dev);

    // Forward keeping its states, then backward with its own checkpoint
    // pass; the outputs in sequence order.
    auto run = [&](const SeqLayout& layout, const Routing& routing, ScanInputs in, Mat dy_m) {
      const bool by_row = layout.rows != nullptr;
      Tensor y = gpu_->Empty(DType::kF32, {n, e});
      Tensor saved;
      in.saved = &saved;
      gpu_->ScanForward(layout, routing, in, y.mat());
      in.saved = nullptr;
      Tensor grads = gpu_->Empty(DType::kF32, {n, 3 * e + 2 * s});
      Tensor ddt = gpu_->Empty(DType::kF32, {c.groups, e});
      Tensor da = gpu_->Empty(DType::kF32, {e, s});
      Tensor dd = gpu_->Empty(DType::kF32, {e});
      for (Tensor* t : {&ddt, &da, &dd}) gpu_->Fill(t->mat(), 0);
      ScanGrads g;
      const Mat gm = grads.mat();
      g.du = gm.Cols(0, e);
      g.ddelta_raw = gm.Cols(e, e);
      g.dz = gm.Cols(2 * e, e);
      g.db = gm.Cols(3 * e, s);
      g.dc = gm.Cols(3 * e + s, s);
      g.ddt_bias = &ddt;
      g.da_log = &da;
      g.dd = &dd;
      gpu_->ScanBackward(layout, routing, in, dy_m, g);
      if (by_row) {
        y = in_order(y);
        grads = in_order(grads);
      }
      std::vector<Tensor> out;
      for (const Tensor* t : {&y, &grads, &saved, &ddt, &da, &dd}) {
        out.push_back(ToHost(gpu_.get(), *t));
      }
      return out;
    };
    const std::vector<Tensor> want = run(seq, *seq_routing, seq_in, seq_dy.mat());
    const std::vector<Tensor> got = run(mapped, *st.rg, st.In(true), dy.d());
    const char* names[] = {"y", "du, ddelta_raw, dz, dB, dC", "kept states", "ddt_bias",
                           "dA_log", "dD"};
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(got[i].nbytes(), want[i].nbytes()) << names[i];
      EXPECT_EQ(std::memcmp(got[i].raw(), want[i].raw(), want[i].nbytes()), 0)
          << names[i] << " differ with the row map (seed " << seed_ << ")";
    }
  }
}

// The decoding steps: a few steps, each over a random subset of the streams
// in shuffled order, some rows beginning a document, from random states.
// Both the outputs and the whole state tensors (rows of streams outside a
// step must stay as they were) must match.
class StepTest : public ScanTest {
 protected:
  // `rows` distinct streams of `streams`, in random order, on both backends.
  Pair DrawStreams(int64_t streams, int64_t rows) {
    std::vector<int32_t> ids(streams);
    for (int64_t i = 0; i < streams; ++i) ids[i] = static_cast<int32_t>(i);
    std::shuffle(ids.begin(), ids.end(), rng_);
    ids.resize(rows);
    return UploadVector(ids, DType::kI32);
  }
};

TEST_F(StepTest, Conv) {
  const int64_t streams = 11, rows = 7, e = 70, ld = 2 * e + 3;
  for (int k : {4, 3, 2}) {
    const std::string tag = "K=" + std::to_string(k);
    Pair w = Random({e, k}, 0.5f), b = Random({e}, 0.5f);
    Pair state = Random({streams, k - 1, e});
    for (int step = 0; step < 3; ++step) {
      Pair ids = DrawStreams(streams, rows);
      Pair reset = UploadVector(DocStarts(rows, 0.3), DType::kU8);
      Pair x = Random({rows, ld});  // x as a misaligned window, as inside xz
      Pair u = Output({rows, e});
      cpu_->ConvStep(StepLayout{&ids.host, &reset.host}, x.h(1, e), w.host, b.host, &state.host,
                     u.h());
      gpu_->ConvStep(StepLayout{&ids.dev, &reset.dev}, x.d(1, e), w.dev, b.dev, &state.dev, u.d());
      ExpectClose(Err(u), kTolF32, "conv step u, " + tag);
      ExpectClose(Err(state), kTolF32, "conv step state, " + tag);
    }
  }
}

TEST_F(StepTest, Scan) {
  const int64_t streams = 11, rows = 7;
  // One-token sequences: ScanTest's inputs of `rows` rows, doc_start as the
  // reset flags.
  const std::vector<ScanCase> cases = {
      {"E=70 S=16, 3 dt groups (one empty), misaligned", rows, 1, 70, 16, 3, {0, 2}, true, 0.3},
      {"E=33 S=5, 2 dt groups, misaligned", rows, 1, 33, 5, 2, {0, 1}, true, 0.3},
      {"E=64 S=16, shared bias, aligned", rows, 1, 64, 16, 1, {0}, false, 0.3},
  };
  for (const ScanCase& c : cases) {
    SCOPED_TRACE(c.name);
    std::cout << " case: " << c.name << "\n";
    Pair state = Random({streams, c.e, c.s}, 0.5f);
    for (int step = 0; step < 3; ++step) {
      Setup st = Make(c);
      Pair ids = DrawStreams(streams, rows);
      Pair y = Output({rows, c.e});
      cpu_->ScanStep(StepLayout{&ids.host, &st.doc.host}, *st.rc, st.In(false), &state.host,
                     y.h());
      gpu_->ScanStep(StepLayout{&ids.dev, &st.doc.dev}, *st.rg, st.In(true), &state.dev, y.d());
      ExpectClose(Err(y), kTolScan, "scan step y");
      ExpectClose(Err(state), kTolScan, "scan step state");
    }
  }
}

TEST_F(CudaBackendTest, CrossEntropy) {
  const int64_t n = 37;
  for (int64_t v : {1003, 1024}) {
    for (bool in_place : {false, true}) {
      const std::string tag = "V=" + std::to_string(v) + (in_place ? ", in place" : "");
      std::vector<int32_t> targets(n);
      std::vector<float> weight(n);
      std::uniform_int_distribution<int> id(0, v - 1);
      std::uniform_real_distribution<float> wd(0.5f, 2.f);
      for (int64_t i = 0; i < n; ++i) {
        targets[i] = id(rng_);
        weight[i] = i % 5 == 3 ? 0.f : wd(rng_);
      }
      Pair t = UploadVector(targets, DType::kI32);
      Pair w = UploadVector(weight, DType::kF32);
      Pair logits = Random({n, v}, 3.f);
      Pair losses = Output({n});
      Pair dlogits = in_place ? std::move(logits) : Output({n, v});
      const Pair& src = in_place ? dlogits : logits;
      cpu_->CrossEntropy(src.h(), t.host, w.host, &losses.host, dlogits.h());
      gpu_->CrossEntropy(src.d(), t.dev, w.dev, &losses.dev, dlogits.d());
      ExpectClose(Err(losses), kTolF32, "cross-entropy losses, " + tag);
      ExpectClose(Err(dlogits), kTolF32, "cross-entropy dlogits, " + tag);
    }
  }
}

// The fused head against the CPU's Gemm + CrossEntropy + Gemm + Gemm: fp32
// products, and bf16 logits (an odd V runs the kernel's scalar path).
TEST_F(CudaBackendTest, LmHeadCrossEntropy) {
  const int64_t n = 41, d = 40;
  for (int64_t v : {1003, 1024}) {
    for (MatmulPrecision precision : {MatmulPrecision::kFp32, MatmulPrecision::kBf16}) {
      auto gpu = MakeGpu(precision);
      const double tol = precision == MatmulPrecision::kFp32 ? kTolF32 : kTolBf16;
      const std::string tag = "V=" + std::to_string(v) +
                              (precision == MatmulPrecision::kFp32 ? ", fp32" : ", bf16");
      std::vector<int32_t> targets(n);
      std::vector<float> weight(n);
      std::uniform_int_distribution<int> id(0, v - 1);
      for (int64_t i = 0; i < n; ++i) {
        targets[i] = id(rng_);
        weight[i] = i % 7 == 2 ? 0.f : 1.f / n;
      }
      Pair t = UploadVector(targets, DType::kI32);
      Pair w = UploadVector(weight, DType::kF32);
      Pair h = Random({n, d + 2}), head = Random({v, d}, 0.3f);
      Pair losses = Output({n}), dh = Output({n, d}), dhead = Random({v, d});
      cpu_->LmHeadCrossEntropy(h.h(1, d), head.h(), t.host, w.host, &losses.host, dh.h(),
                               dhead.h());
      gpu->LmHeadCrossEntropy(h.d(1, d), head.d(), t.dev, w.dev, &losses.dev, dh.d(), dhead.d());
      ExpectClose(Err(losses), tol, "lm head losses, " + tag);
      ExpectClose(Err(dh), tol, "lm head dh, " + tag);
      ExpectClose(Err(dhead), tol, "lm head dW, " + tag);
    }
  }
}

TEST_F(CudaBackendTest, AdamW) {
  for (int64_t n : {1001, 1024}) {
    Pair g = Random({n}), p = Random({n}), m = Random({n}, 0.1f);
    Pair v = Upload(gpu_.get(), testing::RandomHost({n}, &rng_, 0.1f));
    for (int64_t i = 0; i < n; ++i) v.host.data<float>()[i] = std::abs(v.host.data<float>()[i]);
    v.dev = ToDevice(gpu_.get(), v.host);
    AdamWStep step;
    step.lr = 1e-3;
    step.weight_decay = 0.1;
    step.step = 7;
    step.grad_scale = 0.5;
    cpu_->AdamW(step, g.host, &p.host, &m.host, &v.host);
    gpu_->AdamW(step, g.dev, &p.dev, &m.dev, &v.dev);
    const std::string tag = "n=" + std::to_string(n);
    ExpectClose(Err(p), kTolF32, "adamw param, " + tag);
    ExpectClose(Err(m), kTolF32, "adamw m, " + tag);
    ExpectClose(Err(v), kTolF32, "adamw v, " + tag);
  }
}

TEST_F(CudaBackendTest, Glue) {
  Pair x = Random({19, 23}), y = Random({19, 30});
  cpu_->Axpy(-0.3, x.h(), y.h(4, 23));
  gpu_->Axpy(-0.3, x.d(), y.d(4, 23));
  ExpectClose(Err(y), kTolF32, "axpy");
  cpu_->Scale(1.7, y.h(1, 20));
  gpu_->Scale(1.7, y.d(1, 20));
  ExpectClose(Err(y), kTolF32, "scale");
  // Several views at once, one of them empty, one long enough for many blocks.
  Pair big = Random({1, 300001});
  const double want = cpu_->SumSquares({y.h(3, 17), x.h(0, 0), big.h(), x.h()});
  const double got = gpu_->SumSquares({y.d(3, 17), x.d(0, 0), big.d(), x.d()});
  ExpectClose(std::abs(got - want) / want, 1e-6, "sum of squares");
}

// Same inputs, same bits: the kernels sum in a fixed order.
TEST_F(ScanTest, BitwiseDeterministic) {
  const ScanCase c{"determinism", 2, 130, 96, 16, 3, {0, 1, 2}, false, 0.02};
  Setup st = Make(c);
  const int64_t n = st.n, e = st.e, s = st.s;
  SeqLayout sg{c.batch, c.len, &st.doc.dev};
  Pair dy = Random({n, e});
  std::vector<Tensor> runs;
  for (int run = 0; run < 2; ++run) {
    Tensor grads = gpu_->Empty(DType::kF32, {n, 3 * e + 2 * s});
    Tensor ddt = gpu_->Empty(DType::kF32, {c.groups, e});
    Tensor da = gpu_->Empty(DType::kF32, {e, s});
    Tensor dd = gpu_->Empty(DType::kF32, {e});
    for (Tensor* t : {&ddt, &da, &dd}) gpu_->Fill(t->mat(), 0);
    ScanGrads g;
    Mat gm = grads.mat();
    g.du = gm.Cols(0, e);
    g.ddelta_raw = gm.Cols(e, e);
    g.dz = gm.Cols(2 * e, e);
    g.db = gm.Cols(3 * e, s);
    g.dc = gm.Cols(3 * e + s, s);
    g.ddt_bias = &ddt;
    g.da_log = &da;
    g.dd = &dd;
    gpu_->ScanBackward(sg, *st.rg, st.In(true), dy.d(), g);
    runs.push_back(ToHost(gpu_.get(), grads));
    runs.push_back(ToHost(gpu_.get(), ddt));
    runs.push_back(ToHost(gpu_.get(), da));
    runs.push_back(ToHost(gpu_.get(), dd));
  }
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(std::memcmp(runs[i].raw(), runs[i + 4].raw(), runs[i].nbytes()), 0)
        << "output " << i << " differs between runs";
  }
}

// y, dz and ddelta stored in bf16 (the model's MatmulInputDType with bf16
// products) are the fp32 results rounded; nothing else changes.
TEST_F(ScanTest, Bf16OutputsAreRoundedF32) {
  const ScanCase c{"bf16 y, dz, ddelta", 2, 130, 96, 16, 3, {0, 1, 2}, false, 0.02};
  Setup st = Make(c);
  const int64_t n = st.n, e = st.e, s = st.s;
  SeqLayout sg{c.batch, c.len, &st.doc.dev};
  auto gpu = MakeGpu(MatmulPrecision::kBf16);
  Pair dy = Random({n, e});
  std::vector<Tensor> results;  // y, dz, ddelta, du, ddt_bias per dtype
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    Tensor y = gpu->Empty(dtype, {n, e}), dz = gpu->Empty(dtype, {n, e});
    Tensor du = gpu->Empty(DType::kF32, {n, e}), ddr = gpu->Empty(dtype, {n, e});
    Tensor dbc = gpu->Empty(DType::kF32, {n, 2 * s});
    Tensor ddt = gpu->Empty(DType::kF32, {c.groups, e}), da = gpu->Empty(DType::kF32, {e, s});
    Tensor dd = gpu->Empty(DType::kF32, {e});
    for (Tensor* t : {&ddt, &da, &dd}) gpu->Fill(t->mat(), 0);
    gpu->ScanForward(sg, *st.rg, st.In(true), y.mat());
    ScanGrads g;
    g.du = du.mat();
    g.ddelta_raw = ddr.mat();
    g.dz = dz.mat();
    g.db = dbc.mat().Cols(0, s);
    g.dc = dbc.mat().Cols(s, s);
    g.ddt_bias = &ddt;
    g.da_log = &da;
    g.dd = &dd;
    gpu->ScanBackward(sg, *st.rg, st.In(true), dy.d(), g);
    for (const Tensor* t : {&y, &dz, &ddr, &du, &ddt}) {
      results.push_back(ToHostF32(gpu.get(), t->mat()));
    }
  }
  const char* rounded[] = {"scan y in bf16", "scan dz in bf16", "scan ddelta in bf16"};
  for (int i = 0; i < 3; ++i) {
    ExpectClose(RelError(results[5 + i].mat(), results[i].mat()), 4e-3, rounded[i]);
  }
  for (int i : {3, 4}) {  // du and the dt_bias gradient (summed before rounding)
    EXPECT_EQ(std::memcmp(results[5 + i].raw(), results[i].raw(), results[i].nbytes()), 0)
        << "output " << i << " changed with the dtype of y, dz and ddelta";
  }
}

TEST(CudaBackendDeathTest, TokenOutsideVocabulary) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_DEATH(
      {
        auto gpu = NewCudaBackend().value();
        Tensor tokens_host(DType::kI32, {2});
        tokens_host.data<int32_t>()[0] = 1;
        tokens_host.data<int32_t>()[1] = 99;
        Tensor tokens = ToDevice(gpu.get(), tokens_host);
        Tensor table = gpu->Empty(DType::kF32, {10, 4});
        Tensor out = gpu->Empty(DType::kF32, {2, 4});
        gpu->EmbeddingForward(tokens, table, out.mat());
        gpu->Synchronize();
      },
      "outside the vocabulary");
}

}  // namespace
}  // namespace modamba
