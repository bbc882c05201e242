//! The guest console on a terminal. When stdin is a terminal the VMM puts it in raw mode, as
//! QEMU's `-serial stdio` does: every key goes to the guest as typed (Ctrl-C interrupts the
//! guest's program, not the VMM), and an escape key reaches the VMM itself:
//!
//! | keys | action |
//! |---|---|
//! | `Ctrl-A x` | quit: undo host changes, print the NIC report, exit |
//! | `Ctrl-A h` | print this help |
//! | `Ctrl-A Ctrl-A` | send one `Ctrl-A` to the guest |
//!
//! The terminal is restored on every way out: a normal exit, an error, `Ctrl-A x`, a signal,
//! a panic (the owners of a [`Terminal`] call [`Terminal::restore`]; it is idempotent). When
//! stdin is not a terminal nothing changes: bytes are forwarded as they come.

use std::sync::{Arc, Mutex};

/// The escape key, Ctrl-A (as QEMU).
pub const ESCAPE: u8 = 0x01;

/// What `Ctrl-A h` prints.
pub const HELP: &str =
    "\r\nvmm console: C-a x  quit the VM    C-a h  this help    C-a C-a  send C-a\r\n";

/// A terminal in raw mode, and how to put it back.
#[derive(Debug, Default)]
pub struct Terminal {
    saved: Mutex<Option<libc::termios>>,
}

impl Terminal {
    /// Puts stdin in raw mode if it is a terminal; otherwise does nothing.
    pub fn raw_if_tty() -> Terminal {
        let terminal = Terminal::default();
        // SAFETY: isatty only looks at the fd.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return terminal;
        }
        // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
        let mut attrs: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `attrs` is a valid termios for tcgetattr to write.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut attrs) } != 0 {
            return terminal;
        }
        let saved = attrs;
        // Raw input: no line editing, echo, signals from keys or flow control; every byte as
        // it is typed. Output processing stays (the VMM's own lines end with \n).
        attrs.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        attrs.c_iflag &= !(libc::IXON | libc::ICRNL | libc::INLCR | libc::ISTRIP | libc::BRKINT);
        attrs.c_cc[libc::VMIN] = 1;
        attrs.c_cc[libc::VTIME] = 0;
        // SAFETY: `attrs` is a valid termios read from this terminal and then changed.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &attrs) } == 0 {
            *terminal.lock() = Some(saved);
        }
        terminal
    }

    /// Whether stdin was put in raw mode (and the escape key is active).
    pub fn is_raw(&self) -> bool {
        self.lock().is_some()
    }

    /// Puts the terminal back as it was. Safe to call more than once, from any thread.
    pub fn restore(&self) {
        if let Some(saved) = self.lock().take() {
            // SAFETY: `saved` is the termios tcgetattr returned for this terminal.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved) };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<libc::termios>> {
        self.saved.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The console as the VM sees it: the terminal (raw or not) and what `Ctrl-A x` does.
#[derive(Clone)]
pub struct Console {
    /// The terminal stdin is on.
    pub terminal: Arc<Terminal>,
    /// Ends the VMM in order (restore the terminal, report, undo host changes, exit).
    pub quit: Arc<dyn Fn() + Send + Sync>,
}

impl Default for Console {
    /// Not a terminal; quitting just exits.
    fn default() -> Self {
        Console {
            terminal: Arc::default(),
            quit: Arc::new(|| std::process::exit(0)),
        }
    }
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("raw", &self.terminal.is_raw())
            .finish()
    }
}

/// What a typed byte means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// Send this byte to the guest.
    Guest(u8),
    /// Send these two bytes to the guest (an escape followed by a key that means nothing).
    GuestTwo(u8, u8),
    /// Nothing yet (the escape key was pressed).
    Pending,
    /// Quit the VM.
    Quit,
    /// Show the help.
    Help,
}

/// The escape-key state machine.
#[derive(Debug, Default)]
pub struct Escape {
    after_escape: bool,
}

impl Escape {
    /// What `byte` means, given the bytes before it.
    pub fn feed(&mut self, byte: u8) -> Key {
        if !self.after_escape {
            if byte == ESCAPE {
                self.after_escape = true;
                return Key::Pending;
            }
            return Key::Guest(byte);
        }
        self.after_escape = false;
        match byte {
            b'x' | b'X' => Key::Quit,
            b'h' | b'H' | b'?' => Key::Help,
            ESCAPE => Key::Guest(ESCAPE),
            other => Key::GuestTwo(ESCAPE, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_escape_keys() {
        let mut e = Escape::default();
        assert_eq!(e.feed(b'l'), Key::Guest(b'l'));
        assert_eq!(e.feed(0x03), Key::Guest(0x03), "Ctrl-C goes to the guest");
        assert_eq!(e.feed(ESCAPE), Key::Pending);
        assert_eq!(e.feed(b'h'), Key::Help);
        assert_eq!(e.feed(ESCAPE), Key::Pending);
        assert_eq!(e.feed(ESCAPE), Key::Guest(ESCAPE), "C-a C-a sends one C-a");
        assert_eq!(e.feed(ESCAPE), Key::Pending);
        assert_eq!(
            e.feed(b'q'),
            Key::GuestTwo(ESCAPE, b'q'),
            "not an escape: both go on"
        );
        assert_eq!(e.feed(ESCAPE), Key::Pending);
        assert_eq!(e.feed(b'x'), Key::Quit);
    }

    #[test]
    fn test_not_a_terminal_is_left_alone() {
        // Under `cargo test` stdin is not a terminal (or is, when run by hand: then raw mode
        // is set and must come back).
        let t = Terminal::raw_if_tty();
        t.restore();
        t.restore();
        assert!(!t.is_raw());
    }
}
