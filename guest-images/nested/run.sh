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
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cache=${VMM_CACHE:-$HOME/.cache/vmm}
limit=${NESTED_TIMEOUT:-1200}
say() { echo "test-linux: $*"; }
fail() { echo "test-linux: FAIL ($1): $2" >&2; exit 1; }

kver=6.1.0-56-amd64
for tool in bochs-bin syslinux mcopy mkfs.vfat cpio qemu-system-x86_64 busybox; do
    command -v "$tool" >/dev/null || fail setup "$tool is missing: apt-get install bochs bochsbios vgabios syslinux syslinux-common mtools dosfstools cpio qemu-system-x86 busybox-static"
done
[ -f "$top/guest-images/out/bzImage" ] || fail setup "no Linux guest: run make linux-guest first"
[ -x "$top/target/release/vmm" ] || fail setup "no target/release/vmm: run make build first"

# 1. The middle machine's boot disk, cached by kernel version and init script.
key=$( (echo "$kver"; cat "$here/l1-init") | sha256sum | cut -c1-16)
l1=$cache/nested-l1-$key
if [ ! -f "$l1/l1.img" ]; then
    say "[1/4] building the middle machine ($kver, stock Debian kernel + kvm_intel)"
    rm -rf "$l1.tmp"; mkdir -p "$l1.tmp"
    deb=$(ls "$cache"/debs/linux-image-${kver}_*.deb 2>/dev/null | head -1 || true)
    if [ -z "$deb" ]; then
        mkdir -p "$cache/debs"
        (cd "$cache/debs" && apt-get download "linux-image-$kver" >/dev/null 2>&1) || fail setup "cannot download linux-image-$kver"
        deb=$(ls "$cache"/debs/linux-image-${kver}_*.deb | head -1)
    fi
    dpkg-deb -x "$deb" "$l1.tmp/kpkg"
    mods=$l1.tmp/kpkg/lib/modules/$kver/kernel
    mkdir -p "$l1.tmp/ir/bin" "$l1.tmp/ir/mod" "$l1.tmp/ir/proc" "$l1.tmp/ir/sys" "$l1.tmp/ir/dev"
    cp "$(command -v busybox)" "$l1.tmp/ir/bin/busybox"
    cp "$here/l1-init" "$l1.tmp/ir/init"; chmod +x "$l1.tmp/ir/init"
    for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-intel drivers/scsi/scsi_common \
             drivers/scsi/scsi_mod crypto/crct10dif_common lib/crc-t10dif lib/crc64 lib/crc64-rocksoft \
             block/t10-pi drivers/scsi/sd_mod drivers/ata/libata drivers/ata/ata_piix net/llc/llc \
             net/802/stp net/bridge/bridge drivers/net/tun; do
        cp "$mods/$m.ko" "$l1.tmp/ir/mod/"
    done
    (cd "$l1.tmp/ir" && find . | cpio -o -H newc --quiet -R 0:0) > "$l1.tmp/initrd"
    cp "$l1.tmp/kpkg/boot/vmlinuz-$kver" "$l1.tmp/vmlinuz"
    cat > "$l1.tmp/syslinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT l1
PROMPT 0
LABEL l1
  KERNEL vmlinuz
  APPEND initrd=initrd console=ttyS0,115200 panic=-1 quiet mitigations=off tsc=reliable nosoftlockup
CFG
    mkfs.vfat -C "$l1.tmp/l1.img" 65520 >/dev/null
    syslinux --install "$l1.tmp/l1.img"
    mcopy -i "$l1.tmp/l1.img" "$l1.tmp/vmlinuz" "$l1.tmp/initrd" "$l1.tmp/syslinux.cfg" ::
    rm -rf "$l1.tmp/kpkg" "$l1.tmp/ir"
    rm -rf "$l1"; mv "$l1.tmp" "$l1"
else
    say "[1/4] middle machine cached in $l1"
fi

