#!/usr/bin/env bash
# The README's "Using it" block, run top to bottom in a fresh directory that
# holds only what a clone brings (tools/modamba.sh runs the built binary;
# the configs). Two changes keep it to a few minutes on a CPU: data build gets
# small --limit_* slices, train gets --steps=50. Every command must end with
# its "wrote PATH (SIZE): WHAT" lines, and compare must draw a chart of the
# train run.
#   readme_test.sh MODAMBA README.md CONFIG...
set -euo pipefail
modamba=$(realpath "$1"); readme=$(realpath "$2"); shift 2
if [ -z "${MODAMBA_DATA_DIR:-}" ]; then
  echo "SKIP: MODAMBA_DATA_DIR is not set (tools/test.sh sets it)"; exit 0
fi
clone="${TEST_TMPDIR:-$(mktemp -d)}/clone"
rm -rf "$clone"; mkdir -p "$clone/tools/configs"
for config in "$@"; do cp "$config" "$clone/tools/configs/"; done
printf '#!/bin/sh\nexec "%s" "$@"\n' "$modamba" > "$clone/tools/modamba.sh"
chmod +x "$clone/tools/modamba.sh"
cd "$clone"

limits="--seq_len=512 --image_codes=32 --speech_units=16 --kmeans_iterations=3 \
--limit_mnist_train=300 --limit_mnist_val=60 --limit_fsdd_train=30 --limit_fsdd_val=10 \
--limit_cathy_train=2 --limit_cathy_val=2 --limit_text_train=5000 --limit_text_val=2000"
# The first ```sh block after "## Using it".
block=$(awk '/^## Using it/ {on = 1} on && /^```sh/ {inside = 1; next} inside && /^```/ {exit} inside' "$readme")
commands=0
while IFS= read -r line; do
  command=${line%%  #*}  # the README's comments start after two spaces
  [ -n "${command// }" ] || continue
  case "$command" in
    *" data build "*) command="$command $limits" ;;
    *" train "*) command="$command --steps=50" ;;
  esac
  echo "+ $command"
  eval "$command" > out.txt 2> err.txt || { cat out.txt err.txt; echo "FAILED: $command"; exit 1; }
  tail -n 4 out.txt
  grep -q '^wrote .* ([0-9.]* [KMG]*i*B): ' out.txt || { echo "no 'wrote' line from: $command"; exit 1; }
  commands=$((commands + 1))
done <<< "$block"
[ "$commands" -ge 6 ] || { echo "the README's block has only $commands commands"; exit 1; }

chart=$(ls compare/*.png | head -n 1)
[ "$(head -c 4 "$chart" | od -An -c | tr -d ' ')" = "211PNG" ] || { echo "$chart: not a PNG"; exit 1; }
[ "$(stat -c %s "$chart")" -gt 5000 ] || { echo "$chart: too small to hold a chart"; exit 1; }
grep -q '"val"' runs/tiny/metrics.jsonl
test -f runs/tiny/config.textproto
echo "PASS: $commands commands; chart $chart"
