//! `netprobe.mode=echo`: send every frame addressed to us back with source and destination MAC
//! swapped, until `netprobe.count` (default 10) frames with the tests' EtherType (0x88b5) were
//! echoed, or nothing arrived for `netprobe.idle_ms` (default 5000). PASS when `count` were.
//! Broadcasts are not echoed (their echo would carry a broadcast source address), and other
//! traffic the host sends (ARP, whatever the kernel emits) does not use up `count`.

use super::NetCtx;
use crate::packet::{self, Packet};

/// Runs the mode.
pub fn run(ctx: &mut NetCtx) -> Result<(), &'static str> {
    let count = ctx.number(b"netprobe.count", 10)?;
    let idle = ctx.number(b"netprobe.idle_ms", 5000)?;
    let mac = ctx.dev.mac;
    let mut echoed = 0u64;
    let mut last = ctx.clock.now_ms();
    while echoed < count && ctx.clock.now_ms() < last + idle {
        let Some(rx) = ctx.dev.poll_rx() else {
            continue;
        };
        last = ctx.clock.now_ms();
        let frame = ctx.dev.frame(&rx);
        let to_us = frame.len() >= 14 && frame[..6] == mac;
        let is_test = matches!(packet::parse(frame), Packet::Test);
        if to_us {
            while !ctx.dev.send_edited_copy(&rx, packet::swap_macs) {}
            if is_test {
                echoed += 1;
            }
        }
        ctx.dev.release(rx);
    }
    ctx.out.str(b"netprobe: echo");
    ctx.out.kv_dec(b"echoed", echoed);
    ctx.out.line(b"");
    if echoed == count {
        Ok(())
    } else {
        Err("fewer test frames arrived to echo than netprobe.count")
    }
}
