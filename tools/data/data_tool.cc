// Standalone `data` tool: the same as `modamba data ...`.
#include "glog/logging.h"
#include "tools/data/data_command.h"

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  // Runs as `data_tool build ...`: argv[0] plays the role of "data".
  return modamba::RunDataCommand(argc, argv);
}
