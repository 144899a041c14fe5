#!/usr/bin/env bash
# `train_classifiers --loso` prints the leave-one-speaker-out table: one row
# per FSDD speaker (500 takes each, accuracies in [0, 1]) and the total.
# A quick recipe (one epoch, one augmented copy) keeps it short; the README's
# numbers come from the default recipe.
set -euo pipefail
if [[ -z "${MODAMBA_DATA_DIR:-}" ]]; then echo "MODAMBA_DATA_DIR is not set: skipped"; exit 0; fi
table=$("$1" --loso --epochs=1 --speech_copies=1 2>/dev/null)
echo "$table"
grep -q "^held out  *takes  *clean  *augmented" <<<"$table"
for speaker in george jackson lucas nicolas theo yweweler; do
  grep -Eq "^$speaker +500 +[01]\.[0-9]{4} +[01]\.[0-9]{4} " <<<"$table" || { echo "no row for $speaker"; exit 1; }
done
grep -Eq "^all +3000 +[01]\.[0-9]{4} +[01]\.[0-9]{4} " <<<"$table"
