// Helpers for the data tests: scratch directories and the raw data slice.
#ifndef MODAMBA_CORE_DATA_TEST_UTIL_H_
#define MODAMBA_CORE_DATA_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace modamba::data::testing {

// A fresh, empty directory under the test's scratch space.
std::string ScratchDir(const std::string& name);

// The raw data directory (see FindRawDataDir), or "" when it is absent;
// tests then GTEST_SKIP.
std::string RawDataDirOrEmpty();

// Copies `from` to `to`, keeping the first `keep` bytes (all when keep < 0)
// and XOR-ing byte `flip` with 0xff when flip >= 0.
void CopyDamaged(const std::string& from, const std::string& to, long keep, long flip = -1);

// Encodes [height, width, components] pixels as a JPEG with libjpeg (1 grey,
// 3 RGB, 4 CMYK components), baseline or progressive.
void WriteJpeg(const std::string& path, int width, int height, int components,
               const std::vector<uint8_t>& pixels, bool progressive = false, int quality = 95);

}  // namespace modamba::data::testing

#endif  // MODAMBA_CORE_DATA_TEST_UTIL_H_
