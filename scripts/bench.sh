#!/bin/bash
# skiff's benchmark: every figure is printed beside its reference, measured in the same run,
# as a ratio. Absolute times on a shared machine vary 2–5×; the ratios are what to compare.
# Where this host's KVM emulates guest code, the kvm engine's end-to-end figure comes from inside
# the nested test VM (section 7).
#
#   scripts/bench.sh [N]     N runs per end-to-end figure (default 20)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
n=${1:-20}

scripts/build.sh
export SKIFF_GUEST_INIT=$PWD/target/x86_64-unknown-linux-gnu/release/guest-init
images=$(tests/images/build.sh | tail -n1)
skiff=$PWD/target/release/skiff

. scripts/timing.sh

echo
echo "== 1. VMM start → first guest instruction, and VMM memory (tiny guest, KVM)"
cargo run --quiet --release -p skiff-vmm --example tiny_boot -- --compare "$n"

echo
echo "== 2. vsock device model throughput, 1 GiB guest → host, vs a host pipe"
cargo test --quiet --release -p skiff-vmm --lib vsock_throughput -- --ignored --nocapture 2>&1 |
    grep -v -e '^running' -e '^test result' -e '^$' -e '^test '

echo
echo "== 2b. virtio-net device model throughput, 1 GiB of frames guest → backend socket, vs a socket pair alone"
cargo test --quiet --release -p skiff-vmm --lib net_throughput -- --ignored --nocapture 2>&1 |
    grep -v -e '^running' -e '^test result' -e '^$' -e '^test '

echo
echo "== 2c. virtio-blk device model throughput, 1 GiB of 256 KiB reads from a file in the page cache, vs pread alone"
cargo test --quiet --release -p skiff-vmm --lib block_throughput -- --ignored --nocapture 2>&1 |
    grep -v -e '^running' -e '^test result' -e '^$' -e '^test '

echo
echo "== 3. guest-init container setup (spec in → exec), natively, vs crun run"
cargo test --quiet --release -p guest-init --test native -- --ignored bench_container_setup --nocapture 2>&1 |
    grep -e BENCH -e ratio || true

echo
echo "== 4. skiff run --rm busybox true, end to end ($n runs, engine ${SKIFF_ENGINE:-auto})"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
image=oci:$images/oci/busybox:latest
"$skiff" run --rm "$image" true 2>/dev/null  # warm the initramfs and probe caches
for _ in $(seq "$n"); do
    t0=$(now_ms)
    SKIFF_LOG=skiff::launch=debug "$skiff" run --rm "$image" true 2>"$tmp/log" >/dev/null
    t1=$(now_ms)
    echo "$t1 - $t0" | bc >> "$tmp/total"
    # log lines start with the time since skiff started, in seconds
    awk '/VM process launched/ {sub(/s$/, "", $1); print $1 * 1000}' "$tmp/log" >> "$tmp/host"
done
for _ in $(seq "$n"); do
    t0=$(now_ms); /bin/true; t1=$(now_ms)
    echo "$t1 - $t0" | bc >> "$tmp/exec"
done
echo "skiff run (min/median/p90):            $(stats "$tmp/total")"
echo "  host side, CLI start → VM launched:  $(stats "$tmp/host")"
echo "  reference, host exec of true:        $(stats "$tmp/exec")"

echo
echo "== 4a. docker's container defaults (capabilities, seccomp, masks) on vs off (--privileged): run --rm busybox true ($n runs each, interleaved)"
for _ in $(seq "$n"); do
    for mode in on off; do
        flags=(); [ $mode = off ] && flags=(--privileged)
        t0=$(now_ms); "$skiff" run --rm "${flags[@]}" "$image" true >/dev/null 2>&1; t1=$(now_ms)
        echo "$t1 - $t0" | bc >> "$tmp/defaults-$mode"
    done
done
echo "defaults on (min/median/p90):  $(stats "$tmp/defaults-on")"
echo "defaults off (min/median/p90): $(stats "$tmp/defaults-off")"
echo "  ratio on/off (median): $(echo "scale=3; $(median "$tmp/defaults-on") / $(median "$tmp/defaults-off")" | bc)x (aim <= 1.05)"

