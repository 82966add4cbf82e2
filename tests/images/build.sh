#!/bin/bash
# Builds skiff's test images from Debian packages (busybox-static, debootstrap) with umoci and
# skopeo, and caches them outside the repository.
#
#   tests/images/build.sh          build if needed; the last line of stdout is the image directory
#   tests/images/build.sh --key    print the cache key only
#
# Output: $SKIFF_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/skiff) /test-images/<key>/, where <key>
# is the sha256 of this script and of the versions of the tools and packages that shape the images.
# A finished directory is never modified: a build happens in a scratch directory that is renamed
# into place at the end, so a second run returns at once. What the directory holds is described in
# tests/images/README.md (and in CONTENTS inside it). Progress goes to stderr, tool output to a log.
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}
root=$cache/test-images

say() { printf 'test-images: %s\n' "$*" >&2; }
die() { printf 'test-images: error: %s\n' "$*" >&2; exit 1; }

for tool in umoci skopeo debootstrap jq busybox sha256sum dpkg-query; do
    command -v "$tool" >/dev/null || die "$tool is not installed; run scripts/deps.sh"
done
[ -x /bin/busybox ] || die "/bin/busybox (busybox-static) is missing; run scripts/deps.sh"

# The Debian mirror apt uses on this machine (deb822 sources first, then sources.list).
mirror() {
    local m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $0 !~ /security/ {
                 for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=$(mirror)
SUITE=bookworm

versions() { dpkg-query -W -f='${Package}=${Version}\n' busybox-static umoci skopeo debootstrap 2>/dev/null || true; }
key=$( { cat "${BASH_SOURCE[0]}"; versions; echo "$MIRROR $SUITE"; } | sha256sum | cut -c1-16)
[ "${1:-}" = --key ] && { echo "$key"; exit 0; }

out=$root/$key
if [ -f "$out/CONTENTS" ]; then
    say "cached in $out"
    echo "$out"
    exit 0
fi

mkdir -p "$root"
exec 9>"$root/.lock"
if ! flock -n 9; then
    say "waiting for another build of the test images (lock $root/.lock)"
    flock 9
fi
if [ -f "$out/CONTENTS" ]; then   # another run finished it while we waited
    say "cached in $out"
    echo "$out"
    exit 0
fi

work=$root/.build-$key
log=$root/build-$key.log
rm -rf "$work"
mkdir -p "$work"
: > "$log"
# fail MESSAGE: show the end of the log, then stop.
fail() {
    tail -n 15 "$log" | sed 's/^/  | /' >&2
    die "$1; full log: $log"
}
trap 'fail "build failed at line $LINENO: $BASH_COMMAND"' ERR
say "building in $work (log: $log)"

# run CMD...: log the command and its output; a failure trips the ERR trap.
run() {
    printf '$ %s\n' "$*" >> "$log"
    "$@" >> "$log" 2>&1 || fail "build failed: $*"
}

# --- the base rootfs of busybox -----------------------------------------------------------------
# Besides busybox and its applets it holds /usr/share/skiff-test, which the 3layer variant edits.
make_busybox_rootfs() {
    local r=$1
    mkdir -p "$r"/{bin,etc,proc,sys,dev,root,home/app,usr/share/skiff-test/doomed-dir,usr/share/skiff-test/opaque-dir}
    install -d -m 1777 "$r/tmp"
    cp /bin/busybox "$r/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$r/bin/$applet"
    done
    cat > "$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
EOF
    cat > "$r/etc/group" <<'EOF'
root:x:0:
app:x:1000:
extra:x:2000:app
EOF
    chown 1000:1000 "$r/home/app"
    chmod 700 "$r/root"
    echo "base layer" > "$r/usr/share/skiff-test/doomed-file"
    echo "base layer" > "$r/usr/share/skiff-test/doomed-dir/inside"
    echo "base layer" > "$r/usr/share/skiff-test/opaque-dir/old-1"
    echo "base layer" > "$r/usr/share/skiff-test/opaque-dir/old-2"
    echo "base layer" > "$r/usr/share/skiff-test/kept"
}

# new_image LAYOUT TAG ROOTFS: a one-layer image of ROOTFS.
new_image() {
    local layout=$1 tag=$2 rootfs=$3 bundle=$work/bundle
    [ -d "$layout" ] || run umoci init --layout "$layout"
    run umoci new --image "$layout:$tag"
    run umoci unpack --image "$layout:$tag" "$bundle"
    cp -a "$rootfs/." "$bundle/rootfs/"
    run umoci repack --image "$layout:$tag" "$bundle"
    rm -rf "$bundle"
}

# edit_layer LAYOUT TAG FUNCTION: adds a layer to TAG, made by umoci repack after FUNCTION changed
# the unpacked rootfs (deletions become .wh. whiteouts).
edit_layer() {
    local layout=$1 tag=$2 fn=$3 bundle=$work/bundle
    run umoci unpack --image "$layout:$tag" "$bundle"
    "$fn" "$bundle/rootfs"
    run umoci repack --image "$layout:$tag" "$bundle"
    rm -rf "$bundle"
}

# hand_layer LAYOUT FROM TO DIR: TO = FROM plus a layer packed by tar from DIR (umoci never writes
# opaque whiteouts itself).
hand_layer() {
    local layout=$1 from=$2 to=$3 dir=$4
    # shellcheck disable=SC2046 # top-level names, no spaces
    run tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=2024-01-01T00:00:00Z \
        -C "$dir" -cf "$work/hand-layer.tar" $(ls -A "$dir")
    run umoci raw add-layer --image "$layout:$from" --tag "$to" \
        --history.created_by "hand-made layer: opaque whiteout, hardlink, symlink" "$work/hand-layer.tar"
    rm -f "$work/hand-layer.tar"
}

# hand_layer_dir DIR SUBDIR OPAQUE: a layer tree under DIR/SUBDIR with an opaque whiteout of
# OPAQUE (relative to DIR), a file `a`, a hardlink to it and a symlink to it.
hand_layer_dir() {
    local dir=$1 sub=$2 opaque=$3
    mkdir -p "$dir/$sub" "$dir/$opaque"
    : > "$dir/$opaque/.wh..wh..opq"
    echo "added by layer 3" > "$dir/$opaque/new"
    echo "hello from layer 3" > "$dir/$sub/a"
    ln "$dir/$sub/a" "$dir/$sub/hardlink-to-a"
    ln -s a "$dir/$sub/symlink-to-a"
}

busybox_layer2() {
    local r=$1
    rm -f "$r/usr/share/skiff-test/doomed-file"
    rm -rf "$r/usr/share/skiff-test/doomed-dir"
    echo "added by layer 2" > "$r/usr/share/skiff-test/added-by-layer-2"
}

debian_layer2() {
    local r=$1
    rm -f "$r/etc/motd"
    rm -rf "$r/usr/share/doc/bash"
    echo "added by layer 2" > "$r/etc/skiff-layer-2"
}

# config_of LAYOUT TAG: the image config JSON of a tag (for checks below).
config_of() {
    local layout=$1 tag=$2 manifest
    manifest=$(jq -r --arg t "$tag" \
        '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
        "$layout/index.json")
    jq -r '.config.digest' "$layout/blobs/sha256/${manifest#sha256:}" |
        { read -r c; cat "$layout/blobs/sha256/${c#sha256:}"; }
}

# add_index LAYOUT NEW_TAG TAG...: an OCI image index over the manifests of TAG..., each entry
# with the platform its config names.
add_index() {
    local layout=$1 new=$2; shift 2
    local entries="[]" tag desc cfg
    for tag in "$@"; do
        desc=$(jq -c --arg t "$tag" \
            '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | del(.annotations)' \
            "$layout/index.json")
        cfg=$(config_of "$layout" "$tag")
        entries=$(jq -c --argjson d "$desc" --argjson c "$cfg" \
            '. + [$d + {platform: {architecture: $c.architecture, os: $c.os}}]' <<< "$entries")
    done
    local blob=$work/index-blob digest size
    jq -cj --argjson m "$entries" -n \
        '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: $m}' > "$blob"
    digest=$(sha256sum "$blob" | cut -d' ' -f1)
    size=$(stat -c %s "$blob")
    mv "$blob" "$layout/blobs/sha256/$digest"
    jq -c --arg d "sha256:$digest" --argjson s "$size" --arg t "$new" \
        '.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
                         annotations: {"org.opencontainers.image.ref.name": $t}}]' \
        "$layout/index.json" > "$layout/index.json.new"
    mv "$layout/index.json.new" "$layout/index.json"
}

