//! What `--tap` and `--net` ask for: the option grammar, the NIC list's checks, and the default
//! MAC. Nothing here touches the host.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;

use vmm_tap::MacvtapMode;
use vmm_virtio_net::MacAddr;

use super::NetError;
use crate::arch::layout::NIC_IRQS;

/// Where a NIC's frames go on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicHost {
    /// A tap by name, created if absent; optionally put on a bridge and given an MTU.
    Tap {
        /// Tap name.
        name: String,
        /// Bridge to attach it to.
        bridge: Option<String>,
        /// MTU to set on it.
        mtu: Option<u32>,
    },
    /// A macvtap: created on `link` in `mode` (and removed at exit), or an existing one.
    Macvtap {
        /// Macvtap name.
        name: String,
        /// Lower device to create it on; `None` opens an existing macvtap.
        link: Option<String>,
        /// Mode when creating it (default bridge).
        mode: Option<MacvtapMode>,
    },
    /// An already-open tap or macvtap file descriptor.
    Fd(RawFd),
}

/// One NIC as the user asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicConfig {
    /// The host side.
    pub backend: NicHost,
    /// Guest MAC; `None` picks one (see [`super::host`]).
    pub mac: Option<MacAddr>,
    /// Capture this NIC's frames to a pcap file.
    pub pcap: Option<PathBuf>,
    /// Offer checksum and segmentation offloads (`offload=on`, the default); `offload=off`
    /// makes the guest checksum and segment every frame itself, as before offloads existed.
    pub offload: bool,
}

impl NicConfig {
    /// `--tap NAME`: a tap with default options.
    pub fn tap(name: &str) -> Self {
        NicConfig {
            backend: NicHost::Tap {
                name: name.to_owned(),
                bridge: None,
                mtu: None,
            },
            mac: None,
            pcap: None,
            offload: true,
        }
    }

    /// A short description for messages: `tap vnet0`, `macvtap mv0`, `fd 3`.
    pub fn describe(&self) -> String {
        match &self.backend {
            NicHost::Tap { name, .. } => format!("tap {name}"),
            NicHost::Macvtap { name, .. } => format!("macvtap {name}"),
            NicHost::Fd(fd) => format!("fd {fd}"),
        }
    }

    /// The host interface name, when known before opening.
    pub fn ifname(&self) -> Option<&str> {
        match &self.backend {
            NicHost::Tap { name, .. } | NicHost::Macvtap { name, .. } => Some(name),
            NicHost::Fd(_) => None,
        }
    }
}

impl NicConfig {
    /// What makes two NICs collide: the same interface name or the same fd.
    fn backend_id(&self) -> String {
        match &self.backend {
            NicHost::Fd(fd) => format!("fd {fd}"),
            _ => self.ifname().unwrap_or_default().to_owned(),
        }
    }
}

impl FromStr for NicConfig {
    type Err = NetError;

