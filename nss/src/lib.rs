//! `libnss_anycast.so.2`: a glibc NSS module that resolves anycast names
//! (`Web%any.example.net`, or names under configured zones) through the
//! anycast resolver for every program that resolves names with the C
//! library, `LD_PRELOAD` or not, setuid or not:
//!
//! ```text
//! # /etc/nsswitch.conf
//! hosts: files anycast dns
//! ```
//!
//! It answers `hosts` lookups by name (`gethostbyname4_r`, used by
//! `getaddrinfo`; `gethostbyname3_r`, `gethostbyname2_r`, `gethostbyname_r`)
//! with the code the `LD_PRELOAD` shim uses (`anycast-lookup`), and follows
//! glibc's conventions (the glibc manual, "NSS Modules Interface"; nss-mdns
//! and systemd's nss-resolve do the same):
//!
//! | outcome | status | `*errnop` | `*h_errnop` |
//! |---|---|---|---|
//! | addresses | `SUCCESS` | untouched | `NETDB_SUCCESS` |
//! | not an anycast name | `NOTFOUND` | `ENOENT` | `HOST_NOT_FOUND` |
//! | no such anycast name | `NOTFOUND` | `ENOENT` | `HOST_NOT_FOUND` |
//! | no address of that family | `NOTFOUND` | `ENOENT` | `NO_DATA` |
//! | resolver unreachable, timed out, SERVFAIL | `TRYAGAIN` | `EAGAIN` | `TRY_AGAIN` |
//! | the buffer is too small (glibc retries with a larger one) | `TRYAGAIN` | `ERANGE` | `NETDB_INTERNAL` |
//! | refused, bad configuration, an unknown family | `UNAVAIL` | `EAFNOSUPPORT` or `ENOENT` | `NO_RECOVERY` |
//!
//! A name that is not an anycast name costs a check of its bytes against the
//! zones (no allocation, no system call), so the next module runs at once.
//! The configuration is the shim's (`/etc/anycast/shim.conf`, overridden by
//! `ANYCAST_*` variables, which a setuid program does not see), read on the
//! first lookup; its warnings go to stderr once, prefixed `anycast-nss:`.
//! No panic crosses into C, no thread is started, no lock is held during a
//! lookup.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod addrtuple;

use std::ffi::{CStr, c_char, c_int};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use anycast_lookup::hostent::{Host, lookup};
use anycast_lookup::{Config, Failure, Want, no_unwind, resolve, route, sys};
use libc::{AF_INET, AF_INET6, hostent, size_t};

use crate::addrtuple::{AddrTuple, Tuples};

/// `enum nss_status` (`<nss.h>`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NssStatus {
    TryAgain = -2,
    Unavail = -1,
    NotFound = 0,
    Success = 1,
}

/// A lookup's result before it is reported: a status and the two error
/// numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Report {
    status: NssStatus,
    errno: c_int,
    h_errno: c_int,
}

impl Report {
    const SUCCESS: Report = Report {
        status: NssStatus::Success,
        errno: 0,
        h_errno: sys::NETDB_SUCCESS,
    };
    /// Not an anycast name: the next module's turn.
    const NOT_MINE: Report = Report {
        status: NssStatus::NotFound,
        errno: libc::ENOENT,
        h_errno: sys::HOST_NOT_FOUND,
    };
    /// The caller's buffer is too small; glibc calls again with a larger one.
    const TOO_SMALL: Report = Report {
        status: NssStatus::TryAgain,
        errno: libc::ERANGE,
        h_errno: sys::NETDB_INTERNAL,
    };
    /// An address family other than `AF_INET` and `AF_INET6`.
    const BAD_FAMILY: Report = Report {
        status: NssStatus::Unavail,
        errno: libc::EAFNOSUPPORT,
        h_errno: sys::NO_RECOVERY,
    };
    /// A panic, caught before it reached C.
    const PANICKED: Report = Report {
        status: NssStatus::Unavail,
        errno: libc::ENOENT,
        h_errno: sys::NO_RECOVERY,
    };

    fn of(failure: Failure) -> Report {
        let (status, errno) = match failure {
            Failure::NoName | Failure::NoData => (NssStatus::NotFound, libc::ENOENT),
            Failure::Again => (NssStatus::TryAgain, libc::EAGAIN),
            Failure::Fail => (NssStatus::Unavail, libc::ENOENT),
        };
        Report {
            status,
            errno,
            h_errno: failure.h_errno(),
        }
    }

