#!/bin/sh
# Runs inside the middle machine: the Linux guest under our vmm, then under QEMU for reference,
# each on its own tap on bridge br0 (192.0.2.1/24). Every console line of the guests is stamped
# with the middle machine's uptime, so the host can time "VMM start" to "guest init".
export PATH=/payload:/bin:/usr/bin
stamp() { read -r up _ < /proc/uptime; echo "[L1 $up] NESTED: $*"; }
# Prefixes each line with the uptime (shell builtins only: a fork per line would be slow here).
stamped() { while IFS= read -r line; do read -r up _ < /proc/uptime; echo "[L1 $up] $line"; done; }
stats() { for s in rx_bytes tx_bytes rx_packets tx_packets tx_dropped; do
    echo "$1 $s=$(cat /sys/class/net/$1/statistics/$s)"; done; }

echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
ip link set lo up
# The host side, made with our own tapctl (netlink + tap ioctls), as the seed articles do by hand.
tapctl bridge add br0 --no-mcast-snooping && ip addr add 192.0.2.1/24 dev br0 || stamp "STAGE-FAIL bridge setup"
tapctl tap add vnet0 --bridge br0 && tapctl tap add vnet1 --bridge br0 || stamp "STAGE-FAIL tap setup"
CMD="quiet vmm.ip=192.0.2.2/24 vmm.peer=192.0.2.1 vmm.count=3"

stats vnet0 | sed 's/^/VMM-BEFORE /'
stamp "vmm start"
vmm --kernel /payload/bzImage --initrd /payload/initramfs.cpio.gz --mem 128 --tap vnet0 \
    --timeout 900 --cmdline "$CMD" 2>&1 | stamped
stamp "vmm exit"
stats vnet0 | sed 's/^/VMM-AFTER /'

stats vnet1 | sed 's/^/QEMU-BEFORE /'
stamp "qemu start"
# microvm has no i8042: the guest reboots by triple fault (reboot=t), which -no-reboot ends.
timeout 600 qemu-system-x86_64 -L /q/share -enable-kvm -cpu host -M microvm,acpi=off -m 128 -smp 1 \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel /payload/bzImage -initrd /payload/initramfs.cpio.gz \
    -append "console=ttyS0 reboot=t panic=1 quiet vmm.ip=192.0.2.3/24 vmm.peer=192.0.2.1 vmm.count=3" \
    -netdev tap,id=n0,ifname=vnet1,script=no,downscript=no,vnet_hdr=on \
    -device virtio-net-device,netdev=n0 2>&1 | stamped
stamp "qemu exit"
stats vnet1 | sed 's/^/QEMU-AFTER /'

# The same kernel as an uncompressed ELF vmlinux: no XZ decompression in the guest.
if [ -f /payload/vmlinux ]; then
    stats vnet0 | sed 's/^/ELF-BEFORE /'
    stamp "vmm-elf start"
    # RUST_LOG=info: the VMM's own steps, stamped like the rest; printk.time + vmm.bootlog: the
    # guest kernel's (test-linux prints both as the boot-time breakdown).
    RUST_LOG=vmm=info vmm --kernel /payload/vmlinux --initrd /payload/initramfs.cpio.gz --mem 128 --tap vnet0 \
        --timeout 900 --cmdline "quiet printk.time=1 vmm.bootlog=1 vmm.ip=192.0.2.4/24 vmm.peer=192.0.2.1 vmm.count=3" 2>&1 | stamped
    stamp "vmm-elf exit"
    stats vnet0 | sed 's/^/ELF-AFTER /'
fi

# The interactive guest, on two vCPUs: no vmm.peer=, so its init starts a shell on the console,
# which we type into through vmm's stdin (after it had time to boot). Output lines differ from
# their echo: "SHELL-PING-$((1+1))" prints SHELL-PING-2.
if [ -f /payload/vmlinux ]; then
    stats vnet0 | sed 's/^/SHELL-BEFORE /'
    stamp "vmm-shell start"
    (sleep 8
     echo 'echo SHELL-CPUS nproc=$(nproc) cpuinfo=$(grep -c ^processor /proc/cpuinfo)'
     echo 'ping -c 2 -W 2 192.0.2.1 >/dev/null && echo SHELL-PING-$((1+1))'
     # The middle machine confirms the guest's address with one ARP exchange about 5 s after
     # replying (Linux's delay_first_probe_time); read the counters once that is over.
     sleep 9
     # The host link goes down and up under the running guest: vmm clears and sets
     # VIRTIO_NET_S_LINK_UP with a config interrupt, and Linux's driver follows with the carrier.
     ip link set vnet0 down
     sleep 3
     echo 'echo SHELL-CARRIER-DOWN $(cat /sys/class/net/eth0/carrier)'
     sleep 2
     ip link set vnet0 up
     sleep 3
     echo 'echo SHELL-CARRIER-UP $(cat /sys/class/net/eth0/carrier)'
     sleep 2
     echo 'echo SHELL-STATS rx=$(cat /sys/class/net/eth0/statistics/rx_bytes) tx=$(cat /sys/class/net/eth0/statistics/tx_bytes)'
     sleep 2
     echo 'reboot -f') |
        vmm --kernel /payload/vmlinux --initrd /payload/initramfs.cpio.gz --mem 128 --tap vnet0 \
            --cpus 2 --timeout 300 --cmdline "quiet vmm.ip=192.0.2.5/24" 2>&1 | stamped
    stamp "vmm-shell exit"
    stats vnet0 | sed 's/^/SHELL-AFTER /'
fi

# The middle machine's own stock Debian kernel (a bzImage with virtio-mmio and virtio-net as
# modules, which its initramfs loads; it finds the NIC through vmm's ACPI tables).
if [ -f /payload/stock-vmlinuz ]; then
    stats vnet0 | sed 's/^/STOCK-BEFORE /'
    stamp "vmm-stock start"
    vmm --kernel /payload/stock-vmlinuz --initrd /payload/stock-initramfs.cpio.gz --mem 256 --tap vnet0 \
        --timeout 900 --cmdline "quiet vmm.ip=192.0.2.6/24 vmm.peer=192.0.2.1 vmm.count=3" 2>&1 | stamped
    stamp "vmm-stock exit"
    stats vnet0 | sed 's/^/STOCK-AFTER /'
fi
