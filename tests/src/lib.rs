//! Support for the end-to-end tests: real peers on loopback.
//!
//! * [`upstream`]: a tiny authoritative DNS server on loopback that the
//!   resolver forwards to, so forwarding is tested without the internet.
//! * [`harness`]: builds and starts the real `anycast-resolver` binary on a
//!   config, reads its log, and a small blocking DNS client (plus `dig`).

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod harness;
pub mod upstream;
