#!/usr/bin/env bash
# FSDP scaling of one training config on one multi-GPU host:
#
#   tools/experiments/scaling.sh [--runs=DIR] [--raw=DIR] [--weak] CONFIG [GPU COUNTS...]
#
# CONFIG is a TrainConfig whose batch_size is the global batch (examples in
# tools/experiments/scaling/). For each GPU count N (default 1 2 4 8) it runs
# `launch --nproc=N -- modamba-trainer --device=gpu`, and for N > 1 also the
# same step on one GPU with batch_size / N sequences: the compute each rank
# does, with no communication. With --weak, batch_size is per GPU instead
# (N GPUs train on N x batch_size sequences) and the one-GPU run is every
# rank's compute. collectives_bench times NCCL's all-gather and
# reduce-scatter at the size of one layer's bucket. It prints one markdown
# table per config:
#   tokens/s (median over the steps after the first third), per GPU, scaling
#   efficiency (per-GPU tokens/s over one GPU's), MFU, FSDP state and peak
#   memory per GPU, step time, compute-only step time, exposed communication
#   (their difference), and the share of the step's communication hidden
#   behind compute: 1 - exposed / (layers x (2 all-gathers + 1
#   reduce-scatter) of a layer bucket, at collectives_bench's times).
# The tri-modal dataset is built into DIR/data from --raw (the raw data
# folder, see core/data/README.md) unless it is there. Binaries come from
# $MODAMBA_BIN (a bundle's bin/), else bazel-bin. NCCL's NVLink multicast
# stays off (NCCL_NVLS_ENABLE=0).
set -euo pipefail
export NCCL_NVLS_ENABLE=0
runs=scaling_runs
raw=
weak=0
config=
counts=()
for arg in "$@"; do
  case $arg in
    --runs=*) runs=${arg#--runs=} ;;
    --raw=*) raw=$(cd "${arg#--raw=}" && pwd) ;;
    --weak) weak=1 ;;
    --*) echo "scaling.sh: unknown flag $arg" >&2; exit 2 ;;
    *) if [ -z "$config" ]; then config=$(cd "$(dirname "$arg")" && pwd)/$(basename "$arg");
       else counts+=("$arg"); fi ;;
  esac
