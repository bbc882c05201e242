//! tapctl: the seed articles' host setup — bridges, taps, macvtaps — done with vmm's own code
//! (netlink and tap ioctls) instead of `brctl` and `ip`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vmm_tap::netlink::{Changes, Link};
use vmm_tap::{
    ensure_char_device, host, macvtap_char_device, Host, HostError, LinkStats, MacAddr, MacvtapMode,
};

/// Create and inspect the host side of virtual networking: bridges, taps and macvtaps.
#[derive(Parser)]
#[command(version, after_help = EXAMPLES)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bridges: `tapctl bridge add br0` (created and brought up), `tapctl bridge del br0`.
    Bridge {
        #[command(subcommand)]
        op: BridgeOp,
    },
    /// Persistent taps: `tapctl tap add vnet0 --bridge br0`.
    Tap {
        #[command(subcommand)]
        op: TapOp,
    },
    /// Macvtaps on a lower device: `tapctl macvtap add mv0 --link eth0 --mode bridge`.
    Macvtap {
        #[command(subcommand)]
        op: MacvtapOp,
    },
    /// Attach an interface to a bridge (`ip link set DEV master BR`).
    Attach {
        /// The interface.
        name: String,
        /// The bridge.
        #[arg(long)]
        bridge: String,
    },
    /// Detach an interface from its bridge.
    Detach {
        /// The interface.
        name: String,
    },
    /// Change an interface: link state, MTU, MAC.
    Set {
        /// The interface.
        name: String,
        /// Bring the link up.
        #[arg(long, conflicts_with = "down")]
        up: bool,
        /// Bring the link down.
        #[arg(long)]
        down: bool,
        /// New MTU.
        #[arg(long)]
        mtu: Option<u32>,
        /// New MAC address (aa:bb:cc:dd:ee:ff).
        #[arg(long)]
        mac: Option<MacAddr>,
    },
    /// Delete a bridge, tap or macvtap (and a macvtap's /dev/tapN node).
    Del {
        /// The interface.
        name: String,
    },
    /// Show interfaces: kind, bridge, MAC, MTU, state, byte counters, macvtap device.
    Show {
        /// Only this interface.
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum BridgeOp {
    /// Create a bridge and bring it up.
    Add {
        /// Bridge name.
        name: String,
        /// No multicast snooping: the bridge then sends no IGMP report of its own, so only its
        /// ports' traffic crosses it (`ip link add NAME type bridge mcast_snooping 0`).
        #[arg(long)]
        no_mcast_snooping: bool,
    },
    /// Delete a bridge (its ports are detached, not deleted).
    Del {
        /// Bridge name.
        name: String,
    },
}

#[derive(Subcommand)]
enum TapOp {
    /// Create a persistent tap (vnet_hdr), optionally attached to a bridge, and bring it up.
    Add {
        /// Tap name (at most 15 characters).
        name: String,
        /// Attach it to this bridge.
        #[arg(long)]
        bridge: Option<String>,
        /// Let this user (name or uid) run a VMM on it without privileges. Default: only
        /// tapctl's own user (and CAP_NET_ADMIN) may attach to it.
        #[arg(long, value_name = "USER")]
        owner: Option<String>,
        /// Let this group (name or gid) run a VMM on it without privileges.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
}

#[derive(Subcommand)]
enum MacvtapOp {
    /// Create a macvtap on a lower device, bring it up, and make its /dev/tapN node.
    Add {
        /// Macvtap name.
        name: String,
        /// The lower (physical or veth) device.
        #[arg(long)]
        link: String,
        /// How macvtaps on the same lower device reach each other.
        #[arg(long, value_enum, default_value = "bridge")]
        mode: MacvtapMode,
        /// MAC address (default: random).
        #[arg(long)]
        mac: Option<MacAddr>,
    },
}

const EXAMPLES: &str = "\
The seed setups:
  tapctl bridge add br0                       # ip link add br0 type bridge; ip link set br0 up
  tapctl tap add vnet0 --bridge br0           # ip tuntap add vnet0 mode tap vnet_hdr; ... master br0
  tapctl tap add vnet1 --bridge br0 --owner alice   # alice runs vmm --tap vnet1 without root
  tapctl macvtap add mv0 --link eth0 --mode bridge
  tapctl show
  tapctl del vnet0";

/// A MAC for a table, `-` when there is none.
fn mac_str(mac: Option<[u8; 6]>) -> String {
    mac.map_or("-".into(), |m| MacAddr(m).to_string())
}

fn kind_str(link: &Link, host: &mut Host) -> String {
    match link.kind.as_deref() {
        Some("tun") => "tap".into(),
        Some("macvtap") => {
            let lower = link
                .lower
                .and_then(|i| host.name_of(i))
                .unwrap_or_else(|| "?".into());
            let mode = link.macvtap_mode.map_or("?", host::mode_name);
            format!("macvtap/{mode}@{lower}")
        }
        Some(kind) => kind.into(),
        None => "device".into(),
    }
}

fn show(host: &mut Host, only: Option<&str>) -> Result<(), HostError> {
    let links = host.links()?;
    println!(
        "{:<16} {:<24} {:<10} {:<17} {:>5} {:<8} {:>12} {:>12}  DEVICE",
        "NAME", "KIND", "MASTER", "MAC", "MTU", "STATE", "RX_BYTES", "TX_BYTES"
    );
    for link in links.iter().filter(|l| only.is_none_or(|n| n == l.name)) {
        let master = link
            .master
            .and_then(|m| links.iter().find(|l| l.index == m))
            .map_or("-".into(), |l| l.name.clone());
        let (rx, tx) = LinkStats::read(&link.name).map_or(("-".into(), "-".into()), |s| {
            (s.rx_bytes.to_string(), s.tx_bytes.to_string())
        });
        let device =
            macvtap_char_device(&link.name).map_or("-".into(), |(p, _)| p.display().to_string());
        let state = if link.up {
            link.oper_state.clone()
        } else {
            "down".into()
        };
        println!(
            "{:<16} {:<24} {:<10} {:<17} {:>5} {:<8} {:>12} {:>12}  {}",
            link.name,
            kind_str(link, host),
            master,
            mac_str(link.mac),
            link.mtu.map_or("-".into(), |m| m.to_string()),
            state,
            rx,
            tx,
            device
        );
    }
    if let Some(name) = only {
        if !links.iter().any(|l| l.name == name) {
            return Err(HostError::Missing {
                kind: "interface",
                name: name.into(),
                hint: "",
            });
        }
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut host = Host::new()?;
    let h = &mut host;
    match args.command {
        Command::Bridge {
            op:
                BridgeOp::Add {
                    name,
                    no_mcast_snooping,
                },
        } => bridge_add(h, &name, !no_mcast_snooping)?,
        Command::Bridge {
            op: BridgeOp::Del { name },
        } => bridge_del(h, &name)?,
        Command::Tap {
            op:
                TapOp::Add {
                    name,
                    bridge,
                    owner,
                    group,
                },
        } => {
            let mut owner = owner.as_deref().map(|u| account_id(u, false)).transpose()?;
            let group = group.as_deref().map(|g| account_id(g, true)).transpose()?;
            let shared = owner.is_some() || group.is_some();
            if !shared {
                // A tap with neither owner nor group may be attached by anyone who can open
                // /dev/net/tun (0666 on most distributions): make it ours.
                // SAFETY: geteuid cannot fail.
                owner = Some(unsafe { libc::geteuid() });
            }
            tap_add(h, &name, bridge.as_deref(), owner, group, shared)?
        }
        Command::Macvtap {
            op:
                MacvtapOp::Add {
                    name,
                    link,
                    mode,
                    mac,
                },
        } => macvtap_add(h, &name, &link, mode, mac)?,
        Command::Attach { name, bridge } => attach(h, &name, &bridge)?,
        Command::Detach { name } => h.get(&name, "interface").and_then(|dev| h.detach(&dev))?,
        Command::Set {
            name,
            up,
            down,
            mtu,
            mac,
        } => {
            let up = if up {
                Some(true)
            } else if down {
                Some(false)
            } else {
                None
            };
            set(h, &name, up, mtu, mac)?
        }
        Command::Del { name } => del(h, &name)?,
        Command::Show { name } => show(h, name.as_deref())?,
    }
    Ok(())
}

/// `tapctl bridge add NAME`.
fn bridge_add(h: &mut Host, name: &str, mcast_snooping: bool) -> Result<(), HostError> {
    h.add_bridge(name, mcast_snooping)?;
    println!("bridge {name} created and up");
    Ok(())
}

/// `tapctl bridge del NAME`: only a bridge.
fn bridge_del(h: &mut Host, name: &str) -> Result<(), HostError> {
    h.bridge(name)?;
    h.delete(name)?;
    println!("bridge {name} deleted");
    Ok(())
}

/// `tapctl tap add NAME [--bridge BR]`: persistent, vnet_hdr, up.
/// The uid of user `name` (or the gid of group `name`); a number is taken as it is.
fn account_id(name: &str, group: bool) -> anyhow::Result<u32> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let kind = if group { "group" } else { "user" };
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| anyhow::anyhow!("invalid {kind} name {name:?}"))?;
    // SAFETY: getpwnam/getgrnam read a NUL-terminated name and return a pointer to static
    // storage or NULL; we read one field at once, on this (single) thread.
    let id = unsafe {
        if group {
            let entry = libc::getgrnam(c_name.as_ptr());
            (!entry.is_null()).then(|| (*entry).gr_gid)
        } else {
            let entry = libc::getpwnam(c_name.as_ptr());
            (!entry.is_null()).then(|| (*entry).pw_uid)
        }
    };
    id.ok_or_else(|| {
        anyhow::anyhow!("no {kind} named {name} (give a name from getent or a number)")
    })
}

fn tap_add(
    h: &mut Host,
    name: &str,
    bridge: Option<&str>,
    owner: Option<u32>,
    group: Option<u32>,
    shared: bool,
) -> Result<(), HostError> {
    let br = bridge.map(|b| h.bridge(b)).transpose()?;
    let tap = h.add_tap(name, owner, group)?;
    if let Some(br) = &br {
        h.attach(&tap, br)?;
    }
    h.set(
        &tap,
        Changes {
            up: Some(true),
            ..Changes::NONE
        },
    )?;
    println!(
        "tap {name} created{}{}",
        bridge.map_or(String::new(), |b| format!(", attached to {b}")),
        match (owner, group) {
            _ if !shared => String::new(),
            (u, g) => format!(
                ", usable without privileges by{}{}",
                u.map_or(String::new(), |u| format!(" uid {u}")),
                g.map_or(String::new(), |g| format!(" gid {g}"))
            ),
        }
    );
    Ok(())
}

/// `tapctl macvtap add NAME --link DEV [--mode M] [--mac M]`, with its /dev/tapN node.
fn macvtap_add(
    h: &mut Host,
    name: &str,
    link: &str,
    mode: MacvtapMode,
    mac: Option<MacAddr>,
) -> Result<(), HostError> {
    let created = h.add_macvtap(name, link, mode, mac.map(|m| m.0))?;
    let (path, devno) = macvtap_char_device(name)?;
    ensure_char_device(&path, devno).map_err(|source| HostError::Netlink {
        what: format!("create {}", path.display()),
        source,
    })?;
    println!(
        "macvtap {name} ({mode}) on {link}, mac {}, device {}",
        mac_str(created.mac),
        path.display()
    );
    Ok(())
}

/// `tapctl attach NAME --bridge BR`.
fn attach(h: &mut Host, name: &str, bridge: &str) -> Result<(), HostError> {
    let br = h.bridge(bridge)?;
    let dev = h.get(name, "interface")?;
    h.attach(&dev, &br)
}

/// `tapctl set NAME [--up|--down] [--mtu N] [--mac M]`.
fn set(
    h: &mut Host,
    name: &str,
    up: Option<bool>,
    mtu: Option<u32>,
    mac: Option<MacAddr>,
) -> Result<(), HostError> {
    let dev = h.get(name, "interface")?;
    h.set(
        &dev,
        Changes {
            up,
            mtu,
            mac: mac.map(|m| m.0),
            master: None,
        },
    )
}

/// `tapctl del NAME`, and a macvtap's /dev/tapN node with it.
fn del(h: &mut Host, name: &str) -> Result<(), HostError> {
    let node = macvtap_char_device(name).ok();
    h.delete(name)?;
    if let Some((path, _)) = node {
        let _ = std::fs::remove_file(path);
    }
    println!("{name} deleted");
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes on one line: "cannot create /dev/tap3: File exists".
            eprintln!("tapctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
