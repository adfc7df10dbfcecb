//! `anycast-resolver`: a DNS server that answers anycast names with a good
//! server of the named group, and forwards every other name upstream.
//!
//! A tour, following a query:
//!
//! * [`server`] owns the sockets: bounded UDP and TCP loops that hand each
//!   request's bytes to the DNS front and send back what it returns.
//! * [`dns`] is the front: decode, EDNS, route by zone, encode with truncation.
//! * [`groups`] holds the anycast groups and their members ([`groups::Directory`])
//!   with their settings (probing, selection, estimation);
//!   [`membership`] lays the operator's runtime changes over the config's
//!   groups and persists them; [`admin`] is the operator's API.
//! * [`select`] picks a member by metric: pure, random source passed in.
//! * [`forward`] sends names outside the anycast zones to upstream DNS, cached.
//! * [`authority`] learns the groups of local zones from their authority.
//! * [`push`] checks agents' signed load reports and keeps the latest of each
//!   member; [`probe`] fetches each member's probe file from here.
//! * [`estimate`] turns pushes and probes into response-time estimates and
//!   health (pure), predicting the queue a new request meets from the
//!   pushed queue and the [`handout`]s since; [`observe`] combines them for
//!   selection, and hands the scrape-time values to [`telemetry`].
//! * [`view`] explains a group (TXT and JSON alike); [`telemetry`] records
//!   Prometheus metrics and uses no other module; `dashboard.html` is the
//!   status page.
//!
//! No two modules use each other, directly or through others (checked by
//! `cargo test -p anycast-tests --lib layout`).
//! * [`api`] is the HTTP API: the push receiver and the group views.
//! * [`config`] turns the TOML file into one typed [`config::Config`].
//!
//! [`groups`], [`estimate`], [`handout`] and [`select`] are the pure
//! selection core, the `anycast-selection` crate, re-exported here; the
//! anycast-name grammar itself lives in the shared `anycast-proto` crate.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub use anycast_selection::{estimate, groups, handout, select};

pub mod admin;
pub mod api;
pub mod authority;
pub mod config;
pub mod datagrams;
pub mod dns;
pub mod etcd;
pub mod forward;
pub mod https;
pub mod membership;
pub mod observe;
pub mod probe;
pub mod push;
pub mod server;
pub mod telemetry;
pub mod view;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, MembershipStore};
use crate::dns::DnsFront;
use crate::forward::Forwarder;
use crate::groups::Directory;
use crate::membership::Membership;
use crate::observe::Observations;
use crate::server::Listener;

/// How long in-flight answers may take to finish after shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The directory of groups a configuration describes (no runtime changes).
pub fn directory(config: &Config) -> Directory {
    Directory::new(
        config.zones.clone(),
        config
            .group_specs()
            .map(|(name, spec)| groups::Group::from_spec(name, spec)),
    )
}

/// Reloads the config file: the new zones and groups replace the old ones
/// (runtime changes stay over them); a file that does not validate is refused
/// and the running config stays in force.
#[derive(Debug)]
struct Reloader {
    path: Option<PathBuf>,
    membership: Arc<Membership>,
    running: Config,
    /// The listeners' certificates, read again at every reload.
    certificates: Vec<(&'static str, Arc<https::Certificate>)>,
}

impl Reloader {
    /// Reloads, telling systemd it is reloading, then ready again (with the
    /// new config, or the old one if the new is refused).
    async fn reload(&self) -> Result<(), String> {
        anycast_daemon::notify::reloading();
        for (listener, certificate) in &self.certificates {
            certificate.reload(listener);
        }
        let reloaded = self.reload_config().await;
        anycast_daemon::notify::ready();
        reloaded
    }

    async fn reload_config(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Err("the resolver was not started from a config file".to_owned());
        };
        let config = match Config::read(path) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "reload refused; the running configuration stays in force");
                return Err(error.to_string());
            }
        };
        for section in config.needs_restart(&self.running) {
            tracing::warn!(
                section,
                "changed in the config file; takes effect at the next restart"
            );
        }
        self.membership
            .reload(config.zones.clone(), config.group_specs())
            .await;
        tracing::info!(
            zones = config.zones.len(),
            groups = config.groups.len(),
            path = %path.display(),
            "configuration reloaded"
        );
        Ok(())
    }
}

/// Serves an axum app on `listener` until `shutdown`: over TLS with
/// `certificate`, else plain HTTP.
fn serve_http(
    listener: TcpListener,
    certificate: Option<Arc<https::Certificate>>,
    app: axum::Router,
    name: &'static str,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    match certificate {
        Some(certificate) => {
            let tls = https::listen(listener, certificate, name, shutdown.clone())
                .map_err(|e| anyhow::anyhow!("cannot serve TLS on the {name} listener: {e}"))?;
            // (A tap that does nothing: it gives the listener the peer's
            // address as connect info, like the plain one.)
            serve_app(tls.tap_io(|_| {}), app, name, shutdown, tasks);
        }
        // Answers go out at once, not held back by Nagle's algorithm behind
        // the previous answer's ACK on a keep-alive connection.
        None => serve_app(
            listener.tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            }),
            app,
            name,
            shutdown,
            tasks,
        ),
    }
    Ok(())
}