echo
echo "== 4b. image disks: repeat start of debian vs busybox, and their guest memory ($n runs each, interleaved)"
debian=oci:$images/oci/debian:latest
"$skiff" run --rm "$debian" true 2>/dev/null  # builds (or finds) the debian image disk
for _ in $(seq "$n"); do
    for img in busybox debian; do
        ref=$image; [ $img = debian ] && ref=$debian
        t0=$(now_ms); "$skiff" run --rm "$ref" true >/dev/null 2>&1; t1=$(now_ms)
        echo "$t1 - $t0" | bc >> "$tmp/start-$img"
    done
done
echo "run --rm debian true (min/median/p90):  $(stats "$tmp/start-debian")"
echo "run --rm busybox true (min/median/p90): $(stats "$tmp/start-busybox")"
echo "  ratio debian/busybox (median): $(echo "scale=2; $(median "$tmp/start-debian") / $(median "$tmp/start-busybox")" | bc)x (aim <= 1.1)"
SKIFF_TEST_IMAGES=$images cargo test --quiet --release -p skiff-image --lib bench_disk_builder_memory -- --ignored --nocapture 2>&1 |
    grep 'image disk of'
# qemu's RSS (guest memory included) while each container sleeps, measured alike
mem_root=$tmp/mem-root
for img in busybox debian; do
    ref=$image; [ $img = debian ] && ref=$debian
    id=$(SKIFF_ROOT=$mem_root "$skiff" run -d --engine qemu "$ref" sleep 60)
    sleep 3
    vm=$(jq -r .vm_dir "$mem_root/containers/$id/state.json")
    pgrep -f "qemu-system.*$vm" | xargs -r -I{} awk '/VmRSS/ {print $2}' /proc/{}/status | head -1 > "$tmp/rss-$img"
    SKIFF_ROOT=$mem_root "$skiff" rm -f "$id" >/dev/null
done
echo "qemu RSS with the container sleeping: debian $(cat "$tmp/rss-debian") KiB, busybox $(cat "$tmp/rss-busybox") KiB, ratio $(echo "scale=2; $(cat "$tmp/rss-debian") / $(cat "$tmp/rss-busybox")" | bc)x (aim within 10 %)"

echo
echo "== 5. skiff exec true into a running container vs skiff run --rm true; idle memory"
cargo test --quiet --release -p skiff-tests --test lifecycle bench_exec_vs_run_and_idle_memory -- --nocapture 2>&1 |
    grep -e 'exec true' -e 'idle detached'

echo
echo "== 5b. published port (-p): first byte after run -d, 1 GiB each way through the relay vs the host's loopback"
cargo test --quiet --release -p skiff-tests --test network bench_published_port -- --ignored --nocapture 2>&1 |
    grep -e 'published port' -e '1 GiB' -e 'per GiB'

echo
echo "== 5c. shared directories (-v over virtio-fs): small files and a large read vs the guest's tmpfs; host edit -> container watcher"
cargo test --quiet --release -p skiff-tests --test volumes bench_shared_directories -- --ignored --nocapture 2>&1 |
    grep -e 'small files' -e 'sequential read' -e 'container watcher'

echo
echo "== 5d. skiff cp of 256 MiB into a running container vs the same bytes through skiff exec -i … cat"
SKIFF_BIN=$skiff scripts/bench-cp.sh 3

echo
echo "== 6. cold pull of the Debian image from a loopback registry vs skopeo copy"
SKIFF_BIN=$skiff scripts/bench-pull.sh 5

echo
echo "== 7. inside the nested test VM (real KVM there): skiff's VMM vs QEMU microvm, skiff run --rm busybox true"
cargo build --quiet --release -p skiff-tests --bin nested-vm
# (L1's kernel messages on its console, e.g. its KVM's about the qemu engine's guests, dropped)
target/release/nested-vm -- scripts/bench-nested.sh "$n" "$skiff" "$image" |
    grep -v -e '^nested-vm: L1: up' -e '^\[ *[0-9.]*\] '
