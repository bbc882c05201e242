//! What the seed articles do with `brctl` and `ip`, in code: bridges, taps, macvtaps, and
//! attaching ports to bridges. Used by `tapctl` and by the VMM's `--net` options.

use std::io;

use netlink_packet_route::link::{InfoBridge, InfoData, InfoKind, MacVtapMode};

use crate::ifname::{validate_ifname, IfNameError};
use crate::netlink::{Changes, Link, Netlink};
use crate::tap::{Tap, TapError};

/// Errors of host network operations, each naming the fix where there is one.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Invalid interface name.
    #[error(transparent)]
    Name(#[from] IfNameError),
    /// Tap ioctl failure.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// A device we need is not there.
    #[error("{kind} {name} does not exist{hint}")]
    Missing {
        /// "bridge", "lower device", "interface".
        kind: &'static str,
        /// Its name.
        name: String,
        /// How to get it, if we know.
        hint: &'static str,
    },
    /// A device to be created exists already.
    #[error("{0} already exists")]
    Exists(String),
    /// `bridge=X` where X is not a bridge.
    #[error("{0} is not a bridge")]
    NotABridge(String),
    /// Not allowed.
    #[error("permission denied to {what}: run as root or with CAP_NET_ADMIN")]
    Permission {
        /// What we tried.
        what: String,
    },
    /// The kernel lacks the feature (module not loaded).
    #[error("the kernel cannot {what} (is the {module} module available? modprobe {module})")]
    Unsupported {
        /// What we tried.
        what: String,
        /// The module it needs.
        module: &'static str,
    },
    /// A mode name we do not know.
    #[error("unknown macvtap mode {0:?}: use bridge, vepa, private or passthru")]
    BadMode(String),
    /// Any other netlink failure.
    #[error("cannot {what}")]
    Netlink {
        /// What we tried.
        what: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
}

/// How a macvtap treats traffic between macvtaps on the same lower device (the seed article's
/// modes; `ip link add ... type macvtap mode X`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum MacvtapMode {
    /// Macvtaps on the same lower device talk to each other directly.
    Bridge,
    /// Everything goes out to the external switch, which must hairpin it back (802.1Qbg).
    Vepa,
    /// Like VEPA, but macvtaps never reach each other, even via the switch.
    Private,
    /// The one macvtap owns the lower device (and can change its MAC, go promiscuous).
    Passthru,
}

impl std::str::FromStr for MacvtapMode {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Self, HostError> {
        match s {
            "bridge" => Ok(Self::Bridge),
            "vepa" => Ok(Self::Vepa),
            "private" => Ok(Self::Private),
            "passthru" => Ok(Self::Passthru),
            _ => Err(HostError::BadMode(s.to_owned())),
        }
    }
}

impl std::fmt::Display for MacvtapMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bridge => "bridge",
            Self::Vepa => "vepa",
            Self::Private => "private",
            Self::Passthru => "passthru",
        })
    }
}

impl From<MacvtapMode> for MacVtapMode {
    fn from(mode: MacvtapMode) -> Self {
        match mode {
            MacvtapMode::Bridge => MacVtapMode::Bridge,
            MacvtapMode::Vepa => MacVtapMode::Vepa,
            MacvtapMode::Private => MacVtapMode::Private,
            MacvtapMode::Passthru => MacVtapMode::Passthrough,
        }
    }
}

/// Names the mode of a macvtap as reported by the kernel.
pub fn mode_name(mode: MacVtapMode) -> &'static str {
    match mode {
        MacVtapMode::Bridge => "bridge",
        MacVtapMode::Vepa => "vepa",
        MacVtapMode::Private => "private",
        MacVtapMode::Passthrough => "passthru",
        MacVtapMode::Source => "source",
        _ => "other",
    }
}

/// Turns a netlink error into a sentence about `what` was tried on `name`.
/// A netlink error as a `HostError`; `module` is the kernel module the request needs, named
/// when the kernel says the link type is not supported (EOPNOTSUPP).
fn nl_err(what: String, name: &str, module: &'static str, source: io::Error) -> HostError {
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => HostError::Permission { what },
        Some(libc::EEXIST) => HostError::Exists(name.to_owned()),
        Some(libc::EOPNOTSUPP) => HostError::Unsupported { what, module },
        _ => HostError::Netlink { what, source },
    }
}

/// The host's network devices, through one netlink socket.
pub struct Host {
    nl: Netlink,
}

impl Host {
    /// Opens the netlink socket.
    pub fn new() -> Result<Self, HostError> {
        let nl = Netlink::new().map_err(|source| HostError::Netlink {
            what: "open a netlink socket".into(),
            source,
        })?;
        Ok(Self { nl })
    }

    /// The link `name`, if it exists.
    pub fn find(&mut self, name: &str) -> Result<Option<Link>, HostError> {
        validate_ifname(name)?;
        self.nl.link(name).map_err(|source| HostError::Netlink {
            what: format!("look up {name}"),
            source,
        })
    }

    /// The link `name`, which must exist; `kind` words the error.
    pub fn get(&mut self, name: &str, kind: &'static str) -> Result<Link, HostError> {
        self.find(name)?.ok_or_else(|| HostError::Missing {
            kind,
            name: name.to_owned(),
            hint: "",
        })
    }

    /// The just-created link `name`, brought up (`ip link set NAME up`).
    fn get_up(&mut self, name: &str, kind: &'static str) -> Result<Link, HostError> {
        let link = self.get(name, kind)?;
        self.set(
            &link,
            Changes {
                up: Some(true),
                ..Changes::NONE
            },
        )?;
        Ok(link)
    }