BB=$work/oci/busybox
DEB=$work/oci/debian
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CREATED=2024-01-01T00:00:00Z

# --- busybox ------------------------------------------------------------------------------------
bb_version=$(dpkg-query -W -f='${Version}' busybox-static)
say "busybox: rootfs from busybox-static $bb_version ($(/bin/busybox --list | wc -l) applets)"
make_busybox_rootfs "$work/busybox-rootfs"
new_image "$BB" latest "$work/busybox-rootfs"
run umoci config --image "$BB:latest" --config.cmd /bin/sh --config.env "$PATH_ENV" \
    --config.workingdir / --os linux --architecture amd64 --created "$CREATED" \
    --history.created_by "busybox-static rootfs"
say "busybox:entry (Entrypoint [/bin/echo, from-entrypoint], Cmd [default-arg])"
run umoci config --image "$BB:latest" --tag entry \
    --config.entrypoint /bin/echo --config.entrypoint from-entrypoint \
    --clear config.cmd --config.cmd default-arg
say "busybox:user (User app, WorkingDir /tmp)"
run umoci config --image "$BB:latest" --tag user --config.user app --config.workingdir /tmp

say "busybox:3layer (layer 2: umoci diff with whiteouts; layer 3: opaque whiteout, hardlink, symlink)"
run umoci tag --image "$BB:latest" 2layer
edit_layer "$BB" 2layer busybox_layer2
hand_layer_dir "$work/bb-l3" usr/share/skiff-test/links usr/share/skiff-test/opaque-dir
hand_layer "$BB" 2layer 3layer "$work/bb-l3"

