#!/bin/bash
# Builds everything `skiff run` needs: the skiff binary, the static guest-init and the guest
# kernel (cached by content, see kernel-config/build.sh). Prints where they are.
#
#   scripts/build.sh            release build
#   PROFILE=dev scripts/build.sh  debug skiff (guest-init is always built optimized: it runs in
#                                 the guest, often under a software CPU)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

profile=${PROFILE:-release}
echo "==> building guest-init (static)" >&2
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --quiet --release -p guest-init --target x86_64-unknown-linux-gnu
echo "==> building skiff ($profile)" >&2
cargo build --quiet --profile "$profile" -p skiff
echo "==> guest kernel" >&2
kernel=$(kernel-config/build.sh | tail -n1)
dir=$( [ "$profile" = dev ] && echo debug || echo "$profile")
echo "skiff:      $PWD/target/$dir/skiff" >&2
echo "guest-init: $PWD/target/x86_64-unknown-linux-gnu/release/guest-init" >&2
echo "kernel:     $kernel" >&2
