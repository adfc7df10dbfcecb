//! A `struct hostent` for an anycast name, laid out in a caller's buffer:
//! what the shim's `gethostbyname*` and the NSS module's
//! `_nss_anycast_gethostbyname*_r` return.

use std::ffi::{c_char, c_int};
use std::mem::{align_of, size_of};
use std::net::IpAddr;
use std::ptr;

use libc::{AF_INET, AF_INET6, hostent};

use crate::config::Config;
use crate::resolve::{self, Failure, Resolved, Want};

/// A resolved name with its addresses of one family, ready to lay out.
#[derive(Debug)]
pub struct Host {
    name: Vec<u8>,
    family: c_int,
    addresses: Vec<IpAddr>,
}

/// Resolves the anycast name `name` for `family` (`AF_INET` or `AF_INET6`;
/// any other is a permanent failure: callers refuse it first).
pub fn lookup(config: &Config, name: &[u8], family: c_int) -> Result<Host, Failure> {
    let want = match family {
        AF_INET => Want::V4,
        AF_INET6 => Want::V6 {
            v4_mapped: false,
            all: false,
        },
        _ => return Err(Failure::Fail),
    };
    let Resolved { name, addresses } = resolve::resolve(config, name, want)?;
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
