//! Signals the VMM acts on, handled on a thread of their own (signal-hook):
//!
//! | signal | action |
//! |---|---|
//! | SIGINT, SIGTERM, SIGHUP | undo host changes ([`crate::net::cleanup`]), exit with 128 + signal |
//! | SIGUSR1 | print the byte-symmetry table ([`crate::net::symmetry`]) and carry on |
//!
//! A panic also runs the cleanup before the default panic message. Both restore the terminal
//! first ([`crate::terminal`]).

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use std::sync::Arc;

use crate::net::HostEffects;
use crate::terminal::Terminal;

/// Ends the VMM in order from anywhere but main's normal path (a signal, `Ctrl-A x`): the
/// terminal back, one line saying `why`, the byte-symmetry table, host changes undone, then
/// exit with `code`.
pub fn stop(effects: &HostEffects, terminal: &Terminal, why: &str, code: i32) -> ! {
    terminal.restore();
    eprintln!("\nvmm: {why}");
    eprint!("{}", effects.probes.table());
    effects.undo.run_all();
    eprintln!("vmm: host devices restored");
    std::process::exit(code);
}

/// Starts the signal thread and the panic hook, both working on `effects`; both put the
/// `terminal` back first.
pub fn install(effects: HostEffects, terminal: Arc<Terminal>) {
    let on_panic = effects.clone();
    let panic_terminal = terminal.clone();
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1]) {
        Ok(mut signals) => {
            let spawned = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    crate::seccomp::apply_or_exit(crate::seccomp::ThreadKind::Signals);
                    for signal in signals.forever() {
                        if signal == SIGUSR1 {
                            eprint!("{}", effects.probes.table());
                            continue;
                        }
                        stop(
                            &effects,
                            &terminal,
                            &format!("stopped by signal {signal}"),
                            128 + signal,
                        );
                    }
                });
            if let Err(e) = spawned {
                log::warn!("cannot watch for signals, Ctrl-C will not clean up: {e}");
            }
        }
        Err(e) => log::warn!("cannot watch for signals, Ctrl-C will not clean up: {e}"),
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Only main undoes host changes on a panic: a vCPU's panic ends the VM through main
        // (vcpu.rs), the device thread's through the signal thread (net/attach.rs), and the
        // VM must not run on with its taps and bridges taken away.
        if std::thread::current().name() == Some("main") {
            panic_terminal.restore();
            on_panic.undo.run_all();
        }
        default_hook(info);
    }));
}
