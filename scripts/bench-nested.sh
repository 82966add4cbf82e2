#!/bin/bash
# Part of scripts/bench.sh, run inside the nested test VM (tests/nested/): there /dev/kvm runs
# real guests, so `skiff run --rm IMAGE true` is timed with skiff's own VMM (--engine kvm) beside
# QEMU's microvm on the same KVM (--engine qemu, which picks -accel kvm there), interleaved, in
# the same VM: the ratio of the two VMMs with a real guest.
#
#   scripts/bench-nested.sh N SKIFF IMAGE
set -euo pipefail
n=$1 skiff=$2 image=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/timing.sh"

for engine in kvm qemu; do   # warm the caches, and see that both work
    "$skiff" run --rm --engine "$engine" "$image" true
done
# the qemu engine takes -accel kvm exactly when skiff's probe says guest code runs natively
if "$skiff" info | grep -q '^kvm: native'; then accel="-accel kvm"; else accel="-accel tcg"; fi
for _ in $(seq "$n"); do
    for engine in kvm qemu; do
        t0=$(now_ms)
        "$skiff" run --rm --engine "$engine" "$image" true
        t1=$(now_ms)
        echo "$t1 - $t0" | bc >> "$tmp/$engine"
    done
done
kvm=$(median "$tmp/kvm") qemu=$(median "$tmp/qemu")
echo "inside L1, skiff run --rm busybox true ($n runs each, interleaved):"
echo "  --engine kvm (skiff's VMM) median:          $kvm ms"
echo "  --engine qemu (microvm, $accel) median: $qemu ms"
echo "  ratio kvm/qemu: $(echo "scale=2; $kvm / $qemu" | bc) (aim <= 0.7)"
