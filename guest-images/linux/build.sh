#!/usr/bin/env bash
# Builds the Linux test guest: guest-images/out/bzImage (Debian's linux-source-6.1 with
# tinyconfig + guest.config), the same kernel as an ELF (guest-images/out/vmlinux) and
# guest-images/out/initramfs.cpio.gz (busybox-static + init).
#
# The kernel takes about 8 minutes on 2 cores, so it is cached outside the checkout in
# $VMM_CACHE (default ~/.cache/vmm), keyed by the source package version, guest.config and this
# script. A second run with the same inputs copies the cached image.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/../out
cache=${VMM_CACHE:-$HOME/.cache/vmm}
mkdir -p "$out" "$cache"

need() { command -v "$1" >/dev/null || { echo "linux-guest: $1 is missing; install: $2" >&2; exit 1; }; }
[ -f /usr/src/linux-source-6.1.tar.xz ] || {
    echo "linux-guest: /usr/src/linux-source-6.1.tar.xz is missing; install: apt-get install linux-source-6.1 bc bison flex libelf-dev libssl-dev" >&2; exit 1; }
need gcc build-essential; need make make; need bison bison; need flex flex; need bc bc; need cpio cpio
[ -x /bin/busybox ] || { echo "linux-guest: /bin/busybox is missing; install: apt-get install busybox-static" >&2; exit 1; }

# Bump when the kernel build steps below change; the cache key covers it, the source package
# version and guest.config (the initramfs is rebuilt on every run: it takes a second).
KERNEL_RECIPE=1
src_version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %s /usr/src/linux-source-6.1.tar.xz)
key=$( (echo "recipe $KERNEL_RECIPE"; echo "$src_version"; cat "$here/guest.config") | sha256sum | cut -c1-16)
kdir=$cache/linux-$key

if [ -f "$kdir/bzImage" ]; then
    echo "linux-guest: kernel cached in $kdir (key $key)"
else
    echo "linux-guest: building the kernel (about 8 minutes on 2 cores) in $kdir"
    rm -rf "$kdir.tmp"; mkdir -p "$kdir.tmp"
    echo "linux-guest: [1/4] unpacking linux-source $src_version"
    tar -C "$kdir.tmp" -xf /usr/src/linux-source-6.1.tar.xz
    ksrc=$(echo "$kdir.tmp"/linux-source-6.1)
    echo "linux-guest: [2/4] tinyconfig + guest.config"
    make -C "$ksrc" -s ARCH=x86_64 tinyconfig
    "$ksrc/scripts/kconfig/merge_config.sh" -m -O "$ksrc" "$ksrc/.config" "$here/guest.config" >/dev/null
    make -C "$ksrc" -s ARCH=x86_64 olddefconfig
    # Every option of the fragment must have survived olddefconfig (a missing dependency drops it).
    missing=0
    while IFS= read -r line; do
        case "$line" in CONFIG_*=y) grep -qx "$line" "$ksrc/.config" || { echo "linux-guest: $line did not stick" >&2; missing=1; } ;; esac
    done < "$here/guest.config"
    [ "$missing" = 0 ] || exit 1
    echo "linux-guest: [3/4] compiling with $(nproc) jobs"
    make -C "$ksrc" ARCH=x86_64 -j"$(nproc)" bzImage 2>&1 | awk '/^  (CC|LD|AR|AS) /{n++; if (n % 200 == 0) {printf "linux-guest:   %d objects...\n", n; fflush()}} / error: |Error [0-9]/{print}'
    [ -f "$ksrc/arch/x86/boot/bzImage" ] || { echo "linux-guest: kernel build failed" >&2; exit 1; }
    cp "$ksrc/arch/x86/boot/bzImage" "$ksrc/vmlinux" "$ksrc/.config" "$kdir.tmp/"
    rm -rf "$ksrc"
    rm -rf "$kdir"; mv "$kdir.tmp" "$kdir"
fi
cp "$kdir/bzImage" "$out/bzImage"
# The same kernel uncompressed, as an ELF: vmm boots it directly, skipping the XZ step.
strip -o "$out/vmlinux" "$kdir/vmlinux" 2>/dev/null || cp "$kdir/vmlinux" "$out/vmlinux"
echo "linux-guest: [4/4] initramfs from busybox-static"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"/{bin,dev,proc,sys,tmp}
cp /bin/busybox "$tmp/bin/busybox"
cp "$here/init" "$tmp/init"
pack() { (cd "$tmp" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 > "$1"; }
pack "$out/initramfs.cpio.gz"
# The same with iperf3 and its libraries, when the host has it (apt-get install iperf3), for
# measuring (`make bench-linux`). A separate image: 4 MB more to unpack slows every boot.
rm -f "$out/initramfs-iperf3.cpio.gz"
if command -v iperf3 >/dev/null; then
    mkdir -p "$tmp/usr/bin" "$tmp/lib/x86_64-linux-gnu" "$tmp/lib64"
    cp "$(command -v iperf3)" "$tmp/usr/bin/"
    ldd "$(command -v iperf3)" | awk '/=> \//{print $3}' | while read -r lib; do cp -L "$lib" "$tmp/lib/x86_64-linux-gnu/"; done
    cp -L /lib64/ld-linux-x86-64.so.2 "$tmp/lib64/"
    pack "$out/initramfs-iperf3.cpio.gz"
    echo "linux-guest:       and $out/initramfs-iperf3.cpio.gz with $(iperf3 --version | head -1 | cut -d' ' -f1-2)"
fi
echo "linux-guest: done: $out/bzImage ($(stat -c %s "$out/bzImage") bytes), $out/initramfs.cpio.gz ($(stat -c %s "$out/initramfs.cpio.gz") bytes)"