fn serve_app<L>(
    listener: L,
    app: axum::Router,
    name: &'static str,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    for<'a> std::net::SocketAddr:
        axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    tasks.spawn(async move {
        // The peer's address, for the push receiver's per-source limit.
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, listener = name, "HTTP listener failed");
        }
    });
}

/// Binds every listener, then serves until `shutdown` is cancelled. Nothing is
/// served unless every listener could be bound. `config_path` is where the
/// config came from, for reloads (SIGHUP or the admin API).
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // SIGHUP's default action is to terminate: catch it before anything else.
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    // The recorder first: hickory-resolver registers its cache counters when
    // the forwarder is built, and binds them to whatever recorder is there.
    let metrics = telemetry::install();
    let forwarder = Forwarder::new(&config.forward)?;
    if config.forward.upstreams.is_empty()
        && let Some(problem) =
            config::forwarding_loop_among(forwarder.upstreams(), &config.dns.listen)
    {
        anyhow::bail!("{problem}; /etc/resolv.conf names it: set [forward] upstreams");
    }
    let state_file = config.admin.as_ref().map(|a| a.state_file.clone());
    let membership = Arc::new(match &config.membership {
        MembershipStore::File => {
            Membership::new(config.zones.clone(), config.group_specs(), state_file)?
        }
        MembershipStore::Etcd(etcd) => Membership::with_etcd(
            config.zones.clone(),
            config.group_specs(),
            etcd.clone(),
            state_file,
        )?,
    });
    let observations = Observations::new(config.push.clone());
    let authorities = authority::Authorities::new(
        membership.clone(),
        observations.pushes.clone(),
        forwarder.clone(),
    )?;
    let front = Arc::new(DnsFront::new(
        &config,
        membership.subscribe(),
        observations.clone(),
        authorities,
        forwarder,
    ));

    let mut listeners = Vec::new();
    for addr in &config.dns.listen {
        let listener = Listener::bind(*addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(listener);
    }
    let http = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} for HTTP", config.http.listen))?;
    let admin = match &config.admin {
        Some(admin) => Some(
            TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("cannot listen on {} for the admin API", admin.listen))?,
        ),
        None => None,
    };
    tracing::info!(
        zones = config.zones.len(),
        groups = config.groups.len(),
        push_keys = config.push.keys.len(),
        "anycast resolver starting"
    );
    if !observations.pushes.has_keys() {
        tracing::warn!("no [[push.key]] configured: every push will be refused");
    }

    let tasks = TaskTracker::new();
    telemetry::keep_up(metrics.clone(), shutdown.clone(), &tasks);
    {
        let (membership, stop) = (membership.clone(), shutdown.clone());
        tasks.spawn(async move { membership.keep_in_step(stop).await });
    }
    server::serve(listeners, front, &config.dns, shutdown.clone(), &tasks)?;
    probe::start(
        membership.subscribe(),
        observations.probes.clone(),
        &config.probe,
        shutdown.clone(),
        &tasks,
    )?;

    let certificate = |tls: Option<&https::TlsFiles>, name: &str| {
        tls.map(https::Certificate::load)
            .transpose()
            .map_err(|e| anyhow::anyhow!("the {name} listener's TLS certificate: {e}"))
    };
    let http_certificate = certificate(config.http.tls.as_ref(), "http")?;
    let admin_certificate =
        certificate(config.admin.as_ref().and_then(|a| a.tls.as_ref()), "admin")?;
    let reloader = Arc::new(Reloader {
        path: config_path,
        membership: membership.clone(),
        running: config.clone(),
        certificates: [("http", &http_certificate), ("admin", &admin_certificate)]
            .into_iter()
            .filter_map(|(name, c)| c.clone().map(|c| (name, c)))
            .collect(),
    });
    {
        let (reloader, stop) = (reloader.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = hangups.recv() => if got.is_none() { return },
                }
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = reloader.reload().await;
            }
        });
    }

    let http_addr = http.local_addr()?;
    tracing::info!(listener = "http", "listening on {http_addr}");
    tracing::info!("dashboard at http://{http_addr}/ ; metrics at http://{http_addr}/metrics");
    let app = api::router(api::ApiState {
        membership: membership.clone(),
        observations,
        metrics,
        join_token: config
            .admin
            .as_ref()
            .and_then(|a| a.join_token.as_deref())
            .map(admin::token_hash),
    });
    serve_http(
        http,
        http_certificate,
        app,
        "http",
        shutdown.clone(),
        &tasks,
    )?;

    match (admin, &config.admin) {
        (Some(listener), Some(admin_config)) => {
            let addr = listener.local_addr()?;
            tracing::info!(listener = "admin", "listening on {addr}");
            let hook = reloader.clone();
            let reload: admin::Reload = Arc::new(move || {
                let hook = hook.clone();
                Box::pin(async move { hook.reload().await })
            });
            let app = admin::router(admin::AdminState::new(
                membership,
                &admin_config.token,
                reload,
            ));
            serve_http(
                listener,
                admin_certificate,
                app,
                "admin",
                shutdown.clone(),
                &tasks,
            )?;
        }
        _ => tracing::info!("admin API off: no [admin] section"),
    }
    anycast_daemon::notify::ready();

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