    /// Parses `tap=NAME[,mac=M][,bridge=BR][,mtu=N]`,
    /// `macvtap=NAME[,link=DEV][,mode=bridge|vepa|private|passthru][,mac=M]` or `fd=N[,mac=M]`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| NetError::Spec {
            spec: spec.to_owned(),
            reason,
        };
        let mut pairs = Vec::new();
        for part in spec.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| err(format!("{part:?} is not key=value")))?;
            pairs.push((key, value));
        }
        let Some(&(kind, first)) = pairs.first() else {
            return Err(err("empty".into()));
        };
        let known: &[&str] = match kind {
            "tap" => &["mac", "bridge", "mtu", "pcap", "offload"],
            "macvtap" => &["mac", "link", "mode", "pcap", "offload"],
            "fd" => &["mac", "pcap", "offload"],
            _ => {
                return Err(err(format!(
                    "must start with tap=, macvtap= or fd=, not {kind}="
                )))
            }
        };
        let mut mac = None;
        let mut pcap = None;
        let mut offload = true;
        let (mut bridge, mut mtu, mut link, mut mode) = (None, None, None, None);
        for &(key, value) in &pairs[1..] {
            if !known.contains(&key) {
                return Err(err(format!(
                    "unknown option {key:?} for {kind}= (known: {})",
                    known.join(", ")
                )));
            }
            match key {
                "mac" => {
                    let parsed: MacAddr = value.parse().map_err(|e| err(format!("{e}")))?;
                    if parsed.is_multicast() {
                        return Err(err(format!(
                            "{value} is a multicast address; a NIC needs a unicast MAC"
                        )));
                    }
                    mac = Some(parsed);
                }
                "bridge" => bridge = Some(value.to_owned()),
                "mtu" => {
                    let n: u32 = value
                        .parse()
                        .map_err(|_| err(format!("mtu {value:?} is not a number")))?;
                    if !(68..=65535).contains(&n) {
                        return Err(err(format!("mtu {n} is outside 68..65535")));
                    }
                    mtu = Some(n);
                }
                "link" => link = Some(value.to_owned()),
                "offload" => {
                    offload = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(err(format!("offload={value:?}: use on or off"))),
                    }
                }
                "pcap" => pcap = Some(PathBuf::from(value)),
                "mode" => {
                    mode = Some(
                        value
                            .parse::<MacvtapMode>()
                            .map_err(|e| err(e.to_string()))?,
                    )
                }
                _ => unreachable!("checked against `known`"),
            }
        }
        let backend = match kind {
            "tap" => NicHost::Tap {
                name: first.to_owned(),
                bridge,
                mtu,
            },
            "macvtap" => {
                if mode.is_some() && link.is_none() {
                    return Err(err(
                        "mode= needs link= (an existing macvtap keeps its mode)".into(),
                    ));
                }
                NicHost::Macvtap {
                    name: first.to_owned(),
                    link,
                    mode,
                }
            }
            _ => {
                let fd: RawFd = first
                    .parse()
                    .map_err(|_| err(format!("fd {first:?} is not a number")))?;
                if fd < 3 {
                    return Err(err(
                        "fd must be 3 or more (0-2 are stdin, stdout, stderr)".into()
                    ));
                }
                NicHost::Fd(fd)
            }
        };
        Ok(NicConfig {
            backend,
            mac,
            pcap,
            offload,
        })
    }
}

/// A stable, locally administered MAC for a NIC on `tap`: 52:54:00 (QEMU's prefix, local bit
/// set) and three bytes of a hash of the tap name, so NICs on different taps differ and the
/// same tap gets the same MAC every run.
pub fn default_mac(tap: &str) -> MacAddr {
    // FNV-1a, 32 bits.
    let hash = tap.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let [a, b, c, _] = hash.to_be_bytes();
    MacAddr([0x52, 0x54, 0x00, a, b, c])
}

