//! `gethostbyname*` for an anycast name: a `struct hostent` laid out in the
//! caller's buffer (`_r` forms) or in a buffer of the calling thread (the
//! others, so that they are at least thread-safe across threads).

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int};
use std::mem::{align_of, size_of};
use std::net::IpAddr;
use std::ptr;

use libc::{AF_INET, AF_INET6, hostent};

use crate::config::Config;
use crate::resolve::{self, Failure, Resolved, Want};
use crate::sys;

/// A resolved name with its addresses of one family, ready to lay out.
#[derive(Debug)]
pub struct Host {
    name: Vec<u8>,
    family: c_int,
    addresses: Vec<IpAddr>,
}

/// Resolves the anycast name `name` for `family` (`AF_INET` or `AF_INET6`).
/// `Err` is an `h_errno` value.
pub fn lookup(config: &Config, name: &[u8], family: c_int) -> Result<Host, c_int> {
    let want = match family {
        AF_INET => Want::V4,
        AF_INET6 => Want::V6 {
            v4_mapped: false,
            all: false,
        },
        _ => return Err(sys::NETDB_INTERNAL),
    };
    let Resolved { name, addresses } =
        resolve::resolve(config, name, want).map_err(Failure::h_errno)?;
    Ok(Host {
        name: name.into_bytes(),
        family,
        addresses,
    })
}

impl Host {
    fn address_len(&self) -> usize {
        if self.family == AF_INET6 { 16 } else { 4 }
    }

    /// Bytes of buffer needed at `buf` (alignment included).
    pub fn needed(&self, buf: *const c_char) -> usize {
        let pad = buf.align_offset(align_of::<*mut c_char>());
        let pointers = (self.addresses.len() + 1 + 1) * size_of::<*mut c_char>();
        pad + pointers + self.addresses.len() * self.address_len() + self.name.len() + 1
    }

    /// Lays the host out: `ret` points into `buf`. `false` (and nothing
    /// written) when `buflen` is too small.
    ///
    /// # Safety
    ///
    /// `ret` is valid for a write and `buf` for `buflen` bytes.
    pub unsafe fn write(&self, ret: *mut hostent, buf: *mut c_char, buflen: usize) -> bool {
        if buflen < self.needed(buf) {
            return false;
        }
        let pad = buf.align_offset(align_of::<*mut c_char>());
        let len = self.address_len();
        let count = self.addresses.len();
        // SAFETY: everything below stays within the `needed` bytes checked
        // above; the pointer arrays are aligned by `pad`.
        unsafe {
            let addr_list = buf.add(pad).cast::<*mut c_char>();
            let aliases = addr_list.add(count + 1);
            let mut data = aliases.add(1).cast::<c_char>();
            for (i, address) in self.addresses.iter().enumerate() {
                let octets: &[u8] = match address {
                    IpAddr::V4(v4) => &v4.octets(),
                    IpAddr::V6(v6) => &v6.octets(),
                };
                ptr::copy_nonoverlapping(octets.as_ptr().cast::<c_char>(), data, len);
                addr_list.add(i).write(data);
                data = data.add(len);
            }
            addr_list.add(count).write(ptr::null_mut());
            aliases.write(ptr::null_mut());
            let name = data;
            ptr::copy_nonoverlapping(self.name.as_ptr().cast::<c_char>(), name, self.name.len());
            name.add(self.name.len()).write(0);
            ret.write(hostent {
                h_name: name,
                h_aliases: aliases,
                h_addrtype: self.family,
                h_length: if self.family == AF_INET6 { 16 } else { 4 },
                h_addr_list: addr_list,
            });
        }
        true
    }
}

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
    match lookup(config, name, family) {
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
        Err(h_errno) => {
            sys::set_h_errno(h_errno);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn host(family: c_int, addresses: &[&str]) -> Host {
        Host {
            name: b"web.any.example.net".to_vec(),
            family,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn lays_out_a_hostent_and_refuses_a_small_buffer() {
        for (family, addresses) in [
            (AF_INET, &["127.0.1.1", "127.0.1.2"][..]),
            (AF_INET6, &["2001:db8::1"][..]),
        ] {
            let host = host(family, addresses);
            let mut buf = vec![0u8; 512];
            // An odd start, to exercise the alignment.
            let start = buf.as_mut_ptr().wrapping_add(1).cast::<c_char>();
            let needed = host.needed(start);
            let mut ret = std::mem::MaybeUninit::<hostent>::uninit();
            assert!(!unsafe { host.write(ret.as_mut_ptr(), start, needed - 1) });
            assert!(unsafe { host.write(ret.as_mut_ptr(), start, needed) });
            let h = unsafe { ret.assume_init() };
            unsafe {
                assert_eq!(
                    CStr::from_ptr(h.h_name).to_str().unwrap(),
                    "web.any.example.net"
                );
                assert!((*h.h_aliases).is_null());
                assert_eq!(h.h_addrtype, family);
                for (i, address) in addresses.iter().enumerate() {
                    let p = *h.h_addr_list.add(i);
                    let got: IpAddr = if family == AF_INET {
                        let b = std::slice::from_raw_parts(p.cast::<u8>(), 4);
                        IpAddr::from(<[u8; 4]>::try_from(b).unwrap())
                    } else {
                        let b = std::slice::from_raw_parts(p.cast::<u8>(), 16);
                        IpAddr::from(<[u8; 16]>::try_from(b).unwrap())
                    };
                    assert_eq!(got, address.parse::<IpAddr>().unwrap());
                }
                assert!((*h.h_addr_list.add(addresses.len())).is_null());
            }
        }
    }
}
