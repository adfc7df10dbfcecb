//! The C library's own functions, found with `dlsym(RTLD_NEXT)` once (at
//! load time, from the library's constructor) and kept in atomics: the path
//! for every other name is one atomic load and a call.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::{addrinfo, hostent, size_t};

pub type GetaddrinfoFn = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const addrinfo,
    *mut *mut addrinfo,
) -> c_int;
pub type GethostbynameFn = unsafe extern "C" fn(*const c_char) -> *mut hostent;
pub type Gethostbyname2Fn = unsafe extern "C" fn(*const c_char, c_int) -> *mut hostent;
pub type GethostbynameRFn = unsafe extern "C" fn(
    *const c_char,
    *mut hostent,
    *mut c_char,
    size_t,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;
pub type Gethostbyname2RFn = unsafe extern "C" fn(
    *const c_char,
    c_int,
    *mut hostent,
    *mut c_char,
    size_t,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;

/// One function of the next object in the lookup order (the C library).
struct Next {
    name: &'static CStr,
    address: AtomicPtr<c_void>,
}

impl Next {
    const fn new(name: &'static CStr) -> Next {
        Next {
            name,
            address: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The function's address, looked up on first use. Two threads racing
    /// on the first use both find the same address.
    fn get(&self) -> Option<*mut c_void> {
        let address = self.address.load(Ordering::Acquire);
        if !address.is_null() {
            return Some(address);
        }
        // SAFETY: `name` is a valid C string; RTLD_NEXT is a valid handle for
        // a symbol lookup from a shared object.
        let address = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        if address.is_null() {
            return None;
        }
        self.address.store(address, Ordering::Release);
        Some(address)
    }
}

static GETADDRINFO: Next = Next::new(c"getaddrinfo");
static GETHOSTBYNAME: Next = Next::new(c"gethostbyname");
static GETHOSTBYNAME2: Next = Next::new(c"gethostbyname2");
static GETHOSTBYNAME_R: Next = Next::new(c"gethostbyname_r");
static GETHOSTBYNAME2_R: Next = Next::new(c"gethostbyname2_r");

/// Looks every function up now (called from the library's constructor, so
/// that no lookup happens later, in a thread or a forked child).
pub fn resolve_all() {
    for next in [
        &GETADDRINFO,
        &GETHOSTBYNAME,
        &GETHOSTBYNAME2,
        &GETHOSTBYNAME_R,
        &GETHOSTBYNAME2_R,
    ] {
        let _ = next.get();
    }
}

macro_rules! typed {
    ($(#[$doc:meta])* $fn_name:ident, $next:ident, $ty:ty) => {
        $(#[$doc])*
        pub fn $fn_name() -> Option<$ty> {
            // SAFETY: the symbol of that name in the C library has this
            // signature (`<netdb.h>`).
            $next.get().map(|p| unsafe { std::mem::transmute::<*mut c_void, $ty>(p) })
        }
    };
}

typed!(
    /// The C library's `getaddrinfo`.
    getaddrinfo, GETADDRINFO, GetaddrinfoFn);
typed!(
    /// The C library's `gethostbyname`.
    gethostbyname, GETHOSTBYNAME, GethostbynameFn);
typed!(
    /// The C library's `gethostbyname2`.
    gethostbyname2, GETHOSTBYNAME2, Gethostbyname2Fn);
typed!(
    /// The C library's `gethostbyname_r`.
    gethostbyname_r, GETHOSTBYNAME_R, GethostbynameRFn);
typed!(
    /// The C library's `gethostbyname2_r`.
    gethostbyname2_r, GETHOSTBYNAME2_R, Gethostbyname2RFn);
