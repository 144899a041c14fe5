#include "core/data/image_tokenizer.h"

#include <algorithm>
#include <cmath>

#include "core/data/test_util.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "glog/logging.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

TEST(ImageTokenizerTest, ContinuousPatchesRoundTripExactly) {
  uint8_t image[kImagePixels], back[kImagePixels];
  for (int i = 0; i < kImagePixels; ++i) image[i] = static_cast<uint8_t>((i * 7) % 256);
  float patches[kPatchesPerImage * kPatchDim];
  ContinuousPatches(image, patches);
  EXPECT_FLOAT_EQ(*std::min_element(patches, patches + kPatchesPerImage * kPatchDim), -1.0f);
  EXPECT_FLOAT_EQ(*std::max_element(patches, patches + kPatchesPerImage * kPatchDim), 1.0f);
  // Patch 8 is grid cell (1, 1): its first pixel is image row 4, column 4.
  EXPECT_FLOAT_EQ(patches[8 * kPatchDim], 2.0f * image[4 * 28 + 4] / 255.0f - 1.0f);
  ImageFromContinuousPatches(patches, back);
  EXPECT_TRUE(std::equal(image, image + kImagePixels, back));
  EXPECT_EQ(Psnr(image, back, kImagePixels), 100.0);
}

// The full build trains on 200k patches of all 60k training images for 25
// iterations (val PSNR 24.6 dB, no dead codes); this slice trains in about a
// second and measures 24.37 dB and 0.2% dead codes on the whole MNIST test
// set. The threshold leaves room for BLAS rounding on other machines.
TEST(ImageTokenizerTest, VqRoundTripOnMnistTest) {
  const std::string raw = testing::RawDataDirOrEmpty();
  if (raw.empty()) GTEST_SKIP() << "raw data not found";
  absl::StatusOr<MnistSet> train = ReadMnist(raw + "/mnist/train-images-idx3-ubyte.gz",
                                             raw + "/mnist/train-labels-idx1-ubyte.gz", 6000);
  absl::StatusOr<MnistSet> test = ReadMnist(raw + "/mnist/t10k-images-idx3-ubyte.gz",
                                            raw + "/mnist/t10k-labels-idx1-ubyte.gz");
  ASSERT_TRUE(train.ok() && test.ok());
  ImageVqOptions options;
  options.k = 512;
  options.iterations = 10;
  options.max_patches = 60000;
  options.seed = 11;
  absl::StatusOr<ImageVq> vq = ImageVq::Train(*train, options);
  ASSERT_TRUE(vq.ok()) << vq.status();

  const std::vector<int32_t> codes = vq->Encode(test->pixels.data(), test->count());
  std::vector<bool> used(512, false);
  double psnr = 0;
  uint8_t decoded[kImagePixels];
  for (int64_t i = 0; i < test->count(); ++i) {
    for (int p = 0; p < kPatchesPerImage; ++p) used[codes[i * kPatchesPerImage + p]] = true;
    ASSERT_TRUE(vq->Decode(codes.data() + i * kPatchesPerImage, decoded).ok());
    psnr += Psnr(test->image(i), decoded, kImagePixels);
  }
  psnr /= test->count();
  const double dead = static_cast<double>(std::count(used.begin(), used.end(), false)) / 512;
  LOG(INFO) << "VQ k=512 on the MNIST test set: mean PSNR " << psnr << " dB, dead codes "
            << dead * 100 << "%";
  RecordProperty("mean_psnr_db", std::to_string(psnr));
  RecordProperty("dead_code_percent", std::to_string(dead * 100));
  EXPECT_GT(psnr, 24.0);
  EXPECT_LE(dead, 0.05);

  // Saved and loaded, the codebook encodes identically.
  const std::string dir = testing::ScratchDir("image_vq");
  ASSERT_TRUE(vq->Save(dir + "/vq.safetensors", {{"seed", "11"}}).ok());
  absl::StatusOr<ImageVq> loaded = ImageVq::Load(dir + "/vq.safetensors");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->Encode(test->pixels.data(), 200),
            std::vector<int32_t>(codes.begin(), codes.begin() + 200 * kPatchesPerImage));
  std::vector<int32_t> bad(kPatchesPerImage, 0);
  bad[3] = 512;
  EXPECT_FALSE(loaded->Decode(bad.data(), decoded).ok());
}

