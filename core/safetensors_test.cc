#include "core/safetensors.h"

#include <cstdio>
#include <fstream>

#include "core/file_util.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

std::string TempPath(const std::string& name) {
  return std::string(getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp") + "/" + name;
}

TEST(Safetensors, RoundTripsTensorsAndMetadata) {
  Tensor a(DType::kF32, {2, 3});
  for (int i = 0; i < 6; ++i) a.data<float>()[i] = 0.5f * i - 1;
  Tensor b(DType::kI32, {4});
  for (int i = 0; i < 4; ++i) b.data<int32_t>()[i] = -i;
  std::string path = TempPath("rt.safetensors");
  ASSERT_TRUE(SaveSafetensors(path, {{"a", &a}, {"b", &b}}, {{"step", "7"}}).ok());
  auto file = LoadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata.at("step"), "7");
  const Tensor& a2 = file->tensors.at("a");
  EXPECT_EQ(a2.shape(), Shape({2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a2.data<float>()[i], a.data<float>()[i]);
  EXPECT_EQ(file->tensors.at("b").data<int32_t>()[3], -3);
}

TEST(Safetensors, TruncatedFileIsAClearError) {
  Tensor a(DType::kF32, {64});
  for (int i = 0; i < 64; ++i) a.data<float>()[i] = i;
  std::string path = TempPath("trunc.safetensors");
  ASSERT_TRUE(SaveSafetensors(path, {{"a", &a}}).ok());
  std::string bytes = *ReadFile(path);
  for (size_t keep : {size_t{0}, size_t{5}, size_t{20}, bytes.size() - 1}) {
    ASSERT_TRUE(WriteFileAtomic(path, bytes.substr(0, keep)).ok());
    auto file = LoadSafetensors(path);
    ASSERT_FALSE(file.ok()) << "kept " << keep;
    EXPECT_NE(file.status().message().find(path), std::string::npos) << file.status();
  }
}

TEST(Safetensors, GarbageHeaderIsAClearError) {
  std::string path = TempPath("garbage.safetensors");
  std::string bytes(8, '\0');
  bytes[0] = 4;
  bytes += "{{{{";
  ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
  auto file = LoadSafetensors(path);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("JSON"), std::string::npos);
}

TEST(FileUtil, Sha256OfKnownString) {
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace modamba
