//! Network devices: what `--tap`/`--net` ask for, and wiring each NIC together — host tap,
//! virtio-net device, virtio-mmio transport, KVM ioeventfds and irqfd, the device thread.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vm_memory::GuestMemoryMmap;
use vmm_tap::{Tap, TapError};
use vmm_virtio_net::{CountersSnapshot, MacAddr, Net, NetCounters, VirtioDevice};

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
    /// The same tap twice.
    #[error("tap {0} is used by two NICs")]
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
    Host {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One NIC as the user asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicConfig {
    /// Host tap name.
    pub tap: String,
    /// Guest MAC; `None` picks [`default_mac`].
    pub mac: Option<MacAddr>,
}

impl FromStr for NicConfig {
    type Err = NetError;

    /// Parses `tap=NAME[,mac=52:54:00:..]`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| NetError::Spec {
            spec: spec.to_owned(),
            reason,
        };
        let (mut tap, mut mac) = (None, None);
        for part in spec.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| err(format!("{part:?} is not key=value")))?;
            match key {
                "tap" => tap = Some(value.to_owned()),
                "mac" => {
                    let parsed: MacAddr = value.parse().map_err(|e| err(format!("{e}")))?;
                    if parsed.is_multicast() {
                        return Err(err(format!(
                            "{value} is a multicast address; a NIC needs a unicast MAC"
                        )));
                    }
                    mac = Some(parsed);
                }
                _ => return Err(err(format!("unknown option {key:?} (known: tap, mac)"))),
            }
        }
        let tap = tap.ok_or_else(|| err("tap=NAME is required".into()))?;
        Ok(NicConfig { tap, mac })
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
        if nics[..i].iter().any(|other| other.tap == nic.tap) {
            return Err(NetError::DuplicateTap(nic.tap.clone()));
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
    /// Host tap name.
    pub tap: String,
}

/// Opens each NIC's tap and creates its virtio-net device.
pub fn open_nics(nics: &[NicConfig]) -> Result<Vec<Nic>, NetError> {
    nics.iter()
        .enumerate()
        .map(|(index, config)| {
            let tap = Tap::open(&config.tap).map_err(|source| NetError::Tap { index, source })?;
            let mtu = tap
                .mtu()
                .map_err(|source| NetError::Tap { index, source })?;
            let mac = config.mac.unwrap_or_else(|| default_mac(&config.tap));
            let net =
                Net::new(tap, mac, mtu.min(u32::from(u16::MAX)) as u16).map_err(|source| {
                    NetError::Host {
                        what: "a virtio-net device",
                        source,
                    }
                })?;
            log::info!("net{index}: tap {} mac {mac} mtu {mtu}", config.tap);
            let counters = net.counters();
            Ok(Nic {
                index,
                device: Arc::new(Mutex::new(net)),
                counters,
                tap: config.tap.clone(),
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
    let mut manager = EventManager::<NetDevice>::new().map_err(|e| NetError::Host {
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
        .map_err(|source| NetError::Host {
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
            "net{}: tap={} guest_tx_frames={} guest_tx_bytes={} guest_rx_frames={} guest_rx_bytes={} dropped={}",
            self.index,
            self.tap,
            c.tx_frames,
            c.tx_bytes,
            c.rx_frames,
            c.rx_bytes,
            c.dropped()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_net_spec_parses_tap_and_mac() {
        let nic: NicConfig = "tap=vnet0,mac=52:54:00:aa:bb:cc".parse().unwrap();
        assert_eq!(nic.tap, "vnet0");
        assert_eq!(nic.mac.unwrap().to_string(), "52:54:00:aa:bb:cc");
        assert_eq!("tap=t1".parse::<NicConfig>().unwrap().mac, None);
    }

    #[test]
    fn test_net_spec_errors_name_the_problem() {
        let msg = |s: &str| s.parse::<NicConfig>().unwrap_err().to_string();
        assert!(msg("mac=52:54:00:aa:bb:cc").contains("tap=NAME is required"));
        assert!(msg("tap=a,color=red").contains("unknown option \"color\""));
        assert!(msg("tap=a,mac=zz").contains("not a MAC address"));
        assert!(msg("tap=a,mac=01:00:5e:00:00:01").contains("multicast"));
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
    fn test_check_nics_rejects_duplicates_and_too_many() {
        let nic = |t: &str| NicConfig {
            tap: t.into(),
            mac: None,
        };
        assert!(matches!(
            check_nics(&[nic("a"), nic("a")]),
            Err(NetError::DuplicateTap(_))
        ));
        let many: Vec<_> = (0..7).map(|i| nic(&format!("t{i}"))).collect();
        assert!(matches!(check_nics(&many), Err(NetError::TooMany(7))));
        assert!(check_nics(&[nic("a"), nic("b")]).is_ok());
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
