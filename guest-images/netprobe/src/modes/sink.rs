//! `netprobe.mode=sink`: receive until `netprobe.count` (default 10) frames with the tests'
//! EtherType (0x88b5) have arrived, or nothing has arrived for `netprobe.idle_ms` (default
//! 5000). PASS when all arrived. Other frames are counted in rx_frames too, and ARP/ping for
//! `netprobe.ip` (if given) are answered.

use super::NetCtx;
use crate::packet::{self, Packet};

/// Runs the mode.
pub fn run(ctx: &mut NetCtx) -> Result<(), &'static str> {
    let count = ctx.number(b"netprobe.count", 10)?;
    let idle = ctx.number(b"netprobe.idle_ms", 5000)?;
    let mut received = 0u64;
    let mut last = ctx.clock.now_ms();
    while received < count && ctx.clock.now_ms() < last + idle {
        let Some(rx) = ctx.dev.poll_rx() else {
            continue;
        };
        last = ctx.clock.now_ms();
        match packet::parse(ctx.dev.frame(&rx)) {
            Packet::Test => received += 1,
            _ => {
                ctx.answer(&rx);
            }
        }
        ctx.dev.release(rx);
    }
    ctx.out.str(b"netprobe: sink");
    ctx.out.kv_dec(b"expected", count);
    ctx.out.kv_dec(b"received", received);
    ctx.out.line(b"");
    if received == count {
        Ok(())
    } else {
        Err("fewer test frames arrived than netprobe.count")
    }
}
