#!/bin/sh
# make demo: a guest on a tap on a bridge, in a network namespace of its own; a ping through
# it; the VMM's counters next to the tap's own; everything removed at the end (also on failure).
set -eu
vmm=${1:-target/release/vmm}
out=guest-images/out
ns=vmm-demo-$$

if [ -t 1 ]; then bold='\033[1m' plain='\033[0m'; else bold='' plain=''; fi
step() { printf "\n${bold}== %s${plain}\n" "$*"; }
in_ns() { ip netns exec "$ns" "$@"; }
# Shows the command as you would type it (quoting words with spaces), then runs it.
run() {
    shown=""
    for word in "$@"; do
        [ "$word" = in_ns ] && word="ip netns exec $ns"
        case "$word" in *" "*) [ "${word#ip netns exec }" = "$word" ] && word="\"$word\"" ;; esac
        shown="$shown $word"
    done
    printf '   $%s\n' "$shown"
    "$@"
}

if [ "$(id -u)" != 0 ]; then
    echo "demo: needs root (network namespace, bridge and tap): sudo make demo" >&2; exit 1
fi
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
    echo "demo: /dev/kvm is missing or not accessible: this host needs KVM" >&2; exit 1
fi
command -v ip >/dev/null || { echo "demo: ip (iproute2) is missing: apt-get install iproute2" >&2; exit 1; }
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if [ ! -d /sys/module/kvm_pvm ] && [ -f "$out/bzImage" ] && [ -f "$out/initramfs.cpio.gz" ]; then
    guest=linux
    why="this host's KVM can boot Linux, and make linux-guest has built it"
else
    guest=netprobe
    if [ -d /sys/module/kvm_pvm ]; then
        why="this host's /dev/kvm is PVM, where a stock Linux guest cannot boot"
    else
        why="no Linux guest built yet (make linux-guest builds one, ~8 minutes)"
    fi
fi

step "1. A network namespace of our own, so nothing touches this machine's interfaces"
run ip netns add "$ns"
in_ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
in_ns ip link set lo up
echo "   (IPv6 is off in it: no router solicitations or MLD reports to disturb the byte counts)"

step "2. A bridge br0 with the host's address 192.0.2.1/24: the 'switch' the guest plugs into"
run in_ns ip link add br0 type bridge mcast_snooping 0
echo "   (no multicast snooping: the bridge would otherwise send an IGMP report of its own)"
run in_ns ip addr add 192.0.2.1/24 dev br0
run in_ns ip link set br0 up

step "3. A tap vnet0 on the bridge: a network port whose other end is a file descriptor"
run in_ns ip tuntap add dev vnet0 mode tap vnet_hdr
run in_ns ip link set vnet0 master br0
run in_ns ip link set vnet0 up
echo "   The VMM opens that fd; every frame it writes arrives on vnet0 as if from a cable."

pcap=/tmp/$ns.pcap
step "4. Boot the guest ($guest: $why) with a virtio-net NIC on vnet0, and ping 192.0.2.1"
echo "   --pcap records every frame the NIC moves; at exit the VMM prints its byte-symmetry table."
if [ "$guest" = linux ]; then
    run in_ns "$vmm" --kernel "$out/bzImage" --initrd "$out/initramfs.cpio.gz" --tap vnet0 --pcap "$pcap" \
        --timeout 300 --cmdline "quiet vmm.ip=192.0.2.2/24 vmm.peer=192.0.2.1 vmm.count=5" \
        </dev/null 2>"/tmp/$ns.err" || { cat "/tmp/$ns.err"; rm -f "/tmp/$ns.err" "$pcap"; exit 1; }
else
    run in_ns "$vmm" --kernel "$out/netprobe.bzImage" --mem 128 --tap vnet0 --pcap "$pcap" --timeout 60 \
        --cmdline "netprobe.mode=ping netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.1 netprobe.count=10" \
        </dev/null 2>"/tmp/$ns.err" || { cat "/tmp/$ns.err"; rm -f "/tmp/$ns.err" "$pcap"; exit 1; }
fi

step "5. Byte symmetry: what the guest sent is what the host's tap received, and back"
grep -v '^vmm: byte symmetry\|^  ' "/tmp/$ns.err" || true
sed -n '/^vmm: byte symmetry/,$p' "/tmp/$ns.err"
echo "   The device counts Ethernet bytes (not the 12-byte virtio-net header each frame carries"
echo "   on the fd), so they compare 1:1 with /sys/class/net/vnet0/statistics: guest TX = tap RX."
symmetric=yes
grep -q DIFFERS "/tmp/$ns.err" && symmetric=no
rm -f "/tmp/$ns.err"

step "6. Look inside: the capture, read by tcpdump (Wireshark opens it too)"
if command -v tcpdump >/dev/null; then
    printf '   $ tcpdump -nr %s | head -4\n' "$pcap"
    tcpdump -nr "$pcap" 2>/dev/null | head -4 | sed 's/^/   /'
    echo "   ($(tcpdump -nr "$pcap" 2>/dev/null | wc -l) frames in all; --trace-net shows each with its ring slot and header)"
else
    echo "   $pcap: $(stat -c %s "$pcap") bytes (apt-get install tcpdump to read it here)"
fi
rm -f "$pcap"

step "7. Clean up: deleting the namespace removes the bridge and the tap with it"
run ip netns del "$ns"
trap - EXIT INT TERM
[ "$symmetric" = yes ]
