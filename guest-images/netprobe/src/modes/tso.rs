//! `netprobe.mode=tso`: send one TCPv4 segment of `netprobe.size` payload bytes (default
//! 16384) to `netprobe.peer`, port 5001, as a Linux guest with TSO does: checksum left to the
//! host (NEEDS_CSUM from `csum_start`) and "cut me into MSS-sized segments" (`gso_type`
//! TCPV4, `gso_size` = MTU - 40). The host kernel does both; the test checks what arrives.
//! Needs VIRTIO_NET_F_CSUM and HOST_TSO4 (`--net ...,offload=off` has neither: FAIL).
//! `netprobe.peer_mac=` skips ARP (a peer without an address sends no RST back).

use super::NetCtx;
use crate::cmdline::{param, parse_mac};
use crate::net::{F_CSUM, F_HOST_TSO4, HDR_F_NEEDS_CSUM, HDR_GSO_TCPV4, HDR_LEN, MAX_GSO_FRAME};
use crate::packet::{self, TCP_HEADERS};

/// The features this mode asks for.
pub const FEATURES: u64 = F_CSUM | F_HOST_TSO4;

/// Runs the mode.
pub fn run(ctx: &mut NetCtx) -> Result<(), &'static str> {
    if ctx.dev.features & FEATURES != FEATURES {
        return Err("the device offers no TSO (VIRTIO_NET_F_CSUM + HOST_TSO4; offload=off?)");
    }
    let ip = ctx.address(b"netprobe.ip")?;
    let peer = ctx.address(b"netprobe.peer")?;
    let max = (MAX_GSO_FRAME - TCP_HEADERS) as u64;
    let size = ctx.number(b"netprobe.size", 16384)?.clamp(1, max) as usize;
    let mss = usize::from(ctx.dev.mtu) - 40;
    let peer_mac = match param(ctx.cmdline, b"netprobe.peer_mac") {
        Some(v) => parse_mac(v).ok_or("netprobe.peer_mac does not parse")?,
        None => ctx.resolve(peer)?,
    };
    let mac = ctx.dev.mac;

    // virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers.
    let mut header = [0u8; HDR_LEN];
    header[0] = HDR_F_NEEDS_CSUM;
    header[1] = HDR_GSO_TCPV4;
    header[2..4].copy_from_slice(&(TCP_HEADERS as u16).to_le_bytes());
    header[4..6].copy_from_slice(&(mss as u16).to_le_bytes());
    header[6..8].copy_from_slice(&34u16.to_le_bytes()); // the TCP header, after Ethernet + IPv4
    header[8..10].copy_from_slice(&16u16.to_le_bytes()); // its checksum field
    let start = ctx.clock.now_ms();
    while !ctx.dev.send_big(&header, |b| {
        packet::tcp_segment(b, size, mac, peer_mac, ip, peer)
    }) {
        if ctx.clock.now_ms() > start + 10_000 {
            return Err("the device stopped completing frames");
        }
    }
    while ctx.dev.tx_in_flight() > 0 && ctx.clock.now_ms() < start + 10_000 {
        ctx.dev.reclaim_tx();
    }
    ctx.out.str(b"netprobe: tso");
    ctx.out.kv_dec(b"size", size as u64);
    ctx.out.kv_dec(b"gso_size", mss as u64);
    ctx.out.kv_dec(b"segments", size.div_ceil(mss) as u64);
    ctx.out.line(b"");
    Ok(())
}
