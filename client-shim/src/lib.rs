//! `libanycast_shim.so`: an `LD_PRELOAD` library that makes `getaddrinfo`,
//! `gethostbyname`, `gethostbyname2` and their `_r` forms resolve anycast
//! names (`Web%any.example.net`, or names under configured zones) through
//! the anycast resolver, and passes every other name untouched to the C
//! library.
//!
//! ```sh
//! ANYCAST_ZONES=any.example.net LD_PRELOAD=libanycast_shim.so curl http://web.any.example.net/
//! ```
//!
//! How it stays out of its host program's way:
//!
//! * **Other names** go to the C library's function (found once with
//!   `dlsym(RTLD_NEXT)`) after a check of the name's bytes against the zones
//!   read at load time: no allocation, no lock, no system call.
//! * **Anycast names** are resolved with a blocking DNS exchange (UDP, TCP on
//!   truncation; bounded in time) with the resolver, an IP literal; the
//!   result list is built by the C library itself from the numeric
//!   addresses, so its `freeaddrinfo` frees it.
//! * **No panic crosses into C** (each entry point catches them), **no
//!   thread** is started and **no lock** is taken, so it is thread-safe and
//!   fork-safe; a thread-local guard sends any lookup made while the shim is
//!   resolving straight to the C library.
//!
//! The configuration (`ANYCAST_*` variables, read with `secure_getenv`, over
//! `/etc/anycast/shim.conf`) is read once, when the library loads: see
//! `docs/shim.md`.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod gai;
mod hostbyname;
mod real;

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int};
use std::panic::catch_unwind;
use std::ptr;
use std::sync::OnceLock;

use anycast_lookup::{Config, no_unwind, route, sys};
use libc::{AF_INET, addrinfo, hostent, size_t};

static CONFIG: OnceLock<Config> = OnceLock::new();

/// The configuration, read on first use: normally by the constructor, at
/// load time, single-threaded, before `main`.
fn config() -> &'static Config {
    CONFIG.get_or_init(|| Config::load("anycast-shim"))
}

/// Runs when the library is loaded: reads the configuration, looks the C
/// library's functions up, and says what is wrong with the configuration,
/// so that none of it happens later in a thread or a forked child.
extern "C" fn load() {
    let _ = catch_unwind(|| {
        let config = config();
        real::resolve_all();
        for warning in &config.warnings {
            config.log(warning);
        }
        if config.debug {
            config.log(&format!(
                "loaded: resolver {:?}, zones [{}], set {}, filter {:?}, timeout {:?} x {}",
                config.resolver,
                config
                    .zones
                    .iter()
                    .map(|z| z.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                config.set,
                config.filter,
                config.timeout,
                config.attempts
            ));
        }
    });
}

#[used]
#[unsafe(link_section = ".init_array")]
static LOAD: extern "C" fn() = load;

thread_local! {
    /// Set while this thread resolves an anycast name.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Marks the thread busy until dropped (also when unwinding).
struct Busy;

impl Busy {
    fn enter() -> Option<Busy> {
        BUSY.try_with(|busy| {
            if busy.get() {
                None
            } else {
                busy.set(true);
                Some(Busy)
            }
        })
        .ok()
        .flatten()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = BUSY.try_with(|busy| busy.set(false));
    }
}

/// The configuration, the name's bytes, and a busy mark, if `name` is an
/// anycast name this thread should resolve; `None` sends it to the C
/// library. Allocates nothing.
///
/// # Safety
///
/// `name` is NULL or a C string.
unsafe fn anycast<'a>(name: *const c_char) -> Option<(&'static Config, &'a [u8], Busy)> {
    if name.is_null() {
        return None;
    }
    // SAFETY: a non-null name is a C string that outlives the call.
    let bytes: &'a [u8] = unsafe { CStr::from_ptr(name) }.to_bytes();
    let config = config();
    if !route::is_anycast(bytes, &config.zones) {
        return None;
    }
    Some((config, bytes, Busy::enter()?))
}

/// What a `gethostbyname` form reports after a panic.
fn hostent_panicked() -> Option<*mut hostent> {
    sys::set_h_errno(sys::NO_RECOVERY);
    Some(ptr::null_mut())
}

/// `getaddrinfo(3)`.
///
/// # Safety
///
/// As for the C library's `getaddrinfo`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let Some(real) = real::getaddrinfo() else {
        sys::set_errno(libc::ENOSYS);
        return libc::EAI_SYSTEM;
    };
    let answered = no_unwind(
        || Some(libc::EAI_FAIL),
        || {
            // SAFETY: the caller passes NULL or a valid addrinfo.
            let numeric =
                unsafe { hints.as_ref() }.is_some_and(|h| h.ai_flags & libc::AI_NUMERICHOST != 0);
            if numeric || res.is_null() {
                return None;
            }
            // SAFETY: the caller passes NULL or a C string.
            let (config, name, _busy) = unsafe { anycast(node) }?;
            // SAFETY: the caller's arguments, as given.
            Some(unsafe { gai::getaddrinfo(config, real, name, service, hints, res) })
        },
    );
    match answered {
        Some(rc) => rc,
        // SAFETY: the caller's arguments, passed on unchanged.
        None => unsafe { real(node, service, hints, res) },
    }
}

