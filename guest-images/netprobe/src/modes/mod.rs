//! What netprobe does, chosen by `netprobe.mode=`. Each mode returns `Ok` for PASS or the
//! reason for FAIL.

pub mod boot;
