#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/<target>/), in the little
programs each target reads (see the comments at the top of fuzz/fuzz_targets/*.rs).

Run from the repository root after `make netprobe` (the kernel_loader seeds are netprobe's
bzImage and ELF): python3 fuzz/seeds/make-seeds.py
"""
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))


def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)


def write(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)


# --- virtio_net_queues -------------------------------------------------------------------
VERSION_1, MAC, MTU, MRG_RXBUF, EVENT_IDX = 32, 5, 3, 15, 29
CSUM, GUEST_CSUM, GUEST_TSO4, HOST_TSO4 = 0, 1, 7, 11
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4


def features(*bits):
    return u64(sum(1 << b for b in bits))


def geometry(size_log2, desc, avail, used):
    return u8(size_log2) + u16(desc) + u16(avail) + u16(used)


# RX queue: 16 entries, rings at 0x0000/0x1000/0x2000; TX: 16 entries at 0x3000/0x4000/0x5000.
RINGS = geometry(4, 0x0000, 0x1000, 0x2000) + geometry(4, 0x3000, 0x4000, 0x5000)
def desc(q, i, addr, length, flags, nxt): return u8(0) + u8(q) + u16(i) + u8(1) + u16(addr) + u32(length) + u16(flags) + u16(nxt)
def publish(q, head): return u8(1) + u8(q) + u16(head)
def chain(q, first, count, addr, length): return u8(2) + u8(q) + u16(first) + u8(count - 1) + u16(addr) + u16(length)
def frame(length, fill): return u8(3) + u16(length) + u8(fill)
def read_err(choice): return u8(4) + u8(choice)      # 0 EAGAIN, 1 EIO, 2 EBADFD, 3 EINVAL
def write_res(choice): return u8(5) + u8(choice)     # 0 ok, 1 EAGAIN, 2 EIO, 3 EINVAL
TX, RX, RESET = u8(6), u8(7), u8(9)
def poke(at, data): return u8(8) + u16(at) + u8(len(data) - 1) + data

plain = features(VERSION_1, MAC, MTU)
merged = features(VERSION_1, MAC, MTU, MRG_RXBUF, EVENT_IDX, CSUM, GUEST_CSUM, HOST_TSO4)
Q = "virtio_net_queues"
write(Q, "tx-one-frame", plain + RINGS + chain(1, 0, 1, 0x8000, 72) + TX)
write(Q, "tx-split-eagain-eio", plain + RINGS + chain(1, 0, 3, 0x8000, 40) + chain(1, 3, 1, 0x9000, 100)
      + write_res(1) + TX + write_res(2) + TX + TX)
write(Q, "rx-one-frame", plain + RINGS + chain(0, 0, 1, 0x8000, 1526) + frame(100, 0x11) + RX + frame(60, 0x22) + RX)
write(Q, "rx-merged", merged + RINGS + b"".join(chain(0, i, 1, 0x8000 + i * 0x400, 512) for i in range(8))
      + frame(1514, 0x33) + read_err(1) + RX + frame(5, 0) + RX)
write(Q, "broken-chains", plain + RINGS
      + desc(1, 0, 0x8000, 72, F_NEXT, 0) + publish(1, 0)          # a loop
      + desc(1, 1, 0x8000, 72, F_NEXT, 200) + publish(1, 1)        # next past the table
      + desc(1, 2, 0x9000, 16, F_INDIRECT, 0) + publish(1, 2)      # INDIRECT, not offered
      + desc(0, 0, 0x8000, 1526, F_WRITE | F_INDIRECT, 0) + publish(0, 0) + frame(80, 1)
      + TX + RX)
write(Q, "corrupt-avail-and-reset", plain + RINGS + chain(1, 0, 1, 0x8000, 72) + poke(0x4002, u16(40))
      + TX + RESET + chain(1, 0, 1, 0x8000, 72) + TX + publish(0, 17) + RX)

# --- virtio_mmio_transport ---------------------------------------------------------------
M = "virtio_mmio_transport"
def start(feats, at0, log0, at1, log1): return u8(7) + u64(feats) + u8(at0) + u8(log0) + u8(at1) + u8(log1)
def reg_read(index, width_sel=0): return u8(0) + u8(index) + u8(width_sel)
def reg_write(index, value, width_sel=0): return u8(1) + u8(index) + u8(width_sel) + u32(value)
STATUS, QUEUE_SEL, QUEUE_NUM, QUEUE_READY, INT_ACK, DRV_FEAT = 15, 8, 10, 11, 14, 6
write(M, "start-and-read", start((1 << 32) | (1 << 5), 0x10, 4, 0x40, 4)
      + b"".join(reg_read(i) for i in range(22)) + reg_read(20, 3) + reg_read(21, 4))
write(M, "start-unoffered", start(0xffff_ffff_ffff_ffff, 0x10, 8, 0x40, 8) + reg_write(STATUS, 0))
write(M, "by-hand", reg_write(STATUS, 1) + reg_write(STATUS, 3) + reg_write(DRV_FEAT, 1 << 5)
      + reg_write(STATUS, 0xb) + reg_write(QUEUE_SEL, 1) + reg_write(QUEUE_NUM, 64)
      + reg_write(QUEUE_READY, 1) + reg_write(STATUS, 0xf) + reg_write(QUEUE_NUM, 8)
      + reg_write(INT_ACK, 3) + reg_write(STATUS, 0x8f) + reg_write(STATUS, 0))

# --- kernel_loader -----------------------------------------------------------------------
K = "kernel_loader"
def boot_input(image, cmdline=b"quiet", initrd=b"", flags=0, cpus=1, nics=1):
    return u8(flags) + u8(cpus - 1) + u8(nics) + u16(len(cmdline)) + cmdline + u16(len(initrd)) + initrd + image

out = os.path.join(ROOT, "..", "..", "guest-images", "out")
for name in ("netprobe.bzImage", "netprobe.elf"):
    path = os.path.join(out, name)
    if os.path.exists(path):
        image = open(path, "rb").read()
        write(K, name, boot_input(image, initrd=b"\x07" * 4096, flags=1, cpus=2, nics=2))
    else:
        print(f"{path} not found: run `make netprobe` first for the kernel_loader seeds")
write(K, "not-a-kernel", boot_input(b"#!/bin/sh\necho hello\n"))
write(K, "tiny-elf-header", boot_input(b"\x7fELF\x02\x01\x01" + b"\0" * 57))