    /// Writes the error numbers (the success leaves `*errnop` alone) and
    /// returns the status.
    ///
    /// # Safety
    ///
    /// `errnop` and `h_errnop` are NULL or valid for a write.
    unsafe fn report(self, errnop: *mut c_int, h_errnop: *mut c_int) -> NssStatus {
        // SAFETY: the caller's pointers, NULL or valid.
        unsafe {
            if self.status != NssStatus::Success && !errnop.is_null() {
                *errnop = self.errno;
            }
            if !h_errnop.is_null() {
                *h_errnop = self.h_errno;
            }
        }
        self.status
    }
}

/// The configuration, once read: a pointer rather than a `OnceLock` so that
/// [`unload`] can free it.
static CONFIG: AtomicPtr<Config> = AtomicPtr::new(ptr::null_mut());

/// The configuration, read on the first lookup; its warnings are written
/// then, once. Two threads' first lookups may both read it; one copy stays.
fn config() -> &'static Config {
    let current = CONFIG.load(Ordering::Acquire);
    if !current.is_null() {
        // SAFETY: set below from a leaked `Box`, freed only by `unload`.
        return unsafe { &*current };
    }
    let fresh = Box::into_raw(Box::new(Config::load("anycast-nss")));
    match CONFIG.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            // SAFETY: just published; freed only by `unload`.
            let config = unsafe { &*fresh };
            for warning in &config.warnings {
                config.log(warning);
            }
            config
        }
        Err(existing) => {
            // SAFETY: `fresh` was never published; `existing` is as above.
            unsafe {
                drop(Box::from_raw(fresh));
                &*existing
            }
        }
    }
}

/// Runs when the library is unloaded. glibc keeps NSS modules loaded for
/// the life of the process, except for `__libc_freeres` at exit (valgrind
/// calls it), which unloads them: the configuration is freed then, so that
/// nothing the module allocated is left behind.
extern "C" fn unload() {
    let config = CONFIG.swap(ptr::null_mut(), Ordering::AcqRel);
    if !config.is_null() {
        // SAFETY: from `Box::into_raw` in `config`; no lookup runs while the
        // C library unloads its modules.
        drop(unsafe { Box::from_raw(config) });
    }
}

#[used]
#[unsafe(link_section = ".fini_array")]
static UNLOAD: extern "C" fn() = unload;

/// The configuration and the name's bytes, if `name` is an anycast name.
///
/// # Safety
///
/// `name` is NULL or a C string.
unsafe fn anycast<'a>(name: *const c_char) -> Option<(&'static Config, &'a [u8])> {
    if name.is_null() {
        return None;
    }
    // SAFETY: a non-null name is a C string that outlives the call.
    let bytes: &'a [u8] = unsafe { CStr::from_ptr(name) }.to_bytes();
    let config = config();
    route::is_anycast(bytes, &config.zones).then_some((config, bytes))
}

/// Writes `value` through `pointer` unless it is NULL.
///
/// # Safety
///
/// `pointer` is NULL or valid for a write.
unsafe fn set<T>(pointer: *mut T, value: T) {
    if !pointer.is_null() {
        // SAFETY: the caller's pointer, valid when not NULL.
        unsafe { pointer.write(value) };
    }
}

/// `gethostbyname4_r`: every address of the name, both families, as a list
/// of `struct gaih_addrtuple` in `buffer` (what `getaddrinfo` asks for).
///
/// # Safety
///
/// As glibc calls it: `name` a C string, `buffer` valid for `buflen` bytes,
/// the other pointers NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _nss_anycast_gethostbyname4_r(
    name: *const c_char,
    pat: *mut *mut AddrTuple,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
    ttlp: *mut i32,
) -> NssStatus {
    let report = no_unwind(
        || Report::PANICKED,
        || {
            // SAFETY: glibc passes a C string.
            let Some((config, bytes)) = (unsafe { anycast(name) }) else {
                return Report::NOT_MINE;
            };
            let resolved = match resolve::resolve(config, bytes, Want::Any) {
                Ok(resolved) if !resolved.addresses.is_empty() => resolved,
                Ok(_) => return Report::of(Failure::NoData),
                Err(failure) => return Report::of(failure),
            };
            let tuples = Tuples::new(&resolved.name, &resolved.addresses);
            // SAFETY: glibc passes `buffer` valid for `buflen` bytes.
            let Some(first) = (unsafe { tuples.write(buffer, buflen) }) else {
                return Report::TOO_SMALL;
            };
            // SAFETY: glibc passes `pat` valid; nscd hands in a tuple of its
            // own to fill (as nss-resolve does), others a NULL to set.
            unsafe {
                if pat.is_null() {
                    return Report::TOO_SMALL;
                }
                if (*pat).is_null() {
                    *pat = first;
                } else {
                    **pat = first.read();
                }
                set(ttlp, 0);
            }
            Report::SUCCESS
        },
    );
    // SAFETY: glibc passes valid pointers.
    unsafe { report.report(errnop, h_errnop) }
}

