#!/bin/sh
# Runs inside the middle machine for `make bench-linux`: iperf3 in the Linux guest against an
# iperf3 server on the middle machine's bridge (192.0.2.1), guest TX then guest RX, first under
# our vmm, then under QEMU 7.2 (-M microvm) in the same boot, each on its own tap on br0. While
# each VMM runs, its resident memory minus the guest RAM mapping is sampled.
export PATH=/payload:/bin:/usr/bin
T=@IPERF_TIME@
stamp() { read -r up _ < /proc/uptime; echo "[L1 $up] NESTED: $*"; }
stamped() { while IFS= read -r line; do read -r up _ < /proc/uptime; echo "[L1 $up] $line"; done; }

echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
ip link set lo up
tapctl bridge add br0 --no-mcast-snooping && ip addr add 192.0.2.1/24 dev br0 || stamp "STAGE-FAIL bridge setup"
tapctl tap add vnet0 --bridge br0 && tapctl tap add vnet1 --bridge br0 || stamp "STAGE-FAIL tap setup"
# iperf3 keeps each stream's buffer in a file under /tmp, which the middle machine lacks.
mkdir -p /tmp
iperf3 -s -D -B 192.0.2.1 || stamp "STAGE-FAIL iperf3 server"

# KiB resident in process $1 outside its largest mapping (the guest's RAM).
overhead() {
    awk '/^[0-9a-f]+-[0-9a-f]+ /{ if (size > max) { max = size; maxrss = rss } size = 0; rss = 0; next }
         /^Size:/ { size = $2 } /^Rss:/ { rss = $2; total += $2 }
         END { if (size > max) maxrss = rss; print total - maxrss }' "/proc/$1/smaps"
}
# Samples `overhead` of process $2 every 3 s until it exits; prints the largest as "$1 rss".
watch_rss() {
    max=0
    while kill -0 "$2" 2>/dev/null; do
        o=$(overhead "$2" 2>/dev/null)
        [ -n "$o" ] && [ "$o" -gt "$max" ] && max=$o
        sleep 3
    done
    stamp "$1 rss_overhead_kib=$max"
}
CMD="vmm.iperf=192.0.2.1 vmm.iperf_time=$T quiet"

stamp "vmm start"
vmm --kernel /payload/bzImage --initrd /payload/initramfs-iperf3.cpio.gz --mem 128 --tap vnet0 \
    --timeout 900 --cmdline "$CMD vmm.ip=192.0.2.2/24" 2>&1 | stamped &
sleep 1
watch_rss vmm "$(pidof vmm)"
wait
stamp "vmm exit"

stamp "qemu start"
qemu-system-x86_64 -L /q/share -enable-kvm -cpu host -M microvm,acpi=off -m 128 -smp 1 \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel /payload/bzImage -initrd /payload/initramfs-iperf3.cpio.gz \
    -append "console=ttyS0 reboot=t panic=1 $CMD vmm.ip=192.0.2.3/24" \
    -netdev tap,id=n0,ifname=vnet1,script=no,downscript=no,vnet_hdr=on \
    -device virtio-net-device,netdev=n0 2>&1 | stamped &
sleep 1
watch_rss qemu "$(pidof qemu-system-x86_64)"
wait
stamp "qemu exit"
