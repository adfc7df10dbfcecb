//! `gethostbyname*` for an anycast name: a `struct hostent` laid out in the
//! caller's buffer (`_r` forms) or in a buffer of the calling thread (the
//! others, so that they are at least thread-safe across threads).

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int};
use std::mem::align_of;
use std::ptr;

use anycast_lookup::hostent::lookup;
use anycast_lookup::{Config, sys};
use libc::{AF_INET, AF_INET6, hostent};

/// `gethostbyname2_r` for an anycast name, with glibc's conventions: 0 and
/// `*result = ret` on success; 0 and `*result = NULL` when the name or its
/// addresses do not exist; `EAGAIN` for a temporary failure; `ERANGE` (and
/// `h_errno` `NETDB_INTERNAL`) when `buf` is too small.
///
/// # Safety
///
/// The arguments are `gethostbyname2_r`'s.
#[allow(clippy::too_many_arguments)] // The C function's, plus the configuration.
pub unsafe fn gethostbyname2_r(
    config: &Config,
    name: &[u8],
    family: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: usize,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: the caller passes valid `result` and `h_errnop`.
    let set = |found: *mut hostent, h_errno: c_int| unsafe {
        if !result.is_null() {
            *result = found;
        }
        if !h_errnop.is_null() {
            *h_errnop = h_errno;
        }
    };
    if family != AF_INET && family != AF_INET6 {
        set(ptr::null_mut(), sys::NETDB_INTERNAL);
        sys::set_errno(libc::EAFNOSUPPORT);
        return libc::EAFNOSUPPORT;
    }
    match lookup(config, name, family).map_err(|f| f.h_errno()) {
        // SAFETY: the caller passes `buf` valid for `buflen` bytes.
        Ok(host) => {
            if ret.is_null() || buf.is_null() || !unsafe { host.write(ret, buf, buflen) } {
                set(ptr::null_mut(), sys::NETDB_INTERNAL);
                sys::set_errno(libc::ERANGE);
                return libc::ERANGE;
            }
            set(ret, sys::NETDB_SUCCESS);
            0
        }
        Err(h_errno) => {
            set(ptr::null_mut(), h_errno);
            if h_errno == sys::TRY_AGAIN {
                libc::EAGAIN
            } else {
                0
            }
        }
    }
}

/// The storage of the non-reentrant forms: one per thread, grown as needed,
/// valid until the thread's next call.
struct Static {
    hostent: UnsafeCell<hostent>,
    buf: UnsafeCell<Vec<u8>>,
}

thread_local! {
    static STATIC: Static = const {
        Static {
            hostent: UnsafeCell::new(hostent {
                h_name: ptr::null_mut(),
                h_aliases: ptr::null_mut(),
                h_addrtype: 0,
                h_length: 0,
                h_addr_list: ptr::null_mut(),
            }),
            buf: UnsafeCell::new(Vec::new()),
        }
    };
}

/// `gethostbyname2` for an anycast name: the thread's own `hostent`, or
/// NULL with `h_errno` set.
pub fn gethostbyname2(config: &Config, name: &[u8], family: c_int) -> *mut hostent {
    if family != AF_INET && family != AF_INET6 {
        sys::set_h_errno(sys::NETDB_INTERNAL);
        sys::set_errno(libc::EAFNOSUPPORT);
        return ptr::null_mut();
    }
    let host = match lookup(config, name, family) {
        Ok(host) => host,
        Err(failure) => {
            sys::set_h_errno(failure.h_errno());
            return ptr::null_mut();
        }
    };
    let written = STATIC.try_with(|storage| {
        // SAFETY: only this thread touches its storage, and not re-entrantly
        // (the shim's guard keeps its own lookups out).
        let (hostent, buf) = unsafe { (&mut *storage.hostent.get(), &mut *storage.buf.get()) };
        let needed = host.needed(ptr::null()) + align_of::<*mut c_char>();
        if buf.len() < needed {
            buf.resize(needed, 0);
        }
        // SAFETY: `buf` is valid for its length.
        let ok = unsafe { host.write(hostent, buf.as_mut_ptr().cast(), buf.len()) };
        ok.then_some(ptr::from_mut(hostent))
    });
    match written {
        Ok(Some(hostent)) => {
            sys::set_h_errno(sys::NETDB_SUCCESS);
            hostent
        }
        _ => {
            sys::set_h_errno(sys::NO_RECOVERY);
            ptr::null_mut()
        }
    }
}
