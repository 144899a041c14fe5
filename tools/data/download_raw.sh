#!/usr/bin/env bash
# Downloads the public sources of Modamba's raw data into DIR, in the layout
# `modamba data build --raw=DIR` reads (the same as the shared data folder):
#
#   mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   MNIST (CC BY-SA 3.0)
#   fsdd/recordings/{digit}_{speaker}_{take}.flac            Free Spoken Digit Dataset (CC BY-SA 4.0)
#   cathy/recordings/arctic_aNNNN.flac, cathy/transcripts.tsv, cathy/LICENSE   (CC0 1.0)
#   tinyshakespeare/input.txt                                 (public domain)
#
# Needs curl, tar and sox (FLAC encoding, and 48 kHz stereo -> 8 kHz mono for cathy).
# Audio is re-encoded here, so FLAC bytes may differ from the shared copy; the
# samples of FSDD are the same (lossless), cathy's depend on sox's resampler.
#
# usage: tools/data/download_raw.sh DIR
set -euo pipefail

dir=${1:?usage: $0 DIR}
for tool in curl tar sox; do
  command -v "$tool" >/dev/null || { echo "$0: needs $tool" >&2; exit 1; }
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch URL FILE
  curl --fail --location --retry 3 --silent --show-error -o "$2" "$1"
}

echo "MNIST"
mkdir -p "$dir/mnist"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  fetch "https://ossci-datasets.s3.amazonaws.com/mnist/$f.gz" "$dir/mnist/$f.gz" ||
    fetch "https://storage.googleapis.com/cvdf-datasets/mnist/$f.gz" "$dir/mnist/$f.gz"
done

echo "FSDD (Jakobovski/free-spoken-digit-dataset, commit 26eb9aaf)"
fetch "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/26eb9aaf.tar.gz" "$work/fsdd.tar.gz"
tar -xzf "$work/fsdd.tar.gz" -C "$work"
mkdir -p "$dir/fsdd/recordings"
for wav in "$work"/free-spoken-digit-dataset-*/recordings/*.wav; do
  sox "$wav" "$dir/fsdd/recordings/$(basename "$wav" .wav).flac"
done

echo "cathy (rhasspy/dataset-voice-cathy, commit c51cb971), the last take of arctic_a0001..a0400"
fetch "https://github.com/rhasspy/dataset-voice-cathy/archive/c51cb971.tar.gz" "$work/cathy.tar.gz"
tar -xzf "$work/cathy.tar.gz" -C "$work"
src=$(echo "$work"/dataset-voice-cathy-*)
mkdir -p "$dir/cathy/recordings"
cp "$src/LICENSE" "$dir/cathy/LICENSE"
: > "$dir/cathy/transcripts.tsv"
for n in $(seq -w 1 400); do
  id="arctic_a0$n"
  # Takes are named {id}_{unix time}.wav: the last in sort order is the newest.
  wav=$(ls "$src"/data/"${id}"_*.wav | sort | tail -n 1)
  txt="${wav%.wav}.txt"
  [[ -f "$txt" ]] || txt=$(ls "$src"/data/"${id}"_*.txt | sort | tail -n 1)
  sox "$wav" -r 8000 -c 1 -b 16 "$dir/cathy/recordings/$id.flac"
  printf '%s\t%s\n' "$id" "$(tr -s '\r\n' ' ' < "$txt" | sed 's/ *$//')" >> "$dir/cathy/transcripts.tsv"
done

echo "tinyshakespeare (karpathy/char-rnn)"
mkdir -p "$dir/tinyshakespeare"
fetch "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt" \
  "$dir/tinyshakespeare/input.txt"
echo "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed  $dir/tinyshakespeare/input.txt" |
  sha256sum --check --quiet

echo "raw data in $dir; build with: modamba data build --raw=$dir --out=OUT"
