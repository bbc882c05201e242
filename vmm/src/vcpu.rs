//! vCPU threads: one per vCPU (`vcpu0`, `vcpu1`, ...), each entering the guest with `KVM_RUN` and
//! handling its port and MMIO exits.
//!
//! vCPU 0 starts at the kernel's entry point. The others start as on real hardware: KVM's
//! in-kernel local APIC holds them until the guest sends them INIT and a start-up IPI (Linux
//! does, for every processor in the MP table). The first vCPU whose guest ends the machine
//! (reset, shutdown, an error) ends the VM: [`Vcpus::stop`] then kicks the others out of
//! `KVM_RUN` with a signal and joins them, so every thread is gone before the VMM reports.

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::devices::mmio_bus::MmioBus;
use crate::devices::pio::{PioAction, PioBus};
use crate::vm::VmExit;

/// How often [`Vcpus::stop`] kicks a vCPU still in `KVM_RUN` before giving up on it.
const KICKS: u32 = 100;
/// Time between kicks.
const KICK_INTERVAL: Duration = Duration::from_millis(10);

/// The running vCPU threads of a VM.
pub struct Vcpus {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    ended: mpsc::Receiver<(u8, VmExit)>,
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`: its handler does nothing, the
/// interrupted ioctl returns EINTR and the loop sees the stop flag.
fn kick_signal() -> c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: c_int, _: *mut libc::siginfo_t, _: *mut c_void) {}

impl Vcpus {
    /// Starts one thread per vCPU, `vcpus[i]` being vCPU i, sharing the port and MMIO buses.
    pub fn start(vcpus: Vec<VcpuFd>, pio: PioBus, mmio: MmioBus) -> std::io::Result<Self> {
        register_signal_handler(kick_signal(), on_kick).map_err(std::io::Error::from)?;
        let pio = Arc::new(Mutex::new(pio));
        let mmio = Arc::new(mmio);
        let stop = Arc::new(AtomicBool::new(false));
        let (ended_tx, ended) = mpsc::channel();
        let mut threads = Vec::with_capacity(vcpus.len());
        for (index, mut vcpu) in vcpus.into_iter().enumerate() {
            let index = index as u8;
            let (pio, mmio, stopping, ended_tx) =
                (pio.clone(), mmio.clone(), stop.clone(), ended_tx.clone());
            let thread = thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    let ended = EndReport { index, ended_tx };
                    if let Err(e) = crate::seccomp::apply(crate::seccomp::ThreadKind::Vcpu) {
                        ended.send(VmExit::Unexpected(e.to_string()));
                        return;
                    }
                    if let Some(exit) = run_vcpu(&mut vcpu, &pio, &mmio, &stopping) {
                        ended.send(exit);
                    }
                });
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    // Stop the ones already running before reporting.
                    Vcpus {
                        threads,
                        stop,
                        ended,
                    }
                    .stop();
                    return Err(e);
                }
            }
        }
        Ok(Self {
            threads,
            stop,
            ended,
        })
    }

    /// Waits until a vCPU ends the VM (its index and why) or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) -> (Option<u8>, VmExit) {
        let died = || VmExit::Unexpected("every vCPU thread died".into());
        let ended = match timeout {
            // A dead vCPU is not a timeout, whenever it died.
            Some(limit) => self.ended.recv_timeout(limit).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => VmExit::Timeout(limit),
                mpsc::RecvTimeoutError::Disconnected => died(),
            }),
            None => self.ended.recv().map_err(|_| died()),
        };
        match ended {
            Ok((index, exit)) => (Some(index), exit),
            Err(exit) => (None, exit),
        }
    }

    /// Stops every vCPU thread: raises the stop flag, kicks the threads still in `KVM_RUN` until
    /// they leave (at most [`KICKS`] times each), and joins them. Returns how many did not stop.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Release);
        for _ in 0..KICKS {
            let running: Vec<&JoinHandle<()>> =
                self.threads.iter().filter(|t| !t.is_finished()).collect();
            if running.is_empty() {
                break;
            }
            for thread in running {
                // ESRCH (it just ended) is as good as a kick.
                let _ = thread.kill(kick_signal());
            }
            thread::sleep(KICK_INTERVAL);
        }
        let mut stuck = 0;
        for thread in self.threads {
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                log::warn!(
                    "{} did not leave KVM_RUN; it ends with the process",
                    thread.thread().name().unwrap_or("a vCPU")
                );
                stuck += 1;
            }
        }
        stuck
    }
}

/// How a vCPU thread tells main that it ended the VM, also when it panics (then as an
/// unexpected exit naming the vCPU, instead of main waiting for the others or the timeout).
struct EndReport {
    index: u8,
    ended_tx: mpsc::Sender<(u8, VmExit)>,
}

impl EndReport {
    fn send(&self, exit: VmExit) {
        // The receiver goes away only once main has decided to exit.
        let _ = self.ended_tx.send((self.index, exit));
    }
}

impl Drop for EndReport {
    fn drop(&mut self) {
        if thread::panicking() {
            self.send(VmExit::Unexpected("the vCPU thread panicked".into()));
        }
    }
}

/// The port bus, also after another vCPU panicked holding it (its state is still usable).
fn lock(pio: &Mutex<PioBus>) -> std::sync::MutexGuard<'_, PioBus> {
    pio.lock().unwrap_or_else(|p| p.into_inner())
}

/// One vCPU's loop: enter the guest, handle the exit, repeat; `None` when asked to stop.
fn run_vcpu(
    vcpu: &mut VcpuFd,
    pio: &Mutex<PioBus>,
    mmio: &MmioBus,
    stop: &AtomicBool,
) -> Option<VmExit> {
    loop {
        if stop.load(Ordering::Acquire) {
            return None;
        }
        let exit = match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                lock(pio).read(port, data);
                continue;
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                if lock(pio).write(port, data) == PioAction::Reset {
                    VmExit::Reset
                } else {
                    continue;
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !mmio.read(addr, data) {
                    log::debug!("mmio: read of {} bytes at unclaimed {addr:#x}", data.len());
                    data.fill(0xff);
                }
                continue;
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !mmio.write(addr, data) {
                    log::debug!("mmio: write of {data:x?} to unclaimed {addr:#x}");
                }
                continue;
            }
            Ok(VcpuExit::Shutdown) => {
                if let Ok(regs) = vcpu.get_regs() {
                    log::info!("shutdown at RIP {:#x} RSP {:#x}", regs.rip, regs.rsp);
                }
                VmExit::Shutdown
            }
            Ok(VcpuExit::Hlt) => VmExit::Shutdown,
            Ok(VcpuExit::SystemEvent(kind, _)) => VmExit::SystemEvent(kind),
            Ok(VcpuExit::FailEntry(reason, _)) => VmExit::FailEntry(reason),
            Ok(VcpuExit::InternalError) => {
                // SAFETY: KVM sets exit_reason KVM_EXIT_INTERNAL_ERROR only after filling the
                // `internal` member of the exit union, which is what we read.
                let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                VmExit::InternalError { suberror, rip }
            }
            Ok(other) => VmExit::Unexpected(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => VmExit::Unexpected(format!("KVM_RUN failed: {e}")),
        };
        return Some(exit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_threads() -> (Vcpus, mpsc::Sender<(u8, VmExit)>) {
        let (ended_tx, ended) = mpsc::channel();
        let vcpus = Vcpus {
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            ended,
        };
        (vcpus, ended_tx)
    }

    #[test]
    fn test_vcpu_threads_that_all_died_are_not_reported_as_a_timeout() {
        let (vcpus, ended_tx) = no_threads();
        drop(ended_tx);
        let (vcpu, exit) = vcpus.wait(Some(Duration::from_secs(5)));
        assert_eq!(vcpu, None);
        assert_eq!(exit, VmExit::Unexpected("every vCPU thread died".into()));
        let (_, exit) = vcpus.wait(None);
        assert!(matches!(exit, VmExit::Unexpected(_)));
    }

    #[test]
    fn test_a_panicking_vcpu_thread_reports_itself() {
        let (vcpus, ended_tx) = no_threads();
        let thread = thread::spawn(move || {
            let _ended = EndReport { index: 3, ended_tx };
            panic!("a bug in an exit handler");
        });
        assert!(thread.join().is_err());
        let (vcpu, exit) = vcpus.wait(Some(Duration::from_secs(5)));
        assert_eq!(vcpu, Some(3));
        assert_eq!(exit, VmExit::Unexpected("the vCPU thread panicked".into()));
    }

    #[test]
    fn test_a_timeout_is_a_timeout() {
        let (vcpus, _ended_tx) = no_threads();
        let limit = Duration::from_millis(10);
        assert_eq!(vcpus.wait(Some(limit)), (None, VmExit::Timeout(limit)));
    }
}
