#!/usr/bin/env bash
# The one CLI convention, on the built `modamba` binary: every command's
# --help prints a usage line, every flag with its default and an example;
# a misspelt command or subcommand and an unknown flag are refused (exit 2)
# with the nearest valid name; `train` draws its progress bar on a terminal
# only.
set -euo pipefail
modamba=$(realpath "$1")
fail() { echo "FAIL: $*" >&2; exit 1; }

for command in demo "coordinator start" train submit status watch cancel logs checkpoints \
               eval generate export "data build" "data inspect" compare; do
  # shellcheck disable=SC2086
  help=$("$modamba" $command --help) || fail "$command --help exited $?"
  grep -q "^usage: modamba $command " <<< "$help" || fail "$command --help: no usage line: $help"
  grep -q "^example:" <<< "$help" || fail "$command --help: no example"
  flags=$(grep -c '^  --' <<< "$help" || true)
  defaults=$(grep -cE '\((default: .*|required)\)$' <<< "$help" || true)
  [ "$flags" -ge 1 ] && [ "$flags" -eq "$defaults" ] || fail "$command --help: $flags flags, $defaults with a default"
done

refused() {  # refused "EXPECTED" ARGS...: exit 2 and EXPECTED on stderr
  local expected=$1; shift
  set +e; "$modamba" "$@" > /dev/null 2> err.txt; code=$?; set -e
  [ "$code" -eq 2 ] || fail "$*: exit $code, expected 2"
  grep -qF -- "$expected" err.txt || fail "$*: stderr lacks \"$expected\": $(cat err.txt)"
}
cd "${TEST_TMPDIR:-/tmp}"
refused "unknown command 'trian'; did you mean 'train'?" trian --config=x
refused "unknown command 'staus'; did you mean 'status'?" staus
refused "unknown subcommand 'biuld'; did you mean 'build'?" data biuld
refused "unknown subcommand 'strat'; did you mean 'start'?" coordinator strat
refused "unknown flag '--chekpoint'; did you mean '--checkpoint'?" export --chekpoint=run --out=x
refused "unknown flag '--stpes'; did you mean '--steps'?" train --config=x --stpes=3
refused "unknown flag '--wacth'; did you mean '--watch'?" submit spec --wacth
refused "unknown flag '--modalty'; did you mean '--modality'?" generate --modalty=text
refused "--out=DIR is required" compare runs/a
refused "--dtype: f32 or bf16" export --checkpoint=run --out=x --dtype=f16

# Training progress: a bar redrawn in place on a terminal (script(1) gives the
# command one), plain lines in a pipe.
for i in $(seq 200); do echo "a tiny corpus, line $i"; done > text.txt
cat > tiny.textproto <<CONFIG
model { d_model: 16 n_layer: 1 vocab_size: 256 d_state: 4 }
optimizer { lr: 1e-2 }
steps: 4 batch_size: 2 seq_len: 32 log_every: 2 eval_every: 4 eval_batches: 1
text_path: "$PWD/text.txt"
CONFIG
script -qec "$modamba train --config=tiny.textproto --checkpoint_dir=tty --device=cpu" /dev/null > tty.txt
grep -q $'\r\[##############################\] 100%  step 4/4  [0-9]* tok/s  [0-9.]* ms/step  ETA 0:00  text ' tty.txt ||
  fail "no bar redrawn on a terminal: $(cat -A tty.txt)"
"$modamba" train --config=tiny.textproto --checkpoint_dir=pipe --device=cpu | cat > pipe.txt
if grep -q $'\r' pipe.txt; then fail "a bar in a pipe: $(cat -A pipe.txt)"; fi
[ "$(grep -c '] .*step [0-9]/4 ' pipe.txt)" -eq 3 ] || fail "not 3 plain lines (steps 1, 3, 4): $(cat pipe.txt)"
echo PASS
