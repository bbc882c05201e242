#!/usr/bin/env bash
# make test-linux: proves the Linux guest boots under our vmm on a real VMX KVM, which this
# machine's PVM KVM cannot offer. Debian's Bochs emulates an Intel CPU with VMX+EPT; a stock
# Debian kernel in it (the middle machine, L1) loads kvm_intel; our vmm boots the Linux guest
# (L2) there, with a NIC on a tap on a bridge; then QEMU boots the same guest for comparison.
# Recipe and measurements: shared/NESTED-VMX.md. Everything is cached in $VMM_CACHE.
#
# Asserts, from the serial log: the guest booted under vmm (kernel banner, init marker), its
# pings were answered, and guest eth0 tx/rx bytes == vnet0 rx/tx byte deltas == vmm's own
# counters. Prints both VMMs' "start to guest init" times side by side.
set -euo pipefail
say() { echo "test-linux: $*"; }
fail() { echo "test-linux: FAIL ($1): $2" >&2; exit 1; }
payload_script=$(cd "$(dirname "$0")" && pwd)/payload.sh
payload_programs=""
payload_initramfs=initramfs.cpio.gz
payload_stock_kernel=1
. "$(dirname "$0")/lib.sh"

# 4. Verdict, stage by stage.
say "[4/4] checking"
log=$(tr -d '\r' < "$serial")
has() { grep -aq -- "$1" <<<"$log"; }
has "middle machine up" || fail "middle boot" "the middle machine never reached its init (Bochs: $(tail -2 "$work/bochs.out" | tr '\n' ' '))"
has "kvm_intel ok" || fail "kvm_intel" "$(grep -a STAGE-FAIL <<<"$log" | head -1)"
has "payload ready" || fail "payload" "the payload disk was not unpacked"
has "vmm start" || fail "host setup" "$(grep -a STAGE-FAIL <<<"$log" | head -1)"
vmm_part=$(sed -n '/NESTED: vmm start/,/NESTED: vmm exit/p' <<<"$log")
grep -aq "vmm-guest: init started" <<<"$vmm_part" || fail "guest boot" "the guest never reached /init under vmm: $(grep -a 'vmm:' <<<"$vmm_part" | head -3 | tr '\n' ' ')"
grep -aq "vmm-guest: kernel Linux version 6.1" <<<"$vmm_part" || fail "guest boot" "the guest's /proc/version is not the 6.1 guest kernel"
grep -aq "vmm-guest: ping 192.0.2.1 ok" <<<"$vmm_part" || fail "ping" "the guest's pings through vmm were not answered"
grep -aq "vmm: the guest reset the machine" <<<"$vmm_part" || fail "guest exit" "vmm did not see the guest reboot"

num() { grep -a "$1" <<<"$2" | head -1 | sed 's/.*=\([0-9]*\).*/\1/'; }
# counters_agree PART PREFIX STAGE: in run PART (between "$PREFIX-BEFORE"/"-AFTER" statistics of
# vnet0), the guest's eth0 bytes == vnet0's deltas == vmm's net0 line, each way; sets g_tx g_rx
# t_rx t_tx v_tx v_rx.
counters_agree() {
    g_tx=$(num "vmm-guest: eth0 tx_bytes=" "$1"); g_rx=$(num "vmm-guest: eth0 rx_bytes=" "$1")
    t_rx=$(( $(num "$2-AFTER vnet0 rx_bytes=" "$log") - $(num "$2-BEFORE vnet0 rx_bytes=" "$log") ))
    t_tx=$(( $(num "$2-AFTER vnet0 tx_bytes=" "$log") - $(num "$2-BEFORE vnet0 tx_bytes=" "$log") ))
    local net0; net0=$(grep -a "net0: tap=vnet0" <<<"$1" | head -1)
    v_tx=$(sed -n 's/.*guest_tx_bytes=\([0-9]*\).*/\1/p' <<<"$net0"); v_rx=$(sed -n 's/.*guest_rx_bytes=\([0-9]*\).*/\1/p' <<<"$net0")
    [ -n "$g_tx" ] && [ "$g_tx" = "$t_rx" ] && [ "$t_rx" = "$v_tx" ] || fail "$3" "guest TX $g_tx, vnet0 RX $t_rx, vmm $v_tx differ"
    [ -n "$g_rx" ] && [ "$g_rx" = "$t_tx" ] && [ "$t_tx" = "$v_rx" ] || fail "$3" "guest RX $g_rx, vnet0 TX $t_tx, vmm $v_rx differ"
}
counters_agree "$vmm_part" VMM counters
printf 'test-linux:      %-28s %10s %10s %10s\n' "" "guest eth0" "vnet0" "vmm net0"
printf 'test-linux:      %-28s %10s %10s %10s\n' "guest TX bytes (vnet0 RX)" "$g_tx" "$t_rx" "$v_tx"
printf 'test-linux:      %-28s %10s %10s %10s\n' "guest RX bytes (vnet0 TX)" "$g_rx" "$t_tx" "$v_rx"

