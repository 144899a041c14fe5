#!/usr/bin/env bash
# Installs the Debian 12 packages Modamba builds and tests with. Idempotent:
# installs only what is missing; uses sudo when not root.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap bazel-rules-java g++ git python3
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgoogle-glog-dev libgflags-dev libgtest-dev libgmock-dev
  libgloo-dev libopenblas-dev libfftw3-dev libsndfile1-dev libsqlite3-dev
  libboost-dev zlib1g-dev libpng-dev libssl-dev nlohmann-json3-dev
  liblapacke-dev
  libjpeg62-turbo-dev libsoxr-dev  # JPEG input images, audio resampling (core/data)
  libzstd-dev       # zstd-compressed corpus files (core/data/corpus.cc)
  chromium openssl  # the dashboard test (headless) and the TLS test's certificates
  libcairo2-dev libfontconfig-dev fonts-dejavu-core  # PNG charts and their text (tools/compare/plot.h)
  xz-utils          # GPU bundles (tools/bundle_gpu.sh)
  python3-torch     # opens `modamba export` files in PyTorch (tools/export/export_test)
  libicu-dev        # Unicode classes of the BPE pre-tokenizer (core/data/text_tokenizer.cc)
  slurmctld slurmd slurm-client munge  # Slurm (slurm-wlm's parts) for the Slurm launcher's test (tests/slurm_test.cc)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
