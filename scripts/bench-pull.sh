#!/bin/bash
# Pull benchmark: a cold `skiff pull` of the Debian test image from docker-registry on loopback,
# against `skopeo copy` of the same image into an OCI layout, in the same run; the first start's
# extra work, writing the pulled image's EROFS disk, against that pull; and skiff's peak memory
# for a 1 MB image and for the 51 MB one (it streams layers, so it should barely differ).
#
#   scripts/bench-pull.sh [ROUNDS]     (default 5; prints min/median per tool and the ratio)
#
# Uses target/release/skiff ($SKIFF_BIN overrides). Needs docker-registry, skopeo and GNU time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-5}
skiff=${SKIFF_BIN:-${CARGO_TARGET_DIR:-target}/release/skiff}
[ -x "$skiff" ] || { echo "bench-pull: $skiff is missing: cargo build --release -p skiff" >&2; exit 1; }
images=$(tests/images/build.sh 2>/dev/null | tail -1)

work=$(mktemp -d)
port=$((20000 + RANDOM % 30000))
cat > "$work/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/config.yml" >/dev/null 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null; wait $registry_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
for tag in debian:latest busybox:latest; do
    skopeo copy --quiet --dest-tls-verify=false "oci:$images/oci/$tag" "docker://127.0.0.1:$port/$tag"
done

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f\n", b - a}'; }
stats() { sort -n | awk '{v[NR]=$1} END {printf "%.3f %.3f\n", v[1], v[int((NR+1)/2)]}'; }
: > "$work/skiff.t"; : > "$work/skopeo.t"
for i in $(seq "$rounds"); do
    rm -rf "$work/root" "$work/layout"
    t0=$(now); SKIFF_ROOT=$work/root "$skiff" pull -q "127.0.0.1:$port/debian:latest" >/dev/null; t1=$(now)
    elapsed "$t0" "$t1" >> "$work/skiff.t"
    t0=$(now); skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$port/debian:latest" "oci:$work/layout:latest"; t1=$(now)
    elapsed "$t0" "$t1" >> "$work/skopeo.t"
done
# the image disk of what was pulled, written by the first `run` (its log says how long it took)
: > "$work/disk.t"
for i in $(seq "$rounds"); do
    rm -rf "$work/root/images/disks"
    SKIFF_ROOT=$work/root SKIFF_LOG=skiff_image=info "$skiff" run --rm "127.0.0.1:$port/debian:latest" true 2>&1 >/dev/null |
        sed -n 's/.*built the image disk.*elapsed=\([0-9.]*\)\(m\?s\).*/\1 \2/p' |
        awk '{print ($2 == "ms") ? $1 / 1000 : $1}' >> "$work/disk.t"
done
[ -s "$work/disk.t" ] || { echo "bench-pull: no image disk build was logged" >&2; exit 1; }
read -r disk_min disk_med < <(stats < "$work/disk.t")
read -r skiff_min skiff_med < <(stats < "$work/skiff.t")
read -r skopeo_min skopeo_med < <(stats < "$work/skopeo.t")
echo "cold pull of debian:latest (51 MB), $rounds rounds, min / median seconds"
echo "  skiff pull   $skiff_min / $skiff_med"
echo "  skopeo copy  $skopeo_min / $skopeo_med"
echo "  ratio (median) $(awk -v a="$skiff_med" -v b="$skopeo_med" 'BEGIN {printf "%.2f", a / b}')x"
echo "first start: writing its EROFS image disk $disk_min / $disk_med s, against skiff's pull: $(awk -v a="$disk_med" -v b="$skiff_med" 'BEGIN {printf "%.2f", a / b}')x (aim <= 0.5)"

rss() {
    rm -rf "$work/root"
    SKIFF_ROOT=$work/root /usr/bin/time -f %M "$skiff" pull -q "127.0.0.1:$port/$1" 2>&1 >/dev/null | tail -1
}
echo "skiff peak RSS: busybox (1 MB) $(rss busybox:latest) KiB, debian (51 MB) $(rss debian:latest) KiB"
