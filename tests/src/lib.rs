//! Support for the end-to-end tests: real peers on loopback.
//!
//! * [`upstream`]: a tiny authoritative DNS server on loopback that the
//!   resolver forwards to, so forwarding is tested without the internet.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod upstream;