say "busybox:zstd (busybox:latest with a zstd layer)"
# through a scratch layout: within one layout skopeo would reuse the gzip blob
run skopeo copy -q --dest-compress-format zstd "oci:$BB:latest" "oci:$work/zstd:zstd"
run skopeo copy -q "oci:$work/zstd:zstd" "oci:$BB:zstd"
rm -rf "$work/zstd"

say "busybox:multi (image index: linux/amd64 + a fake linux/arm64 entry)"
run umoci config --image "$BB:latest" --tag arm64-fake --architecture arm64
add_index "$BB" multi latest arm64-fake

# --- debian -------------------------------------------------------------------------------------
# The debootstrap rootfs is cached on its own (keyed by what debootstrap is given), so a change to
# the layers above does not repeat the download.
dkey=$( { echo "minbase $SUITE $MIRROR"; dpkg-query -W -f='${Version}' debootstrap; } | sha256sum | cut -c1-16)
drootfs=$root/debootstrap-$dkey
if [ ! -x "$drootfs/bin/bash" ]; then
    say "debian: debootstrap --variant=minbase $SUITE from $MIRROR (about a minute or more)"
    rm -rf "$drootfs.tmp"
    run debootstrap --variant=minbase "$SUITE" "$drootfs.tmp" "$MIRROR"
    # like the Debian images on Docker Hub: no apt caches and lists, no device nodes, no logs
    rm -rf "$drootfs.tmp"/var/cache/apt/archives/*.deb "$drootfs.tmp"/var/cache/apt/*.bin \
        "$drootfs.tmp"/var/lib/apt/lists/* "$drootfs.tmp"/dev/* "$drootfs.tmp"/var/log/*.log \
        "$drootfs.tmp"/var/log/apt/* "$drootfs.tmp"/debootstrap
    mv "$drootfs.tmp" "$drootfs"
else
    say "debian: debootstrap rootfs cached in $drootfs"
fi
say "debian:latest (one layer, $(du -sm "$drootfs" | cut -f1) MB)"
new_image "$DEB" latest "$drootfs"
run umoci config --image "$DEB:latest" --config.cmd /bin/bash --config.env "$PATH_ENV" \
    --os linux --architecture amd64 --created "$CREATED" --history.created_by "debootstrap minbase"
say "debian:2layer (delete /etc/motd and /usr/share/doc/bash, add /etc/skiff-layer-2)"
run umoci tag --image "$DEB:latest" 2layer
edit_layer "$DEB" 2layer debian_layer2
say "debian:3layer (opaque whiteout of /etc/apt/apt.conf.d, hardlink and symlink in /opt/skiff-test)"
hand_layer_dir "$work/deb-l3" opt/skiff-test etc/apt/apt.conf.d
hand_layer "$DEB" 2layer 3layer "$work/deb-l3"

# --- archives -----------------------------------------------------------------------------------
mkdir -p "$work/archives"
for spec in busybox:latest busybox:entry busybox:user busybox:3layer busybox:zstd debian:3layer; do
    name=${spec%%:*} tag=${spec#*:}
    say "archive: $name-$tag.oci.tar"
    run skopeo copy -q "oci:$work/oci/$name:$tag" "oci-archive:$work/archives/$name-$tag.oci.tar:$tag"
done
say "archive: busybox-latest.docker.tar"
run skopeo copy -q "oci:$BB:latest" "docker-archive:$work/archives/busybox-latest.docker.tar:busybox:latest"

# --- checks and summary -------------------------------------------------------------------------
layers() { jq '.layers | length' < <(skopeo inspect --raw "oci:$1"); }
[ "$(layers "$BB:3layer")" = 3 ] || die "busybox:3layer does not have 3 layers; see $log"
[ "$(layers "$DEB:3layer")" = 3 ] || die "debian:3layer does not have 3 layers; see $log"
[ "$(skopeo inspect --raw "oci:$BB:zstd" | jq -r '.layers[0].mediaType')" = application/vnd.oci.image.layer.v1.tar+zstd ] ||
    die "busybox:zstd has no zstd layer; see $log"
[ "$(config_of "$BB" entry | jq -c '[.config.Entrypoint, .config.Cmd]')" = \
  '[["/bin/echo","from-entrypoint"],["default-arg"]]' ] || die "busybox:entry has the wrong Entrypoint/Cmd; see $log"
[ "$(config_of "$BB" user | jq -c '[.config.User, .config.WorkingDir]')" = '["app","/tmp"]' ] ||
    die "busybox:user has the wrong User/WorkingDir; see $log"

{
    echo "# skiff test images, built by tests/images/build.sh (key $key)"
    versions
    echo "mirror $MIRROR $SUITE"
    for layout in "$BB" "$DEB"; do
        for tag in $(umoci ls --layout "$layout" | sort); do
            printf '%s %s\n' "oci/$(basename "$layout"):$tag" \
                "$(skopeo inspect --raw "oci:$layout:$tag" | jq -r '(.mediaType // "application/vnd.oci.image.manifest.v1+json") + " layers=" + ([.layers[]?.mediaType | sub(".*[.]"; "")] | join(","))')"
        done
    done
    (cd "$work" && ls archives/*) | sed 's/$/ archive/'
} > "$work/CONTENTS.tmp"
rm -rf "$work/busybox-rootfs" "$work/bb-l3" "$work/deb-l3" "$work/bundle"
mv "$work/CONTENTS.tmp" "$work/CONTENTS"
rm -rf "$out"
mv "$work" "$out"
trap - ERR
say "done: $(du -sm "$out" | cut -f1) MB in $out"
echo "$out"
