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
