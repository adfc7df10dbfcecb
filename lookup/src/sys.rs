//! The few C library calls the client side makes: the environment, `errno`
//! and `h_errno`, randomness, a line on stderr.

use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::atomic::{AtomicU64, Ordering};

unsafe extern "C" {
    /// glibc: `getenv`, but `NULL` in a setuid or setgid program.
    #[link_name = "secure_getenv"]
    fn c_secure_getenv(name: *const c_char) -> *mut c_char;
    /// glibc: where this thread's `h_errno` lives.
    fn __h_errno_location() -> *mut c_int;
}

/// `h_errno` values (`<netdb.h>`).
pub const NETDB_INTERNAL: c_int = -1;
pub const NETDB_SUCCESS: c_int = 0;
pub const HOST_NOT_FOUND: c_int = 1;
pub const TRY_AGAIN: c_int = 2;
pub const NO_RECOVERY: c_int = 3;
pub const NO_DATA: c_int = 4;

/// An environment variable, read with `secure_getenv` (so a setuid program
/// ignores it); `None` when unset.
pub fn secure_getenv(name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid C string; the result, when not null, points to
    // the environment's own NUL-terminated string, copied before returning.
    unsafe {
        let value = c_secure_getenv(name.as_ptr());
        if value.is_null() {
            None
        } else {
            Some(CStr::from_ptr(value).to_string_lossy().into_owned())
        }
    }
}

/// Sets this thread's `h_errno`.
pub fn set_h_errno(value: c_int) {
    // SAFETY: glibc returns a valid pointer to the calling thread's h_errno.
    unsafe { *__h_errno_location() = value };
}

/// Sets this thread's `errno`.
pub fn set_errno(value: c_int) {
    // SAFETY: glibc returns a valid pointer to the calling thread's errno.
    unsafe { *libc::__errno_location() = value };
}

/// 64 random bits from the kernel (`getrandom`), or, should that fail, from
/// the clock and a counter: query IDs must be hard to guess, not perfect.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if usize::try_from(n).is_ok_and(|n| n == bytes.len()) {
        return u64::from_ne_bytes(bytes);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // splitmix64 over the clock and a counter.
    let mut z = (nanos as u64)
        ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ u64::from(std::process::id()) << 32;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform index below `n` (`n > 0`).
pub fn random_below(n: usize) -> usize {
    let n = u64::try_from(n).unwrap_or(u64::MAX).max(1);
    // Multiply-shift: unbiased enough for picking among a few addresses.
    let index = (u128::from(random_u64()) * u128::from(n)) >> 64;
    usize::try_from(index).unwrap_or(0)
}

/// Writes one line to stderr with a single `write(2)`: no lock (std's
/// stderr lock could be held by a thread that does not exist in a forked
/// child), no buffering.
pub fn log_line(program: &str, line: &str) {
    let mut bytes = Vec::with_capacity(program.len() + line.len() + 3);
    bytes.extend_from_slice(program.as_bytes());
    bytes.extend_from_slice(b": ");
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        // SAFETY: `rest` is a valid buffer of `rest.len()` bytes.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        match usize::try_from(n) {
            Ok(0) | Err(_) => {
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                return;
            }
            Ok(n) => rest = &rest[n..],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_indices_stay_in_range_and_vary() {
        let mut seen = [0usize; 3];
        for _ in 0..300 {
            seen[random_below(3)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 30), "{seen:?}");
        assert_eq!(random_below(1), 0);
        assert_ne!(random_u64(), random_u64());
    }

    #[test]
    fn unset_variables_are_none() {
        assert_eq!(secure_getenv("ANYCAST_SHIM_SURELY_UNSET_VARIABLE"), None);
        assert!(secure_getenv("PATH").is_some());
    }
}
