//! Publishing the probe file: written atomically into the server's docroot,
//! and/or served by the agent's own HTTP listener.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anycast_proto::probe::ProbeFile;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Report;
use crate::config::ProbeFileConfig;

/// Least time between two writes of the probe file: readers see the latest
/// value within this, and a fast-changing value does not turn into a storm
/// of disk writes.
const MIN_WRITE_INTERVAL: Duration = Duration::from_millis(200);

/// Replaces the probe file: readers (the server) see the old or the new
/// file, never a mix. Not fsynced: it is rewritten every few hundred
/// milliseconds and worthless after a crash.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    anycast_daemon::write_atomically(path, bytes, anycast_daemon::Durability::Replaced)
}

/// Keeps the probe file current until `shutdown`; the agent's listener (if
/// configured) is bound before this returns, so its address can be logged.
pub async fn start(
    config: ProbeFileConfig,
    server: String,
    reports: watch::Receiver<Option<Report>>,
    shutdown: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> anyhow::Result<()> {
    let (bytes_tx, bytes_rx) = watch::channel(Arc::<[u8]>::from(&b""[..]));
    if let Some(addr) = config.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the probe file: {e}"))?;
        let local: SocketAddr = listener.local_addr()?;
        info!(listener = "probe-http", "listening on {local}");
        let app = axum::Router::new().fallback(move || {
            let bytes = bytes_rx.borrow().clone();
            async move {
                (
                    [
                        (axum::http::header::CONTENT_TYPE, "application/json"),
                        (axum::http::header::CACHE_CONTROL, "no-store"),
                    ],
                    bytes.to_vec(),
                )
            }
        });
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                warn!(%error, "probe file listener failed");
            }
        });
    }
    tasks.spawn(keep_current(config, server, reports, bytes_tx, shutdown));
    Ok(())
}

/// Writes the probe file once more, at shutdown, saying the server is
/// draining: a resolver that only probes must stop sending clients too.
pub fn write_draining(config: &ProbeFileConfig, server: &str, seq: u64, at_ms: u64) {
    let Some(path) = &config.path else { return };
    let file = ProbeFile {
        server: server.to_owned(),
        state: anycast_proto::push::ServerState::Draining,
        tufr_ms: None,
        seq,
        at_ms,
        pad: String::new(),
    };
    match write_atomically(path, &file.to_json(config.size)) {
        Ok(()) => info!(path = %path.display(), "probe file says draining"),
        Err(error) => warn!(%error, "cannot write the draining probe file"),
    }
}

async fn keep_current(
    config: ProbeFileConfig,
    server: String,
    mut reports: watch::Receiver<Option<Report>>,
    bytes: watch::Sender<Arc<[u8]>>,
    shutdown: CancellationToken,
) {
    loop {
        let report = *reports.borrow_and_update();
        if let Some(report) = report {
            let file = ProbeFile {
                server: server.clone(),
                state: report.reading.state,
                tufr_ms: report.reading.tufr_ms,
                seq: report.seq,
                at_ms: report.at_ms,
                pad: String::new(),
            };
            let json: Arc<[u8]> = file.to_json(config.size).into();
            if let Some(path) = &config.path {
                let (path, json) = (path.clone(), json.clone());
                let written =
                    tokio::task::spawn_blocking(move || write_atomically(&path, &json)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => warn!(%error, "cannot write the probe file"),
                    Err(error) => warn!(%error, "probe file writer failed"),
                }
            }
            bytes.send_replace(json);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(MIN_WRITE_INTERVAL) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = reports.changed() => if changed.is_err() { return },
        }
    }
}
