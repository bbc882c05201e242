//! Ethernet MAC addresses.

use std::fmt;
use std::str::FromStr;

/// An Ethernet MAC address, as in the device's config space (virtio 1.2 §5.1.4 `mac`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// A MAC address string that does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address: expected six hex bytes like 52:54:00:12:34:56")]
pub struct MacParseError(String);

impl MacAddr {
    /// Whether the locally-administered bit is set (addresses we make up must have it).
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// Whether this is a multicast (or broadcast) address, which a NIC cannot own.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(bytes))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mac_round_trip() {
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(mac.0, [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert!(mac.is_local());
        assert!(!mac.is_multicast());
    }

    #[test]
    fn test_mac_parse_errors() {
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "52-54-00-ab-cd-0f",
            "5:54:00:ab:cd:0f",
            "zz:54:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
        let msg = "x".parse::<MacAddr>().unwrap_err().to_string();
        assert!(msg.contains("52:54:00:12:34:56"), "{msg}");
    }

    #[test]
    fn test_broadcast_is_multicast() {
        assert!("ff:ff:ff:ff:ff:ff"
            .parse::<MacAddr>()
            .unwrap()
            .is_multicast());
    }
}
