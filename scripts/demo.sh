#!/bin/bash
# skiff's main job end to end on a fresh Debian 12 machine: installs the packages, builds the
# guest kernel, guest-init and skiff, builds a busybox image from Debian's busybox-static, and
# runs a container from it in its own microVM.
#
#   scripts/demo.sh [COMMAND…]    default: a shell line that shows it runs in the guest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/deps.sh
scripts/build.sh
images=$(tests/images/build.sh | tail -n1)
image=oci-archive:$images/archives/busybox-latest.oci.tar
if [ $# -eq 0 ]; then
    set -- sh -c 'echo "hello from $(hostname), kernel $(uname -r), as $(id -un)"; exit 3'
fi
echo "==> skiff run --rm $image $*" >&2
status=0
target/release/skiff run --rm "$image" "$@" || status=$?
echo "==> the container exited with $status" >&2
