#!/usr/bin/env bash
# Runs experiment specs and compares them.
#
#   tools/experiments/run.sh [--runs=DIR] [--device=cpu|gpu] [--nproc=N] SPEC...
#
# Each SPEC (a TrainConfig, see specs/) runs as modamba-trainer into
# DIR/<spec name>/ (config.textproto, metrics.jsonl, log.txt); a run whose
# metrics already reach its last step is skipped, so the script can be
# re-run after an interruption. The datasets are built once into DIR/data.
# Then `modamba compare` writes the table and the charts into DIR/compare.
# Binaries come from $MODAMBA_BIN (a folder holding modamba, modamba-trainer
# and launch, e.g. a GPU bundle), else from bazel-bin.
set -euo pipefail
runs=runs
device=cpu
nproc=1
specs=()
for arg in "$@"; do
  case $arg in
    --runs=*) runs=${arg#--runs=} ;;
    --device=*) device=${arg#--device=} ;;
    --nproc=*) nproc=${arg#--nproc=} ;;
    --*) echo "run.sh: unknown flag $arg" >&2; exit 2 ;;
    *) specs+=("$(cd "$(dirname "$arg")" && pwd)/$(basename "$arg")") ;;
  esac
done
[ ${#specs[@]} -gt 0 ] || { echo "usage: run.sh [--runs=DIR] [--device=cpu|gpu] [--nproc=N] SPEC..." >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MODAMBA_BIN:-$root/bazel-bin}
modamba=$bin/tools/modamba; trainer=$bin/trainer/modamba-trainer; launch=$bin/trainer/launch
[ -x "$modamba" ] || { modamba=$bin/modamba; trainer=$bin/modamba-trainer; launch=$bin/launch; }
mkdir -p "$runs"
runs=$(cd "$runs" && pwd)
cd "$runs"
[ -f data/trimodal/manifest.json ] || "$modamba" data build --out=data --setting=all

for spec in "${specs[@]}"; do
  name=$(basename "$spec" .textproto)
  steps=$(sed -n 's/^steps: *\([0-9]*\).*/\1/p' "$spec")
  mkdir -p "$name"
  if [ -f "$name/metrics.jsonl" ] && grep -q "\"step\":$steps," "$name/metrics.jsonl"; then
    echo "$name: done"
    continue
  fi
  cp "$spec" "$name/config.textproto"
  rm -f "$name/metrics.jsonl"
  start=$(date +%s)
  if [ "$nproc" -gt 1 ]; then
    "$launch" --nproc="$nproc" --log_dir="$name/logs" -- "$trainer" --device="$device" \
      --config="$name/config.textproto" --metrics_out="$name/metrics.jsonl"
    cp "$name/logs/rank_0.log" "$name/log.txt"
  else
    "$trainer" --device="$device" --config="$name/config.textproto" \
      --metrics_out="$name/metrics.jsonl" > "$name/log.txt" 2>&1
  fi
  echo "$name: $(( $(date +%s) - start )) s, $(tail -n 1 "$name/log.txt")"
done

dirs=()
for spec in "${specs[@]}"; do dirs+=("$(basename "$spec" .textproto)"); done
"$modamba" compare "${dirs[@]}" --out=compare