/// Checks a NIC list before anything is opened.
pub fn check_nics(nics: &[NicConfig]) -> Result<(), NetError> {
    if nics.len() > NIC_IRQS.len() {
        return Err(NetError::TooMany(nics.len()));
    }
    for (i, nic) in nics.iter().enumerate() {
        if nics[..i]
            .iter()
            .any(|other| other.backend_id() == nic.backend_id())
        {
            return Err(NetError::DuplicateTap(nic.describe()));
        }
        if let NicHost::Fd(fd) = nic.backend {
            // SAFETY: F_GETFD only queries the descriptor table; no memory is involved.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(NetError::FdNotOpen { index: i, fd });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetError;

    fn parse(s: &str) -> Result<NicConfig, String> {
        s.parse::<NicConfig>().map_err(|e| e.to_string())
    }

    #[test]
    fn test_net_spec_tap_with_options() {
        let nic = parse("tap=vnet0,mac=52:54:00:aa:bb:cc,bridge=br0,mtu=9000").unwrap();
        assert_eq!(
            nic.backend,
            NicHost::Tap {
                name: "vnet0".into(),
                bridge: Some("br0".into()),
                mtu: Some(9000)
            }
        );
        assert_eq!(nic.mac.unwrap().to_string(), "52:54:00:aa:bb:cc");
        assert_eq!(parse("tap=t1").unwrap(), NicConfig::tap("t1"));
        assert!(NicConfig::tap("t1").offload, "offloads are on by default");
        assert!(!parse("tap=t1,offload=off").unwrap().offload);
        assert!(parse("fd=3,offload=on").unwrap().offload);
    }

    #[test]
    fn test_net_spec_pcap_for_every_kind() {
        for spec in [
            "tap=a,pcap=/tmp/a.pcap",
            "macvtap=m,pcap=/tmp/a.pcap",
            "fd=3,pcap=/tmp/a.pcap",
        ] {
            assert_eq!(
                parse(spec).unwrap().pcap,
                Some(PathBuf::from("/tmp/a.pcap")),
                "{spec}"
            );
        }
    }

    #[test]
    fn test_net_spec_macvtap_and_fd() {
        let nic = parse("macvtap=mv0,link=eth0,mode=private").unwrap();
        assert_eq!(
            nic.backend,
            NicHost::Macvtap {
                name: "mv0".into(),
                link: Some("eth0".into()),
                mode: Some(MacvtapMode::Private)
            }
        );
        assert_eq!(
            parse("macvtap=mv0").unwrap().backend,
            NicHost::Macvtap {
                name: "mv0".into(),
                link: None,
                mode: None
            }
        );
        assert_eq!(
            parse("fd=3,mac=52:54:00:00:00:01").unwrap().backend,
            NicHost::Fd(3)
        );
    }

    #[test]
    fn test_net_spec_errors_name_the_problem() {
        let msg = |s: &str| parse(s).unwrap_err();
        assert!(msg("mac=52:54:00:aa:bb:cc").contains("must start with tap=, macvtap= or fd="));
        assert!(msg("tap=a,color=red").contains(
            "unknown option \"color\" for tap= (known: mac, bridge, mtu, pcap, offload)"
        ));
        assert!(msg("tap=a,offload=maybe").contains("offload=\"maybe\": use on or off"));
        assert!(msg("tap=a,link=eth0").contains("unknown option \"link\""));
        assert!(msg("macvtap=m,bridge=br0").contains("unknown option \"bridge\""));
        assert!(msg("tap=a,mac=zz").contains("not a MAC address"));
        assert!(msg("tap=a,mac=01:00:5e:00:00:01").contains("multicast"));
        assert!(msg("tap=a,mtu=20").contains("outside 68..65535"));
        assert!(msg("macvtap=m,link=eth0,mode=switch")
            .contains("use bridge, vepa, private or passthru"));
        assert!(msg("macvtap=m,mode=vepa").contains("mode= needs link="));
        assert!(msg("fd=x").contains("not a number"));
        assert!(msg("fd=1").contains("3 or more"));
        assert!(msg("tap").contains("not key=value"));
    }

    #[test]
    fn test_default_mac_is_local_unicast_stable_and_differs_per_tap() {
        let a = default_mac("vnet0");
        assert!(a.is_local() && !a.is_multicast());
        assert_eq!(a, default_mac("vnet0"));
        assert_ne!(a, default_mac("vnet1"));
    }

    #[test]
    fn test_check_nics_rejects_duplicates_too_many_and_closed_fds() {
        assert!(matches!(
            check_nics(&[NicConfig::tap("a"), NicConfig::tap("a")]),
            Err(NetError::DuplicateTap(_))
        ));
        let many: Vec<_> = (0..7).map(|i| NicConfig::tap(&format!("t{i}"))).collect();
        assert!(matches!(check_nics(&many), Err(NetError::TooMany(7))));
        assert!(check_nics(&[NicConfig::tap("a"), NicConfig::tap("b")]).is_ok());
        let closed = NicConfig {
            backend: NicHost::Fd(987),
            ..NicConfig::tap("unused")
        };
        assert!(matches!(
            check_nics(&[closed]),
            Err(NetError::FdNotOpen { fd: 987, .. })
        ));
    }
}
