#include "core/safetensors.h"

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba {

using nlohmann::json;

absl::Status SaveSafetensors(const std::string& path,
                             const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": duplicate tensor '", name, "'"));
    }
    if (t->device() != Device::kCpu) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "' is not on the CPU"));
    }
    header[name] = {{"dtype", DTypeName(t->dtype())},
                    {"shape", t->shape()},
                    {"data_offsets", {offset, offset + t->nbytes()}}};
    offset += t->nbytes();
  }
  std::string head = header.dump();
  head.resize((head.size() + 7) / 8 * 8, ' ');  // the format pads the header to 8 bytes
  std::string out;
  out.reserve(8 + head.size() + offset);
  uint64_t n = head.size();
  out.append(reinterpret_cast<const char*>(&n), 8);  // little-endian hosts only
  out += head;
  for (const auto& entry : tensors) {
    out.append(static_cast<const char*>(entry.second->raw()), entry.second->nbytes());
  }
  return WriteFileAtomic(path, out);
}

absl::StatusOr<SafetensorsFile> LoadSafetensors(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(path, ": not a valid safetensors file: ", why));
  };
  if (bytes.size() < 8) return bad("shorter than its 8-byte header length (truncated?)");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  if (n > bytes.size() - 8) return bad("header length exceeds the file size (truncated?)");
  json header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + n, nullptr, false);
  if (header.is_discarded() || !header.is_object()) return bad("header is not a JSON object");
  const size_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;
  SafetensorsFile file;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return bad("__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) return bad("metadata values must be strings");
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const json& e = it.value();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") ||
        !e.contains("data_offsets") || !e["dtype"].is_string() || !e["shape"].is_array() ||
        !e["data_offsets"].is_array() || e["data_offsets"].size() != 2) {
      return bad(absl::StrCat("malformed entry for '", it.key(), "'"));
    }
    auto dtype = ParseDType(e["dtype"].get<std::string>());
    if (!dtype.ok()) return bad(absl::StrCat("tensor '", it.key(), "': ", dtype.status().message()));
    Shape shape;
    for (const json& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) return bad("bad shape of '" + it.key() + "'");
      shape.push_back(d.get<int64_t>());
    }
    if (!e["data_offsets"][0].is_number_unsigned() || !e["data_offsets"][1].is_number_unsigned()) {
      return bad(absl::StrCat("bad offsets of '", it.key(), "'"));
    }
    uint64_t begin = e["data_offsets"][0].get<uint64_t>();
    uint64_t end = e["data_offsets"][1].get<uint64_t>();
    Tensor t(*dtype, shape);
    if (begin > end || end > data_size || end - begin != t.nbytes()) {
      return bad(absl::StrCat("tensor '", it.key(), "' lies outside the file or has the wrong size",
                              " (truncated?)"));
    }
    std::memcpy(t.raw(), data + begin, t.nbytes());
    file.tensors.emplace(it.key(), std::move(t));
  }
  return file;
}

}  // namespace modamba
