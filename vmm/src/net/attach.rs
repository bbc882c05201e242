//! Connecting opened NICs to the VM: each device behind a virtio-mmio transport in its slot,
//! KVM ioeventfds for its queue notifications and an irqfd for its interrupt, and the one
//! device thread whose event loop serves every NIC and follows their host links.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vm_memory::GuestMemoryMmap;
use vmm_virtio_net::VirtioDevice;

use super::link::LinkWatcher;
use super::{NetError, Nic};
use crate::arch::layout::nic_slot;
use crate::devices::mmio_bus::MmioDevice;
use crate::virtio_mmio::MmioTransport;

/// What the device thread's event loop serves: each NIC's device, and the [`LinkWatcher`].
type Subscriber = Box<dyn MutEventSubscriber + Send>;

/// Connects each NIC to the VM (ioeventfds, irqfd), puts it behind a virtio-mmio transport, and
/// starts the device thread that runs their event loop. Returns the transports with their bases.
pub fn attach_nics(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    nics: &[Nic],
) -> Result<Vec<MmioDevice>, NetError> {
    let mut transports = Vec::new();
    let mut manager = EventManager::<Subscriber>::new().map_err(|e| NetError::Create {
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
            for (queue, evt) in device.queue_events().iter().enumerate() {
                let notify = IoEventAddress::Mmio(base + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY));
                vm.register_ioevent(evt, &notify, queue as u32)
                    .map_err(kvm("register a queue notification (ioeventfd)"))?;
            }
        }
        let device: Arc<Mutex<dyn VirtioDevice>> = nic.device.clone();
        let transport =
            MmioTransport::new(mem.clone(), device).map_err(|source| NetError::Create {
                what: "the device's interrupt eventfd",
                source,
            })?;
        vm.register_irqfd(transport.irqfd(), irq)
            .map_err(kvm("register the interrupt (irqfd)"))?;
        transports.push(MmioDevice {
            base,
            transport: Arc::new(Mutex::new(transport)),
        });
        manager.add_subscriber(Box::new(nic.device.clone()));
    }
    if !nics.is_empty() {
        match LinkWatcher::new(nics) {
            Ok(watcher) => {
                manager.add_subscriber(Box::new(watcher));
            }
            Err(e) => log::warn!(
                "cannot listen for host link changes ({e}); guests will always see link up"
            ),
        }
        spawn_device_thread(manager)?;
    }
    Ok(transports)
}

fn spawn_device_thread<S: MutEventSubscriber + Send + 'static>(
    mut manager: EventManager<S>,
) -> Result<(), NetError> {
    std::thread::Builder::new()
        .name("virtio-net".into())
        .spawn(move || {
            crate::seccomp::apply_or_exit(crate::seccomp::ThreadKind::Device);
            let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
                if let Err(e) = manager.run() {
                    break format!("its event loop failed: {e:?}");
                }
            }));
            // Without this thread no NIC moves a frame: end the VM the orderly way (the
            // signal thread undoes host changes and prints the table), not run on deaf.
            let why = ended.unwrap_or_else(|_| "it panicked".into());
            log::error!("virtio-net: the device thread stopped ({why}); stopping the VM");
            // SAFETY: kill(2) on our own process with a signal the signal thread handles.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        })
        .map(|_| ())
        .map_err(|source| NetError::Create {
            what: "the virtio-net thread",
            source,
        })
}
