//! `key=value` parameters on the kernel command line, e.g. `netprobe.mode=ping`.

/// The value of the last `key=value` word on `cmdline`, as Linux takes the last one too.
pub fn param<'a>(cmdline: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut found = None;
    for word in cmdline.split(|b| *b == b' ') {
        if word.len() > key.len() && word[key.len()] == b'=' && &word[..key.len()] == key {
            found = Some(&word[key.len() + 1..]);
        }
    }
    found
}

/// Parses a decimal number.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    Some(n)
}

/// Parses a hexadecimal number with or without `0x`.
fn parse_hex(s: &[u8]) -> Option<u64> {
    let s = s.strip_prefix(b"0x").unwrap_or(s);
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut n = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        n = (n << 4) | u64::from(d);
    }
    Some(n)
}

/// Parses a dotted-quad IPv4 address into a host-order u32.
pub fn parse_ip(s: &[u8]) -> Option<u32> {
    let mut ip = 0u32;
    let mut parts = 0;
    for part in s.split(|b| *b == b'.') {
        let n = parse_u64(part)?;
        if n > 255 || parts == 4 {
            return None;
        }
        ip = (ip << 8) | n as u32;
        parts += 1;
    }
    (parts == 4).then_some(ip)
}

/// The first `virtio_mmio.device=<size>@<base>:<irq>` on the command line: its base address.
/// Parses `aa:bb:cc:dd:ee:ff` (hex digits, either case).
pub fn parse_mac(s: &[u8]) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(|c| *c == b':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 2 {
            return None;
        }
        let mut v = 0u8;
        for c in part {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return None,
            };
            v = v * 16 + d;
        }
        *byte = v;
    }
    parts.next().is_none().then_some(mac)
}

pub fn virtio_mmio_base(cmdline: &[u8]) -> Option<u64> {
    for word in cmdline.split(|b| *b == b' ') {
        if let Some(spec) = word.strip_prefix(b"virtio_mmio.device=") {
            let at = spec.iter().position(|b| *b == b'@')?;
            let rest = &spec[at + 1..];
            let colon = rest.iter().position(|b| *b == b':').unwrap_or(rest.len());
            return parse_hex(&rest[..colon]);
        }
    }
    None
}
