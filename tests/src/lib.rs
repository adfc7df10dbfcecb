//! Support for the end-to-end tests: real peers on loopback.
//!
//! * [`upstream`]: a tiny authoritative DNS server on loopback that the
//!   resolver forwards to, so forwarding is tested without the internet.
//! * [`authority`]: real DNS servers from Debian's packages on loopback:
//!   NSD as an authority for zones a test writes, unbound as a reference
//!   resolver forwarding to it.
//! * [`etcd`]: a real etcd cluster from Debian's package on loopback, whose
//!   members a test kills and restarts, with a small blocking client.
//! * [`harness`]: what every test uses, re-exported from [`process`]
//!   (builds and starts the real `anycast-resolver` and `anycast-agent`
//!   binaries on a config, reads their logs, waits on conditions),
//!   [`fixtures`] (config heads, the example configs), [`dns`] (a small
//!   blocking DNS client, plus `dig`) and [`bed`] (a resolver config built
//!   section by section, and a bed: the resolver started on it with its
//!   members, each a test web server with its agent).
//! * [`web`]: a test web server whose response delay the test sets, for the
//!   agent to measure.
//! * [`http`]: a tiny blocking HTTP client for the resolver's HTTP API.
//! * [`nginx`]: a real nginx on loopback, in front of a test web server,
//!   over TLS if asked; [`tls`]: a test CA and certificates.
//! * [`faulty`]: peers that misbehave on purpose (a garbage upstream, probe
//!   URLs that drip, flood or reset, a proxy that holds answers back), and a
//!   process's resident memory.
//! * [`layout`]: which modules of a crate use which, and circles among them.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod authority;
pub mod bed;
pub mod dns;
pub mod etcd;
pub mod faulty;
pub mod fixtures;
pub mod harness;
pub mod http;
pub mod layout;
pub mod nginx;
pub mod process;
pub mod tls;
pub mod upstream;
pub mod web;
