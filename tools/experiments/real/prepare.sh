#!/usr/bin/env bash
# Builds the real world: public books, CIFAR-10 photos and many voices
# (README.md beside this script says where each source comes from).
#
#   tools/experiments/real/prepare.sh RAW_DIR OUT_DIR [make_corpus.py flags] [-- data build flags]
#
# writes OUT_DIR/corpus/{train,val}.jsonl (make_corpus.py) and builds the three
# settings from it into OUT_DIR/data/{chameleon,transfusion,trimodal}
# (`modamba data build`, the corpus path of core/data/README.md): text by a
# byte-level BPE of 8192 tokens trained on the train books, 32x32 RGB images
# as 64 VQ codes of K=512 (or continuous 4x4x3 patches), speech at 8 kHz as
# 256 k-means units. Nothing is fetched. The data tool is $MODAMBA_DATA_TOOL,
# else bazel-bin/tools/data/data_tool, else tools/modamba.sh data.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,15p' "$0" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
raw=$1 out=$2
shift 2
corpus_flags=() build_flags=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do corpus_flags+=("$1"); shift; done
[ $# -gt 0 ] && shift
build_flags=("$@")
if [ -n "${MODAMBA_DATA_TOOL:-}" ]; then
  tool=("$MODAMBA_DATA_TOOL")
elif [ -x "$repo/bazel-bin/tools/data/data_tool" ]; then
  tool=("$repo/bazel-bin/tools/data/data_tool")
else
  tool=("$repo/tools/modamba.sh" data)
fi
mkdir -p "$out"
python3 "$here/make_corpus.py" "$raw" "$out/corpus" ${corpus_flags[@]+"${corpus_flags[@]}"}
# --skip_bad: a chunk of a book that is also a held-out book's (the collection
# holds some books twice) is skipped and counted, not an error.
"${tool[@]}" build --train="$out/corpus/train.jsonl" --val="$out/corpus/val.jsonl" \
  --out="$out/data" --setting=all --seq_len=1024 --seed=1234 \
  --text_tokenizer=bpe:8192 --image_height=32 --image_width=32 --image_channels=3 \
  --speech_sample_rate=8000 --skip_bad ${build_flags[@]+"${build_flags[@]}"}
