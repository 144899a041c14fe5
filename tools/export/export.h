// `modamba export`: one checkpoint as one safetensors file that PyTorch (or
// anything reading safetensors) opens without Modamba.
//
// Tensors keep Modamba's names (embed.weight, layers.L.norm.weight,
// layers.L.mixer.{in_proj,x_proj,dt_proj,out_proj}.weight,
// layers.L.mixer.{conv.weight,conv.bias,dt_proj.bias,A_log,D}, norm_f.weight,
// lm_head.weight; Transformer layers: layers.L.{attn_norm,ffn_norm}.weight,
// layers.L.attn.{qkv_proj,out_proj}.weight, layers.L.ffn.{in_proj,out_proj}.weight);
// a shared projection drops the checkpoint's leading group axis of size 1
// ([out, in], as torch.nn.Linear), a routed one keeps it ([M, out, in], group
// m for modality m; a routed norm [M, D]). README.md maps a dense export onto
// mamba_ssm's MambaLMHeadModel names.
//
// The header's __metadata__ (strings, JSON where structured):
//   format      "pt"
//   step        the checkpoint's step;  checkpoint  its directory
//   dtype       F32 or BF16
//   config      the resolved ModelConfig (JSON, proto field names)
//   modalities  {"text": 0, "image": 1, "speech": 2} (the model's first M)
//   tokenizers  the id ranges and their tokenizers: text bytes, specials,
//               image VQ codes and speech units (file and sha256 of the
//               dataset's tokenizer), as the dataset manifest describes them
#ifndef MODAMBA_TOOLS_EXPORT_EXPORT_H_
#define MODAMBA_TOOLS_EXPORT_EXPORT_H_

#include <string>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace modamba {

struct ExportResult {
  std::string checkpoint;  // the step directory exported
  int64_t step = 0;
  int64_t tensors = 0;
  int64_t parameters = 0;
};

// `checkpoint` is a step directory or a run directory (its newest complete
// checkpoint); `dtype` F32 or BF16 (round to nearest even).
absl::StatusOr<ExportResult> ExportCheckpoint(const std::string& checkpoint,
                                              const std::string& out, DType dtype);

// The command: argv[0] = "export".
int RunExportCommand(int argc, char** argv);

}  // namespace modamba

#endif  // MODAMBA_TOOLS_EXPORT_EXPORT_H_
