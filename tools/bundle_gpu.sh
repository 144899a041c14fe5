#!/bin/bash
# Packs Bazel-built binaries for a GPU host that lacks this machine's
# libraries. Usage (from the workspace root):
#
#   tools/bundle_gpu.sh //kernels:cuda_backend_test //kernels:kernel_bench
#
# builds the targets, then writes .bundle/ with
#   payload.tar.xz   bin/<target>: the binaries; lib/: every shared library
#                    they load, as `ldd` lists it, except the C runtime
#                    (glibc, libstdc++, libgcc) and the CUDA and NCCL
#                    libraries, which the GPU host has in its own versions
#                    (xz: the kernels' fat binaries and OpenBLAS shrink ~8x)
#   run.sh           unpacks the payload once (under $TMPDIR) and runs one
#                    binary: .bundle/run.sh kernel_bench --flag=...
# The host needs a glibc and libstdc++ at least as new as the build
# machine's and CUDA libraries in /usr/local/cuda/lib64 (or on
# LD_LIBRARY_PATH).
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 //package:target [//package:target ...]" >&2
  exit 2
fi
if [[ ! -f WORKSPACE ]]; then
  echo "$0: run from the workspace root" >&2
  exit 2
fi

bazel build "$@"

out=.bundle
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"

# Libraries the GPU host provides itself.
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libutil\.|libresolv\.|libstdc\+\+\.|libgcc_s\.|libcuda\.|libcudart\.|libcublas|libcublasLt\.|libnccl\.|libnvidia-|libnvrtc|libnvJitLink)'

for label in "$@"; do
  if [[ ! "$label" =~ ^//([^:]*):(.+)$ ]]; then
    echo "$0: expected a label //package:target, got '$label'" >&2
    exit 2
  fi
  pkg="${BASH_REMATCH[1]}"
  name="${BASH_REMATCH[2]}"
  binary="bazel-bin/$pkg/$name"
  if [[ -e "$stage/bin/$name" ]]; then
    echo "$0: two targets named '$name'" >&2
    exit 2
  fi
  cp -L "$binary" "$stage/bin/$name"
  chmod u+w "$stage/bin/$name"
  # "libfoo.so.1 => /path/libfoo.so.1 (0x...)": keep the name, copy the file.
  ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r soname path; do
    if [[ "$soname" =~ $skip ]]; then continue; fi
    [[ -e "$stage/lib/$soname" ]] || cp -L "$path" "$stage/lib/$soname"
  done
done

rm -rf "$out"
mkdir -p "$out"
tar -C "$stage" -cf - bin lib | xz -T0 -6 > "$out/payload.tar.xz"

cat > "$out/run.sh" <<'RUN'
#!/bin/bash
# Runs a bundled binary: run.sh <name> [args...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sum="$(cksum < "$here/payload.tar.xz" | cut -d' ' -f1)"
root="${TMPDIR:-/tmp}/modamba-bundle-$sum"
if [[ ! -d "$root" ]]; then
  mkdir -p "$root.partial"
  xz -dc "$here/payload.tar.xz" | tar -C "$root.partial" -xf -
  mv "$root.partial" "$root"
fi
name="$1"
shift
export LD_LIBRARY_PATH="$root/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$root/bin/$name" "$@"
RUN
chmod +x "$out/run.sh"

du -sh "$out" | awk '{print "bundle: " $1 " in '"$out"'"}'
ls "$stage/bin"
