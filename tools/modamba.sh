#!/usr/bin/env bash
# Builds the `modamba` tool (installing missing system packages first) and runs
# it from the repository root:  tools/modamba.sh demo | train --config=FILE | data ...
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
# The demo starts the coordinator and worker binaries beside it.
bazel build --noshow_progress --ui_event_filters=-info,-debug //tools:modamba \
  //coordinator:modamba-coordinator //trainer:modamba-trainer //evaluator:modamba-evaluator >&2
exec bazel-bin/tools/modamba "$@"
