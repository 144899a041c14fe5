// Helpers for the data tests: scratch directories and the raw data slice.
#ifndef MODAMBA_CORE_DATA_TEST_UTIL_H_
#define MODAMBA_CORE_DATA_TEST_UTIL_H_

#include <string>

namespace modamba::data::testing {

// A fresh, empty directory under the test's scratch space.
std::string ScratchDir(const std::string& name);

// The raw data directory (see FindRawDataDir), or "" when it is absent;
// tests then GTEST_SKIP.
std::string RawDataDirOrEmpty();

// Copies `from` to `to`, keeping the first `keep` bytes (all when keep < 0)
// and XOR-ing byte `flip` with 0xff when flip >= 0.
void CopyDamaged(const std::string& from, const std::string& to, long keep, long flip = -1);

}  // namespace modamba::data::testing

#endif  // MODAMBA_CORE_DATA_TEST_UTIL_H_
