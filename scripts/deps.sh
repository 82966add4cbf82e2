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
# virtiofsd (not packaged in Debian 12) is built from its published release into skiff's cache,
# keyed by this version; skiff looks for it there
virtiofsd_version=$(cat "$here/virtiofsd.version")
virtiofsd_root=${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}/virtiofsd/$virtiofsd_version

packages=(
    # toolchain basics (the Rust toolchain itself comes from rustup, below)
    build-essential ca-certificates curl xz-utils procps
    # guest kernel build
    flex bison bc libelf-dev libssl-dev cpio "$kernel_pin"
    # engines and OCI tools the tests run against
    qemu-system-x86 umoci skopeo crun busybox-static debootstrap docker-registry apache2-utils
    # the network backend, and the DNS server of the network tests
    passt dnsmasq-base
    # image disks: the writable layer's ext4 (mke2fs), fsck.erofs for the EROFS writer's tests
    e2fsprogs erofs-utils
    # virtiofsd's build (shared directories)
    libseccomp-dev libcap-ng-dev pkg-config
    # scripts, tests and the benchmark
    jq zstd tmux hyperfine time bc
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

# The Rust toolchain, through rustup when the machine has none.
rust() {
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    if command -v cargo >/dev/null && cargo clippy --version >/dev/null 2>&1 &&
        cargo fmt --version >/dev/null 2>&1; then
        return
    fi
    if command -v rustup >/dev/null; then
        echo "deps: adding clippy and rustfmt with rustup"
        rustup component add clippy rustfmt
    else
        echo "deps: no Rust toolchain: installing one with rustup (https://rustup.rs)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --profile minimal --component clippy,rustfmt
    fi
}

# virtiofsd at the pinned version in the cache, built once with cargo (about 2 minutes).
virtiofsd() {
    [ -x "$virtiofsd_root/bin/virtiofsd" ] && return
    echo "deps: building virtiofsd $virtiofsd_version into $virtiofsd_root (once)"
    rm -rf "$virtiofsd_root.tmp"
    cargo install --quiet --locked virtiofsd --version "$virtiofsd_version" --root "$virtiofsd_root.tmp"
    rm -rf "$virtiofsd_root"
    mv "$virtiofsd_root.tmp" "$virtiofsd_root"
}

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#packages[@]} packages present"
    if [ "${1:-}" = --check ]; then
        [ -x "$virtiofsd_root/bin/virtiofsd" ] || { echo "deps: missing: virtiofsd $virtiofsd_version"; exit 1; }
        exit 0
    fi
    rust
    virtiofsd
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
rust
virtiofsd
