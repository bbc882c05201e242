#!/usr/bin/env bash
# make bench-linux: throughput of the Linux guest's NIC under vmm and under QEMU 7.2 (microvm)
# in the same boot of the nested machine (Bochs -> stock Debian kernel with kvm_intel -> the
# guest of `make linux-guest`, with the initramfs that carries iperf3). iperf3 runs in the guest against
# the middle machine, guest TX then guest RX, IPERF_TIME seconds each (default 8, Bochs' virtual
# time). Also reports each VMM's resident memory minus the guest RAM. A benchmark, not a test:
# it fails only when a stage did not run. The last line is `bench-linux: vmm/QEMU tx R rx R`.
set -euo pipefail
say() { echo "bench-linux: $*"; }
fail() { echo "bench-linux: FAIL ($1): $2" >&2; exit 1; }
command -v iperf3 >/dev/null || fail setup "iperf3 is missing: apt-get install iperf3, then make linux-guest (the guest needs it too)"
src=$(cd "$(dirname "$0")" && pwd)
payload_script=$(mktemp /tmp/vmm-bench-payload.XXXXXX)
payload_cleanup=$payload_script  # removed with the rest by lib.sh's exit trap
trap 'rm -f "$payload_script"' EXIT
sed "s/@IPERF_TIME@/${IPERF_TIME:-8}/" "$src/bench-payload.sh" > "$payload_script"
payload_programs="iperf3"
payload_initramfs=initramfs-iperf3.cpio.gz
[ -f "$src/../out/$payload_initramfs" ] || fail setup "no guest-images/out/$payload_initramfs: apt-get install iperf3, then make linux-guest"
. "$src/lib.sh"

say "[4/4] results"
log=$(tr -d '\r' < "$serial")
grep -aq "kvm_intel ok" <<<"$log" || fail "middle boot" "no /dev/kvm in the middle machine"
part() { sed -n "/NESTED: $1 start/,/NESTED: $1 exit/p" <<<"$log"; }
# The receiver's bitrate of one iperf3 direction, in Mbit/s.
rate() { grep -a "vmm-guest: iperf $1 .*receiver" <<<"$2" | head -1 | sed 's/.* \([0-9.]*\) Mbits\/sec.*/\1/'; }
vmm_part=$(part vmm); qemu_part=$(part qemu)
grep -aq "vmm-guest: iperf done" <<<"$vmm_part" || fail "vmm" "the guest under vmm did not finish iperf3: $(grep -a 'vmm:\|iperf' <<<"$vmm_part" | head -3 | tr '\n' ' ')"
grep -aq "vmm-guest: iperf done" <<<"$qemu_part" || fail "qemu" "the guest under QEMU did not finish iperf3"
v_tx=$(rate tx "$vmm_part"); v_rx=$(rate rx "$vmm_part")
q_tx=$(rate tx "$qemu_part"); q_rx=$(rate rx "$qemu_part")
[ -n "$v_tx" ] && [ -n "$v_rx" ] && [ -n "$q_tx" ] && [ -n "$q_rx" ] || fail "iperf3" "a bitrate is missing (vmm $v_tx/$v_rx, QEMU $q_tx/$q_rx)"
kib() { grep -a "NESTED: $1 rss_overhead_kib=" <<<"$log" | head -1 | sed 's/.*=//'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
features() { grep -a "vmm-guest: virtio features" <<<"$1" | head -1 | sed 's/.*features //'; }
say "guest TX (iperf3 to the middle machine): vmm $v_tx Mbit/s, QEMU $q_tx Mbit/s"
say "guest RX (iperf3 -R):                    vmm $v_rx Mbit/s, QEMU $q_rx Mbit/s"
say "resident memory minus guest RAM:         vmm $(mib "$(kib vmm)") MiB, QEMU $(mib "$(kib qemu)") MiB"
say "virtio features (bit 0 first): vmm $(features "$vmm_part")"
say "                               QEMU $(features "$qemu_part")"
say "vmm's exit line: $(grep -a 'net0: tap=vnet0' <<<"$vmm_part" | head -1 | sed 's/^\[L1 [0-9.]*\] //')"
say "vmm/QEMU tx $(awk -v a="$v_tx" -v b="$q_tx" 'BEGIN{printf "%.2f", a/b}') rx $(awk -v a="$v_rx" -v b="$q_rx" 'BEGIN{printf "%.2f", a/b}')"
