#!/usr/bin/env bash
# A user's corpus end to end: builds it as the chameleon setting
# (core/data/README.md, "Your own corpus") and trains the small model of
# tools/configs/corpus_tiny.textproto on it, on the CPU.
#
#   tools/data/train_corpus.sh --train=GLOBS (--val=GLOBS | --val_fraction=F) [WORK_DIR]
#       [more `modamba data build` flags]
#
# WORK_DIR (default /tmp/modamba-corpus) receives data/ and run/ (checkpoints).
# Relative globs are relative to the working directory.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work=/tmp/modamba-corpus
build_flags=()
for arg in "$@"; do
  case "$arg" in
    --*) build_flags+=("$arg") ;;
    *) work="$arg" ;;
  esac
done
if [ ${#build_flags[@]} -eq 0 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
mkdir -p "$work"
work="$(cd "$work" && pwd)"
# Globs and paths the user typed stay relative to where they typed them.
for i in "${!build_flags[@]}"; do
  case "${build_flags[$i]}" in
    --train=*|--val=*)
      name="${build_flags[$i]%%=*}"
      list="${build_flags[$i]#*=}"
      abs=()
      IFS=',' read -ra patterns <<< "$list"
      for p in "${patterns[@]}"; do
        case "$p" in /*) abs+=("$p") ;; *) abs+=("$PWD/$p") ;; esac
      done
      build_flags[$i]="$name=$(IFS=','; echo "${abs[*]}")"
      ;;
  esac
done
"$repo/tools/modamba.sh" data build --setting=chameleon --out="$work/data" "${build_flags[@]}"
config="$work/train.textproto"
cat "$repo/tools/configs/corpus_tiny.textproto" > "$config"
echo "dataset_dir: \"$work/data/chameleon\"" >> "$config"
"$repo/tools/modamba.sh" train --config="$config" --checkpoint_dir="$work/run"