TEST(ImageTokenizerTest, PatchesOfAnRgbImageOfAnyShape) {
  const ImageShape shape{8, 12, 3};  // a 2x3 grid of 48-value patches
  EXPECT_EQ(shape.patches(), 6);
  EXPECT_EQ(shape.patch_dim(), 48);
  std::vector<uint8_t> image(shape.pixels()), back(shape.pixels());
  for (size_t i = 0; i < image.size(); ++i) image[i] = static_cast<uint8_t>(i * 11 % 256);
  std::vector<float> patches(shape.patches() * shape.patch_dim());
  ContinuousPatches(image.data(), patches.data(), shape);
  // Patch 4 is grid cell (1, 1); its value (y, x, c) is pixel (4 + y, 4 + x), channel c.
  auto pixel = [&](int y, int x, int c) { return image[(y * 12 + x) * 3 + c]; };
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 4; ++x) {
      for (int c = 0; c < 3; ++c) {
        EXPECT_NEAR(patches[4 * 48 + (y * 4 + x) * 3 + c],
                    2.0f * pixel(4 + y, 4 + x, c) / 255.0f - 1.0f, 1e-6);
      }
    }
  }
  ImageFromContinuousPatches(patches.data(), back.data(), shape);
  EXPECT_EQ(back, image);
}

TEST(ImageTokenizerTest, ShapesAreValidated) {
  EXPECT_TRUE(ValidateImageShape({}).ok());
  EXPECT_TRUE(ValidateImageShape({64, 32, 3}).ok());
  for (const ImageShape& bad : {ImageShape{30, 28, 1}, ImageShape{28, 0, 1}, ImageShape{28, 28, 2},
                                ImageShape{8192, 28, 1}}) {
    const absl::Status status = ValidateImageShape(bad);
    EXPECT_FALSE(status.ok()) << bad.height << "x" << bad.width << "x" << bad.channels;
  }
  EXPECT_NE(ValidateImageShape({30, 28, 1}).message().find("height"), std::string::npos);
  EXPECT_NE(ValidateImageShape({28, 28, 2}).message().find("channels"), std::string::npos);
}

// RGB images whose 4x4 blocks each have one of 8 colours: a codebook of 8
// learns the colours and decodes every image exactly.
TEST(ImageTokenizerTest, RgbCodebookRoundTrip) {
  const ImageShape shape{16, 24, 3};
  const uint8_t colours[8][3] = {{0, 0, 0},     {255, 0, 0},   {0, 255, 0},    {0, 0, 255},
                                 {255, 255, 0}, {12, 34, 56},  {200, 100, 50}, {255, 255, 255}};
  constexpr int kImages = 20;
  std::vector<uint8_t> images(kImages * shape.pixels());
  Rng rng(5);
  for (int i = 0; i < kImages; ++i) {
    for (int p = 0; p < shape.patches(); ++p) {
      const uint8_t* colour = colours[rng.Below(8)];
      const int py = p / shape.grid_cols(), px = p % shape.grid_cols();
      for (int y = 0; y < 4; ++y) {
        for (int x = 0; x < 4; ++x) {
          uint8_t* pixel = &images[i * shape.pixels() +
                                   ((py * 4 + y) * shape.width + px * 4 + x) * 3];
          std::copy(colour, colour + 3, pixel);
        }
      }
    }
  }
  ImageVqOptions options;
  options.k = 8;
  options.iterations = 10;
  options.seed = 3;
  absl::StatusOr<ImageVq> vq = ImageVq::Train(images.data(), kImages, shape, options);
  ASSERT_TRUE(vq.ok()) << vq.status();
  const std::vector<int32_t> codes = vq->Encode(images.data(), kImages);
  ASSERT_EQ(codes.size(), static_cast<size_t>(kImages) * shape.patches());
  std::vector<uint8_t> decoded(shape.pixels());
  for (int i = 0; i < kImages; ++i) {
    ASSERT_TRUE(vq->Decode(codes.data() + i * shape.patches(), decoded.data()).ok());
    EXPECT_EQ(Psnr(decoded.data(), images.data() + i * shape.pixels(), shape.pixels()), 100.0)
        << "image " << i;
  }

  // Saved, it reloads with its shape; as a user codebook it loads for that shape.
  const std::string dir = testing::ScratchDir("image_vq_rgb");
  ASSERT_TRUE(vq->Save(dir + "/vq.safetensors", {}).ok());
  for (const absl::StatusOr<ImageVq>& loaded :
       {ImageVq::Load(dir + "/vq.safetensors"),
        ImageVq::LoadCodebook(dir + "/vq.safetensors", shape)}) {
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->shape(), shape);
    EXPECT_EQ(loaded->Encode(images.data(), kImages), codes);
  }
}