/// `gethostbyname(3)`.
///
/// # Safety
///
/// As for the C library's `gethostbyname`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    let answered = no_unwind(hostent_panicked, || {
        // SAFETY: the caller passes NULL or a C string.
        let (config, bytes, _busy) = unsafe { anycast(name) }?;
        Some(hostbyname::gethostbyname2(config, bytes, AF_INET))
    });
    match (answered, real::gethostbyname()) {
        (Some(hostent), _) => hostent,
        // SAFETY: the caller's argument, passed on unchanged.
        (None, Some(real)) => unsafe { real(name) },
        (None, None) => no_function(),
    }
}

/// `gethostbyname2(3)`.
///
/// # Safety
///
/// As for the C library's `gethostbyname2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    let answered = no_unwind(hostent_panicked, || {
        // SAFETY: the caller passes NULL or a C string.
        let (config, bytes, _busy) = unsafe { anycast(name) }?;
        Some(hostbyname::gethostbyname2(config, bytes, af))
    });
    match (answered, real::gethostbyname2()) {
        (Some(hostent), _) => hostent,
        // SAFETY: the caller's arguments, passed on unchanged.
        (None, Some(real)) => unsafe { real(name, af) },
        (None, None) => no_function(),
    }
}

/// `gethostbyname_r(3)`.
///
/// # Safety
///
/// As for the C library's `gethostbyname_r`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: the caller's arguments, as `gethostbyname_r` takes them.
    let answered = unsafe { hostbyname_r(name, AF_INET, ret, buf, buflen, result, h_errnop) };
    match (answered, real::gethostbyname_r()) {
        (Some(rc), _) => rc,
        // SAFETY: the caller's arguments, passed on unchanged.
        (None, Some(real)) => unsafe { real(name, ret, buf, buflen, result, h_errnop) },
        // SAFETY: the caller passes valid pointers or NULL.
        (None, None) => unsafe { no_function_r(result, h_errnop) },
    }
}

/// `gethostbyname2_r(3)`.
///
/// # Safety
///
/// As for the C library's `gethostbyname2_r`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: the caller's arguments, as `gethostbyname2_r` takes them.
    let answered = unsafe { hostbyname_r(name, af, ret, buf, buflen, result, h_errnop) };
    match (answered, real::gethostbyname2_r()) {
        (Some(rc), _) => rc,
        // SAFETY: the caller's arguments, passed on unchanged.
        (None, Some(real)) => unsafe { real(name, af, ret, buf, buflen, result, h_errnop) },
        // SAFETY: the caller passes valid pointers or NULL.
        (None, None) => unsafe { no_function_r(result, h_errnop) },
    }
}

/// Both `_r` forms for an anycast name; `None` for any other name.
///
/// # Safety
///
/// The arguments are `gethostbyname2_r`'s.
unsafe fn hostbyname_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Option<c_int> {
    let panicked = || {
        // SAFETY: the caller passes valid pointers or NULL.
        unsafe { no_function_r(result, h_errnop) };
        Some(0)
    };
    no_unwind(panicked, || {
        // SAFETY: the caller passes NULL or a C string.
        let (config, bytes, _busy) = unsafe { anycast(name) }?;
        // SAFETY: the caller's arguments.
        Some(unsafe {
            hostbyname::gethostbyname2_r(config, bytes, af, ret, buf, buflen, result, h_errnop)
        })
    })
}

/// The C library has no such function (cannot happen with glibc).
fn no_function() -> *mut hostent {
    sys::set_h_errno(sys::NO_RECOVERY);
    ptr::null_mut()
}

/// Sets `*result` to NULL and `*h_errnop` to `NO_RECOVERY`; `ENOSYS`.
///
/// # Safety
///
/// `result` and `h_errnop` are NULL or valid for a write.
unsafe fn no_function_r(result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
    // SAFETY: the caller passes valid pointers or NULL.
    unsafe {
        if !result.is_null() {
            *result = ptr::null_mut();
        }
        if !h_errnop.is_null() {
            *h_errnop = sys::NO_RECOVERY;
        }
    }
    libc::ENOSYS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_is_per_thread_and_released() {
        let busy = Busy::enter().expect("not busy yet");
        assert!(Busy::enter().is_none(), "re-entry is refused");
        std::thread::spawn(|| assert!(Busy::enter().is_some(), "other threads are free"))
            .join()
            .unwrap();
        drop(busy);
        assert!(Busy::enter().is_some());
    }
}
