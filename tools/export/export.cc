#include "tools/export/export.h"

#include <cstring>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/checkpoint.h"
#include "core/data/manifest.h"
#include "core/data/vocab.h"
#include "core/safetensors.h"
#include "core/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "tools/cli/artifacts.h"
#include "tools/cli/flags.h"

namespace modamba {
namespace {

uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest, ties to even
  return static_cast<uint16_t>(bits >> 16);
}

// The exported copy of one parameter: a leading group axis of size 1 dropped.
Tensor Converted(const Tensor& value, DType dtype) {
  Shape shape = value.shape();
  if (shape.size() >= 2 && shape[0] == 1) shape.erase(shape.begin());
  Tensor out(dtype, shape);
  const float* in = value.data<float>();
  if (dtype == DType::kBF16) {
    uint16_t* o = out.data<uint16_t>();
    for (int64_t i = 0; i < value.numel(); ++i) o[i] = ToBf16(in[i]);
  } else {
    std::memcpy(out.raw(), in, value.nbytes());
  }
  return out;
}

// The id ranges of the vocabulary and the tokenizers behind them.
absl::StatusOr<nlohmann::json> Tokenizers(const v1::TrainConfig& config) {
  const int vocab = config.model().vocab_size();
  nlohmann::json t;
  t["text"] = {{"ids", {0, std::min(vocab, data::kNumByteTokens)}},
               {"tokenizer", "UTF-8 bytes: token id = byte value"}};
  if (vocab >= data::kImageBase) {
    nlohmann::json specials;
    for (int32_t id = data::kNumByteTokens; id < data::kImageBase; ++id) {
      specials[data::SpecialName(id)] = id;
    }
    t["specials"] = specials;
  }
  if (config.dataset_dir().empty()) return t;
  ASSIGN_OR_RETURN(data::DatasetManifest m, data::ReadDatasetManifest(config.dataset_dir()));
  t["setting"] = m.setting;
  auto described = [&](const char* name, int32_t begin, int32_t end, const std::string& what) {
    nlohmann::json e = {{"ids", {begin, end}}, {"tokenizer", what}};
    auto it = m.tokenizers.find(name);
    if (it != m.tokenizers.end()) {
      e["file"] = it->second.file;
      e["sha256"] = it->second.sha256;
    }
    return e;
  };
  if (m.vocab.image_codes > 0) {
    t["image"] = described("image_vq", m.vocab.image_begin(), m.vocab.image_end(),
                           absl::StrCat("VQ codebook of ", m.vocab.image_codes,
                                        " codes over 4x4 patches of 28x28 MNIST digits"));
  }
  if (m.vocab.speech_units > 0) {
    t["speech"] = described("speech_units", m.vocab.speech_begin(), m.vocab.speech_end(),
                            absl::StrCat("k-means units (", m.vocab.speech_units,
                                         ") of log-mel speech frames"));
  }
  if (m.patch_dim > 0) t["image_patch_dim"] = m.patch_dim;
  return t;
}

}  // namespace

absl::StatusOr<ExportResult> ExportCheckpoint(const std::string& checkpoint,
                                              const std::string& out, DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError("dtype: F32 or BF16");
  }
  ExportResult result;
  ASSIGN_OR_RETURN(result.checkpoint, ResolveCheckpoint(checkpoint));
  ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(result.checkpoint));
  result.step = manifest.step();
  std::unique_ptr<Backend> backend = NewCpuBackend();
  ASSIGN_OR_RETURN(std::unique_ptr<LanguageModel> model,
                   LoadTrainedModel(result.checkpoint, backend.get()));
  std::vector<Tensor> converted;
  converted.reserve(model->params().all().size());
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  for (const auto& p : model->params().all()) {
    converted.push_back(Converted(p->value, dtype));
    tensors.emplace_back(p->name, &converted.back());
    result.parameters += p->value.numel();
  }
  result.tensors = tensors.size();

  std::string config_json;
  google::protobuf::util::JsonPrintOptions json;
  json.always_print_primitive_fields = true;
  json.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(model->config(), &config_json, json).ok()) {
    return absl::InternalError("the model config does not print as JSON");
  }
  nlohmann::json modalities;
  for (int m = 0; m < model->config().n_modalities(); ++m) modalities[ModalityLabel(m)] = m;
  ASSIGN_OR_RETURN(nlohmann::json tokenizers, Tokenizers(manifest.config()));
  RETURN_IF_ERROR(SaveSafetensors(out, tensors,
                                  {{"format", "pt"},
                                   {"step", std::to_string(manifest.step())},
                                   {"checkpoint", result.checkpoint},
                                   {"dtype", DTypeName(dtype)},
                                   {"config", config_json},
                                   {"modalities", modalities.dump()},
                                   {"tokenizers", tokenizers.dump()}}));
  return result;
}

int RunExportCommand(int argc, char** argv) {
  std::string checkpoint, out, dtype = "f32";
  cli::FlagSet flags("modamba export", "--checkpoint=DIR --out=FILE.safetensors [flags]",
                     "Writes a checkpoint's parameters, model config, tokenizer description and "
                     "modality ids as one safetensors file (tools/export/README.md).",
                     "modamba export --checkpoint=runs/tiny --out=tiny.safetensors --dtype=bf16");
  flags.String("checkpoint", &checkpoint, "DIR",
               "a step-NNNNNNNN/ checkpoint or a run directory (its newest)");
  flags.String("out", &out, "FILE", "the safetensors file");
  flags.Require("checkpoint");
  flags.Require("out");
  flags.String("dtype", &dtype, "f32|bf16", "the tensors' type");
  if (std::optional<int> exit = flags.Parse(argc, argv, 1, nullptr)) return *exit;
  if (dtype != "f32" && dtype != "bf16") return flags.UsageError("--dtype: f32 or bf16");
  absl::StatusOr<ExportResult> r =
      ExportCheckpoint(checkpoint, out, dtype == "bf16" ? DType::kBF16 : DType::kF32);
  if (!r.ok()) {
    std::cerr << "modamba export: " << r.status().message() << "\n";
    return 1;
  }
  cli::PrintArtifact(std::cout, out,
                     absl::StrCat(r->tensors, " tensors (", r->parameters, " parameters, ",
                                  dtype == "bf16" ? "BF16" : "F32", ") of step ", r->step, " from ",
                                  r->checkpoint, ", with its config, tokenizers and modality ids"));
  return 0;
}

}  // namespace modamba
