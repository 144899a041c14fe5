// Safetensors files (an 8-byte little-endian header length, a JSON header,
// then raw little-endian tensor bytes), so PyTorch users can open what Modamba
// writes. Writes are atomic: a temporary file is renamed into place.
#ifndef MODAMBA_CORE_SAFETENSORS_H_
#define MODAMBA_CORE_SAFETENSORS_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace modamba {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;          // CPU tensors
  std::map<std::string, std::string> metadata;    // the "__metadata__" entry
};

// `tensors` must be CPU tensors; names must be unique.
absl::Status SaveSafetensors(const std::string& path,
                             const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                             const std::map<std::string, std::string>& metadata = {});

// Errors name the file and what is wrong (truncated, bad header, offsets).
absl::StatusOr<SafetensorsFile> LoadSafetensors(const std::string& path);

}  // namespace modamba

#endif  // MODAMBA_CORE_SAFETENSORS_H_