/// `gethostbyname3_r`: the addresses of one family as a `struct hostent` in
/// `buffer`, with the canonical name.
///
/// # Safety
///
/// As glibc calls it: `name` a C string, `buffer` valid for `buflen` bytes,
/// the other pointers NULL or valid.
#[allow(clippy::too_many_arguments)] // glibc's interface.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _nss_anycast_gethostbyname3_r(
    name: *const c_char,
    af: c_int,
    host: *mut hostent,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
    ttlp: *mut i32,
    canonp: *mut *mut c_char,
) -> NssStatus {
    let report = no_unwind(
        || Report::PANICKED,
        || {
            // SAFETY: glibc passes a C string.
            let Some((config, bytes)) = (unsafe { anycast(name) }) else {
                return Report::NOT_MINE;
            };
            if af != AF_INET && af != AF_INET6 {
                return Report::BAD_FAMILY;
            }
            let found: Host = match lookup(config, bytes, af) {
                Ok(found) => found,
                Err(failure) => return Report::of(failure),
            };
            if host.is_null() || buffer.is_null() {
                return Report::TOO_SMALL;
            }
            // SAFETY: glibc passes `host` valid and `buffer` valid for
            // `buflen` bytes.
            if !unsafe { found.write(host, buffer, buflen) } {
                return Report::TOO_SMALL;
            }
            // SAFETY: as above; `h_name` points into `buffer`.
            unsafe {
                set(ttlp, 0);
                set(canonp, (*host).h_name);
            }
            Report::SUCCESS
        },
    );
    // SAFETY: glibc passes valid pointers.
    unsafe { report.report(errnop, h_errnop) }
}

/// `gethostbyname2_r`: [`_nss_anycast_gethostbyname3_r`] without the TTL
/// and the canonical name.
///
/// # Safety
///
/// As for [`_nss_anycast_gethostbyname3_r`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _nss_anycast_gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    host: *mut hostent,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
) -> NssStatus {
    // SAFETY: the caller's arguments, passed on.
    unsafe {
        _nss_anycast_gethostbyname3_r(
            name,
            af,
            host,
            buffer,
            buflen,
            errnop,
            h_errnop,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    }
}

/// `gethostbyname_r`: [`_nss_anycast_gethostbyname2_r`] for IPv4.
///
/// # Safety
///
/// As for [`_nss_anycast_gethostbyname3_r`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _nss_anycast_gethostbyname_r(
    name: *const c_char,
    host: *mut hostent,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
) -> NssStatus {
    // SAFETY: the caller's arguments, passed on.
    unsafe { _nss_anycast_gethostbyname2_r(name, AF_INET, host, buffer, buflen, errnop, h_errnop) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_glibc_conventions() {
        let of = |f| {
            let r = Report::of(f);
            (r.status, r.errno, r.h_errno)
        };
        assert_eq!(
            of(Failure::NoName),
            (NssStatus::NotFound, libc::ENOENT, sys::HOST_NOT_FOUND)
        );
        assert_eq!(
            of(Failure::NoData),
            (NssStatus::NotFound, libc::ENOENT, sys::NO_DATA)
        );
        assert_eq!(
            of(Failure::Again),
            (NssStatus::TryAgain, libc::EAGAIN, sys::TRY_AGAIN)
        );
        assert_eq!(
            of(Failure::Fail),
            (NssStatus::Unavail, libc::ENOENT, sys::NO_RECOVERY)
        );
    }

    #[test]
    fn other_names_are_the_next_modules_without_touching_the_buffer() {
        let mut buffer = [0x55u8; 64];
        let mut errno = 0;
        let mut h_errno = 0;
        let mut pat: *mut AddrTuple = ptr::null_mut();
        let status = unsafe {
            _nss_anycast_gethostbyname4_r(
                c"localhost".as_ptr(),
                &mut pat,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut errno,
                &mut h_errno,
                ptr::null_mut(),
            )
        };
        assert_eq!(status, NssStatus::NotFound);
        assert_eq!((errno, h_errno), (libc::ENOENT, sys::HOST_NOT_FOUND));
        assert!(pat.is_null());
        assert!(buffer.iter().all(|&b| b == 0x55));
        let status = unsafe {
            _nss_anycast_gethostbyname4_r(
                ptr::null(),
                &mut pat,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut errno,
                &mut h_errno,
                ptr::null_mut(),
            )
        };
        assert_eq!(status, NssStatus::NotFound);
    }
}
