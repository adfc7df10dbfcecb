//! The end-to-end tests: the real binaries on loopback, one module an area.
//!
//! * `resolver`: the DNS front, forwarding, the views, the config file.
//! * `agent`: the push agent with the resolver it pushes to.
//! * `estimation`: estimation, the equivalent-server set and health
//!   (resolver, agents, servers).
//! * `shim`: the client side, the LD_PRELOAD shim and the NSS module, with
//!   getent, python3, curl, C programs and valgrind.
//! * `admin`: anycastctl, the admin API, persistence, reload, draining,
//!   self-registration.
//! * `observability`: /metrics parsed, /v1/status, the dashboard in
//!   headless Chromium.
//! * `hierarchy`: an authority and local resolvers (learning, caching,
//!   serve-stale, discovery, per-resolver probe paths).
//! * `faults`: upstream down or garbage, bad probe URLs, all members down,
//!   unwritable state, kill -9.
//! * `abuse`: idle TCP, slow senders, push floods.
//! * `etcd_cluster`: the etcd test cluster itself.
//! * `differential`: forwarded answers compared with unbound's.
//! * `fleet`: several resolvers keeping membership in a real etcd cluster.
//! * `service`: systemd notifications and the unit files.
//! * `nginx`: nginx as the replicated server.
//! * `tls`: probes of HTTPS members, pushes to a resolver behind HTTPS.
//!
//! Run one area with `cargo test -p anycast-tests --test integration --
//! agent::`.

mod abuse;
mod admin;
mod agent;
mod differential;
mod estimation;
mod etcd_cluster;
mod faults;
mod fleet;
mod hierarchy;
mod nginx;
mod observability;
mod resolver;
mod service;
mod shim;
mod tls;
