//! The virtio-mmio transport with a virtio-net device behind it, driven by arbitrary register
//! reads and writes (any offset in the 4 KiB window, any width), as a hostile guest's MMIO
//! exits would.
//!
//! Checked after every access, not only "no panic":
//! - the identification registers never change (magic, version, device ID, vendor);
//! - FEATURES_OK is only ever shown for features the device offered, VERSION_1 among them
//!   (a model of the driver's feature writes is kept here);
//! - after DRIVER_OK, queue configuration writes change nothing the driver can read back;
//! - a write of 0 to Status resets: Status, InterruptStatus, QueueReady of every queue and the
//!   feature selectors read as after power-on, and the device is inactive;
//! - InterruptStatus holds only the two bits virtio-mmio defines.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm::virtio_mmio::MmioTransport;
use vmm_fuzz::Input;
use vmm_virtio_net::test_utils::FakeBackend;
use vmm_virtio_net::{MacAddr, Net, VirtioDevice};

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);
/// Guest memory, so that queues can be placed and the device activated.
const MEM: usize = 0x1_0000;

/// Registers the fuzzer picks by index (most accesses), besides raw offsets.
const REGISTERS: [u32; 22] = [
    VIRTIO_MMIO_MAGIC_VALUE,
    VIRTIO_MMIO_VERSION,
    VIRTIO_MMIO_DEVICE_ID,
    VIRTIO_MMIO_VENDOR_ID,
    VIRTIO_MMIO_DEVICE_FEATURES,
    VIRTIO_MMIO_DEVICE_FEATURES_SEL,
    VIRTIO_MMIO_DRIVER_FEATURES,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL,
    VIRTIO_MMIO_QUEUE_SEL,
    VIRTIO_MMIO_QUEUE_NUM_MAX,
    VIRTIO_MMIO_QUEUE_NUM,
    VIRTIO_MMIO_QUEUE_READY,
    VIRTIO_MMIO_QUEUE_NOTIFY,
    VIRTIO_MMIO_INTERRUPT_STATUS,
    VIRTIO_MMIO_INTERRUPT_ACK,
    VIRTIO_MMIO_STATUS,
    VIRTIO_MMIO_QUEUE_DESC_LOW,
    VIRTIO_MMIO_QUEUE_AVAIL_LOW,
    VIRTIO_MMIO_QUEUE_USED_LOW,
    VIRTIO_MMIO_CONFIG_GENERATION,
    VIRTIO_MMIO_CONFIG,
    VIRTIO_MMIO_CONFIG + 6,
];

/// Registers that configure a queue (ignored once DRIVER_OK is set).
const QUEUE_CONFIG: [u32; 8] = [
    VIRTIO_MMIO_QUEUE_NUM,
    VIRTIO_MMIO_QUEUE_READY,
    VIRTIO_MMIO_QUEUE_DESC_LOW,
    VIRTIO_MMIO_QUEUE_DESC_HIGH,
    VIRTIO_MMIO_QUEUE_AVAIL_LOW,
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
    VIRTIO_MMIO_QUEUE_USED_LOW,
    VIRTIO_MMIO_QUEUE_USED_HIGH,
];

struct Bus {
    transport: MmioTransport,
    net: Arc<Mutex<Net<FakeBackend>>>,
}

impl Bus {
    fn read32(&mut self, reg: u32) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(u64::from(reg), &mut data);
        u32::from_le_bytes(data)
    }

    fn write32(&mut self, reg: u32, value: u32) {
        self.transport.write(u64::from(reg), &value.to_le_bytes());
    }

    /// QueueReady of queue `index`, leaving QueueSel as it was (`sel`).
    fn queue_ready(&mut self, index: u32, sel: u32) -> u32 {
        self.write32(VIRTIO_MMIO_QUEUE_SEL, index);
        let ready = self.read32(VIRTIO_MMIO_QUEUE_READY);
        self.write32(VIRTIO_MMIO_QUEUE_SEL, sel);
        ready
    }
}

/// What the driver wrote, as the spec defines it (not as the transport stores it).
#[derive(Default)]
struct Model {
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
}

