// The `modamba` command-line tool.
//
//   modamba demo [--dir=DIR]         coordinator + a small tri-modal MoM job, watched to the end
//   modamba train --config=FILE [--checkpoint_dir=DIR] [--steps=N]   one process, no coordinator
//   modamba submit|status|watch|cancel|logs|checkpoints ...          talk to a coordinator
//   modamba eval|generate ...         metrics and samples of a checkpoint (evaluator/README.md)
//   modamba export --checkpoint=DIR --out=FILE   one consolidated safetensors file
//   modamba data build|inspect ...    see core/data/README.md
//   modamba compare RUN_DIR... --out=DIR   FLOPs-to-match tables and charts
#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "core/file_util.h"
#include "core/flops.h"
#include "core/safetensors.h"
#include "core/status_macros.h"
#include "evaluator/eval_command.h"
#include "tools/cli/client_command.h"
#include "tools/compare/compare.h"
#include "tools/demo.h"
#include "tools/data/data_command.h"
#include "trainer/train_loop.h"

ABSL_FLAG(std::string, config, "", "TrainConfig textproto (modamba train)");
ABSL_FLAG(std::string, checkpoint_dir, "", "overrides the config's checkpoint_dir");
ABSL_FLAG(int, steps, 0, "overrides the config's steps");
ABSL_FLAG(std::string, checkpoint, "", "a checkpoint directory (modamba export)");
ABSL_FLAG(std::string, out, "", "output file (modamba export)");

namespace modamba {
namespace {

constexpr char kUsage[] =
    "usage: modamba <command> [flags]\n"
    "  demo  [--dir=DIR] [--steps=N] [--device=cpu|gpu] [--coordinator=HOST:PORT]\n"
    "  coordinator start|stop [--dir=DIR]   the demo's background coordinator\n"
    "  train --config=FILE [--checkpoint_dir=DIR] [--steps=N]\n"
    "  submit SPEC.textproto [--watch] | status [JOB] | watch JOB | cancel JOB\n"
    "  logs JOB [--worker=trainer-0] | checkpoints JOB\n"
    "  eval --checkpoint=DIR [...]   (evaluator/README.md)\n"
    "  generate --checkpoint=DIR --prompt=TEXT --modality=image|speech|text --out=FILE\n"
    "           [--device=cpu|gpu]\n"
    "  export --checkpoint=DIR --out=FILE.safetensors\n"
    "  data  build|inspect ...   (modamba data build --help)\n"
    "  compare RUN_DIR... --out=DIR\n";

// The raw data directory: $MODAMBA_DATA_DIR, else ../shared/data beside the
// repository (the working directory of tools/modamba.sh).
absl::StatusOr<std::string> RawDataDir() {
  if (const char* env = std::getenv("MODAMBA_DATA_DIR")) return std::string(env);
  if (FileExists("../shared/data")) return std::string("../shared/data");
  return absl::NotFoundError(
      "no raw data: set MODAMBA_DATA_DIR, or fetch it with tools/data/download_raw.sh");
}

absl::Status Train(v1::TrainConfig config) {
  if (!absl::GetFlag(FLAGS_checkpoint_dir).empty()) {
    config.set_checkpoint_dir(absl::GetFlag(FLAGS_checkpoint_dir));
  }
  if (absl::GetFlag(FLAGS_steps) > 0) config.set_steps(absl::GetFlag(FLAGS_steps));
  if (config.text_path().empty()) {
    ASSIGN_OR_RETURN(std::string raw, RawDataDir());
    config.set_text_path(raw + "/tinyshakespeare/input.txt");
  }
  std::cout << "model: " << config.model().n_layer() << " layers, d_model "
            << config.model().d_model() << ", " << TotalParams(config.model()) << " parameters, "
            << TrainingFlopsPerToken(config.model()) << " training FLOPs/token\n";
  std::unique_ptr<Backend> backend = NewCpuBackend();
  TrainContext context;
  context.backend = backend.get();
  context.log = &std::cout;
  ASSIGN_OR_RETURN(std::vector<StepRecord> records, Train(config, context));
  if (!records.empty()) {
    std::cout << "done: loss " << records.front().loss.mean() << " -> " << records.back().loss.mean()
              << " over steps " << records.front().step << ".." << records.back().step << "\n";
  }
  return absl::OkStatus();
}

// Writes the parameters of a (sharded) checkpoint as one safetensors file
// that PyTorch's safetensors.torch.load_file opens.
absl::Status Export(const std::string& checkpoint, const std::string& out) {
  if (checkpoint.empty() || out.empty()) {
    return absl::InvalidArgumentError("--checkpoint and --out are required");
  }
  std::unique_ptr<Backend> backend = NewCpuBackend();
  ASSIGN_OR_RETURN(std::unique_ptr<MambaLM> model, LoadTrainedModel(checkpoint, backend.get()));
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  for (const auto& p : model->params().all()) tensors.emplace_back(p->name, &p->value);
  ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(checkpoint));
  RETURN_IF_ERROR(SaveSafetensors(out, tensors, {{"format", "pt"}, {"step", std::to_string(manifest.step())}}));
  std::cout << "wrote " << tensors.size() << " tensors of step " << manifest.step() << " to " << out << "\n";
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[1];
  // These parse their own --name=value flags.
  if (command == "demo") return RunDemo(argc - 1, argv + 1);
  if (command == "coordinator") return RunCoordinatorCommand(argc - 1, argv + 1);
  if (IsClientCommand(command)) return RunClientCommand(argc - 1, argv + 1);
  if (command == "data") return RunDataCommand(argc - 1, argv + 1);
  if (command == "eval") return eval::RunEvalCommand(argc - 1, argv + 1);
  if (command == "generate") return eval::RunGenerateCommand(argc - 1, argv + 1);
  if (command == "compare") return RunCompareCommand(argc - 1, argv + 1);
  absl::SetProgramUsageMessage(kUsage);
  absl::ParseCommandLine(argc - 1, argv + 1);
  absl::Status status;
  if (command == "train") {
    if (absl::GetFlag(FLAGS_config).empty()) {
      std::cerr << "modamba train: --config is required\n";
      return 2;
    }
    auto config = LoadTrainConfig(absl::GetFlag(FLAGS_config));
    status = config.ok() ? Train(*config) : config.status();
  } else if (command == "export") {
    status = Export(absl::GetFlag(FLAGS_checkpoint), absl::GetFlag(FLAGS_out));
  } else {
    std::cerr << "modamba: unknown command '" << command << "'\n" << kUsage;
    return 2;
  }
  if (!status.ok()) {
    std::cerr << "modamba " << command << ": " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) { return modamba::Main(argc, argv); }
