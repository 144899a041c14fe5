#include "tools/cli/artifacts.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_format.h"

namespace modamba::cli {

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrFormat("%d B", bytes);
  if (bytes < (int64_t{1} << 20)) return absl::StrFormat("%.1f KiB", bytes / 1024.0);
  if (bytes < (int64_t{1} << 30)) return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
  return absl::StrFormat("%.2f GiB", bytes / 1073741824.0);
}

int64_t DiskSize(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return static_cast<int64_t>(fs::file_size(path, ec));
  if (!fs::is_directory(path, ec)) return -1;
  int64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(path, ec)) {
    if (e.is_regular_file(ec)) total += static_cast<int64_t>(e.file_size(ec));
  }
  return total;
}

void PrintArtifact(std::ostream& out, const std::string& path, const std::string& what) {
  const int64_t size = DiskSize(path);
  out << "wrote " << path << " (" << (size < 0 ? "missing" : FormatBytes(size)) << "): " << what
      << "\n";
}

}  // namespace modamba::cli
