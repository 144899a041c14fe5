#include "core/data/test_util.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/data/raw_data.h"
#include "glog/logging.h"

namespace modamba::data::testing {

std::string ScratchDir(const std::string& name) {
  const char* root = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = std::filesystem::path(root != nullptr ? root : "/tmp") / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string RawDataDirOrEmpty() {
  absl::StatusOr<std::string> dir = FindRawDataDir("");
  if (!dir.ok()) {
    LOG(WARNING) << dir.status();
    return "";
  }
  return *dir;
}

void CopyDamaged(const std::string& from, const std::string& to, long keep, long flip) {
  std::ifstream in(from, std::ios::binary);
  CHECK(in) << from;
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (keep >= 0 && static_cast<size_t>(keep) < bytes.size()) bytes.resize(keep);
  if (flip >= 0) {
    CHECK_LT(static_cast<size_t>(flip), bytes.size());
    bytes[flip] = static_cast<char>(bytes[flip] ^ 0xff);
  }
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
  CHECK(out) << to;
}

}  // namespace modamba::data::testing