# 2. The payload disk: our vmm and tapctl, the Linux guest, QEMU, and their libraries.
work=$(mktemp -d /tmp/vmm-nested.XXXXXX)
[ -n "${NESTED_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
say "[2/4] payload: vmm, tapctl, guest kernel + initramfs, QEMU 7.2 as the reference"
p=$work/payload
mkdir -p "$p/payload" "$p/q/share" "$p/usr/bin" "$p/lib/x86_64-linux-gnu" "$p/lib64"
cp "$top/target/release/vmm" "$top/target/release/tapctl" "$here/payload.sh" "$p/payload/"
mv "$p/payload/payload.sh" "$p/payload/run.sh"
cp "$top/guest-images/out/bzImage" "$top/guest-images/out/initramfs.cpio.gz" "$p/payload/"
[ -f "$top/guest-images/out/vmlinux" ] && cp "$top/guest-images/out/vmlinux" "$p/payload/"
cp "$(command -v qemu-system-x86_64)" "$p/usr/bin/"
for rom in qboot.rom bios-microvm.bin linuxboot_dma.bin kvmvapic.bin; do cp -L "/usr/share/qemu/$rom" "$p/q/share/"; done
for bin in "$top/target/release/vmm" "$top/target/release/tapctl" "$(command -v qemu-system-x86_64)"; do
    ldd "$bin" | awk '/=> \//{print $3}' | while read -r lib; do cp -Ln "$lib" "$p/lib/x86_64-linux-gnu/" 2>/dev/null || true; done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$p/lib64/"
(cd "$p" && find . | cpio -o -H newc --quiet -R 0:0) > "$work/bundle.cpio"
cyl_bytes=$((16 * 63 * 512))
size=$(stat -c %s "$work/bundle.cpio")
cyls=$(( (size + cyl_bytes - 1) / cyl_bytes ))
truncate -s $((cyls * cyl_bytes)) "$work/bundle.cpio"
say "      payload $((size / 1048576)) MiB ($cyls cylinders)"

# 3. Bochs: emulated Intel CPU with VMX, headless (rfb with no client), serial to a file.
cp "$l1/l1.img" "$work/l1.img"
serial=$work/serial.log
cat > "$work/bochsrc" <<RC
display_library: rfb, options="timeout=0"
megs: 1024
cpu: model=corei7_haswell_4770, count=1, ips=60000000, reset_on_triple_fault=0, ignore_bad_msrs=1
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
pci: enabled=1, chipset=i440fx
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=disk, path=$work/l1.img, mode=flat, cylinders=130, heads=16, spt=63
ata0-slave: type=disk, path=$work/bundle.cpio, mode=flat, cylinders=$cyls, heads=16, spt=63
boot: disk
com1: enabled=1, mode=file, dev=$serial
clock: sync=none, time0=utc
log: $work/bochs.log
panic: action=fatal
mouse: enabled=0
speaker: enabled=0
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
RC
echo c > "$work/cont.rc"
say "[3/4] booting Bochs (middle machine ~2 min, then each guest ~1 min; limit ${limit}s)"
start=$(date +%s)
(cd "$work" && timeout "$limit" bochs-bin -q -f bochsrc -rc cont.rc </dev/null >"$work/bochs.out" 2>&1) &
bochs=$!
shown=0
while kill -0 "$bochs" 2>/dev/null; do
    sleep 5
    if [ -f "$serial" ]; then
        lines=$(wc -l < "$serial")
        if [ "$lines" -gt "$shown" ]; then
            sed -n "$((shown + 1)),${lines}p" "$serial" | grep -aE 'NESTED|vmm-guest|Linux version|vmm:|net0|symmetry|guest TX|host TX|STAGE-FAIL' | sed "s/^/  +$(( $(date +%s) - start ))s  /" || true
            shown=$lines
        fi
    fi
done
wait "$bochs" || true
elapsed=$(( $(date +%s) - start ))
cp "$serial" "$cache/nested-last-serial.log" 2>/dev/null || true
say "      Bochs ran ${elapsed}s; full serial log: $cache/nested-last-serial.log"

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
g_tx=$(num "vmm-guest: eth0 tx_bytes=" "$vmm_part"); g_rx=$(num "vmm-guest: eth0 rx_bytes=" "$vmm_part")
t_rx=$(( $(num "VMM-AFTER vnet0 rx_bytes=" "$log") - $(num "VMM-BEFORE vnet0 rx_bytes=" "$log") ))
t_tx=$(( $(num "VMM-AFTER vnet0 tx_bytes=" "$log") - $(num "VMM-BEFORE vnet0 tx_bytes=" "$log") ))
net0=$(grep -a "net0: tap=vnet0" <<<"$vmm_part" | head -1)
v_tx=$(sed -n 's/.*guest_tx_bytes=\([0-9]*\).*/\1/p' <<<"$net0"); v_rx=$(sed -n 's/.*guest_rx_bytes=\([0-9]*\).*/\1/p' <<<"$net0")
printf 'test-linux:      %-28s %10s %10s %10s\n' "" "guest eth0" "vnet0" "vmm net0"
printf 'test-linux:      %-28s %10s %10s %10s\n' "guest TX bytes (vnet0 RX)" "$g_tx" "$t_rx" "$v_tx"
printf 'test-linux:      %-28s %10s %10s %10s\n' "guest RX bytes (vnet0 TX)" "$g_rx" "$t_tx" "$v_rx"
[ "$g_tx" = "$t_rx" ] && [ "$t_rx" = "$v_tx" ] || fail counters "guest TX $g_tx, vnet0 RX $t_rx, vmm $v_tx differ"
[ "$g_rx" = "$t_tx" ] && [ "$t_tx" = "$v_rx" ] || fail counters "guest RX $g_rx, vnet0 TX $t_tx, vmm $v_rx differ"

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
elif [ -n "$elf_part" ]; then
    fail "guest boot (vmlinux)" "the ELF vmlinux guest never reached /init under vmm"
fi
say "PASS: Linux booted under vmm on nested VMX KVM, pinged 192.0.2.1, guest eth0 == vnet0 == vmm counters"
