// The closing lines of every command that writes files: one per artifact,
//   wrote PATH (SIZE): WHAT
// with the size read back from disk (a directory: all the files under it), so
// what the line says is what is there.
#ifndef MODAMBA_TOOLS_CLI_ARTIFACTS_H_
#define MODAMBA_TOOLS_CLI_ARTIFACTS_H_

#include <cstdint>
#include <ostream>
#include <string>

namespace modamba::cli {

// "812 B", "3.4 KiB", "12.0 MiB", "1.50 GiB"
std::string FormatBytes(int64_t bytes);
// Bytes of a file, or of every file under a directory; -1 when absent.
int64_t DiskSize(const std::string& path);
void PrintArtifact(std::ostream& out, const std::string& path, const std::string& what);

}  // namespace modamba::cli

#endif  // MODAMBA_TOOLS_CLI_ARTIFACTS_H_
