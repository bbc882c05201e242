//! Opening a NIC's host side, the way each `--net` kind asks:
//!
//! - `tap=NAME`: open the tap, creating it if absent (a tap we create is not persistent: it
//!   vanishes with our fd); with `bridge=` attach it, with `mtu=` set its MTU. Changes to a tap
//!   that existed before are undone at exit.
//! - `macvtap=NAME,link=DEV`: create the macvtap on DEV in `mode` (default bridge), open its
//!   `/dev/tapN`, delete it at exit. Without `link=`: open an existing macvtap.
//! - `fd=N`: adopt an open tap or macvtap fd.
//!
//! The guest MAC: `mac=` if given; else a macvtap's own MAC (frames reach a macvtap only for its
//! MAC, so with `mac=` the macvtap's MAC is set to it, and restored at exit if the macvtap was
//! there before); else a stable MAC from the tap name ([`super::default_mac`]).

use std::os::fd::{FromRawFd, OwnedFd};

use vmm_tap::netlink::{Changes, Link};
use vmm_tap::{Host, HostError, MacvtapMode, Tap};
use vmm_virtio_net::MacAddr;

use super::cleanup::{Undo, UndoLog};
use super::symmetry::HostKind;
use super::{default_mac, NetError, NicConfig, NicHost};

/// A NIC's host side, opened.
pub struct HostSide {
    /// The fd, ready for the device.
    pub tap: Tap,
    /// The guest's MAC.
    pub mac: MacAddr,
    /// The interface's MTU.
    pub mtu: u32,
    /// How the report names it.
    pub label: String,
    /// Tap or macvtap (what the symmetry table explains).
    pub kind: HostKind,
    /// The interface's index, to follow its link state.
    pub ifindex: u32,
}

/// Opens NIC `index`'s host side; `host` is the netlink connection, made on first use, and
/// every change to a host device is recorded in `undo`.
pub fn open(
    index: usize,
    config: &NicConfig,
    host: &mut Option<Host>,
    undo: &UndoLog,
) -> Result<HostSide, NetError> {
    let host_err = |source| NetError::Host { index, source };
    let tap_err = |source| NetError::Tap { index, source };
    if host.is_none() {
        *host = Some(Host::new().map_err(host_err)?);
    }
    let Some(host) = host.as_mut() else {
        unreachable!()
    };

    match &config.backend {
        NicHost::Tap { name, bridge, mtu } => {
            // Check everything that can be wrong before changing anything.
            let before = host.find(name).map_err(host_err)?;
            let bridge = bridge
                .as_deref()
                .map(|b| host.bridge(b))
                .transpose()
                .map_err(host_err)?;
            let tap = Tap::open(name).map_err(tap_err)?;
            let link = host.get(name, "tap").map_err(host_err)?;
            if let Some(mtu) = *mtu {
                if let Some(old) = before.as_ref().and_then(|l| l.mtu) {
                    undo.register(Undo::SetMtu(name.clone(), old));
                }
                host.set(
                    &link,
                    Changes {
                        mtu: Some(mtu),
                        ..Changes::NONE
                    },
                )
                .map_err(host_err)?;
            }
            if let Some(bridge) = &bridge {
                if let Some(before) = &before {
                    undo.register(Undo::SetMaster(name.clone(), before.master.unwrap_or(0)));
                }
                host.attach(&link, bridge).map_err(host_err)?;
                log::info!("net{index}: tap {name} attached to bridge {}", bridge.name);
            }
            let mtu = tap.mtu().map_err(tap_err)?;
            let mac = config.mac.unwrap_or_else(|| default_mac(name));
            Ok(HostSide {
                tap,
                mac,
                mtu,
                label: name.clone(),
                kind: HostKind::Tap,
                ifindex: link.index,
            })
        }
        NicHost::Macvtap {
            name,
            link: Some(lower),
            mode,
        } => {
            if host.find(name).map_err(host_err)?.is_some() {
                return Err(host_err(HostError::Exists(format!(
                    "{name} (drop link= to use the existing macvtap as it is)"
                ))));
            }
            let mode = mode.unwrap_or(MacvtapMode::Bridge);
            let created = host
                .add_macvtap(name, lower, mode, config.mac.map(|m| m.0))
                .map_err(host_err)?;
            undo.register(Undo::DeleteLink(name.clone()));
            log::info!("net{index}: created macvtap {name} ({mode}) on {lower}");
            let tap = Tap::open_macvtap(name).map_err(tap_err)?;
            finish_macvtap(index, config, host, undo, tap, created, name.clone())
        }
        NicHost::Macvtap {
            name, link: None, ..
        } => {
            let link = host.get(name, "macvtap").map_err(host_err)?;
            let tap = Tap::open_macvtap(name).map_err(tap_err)?;
            if !link.up {
                undo.register(Undo::SetDown(name.clone()));
                host.set(
                    &link,
                    Changes {
                        up: Some(true),
                        ..Changes::NONE
                    },
                )
                .map_err(host_err)?;
            }
            finish_macvtap(index, config, host, undo, tap, link, name.clone())
        }
        NicHost::Fd(fd) => {
            // SAFETY: check_nics verified the fd is open before the VMM opened anything, so it
            // is the caller's, handed to us for this NIC, and nothing else in the VMM uses it.
            let owned = unsafe { OwnedFd::from_raw_fd(*fd) };
            let tap = Tap::from_fd(owned).map_err(tap_err)?;
            let name = tap.name().to_owned();
            let label = format!("fd{fd}:{name}");
            let link = host.get(&name, "tap or macvtap").map_err(host_err)?;
            if link.kind.as_deref() == Some("macvtap") {
                return finish_macvtap(index, config, host, undo, tap, link, label);
            }
            let mtu = tap.mtu().map_err(tap_err)?;
            let mac = config.mac.unwrap_or_else(|| default_mac(&name));
            Ok(HostSide {
                tap,
                mac,
                mtu,
                label,
                kind: HostKind::Tap,
                ifindex: link.index,
            })
        }
    }
}

/// The guest MAC of a macvtap NIC: `mac=` (set on the macvtap too) or the macvtap's own.
fn finish_macvtap(
    index: usize,
    config: &NicConfig,
    host: &mut Host,
    undo: &UndoLog,
    tap: Tap,
    link: Link,
    label: String,
) -> Result<HostSide, NetError> {
    let host_err = |source| NetError::Host { index, source };
    let own = link.mac.map(MacAddr);
    let mac = match (config.mac, own) {
        (Some(wanted), Some(own)) if wanted != own => {
            undo.register(Undo::SetMac(link.name.clone(), own.0));
            host.set(
                &link,
                Changes {
                    mac: Some(wanted.0),
                    ..Changes::NONE
                },
            )
            .map_err(host_err)?;
            wanted
        }
        (Some(wanted), _) => wanted,
        (None, Some(own)) => own,
        (None, None) => default_mac(&link.name),
    };
    let mtu = link.mtu.unwrap_or(1500);
    Ok(HostSide {
        tap,
        mac,
        mtu,
        label,
        kind: HostKind::Macvtap,
        ifindex: link.index,
    })
}
