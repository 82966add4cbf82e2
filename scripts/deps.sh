#!/bin/bash
# Installs everything skiff needs to build, test and benchmark on Debian 12 (bookworm), with apt.
# Does nothing when every package is already there (at the pinned version where one is pinned);
# runs `apt-get update` only when a package to install is unknown to apt's current lists.
#
#   scripts/deps.sh            install what is missing
#   scripts/deps.sh --check    exit 1 and list what is missing, install nothing
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# kernel-config/VERSION holds the kernel source as `package=version`
kernel_pin=$(cat "$here/../kernel-config/VERSION")

packages=(
    # guest kernel build
    flex bison bc libelf-dev libssl-dev cpio "$kernel_pin"
    # engines and OCI tools the tests run against
    qemu-system-x86 umoci skopeo crun busybox-static debootstrap docker-registry apache2-utils
    # scripts, tests and the benchmark
    jq curl zstd tmux hyperfine
)

# installed PKG[=VERSION]: whether the package is installed (at that version, when given).
installed() {
    local name=${1%%=*} want=${1#*=} status version
    status=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$name" 2>/dev/null) || return 1
    version=${status#* }
    [ "${status%% *}" = installed ] || return 1
    [ "$name" = "$1" ] || [ "$version" = "$want" ]
}

# known PKG[=VERSION]: whether apt's lists offer the package (at that version).
known() {
    local name=${1%%=*} want=${1#*=}
    if [ "$name" = "$1" ]; then
        apt-cache policy "$name" 2>/dev/null | grep -q 'Candidate: [^(]'
    else
        apt-cache madison "$name" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$want"
    fi
}

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#packages[@]} packages present"
    exit 0
fi
if [ "${1:-}" = --check ]; then
    echo "deps: missing: ${missing[*]}"
    exit 1
fi
[ "$(id -u)" = 0 ] || { echo "deps: installing ${missing[*]} needs root" >&2; exit 1; }

apt=(apt-get -o DPkg::Lock::Timeout=600)
for p in "${missing[@]}"; do
    if ! known "$p"; then
        echo "deps: apt does not know $p yet: apt-get update"
        "${apt[@]}" update
        break
    fi
done
echo "deps: installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
