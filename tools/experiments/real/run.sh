#!/usr/bin/env bash
# Runs real-world specs (make_specs.sh) on a built world and compares them.
#
#   tools/experiments/real/run.sh WORLD RUNS_DIR [--device=cpu|gpu] [--parallel] SPEC...
#
# WORLD is prepare.sh's OUT_DIR/data (the three settings), or a .tar.zst of
# it (`tar -C OUT_DIR --zstd -cf world.tar.zst data`), unpacked into RUNS_DIR.
# The runs go through tools/experiments/run.sh (skipping finished ones), one
# setting after the other, or with --parallel the settings side by side (small
# models leave most of a GPU idle); then `modamba compare` over all of them
# writes RUNS_DIR/compare.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -ge 3 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
world=$1 runs=$2
shift 2
flags=() specs=() parallel=false
for arg in "$@"; do
  case $arg in
    --parallel) parallel=true ;;
    --*) flags+=("$arg") ;;
    *) specs+=("$(cd "$(dirname "$arg")" && pwd)/$(basename "$arg")") ;;
  esac
done
mkdir -p "$runs"
runs=$(cd "$runs" && pwd)
if [ -f "$world" ]; then
  [ -f "$runs/data/trimodal/manifest.json" ] || tar -C "$runs" --zstd -xf "$world"
else
  ln -sfn "$(cd "$world" && pwd)" "$runs/data"
fi

pids=()
for setting in chameleon transfusion trimodal; do
  group=()
  for spec in "${specs[@]}"; do
    case $(basename "$spec") in $setting-*) group+=("$spec") ;; esac
  done
  [ ${#group[@]} -gt 0 ] || continue
  mkdir -p "$runs/$setting"
  ln -sfn ../data "$runs/$setting/data"
  if $parallel; then
    "$here/../run.sh" --runs="$runs/$setting" ${flags[@]+"${flags[@]}"} "${group[@]}" \
      > "$runs/$setting.log" 2>&1 &
    pids+=($!)
  else
    "$here/../run.sh" --runs="$runs/$setting" ${flags[@]+"${flags[@]}"} "${group[@]}"
  fi
done
status=0
for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" || status=1; done
$parallel && cat "$runs"/*.log
[ $status -eq 0 ] || exit 1

root=$(cd "$here/../../.." && pwd)
bin=${MODAMBA_BIN:-$root/bazel-bin}
modamba=$bin/tools/modamba
[ -x "$modamba" ] || modamba=$bin/modamba
cd "$runs"
"$modamba" compare */*-s[0-9] --out=compare
