// Loading and validating the textproto configs of proto/config.proto. Every
// error names the file and the field; unset optional values are filled with
// their documented defaults so a saved config records what actually ran.
#ifndef MODAMBA_CORE_CONFIG_H_
#define MODAMBA_CORE_CONFIG_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/config.pb.h"

namespace modamba {

// Parses a textproto into `message`; unknown fields and syntax errors are
// INVALID_ARGUMENT with "source:line:column: what".
absl::Status ParseTextProtoInto(const std::string& text, const std::string& source,
                                google::protobuf::Message* message);

template <typename T>
absl::StatusOr<T> ParseTextProto(const std::string& text, const std::string& source) {
  T message;
  absl::Status status = ParseTextProtoInto(text, source, &message);
  if (!status.ok()) return status;
  return message;
}

// Fills defaults and checks ranges. `where` prefixes error messages (a file
// name); `prefix` is the field path of `model` inside its parent ("model.").
absl::Status ResolveModelConfig(v1::ModelConfig* model, const std::string& where,
                                const std::string& prefix = "model.");
absl::Status ResolveTrainConfig(v1::TrainConfig* config, const std::string& where);

// Reads, parses and resolves a TrainConfig file.
absl::StatusOr<v1::TrainConfig> LoadTrainConfig(const std::string& path);

}  // namespace modamba

#endif  // MODAMBA_CORE_CONFIG_H_
