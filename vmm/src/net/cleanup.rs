//! Leaving the host as we found it. Every change the VMM makes to host devices registers how to
//! undo it in the [`UndoLog`] that `main` made and handed to the VM and to the signal handler;
//! the log runs at exit — a normal one, an error, a panic, or SIGINT/SIGTERM/SIGHUP (see
//! [`crate::signals`]).
//! (A SIGKILL cannot be caught; a tap the VMM created still disappears with its fd then, a
//! macvtap it created stays: delete it with `tapctl del NAME`.)

use std::sync::Mutex;

use vmm_tap::netlink::Changes;
use vmm_tap::Host;

/// One change to take back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Delete a link the VMM created.
    DeleteLink(String),
    /// Put a link back on its old master (0 = none).
    SetMaster(String, u32),
    /// Restore a link's MTU.
    SetMtu(String, u32),
    /// Restore a link's MAC address.
    SetMac(String, [u8; 6]),
    /// Bring a link back down.
    SetDown(String),
}

/// The changes to take back, in the order they were made.
#[derive(Debug, Default)]
pub struct UndoLog {
    steps: Mutex<Vec<Undo>>,
}

impl UndoLog {
    /// Remembers how to take back a change just made.
    pub fn register(&self, undo: Undo) {
        self.lock().push(undo);
    }

    /// The steps still to run, oldest first.
    pub fn pending(&self) -> Vec<Undo> {
        self.lock().clone()
    }

    /// Takes back every registered change, newest first. Safe to call more than once and from
    /// several threads: the log stays locked until its steps have run, so a second caller (the
    /// signal thread while main cleans up, say) waits and then finds nothing left to do. If the
    /// netlink socket cannot be opened, the steps stay for a later try.
    pub fn run_all(&self) {
        let mut steps = self.lock();
        if steps.is_empty() {
            return;
        }
        let mut host = match Host::new() {
            Ok(host) => host,
            Err(e) => {
                eprintln!("vmm: cannot clean up host devices: {e}");
                return;
            }
        };
        for undo in std::mem::take(&mut *steps).into_iter().rev() {
            if let Err(e) = apply(&mut host, &undo) {
                eprintln!("vmm: cleanup step {undo:?} failed: {e}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Undo>> {
        self.steps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn apply(host: &mut Host, undo: &Undo) -> Result<(), vmm_tap::HostError> {
    log::info!("cleanup: {undo:?}");
    let (name, changes) = match undo {
        // Gone already (its lower device was deleted, or someone else removed it): done.
        Undo::DeleteLink(name) => {
            return match host.delete(name) {
                Err(vmm_tap::HostError::Missing { .. }) => {
                    log::info!("cleanup: {name} is gone already");
                    Ok(())
                }
                other => other,
            }
        }
        Undo::SetMaster(name, master) => (
            name,
            Changes {
                master: Some(*master),
                ..Changes::NONE
            },
        ),
        Undo::SetMtu(name, mtu) => (
            name,
            Changes {
                mtu: Some(*mtu),
                ..Changes::NONE
            },
        ),
        Undo::SetMac(name, mac) => (
            name,
            Changes {
                mac: Some(*mac),
                ..Changes::NONE
            },
        ),
        Undo::SetDown(name) => (
            name,
            Changes {
                up: Some(false),
                ..Changes::NONE
            },
        ),
    };
    let link = host.get(name, "interface")?;
    host.set(&link, changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_register_keeps_order_for_reverse_undo() {
        let log = UndoLog::default();
        log.register(Undo::SetMtu("a".into(), 1500));
        log.register(Undo::DeleteLink("b".into()));
        assert_eq!(
            log.pending(),
            vec![Undo::SetMtu("a".into(), 1500), Undo::DeleteLink("b".into())]
        );
    }

    #[test]
    fn test_an_empty_log_runs_without_touching_the_host() {
        let log = UndoLog::default();
        log.run_all(); // no netlink socket needed: nothing to do
        assert!(log.pending().is_empty());
    }
}
