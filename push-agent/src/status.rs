//! The server's status page: how many requests it holds now, and how many
//! it serves at once.
//!
//! TUFR says how long the last requests waited; the queue says what the next
//! ones will meet, now. Real servers publish it:
//!
//! * **nginx** `stub_status` (text): `Writing` counts the connections
//!   whose response is being produced, the status request among them, so
//!   requests in flight are `Writing - 1`. It has no worker count (nginx's
//!   workers are event loops, not request slots): the config supplies one.
//! * **Apache** `mod_status` with `?auto` (text, `Key: value` lines):
//!   `BusyWorkers` includes the worker serving the status request, so
//!   requests in flight are `BusyWorkers - 1`; workers are `BusyWorkers +
//!   IdleWorkers` (the threads started now; `MaxRequestWorkers` may be
//!   higher, which is why the config can override it).
//! * **php-fpm** `?json`: `active processes` includes the one serving the
//!   status request, and `listen queue` holds the requests no process has
//!   taken yet, so requests in flight are `active processes - 1 + listen
//!   queue`; workers are `total processes` (under `pm = dynamic`, the
//!   processes started now; `pm.max_children` may be higher).
//!
//! [`parse`] is pure; [`watch`] reads the page every `interval` and sends
//! each outcome into the agent's pipeline as a [`Sample::Status`].

use std::time::{Duration, Instant};

use anycast_proto::push::MAX_IN_FLIGHT;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Sample;

/// The server's status page: requests in flight and workers, read often.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The page's URL (on loopback, beside the server).
    pub url: String,
    /// Which server wrote it.
    pub format: StatusFormat,
    /// The server's worker count, overriding the page's (nginx's has none).
    pub workers: Option<u32>,
    /// Time between reads.
    pub interval: Duration,
    /// A read slower than this failed.
    pub timeout: Duration,
}

/// Which server's status page, in which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// nginx `stub_status`.
    Nginx,
    /// Apache `mod_status`, `?auto`.
    Apache,
    /// php-fpm's status page, `?json`.
    PhpFpm,
}

/// What one status page says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageReading {
    /// Requests being served or queued, the status request not counted.
    pub in_flight: u32,
    /// Requests served at once, when the page says (never 0).
    pub workers: Option<u32>,
    /// Requests the server has taken since it started (every status read
    /// included), when the page says: nginx's `requests`, Apache's `Total
    /// Accesses`, php-fpm's `accepted conn`.
    pub requests: Option<u64>,
}

/// Why a status page could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// A field the format always has is missing.
    #[error("no {0:?} on the status page")]
    Missing(&'static str),
    /// A field is not a whole number.
    #[error("{field:?} is not a count: {value:?}")]
    NotACount { field: &'static str, value: String },
    /// Not the JSON php-fpm writes.
    #[error("not php-fpm's JSON status: {0}")]
    Json(String),
    /// A count too large to be believed (and to be pushed).
    #[error("{field} = {value} is above {MAX_IN_FLIGHT}")]
    Implausible { field: &'static str, value: u64 },
}

/// Reads a status page of `format`.
pub fn parse(format: StatusFormat, page: &str) -> Result<PageReading, StatusError> {
    match format {
        StatusFormat::Nginx => nginx(page),
        StatusFormat::Apache => apache(page),
        StatusFormat::PhpFpm => php_fpm(page),
    }
}

/// `Reading: a Writing: b Waiting: c`: in flight `b - 1`; the counters'
/// line (under `server accepts handled requests`): requests.
fn nginx(page: &str) -> Result<PageReading, StatusError> {
    let requests = page
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("server accepts"))
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok());
    let writing = page
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            while let Some(word) = words.next() {
                if word == "Writing:" {
                    return Some(words.next().unwrap_or(""));
                }
            }
            None
        })
        .ok_or(StatusError::Missing("Writing"))?;
    let writing = count("Writing", writing)?;
    Ok(PageReading {
        in_flight: bounded("Writing", writing.saturating_sub(1))?,
        workers: None,
        requests,
    })
}

