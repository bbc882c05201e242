//! `netprobe.mode=ping`: ARP for `netprobe.peer`, then `netprobe.count` (default 4) ICMP echo
//! requests, one at a time, each waiting up to 1 s for its reply. PASS when every reply came.
//! Meanwhile ARP and echo requests for `netprobe.ip` are answered.

use super::NetCtx;
use crate::packet::{self, Packet};

/// ICMP identifier of our echo requests.
const ECHO_ID: u16 = 0x6e70; // "np"

/// Runs the mode.
pub fn run(ctx: &mut NetCtx) -> Result<(), &'static str> {
    let ip = ctx.address(b"netprobe.ip")?;
    let peer = ctx.address(b"netprobe.peer")?;
    let count = ctx.number(b"netprobe.count", 4)?.clamp(1, 65535) as u16;
    let peer_mac = ctx.resolve(peer)?;
    ctx.out.str(b"netprobe: arp peer=");
    ctx.out.ip(peer);
    ctx.out.str(b" mac=");
    ctx.out.mac(&peer_mac);
    ctx.out.line(b"");

    let mut replies = 0u64;
    for seq in 1..=count {
        let mac = ctx.dev.mac;
        while !ctx
            .dev
            .send_with(|b| packet::echo_request(b, mac, peer_mac, ip, peer, ECHO_ID, seq))
        {}
        let sent_at = ctx.clock.now_ms();
        let mut answered = false;
        while !answered && ctx.clock.now_ms() < sent_at + 1000 {
            let Some(rx) = ctx.dev.poll_rx() else {
                continue;
            };
            match packet::parse(ctx.dev.frame(&rx)) {
                Packet::EchoReply { src, id, seq: s }
                    if src == peer && id == ECHO_ID && s == seq =>
                {
                    answered = true
                }
                _ => {
                    ctx.answer(&rx);
                }
            }
            ctx.dev.release(rx);
        }
        if answered {
            replies += 1;
            ctx.out.str(b"netprobe: reply");
            ctx.out.kv_dec(b"seq", u64::from(seq));
            ctx.out.kv_dec(b"ms", ctx.clock.now_ms() - sent_at);
            ctx.out.line(b"");
        }
    }
    ctx.out.str(b"netprobe: ping");
    ctx.out.kv_dec(b"sent", u64::from(count));
    ctx.out.kv_dec(b"replies", replies);
    ctx.out.line(b"");
    if replies == u64::from(count) {
        Ok(())
    } else {
        Err("some echo requests got no reply")
    }
}
