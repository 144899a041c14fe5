#include "coordinator/checkpoint_store.h"

#include <cstdio>
#include <filesystem>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/small_fs.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

class CheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(getenv("TEST_TMPDIR"), "/store-",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    auto store = CheckpointStore::Open(root_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  v1::CheckpointFile File(const std::string& path, const std::string& data) {
    v1::CheckpointFile file;
    file.set_path(path);
    file.set_size(data.size());
    file.set_sha256(Sha256Hex(data));
    return file;
  }

  std::string root_;
  std::unique_ptr<CheckpointStore> store_;
};

TEST_F(CheckpointStoreTest, StoresAFileOnlyWhenItsBytesMatch) {
  const std::string data = "weights of a model";
  v1::CheckpointFile file = File("rank-0/model.safetensors", data);
  {
    auto writer = store_->NewWriter("job-1", 10, file);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(data.substr(0, 5)).ok());
    ASSERT_TRUE((*writer)->Append(data.substr(5, 3)).ok());
    // Abandoned half way: nothing appears.
  }
  const std::string path = store_->PathOf("job-1", 10, file.path());
  EXPECT_FALSE(FileExists(path));
  {
    v1::CheckpointFile lie = file;
    lie.set_sha256(Sha256Hex("other bytes"));
    auto writer = store_->NewWriter("job-1", 10, lie);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(data).ok());
    EXPECT_EQ((*writer)->Finish().status().code(), absl::StatusCode::kDataLoss);
    EXPECT_FALSE((*writer)->Publish().ok());
  }
  EXPECT_FALSE(FileExists(path));
  {
    auto writer = store_->NewWriter("job-1", 10, file);
    ASSERT_TRUE(writer.ok());
    EXPECT_EQ((*writer)->Append(data + "!").code(), absl::StatusCode::kDataLoss);
  }
  auto writer = store_->NewWriter("job-1", 10, file);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(data).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_FALSE(FileExists(path));  // not before Publish
  ASSERT_TRUE((*writer)->Publish().ok());
  EXPECT_EQ(ReadFile(path).value_or(""), data);
  EXPECT_EQ(path, root_ + "/job-1/step-00000010/rank-0/model.safetensors");
}

TEST_F(CheckpointStoreTest, VerifyFindsCorruptionAndRemoveDeletes) {
  const std::string data(10000, 'w');
  v1::CheckpointInfo checkpoint;
  checkpoint.set_job_id("job-2");
  checkpoint.set_step(5);
  *checkpoint.add_files() = File("manifest.json", "{}");
  *checkpoint.add_files() = File("rank-0/w.bin", data);
  for (const v1::CheckpointFile& f : checkpoint.files()) {
    auto writer = store_->NewWriter("job-2", 5, f);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(f.path() == "manifest.json" ? "{}" : data).ok());
    ASSERT_TRUE((*writer)->Finish().ok());
    ASSERT_TRUE((*writer)->Publish().ok());
  }
  EXPECT_TRUE(store_->Verify(checkpoint).ok());
  const std::string path = store_->PathOf("job-2", 5, "rank-0/w.bin");
  FILE* f = fopen(path.c_str(), "r+b");
  fseek(f, 5000, SEEK_SET);
  fputc('x', f);
  fclose(f);
  absl::Status status = store_->Verify(checkpoint);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("rank-0/w.bin"), absl::string_view::npos) << status;
  ASSERT_TRUE(store_->Remove("job-2", 5).ok());
  EXPECT_FALSE(FileExists(root_ + "/job-2/step-00000005"));
  EXPECT_EQ(store_->Verify(checkpoint).code(), absl::StatusCode::kDataLoss);  // missing
}

TEST_F(CheckpointStoreTest, RefusesPathsThatLeaveTheCheckpoint) {
  for (const std::string& path :
       std::vector<std::string>{"", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a b",
                                std::string(300, 'a'), "a/b/c/d/e/f/g/h/i"}) {
    EXPECT_EQ(CheckCheckpointPath(path).code(), absl::StatusCode::kInvalidArgument) << path;
    EXPECT_FALSE(store_->NewWriter("job-1", 1, File(path, "x")).ok()) << path;
  }
  EXPECT_TRUE(CheckCheckpointPath("rank-12/model.safetensors").ok());
  v1::CheckpointFile bad_sha = File("a", "x");
  bad_sha.set_sha256("XYZ");
  EXPECT_FALSE(store_->NewWriter("job-1", 1, bad_sha).ok());
}

TEST_F(CheckpointStoreTest, OpeningClearsTemporariesOfACrash) {
  auto writer = store_->NewWriter("job-1", 1, File("a", "abc"));
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append("ab").ok());
  // A second store on the same root, as after a crash and restart.
  auto reopened = CheckpointStore::Open(root_);
  ASSERT_TRUE(reopened.ok());
  int left = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root_ + "/.tmp")) {
    (void)entry;
    ++left;
  }
  EXPECT_EQ(left, 0);
}

}  // namespace
}  // namespace modamba

namespace modamba {
namespace {

// A full disk: the upload fails with the operating system's words and
// leaves nothing behind.
TEST(CheckpointStoreDiskTest, AFullDiskIsNamedAndLeavesNothing) {
  const std::string root = absl::StrCat(getenv("TEST_TMPDIR"), "/small-store");
  absl::Status mounted = MountSmallFilesystem(root, 64 << 10);
  if (!mounted.ok()) GTEST_SKIP() << mounted;
  auto store = CheckpointStore::Open(root);
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string data(256 << 10, 'w');
  v1::CheckpointFile file;
  file.set_path("rank-0/model.safetensors");
  file.set_size(data.size());
  file.set_sha256(Sha256Hex(data));
  auto writer = (*store)->NewWriter("job-1", 10, file);
  ASSERT_TRUE(writer.ok()) << writer.status();
  absl::Status status;
  for (size_t at = 0; at < data.size() && status.ok(); at += 4096) {
    status = (*writer)->Append(absl::string_view(data).substr(at, 4096));
  }
  if (status.ok()) status = (*writer)->Finish().status();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "No space left on device")) << status;
  writer->reset();
  EXPECT_FALSE(FileExists((*store)->PathOf("job-1", 10, file.path())));
  EXPECT_TRUE(std::filesystem::is_empty(root + "/.tmp"));
}

}  // namespace
}  // namespace modamba
