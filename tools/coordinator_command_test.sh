#!/usr/bin/env bash
# `modamba coordinator start|stop`: stop ends the coordinator that start (or
# the demo) launched for its directory, and never another process.
set -euo pipefail
modamba="$1"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir="$TEST_TMPDIR/demo"
grpc=$(port); http=$(port)
flags=(--dir="$dir" --coordinator=127.0.0.1:$grpc --http_port=$http --device=cpu)

"$modamba" coordinator start "${flags[@]}"
pid=$(cat "$dir/coordinator.pid")
trap 'kill -9 $pid 2>/dev/null || true' EXIT
kill -0 "$pid"
"$modamba" coordinator start "${flags[@]}" | grep -q "using the coordinator at"  # no second one

# A pid file that names some other process: left alone.
decoy_dir="$TEST_TMPDIR/decoy"; mkdir -p "$decoy_dir"
sleep 300 & decoy=$!
echo "$decoy" > "$decoy_dir/coordinator.pid"
"$modamba" coordinator stop --dir="$decoy_dir" | grep -q "no coordinator started by modamba"
kill -0 "$decoy"
kill "$decoy"

"$modamba" coordinator stop "${flags[@]}" | grep -q "stopped the coordinator (pid $pid)"
if kill -0 "$pid" 2>/dev/null && ! grep -q zombie /proc/"$pid"/status 2>/dev/null; then
  echo "coordinator $pid still running" >&2; exit 1
fi
test ! -e "$dir/coordinator.pid"
"$modamba" coordinator stop "${flags[@]}" | grep -q "no coordinator started by modamba"  # idempotent
echo PASS