impl Model {
    fn write(&mut self, reg: u32, value: u32) {
        match reg {
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("mmap");
    let net = Arc::new(Mutex::new(
        Net::new(FakeBackend::new(), MAC, 1500).expect("device"),
    ));
    let offered = net.lock().unwrap().features();
    let device: Arc<Mutex<dyn VirtioDevice>> = net.clone();
    let transport = MmioTransport::new(mem, device).expect("transport");
    let mut bus = Bus { transport, net };
    let mut model = Model::default();

    while !input.is_empty() {
        let op = input.u8();
        if op % 8 == 7 {
            // The usual driver start-up, with the fuzzer's features and queue placement, so
            // that running devices are reached often.
            let features = offered & input.u64();
            let steps = [
                (VIRTIO_MMIO_STATUS, 0),
                (VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE),
                (
                    VIRTIO_MMIO_STATUS,
                    VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
                ),
                (VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0),
                (VIRTIO_MMIO_DRIVER_FEATURES, features as u32),
                (VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1),
                (VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32),
                (VIRTIO_MMIO_STATUS, 0xb),
            ];
            for (reg, value) in steps {
                access(&mut bus, &mut model, offered, reg, Some(value), 4);
            }
            for q in 0..2 {
                let at = u32::from(input.u8()) << 8;
                let regs = [
                    (VIRTIO_MMIO_QUEUE_SEL, q),
                    (VIRTIO_MMIO_QUEUE_NUM, 1 << (input.u8() % 9)),
                    (VIRTIO_MMIO_QUEUE_DESC_LOW, at),
                    (VIRTIO_MMIO_QUEUE_AVAIL_LOW, at + 0x1000),
                    (VIRTIO_MMIO_QUEUE_USED_LOW, at + 0x2000),
                    (VIRTIO_MMIO_QUEUE_READY, 1),
                ];
                for (reg, value) in regs {
                    access(&mut bus, &mut model, offered, reg, Some(value), 4);
                }
            }
            access(
                &mut bus,
                &mut model,
                offered,
                VIRTIO_MMIO_STATUS,
                Some(0xf),
                4,
            );
            continue;
        }
        let pick = input.u8();
        let offset = if pick < 0xe0 {
            REGISTERS[usize::from(pick) % REGISTERS.len()]
        } else {
            u32::from(input.u16()) % 0x1000
        };
        let width = [4, 4, 4, 1, 2, 8, 3, 0][usize::from(input.u8() % 8)];
        let value = (op & 1 == 1).then(|| input.u32());
        access(&mut bus, &mut model, offered, offset, value, width);
    }
});

/// One access of `width` bytes at `offset` (a write of `value`, or a read), and the checks.
fn access(
    bus: &mut Bus,
    model: &mut Model,
    offered: u64,
    offset: u32,
    value: Option<u32>,
    width: usize,
) {
    let status_before = bus.read32(VIRTIO_MMIO_STATUS);
    let ready_before = bus.read32(VIRTIO_MMIO_QUEUE_READY);
    match value {
        Some(value) => {
            let mut data = value.to_le_bytes().to_vec();
            data.resize(width, 0);
            bus.transport.write(u64::from(offset), &data);
            if width == 4 {
                model.write(offset, value);
            }
        }
        None => {
            let mut data = vec![0u8; width];
            bus.transport.read(u64::from(offset), &mut data);
        }
    }

    assert_eq!(bus.read32(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(bus.read32(VIRTIO_MMIO_VERSION), 2);
    assert_eq!(bus.read32(VIRTIO_MMIO_DEVICE_ID), 1, "virtio-net");
    let interrupt = bus.read32(VIRTIO_MMIO_INTERRUPT_STATUS);
    assert_eq!(interrupt & !3, 0, "InterruptStatus {interrupt:#x}");
    let status = bus.read32(VIRTIO_MMIO_STATUS);
    model.status = status;

    let write = value.filter(|_| width == 4);
    if write.is_some() && offset == VIRTIO_MMIO_STATUS && write == Some(0) {
        assert_eq!(status, 0, "Status after reset");
        assert_eq!(interrupt, 0, "InterruptStatus after reset");
        assert_eq!(
            bus.read32(VIRTIO_MMIO_QUEUE_READY),
            0,
            "queue 0 ready after reset"
        );
        assert_eq!(bus.queue_ready(1, 0), 0, "queue 1 ready after reset");
        assert_eq!(
            bus.read32(VIRTIO_MMIO_DEVICE_FEATURES),
            offered as u32,
            "DeviceFeaturesSel back to 0 after reset"
        );
        assert!(
            !bus.net.lock().unwrap().is_active(),
            "device inactive after reset"
        );
        *model = Model::default();
        return;
    }
    if status & VIRTIO_CONFIG_S_FEATURES_OK != 0 && status_before & VIRTIO_CONFIG_S_FEATURES_OK == 0
    {
        let unoffered = model.driver_features & !offered;
        assert_eq!(
            unoffered, 0,
            "FEATURES_OK shown for unoffered features {unoffered:#x}"
        );
        assert_ne!(
            model.driver_features & (1 << VIRTIO_F_VERSION_1),
            0,
            "FEATURES_OK without VERSION_1"
        );
    }
    if status_before & VIRTIO_CONFIG_S_DRIVER_OK != 0
        && write.is_some()
        && QUEUE_CONFIG.contains(&offset)
    {
        assert_eq!(
            bus.read32(VIRTIO_MMIO_QUEUE_READY),
            ready_before,
            "QueueReady changed after DRIVER_OK"
        );
    }
    if status & VIRTIO_CONFIG_S_DRIVER_OK != 0 && status_before & VIRTIO_CONFIG_S_DRIVER_OK == 0 {
        // Started: with the features the driver wrote, or it must say NEEDS_RESET.
        assert_ne!(
            status & VIRTIO_CONFIG_S_FEATURES_OK,
            0,
            "DRIVER_OK without FEATURES_OK"
        );
        assert_ne!(status & VIRTIO_CONFIG_S_DRIVER, 0);
    }
    let mut mac = [0u8; 6];
    bus.transport.read(u64::from(VIRTIO_MMIO_CONFIG), &mut mac);
    assert_eq!(mac, MAC.0, "config space MAC");
}
