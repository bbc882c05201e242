//! Linux network interface names.

/// Longest interface name Linux accepts: IFNAMSIZ (16) minus the terminating NUL.
pub const IFNAME_MAX_LEN: usize = 15;

/// Errors about host interface names.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    /// The name is empty.
    #[error("an interface name cannot be empty")]
    Empty,
    /// The name is longer than IFNAMSIZ - 1.
    #[error(
        "interface name {name:?} is {len} characters long; Linux allows at most {IFNAME_MAX_LEN}"
    )]
    TooLong {
        /// The rejected name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name has a character Linux rejects (`/`, `:`, whitespace) or is `.`/`..`.
    #[error("interface name {0:?} is not valid: no '/', ':', whitespace, and not '.' or '..'")]
    Invalid(String),
}

/// Checks `name` the way the kernel's `dev_valid_name()` does.
pub fn validate_ifname(name: &str) -> Result<(), IfNameError> {
    if name.is_empty() {
        return Err(IfNameError::Empty);
    }
    if name.len() > IFNAME_MAX_LEN {
        return Err(IfNameError::TooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        return Err(IfNameError::Invalid(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_validate_ifname_accepts_15_characters() {
        assert_eq!(validate_ifname("vnet0"), Ok(()));
        assert_eq!(validate_ifname("abcdefghijklmno"), Ok(()));
    }

    #[test]
    fn test_validate_ifname_too_long_names_the_limit() {
        let err = validate_ifname("abcdefghijklmnop").unwrap_err();
        assert!(matches!(err, IfNameError::TooLong { len: 16, .. }));
        assert!(err.to_string().contains("at most 15"));
    }

    #[test]
    fn test_validate_ifname_rejects_kernel_invalid_names() {
        for bad in ["", ".", "..", "a/b", "a:b", "a b"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
