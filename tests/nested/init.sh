#!/bin/busybox sh
# PID 1 of the nested test VM (L1), started by tests/nested/ (`nested-vm`): gives the host's own
# userland a writable root, checks that /dev/kvm and the TSC are usable, runs the command the
# runner wrote to its share, leaves the exit status there, and ends the VM.
#
# The host's / arrives read-only over virtio-9p (tag `hostroot`) and the runner's directory
# read-write (tag `run`). The new root is a tmpfs: each of the host's top-level directories is an
# overlay (the host's files below, L1's writes above, in memory and gone at the end), its symlinks
# are copied, and /proc, /sys, /dev and /run are L1's own (pseudo-filesystems mounted on a 9p
# view of the host's would not stick). The workspace thus sits at the host's path, as the test
# binaries built there expect, even under /tmp.
/bin/busybox --install -s /bin
export PATH=/bin

mkdir -p /proc /sys /dev /mnt/host /mnt/run /mnt/upper /newroot
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
stty -F /dev/console -onlcr 2>/dev/null
# loopback, for what the tests serve to themselves on 127.0.0.1 inside L1
ip link set lo up
# an uplink that goes nowhere (a dummy device drops what it is sent), with a default route:
# passt needs a routable interface to start, and the tests' traffic only goes to 127.0.0.1
ip link add uplink type dummy && ip addr add 192.0.2.2/24 dev uplink && ip link set uplink up &&
    ip route add default via 192.0.2.1 || echo "nested-vm: L1: warning: no dummy uplink"

say() { echo "nested-vm: L1: $*"; }
# end STATUS: records the command's status for the runner and ends the VM.
end() {
    echo "$1" > /mnt/run/status
    sync
    reboot -f
    sleep 60
}
# fail MESSAGE [STATUS]: the VM could not run the command (status 125, or 75 when L1 itself is
# at fault and a new boot may do better); its kernel log's end helps to tell why.
fail() {
    say "error: $1"
    dmesg | tail -n 25 | sed 's/^/nested-vm: L1 dmesg| /'
    end "${2:-125}"
}

p9=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$p9,ro,cache=loose" hostroot /mnt/host || fail "cannot mount the host's / (9p tag hostroot)"
mount -t 9p -o "$p9" run /mnt/run || fail "cannot mount the runner's directory (9p tag run)"

mount -t tmpfs -o mode=755 root /newroot
mount -t tmpfs -o mode=700 upper /mnt/upper
for entry in /mnt/host/* /mnt/host/.[!.]*; do
    name=${entry##*/}
    [ -e "$entry" ] || [ -L "$entry" ] || continue
    if [ -L "$entry" ]; then
        ln -s "$(readlink "$entry")" "/newroot/$name"
    elif [ -d "$entry" ]; then
        mkdir "/newroot/$name"
        case $name in
        proc | sys | dev | run) continue ;;
        esac
        mkdir -p "/mnt/upper/$name/u" "/mnt/upper/$name/w"
        # an overlay's top directory shows its upper's owner and mode: make them the host's
        chown "$(stat -c %u:%g "$entry")" "/mnt/upper/$name/u"
        chmod "$(stat -c %a "$entry")" "/mnt/upper/$name/u"
        mount -t overlay -o "lowerdir=$entry,upperdir=/mnt/upper/$name/u,workdir=/mnt/upper/$name/w" \
            "overlay-$name" "/newroot/$name" || fail "cannot lay an overlay over the host's /$name"
    fi
done
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
ln -sf pts/ptmx /newroot/dev/ptmx
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
mount -t tmpfs -o mode=755 run /newroot/run
mkdir /newroot/run/nested
mount --bind /mnt/run /newroot/run/nested

# The checks that make a green run mean something: KVM works and its guests get a stable TSC.
[ -c /dev/kvm ] || fail "no /dev/kvm: the L1 kernel lacks KVM_AMD or the CPU model lacks SVM"
if dmesg | grep -qi 'tsc.*unstable\|unstable.*tsc'; then
    fail "L1 marked its TSC unstable: KVM would never enter a guest (tsc_early_khz is $(sed -n 's/.*tsc_early_khz=\([0-9]*\).*/\1/p' /proc/cmdline))" 75
fi
# (tsc-early until the kernel's delayed refinement registers tsc, a second after boot)
clock=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)
case $clock in
tsc | tsc-early) ;;
*) fail "L1's clocksource is $clock, not the TSC" ;;
esac
say "up in $(cut -d' ' -f1 /proc/uptime) s: $(grep -c ^processor /proc/cpuinfo) CPUs, $(($(sed -n 's/MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo) / 1024)) MiB, clocksource $clock, /dev/kvm ready"

# A heartbeat on the runner's share: L1's clock and timer interrupts still work. Under QEMU's
# emulated SVM, L1 was seen (rarely) to lose its timer and freeze for good; the runner notices
# the heartbeat stop and reports that instead of waiting for its deadline.
(while :; do date +%s > /mnt/run/heartbeat; sleep 2; done) &

# Through a FIFO, so the command's output is not a terminal (no colours, no line discipline),
# and processes the command left behind holding its output cannot keep L1 up once it ended.
mkfifo /output
cat /output &
reader=$!
# The new root is moved over / in a mount namespace of the command's own (what switch_root does),
# not merely chrooted into: a chrooted process may not create user namespaces, which passt does.
unshare -m sh -c 'cd /newroot && mount --move . / && exec chroot . /bin/sh /run/nested/command' \
    </dev/null >/output 2>&1
status=$?
sleep 0.2
kill "$reader" 2>/dev/null
[ "$status" = 0 ] || say "the command exited with $status"
if dmesg | grep -qi 'tsc.*unstable\|unstable.*tsc'; then
    say "error: L1 marked its TSC unstable while the command ran: KVM stops entering guests"
    dmesg | grep -i tsc | sed 's/^/nested-vm: L1 dmesg| /'
    status=75
fi
end "$status"
