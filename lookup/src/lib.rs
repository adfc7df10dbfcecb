//! Anycast names to addresses for C programs: what `libanycast_shim.so` (the
//! `LD_PRELOAD` shim) and `libnss_anycast.so.2` (the glibc NSS module) share.
//!
//! * [`route`]: whether a name is an anycast name (the paper's
//!   `Web%any.example.net`, or a name under a configured zone), checked on
//!   the name's bytes without allocating, and the DNS form to ask for.
//! * [`resolve`]: an anycast name to addresses for the family a caller wants,
//!   with a blocking, bounded DNS exchange ([`dns`]) with the resolver and
//!   the client-side filter ([`choose`]).
//! * [`hostent`]: the result laid out as a `struct hostent` in a caller's
//!   buffer.
//! * [`Config`]: `/etc/anycast/shim.conf` and the `ANYCAST_*` variables.
//!
//! No async runtime, no thread, no lock: both libraries run inside other
//! programs.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod choose;
pub mod config;
pub mod dns;
pub mod hostent;
pub mod resolve;
pub mod route;
pub mod sys;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use config::Config;
pub use resolve::{Failure, Resolved, Want};

/// Runs `f`, turning a panic into `on_panic()`: no panic may unwind into C.
pub fn no_unwind<T>(on_panic: impl FnOnce() -> T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| on_panic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_the_fallback() {
        assert_eq!(no_unwind(|| 7, || panic!("inside")), 7);
        assert_eq!(no_unwind(|| 7, || 1), 1);
    }
}