/// `BusyWorkers: n` and `IdleWorkers: m` lines.
fn apache(page: &str) -> Result<PageReading, StatusError> {
    let field = |name: &'static str| {
        page.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim())
            })
            .ok_or(StatusError::Missing(name))
            .and_then(|v| count(name, v))
    };
    let busy = field("BusyWorkers")?;
    let idle = field("IdleWorkers")?;
    Ok(PageReading {
        in_flight: bounded("BusyWorkers", busy.saturating_sub(1))?,
        workers: workers("BusyWorkers + IdleWorkers", busy.saturating_add(idle))?,
        requests: field("Total Accesses").ok(),
    })
}

/// The part of php-fpm's JSON status that matters here (it has more keys).
#[derive(Deserialize)]
struct PhpFpmStatus {
    #[serde(rename = "listen queue")]
    listen_queue: u64,
    #[serde(rename = "active processes")]
    active: u64,
    #[serde(rename = "total processes")]
    total: u64,
    #[serde(rename = "accepted conn")]
    accepted: Option<u64>,
}

fn php_fpm(page: &str) -> Result<PageReading, StatusError> {
    let status: PhpFpmStatus =
        serde_json::from_str(page).map_err(|e| StatusError::Json(e.to_string()))?;
    let in_flight = status
        .active
        .saturating_sub(1)
        .saturating_add(status.listen_queue);
    Ok(PageReading {
        in_flight: bounded("active processes - 1 + listen queue", in_flight)?,
        workers: workers("total processes", status.total)?,
        requests: status.accepted,
    })
}

fn count(field: &'static str, value: &str) -> Result<u64, StatusError> {
    value.parse().map_err(|_| StatusError::NotACount {
        field,
        value: value.chars().take(40).collect(),
    })
}

fn bounded(field: &'static str, value: u64) -> Result<u32, StatusError> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v <= MAX_IN_FLIGHT)
        .ok_or(StatusError::Implausible { field, value })
}

/// A worker count; 0 (which a page serving its own request cannot mean)
/// says nothing.
fn workers(field: &'static str, value: u64) -> Result<Option<u32>, StatusError> {
    Ok(Some(bounded(field, value)?).filter(|w| *w > 0))
}

/// A read this many times slower than usual is overdue.
const OVERDUE_TIMES: u32 = 4;

/// ... and at least this slow (a read on loopback takes about a
/// millisecond; scheduling alone can take a few).
const OVERDUE_FLOOR: Duration = Duration::from_millis(10);

/// Largest status page read (Apache's scoreboard line grows with its
/// worker slots; a few hundred KiB at the very most).
const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// How often a status page that keeps failing is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Logs status-read failures rarely: the first, then at most once per
/// [`LOG_EVERY`] with the count since, never once per read (a read every
/// 100 ms would flood the log), and a page that fails every other read is no
/// exception. A success after failures is worth a line only when that run
/// of failures was logged. Pure: `now` is passed in.
#[derive(Debug, Clone, Default)]
pub struct FailureLog {
    /// When a failure was last logged (kept across successes).
    logged: Option<Instant>,
    /// Failures since then.
    unlogged: u64,
    /// Whether a failure of the current run was logged.
    run_logged: bool,
}

impl FailureLog {
    /// Records a failure at `now`; `Some(failures since the last line)`
    /// when a line is due.
    pub fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .logged
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_EVERY);
        if !due {
            return None;
        }
        self.logged = Some(now);
        self.run_logged = true;
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Records a success; `true` when it ends a run of failures that was
    /// logged (worth a line of its own).
    pub fn succeeded(&mut self) -> bool {
        std::mem::take(&mut self.run_logged)
    }
}

