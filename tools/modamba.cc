// The `modamba` command-line tool. Every command follows tools/cli/flags.h:
// `modamba COMMAND --help` lists its flags with their defaults and an example.
//
//   modamba demo [--dir=DIR]         coordinator + a small tri-modal MoM job, watched to the end
//   modamba coordinator start|stop    the demo's background coordinator
//   modamba train --config=FILE      one process, no coordinator (train_command.h)
//   modamba submit|status|watch|cancel|logs|checkpoints ...          talk to a coordinator
//   modamba eval|generate ...         metrics and samples of a checkpoint (evaluator/README.md)
//   modamba export --checkpoint=DIR --out=FILE   one self-describing safetensors file
//   modamba data build|inspect ...    see core/data/README.md
//   modamba compare RUN_DIR... --out=DIR   FLOPs-to-match tables and charts
#include <iostream>
#include <string>
#include <vector>

#include "tools/cli/client_command.h"
#include "tools/cli/flags.h"
#include "tools/compare/compare.h"
#include "tools/data/data_command.h"
#include "tools/demo.h"
#include "tools/eval_command.h"
#include "tools/export/export.h"
#include "tools/train_command.h"

namespace modamba {
namespace {

constexpr char kUsage[] =
    "usage: modamba <command> [flags]      (modamba <command> --help: its flags and an example)\n"
    "  demo         a coordinator and a small tri-modal Mixture-of-Mamba job, watched to the end\n"
    "  coordinator  start | stop the demo's background coordinator\n"
    "  train        trains one model in this process: checkpoints, metrics.jsonl, config.textproto\n"
    "  submit       sends a JobSpec to a coordinator      status | watch | cancel | logs | checkpoints\n"
    "  eval         metrics of a checkpoint               generate  one image, speech or text sample\n"
    "  export       a checkpoint as one safetensors file for PyTorch\n"
    "  data         build | inspect the tokenized datasets\n"
    "  compare      FLOPs-to-match tables and charts of run directories\n"
    "example:\n"
    "  modamba train --config=tools/configs/shakespeare_tiny.textproto --checkpoint_dir=runs/tiny\n";

int Main(int argc, char** argv) {
  const std::string command = argc >= 2 ? argv[1] : "";
  if (command.empty() || command == "help" || command == "--help" || command == "-h") {
    (command.empty() ? std::cerr : std::cout) << kUsage;
    return command.empty() ? 2 : 0;
  }
  if (command == "demo") return RunDemo(argc - 1, argv + 1);
  if (command == "coordinator") return RunCoordinatorCommand(argc - 1, argv + 1);
  if (command == "train") return RunTrainCommand(argc - 1, argv + 1);
  if (IsClientCommand(command)) return RunClientCommand(argc - 1, argv + 1);
  if (command == "data") return RunDataCommand(argc - 1, argv + 1);
  if (command == "eval") return eval::RunEvalCommand(argc - 1, argv + 1);
  if (command == "generate") return eval::RunGenerateCommand(argc - 1, argv + 1);
  if (command == "export") return RunExportCommand(argc - 1, argv + 1);
  if (command == "compare") return RunCompareCommand(argc - 1, argv + 1);
  std::vector<std::string> commands = {"demo", "coordinator", "train", "data", "eval", "generate", "export",
                                       "compare"};
  for (const std::string& c : ClientCommands()) commands.push_back(c);
  std::cerr << "modamba: " << cli::UnknownName("command", command, commands).message() << "\n"
            << kUsage;
  return 2;
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) { return modamba::Main(argc, argv); }
