//! The module's soname: glibc `dlopen`s `libnss_<service>.so.2` for the
//! service named in nsswitch.conf, so the library calls itself that.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnss_anycast.so.2");
}
