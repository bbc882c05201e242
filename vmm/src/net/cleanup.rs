//! Leaving the host as we found it. Every change the VMM makes to host devices registers how to
//! undo it; the undo list runs at exit — a normal one, an error, a panic, or SIGINT/SIGTERM/SIGHUP
//! (see [`crate::signals`]).
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

static UNDO: Mutex<Vec<Undo>> = Mutex::new(Vec::new());

/// Remembers how to take back a change just made.
pub fn register(undo: Undo) {
    UNDO.lock().unwrap_or_else(|p| p.into_inner()).push(undo);
}

/// Takes back every registered change, newest first. Safe to call more than once.
pub fn run_all() {
    let undos: Vec<Undo> = std::mem::take(&mut *UNDO.lock().unwrap_or_else(|p| p.into_inner()));
    if undos.is_empty() {
        return;
    }
    let mut host = match Host::new() {
        Ok(host) => host,
        Err(e) => {
            eprintln!("vmm: cannot clean up host devices: {e}");
            return;
        }
    };
    for undo in undos.into_iter().rev() {
        if let Err(e) = apply(&mut host, &undo) {
            eprintln!("vmm: cleanup step {undo:?} failed: {e}");
        }
    }
}

fn apply(host: &mut Host, undo: &Undo) -> Result<(), vmm_tap::HostError> {
    log::info!("cleanup: {undo:?}");
    let (name, changes) = match undo {
        Undo::DeleteLink(name) => return host.delete(name),
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
        register(Undo::SetMtu("a".into(), 1500));
        register(Undo::DeleteLink("b".into()));
        let list = UNDO.lock().unwrap().clone();
        assert_eq!(list.last(), Some(&Undo::DeleteLink("b".into())));
        UNDO.lock().unwrap().clear();
    }
}
