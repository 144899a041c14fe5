#!/usr/bin/env bash
# Runs the whole test suite (installing missing system packages first) and
# prints one "N passed, N failed, N skipped" line over the test targets.
# GPU tests skip themselves on machines without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh || exit 1
if [ -z "${MODAMBA_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export MODAMBA_DATA_DIR="$(cd ../shared/data && pwd)"
fi
log="$(mktemp)"
bazel test //... --test_summary=short "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|FLAKY|INCOMPLETE)' "$log")
skipped=$(grep -cE '^//[^ ]+ +(\(cached\) )?(NO STATUS|SKIPPED)' "$log")
rm -f "$log"
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
