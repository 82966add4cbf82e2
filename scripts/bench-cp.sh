#!/bin/bash
# Copy benchmark: `skiff cp` of a 256 MiB file into a running container against the same bytes
# piped through `skiff exec -i CONTAINER sh -c 'cat > /f'`, interleaved, in the same run; the
# copied file's sha256 is checked once.
#
#   scripts/bench-cp.sh [ROUNDS]     (default 3; prints min/median/p90 of each and the ratio)
#
# Uses target/release/skiff ($SKIFF_BIN overrides) and the busybox test image.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-3}
skiff=${SKIFF_BIN:-${CARGO_TARGET_DIR:-target}/release/skiff}
[ -x "$skiff" ] || { echo "bench-cp: $skiff is missing: cargo build --release -p skiff" >&2; exit 1; }
images=$(tests/images/build.sh 2>/dev/null | tail -1)

work=$(mktemp -d)
export SKIFF_ROOT=$work/root
cleanup() { [ -n "${cid:-}" ] && "$skiff" rm -f "$cid" >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
. scripts/timing.sh

head -c 256M /dev/urandom > "$work/data"
cid=$("$skiff" run -d --memory 512m "oci:$images/oci/busybox:latest" sleep 3600)
for i in $(seq "$rounds"); do
    t0=$(now_ms); "$skiff" cp "$work/data" "$cid:/f"; t1=$(now_ms)
    echo "$t1 - $t0" | bc >> "$work/cp"
    if [ "$i" = 1 ]; then
        want=$(sha256sum < "$work/data" | cut -d' ' -f1)
        got=$("$skiff" exec "$cid" sha256sum /f | cut -d' ' -f1)
        [ "$want" = "$got" ] || { echo "bench-cp: the copy differs ($got, not $want)" >&2; exit 1; }
    fi
    "$skiff" exec "$cid" rm -f /f
    t0=$(now_ms); "$skiff" exec -i "$cid" sh -c 'cat > /f' < "$work/data"; t1=$(now_ms)
    echo "$t1 - $t0" | bc >> "$work/cat"
    "$skiff" exec "$cid" rm -f /f
done
echo "skiff cp, 256 MiB in (min/median/p90):        $(stats "$work/cp")"
echo "  reference, skiff exec -i … cat > /f:          $(stats "$work/cat")"
echo "  ratio exec-cat/cp (median): $(echo "scale=2; $(median "$work/cat") / $(median "$work/cp")" | bc)x (aim >= 1)"