# Timings: VMM start to the guest's init marker, in the middle machine's clock.
t() { grep -a "$1" <<<"$2" | head -1 | sed 's/^\[L1 \([0-9.]*\)\].*/\1/'; }
qemu_part=$(sed -n '/NESTED: qemu start/,/NESTED: qemu exit/p' <<<"$log")
v_start=$(t "NESTED: vmm start" "$log"); v_init=$(t "vmm-guest: init started" "$vmm_part")
q_start=$(t "NESTED: qemu start" "$log"); q_init=$(t "vmm-guest: init started" "$qemu_part")
v_s=$(awk -v a="$v_start" -v b="$v_init" 'BEGIN{printf "%.1f", b-a}')
if [ -n "$q_init" ]; then
    q_s=$(awk -v a="$q_start" -v b="$q_init" 'BEGIN{printf "%.1f", b-a}')
    ratio=$(awk -v v="$v_s" -v q="$q_s" 'BEGIN{printf "%.2f", v/q}')
    grep -aq "vmm-guest: ping 192.0.2.1 ok" <<<"$qemu_part" && q_ping=ok || q_ping="not answered"
    say "start -> guest /init (middle machine's clock): vmm ${v_s}s, QEMU ${q_s}s (microvm), ratio vmm/QEMU ${ratio}; QEMU's guest ping: $q_ping"
else
    say "start -> guest /init: vmm ${v_s}s; QEMU's guest did not reach /init (comparison only, not a failure)"
fi
elf_part=$(sed -n '/NESTED: vmm-elf start/,/NESTED: vmm-elf exit/p' <<<"$log")
e_init=$(t "vmm-guest: init started" "$elf_part")
if [ -n "$e_init" ]; then
    e_s=$(awk -v a="$(t "NESTED: vmm-elf start" "$log")" -v b="$e_init" 'BEGIN{printf "%.1f", b-a}')
    grep -aq "vmm-guest: ping 192.0.2.1 ok" <<<"$elf_part" || fail "ping (vmlinux)" "the ELF-booted guest's pings were not answered"
    say "the same kernel as ELF vmlinux under vmm (no XZ step): ${e_s}s to /init"
    # Where that time went: the VMM's steps (RUST_LOG=vmm=info), on the middle machine's clock
    # from "vmm-elf start", then the guest kernel's own printk timestamps (vmm.bootlog=1).
    e_start=$(t "NESTED: vmm-elf start" "$log")
    sed 's/\x1b\[[0-9;]*m//g' <<<"$elf_part" | grep -a -E '^\[L1 [0-9.]+\] .*INFO .*vmm::vm\] (loaded|VM ready)' |
        while IFS= read -r line; do
            at=$(sed 's/^\[L1 \([0-9.]*\)\].*/\1/' <<<"$line")
            say "boot: vmm   +$(awk -v a="$e_start" -v b="$at" 'BEGIN{printf "%.2f", b-a}')s $(sed 's/.*vmm::vm\] //' <<<"$line" | cut -c1-60)"
        done
    grep -a "vmm-guest: boot \[" <<<"$elf_part" | sed 's/.*vmm-guest: boot //' | cut -c1-90 |
        while IFS= read -r line; do say "boot: guest $line"; done
elif [ -n "$elf_part" ]; then
    fail "guest boot (vmlinux)" "the ELF vmlinux guest never reached /init under vmm"
