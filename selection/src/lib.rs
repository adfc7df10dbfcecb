//! The selection core of application-layer anycast: what a resolver knows
//! of a group's members, and how it picks one. Pure: no I/O, no async
//! runtime, no DNS; every function takes the time and the random source it
//! needs, so tests fix both.
//!
//! * [`groups`]: groups and their members, with their settings (probing,
//!   selection, estimation); a [`groups::Directory`] is an immutable
//!   snapshot of every group.
//! * [`estimate`]: from a member's pushes and probes to its estimates
//!   (response time, rank, load, path) and its probe health.
//! * [`handout`]: the answers handed out, as load they are about to bring.
//! * [`select`]: a member's availability, the equivalent-server set and
//!   the pick.
//!
//! The resolver keeps the I/O around it: the boards that pushes and probes
//! land on, the prober, the push receiver, the DNS front, the API.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod estimate;
pub mod groups;
pub mod handout;
pub mod select;
