// `modamba train`: trains one model in this process, without a coordinator.
//
//   modamba train --config=FILE [--checkpoint_dir=DIR] [--steps=N] [--device=gpu|cpu]
//
// The run directory (--checkpoint_dir, else the config's, else
// runs/<config name>) receives the checkpoints (step-NNNNNNNN/), the
// resolved config.textproto and metrics.jsonl (trainer/run_log.h), so
// `modamba compare`, `eval`, `generate` and `export` all take it as it is. A
// run directory with checkpoints resumes from its newest. Progress is a bar
// redrawn in place on a terminal, plain lines every log_every steps
// otherwise (tools/cli/progress.h).
#ifndef MODAMBA_TOOLS_TRAIN_COMMAND_H_
#define MODAMBA_TOOLS_TRAIN_COMMAND_H_

#include <ostream>

namespace modamba {

// argv[0] is "train". Prints to `out` (a terminal or not); errors to stderr.
int RunTrainCommand(int argc, char** argv, std::ostream& out, bool terminal);
// The same on stdout, drawn as a bar when stdout is a terminal.
int RunTrainCommand(int argc, char** argv);

}  // namespace modamba

#endif  // MODAMBA_TOOLS_TRAIN_COMMAND_H_
