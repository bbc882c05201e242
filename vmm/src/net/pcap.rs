//! `--pcap PATH` and `--net ...,pcap=PATH`: every frame a NIC moves, both directions, in a
//! classic pcap file (LINKTYPE_ETHERNET, microsecond timestamps) that tcpdump and Wireshark read.
//! The file is written unbuffered, frame by frame, so it is complete whenever the VMM stops.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::Endianness;

/// Largest packet recorded whole.
const SNAPLEN: u32 = 262_144;

/// A pcap file being written, shareable between NICs.
pub type SharedPcap = Arc<Mutex<Pcap>>;

/// Errors creating a capture file.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The file could not be created.
    #[error("cannot create pcap file {path}")]
    Create {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pcap header could not be written.
    #[error("cannot write the pcap header to {path}")]
    Header {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: pcap_file::PcapError,
    },
}

/// One capture file.
pub struct Pcap {
    writer: PcapWriter<File>,
    path: PathBuf,
    failed: bool,
}

impl Pcap {
    /// Creates (truncates) `path` and writes the pcap header.
    pub fn create(path: &Path) -> Result<SharedPcap, PcapError> {
        let file = File::create(path).map_err(|source| PcapError::Create {
            path: path.to_owned(),
            source,
        })?;
        // 256 KiB per packet (tcpdump's default): GSO frames are up to 65,550 bytes, more than
        // the 65,535 of pcap-file's default header, which would refuse them.
        let header = PcapHeader {
            snaplen: SNAPLEN,
            endianness: Endianness::native(),
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(file, header).map_err(|source| PcapError::Header {
            path: path.to_owned(),
            source,
        })?;
        Ok(Arc::new(Mutex::new(Pcap {
            writer,
            path: path.to_owned(),
            failed: false,
        })))
    }

    /// Appends one Ethernet frame, stamped now.
    pub fn write(&mut self, frame: &[u8]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let packet = PcapPacket::new(now, frame.len() as u32, frame);
        if let Err(e) = self.writer.write_packet(&packet) {
            if !self.failed {
                log::warn!(
                    "pcap {}: cannot write, capture stops: {e}",
                    self.path.display()
                );
                self.failed = true;
            }
        }
    }
}
