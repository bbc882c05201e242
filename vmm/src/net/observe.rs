//! How the user wants to watch frames (`--trace-net`, `--pcap`), and the observer that shows
//! each frame a NIC moves to the trace log and its capture files.

use std::path::PathBuf;

use vmm_virtio_net::{FrameEvent, FrameObserver};

use super::pcap::SharedPcap;
use super::trace;

/// How the user wants to watch frames.
#[derive(Clone, Debug, Default)]
pub struct Observe {
    /// `--trace-net`: one log line per frame.
    pub trace: bool,
    /// `--pcap PATH`: every NIC's frames into one file.
    pub pcap: Option<PathBuf>,
}

/// Shows a NIC's frames to the trace log and its capture files.
pub(super) struct NicObserver {
    pub(super) index: usize,
    pub(super) trace: bool,
    pub(super) pcaps: Vec<SharedPcap>,
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
