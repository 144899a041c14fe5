#!/bin/bash
# Packs Bazel-built binaries for a GPU host that lacks this machine's
# libraries. Usage (from the workspace root):
#
#   tools/bundle_gpu.sh //kernels:cuda_backend_test //kernels:kernel_bench
#
# builds the targets, then writes .bundle/ with
#   bin/<target>   the binaries
#   lib/           every shared library they load, as `ldd` lists it, except
#                  the C runtime (glibc, libstdc++, libgcc) and the CUDA and
#                  NCCL libraries, which the GPU host has in its own versions
#   run.sh         runs one of them: .bundle/run.sh kernel_bench --flag=...
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
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"

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
  if [[ -e "$out/bin/$name" ]]; then
    echo "$0: two targets named '$name'" >&2
    exit 2
  fi
  cp -L "$binary" "$out/bin/$name"
  chmod u+w "$out/bin/$name"
  # "libfoo.so.1 => /path/libfoo.so.1 (0x...)": keep the name, copy the file.
  ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r soname path; do
    if [[ "$soname" =~ $skip ]]; then continue; fi
    [[ -e "$out/lib/$soname" ]] || cp -L "$path" "$out/lib/$soname"
  done
done

cat > "$out/run.sh" <<'RUN'
#!/bin/bash
# Runs a bundled binary: run.sh <name> [args...]
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="$1"
shift
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/bin/$name" "$@"
RUN
chmod +x "$out/run.sh"

du -sh "$out" | awk '{print "bundle: " $1 " in '"$out"'"}'
ls "$out/bin"