/// Reads the status page every `interval` until `shutdown`, sending each
/// reading, or `None` for a failed read (which clears `in_flight`; it does
/// not make the server down: the TUFR measurement decides that).
///
/// A read outstanding for [`OVERDUE_TIMES`] its usual time (at least
/// [`OVERDUE_FLOOR`], at most `interval`) makes the last reading stale
/// (`None`: requests in flight unknown) and sends its elapsed time as a
/// lower bound of the TUFR ([`Sample::AtLeast`]), then again each time the
/// wait doubles (at most every `interval`): the page is answered by the
/// server itself (nginx's stub_status by nginx, Apache's and php-fpm's by a
/// worker), so a server that does not answer it keeps a new request at
/// least as long. A wedged server's bound reaches twice its TUFR (news the
/// agent pushes at once) within about twice that TUFR of the read, before
/// the TUFR measurement in flight shows it. (A bound below the TUFR moves nothing:
/// a read late by a scheduling hiccup only makes the queue unknown until
/// the next read.) The first overdue moment also sends when the page last
/// answered, or the read's start if it never did ([`Sample::Stalled`]):
/// the server has not been seen answering since, and it may have stopped
/// at any moment after that answer, the next read only found out. The
/// agent pushes it at once as the stall's age; the resolver grows it with
/// its own clock, with no push in between, so a wedged server leaves the
/// answers as soon as the stall outlasts its TUFR, not a push of the
/// doubling bound later. The stall
/// lasts until a read is answered (a reading, or an error before it went
/// overdue); a read that times out hands it on to the next.
pub async fn watch(
    config: StatusConfig,
    client: reqwest::Client,
    samples: mpsc::Sender<Sample>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut log = FailureLog::default();
    // How long a read usually takes (an EWMA of successful reads).
    let mut usual: Option<Duration> = None;
    // When the page last answered (a reading, or an error in good time).
    let mut answered: Option<tokio::time::Instant> = None;
    // When the stall began: the page's last answer before the read that
    // first went overdue (that read's start if none came before it).
    let mut stall: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let started = tokio::time::Instant::now();
        let read = read_once(&client, &config);
        tokio::pin!(read);
        let overdue_after = usual
            .map_or(config.interval, |u| u * OVERDUE_TIMES)
            .clamp(OVERDUE_FLOOR.min(config.interval), config.interval);
        let mut overdue = started + overdue_after;
        let mut stale = false;
        let read = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                read = &mut read => break read,
                _ = tokio::time::sleep_until(overdue) => {
                    let waited = overdue - started;
                    overdue = started + (waited * 2).min(waited + config.interval);
                    let mut late = vec![Sample::AtLeast(started.elapsed())];
                    if !std::mem::replace(&mut stale, true) {
                        late.insert(0, Sample::Status(None));
                    }
                    if stall.is_none() {
                        let since = answered.unwrap_or(started);
                        stall = Some(since);
                        late.push(Sample::Stalled(Some(since.into_std())));
                    }
                    for sample in late {
                        if samples.send(sample).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        // Answered: a reading, or an error in good time. A read that gave
        // up after going overdue leaves the stall to the next read.
        if read.is_ok() || !stale {
            answered = Some(tokio::time::Instant::now());
            if stall.take().is_some() && samples.send(Sample::Stalled(None)).await.is_err() {
                return;
            }
        }
        let sample = match read {
            Ok(reading) => {
                let took = started.elapsed();
                usual = Some(usual.map_or(took, |u| (u * 7 + took) / 8));
                if log.succeeded() {
                    info!(url = %config.url, "the status page reads again");
                }
                Some(reading)
            }
            Err(error) => {
                if let Some(failures) = log.failed(Instant::now()) {
                    warn!(
                        url = %config.url,
                        %error,
                        failures,
                        "cannot read the status page: requests in flight unknown (logged at most once a minute)"
                    );
                }
                None
            }
        };
        if samples.send(Sample::Status(sample)).await.is_err() {
            return;
        }
    }
}

/// One read of the page, parsed.
async fn read_once(client: &reqwest::Client, config: &StatusConfig) -> Result<PageReading, String> {
    let read = async {
        let mut response = client
            .get(&config.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_PAGE_BYTES {
                return Err(format!("the page is larger than {MAX_PAGE_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let page = String::from_utf8_lossy(&body);
        parse(config.format, &page).map_err(|e| e.to_string())
    };
    tokio::time::timeout(config.timeout, read)
        .await
        .map_err(|_| format!("no answer within {:?}", config.timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx 1.24's `stub_status`, as served (trailing spaces included).
    const NGINX: &str = "Active connections: 291 \nserver accepts handled requests\n 16630948 16630948 31070465 \nReading: 6 Writing: 179 Waiting: 106 \n";

    /// Apache 2.4's `mod_status?auto` (event MPM).
    const APACHE: &str = "localhost
ServerVersion: Apache/2.4.57 (Debian)
ServerMPM: event
Server Built: 2023-04-13T13:32:30
CurrentTime: Thursday, 01-Jun-2023 10:12:46 UTC
RestartTime: Thursday, 01-Jun-2023 09:57:37 UTC
ParentServerConfigGeneration: 1
ParentServerMPMGeneration: 0
ServerUptimeSeconds: 908
ServerUptime: 15 minutes 8 seconds
Load1: 0.21
Load5: 0.12
Load15: 0.05
Total Accesses: 4211
Total kBytes: 9817
Total Duration: 3180
CPUUser: 1.21
CPUSystem: .83
CPUChildrenUser: 0
CPUChildrenSystem: 0
CPULoad: .224670
Uptime: 908
ReqPerSec: 4.63767
BytesPerSec: 11071.3
BytesPerReq: 2387.26
DurationPerReq: .755165
BusyWorkers: 7
IdleWorkers: 43
Processes: 2
Stopping: 0
ConnsTotal: 9
ConnsAsyncWriting: 0
ConnsAsyncKeepAlive: 2
ConnsAsyncClosing: 0
Scoreboard: ____W__W___RW__W_______W__________W_____________....................................................................................................
";

    /// php-fpm 8.2's `status?json`.
    const PHP_FPM: &str = r#"{"pool":"www","process manager":"dynamic","start time":1685613157,"start since":3651,"accepted conn":3401,"listen queue":2,"max listen queue":9,"listen queue len":511,"idle processes":0,"active processes":5,"total processes":5,"max active processes":5,"max children reached":3,"slow requests":0}"#;

    #[test]
    fn nginx_writing_less_the_status_request() {
        assert_eq!(
            parse(StatusFormat::Nginx, NGINX),
            Ok(PageReading {
                in_flight: 178,
                workers: None,
                requests: Some(31070465),
            })
        );
        // An idle server: only the status request is writing.
        let idle = NGINX.replace("Writing: 179", "Writing: 1");
        assert_eq!(parse(StatusFormat::Nginx, &idle).unwrap().in_flight, 0);
        // Floored at 0 (a server that does not count the status request).
        let zero = NGINX.replace("Writing: 179", "Writing: 0");
        assert_eq!(parse(StatusFormat::Nginx, &zero).unwrap().in_flight, 0);
    }

    #[test]
    fn apache_busy_less_the_status_request_of_busy_plus_idle() {
        assert_eq!(
            parse(StatusFormat::Apache, APACHE),
            Ok(PageReading {
                in_flight: 6,
                workers: Some(50),
                requests: Some(4211),
            })
        );
        // Apache 2.2 writes fewer lines; the two that matter are there.
        let old = "Total Accesses: 12\nTotal kBytes: 40\nUptime: 66\nBusyWorkers: 1\nIdleWorkers: 9\nScoreboard: W_________\n";
        assert_eq!(
            parse(StatusFormat::Apache, old),
            Ok(PageReading {
                in_flight: 0,
                workers: Some(10),
                requests: Some(12),
            })
        );
    }

    #[test]
    fn php_fpm_active_less_the_status_request_plus_the_listen_queue() {
        assert_eq!(
            parse(StatusFormat::PhpFpm, PHP_FPM),
            Ok(PageReading {
                in_flight: 6,
                workers: Some(5),
                requests: Some(3401),
            })
        );
    }

    #[test]
    fn pages_that_say_nothing_usable_are_errors() {
        // The wrong format for the page, or something else altogether.
        assert_eq!(
            parse(StatusFormat::Nginx, APACHE),
            Err(StatusError::Missing("Writing"))
        );
        assert_eq!(
            parse(StatusFormat::Apache, NGINX),
            Err(StatusError::Missing("BusyWorkers"))
        );
        assert!(matches!(
            parse(StatusFormat::PhpFpm, NGINX),
            Err(StatusError::Json(_))
        ));
        assert!(matches!(
            parse(
                StatusFormat::PhpFpm,
                r#"{"pool":"www","active processes":1}"#
            ),
            Err(StatusError::Json(_))
        ));
        assert!(matches!(
            parse(StatusFormat::Apache, "BusyWorkers: 3\n"),
            Err(StatusError::Missing("IdleWorkers"))
        ));
        assert_eq!(
            parse(StatusFormat::Apache, "BusyWorkers: many\nIdleWorkers: 1\n"),
            Err(StatusError::NotACount {
                field: "BusyWorkers",
                value: "many".into()
            })
        );
        assert!(matches!(
            parse(StatusFormat::Nginx, "Reading: 0 Writing: -1 Waiting: 0\n"),
            Err(StatusError::NotACount { .. })
        ));
        assert!(matches!(
            parse(StatusFormat::Nginx, "Reading: 0 Writing:"),
            Err(StatusError::NotACount { .. })
        ));
        // Beyond what a push may carry.
        assert!(matches!(
            parse(
                StatusFormat::Apache,
                "BusyWorkers: 3\nIdleWorkers: 99999999999\n"
            ),
            Err(StatusError::Implausible { .. })
        ));
        let max = u64::MAX;
        assert!(matches!(
            parse(
                StatusFormat::Apache,
                &format!("BusyWorkers: {max}\nIdleWorkers: {max}\n")
            ),
            Err(StatusError::Implausible { .. })
        ));
        assert!(matches!(
            parse(
                StatusFormat::Nginx,
                "Reading: 0 Writing: 1000002 Waiting: 0\n"
            ),
            Err(StatusError::Implausible { .. })
        ));
        assert_eq!(
            parse(
                StatusFormat::Nginx,
                "Reading: 0 Writing: 1000001 Waiting: 0\n"
            )
            .unwrap()
            .in_flight,
            MAX_IN_FLIGHT
        );
    }

    #[test]
    fn no_worker_count_from_a_page_without_workers() {
        let none = r#"{"listen queue":0,"active processes":0,"total processes":0}"#;
        assert_eq!(
            parse(StatusFormat::PhpFpm, none),
            Ok(PageReading {
                in_flight: 0,
                workers: None,
                requests: None,
            })
        );
    }

    #[test]
    fn failures_are_logged_once_then_once_a_minute_with_their_count() {
        let t0 = Instant::now();
        let mut log = FailureLog::default();
        assert_eq!(log.failed(t0), Some(1), "the first is logged");
        for i in 1..600 {
            assert_eq!(log.failed(t0 + i * Duration::from_millis(100)), None);
        }
        assert_eq!(
            log.failed(t0 + LOG_EVERY),
            Some(600),
            "then a minute's worth"
        );
        assert!(log.succeeded(), "the end of the run is worth a line");
        assert!(!log.succeeded(), "once");
        // A page failing every other read: one line of each a minute.
        let t1 = t0 + 2 * LOG_EVERY;
        let mut lines = (0, 0);
        for i in 0..600 {
            let now = t1 + i * Duration::from_millis(100);
            if i % 2 == 0 {
                lines.0 += usize::from(log.failed(now).is_some());
            } else {
                lines.1 += usize::from(log.succeeded());
            }
        }
        assert_eq!(lines, (1, 1), "failure and recovery lines in a minute");
        assert_eq!(
            log.failed(t1 + 2 * LOG_EVERY),
            Some(300),
            "the next says how many failed since"
        );
    }

    /// An nginx status page at `addr`, read every 50 ms.
    fn nginx_every_50ms(addr: std::net::SocketAddr, timeout: Duration) -> StatusConfig {
        StatusConfig {
            url: format!("http://{addr}/nginx_status"),
            format: StatusFormat::Nginx,
            workers: Some(4),
            interval: Duration::from_millis(50),
            timeout,
        }
    }

    /// A server that accepts the status request and never answers (wedged)
    /// is reported as slow every interval while the read waits, with the
    /// time waited so far.
    #[tokio::test]
    async fn a_status_page_that_does_not_answer_is_a_growing_lower_bound() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let config = nginx_every_50ms(addr, Duration::from_secs(30));
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let asked = std::time::Instant::now();
        let task = tokio::spawn(watch(config, reqwest::Client::new(), tx, shutdown.clone()));
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a sample within 10 s")
                .expect("the watcher runs")
        };
        // The reading is stale at once, the wait is a first bound, and the
        // stall's start is told once, ...
        assert_eq!(next().await, Sample::Status(None));
        let Sample::AtLeast(first) = next().await else {
            panic!("a lower bound after the stale reading")
        };
        match next().await {
            Sample::Stalled(Some(since)) => assert!(
                since >= asked && since + first <= std::time::Instant::now(),
                "the stall began when the read was sent"
            ),
            other => panic!("the stall's start, not {other:?}"),
        }
        // ... then each doubling of the wait (at most an interval) raises
        // the bound.
        let mut bounds = vec![first];
        while bounds.len() < 3 {
            match next().await {
                Sample::AtLeast(d) => bounds.push(d),
                other => panic!("only lower bounds from a page that never answers: {other:?}"),
            }
        }
        assert!(bounds[0] >= Duration::from_millis(50), "{bounds:?}");
        assert!(bounds.windows(2).all(|w| w[1] > w[0]), "{bounds:?}");
        shutdown.cancel();
        task.await.unwrap();
        held.abort();
    }

    /// A status page on a fresh port that answers the connections `answers`
    /// picks (numbered from 0 in the order they come) and holds the others
    /// open, unanswered.
    async fn status_page(
        answers: fn(usize) -> bool,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            let mut connection = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                connection += 1;
                if !answers(connection - 1) {
                    held.push(stream);
                    continue;
                }
                tokio::spawn(async move {
                    let mut request = [0u8; 1024];
                    let _ = stream.read(&mut request).await;
                    let page = "Active connections: 3 \nserver accepts handled requests\n 9 9 9 \nReading: 0 Writing: 3 Waiting: 0 \n";
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                        page.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (addr, server)
    }

    /// The watcher of the page at `addr`, read every 50 ms on a fresh
    /// connection each time, giving up on a read after 300 ms.
    fn watch_every_50ms(
        addr: std::net::SocketAddr,
    ) -> (
        tokio::task::JoinHandle<()>,
        mpsc::Receiver<Sample>,
        CancellationToken,
    ) {
        let config = nginx_every_50ms(addr, Duration::from_millis(300));
        let (tx, rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let task = tokio::spawn(watch(config, client, tx, shutdown.clone()));
        (task, rx, shutdown)
    }

    /// A stall is dated from the page's last answer, not from the read
    /// that found it: the server may have stopped at any moment after that
    /// answer.
    #[tokio::test]
    async fn a_stall_is_dated_from_the_last_answer() {
        // Two readings, then every read held.
        let (addr, server) = status_page(|connection| connection < 2).await;
        let (task, mut rx, shutdown) = watch_every_50ms(addr);
        let mut last_reading = None;
        let since = loop {
            let sample = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a sample within 10 s")
                .expect("the watcher runs");
            match sample {
                Sample::Status(Some(_)) => last_reading = Some(std::time::Instant::now()),
                Sample::Stalled(Some(since)) => break since,
                _ => {}
            }
        };
        shutdown.cancel();
        task.await.unwrap();
        server.abort();
        let last_reading = last_reading.expect("two readings before the stall");
        assert!(
            since <= last_reading,
            "the stall began at the last answer, before its reading was received"
        );
    }

    /// A stall outlives a read that times out, and ends with the first read
    /// answered.
    #[tokio::test]
    async fn a_stall_lasts_across_timed_out_reads_until_one_is_answered() {
        // The first two connections are held unanswered; later ones read.
        let (addr, server) = status_page(|connection| connection >= 2).await;
        let (task, mut rx, shutdown) = watch_every_50ms(addr);
        let mut seen = Vec::new();
        loop {
            let sample = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a sample within 10 s")
                .expect("the watcher runs");
            let answered = matches!(sample, Sample::Status(Some(_)));
            seen.push(sample);
            if answered {
                break;
            }
        }
        shutdown.cancel();
        task.await.unwrap();
        server.abort();
        let stalls: Vec<_> = seen
            .iter()
            .filter_map(|s| match s {
                Sample::Stalled(since) => Some(since.is_some()),
                _ => None,
            })
            .collect();
        // One stall begun by the first read, kept through both timeouts,
        // ended just before the reading.
        assert_eq!(stalls, [true, false], "{seen:?}");
        let n = seen.len();
        assert_eq!(seen[n - 2], Sample::Stalled(None), "{seen:?}");
        let timeouts = seen.iter().filter(|s| **s == Sample::Status(None)).count();
        assert!(timeouts >= 3, "stale, then two reads given up: {seen:?}");
    }
}
