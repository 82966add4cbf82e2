#!/bin/bash
# Builds skiff's guest kernel (vmlinux with a PVH entry) from the pinned Debian source package and
# the config fragment beside this script, applied on `make allnoconfig`.
#
#   kernel-config/build.sh [--l1]          build if needed, print the path of vmlinux on the last line
#   kernel-config/build.sh [--l1] --key    print the cache key only
#
# --l1 builds the L1 test kernel instead: the same source with skiff.config and then l1.config
# (KVM, 9p), for the nested test VM of tests/nested/.
#
# The output is cached outside the repository in $SKIFF_CACHE (default ~/.cache/skiff) under
# kernel/<key>/, where <key> is the sha256 of VERSION and the fragments: skiff computes the same
# key to find its kernel, so a changed fragment never meets a stale build.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}
fragments=("$here/skiff.config")
if [ "${1:-}" = --l1 ]; then
    fragments+=("$here/l1.config")
    shift
fi
key=$(cat "$here/VERSION" "${fragments[@]}" | sha256sum | cut -c1-16)
[ "${1:-}" = --key ] && { echo "$key"; exit 0; }

out=$cache/kernel/$key
if [ -s "$out/vmlinux" ]; then
    echo "kernel: cached $out/vmlinux" >&2
    echo "$out/vmlinux"
    exit 0
fi

pin=$(cat "$here/VERSION")
pkg=${pin%%=*}
want=${pin#*=}
have=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)
if [ "$have" != "$want" ]; then
    echo "error: kernel source $pkg $want is not installed (have: ${have:-none}); run: apt-get install $pkg=$want" >&2
    exit 1
fi
tarball=/usr/src/$pkg.tar.xz

work=$cache/kernel/build-$key
rm -rf "$work"
mkdir -p "$work"
echo "kernel: unpacking $tarball" >&2
tar -C "$work" -xf "$tarball"
src=$work/$pkg
log=$work/build.log
cat "${fragments[@]}" > "$work/fragment"
echo "kernel: configuring (allnoconfig + $(grep -c '^CONFIG_' "$work/fragment") options)" >&2
make -C "$src" ARCH=x86_64 KCONFIG_ALLCONFIG="$work/fragment" allnoconfig >"$log" 2>&1

jobs=$(nproc)
echo "kernel: building vmlinux with $jobs jobs (log: $log)" >&2
start=$(date +%s)
# Progress: one line per 200 compiled objects, with the elapsed time.
if ! make -C "$src" ARCH=x86_64 -j"$jobs" vmlinux 2>&1 | tee -a "$log" |
    awk -v start="$start" '/^  CC /{n++; if (n % 200 == 0) { "date +%s" | getline now; close("date +%s");
        printf "kernel: %d objects compiled, %ds\n", n, now - start > "/dev/stderr" } }'; then
    echo "error: kernel build failed, see $log" >&2
    exit 1
fi
[ -s "$src/vmlinux" ] || { echo "error: kernel build produced no vmlinux, see $log" >&2; exit 1; }

tmp=$cache/kernel/.tmp-$key
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$src/vmlinux" "$tmp/vmlinux"
cp "$src/.config" "$tmp/config"
cp "$work/fragment" "$tmp/fragment"
rm -rf "$out"
mv "$tmp" "$out"
rm -rf "$work"
echo "kernel: built in $(( $(date +%s) - start ))s: $out/vmlinux" >&2
echo "$out/vmlinux"
