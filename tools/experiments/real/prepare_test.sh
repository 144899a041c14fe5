#!/usr/bin/env bash
# prepare.sh on a slice of each source (testdata/: a Gutenberg book with its
# header and footer in CRLF lines, an index without markers, three 32x32 JPEGs,
# GCompris OGG clips with their LICENSE credits, FSDD WAVs): the corpus holds
# what each rule says, and all three settings build from it.
#
#   prepare_test.sh DATA_TOOL PREPARE_SH
set -euo pipefail
tool=$(realpath "$1") prepare=$(realpath "$2")
testdata=$(dirname "$prepare")/testdata
work=${TEST_TMPDIR:-$(mktemp -d)}/real
rm -rf "$work"
mkdir -p "$work"
cp -rL "$testdata" "$work/raw"
chmod -R u+w "$work/raw"
# Real folders are named "Author, Name/Title.txt".
mv "$work/raw/gutenberg/Doe" "$work/raw/gutenberg/Doe, Jane"
mv "$work/raw/gutenberg/Doe, Jane/A_Small_Book.txt" "$work/raw/gutenberg/Doe, Jane/A Small Book.txt"

fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {  # file pattern: the file has a line matching the pattern
  grep -qF -- "$2" "$1" || fail "$1 has no line with $2"
}
expect_not() {
  ! grep -qF -- "$2" "$1" || fail "$1 has a line with $2"
}

MODAMBA_DATA_TOOL=$tool "$prepare" "$work/raw" "$work/out" --text_mb=1 --val_text_mb=1 \
  --chunk_bytes=200 -- --image_codes=16 --speech_units=8 --image_kmeans_patches=128 \
  --speech_kmeans_frames=200 --threads=1 > "$work/log.txt" 2>&1 || { cat "$work/log.txt"; fail "prepare.sh"; }
train=$work/out/corpus/train.jsonl val=$work/out/corpus/val.jsonl stats=$work/out/corpus/corpus.json

# Text: the book without its header and footer, in chunks of paragraphs; the index skipped.
expect "$train" 'The first paragraph of the small book tells of a lighthouse keeper who counted'
expect "$train" 'the lamp was lit, and the sea was calm.'
for boilerplate in 'The Project Gutenberg EBook' 'START OF THIS' 'END OF THIS' 'license footer' 'index of authors'; do
  expect_not "$train" "$boilerplate"
done
[ "$(grep -c 'paragraph' "$train")" -ge 2 ] || fail "the book is one chunk at --chunk_bytes=200"
expect "$stats" '"books_without_markers": 1'
# Images: captioned by class, split by the CIFAR folder.
expect "$train" '"a photo of a frog"'
expect "$train" 'cifar10/train/cat/0000.jpg'
expect "$val" 'cifar10/test/cat/0000.jpg'
expect_not "$train" 'cifar10/test/'
# Speech: English words and colours transcribed, other languages audio only,
# FSDD by its digit; split by speaker (Julia Wycherley and theo held out).
expect "$train" '"text": "apple"'
expect "$train" '[{"audio": "'"$work"'/raw/gcompris/fr/words/apple.ogg"}]'
expect "$train" '"text": "three"'
expect "$val" '"text": "red"'
expect "$val" '"text": "seven"'
expect_not "$train" 'theo'
expect_not "$train" 'en/colors/red.ogg'
expect "$stats" '"train_speaker_count": 3'

# The three settings: each split holds each of its modalities.
for setting in chameleon transfusion trimodal; do
  manifest=$work/out/data/$setting/manifest.json
  [ -f "$manifest" ] || fail "no $manifest"
done
"$tool" inspect "$work/out/data/trimodal" > "$work/inspect.txt" 2>&1 || { cat "$work/inspect.txt"; fail inspect; }
expect "$work/inspect.txt" 'speech'
echo "prepare_test: PASS"
