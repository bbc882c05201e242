//! `netprobe.mode=echo`: send every received frame back with source and destination MAC
//! swapped, until `netprobe.count` (default 10) frames were echoed or nothing arrived for
//! `netprobe.idle_ms` (default 5000). PASS when `count` frames were echoed.

use super::NetCtx;
use crate::packet;

/// Runs the mode.
pub fn run(ctx: &mut NetCtx) -> Result<(), &'static str> {
    let count = ctx.number(b"netprobe.count", 10)?;
    let idle = ctx.number(b"netprobe.idle_ms", 5000)?;
    let mut echoed = 0u64;
    let mut last = ctx.clock.now_ms();
    while echoed < count && ctx.clock.now_ms() < last + idle {
        let Some(rx) = ctx.dev.poll_rx() else {
            continue;
        };
        last = ctx.clock.now_ms();
        while !ctx.dev.send_edited_copy(&rx, packet::swap_macs) {}
        echoed += 1;
        ctx.dev.release(rx);
    }
    ctx.out.str(b"netprobe: echo");
    ctx.out.kv_dec(b"echoed", echoed);
    ctx.out.line(b"");
    if echoed == count {
        Ok(())
    } else {
        Err("fewer frames arrived to echo than netprobe.count")
    }
}
