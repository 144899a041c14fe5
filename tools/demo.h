// `modamba demo`: the whole system in one command. Starts a coordinator in
// the background (or uses the one already running), builds the tri-modal
// dataset if it is missing, submits a small Mixture-of-Mamba job (on a GPU
// when there is one, else two CPU ranks), follows it to the end and prints
// where the dashboard is and the per-modality losses.
#ifndef MODAMBA_TOOLS_DEMO_H_
#define MODAMBA_TOOLS_DEMO_H_

namespace modamba {

// argv[0] = "demo"; flags (`modamba demo --help`): --dir=DIR (default
// /tmp/modamba-demo), --coordinator=HOST:PORT (default 127.0.0.1:7077),
// --http_port=N, --steps=N, --device=gpu|cpu.
int RunDemo(int argc, char** argv);

// argv[0] = "coordinator"; `start` starts the demo's coordinator for --dir
// unless one answers at --coordinator; `stop` sends SIGTERM to the coordinator
// started for --dir (recorded in DIR/coordinator.pid), and to nothing else.
int RunCoordinatorCommand(int argc, char** argv);

}  // namespace modamba

#endif  // MODAMBA_TOOLS_DEMO_H_
