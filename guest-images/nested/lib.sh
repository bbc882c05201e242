# Shared by run.sh (make test-linux) and bench.sh (make bench-linux): builds the middle machine
# (cached), packs a payload (our vmm and tapctl, the Linux guest, QEMU 7.2, and
# $payload_programs), boots Bochs with it and leaves the serial log in $serial. The caller
# sets $payload_script (what the middle machine runs), $payload_programs, $payload_initramfs
# (the guest's initramfs in guest-images/out), `say` and `fail`.
# Recipe and measurements: shared/NESTED-VMX.md. Everything is cached in $VMM_CACHE.
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cache=${VMM_CACHE:-$HOME/.cache/vmm}
limit=${NESTED_TIMEOUT:-1200}

kver=6.1.0-56-amd64
for tool in bochs-bin syslinux mcopy mkfs.vfat cpio qemu-system-x86_64 busybox; do
    command -v "$tool" >/dev/null || fail setup "$tool is missing: apt-get install bochs bochsbios vgabios syslinux syslinux-common mtools dosfstools cpio qemu-system-x86 busybox-static"
done
[ -f "$top/guest-images/out/bzImage" ] || fail setup "no Linux guest: run make linux-guest first"
[ -x "$top/target/release/vmm" ] || fail setup "no target/release/vmm: run make build first"

# Debian's linux-image-$kver package (downloaded once into the cache), unpacked into $1.
unpack_kernel_deb() {
    local deb
    deb=$(ls "$cache"/debs/linux-image-${kver}_*.deb 2>/dev/null | head -1 || true)
    if [ -z "$deb" ]; then
        mkdir -p "$cache/debs"
        (cd "$cache/debs" && apt-get download "linux-image-$kver" >/dev/null 2>&1) || fail setup "cannot download linux-image-$kver"
        deb=$(ls "$cache"/debs/linux-image-${kver}_*.deb | head -1)
    fi
    dpkg-deb -x "$deb" "$1"
}

# 1. The middle machine's boot disk, cached by kernel version and init script.
key=$( (echo "$kver"; cat "$here/l1-init") | sha256sum | cut -c1-16)
l1=$cache/nested-l1-$key
if [ ! -f "$l1/l1.img" ]; then
    say "[1/4] building the middle machine ($kver, stock Debian kernel + kvm_intel)"
    rm -rf "$l1.tmp"; mkdir -p "$l1.tmp"
    unpack_kernel_deb "$l1.tmp/kpkg"
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

# 1b. With $payload_stock_kernel: the middle machine's own stock Debian kernel as a guest, with
# an initramfs of our init and the modules it needs for the NIC (Debian builds virtio-mmio and
# virtio-net as modules, and finds virtio-mmio devices through ACPI only).
stock_modules="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio net/core/failover drivers/net/net_failover drivers/net/virtio_net"
if [ -n "${payload_stock_kernel:-}" ]; then
    skey=$( (echo "$kver"; echo "$stock_modules"; cat "$top/guest-images/linux/init") | sha256sum | cut -c1-16)
    stock=$cache/stock-guest-$skey
    if [ ! -f "$stock/initramfs.cpio.gz" ]; then
        say "      the stock Debian kernel $kver as a guest: vmlinuz + an initramfs with its virtio modules"
        rm -rf "$stock.tmp"; mkdir -p "$stock.tmp/ir/bin" "$stock.tmp/ir/lib/modules" "$stock.tmp/ir/dev" "$stock.tmp/ir/proc" "$stock.tmp/ir/sys" "$stock.tmp/ir/tmp"
        unpack_kernel_deb "$stock.tmp/kpkg"
        cp "$stock.tmp/kpkg/boot/vmlinuz-$kver" "$stock.tmp/vmlinuz"
        for m in $stock_modules; do
            cp "$stock.tmp/kpkg/lib/modules/$kver/kernel/$m.ko" "$stock.tmp/ir/lib/modules/"
            echo "${m##*/}" >> "$stock.tmp/ir/modules"
        done
        cp "$(command -v busybox)" "$stock.tmp/ir/bin/busybox"
        cp "$top/guest-images/linux/init" "$stock.tmp/ir/init"; chmod +x "$stock.tmp/ir/init"
        (cd "$stock.tmp/ir" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 > "$stock.tmp/initramfs.cpio.gz"
        rm -rf "$stock.tmp/kpkg" "$stock.tmp/ir"
        rm -rf "$stock"; mv "$stock.tmp" "$stock"
    fi
fi

# 2. The payload disk: our vmm and tapctl, the Linux guest, QEMU, and their libraries.
work=$(mktemp -d /tmp/vmm-nested.XXXXXX)
[ -n "${NESTED_KEEP:-}" ] || trap 'rm -rf "$work" ${payload_cleanup:-}' EXIT
say "[2/4] payload: vmm, tapctl, guest kernel + initramfs, QEMU 7.2 as the reference"
p=$work/payload
mkdir -p "$p/payload" "$p/q/share" "$p/usr/bin" "$p/lib/x86_64-linux-gnu" "$p/lib64"
cp "$top/target/release/vmm" "$top/target/release/tapctl" "$p/payload/"
cp "$payload_script" "$p/payload/run.sh"
for extra in $payload_programs; do cp "$(command -v "$extra")" "$p/usr/bin/"; done
cp "$top/guest-images/out/bzImage" "$top/guest-images/out/$payload_initramfs" "$p/payload/"
[ -f "$top/guest-images/out/vmlinux" ] && cp "$top/guest-images/out/vmlinux" "$p/payload/"
if [ -n "${payload_stock_kernel:-}" ]; then
    cp "$stock/vmlinuz" "$p/payload/stock-vmlinuz"; cp "$stock/initramfs.cpio.gz" "$p/payload/stock-initramfs.cpio.gz"
fi
cp "$(command -v qemu-system-x86_64)" "$p/usr/bin/"
for rom in qboot.rom bios-microvm.bin linuxboot_dma.bin kvmvapic.bin; do cp -L "/usr/share/qemu/$rom" "$p/q/share/"; done
for bin in "$top/target/release/vmm" "$top/target/release/tapctl" "$(command -v qemu-system-x86_64)" \
           $(for extra in $payload_programs; do command -v "$extra"; done); do
    # (A static binary, as vmm is, has none: ldd says so and fails.)
    { ldd "$bin" 2>/dev/null || true; } | awk '/=> \//{print $3}' | while read -r lib; do cp -Ln "$lib" "$p/lib/x86_64-linux-gnu/" 2>/dev/null || true; done
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

