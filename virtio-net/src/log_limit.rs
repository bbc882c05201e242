//! A cap on warnings a guest can cause: a driver may write refused features or break its
//! rings as often as it likes, and each would log a line on the VMM's stderr.

/// Warnings of one kind from one device: the first [`LogLimit::new`]`(n)` are warnings, the
/// rest go to debug level (`RUST_LOG=debug` still shows them).
#[derive(Debug)]
pub struct LogLimit {
    left: u32,
}

/// What the last warning allowed says about the ones after it.
const LAST: &str = " (further warnings like this one from this device are logged at debug level)";

impl LogLimit {
    /// Allows `n` warnings.
    pub const fn new(n: u32) -> Self {
        Self { left: n }
    }

    /// `Some(suffix)` if this one is a warning (`suffix` is empty, or for the last one says
    /// what comes next); `None` once the warnings are used up: log it at debug level.
    pub fn take(&mut self) -> Option<&'static str> {
        match self.left {
            0 => None,
            n => {
                self.left = n - 1;
                Some(if n == 1 { LAST } else { "" })
            }
        }
    }
}

/// Logs `$($arg)+` as a warning while `$limit` allows, else at debug level.
#[macro_export]
macro_rules! warn_limited {
    ($limit:expr, $($arg:tt)+) => {
        match $limit.take() {
            Some(suffix) => log::warn!("{}{suffix}", format_args!($($arg)+)),
            None => log::debug!($($arg)+),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_warnings_stop_after_the_limit_and_the_last_says_so() {
        let mut limit = LogLimit::new(3);
        assert_eq!(limit.take(), Some(""));
        assert_eq!(limit.take(), Some(""));
        assert_eq!(limit.take(), Some(LAST));
        assert_eq!(limit.take(), None);
        assert_eq!(limit.take(), None);
    }
}
