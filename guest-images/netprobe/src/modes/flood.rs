//! `netprobe.mode=flood`: send `netprobe.count` (default 100) UDP frames of `netprobe.size`
//! bytes (default 1000; Ethernet frame length) to `netprobe.peer`'s port 9. PASS when the
//! device has completed all of them. Link changes the device reports on the way are printed
//! (`netprobe: link down (config interrupt)`).

use super::NetCtx;
use crate::packet;

/// Runs the mode.
pub fn run(ctx: &mut NetCtx) -> Result<(), &'static str> {
    let ip = ctx.address(b"netprobe.ip")?;
    let peer = ctx.address(b"netprobe.peer")?;
    let count = ctx.number(b"netprobe.count", 100)?;
    let max = 14 + u64::from(ctx.dev.mtu);
    let size = ctx.number(b"netprobe.size", 1000)?.clamp(42, max) as usize;
    let peer_mac = ctx.resolve(peer)?;
    let mac = ctx.dev.mac;
    let start = ctx.clock.now_ms();
    for seq in 0..count {
        while !ctx
            .dev
            .send_with(|b| packet::udp(b, size, mac, peer_mac, ip, peer, seq as u16))
        {
            if ctx.clock.now_ms() > start + 60_000 {
                return Err("the device stopped completing frames");
            }
        }
        if seq % 32 == 0 {
            ctx.watch_link();
        }
        // Keep answering the host (ARP) while flooding.
        if let Some(rx) = ctx.dev.poll_rx() {
            ctx.answer(&rx);
            ctx.dev.release(rx);
        }
    }
    ctx.watch_link();
    ctx.out.str(b"netprobe: flood");
    ctx.out.kv_dec(b"frames", count);
    ctx.out.kv_dec(b"size", size as u64);
    ctx.out.kv_dec(b"ms", ctx.clock.now_ms() - start);
    ctx.out.line(b"");
    Ok(())
}
