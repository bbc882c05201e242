//! `netprobe.mode=gso-rx`: accept merged RX buffers and GSO (VIRTIO_NET_F_MRG_RXBUF,
//! GUEST_CSUM, GUEST_TSO4), then wait (up to `netprobe.idle_ms`, default 10000) for one TCPv4
//! frame larger than the MTU — a 64 KiB-class segment the host did not cut up — spread over
//! several RX buffers. PASS when its header says GSO TCPV4, it filled more than one buffer
//! (`num_buffers`), it carries `netprobe.size` payload bytes (default 30000) and every one of
//! them is the test pattern.

use super::NetCtx;
use crate::net::{F_GUEST_CSUM, F_GUEST_TSO4, F_MRG_RXBUF, HDR_GSO_TCPV4};
use crate::packet::{self, TCP_HEADERS};

/// The features this mode asks for.
pub const FEATURES: u64 = F_GUEST_CSUM | F_GUEST_TSO4 | F_MRG_RXBUF;

/// Runs the mode.
pub fn run(ctx: &mut NetCtx) -> Result<(), &'static str> {
    if ctx.dev.features & FEATURES != FEATURES {
        return Err("the device offers no merged buffers with GSO (offload=off?)");
    }
    let size = ctx.number(b"netprobe.size", 30000)? as usize;
    let idle = ctx.number(b"netprobe.idle_ms", 10000)?;
    ctx.out.line(b"netprobe: gso-rx waiting");
    let deadline = ctx.clock.now_ms() + idle;
    while ctx.clock.now_ms() < deadline {
        let Some(m) = ctx.dev.poll_rx_merged(&mut ctx.clock)? else {
            continue;
        };
        let frame = ctx.dev.merged_frame(&m);
        if m.len <= 14 + usize::from(ctx.dev.mtu) {
            continue; // ARP, stray frames: not what we wait for
        }
        let gso_size = u16::from_le_bytes([m.header[4], m.header[5]]);
        ctx.out.str(b"netprobe: gso-rx");
        ctx.out.kv_dec(b"len", m.len as u64);
        ctx.out.kv_dec(b"num_buffers", u64::from(m.num_buffers));
        ctx.out.kv_dec(b"flags", u64::from(m.header[0]));
        ctx.out.kv_dec(b"gso_type", u64::from(m.header[1]));
        ctx.out.kv_dec(b"gso_size", u64::from(gso_size));
        ctx.out.line(b"");
        if m.header[1] & 0x7f != HDR_GSO_TCPV4 {
            return Err("the large frame is not a GSO TCPv4 frame");
        }
        if m.num_buffers < 2 {
            return Err("the large frame did not span several buffers");
        }
        if m.len != TCP_HEADERS + size {
            return Err("the large frame does not have netprobe.size payload bytes");
        }
        let payload = &frame[TCP_HEADERS..];
        if payload
            .iter()
            .enumerate()
            .any(|(i, b)| *b != packet::payload_byte(i))
        {
            return Err("a payload byte of the large frame is wrong");
        }
        return Ok(());
    }
    Err("no large GSO frame arrived")
}
