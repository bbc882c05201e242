//! Network devices: what `--tap`/`--net` ask for, and wiring each NIC together — host tap,
//! virtio-net device, virtio-mmio transport, KVM ioeventfds and irqfd, the device thread.

pub mod backend;
pub mod cleanup;
pub mod pcap;
pub mod symmetry;
pub mod trace;

use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vm_memory::GuestMemoryMmap;
use vmm_tap::{HostError, MacvtapMode, Tap, TapError};
use vmm_virtio_net::{
    features, CountersSnapshot, FrameEvent, FrameObserver, MacAddr, Net, NetCounters, VirtioDevice,
};

use self::pcap::{Pcap, PcapError, SharedPcap};

use crate::arch::layout::DEVICE_WINDOW_START;
use crate::virtio_mmio::{MmioTransport, MMIO_WINDOW_SIZE};

/// Interrupt lines for NICs, in order: free ISA IRQs (0 timer, 1 keyboard, 4 COM1, 8 RTC are taken).
pub const NIC_IRQS: [u32; 6] = [5, 6, 7, 9, 10, 11];

/// Errors about NIC options or setting a NIC up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A `--net` option string that does not parse.
    #[error("--net {spec:?}: {reason}")]
    Spec {
        /// The option as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// Too many NICs for the interrupt lines we have.
    #[error("at most {max} NICs are supported, {0} were asked for", max = NIC_IRQS.len())]
    TooMany(usize),
    /// The same host interface or fd twice.
    #[error("{0} is used by two NICs")]
    DuplicateTap(String),
    /// The tap could not be opened.
    #[error("net{index}")]
    Tap {
        /// NIC number.
        index: usize,
        /// Why.
        #[source]
        source: TapError,
    },
    /// Setting up the host side (bridge, macvtap, link changes) failed.
    #[error("net{index}")]
    Host {
        /// NIC number.
        index: usize,
        /// Why.
        #[source]
        source: HostError,
    },
    /// A capture file could not be created.
    #[error("net{index}")]
    Pcap {
        /// NIC number.
        index: usize,
        /// Why.
        #[source]
        source: PcapError,
    },
    /// `fd=N` that is not open.
    #[error("net{index}: fd {fd} is not open (pass it to vmm, e.g. {fd}<>/dev/tapN)")]
    FdNotOpen {
        /// NIC number.
        index: usize,
        /// The fd.
        fd: RawFd,
    },
    /// KVM refused to connect the device.
    #[error("net{index}: KVM could not {what}")]
    Kvm {
        /// NIC number.
        index: usize,
        /// The step.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The device or its thread could not be created.
    #[error("cannot create {what}")]
    Create {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where a NIC's frames go on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicBackend {
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
    pub backend: NicBackend,
    /// Guest MAC; `None` picks one (see [`backend`]).
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
            backend: NicBackend::Tap {
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
            NicBackend::Tap { name, .. } => format!("tap {name}"),
            NicBackend::Macvtap { name, .. } => format!("macvtap {name}"),
            NicBackend::Fd(fd) => format!("fd {fd}"),
        }
    }

    /// The host interface name, when known before opening.
    pub fn ifname(&self) -> Option<&str> {
        match &self.backend {
            NicBackend::Tap { name, .. } | NicBackend::Macvtap { name, .. } => Some(name),
            NicBackend::Fd(_) => None,
        }
    }
}

impl NicConfig {
    /// What makes two NICs collide: the same interface name or the same fd.
    fn backend_id(&self) -> String {
        match &self.backend {
            NicBackend::Fd(fd) => format!("fd {fd}"),
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
            "tap" => NicBackend::Tap {
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
                NicBackend::Macvtap {
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
                NicBackend::Fd(fd)
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

/// Where NIC `index` lives: (MMIO base, IRQ).
pub fn nic_slot(index: usize) -> (u64, u32) {
    (
        DEVICE_WINDOW_START + index as u64 * MMIO_WINDOW_SIZE,
        NIC_IRQS[index],
    )
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
        if let NicBackend::Fd(fd) = nic.backend {
            // SAFETY: F_GETFD only queries the descriptor table; no memory is involved.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(NetError::FdNotOpen { index: i, fd });
            }
        }
    }
    Ok(())
}

/// The device type every NIC has.
pub type NetDevice = Arc<Mutex<Net<Tap>>>;

/// A NIC with its tap open and its device created, not yet connected to a VM.
pub struct Nic {
    /// Position on the command line (net0, net1, ...).
    pub index: usize,
    /// The device.
    pub device: NetDevice,
    /// Its counters, read at exit.
    pub counters: Arc<NetCounters>,
    /// Host interface, as printed in the report (`vnet0`, `mv0`, `fd3:mv0`).
    pub tap: String,
}

/// How the user wants to watch frames.
#[derive(Clone, Debug, Default)]
pub struct Observe {
    /// `--trace-net`: one log line per frame.
    pub trace: bool,
    /// `--pcap PATH`: every NIC's frames into one file.
    pub pcap: Option<PathBuf>,
}

/// Shows a NIC's frames to the trace log and its capture files.
struct NicObserver {
    index: usize,
    trace: bool,
    pcaps: Vec<SharedPcap>,
}

impl FrameObserver for NicObserver {
    fn frame(&mut self, event: &FrameEvent<'_>) {
        if self.trace {
            log::info!(target: trace::TARGET, "{}", trace::trace_line(self.index, event));
        }
        for pcap in &self.pcaps {
            pcap.lock()
                .unwrap_or_else(|p| p.into_inner())
                .write(event.frame);
        }
    }
}

/// Opens each NIC's host side (see [`backend`]), creates its virtio-net device, sets up
/// tracing and capture, and starts its symmetry probe.
pub fn open_nics(nics: &[NicConfig], observe: &Observe) -> Result<Vec<Nic>, NetError> {
    let global_pcap = match &observe.pcap {
        Some(path) if !nics.is_empty() => {
            Some(Pcap::create(path).map_err(|source| NetError::Pcap { index: 0, source })?)
        }
        _ => None,
    };
    let mut host = None;
    nics.iter()
        .enumerate()
        .map(|(index, config)| {
            let mut pcaps: Vec<SharedPcap> = global_pcap.iter().cloned().collect();
            if let Some(path) = &config.pcap {
                pcaps.push(Pcap::create(path).map_err(|source| NetError::Pcap { index, source })?);
            }
            let opened = backend::open(index, config, &mut host)?;
            let ifname = opened.tap.name().to_owned();
            let mtu = opened.mtu.min(u32::from(u16::MAX)) as u16;
            let mut net =
                Net::new(opened.tap, opened.mac, mtu).map_err(|source| NetError::Create {
                    what: "a virtio-net device",
                    source,
                })?;
            net.set_offload(config.offload);
            if observe.trace || !pcaps.is_empty() {
                net.set_observer(Box::new(NicObserver {
                    index,
                    trace: observe.trace,
                    pcaps,
                }));
            }
            log::info!(
                "net{index}: {} mac {} mtu {mtu}, offering {}",
                opened.label,
                opened.mac,
                features::names(net.features())
            );
            let counters = net.counters();
            let kind = if backend::is_macvtap(&ifname) {
                symmetry::HostKind::Macvtap
            } else {
                symmetry::HostKind::Tap
            };
            symmetry::register(index, &ifname, kind, counters.clone());
            Ok(Nic {
                index,
                device: Arc::new(Mutex::new(net)),
                counters,
                tap: opened.label,
            })
        })
        .collect()
}

/// A device window: its base address and the transport behind it.
pub type MmioDevice = (u64, Arc<Mutex<MmioTransport>>);

/// Connects each NIC to the VM (ioeventfds, irqfd), puts it behind a virtio-mmio transport, and
/// starts the device thread that runs their event loop. Returns the transports with their bases.
pub fn attach_nics(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    nics: &[Nic],
) -> Result<Vec<MmioDevice>, NetError> {
    let mut transports = Vec::new();
    let mut manager = EventManager::<NetDevice>::new().map_err(|e| NetError::Create {
        what: "the device event loop",
        source: std::io::Error::other(format!("{e:?}")),
    })?;
    for nic in nics {
        let (base, irq) = nic_slot(nic.index);
        let kvm = |what| {
            move |source| NetError::Kvm {
                index: nic.index,
                what,
                source,
            }
        };
        {
            let device = nic.device.lock().unwrap_or_else(|p| p.into_inner());
            vm.register_irqfd(device.interrupt().irqfd(), irq)
                .map_err(kvm("register the interrupt (irqfd)"))?;
            for (queue, evt) in device.queue_events().iter().enumerate() {
                let notify = IoEventAddress::Mmio(base + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY));
                vm.register_ioevent(evt, &notify, queue as u32)
                    .map_err(kvm("register a queue notification (ioeventfd)"))?;
            }
        }
        let device: Arc<Mutex<dyn VirtioDevice>> = nic.device.clone();
        transports.push((
            base,
            Arc::new(Mutex::new(MmioTransport::new(mem.clone(), device))),
        ));
        manager.add_subscriber(nic.device.clone());
    }
    if !nics.is_empty() {
        spawn_device_thread(manager)?;
    }
    Ok(transports)
}

fn spawn_device_thread<S: MutEventSubscriber + Send + 'static>(
    mut manager: EventManager<S>,
) -> Result<(), NetError> {
    std::thread::Builder::new()
        .name("virtio-net".into())
        .spawn(move || loop {
            if let Err(e) = manager.run() {
                log::error!("virtio-net: event loop failed: {e:?}");
                return;
            }
        })
        .map(|_| ())
        .map_err(|source| NetError::Create {
            what: "the virtio-net thread",
            source,
        })
}

/// The line printed for a NIC at exit.
pub struct NicReport {
    /// NIC number.
    pub index: usize,
    /// Host tap.
    pub tap: String,
    /// Its counters.
    pub counters: CountersSnapshot,
}

impl fmt::Display for NicReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        write!(
            f,
            "net{}: tap={} guest_tx_frames={} guest_tx_bytes={} guest_rx_frames={} guest_rx_bytes={} dropped={} \
             rx_merged={} kicks_rx={} kicks_tx={} interrupts={} features={}",
            self.index,
            self.tap,
            c.tx_frames,
            c.tx_bytes,
            c.rx_frames,
            c.rx_bytes,
            c.dropped(),
            c.rx_merged_frames,
            c.rx_notifications,
            c.tx_notifications,
            c.interrupts,
            features::names(c.features)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NicConfig, String> {
        s.parse::<NicConfig>().map_err(|e| e.to_string())
    }

    #[test]
    fn test_net_spec_tap_with_options() {
        let nic = parse("tap=vnet0,mac=52:54:00:aa:bb:cc,bridge=br0,mtu=9000").unwrap();
        assert_eq!(
            nic.backend,
            NicBackend::Tap {
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
            NicBackend::Macvtap {
                name: "mv0".into(),
                link: Some("eth0".into()),
                mode: Some(MacvtapMode::Private)
            }
        );
        assert_eq!(
            parse("macvtap=mv0").unwrap().backend,
            NicBackend::Macvtap {
                name: "mv0".into(),
                link: None,
                mode: None
            }
        );
        assert_eq!(
            parse("fd=3,mac=52:54:00:00:00:01").unwrap().backend,
            NicBackend::Fd(3)
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
            backend: NicBackend::Fd(987),
            ..NicConfig::tap("unused")
        };
        assert!(matches!(
            check_nics(&[closed]),
            Err(NetError::FdNotOpen { fd: 987, .. })
        ));
    }

    #[test]
    fn test_nic_slots_are_distinct_pages_in_the_device_window() {
        let (b0, i0) = nic_slot(0);
        let (b1, i1) = nic_slot(1);
        assert_eq!(b0, DEVICE_WINDOW_START);
        assert_eq!(b1 - b0, 0x1000);
        assert_ne!(i0, i1);
    }
}
