//! What netprobe does, chosen by `netprobe.mode=`. Each mode returns `Ok` for PASS or the
//! reason for FAIL.
//!
//! Network modes share their setup ([`run_net_mode`]): find the virtio-mmio device on the
//! command line, bring the NIC up, print `netprobe: net mac=... mtu=... ready`, run, wait for
//! the last transmissions to complete, and print the counters line
//! `netprobe: tx_frames=N tx_bytes=N rx_frames=N rx_bytes=N` (Ethernet bytes).

pub mod boot;
pub mod cpus;
pub mod echo;
pub mod flood;
pub mod gso_rx;
pub mod ping;
pub mod sink;
pub mod tso;

use crate::boot_params::BootParams;
use crate::clock::Clock;
use crate::cmdline::{self, param, parse_ip, parse_u64};
use crate::console::Console;
use crate::net::NetDev;
use crate::packet::{self, Packet};

/// Everything a network mode works with.
pub struct NetCtx<'a> {
    /// The serial console.
    pub out: &'a mut Console,
    /// The NIC.
    pub dev: NetDev,
    /// The clock.
    pub clock: Clock,
    /// The kernel command line.
    pub cmdline: &'static [u8],
    /// netprobe.ip, if given.
    pub ip: Option<u32>,
}

impl NetCtx<'_> {
    /// `netprobe.<key>` as a number, or `default`.
    pub fn number(&self, key: &[u8], default: u64) -> Result<u64, &'static str> {
        match param(self.cmdline, key) {
            None => Ok(default),
            Some(v) => parse_u64(v).ok_or("a netprobe.* number does not parse"),
        }
    }

    /// `netprobe.<key>` as an IPv4 address (required).
    pub fn address(&self, key: &[u8]) -> Result<u32, &'static str> {
        param(self.cmdline, key)
            .ok_or("netprobe.ip and netprobe.peer are required for this mode")
            .and_then(|v| parse_ip(v).ok_or("a netprobe.* address does not parse"))
    }

    /// Answers what any host may ask of us: ARP for our address, ICMP echo to our address.
    /// Returns true if `rx` was such a request (and was answered).
    pub fn answer(&mut self, rx: &crate::net::RxFrame) -> bool {
        let Some(ip) = self.ip else { return false };
        match packet::parse(self.dev.frame(rx)) {
            Packet::ArpRequest {
                sender_mac,
                sender_ip,
                target,
            } if target == ip => {
                let mac = self.dev.mac;
                self.dev
                    .send_with(|b| packet::arp(b, 2, mac, ip, sender_mac, sender_ip));
                true
            }
            Packet::EchoRequest { dst } if dst == ip => {
                self.dev.send_edited_copy(rx, packet::echo_reply_in_place);
                true
            }
            _ => false,
        }
    }

    /// Prints `netprobe: link down` or `netprobe: link up` when the device reports a link
    /// change with a configuration-change interrupt.
    pub fn watch_link(&mut self) {
        if let Some(up) = self.dev.poll_link() {
            let line: &[u8] = if up {
                b"netprobe: link up (config interrupt)"
            } else {
                b"netprobe: link down (config interrupt)"
            };
            self.out.line(line);
        }
    }

    /// Resolves `peer`'s MAC with ARP: up to 5 requests, 1 s apart.
    pub fn resolve(&mut self, peer: u32) -> Result<[u8; 6], &'static str> {
        let ip = self.ip.ok_or("netprobe.ip is required")?;
        for _ in 0..5 {
            let mac = self.dev.mac;
            self.dev
                .send_with(|b| packet::arp(b, 1, mac, ip, [0; 6], peer));
            let deadline = self.clock.now_ms() + 1000;
            while self.clock.now_ms() < deadline {
                let Some(rx) = self.dev.poll_rx() else {
                    continue;
                };
                let found = match packet::parse(self.dev.frame(&rx)) {
                    Packet::ArpReply {
                        sender_mac,
                        sender_ip,
                    } if sender_ip == peer => Some(sender_mac),
                    _ => None,
                };
                if found.is_none() {
                    self.answer(&rx);
                }
                self.dev.release(rx);
                if let Some(mac) = found {
                    return Ok(mac);
                }
            }
        }
        Err("no ARP reply from netprobe.peer")
    }
}

/// Sets up the NIC with the basic features, runs `mode`, and prints the counters line.
pub fn run_net_mode(
    out: &mut Console,
    params: &BootParams,
    mode: fn(&mut NetCtx) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    run_net_mode_with(out, params, 0, mode)
}

/// Like [`run_net_mode`], also accepting the features of `extra` that the device offers.
pub fn run_net_mode_with(
    out: &mut Console,
    params: &BootParams,
    extra: u64,
    mode: fn(&mut NetCtx) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    let cmdline = params.cmdline();
    let base = cmdline::virtio_mmio_base(cmdline)
        .ok_or("no virtio_mmio.device= on the command line (start vmm with --tap)")?;
    let dev = NetDev::init(base, extra)?;
    out.str(b"netprobe: net mac=");
    out.mac(&dev.mac);
    out.kv_dec(b"mtu", u64::from(dev.mtu));
    out.line(b" ready");
    let ip = match param(cmdline, b"netprobe.ip") {
        Some(v) => Some(parse_ip(v).ok_or("netprobe.ip does not parse")?),
        None => None,
    };
    let mut ctx = NetCtx {
        out,
        dev,
        clock: Clock::start(),
        cmdline,
        ip,
    };
    let result = mode(&mut ctx);
    // Let the device complete what we sent, so TX counters are final.
    let deadline = ctx.clock.now_ms() + 1000;
    while ctx.dev.tx_in_flight() > 0 && ctx.clock.now_ms() < deadline {
        ctx.dev.reclaim_tx();
    }
    let s = ctx.dev.stats;
    ctx.out.str(b"netprobe:");
    ctx.out.kv_dec(b"tx_frames", s.tx_frames);
    ctx.out.kv_dec(b"tx_bytes", s.tx_bytes);
    ctx.out.kv_dec(b"rx_frames", s.rx_frames);
    ctx.out.kv_dec(b"rx_bytes", s.rx_bytes);
    ctx.out.line(b"");
    if result.is_ok() && ctx.dev.tx_in_flight() > 0 {
        return Err("the device did not complete every frame we sent");
    }
    result
}
