//! Network devices: what `--tap`/`--net` ask for ([`config`]), opening each NIC's host side
//! ([`host`]) and its virtio-net device (here), connecting it to the VM ([`attach`]), watching
//! its frames ([`observe`], [`trace`], [`pcap`]) and its host link ([`link`]), and reporting
//! it at exit ([`report`], [`symmetry`]); host changes are undone by [`cleanup`].

pub mod attach;
pub mod cleanup;
pub mod config;
pub mod host;
pub mod link;
pub mod observe;
pub mod pcap;
pub mod report;
pub mod symmetry;
pub mod trace;

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use vmm_tap::{HostError, Tap, TapError};
use vmm_virtio_net::{features, Net, NetCounters, VirtioDevice};

use self::observe::NicObserver;
use self::pcap::{Pcap, PcapError, SharedPcap};
use crate::arch::layout::NIC_IRQS;

use self::cleanup::UndoLog;
use self::symmetry::Probes;

pub use self::attach::attach_nics;
pub use self::config::{check_nics, default_mac, NicConfig, NicHost};
pub use self::observe::Observe;
pub use self::report::NicReport;

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

/// What the VMM changes and watches on the host: made once by `main`, filled in while the VM
/// is set up, and read by `main` at exit and by the signal thread (SIGUSR1 prints the table,
/// Ctrl-C undoes the changes). Clones share the same log and probes.
#[derive(Clone, Default)]
pub struct HostEffects {
    /// How to undo every change made to host devices.
    pub undo: Arc<UndoLog>,
    /// Each NIC's byte-symmetry probe.
    pub probes: Arc<Probes>,
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
    /// The host interface's index, whose link state the guest sees.
    pub ifindex: u32,
}

/// Opens each NIC's host side (see [`host`]), creates its virtio-net device, sets up
/// tracing and capture, and starts its symmetry probe.
pub fn open_nics(
    nics: &[NicConfig],
    observe: &Observe,
    effects: &HostEffects,
) -> Result<Vec<Nic>, NetError> {
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
            let opened = host::open(index, config, &mut host, &effects.undo)?;
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
            effects
                .probes
                .register(index, &ifname, opened.kind, counters.clone());
            Ok(Nic {
                index,
                device: Arc::new(Mutex::new(net)),
                counters,
                tap: opened.label,
                ifindex: opened.ifindex,
            })
        })
        .collect()
}
