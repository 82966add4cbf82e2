#!/bin/bash
# The project's test command (CI runs this through .ci/run): installs what the tests need,
# builds the guest kernel, guest-init and the test images (all cached outside the repository),
# checks formatting and lints, then runs every test: the full stack under QEMU, and with skiff's
# own VMM (inside the nested test VM when this host's KVM emulates guest code).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
PROFILE=dev scripts/build.sh
echo "==> test images" >&2
tests/images/build.sh >/dev/null
echo "==> L1 test kernel (the nested test VM's)" >&2
kernel-config/build.sh --l1 >/dev/null

echo "==> cargo fmt --check" >&2
cargo fmt --all -- --check
echo "==> cargo clippy" >&2
cargo clippy --quiet --workspace --all-targets -- -D warnings
echo "==> cargo test" >&2
export SKIFF_GUEST_INIT=$PWD/target/x86_64-unknown-linux-gnu/release/guest-init
# the VMM's own tests speak to virtiofsd too (skiff finds the cached build by itself)
export SKIFF_VIRTIOFSD=${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}/virtiofsd/$(cat scripts/virtiofsd.version)/bin/virtiofsd
cargo test --workspace -- --test-threads=2
echo "==> the kvm engine end to end (inside the nested test VM where guest code is emulated)" >&2
tests/full-stack-kvm
