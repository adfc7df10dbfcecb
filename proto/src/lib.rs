//! The contracts shared by every part of application-layer anycast.
//!
//! This crate holds the domain vocabulary and pure logic that the resolver, the
//! push agent and the client shim must agree on, with no I/O and no async
//! runtime, so it is unit-tested and benchmarked without sockets:
//!
//! * [`name`]: the anycast-name grammar. `web.any.example.net` and
//!   `Web%any.example.net` are one [`AnycastName`]; `load.web.any.example.net`
//!   and `ServerLoad.Web%any.example.net` qualify it with a [`Metric`].
//! * [`metric`]: the metrics (the paper's filters) a name can ask for.
//! * [`push`]: the load report an agent pushes, and its HMAC signature.
//! * [`probe`]: the probe file a member serves for the resolver's probes.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod metric;
pub mod name;
pub mod probe;
pub mod push;

pub use metric::Metric;
pub use name::{AnycastName, NameError, Zone};
