//! Active measurement: time a small request through the real server.
//!
//! The agent sits beside the server, so the request crosses only loopback:
//! the time from sending it to the first response byte (the response head)
//! is the server's time until first read plus a negligible constant. A
//! timeout, a refused connection or a 5xx status is a failed measurement.
//!
//! A loaded server makes the measurement itself wait in the queue it
//! measures: the answer arrives only after the queue has drained, so the
//! published value would trail the load by the very delay it should report.
//! While a measurement is outstanding, its elapsed time is therefore sent
//! every `interval` as a lower bound (it moves the estimate only when it
//! exceeds it). When the answer comes, its real time is sent.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::Sample;
use crate::config::ActiveConfig;

/// Measures every `interval` until `shutdown`, sending each outcome.
pub async fn measure(
    config: ActiveConfig,
    client: reqwest::Client,
    samples: mpsc::Sender<Sample>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let started = Instant::now();
        let measurement = time_once(&client, &config.url, config.timeout);
        tokio::pin!(measurement);
        let mut outstanding = tokio::time::interval_at(
            tokio::time::Instant::now() + config.interval,
            config.interval,
        );
        let outcome = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = &mut measurement => break outcome,
                _ = outstanding.tick() => {
                    // A lower bound, sent while the answer is still awaited.
                    if samples.send(Sample::AtLeast(started.elapsed())).await.is_err() {
                        return;
                    }
                }
            }
        };
        let sample = match outcome {
            Ok(tufr) => Sample::Tufr(tufr),
            Err(reason) => {
                debug!(url = %config.url, %reason, "measurement failed");
                Sample::Failed
            }
        };
        if samples.send(sample).await.is_err() {
            return;
        }
    }
}

/// One timed request: the time to the response head.
async fn time_once(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let tufr = start.elapsed();
    let status = response.status();
    // Read the body so the connection can be reused; a huge body is not
    // this measurement's business, so stop at the timeout.
    let _ = tokio::time::timeout(timeout, response.bytes()).await;
    if status.is_server_error() {
        return Err(format!("status {status}"));
    }
    Ok(tufr)
}