    /// Every link.
    pub fn links(&mut self) -> Result<Vec<Link>, HostError> {
        self.nl.links().map_err(|source| HostError::Netlink {
            what: "list links".into(),
            source,
        })
    }

    /// Creates bridge `name` and brings it up (`ip link add NAME type bridge; ip link set NAME up`).
    /// Without `mcast_snooping` the bridge does not join 224.0.0.106 and so sends no IGMP report
    /// of its own (`mcast_snooping 0`): only its ports' traffic crosses it.
    pub fn add_bridge(&mut self, name: &str, mcast_snooping: bool) -> Result<Link, HostError> {
        validate_ifname(name)?;
        let data =
            (!mcast_snooping).then(|| InfoData::Bridge(vec![InfoBridge::MulticastSnooping(false)]));
        self.nl
            .new_link(name, InfoKind::Bridge, data, None, None)
            .map_err(|e| nl_err(format!("create bridge {name}"), name, "bridge", e))?;
        self.get_up(name, "bridge")
    }

    /// The bridge `name`, which must exist and be a bridge.
    pub fn bridge(&mut self, name: &str) -> Result<Link, HostError> {
        let link = self.find(name)?.ok_or_else(|| HostError::Missing {
            kind: "bridge",
            name: name.to_owned(),
            hint: " (create it: tapctl bridge add NAME)",
        })?;
        if link.kind.as_deref() != Some("bridge") {
            return Err(HostError::NotABridge(name.to_owned()));
        }
        Ok(link)
    }

    /// Creates a persistent tap `name` (it stays after we close it, like `ip tuntap add`);
    /// user `owner` and/or group `group` may then open it without CAP_NET_ADMIN.
    pub fn add_tap(
        &mut self,
        name: &str,
        owner: Option<u32>,
        group: Option<u32>,
    ) -> Result<Link, HostError> {
        if self.find(name)?.is_some() {
            return Err(HostError::Exists(name.to_owned()));
        }
        let tap = Tap::open(name)?;
        tap.set_owner(owner, group)?;
        tap.set_persistent(true)?;
        drop(tap);
        self.get(name, "tap")
    }

    /// Creates macvtap `name` on `lower` in `mode` (with `mac`, or a random one) and brings it up.
    pub fn add_macvtap(
        &mut self,
        name: &str,
        lower: &str,
        mode: MacvtapMode,
        mac: Option<[u8; 6]>,
    ) -> Result<Link, HostError> {
        validate_ifname(name)?;
        let lower_link = self.find(lower)?.ok_or_else(|| HostError::Missing {
            kind: "lower device",
            name: lower.to_owned(),
            hint: " (name an existing interface, e.g. eth0)",
        })?;
        self.nl
            .new_macvtap(name, lower_link.index, mode.into(), mac)
            .map_err(|e| {
                nl_err(
                    format!("create macvtap {name} on {lower}"),
                    name,
                    "macvtap",
                    e,
                )
            })?;
        // Created but not up is still created: take it away again rather than leave it behind
        // for a caller that only records the deletion once this returns.
        self.get_up(name, "macvtap").inspect_err(|_| {
            let _ = self.delete(name);
        })
    }

    /// Attaches `dev` to `bridge` (`ip link set DEV master BRIDGE`).
    pub fn attach(&mut self, dev: &Link, bridge: &Link) -> Result<(), HostError> {
        self.set(
            dev,
            Changes {
                master: Some(bridge.index),
                ..Changes::NONE
            },
        )
    }

    /// Detaches `dev` from its bridge (`ip link set DEV nomaster`).
    pub fn detach(&mut self, dev: &Link) -> Result<(), HostError> {
        self.set(
            dev,
            Changes {
                master: Some(0),
                ..Changes::NONE
            },
        )
    }

    /// Applies `changes` to `link`.
    pub fn set(&mut self, link: &Link, changes: Changes) -> Result<(), HostError> {
        self.nl
            .set_link(link.index, changes)
            .map_err(|e| nl_err(format!("change {}", link.name), &link.name, "", e))
    }

    /// Deletes the link `name`.
    pub fn delete(&mut self, name: &str) -> Result<(), HostError> {
        let link = self.get(name, "interface")?;
        self.nl
            .del_link(link.index)
            .map_err(|e| nl_err(format!("delete {name}"), name, "", e))
    }

    /// The name of the link with `index`.
    pub fn name_of(&mut self, index: u32) -> Option<String> {
        self.links()
            .ok()?
            .into_iter()
            .find(|l| l.index == index)
            .map(|l| l.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unsupported_link_type_names_the_module_it_needs() {
        let eopnotsupp = || io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        let bridge = nl_err("create bridge br0".into(), "br0", "bridge", eopnotsupp());
        assert!(bridge.to_string().contains("modprobe bridge"), "{bridge}");
        let macvtap = nl_err("create macvtap mv0".into(), "mv0", "macvtap", eopnotsupp());
        assert!(
            macvtap.to_string().contains("modprobe macvtap"),
            "{macvtap}"
        );
    }

    #[test]
    fn test_macvtap_modes_parse_and_print() {
        for name in ["bridge", "vepa", "private", "passthru"] {
            let mode: MacvtapMode = name.parse().unwrap();
            assert_eq!(mode.to_string(), name);
        }
        let err = "switch".parse::<MacvtapMode>().unwrap_err().to_string();
        assert!(err.contains("bridge, vepa, private or passthru"), "{err}");
    }

    #[test]
    fn test_missing_bridge_error_names_the_fix() {
        let err = HostError::Missing {
            kind: "bridge",
            name: "br0".into(),
            hint: " (create it: tapctl bridge add NAME)",
        };
        assert_eq!(
            err.to_string(),
            "bridge br0 does not exist (create it: tapctl bridge add NAME)"
        );
    }
}
