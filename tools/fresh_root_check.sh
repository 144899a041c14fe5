#!/usr/bin/env bash
# Proves the README's two commands on a clean Debian 12: builds a fresh root
# with debootstrap from the package registry this machine's apt uses, clones
# the repository's HEAD into it and runs `tools/modamba.sh demo` and
# `tools/test.sh` there from nothing (no packages, no Bazel cache). Prints the
# time to the demo's first training step and the test counts, the figures the
# README keeps. Needs root. The CUDA toolkit is part of the machine, not of
# Debian: /usr/local/cuda is bind-mounted read-only when present, as is the
# raw data (--data, default $MODAMBA_DATA_DIR, else ../shared/data).
#
#   tools/fresh_root_check.sh [--root=DIR] [--data=DIR] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
root=/var/tmp/modamba-fresh-root
data="${MODAMBA_DATA_DIR:-$repo/../shared/data}"
keep=0
for a in "$@"; do
  case "$a" in
    --root=*) root="${a#--root=}" ;;
    --data=*) data="${a#--data=}" ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--root=DIR] [--data=DIR] [--keep]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "$0: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }
[ -d "$data" ] || { echo "$0: no raw data at $data (--data=DIR)" >&2; exit 2; }
data="$(cd "$data" && pwd)"

# The Debian mirror this machine's apt reads (deb822 .sources or sources.list).
mirror="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)"
[ -n "$mirror" ] || mirror="$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
[ -n "$mirror" ] || { echo "$0: no Debian mirror found in /etc/apt" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }

mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
  [ "$keep" -eq 1 ] || rm -rf --one-file-system "$root"
}
trap cleanup EXIT
bind() {  # bind SRC DST [ro]
  mkdir -p "$2"
  mount --rbind "$1" "$2"
  mounts+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

rm -rf --one-file-system "$root"
t0=$(date +%s)
echo "fresh root: debootstrap bookworm from the machine's mirror into $root"
debootstrap bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
  { tail -20 "$root.debootstrap.log" >&2; exit 1; }
# The same suites as this machine (updates and security), nothing installed beyond the base.
cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null && rm -f "$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
[ -d /usr/local/cuda ] && bind "$(readlink -f /usr/local/cuda)" "$root/usr/local/cuda" ro
bind "$data" "$root/srv/shared/data" ro
git clone -q "$repo" "$root/srv/modamba"
t1=$(date +%s)
echo "fresh root ready in $((t1 - t0)) s; running the README's two commands there"

run() {  # run LOG COMMAND: in the root, as a new user's login shell would, timestamping each line
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM=dumb /bin/bash -c "cd /srv/modamba && $2" 2>&1 |
    while IFS= read -r line; do printf '%s %s\n' "$(date +%s)" "$line"; done >"$1"
  return "${PIPESTATUS[0]}"
}
demo_log="$root.demo.log" test_log="$root.test.log"
s=$(date +%s)
demo_rc=0; run "$demo_log" "tools/modamba.sh demo" || demo_rc=$?
e=$(date +%s)
first_step=$(awk '/step [0-9]+\/[0-9]+/ {print $1; exit}' "$demo_log")
run /dev/null "bazel-bin/tools/modamba coordinator stop" || true
s2=$(date +%s)
test_rc=0; run "$test_log" "tools/test.sh" || test_rc=$?
e2=$(date +%s)
counts=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$test_log" | tail -1 | cut -d' ' -f2-)

echo "demo: exit $demo_rc after $((e - s)) s; first training step after $(( ${first_step:-$e} - s )) s"
echo "      $(grep -E '^[0-9]+ job-[0-9]+ [A-Z]+$' "$demo_log" | tail -1 | cut -d' ' -f2-)"
echo "test: exit $test_rc after $((e2 - s2)) s: ${counts:-no count line}"
echo "logs: $demo_log, $test_log"
[ "$demo_rc" -eq 0 ] && [ "$test_rc" -eq 0 ]