done
[ -n "$config" ] || { echo "usage: scaling.sh [--runs=DIR] [--raw=DIR] CONFIG [N...]" >&2; exit 2; }
[ ${#counts[@]} -gt 0 ] || counts=(1 2 4 8)
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MODAMBA_BIN:-$root/bazel-bin}
find_bin() {  # a bundle's flat bin/ or bazel-bin/<package>/<name>
  if [ -x "$bin/$2" ]; then echo "$bin/$2"; else echo "$bin/$1/$2"; fi
}
modamba=$(find_bin tools modamba)
trainer=$(find_bin trainer modamba-trainer)
launch=$(find_bin trainer launch)
bench=$(find_bin trainer collectives_bench)
mkdir -p "$runs"
cd "$runs"
if [ ! -f data/trimodal/manifest.json ]; then
  "$modamba" data build ${raw:+--raw="$raw"} --out=data --setting=trimodal > data_build.log 2>&1
fi

name=$(basename "$config" .textproto)
batch=$(sed -n 's/^batch_size: *\([0-9]*\).*/\1/p' "$config")
steps=$(sed -n 's/^steps: *\([0-9]*\).*/\1/p' "$config")
layers=$(sed -n 's/.*n_layer: *\([0-9]*\).*/\1/p' "$config")

# Runs `config` on n GPUs into dir; prints "tok/s step_ms mfu state_mib peak_gib".
run() {
  local n=$1 cfg=$2 dir=$3
  rm -rf "$dir"
  "$launch" --nproc="$n" --log_dir="$dir" -- "$trainer" --device=gpu --config="$cfg" \
    > "$dir.out" 2>&1 || { echo "$dir failed:" >&2; tail -n 20 "$dir.out" >&2; echo "0 0 - - -"; return; }
  local log=$dir/rank_0.log first=$(( steps / 3 + 1 ))
  local tps=$(grep -E "^step +[0-9]+/" "$log" | awk -v f="$first" '{split($2, s, "/"); if (s[1] + 0 >= f) print}' |
              sed 's/.*| *\([0-9.]*\) tok\/s.*/\1/' | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
  local mfu=$(grep -E "^step +$steps/" "$log" | sed -n 's/.*MFU \([0-9.]*\)%.*/\1/p')
  local state=$(sed -n 's/.*buckets, \([0-9.]*\) MiB.*/\1/p' "$log" | head -n 1)
  local peak=$(cat "$dir"/rank_*.log | sed -n 's/.*peak GPU memory \([0-9.]*\) GiB.*/\1/p' | sort -n | tail -n 1)
  awk -v t="$tps" -v b="$batch" -v m="$mfu" -v s="$state" -v p="$peak" -v sl="$(sed -n 's/^seq_len: *\([0-9]*\).*/\1/p' "$cfg")" \
    -v bs="$(sed -n 's/^batch_size: *\([0-9]*\).*/\1/p' "$cfg")" \
    'BEGIN {printf "%s %.2f %s %s %s\n", t, 1000 * bs * sl / t, m, s, p}'
}

# NCCL time (us) of op on n GPUs at collectives_bench's one size.
comm_us() {
  awk -v op="$2" '$1 == op {print $3}' "bench$1.txt" 2>/dev/null
}

declare -A tps ms mfu state peak base
for n in "${counts[@]}"; do
  if [ "$weak" = 1 ]; then
    name_n=$name-weak-gpus$n
    sed "s/^batch_size: *[0-9]*/batch_size: $(( batch * n ))/" "$config" > "$name_n.textproto"
    read -r tps[$n] ms[$n] mfu[$n] state[$n] peak[$n] < <(run "$n" "$name_n.textproto" "$name_n")
    base[$n]=${ms[${counts[0]}]}
    continue
  fi
  read -r tps[$n] ms[$n] mfu[$n] state[$n] peak[$n] < <(run "$n" "$config" "$name-gpus$n")
  if [ "$n" -gt 1 ]; then
    sed "s/^batch_size: *[0-9]*/batch_size: $(( batch / n ))/" "$config" > "$name-compute$n.textproto"
    read -r _ base[$n] _ _ _ < <(run 1 "$name-compute$n.textproto" "$name-compute$n")
  fi
done
# One layer bucket: the model's fp32 parameters (a quarter of one GPU's FSDP
# state, which holds parameters, gradients and both AdamW moments) over
# layers + 1 buckets.
one=${counts[0]}
bucket=$(awk -v s="${state[$one]}" -v n="$one" -v l="$layers" \
  'BEGIN {b = int(s * 1048576 / 4 * n / (l + 1)); b -= b % 4096; print b}')
for n in "${counts[@]}"; do
  [ "$n" -gt 1 ] || continue
  "$launch" --nproc="$n" --log_dir="bench$n" -- "$bench" --backend=nccl --min_bytes="$bucket" \
    --max_bytes="$bucket" --iters=10 > /dev/null 2>&1 || true
  cat bench"$n"/rank_0.log > "bench$n.txt" 2>/dev/null || true
done

echo
if [ "$weak" = 1 ]; then what="$batch sequences per GPU"; else what="global batch $batch"; fi
echo "## $name: FSDP over ${counts[*]} GPUs, $what x $(sed -n 's/^seq_len: *\([0-9]*\).*/\1/p' "$config") tokens"
echo
echo "| GPUs | tokens/s | per GPU | scaling efficiency | MFU | FSDP state per GPU | peak memory per GPU | step ms | compute-only step ms | exposed comm ms | comm per step ms (NCCL) | hidden |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for n in "${counts[@]}"; do
  if [ "$n" -gt 1 ]; then
    ag=$(comm_us "$n" all_gather); rs=$(comm_us "$n" reduce_scatter)
    awk -v n="$n" -v t="${tps[$n]}" -v t1="${tps[$one]}" -v m="${mfu[$n]}" -v s="${state[$n]}" \
      -v p="${peak[$n]}" -v ms="${ms[$n]}" -v b="${base[$n]}" -v ag="${ag:-0}" -v rs="${rs:-0}" -v l="$layers" \
      'BEGIN {c = (l + 1) * (2 * ag + rs) / 1000; e = ms - b; h = c > 0 ? 1 - e / c : 0;
              if (h < 0) h = 0;
              printf "| %d | %.0f | %.0f | %.1f%% | %s%% | %s MiB | %s GiB | %.1f | %.1f | %.1f | %.1f | %.0f%% |\n",
                     n, t, t / n, 100 * t / n / t1, m, s, p, ms, b, e, c, 100 * h}'
  else
    awk -v t="${tps[$n]}" -v m="${mfu[$n]}" -v s="${state[$n]}" -v p="${peak[$n]}" -v ms="${ms[$n]}" \
      'BEGIN {printf "| 1 | %.0f | %.0f | 100%% | %s%% | %s MiB | %s GiB | %.1f | %.1f | 0 | 0 | - |\n",
              t, t, m, s, p, ms, ms}'
  fi
done
