// `modamba data build|inspect`: builds the multi-modal datasets from the raw
// data and inspects built ones. See core/data/README.md.
#ifndef MODAMBA_TOOLS_DATA_DATA_COMMAND_H_
#define MODAMBA_TOOLS_DATA_DATA_COMMAND_H_

namespace modamba {

// argv[0] is "data", argv[1] the subcommand ("build" or "inspect"), the rest
// its --name=value flags. Returns the process exit code (0 ok, 1 failure,
// 2 bad usage).
int RunDataCommand(int argc, char** argv);

}  // namespace modamba

#endif  // MODAMBA_TOOLS_DATA_DATA_COMMAND_H_