fi
shell_part=$(sed -n '/NESTED: vmm-shell start/,/NESTED: vmm-shell exit/p' <<<"$log")
if [ -n "$shell_part" ]; then
    grep -aq "vmm-guest: shell on the console" <<<"$shell_part" || fail "shell" "the guest without vmm.peer= did not start its shell"
    grep -aq "SHELL-PING-2" <<<"$shell_part" || fail "shell" "the ping typed into the guest's shell through vmm's stdin was not answered"
    stats_line=$(grep -a "SHELL-STATS rx=[0-9]" <<<"$shell_part" | head -1)
    [ -n "$stats_line" ] || fail "shell" "the guest's shell did not run the statistics command typed into it"
    sh_rx=$(sed 's/.*rx=\([0-9]*\).*/\1/' <<<"$stats_line"); sh_tx=$(sed 's/.*tx=\([0-9]*\).*/\1/' <<<"$stats_line")
    sh_net0=$(grep -a "net0: tap=vnet0" <<<"$shell_part" | head -1)
    sv_tx=$(sed -n 's/.*guest_tx_bytes=\([0-9]*\).*/\1/p' <<<"$sh_net0"); sv_rx=$(sed -n 's/.*guest_rx_bytes=\([0-9]*\).*/\1/p' <<<"$sh_net0")
    st_rx=$(( $(num "SHELL-AFTER vnet0 rx_bytes=" "$log") - $(num "SHELL-BEFORE vnet0 rx_bytes=" "$log") ))
    st_tx=$(( $(num "SHELL-AFTER vnet0 tx_bytes=" "$log") - $(num "SHELL-BEFORE vnet0 tx_bytes=" "$log") ))
    [ "$sh_tx" = "$sv_tx" ] && [ "$sv_tx" = "$st_rx" ] || fail "shell" "guest TX $sh_tx (its shell), vmm $sv_tx, vnet0 RX $st_rx differ"
    [ "$sh_rx" = "$sv_rx" ] && [ "$sv_rx" = "$st_tx" ] || fail "shell" "guest RX $sh_rx (its shell), vmm $sv_rx, vnet0 TX $st_tx differ"
    say "the guest's shell, driven through vmm's stdin: ping answered; guest TX/RX $sh_tx/$sh_rx bytes == vmm == vnet0"
    # vnet0 was set down and up on the middle machine while the shell ran.
    grep -aq "SHELL-CARRIER-DOWN 0" <<<"$shell_part" || fail "link state" "vnet0 was set down, but the guest's eth0 kept its carrier: $(grep -a 'SHELL-CARRIER-DOWN [0-9]' <<<"$shell_part" | head -1)"
    grep -aq "SHELL-CARRIER-UP 1" <<<"$shell_part" || fail "link state" "vnet0 came up again, but the guest's eth0 has no carrier: $(grep -a 'SHELL-CARRIER-UP [0-9]' <<<"$shell_part" | head -1)"
    grep -aq "link_changes=2 " <<<"$sh_net0" || fail "link state" "vmm did not count two link changes: $sh_net0"
    say "link-state PASS (vnet0 down: guest eth0 carrier 0; up: carrier 1; vmm link_changes=2)"
    say "shell PASS"
    # The same run had --cpus 2: the guest must have brought both online.
    cpus_line=$(grep -a "SHELL-CPUS nproc=[0-9]" <<<"$shell_part" | head -1)
    [ -n "$cpus_line" ] || fail "smp" "the guest's shell did not report its CPUs"
    nproc=$(sed 's/.*nproc=\([0-9]*\).*/\1/' <<<"$cpus_line"); cpuinfo=$(sed 's/.*cpuinfo=\([0-9]*\).*/\1/' <<<"$cpus_line")
    [ "$nproc" = 2 ] && [ "$cpuinfo" = 2 ] || fail "smp" "--cpus 2, but the guest has nproc=$nproc and $cpuinfo processors in /proc/cpuinfo"
    say "smp PASS ($nproc CPUs online)"
fi
stock_part=$(sed -n '/NESTED: vmm-stock start/,/NESTED: vmm-stock exit/p' <<<"$log")
if [ -n "$stock_part" ]; then
    grep -aq "vmm-guest: init started" <<<"$stock_part" || fail "stock kernel" "Debian's kernel never reached /init under vmm: $(grep -a 'vmm:' <<<"$stock_part" | head -3 | tr '\n' ' ')"
    ! grep -aq "vmm-guest: insmod .* failed" <<<"$stock_part" || fail "stock kernel" "$(grep -a 'insmod .* failed' <<<"$stock_part" | head -1)"
    grep -aq "vmm-guest: eth0 192.0.2.6/24 up" <<<"$stock_part" || fail "stock kernel" "Debian's kernel found no eth0 (virtio_mmio through ACPI, virtio_net)"
    grep -aq "vmm-guest: ping 192.0.2.1 ok" <<<"$stock_part" || fail "stock kernel" "the pings of Debian's kernel through vmm were not answered"
    stock_release=$(grep -a "vmm-guest: uname -r " <<<"$stock_part" | head -1 | sed 's/.*uname -r //')
    counters_agree "$stock_part" STOCK "stock kernel"
    say "stock-kernel PASS ($stock_release)"
fi
say "PASS: Linux booted under vmm on nested VMX KVM, pinged 192.0.2.1, guest eth0 == vnet0 == vmm counters"