// A trained codebook is keyed by its training images and the code version;
// the key survives Save and Load, and a mismatch is named clearly.
TEST(ImageTokenizerTest, CodebooksCarryTheKeyOfWhatTrainedThem) {
  constexpr int kImages = 12;
  std::vector<uint8_t> images(kImages * kImagePixels);
  Rng rng(9);
  for (uint8_t& p : images) p = static_cast<uint8_t>(rng.Below(256));
  ImageVqOptions options;
  options.k = 4;
  options.iterations = 3;
  auto train = [&](const std::vector<uint8_t>& pixels, uint64_t seed) {
    options.seed = seed;
    absl::StatusOr<ImageVq> vq = ImageVq::Train(pixels.data(), kImages, ImageShape(), options);
    EXPECT_TRUE(vq.ok()) << vq.status();
    return vq->key();
  };
  const TokenizerKey key = train(images, 1);
  EXPECT_EQ(key.code_version, kImageVqVersion);
  EXPECT_EQ(key.data_sha256.size(), 64u);
  EXPECT_EQ(train(images, 2).data_sha256, key.data_sha256);  // the data's, not the draw's
  std::vector<uint8_t> altered = images;
  altered[100] ^= 1;
  const TokenizerKey altered_key = train(altered, 1);
  EXPECT_NE(altered_key.data_sha256, key.data_sha256);

  options.seed = 1;
  absl::StatusOr<ImageVq> vq = ImageVq::Train(images.data(), kImages, ImageShape(), options);
  ASSERT_TRUE(vq.ok());
  const std::string path = testing::ScratchDir("image_vq_key") + "/vq.safetensors";
  ASSERT_TRUE(vq->Save(path, {}).ok());
  absl::StatusOr<ImageVq> loaded = ImageVq::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->key().data_sha256, key.data_sha256);
  EXPECT_EQ(loaded->key().code_version, key.code_version);
  EXPECT_TRUE(CheckTokenizerKey("image codebook", path, loaded->key(), key, "").ok());
  // A user's codebook records none.
  absl::StatusOr<ImageVq> user = ImageVq::LoadCodebook(path, ImageShape());
  ASSERT_TRUE(user.ok());
  EXPECT_TRUE(user->key().code_version.empty());

  const absl::Status data = CheckTokenizerKey("image codebook", path, loaded->key(), altered_key,
                                              "Retrain it.");
  EXPECT_EQ(data.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(data.message().find(path), std::string::npos) << data;
  EXPECT_NE(data.message().find(key.data_sha256), std::string::npos) << data;
  EXPECT_NE(data.message().find(altered_key.data_sha256), std::string::npos) << data;
  EXPECT_NE(data.message().find("Retrain it."), std::string::npos) << data;
  const absl::Status version = CheckTokenizerKey("image codebook", path, user->key(),
                                                 {"", kImageVqVersion}, "");
  EXPECT_NE(version.message().find("code version (none recorded), this build is image-vq/"),
            std::string::npos)
      << version;
}

void SaveCentroids(const std::string& path, const std::string& name, DType dtype, Shape shape,
                   float fill) {
  Tensor t(dtype, shape);
  if (dtype == DType::kF32) std::fill(t.data<float>(), t.data<float>() + t.numel(), fill);
  ASSERT_TRUE(SaveSafetensors(path, {{name, &t}}).ok());
}

TEST(ImageTokenizerTest, UserCodebooksAreValidated) {
  const std::string dir = testing::ScratchDir("image_vq_user");
  const ImageShape rgb{32, 32, 3};
  SaveCentroids(dir + "/good.safetensors", "centroids", DType::kF32, {64, 48}, 0.5f);
  absl::StatusOr<ImageVq> good = ImageVq::LoadCodebook(dir + "/good.safetensors", rgb);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->k(), 64);
  EXPECT_EQ(good->Encode(std::vector<uint8_t>(rgb.pixels(), 128).data(), 1).size(), 64u);

  SaveCentroids(dir + "/grey.safetensors", "centroids", DType::kF32, {64, 16}, 0.5f);
  SaveCentroids(dir + "/nan.safetensors", "centroids", DType::kF32, {4, 48}, std::nanf(""));
  SaveCentroids(dir + "/named.safetensors", "codebook", DType::kF32, {4, 48}, 0.5f);
  SaveCentroids(dir + "/f64.safetensors", "centroids", DType::kF64, {4, 48}, 0);
  for (const auto& [file, what] :
       std::vector<std::pair<std::string, std::string>>{{"grey", "[K >= 1, 48]"},
                                                        {"nan", "non-finite"},
                                                        {"named", "no tensor 'centroids'"},
                                                        {"f64", "F32"}}) {
    const std::string path = dir + "/" + file + ".safetensors";
    absl::StatusOr<ImageVq> bad = ImageVq::LoadCodebook(path, rgb);
    ASSERT_FALSE(bad.ok()) << path;
    EXPECT_NE(bad.status().message().find(path), std::string::npos) << bad.status();
    EXPECT_NE(bad.status().message().find("centroids"), std::string::npos) << bad.status();
    EXPECT_NE(bad.status().message().find(what), std::string::npos) << bad.status();
  }
  // A grey codebook fits grey images of any resolution.
  EXPECT_TRUE(ImageVq::LoadCodebook(dir + "/grey.safetensors", {64, 48, 1}).ok());
}

}  // namespace
}  // namespace modamba::data
