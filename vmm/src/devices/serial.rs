//! The 16550 UART at COM1 (0x3f8, IRQ 4): guest output to our stdout, our stdin to the guest.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use super::EventFdTrigger;
use crate::terminal::{Console, Escape, Key, HELP};

/// The serial device, shared between the vCPU thread (register accesses) and the stdin thread.
pub type SharedSerial = Arc<Mutex<Serial<EventFdTrigger, NoEvents, ConsoleOut>>>;

/// Guest console output: stdout, flushed on every write so nothing is lost when the VMM exits.
#[derive(Debug, Default)]
pub struct ConsoleOut;

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// Creates the UART; `irq` is signalled when the guest should look at it.
pub fn new_serial(irq: EventFdTrigger) -> SharedSerial {
    Arc::new(Mutex::new(Serial::new(irq, ConsoleOut)))
}

/// Feeds our stdin to the guest's receive FIFO from a background thread, until stdin ends; on
/// a raw terminal, `Ctrl-A` escapes are the VMM's (see [`crate::terminal`]).
pub fn forward_stdin(serial: SharedSerial, console: Console) {
    let spawned = thread::Builder::new().name("stdin".into()).spawn(move || {
        crate::seccomp::apply_or_exit(crate::seccomp::ThreadKind::Stdin);
        let mut buf = [0u8; 64];
        let mut keys = [0u8; 128];
        let mut escape = Escape::default();
        let stdin = std::io::stdin();
        loop {
            let n = match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // On a terminal, the escape key talks to the VMM (terminal.rs); the rest goes on.
            let mut len = 0;
            for &byte in &buf[..n] {
                if !console.terminal.is_raw() {
                    keys[len] = byte;
                    len += 1;
                    continue;
                }
                match escape.feed(byte) {
                    Key::Guest(b) => {
                        keys[len] = b;
                        len += 1;
                    }
                    Key::GuestTwo(a, b) => {
                        keys[len] = a;
                        keys[len + 1] = b;
                        len += 2;
                    }
                    Key::Pending => {}
                    Key::Help => eprint!("{HELP}"),
                    Key::Quit => (console.quit)(),
                }
            }
            let mut pending = &keys[..len];
            while !pending.is_empty() {
                // The FIFO holds 64 bytes; wait for the guest to drain it.
                let taken = serial
                    .lock()
                    .map(|mut s| s.enqueue_raw_bytes(pending).unwrap_or(0))
                    .unwrap_or(0);
                pending = &pending[taken..];
                if !pending.is_empty() {
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }
    });
    if let Err(e) = spawned {
        log::warn!("cannot start the stdin thread, the guest console is output-only: {e}");
    }
}
