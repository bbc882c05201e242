#!/bin/sh
# make demo: boot a guest on KVM and say what happens at each step.
# The networking part (namespace, bridge, tap, ping, byte-symmetry table) comes with the
# virtio-net datapath; until then the demo shows the boot path every later step builds on.
set -eu
vmm=${1:-target/release/vmm}
out=guest-images/out

if [ -t 1 ]; then bold='\033[1m' plain='\033[0m'; else bold='' plain=''; fi
step() { printf "\n${bold}== %s${plain}\n" "$*"; }

if [ ! -w /dev/kvm ] || [ ! -r /dev/kvm ]; then
    echo "demo: /dev/kvm is missing or not accessible: run as root on a host with KVM" >&2
    exit 1
fi
if [ -d /sys/module/kvm_pvm ]; then
    guest="netprobe (this host's /dev/kvm is PVM: a stock Linux guest cannot boot here)"
else
    guest="netprobe (the bare-metal test guest; the Linux guest is 'make linux-guest')"
fi

step "1. The guest: $guest"
echo "   $out/netprobe.bzImage is a bzImage (Linux boot protocol header + 64-bit code);"
echo "   $out/netprobe.elf is the same program as an ELF. The VMM loads both like a Linux kernel."

step "2. Boot the bzImage with 128 MiB: the VMM writes boot_params (e820 map, command line),"
echo "   page tables and a GDT, and starts the vCPU in 64-bit mode at the kernel's entry."
echo "   \$ $vmm --kernel $out/netprobe.bzImage --mem 128 --cmdline netprobe.mode=boot"
"$vmm" --kernel "$out/netprobe.bzImage" --mem 128 --cmdline "netprobe.mode=boot" --timeout 60 </dev/null

step "3. The same program as an ELF, with 4 GiB: RAM is split around the 32-bit MMIO gap,"
echo "   so the guest sees a fifth e820 entry above 4 GiB."
echo "   \$ $vmm --kernel $out/netprobe.elf --mem 4096 --cmdline netprobe.mode=boot"
"$vmm" --kernel "$out/netprobe.elf" --mem 4096 --cmdline "netprobe.mode=boot" --timeout 60 </dev/null

step "4. What comes next"
echo "   The virtio-net device, a tap on a bridge in its own network namespace, a ping from the"
echo "   guest and the byte-symmetry table come with the datapath issue."
