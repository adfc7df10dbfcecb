//! Active measurement: time a small request through the real server.
//!
//! The agent sits beside the server, so the request crosses only loopback:
//! the time from sending it to the first response byte (the response head)
//! is the server's time until first read plus a negligible constant. A
//! timeout, a refused connection or a 5xx status is a failed measurement;
//! a refused connection is also conclusive ([`Sample::Refused`]): nothing
//! listens.
//!
//! A loaded server makes the measurement itself wait in the queue it
//! measures: the answer arrives only after the queue has drained, so the
//! published value would trail the load by the very delay it should report.
//! Three things shorten that:
//!
//! * While a measurement is outstanding, its elapsed time is sent every
//!   `interval` as a lower bound (it moves the estimate only when it
//!   exceeds it).
//! * A measurement still outstanding after as long as the one before took
//!   confirms that one: two in a row took at least that long, which is the
//!   smoother's test of a rise ([`Sample::Twice`]), known before the second
//!   completes.
//! * A measurement slower than what is published, or failed other than by
//!   a refused connection, is followed by the next at once rather than at
//!   the next tick, to confirm or dismiss it sooner (at most one such early
//!   measurement in a row, so the rate stays within twice the configured
//!   one).

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

use crate::config::ActiveConfig;
use crate::{Report, Sample};

/// Measures every `interval` until `shutdown`, sending each outcome;
/// `published` is what the agent publishes now.
pub async fn measure(
    config: ActiveConfig,
    client: reqwest::Client,
    samples: mpsc::Sender<Sample>,
    published: watch::Receiver<Option<Report>>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last completed measurement, and whether the next starts at once.
    let mut previous: Option<Duration> = None;
    let mut early = false;
    loop {
        if early {
            ticks.reset();
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
        }
        let started = tokio::time::Instant::now();
        let measurement = time_once(&client, &config.url, config.timeout);
        tokio::pin!(measurement);
        let mut outstanding = tokio::time::interval_at(started + config.interval, config.interval);
        // Once this measurement has taken as long as the previous: that one.
        let confirm = async move {
            match previous {
                Some(p) => {
                    tokio::time::sleep_until(started + p).await;
                    p
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(confirm);
        let mut confirmed = false;
        let outcome = loop {
            let sample = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = &mut measurement => break outcome,
                // A lower bound, sent while the answer is still awaited.
                _ = outstanding.tick() => Sample::AtLeast(started.elapsed()),
                p = &mut confirm, if !confirmed => {
                    confirmed = true;
                    Sample::Twice(p)
                }
            };
            if samples.send(sample).await.is_err() {
                return;
            }
        };
        let sample = match outcome {
            Ok(tufr) => {
                trace!(tufr_ms = tufr.as_secs_f64() * 1000.0, "measured");
                let slower = published
                    .borrow()
                    .and_then(|r| r.reading.tufr_ms)
                    .is_some_and(|p| tufr.as_secs_f64() * 1000.0 > p);
                early = slower && !early;
                previous = Some(tufr);
                Sample::Tufr(tufr)
            }
            Err(failure) => {
                debug!(url = %config.url, reason = %failure.reason, "measurement failed");
                // A kept-alive connection the server reset says less than a
                // fresh one refused: ask again at once, on a new connection.
                early = !failure.refused && !early;
                previous = None;
                if failure.refused {
                    Sample::Refused
                } else {
                    Sample::Failed
                }
            }
        };
        if samples.send(sample).await.is_err() {
            return;
        }
    }
}

/// Why a measurement failed.
struct Failure {
    /// For the log, with its causes.
    reason: String,
    /// The connection was refused.
    refused: bool,
}

/// Whether `error` or one of its causes is a refused connection.
fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// One timed request: the time to the response head.
async fn time_once(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Duration, Failure> {
    let start = Instant::now();
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| Failure {
            refused: refused(&e),
            reason: format!("{:#}", anyhow::Error::from(e)),
        })?;
    let tufr = start.elapsed();
    let status = response.status();
    // Read the body so the connection can be reused; a huge body is not
    // this measurement's business, so stop at the timeout.
    let _ = tokio::time::timeout(timeout, response.bytes()).await;
    if status.is_server_error() {
        return Err(Failure {
            reason: format!("status {status}"),
            refused: false,
        });
    }
    Ok(tufr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_refused_and_a_silent_server_is_not() {
        let client = reqwest::Client::new();
        // Bound but not listening: the port stays ours, and connections to
        // it are refused.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        let failure = time_once(&client, &url, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(failure.refused, "{}", failure.reason);
        // Listening, never answering: a timeout, not a refusal.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let failure = time_once(&client, &url, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(!failure.refused, "{}", failure.reason);
    }
}
