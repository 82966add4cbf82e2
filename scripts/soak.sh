#!/bin/bash
# Soak test (not part of CI): N sequential and M concurrent mixed runs of skiff — `run --rm`,
# `run -d` + `exec` + `stop` + `rm`, a failing command's exit code, and `pull` of $SOAK_PULL
# when it names an image (e.g. on a loopback registry: localhost:5000/busybox) — and every
# failure with its cause (its last lines of output).
#
#   scripts/soak.sh [N] [M]      (default 20 sequential, 50 concurrent)
#
# Uses target/release/skiff ($SKIFF_BIN overrides), the engine of $SKIFF_ENGINE (default auto),
# the busybox test image, and a private SKIFF_ROOT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-20} m=${2:-50}
skiff=${SKIFF_BIN:-${CARGO_TARGET_DIR:-target}/release/skiff}
[ -x "$skiff" ] || { echo "soak: $skiff is missing: scripts/build.sh" >&2; exit 1; }
images=$(tests/images/build.sh 2>/dev/null | tail -1)
image=oci-archive:$images/archives/busybox-latest.oci.tar
work=$(mktemp -d)
export SKIFF_ROOT=$work/root SKIFF_BOOT_TIMEOUT=${SKIFF_BOOT_TIMEOUT:-600}
trap 'for c in $("$skiff" ps -aq 2>/dev/null); do "$skiff" rm -f "$c" >/dev/null 2>&1; done; rm -rf "$work"' EXIT

# one KIND I: runs one mixed case, its output in $work/KIND-I.log; exit status is the case's
one() {
    local kind=$1 i=$2 log=$work/$1-$2.log
    case $((i % kinds)) in
    0) "$skiff" run --rm --memory 128m "$image" sh -c "echo soak $i" > "$log" 2>&1 &&
        grep -qx "soak $i" "$log" ;;
    1) local id
        id=$("$skiff" run -d --memory 128m "$image" sleep 600 2> "$log") &&
            "$skiff" exec "$id" sh -c "echo exec $i" >> "$log" 2>&1 &&
            grep -q "exec $i" "$log" &&
            "$skiff" stop -t 2 "$id" >> "$log" 2>&1 &&
            "$skiff" rm "$id" >> "$log" 2>&1 ;;
    2) local code=0
        "$skiff" run --rm --memory 128m "$image" sh -c 'exit 3' > "$log" 2>&1 || code=$?
        [ "$code" = 3 ] ;;
    3) "$skiff" pull "$SOAK_PULL" > "$log" 2>&1 ;;
    esac
}

kinds=3
[ -n "${SOAK_PULL:-}" ] && kinds=4
failures=0
report() {
    local kind=$1 i=$2
    failures=$((failures + 1))
    echo "soak: FAILED $kind case $i (kind $((i % kinds))):"
    tail -n 5 "$work/$kind-$i.log" | sed 's/^/    /'
}

echo "soak: $n sequential cases"
t0=$(date +%s)
for i in $(seq "$n"); do
    one seq "$i" || report seq "$i"
done
echo "soak: sequential done in $(($(date +%s) - t0)) s"

echo "soak: $m concurrent cases"
t0=$(date +%s)
pids=()
for i in $(seq "$m"); do
    one conc "$i" &
    pids+=("$!")
done
for i in $(seq "$m"); do
    wait "${pids[$((i - 1))]}" || report conc "$i"
done
echo "soak: concurrent done in $(($(date +%s) - t0)) s"
left=$(pgrep -fc "qemu-system.*$work" || true)
[ "$left" = 0 ] || { echo "soak: $left qemu processes left behind"; failures=$((failures + 1)); }
echo "soak: $failures failure(s) in $((n + m)) cases"
[ "$failures" = 0 ]
