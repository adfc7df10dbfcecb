//! `struct gaih_addrtuple`, the list `gethostbyname4_r` returns to
//! `getaddrinfo`, laid out in the caller's buffer.

use std::ffi::{c_char, c_int};
use std::mem::{align_of, size_of};
use std::net::IpAddr;
use std::ptr;

use libc::{AF_INET, AF_INET6};

/// `struct gaih_addrtuple` (glibc's `<nss.h>`).
#[repr(C)]
#[derive(Debug)]
pub struct AddrTuple {
    pub next: *mut AddrTuple,
    /// The canonical name (every tuple points at the same string).
    pub name: *mut c_char,
    pub family: c_int,
    /// The address in network byte order: 4 bytes for IPv4, 16 for IPv6.
    pub addr: [u32; 4],
    pub scopeid: u32,
}

/// A name and its addresses, ready to lay out as tuples.
#[derive(Debug)]
pub struct Tuples<'a> {
    name: &'a str,
    addresses: &'a [IpAddr],
}

impl<'a> Tuples<'a> {
    pub fn new(name: &'a str, addresses: &'a [IpAddr]) -> Tuples<'a> {
        Tuples { name, addresses }
    }

    /// Bytes of buffer needed at `buffer` (alignment included).
    pub fn needed(&self, buffer: *const c_char) -> usize {
        buffer.align_offset(align_of::<AddrTuple>())
            + self.addresses.len() * size_of::<AddrTuple>()
            + self.name.len()
            + 1
    }

    /// Lays the list out in `buffer` and returns its first tuple; `None`
    /// (and nothing written) when `buflen` is too small or there is no
    /// address.
    ///
    /// # Safety
    ///
    /// `buffer` is valid for `buflen` bytes.
    pub unsafe fn write(&self, buffer: *mut c_char, buflen: usize) -> Option<*mut AddrTuple> {
        if buffer.is_null() || self.addresses.is_empty() || buflen < self.needed(buffer) {
            return None;
        }
        let pad = buffer.align_offset(align_of::<AddrTuple>());
        // SAFETY: everything below stays within the `needed` bytes checked
        // above; the tuples are aligned by `pad`.
        unsafe {
            let tuples = buffer.add(pad).cast::<AddrTuple>();
            let name = tuples.add(self.addresses.len()).cast::<c_char>();
            ptr::copy_nonoverlapping(self.name.as_ptr().cast::<c_char>(), name, self.name.len());
            name.add(self.name.len()).write(0);
            for (i, address) in self.addresses.iter().enumerate() {
                let next = if i + 1 < self.addresses.len() {
                    tuples.add(i + 1)
                } else {
                    ptr::null_mut()
                };
                let (family, addr) = match address {
                    IpAddr::V4(v4) => (AF_INET, [u32::from_ne_bytes(v4.octets()), 0, 0, 0]),
                    IpAddr::V6(v6) => {
                        let o = v6.octets();
                        let word =
                            |k: usize| u32::from_ne_bytes([o[k], o[k + 1], o[k + 2], o[k + 3]]);
                        (AF_INET6, [word(0), word(4), word(8), word(12)])
                    }
                };
                tuples.add(i).write(AddrTuple {
                    next,
                    name,
                    family,
                    addr,
                    scopeid: 0,
                });
            }
            Some(tuples)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::mem::offset_of;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn the_layout_is_glibcs() {
        assert_eq!(offset_of!(AddrTuple, next), 0);
        assert_eq!(offset_of!(AddrTuple, name), 8);
        assert_eq!(offset_of!(AddrTuple, family), 16);
        assert_eq!(offset_of!(AddrTuple, addr), 20);
        assert_eq!(offset_of!(AddrTuple, scopeid), 36);
        assert_eq!(size_of::<AddrTuple>(), 40);
    }

    #[test]
    fn lays_out_a_list_and_refuses_a_small_buffer() {
        let addresses: Vec<IpAddr> = vec!["127.0.3.1".parse().unwrap(), "::1".parse().unwrap()];
        let tuples = Tuples::new("dual.any.example.net", &addresses);
        let mut buffer = vec![0u8; 256];
        // An odd start, to exercise the alignment.
        let start = buffer.as_mut_ptr().wrapping_add(3).cast::<c_char>();
        let needed = tuples.needed(start);
        assert!(unsafe { tuples.write(start, needed - 1) }.is_none());
        assert!(unsafe { Tuples::new("x", &[]).write(start, 200) }.is_none());
        let first = unsafe { tuples.write(start, needed) }.unwrap();
        unsafe {
            let a = &*first;
            assert_eq!(
                CStr::from_ptr(a.name).to_str().unwrap(),
                "dual.any.example.net"
            );
            assert_eq!(a.family, AF_INET);
            assert_eq!(
                Ipv4Addr::from(a.addr[0].to_ne_bytes()),
                Ipv4Addr::new(127, 0, 3, 1)
            );
            let b = &*a.next;
            assert_eq!(b.family, AF_INET6);
            let mut octets = [0u8; 16];
            for (k, word) in b.addr.iter().enumerate() {
                octets[4 * k..4 * k + 4].copy_from_slice(&word.to_ne_bytes());
            }
            assert_eq!(Ipv6Addr::from(octets), Ipv6Addr::LOCALHOST);
            assert_eq!(b.name, a.name);
            assert!(b.next.is_null());
        }
    }
}
