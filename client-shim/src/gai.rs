//! `getaddrinfo` for an anycast name.
//!
//! The name is resolved here; the `addrinfo` list is then built by the C
//! library's own `getaddrinfo`, called once per address with the numeric
//! address (`AI_NUMERICHOST`) and the caller's service and hints. So the
//! service, socket type, protocol and flags mean exactly what they mean to
//! glibc, and every node is allocated by glibc, as its `freeaddrinfo`
//! expects: glibc frees a list node by node (each node with its address,
//! and its `ai_canonname`), so lists of several calls can be chained.

use std::ffi::{CString, c_char, c_int};
use std::ptr;

use libc::{
    AF_INET, AF_INET6, AF_UNSPEC, AI_ALL, AI_CANONNAME, AI_NUMERICHOST, AI_V4MAPPED, addrinfo,
};

use anycast_lookup::Config;
use anycast_lookup::resolve::{self, Want};

use crate::real::GetaddrinfoFn;

/// glibc's flags when `hints` is NULL (`AI_DEFAULT`).
const AI_DEFAULT: c_int = libc::AI_V4MAPPED | libc::AI_ADDRCONFIG;

/// Resolves the anycast name `name` (a C string's bytes) for
/// `service`/`hints` into `*res`.
///
/// # Safety
///
/// The arguments are `getaddrinfo`'s: `service` NULL or a C string, `hints`
/// NULL or a valid `addrinfo`, `res` valid for a write.
pub unsafe fn getaddrinfo(
    config: &Config,
    real: GetaddrinfoFn,
    name: &[u8],
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    // SAFETY: the caller passes NULL or a valid addrinfo.
    let (flags, family, socktype, protocol) = match unsafe { hints.as_ref() } {
        Some(h) => (h.ai_flags, h.ai_family, h.ai_socktype, h.ai_protocol),
        None => (AI_DEFAULT, AF_UNSPEC, 0, 0),
    };
    let want = match family {
        AF_INET => Want::V4,
        AF_INET6 => Want::V6 {
            v4_mapped: flags & AI_V4MAPPED != 0,
            all: flags & AI_V4MAPPED != 0 && flags & AI_ALL != 0,
        },
        AF_UNSPEC => Want::Any,
        _ => return libc::EAI_FAMILY,
    };
    let resolved = match resolve::resolve(config, name, want) {
        Ok(resolved) => resolved,
        Err(failure) => return failure.eai(),
    };

    // SAFETY: an all-zero addrinfo is a valid "no hints" value.
    let mut numeric_hints: addrinfo = unsafe { std::mem::zeroed() };
    numeric_hints.ai_flags = (flags & !AI_CANONNAME) | AI_NUMERICHOST;
    numeric_hints.ai_family = family;
    numeric_hints.ai_socktype = socktype;
    numeric_hints.ai_protocol = protocol;

    let mut head: *mut addrinfo = ptr::null_mut();
    let mut tail: *mut addrinfo = ptr::null_mut();
    let mut first_error = None;
    for address in &resolved.addresses {
        let Ok(numeric) = CString::new(address.to_string()) else {
            continue;
        };
        let mut list: *mut addrinfo = ptr::null_mut();
        // SAFETY: valid C strings and hints; `list` is valid for a write.
        let rc = unsafe { real(numeric.as_ptr(), service, &numeric_hints, &mut list) };
        if rc != 0 || list.is_null() {
            first_error.get_or_insert(rc);
            continue;
        }
        if tail.is_null() {
            head = list;
        } else {
            // SAFETY: `tail` is the last node of the list built so far.
            unsafe { (*tail).ai_next = list };
        }
        tail = list;
        // SAFETY: `tail` and every `ai_next` are nodes glibc just returned.
        unsafe {
            while !(*tail).ai_next.is_null() {
                tail = (*tail).ai_next;
            }
        }
    }
    if head.is_null() {
        // Every address refused by the hints (socket type, service,
        // AI_ADDRCONFIG...): glibc's own reason.
        return match first_error {
            Some(rc) if rc != 0 => rc,
            _ => libc::EAI_NODATA,
        };
    }
    if flags & AI_CANONNAME != 0 {
        let canonical = CString::new(resolved.name).unwrap_or_default();
        // SAFETY: glibc's `freeaddrinfo` frees `ai_canonname` with `free`, and
        // `strdup` allocates with `malloc`; `head` has no canonical name (we
        // did not ask for it).
        unsafe {
            let copy = libc::strdup(canonical.as_ptr());
            if copy.is_null() {
                libc::freeaddrinfo(head);
                return libc::EAI_MEMORY;
            }
            (*head).ai_canonname = copy;
        }
    }
    // SAFETY: the caller passes a valid `res`.
    unsafe { *res = head };
    0
}
