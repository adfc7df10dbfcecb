//! `anycast-resolver`: a DNS server that answers anycast names with a good
//! server of the named group, and forwards every other name upstream.
//!
//! A tour, following a query:
//!
//! * [`server`] owns the sockets: bounded UDP and TCP loops that hand each
//!   request's bytes to the DNS front and send back what it returns.
//! * [`dns`] is the front: decode, EDNS, route by zone, encode with truncation.
//! * [`groups`] holds the anycast groups and their members ([`groups::Directory`]).
//! * [`select`] picks a member by metric: pure, random source passed in.
//! * [`forward`] sends names outside the anycast zones to upstream DNS, cached.
//! * [`push`] checks agents' signed load reports and keeps the latest of each
//!   member; [`probe`] fetches each member's probe file from here.
//! * [`estimate`] turns pushes and probes into response-time estimates and
//!   health (pure); [`observe`] combines them for selection.
//! * [`view`] explains a group (TXT and JSON alike).
//! * [`api`] is the HTTP API: the push receiver and the group views.
//! * [`config`] turns the TOML file into one typed [`config::Config`].
//!
//! The anycast-name grammar itself lives in the shared `anycast-proto` crate.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod api;
pub mod config;
pub mod dns;
pub mod estimate;
pub mod forward;
pub mod groups;
pub mod observe;
pub mod probe;
pub mod push;
pub mod select;
pub mod server;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::dns::DnsFront;
use crate::forward::Forwarder;
use crate::groups::Directory;
use crate::probe::ProbeBoard;
use crate::push::PushBoard;
use crate::server::Listener;

/// How long in-flight answers may take to finish after shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Builds the directory of groups a configuration describes.
pub fn directory(config: &Config) -> Directory {
    Directory::new(
        config.zones.iter().map(|z| z.name.clone()).collect(),
        config.groups.iter().map(|g| g.to_group()),
    )
}

/// Binds every listener, then serves until `shutdown` is cancelled. Nothing is
/// served unless every listener could be bound.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let forwarder = Forwarder::new(&config.forward)?;
    let directory = Arc::new(directory(&config));
    let pushes = Arc::new(PushBoard::new(config.push.clone()));
    let probes = Arc::new(ProbeBoard::new());
    let front = Arc::new(DnsFront::new(
        &config,
        directory.clone(),
        pushes.clone(),
        probes.clone(),
        forwarder,
    ));

    let mut listeners = Vec::new();
    for addr in &config.dns.listen {
        let listener = Listener::bind(*addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(listener);
    }
    let http = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} for HTTP", config.http.listen))?;
    tracing::info!(
        zones = config.zones.len(),
        groups = config.groups.len(),
        push_keys = config.push.keys.len(),
        "anycast resolver starting"
    );
    if !pushes.has_keys() {
        tracing::warn!("no [[push.key]] configured: every push will be refused");
    }

    let tasks = TaskTracker::new();
    server::serve(listeners, front, &config.dns, shutdown.clone(), &tasks)?;
    let http_addr = http.local_addr()?;
    tracing::info!(listener = "http", "listening on {http_addr}");
    probe::start(&directory, probes.clone(), shutdown.clone(), &tasks)?;
    let app = api::router(api::ApiState {
        directory,
        pushes,
        probes,
    });
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(http, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "HTTP listener failed");
        }
    });
    shutdown.cancelled().await;
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    tracing::info!("stopped");
    Ok(())
}
