//! `libanycast_shim.so`: an `LD_PRELOAD` library that makes `getaddrinfo` and
//! `gethostbyname*` resolve anycast names (`Web%any.example.net`, or names
//! under configured zones) through the anycast resolver, and passes every
//! other name untouched to the C library.
//!
//! Not built yet: this crate reserves its place in the workspace. Until it
//! lands, programs reach anycast names in their DNS form
//! (`web.any.example.net`) by pointing their resolver at `anycast-resolver`.
