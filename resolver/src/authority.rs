//! Local zones: learning groups from the zone's authority.
//!
//! For a zone with `role = "local"`, this resolver does not own membership
//! or receive pushes: it fetches each group from the authority
//! (`GET <authority>/v1/groups/<adn>`) the first time a client asks for it,
//! installs the group in the membership's learned layer (so it is probed
//! from here, estimated and selected like any group) and adopts the pushed
//! loads the authority reports. The path that matters is the client's, so the
//! probes are this resolver's own.
//!
//! Freshness, per group:
//!
//! * a fetched group is fresh for `cache_ttl` (2 s); past three quarters of
//!   it, a query triggers a refresh in the background (refresh ahead), so a
//!   busy name is refreshed about once per `cache_ttl` and queries never wait;
//! * refreshes revalidate with `If-None-Match`: an unchanged group costs a
//!   304;
//! * once a view carries pushes, a follower asks the current authority for
//!   it with the last ETag and `wait_ms`, and the authority holds the request
//!   until the view changes: pushes are adopted as they land, not at the next
//!   refresh ([`Authorities::follow`]);
//! * concurrent refreshes of one group are one fetch (single flight), and
//!   everyone waiting shares its outcome, failure included; a failing
//!   authority is asked again at most once a second per group;
//! * when no authority can be reached, the last view keeps answering for up
//!   to `max_stale` (serve-stale, in the spirit of RFC 8767), with a log line
//!   (at most once a minute per group) and a counter; past it, SERVFAIL.
//!   A query never waits more than 500 ms for a refresh when a stale view
//!   exists.
//!
//! The authorities are the zone's `authority` URLs (one, or a list, the first
//! preferred), or, without them, found in DNS: every TXT record
//! `_anycast.<zone>` holding `url=...`, in the order of the answer (DNS does
//! not promise an order within a record set: configure `authority` for a
//! fixed preference), looked up through the forwarder and cached.
//!
//! Several authorities fail over, and back, per zone:
//!
//! * a fetch asks first the authority that answered last; if that one cannot
//!   be reached, times out (2 s) or answers anything but 200, 304 or 404 (a
//!   5xx, say), the same fetch moves on to the others in the configured
//!   order. A query therefore neither fails nor waits for the next round
//!   while any authority answers; serve-stale applies when every one fails.
//!   A 404 is an answer (no such group) and ends the fetch;
//! * the first authority is preferred again as soon as it answers: while
//!   another one is current, one refresh per zone and per [`FIRST_RECHECK`]
//!   (1 s) asks the first one before the current one, with a short timeout
//!   ([`RECHECK_TIMEOUT`]) so that a black-holed first authority delays that
//!   refresh little (and never a query that has a fresh view); once it
//!   answers, it is current again;
//! * a change of the zone's current authority is logged once (`authority
//!   changed`, with the zone, both URLs and why): a warning when the current
//!   one failed, info when the first one is back;
//! * revalidation sends the last ETag to whichever authority is asked: the
//!   tag is a digest of what a local learns, so a 304 from another authority
//!   means the same view. Pushed loads are adopted from whichever answered
//!   (the newest `seq` of a member wins, as with one authority).
//!
//! A fetch with nothing cached waits for one timeout per authority that does
//! not answer, at most.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anycast_proto::push::ServerState;
use anycast_proto::{AnycastName, Zone};
use hickory_proto::rr::{Name, RData, RecordType};
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use serde::Deserialize;
use tracing::{info, warn};

use crate::forward::Forwarder;
use crate::groups::{GroupSpec, LocalZone};
use crate::membership::Membership;
use crate::push::{MemberPush, PushBoard};

/// How often a serve-stale line is logged per group, at most.
const STALE_LOG_EVERY: Duration = Duration::from_secs(60);

/// How long a request to an authority may take (a follower's: this beyond
/// what it asked the authority to wait).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a follower asks the authority to hold its request for a change.
const FOLLOW_WAIT: Duration = Duration::from_secs(10);

/// A failed attempt is not repeated for this long (RFC 8767's failure
/// recheck): callers meanwhile share its outcome.
const FAILURE_RECHECK: Duration = Duration::from_secs(1);

/// A query with a stale view waits this long for a refresh, then is answered
/// from the stale view while the refresh goes on (RFC 8767 suggests 1.8 s at
/// most).
const STALE_ANSWER_AFTER: Duration = Duration::from_millis(500);

/// Groups cached per local resolver, at most.
const MAX_GROUPS: u64 = 100_000;

/// While an authority other than the first is current, the first one is
/// asked again at most this often per zone (so it is preferred again soon
/// after it is back, at the cost of one quick request a second).
const FIRST_RECHECK: Duration = FAILURE_RECHECK;

/// How long that recheck of the first authority may take: short, so that a
/// first authority that accepts and never answers costs a refresh little
/// (refresh ahead leaves a quarter of `cache_ttl` before a view expires).
const RECHECK_TIMEOUT: Duration = Duration::from_millis(300);

/// What a local resolver knows of a group of a local zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The authority has it (fresh, or stale within `max_stale`).
    Group,
    /// The authority says there is no such group.
    NoGroup,
    /// No authority can be reached and nothing usable is cached.
    Unavailable,
}

/// What is cached of one group: the last good view, and the last attempt.
#[derive(Debug, Clone)]
struct Fetched {
    /// When the authority last answered (`None`: never).
    at: Option<Instant>,
    etag: Option<String>,
    found: bool,
    /// Whether the view carried a member's push: only then is there
    /// something for a follower ([`Authorities::follow`]) to hear of.
    pushed: bool,
    /// When it was last asked, and why that failed if it did: every caller
    /// waiting on one attempt shares its outcome, and a failing authority is
    /// asked again only after [`FAILURE_RECHECK`].
    attempted: Instant,
    error: Option<String>,
}

/// The authority's answer, the part a local resolver uses.
#[derive(Debug, Deserialize)]
struct AuthorityView {
    spec: GroupSpec,
    members: Vec<AuthorityMember>,
}

#[derive(Debug, Deserialize)]
struct AuthorityMember {
    endpoint: SocketAddr,
    push: Option<AuthorityPush>,
}

#[derive(Debug, Deserialize)]
struct AuthorityPush {
    state: ServerState,
    tufr_ms: Option<f64>,
    /// Absent from an authority that predates them, or when not pushed.
    #[serde(default)]
    in_flight: Option<u32>,
    #[serde(default)]
    workers: Option<u32>,
    #[serde(default)]
    service_ms: Option<f64>,
    #[serde(default)]
    stalled_ms: Option<f64>,
    age_s: f64,
    seq: u64,
}

/// The local resolver's view of its authorities.
#[derive(Debug)]
pub struct Authorities {
    membership: Arc<Membership>,
    pushes: Arc<PushBoard>,
    forwarder: Forwarder,
    client: reqwest::Client,
    groups: Cache<AnycastName, Fetched>,
    /// The authorities found in DNS, per zone without `authority`.
    discovered: Cache<Zone, Vec<String>>,
    /// Which authority each zone asks first: shared by the zone's groups, so
    /// a failover (and its log line) happens once per zone.
    preferences: Mutex<HashMap<Zone, Preference>>,
    stale_logged: Mutex<HashMap<AnycastName, Instant>>,
    /// Groups with a follower running ([`Authorities::follow`]).
    following: Mutex<HashSet<AnycastName>>,
}

impl Authorities {
    /// Learning through `membership`, adopting pushes into `pushes`.
    pub fn new(
        membership: Arc<Membership>,
        pushes: Arc<PushBoard>,
        forwarder: Forwarder,
    ) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the authority HTTP client: {e}"))?;
        Ok(Arc::new(Self {
            membership,
            pushes,
            forwarder,
            client,
            groups: Cache::builder().max_capacity(MAX_GROUPS).build(),
            discovered: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            preferences: Mutex::new(HashMap::new()),
            stale_logged: Mutex::new(HashMap::new()),
            following: Mutex::new(HashSet::new()),
        }))
    }

    /// Makes sure `group` (a group name of `zone`) is known as well as it can
    /// be now; fetches it if needed. A query waits for at most one fetch
    /// (the authority client's 2 s timeout per authority that does not
    /// answer) when nothing is cached, and at most [`STALE_ANSWER_AFTER`]
    /// when a stale view is.
    pub async fn ensure(self: &Arc<Self>, group: &AnycastName, zone: &LocalZone) -> Known {
        let now = Instant::now();
        let cached = self.groups.get(group).await;
        let age = |f: &Fetched| f.at.map(|at| now.saturating_duration_since(at));
        if let Some(f) = &cached
            && let Some(age) = age(f)
            && age < zone.cache_ttl
        {
            if age > zone.cache_ttl.mul_f64(0.75) {
                self.refresh_in_background(group, zone);
                if f.pushed {
                    self.keep_following(group, zone);
                }
            }
            return known(f);
        }
        let outcome = match &cached {
            // A stale view: wait briefly for the refresh, else answer from it.
            Some(stale) if stale.at.is_some() => {
                let refresh = self.refresh_in_background(group, zone);
                match tokio::time::timeout(STALE_ANSWER_AFTER, refresh).await {
                    Ok(Ok(f)) => f,
                    _ => stale.clone(),
                }
            }
            _ => self.refresh(group, zone).await,
        };
        if outcome.pushed {
            self.keep_following(group, zone);
        }
        match (&outcome.error, age(&outcome)) {
            (None, Some(age)) if age < zone.cache_ttl => known(&outcome),
            (_, Some(age)) if age <= zone.max_stale => {
                let reason = outcome.error.as_deref().unwrap_or("refresh still running");
                self.log_stale(group, reason, age);
                crate::telemetry::served_stale();
                known(&outcome)
            }
            _ => {
                warn!(
                    %group,
                    error = outcome.error.as_deref().unwrap_or("no usable view"),
                    "authority unreachable and nothing usable cached: SERVFAIL"
                );
                Known::Unavailable
            }
        }
    }

    /// Makes sure a follower runs for `group` (see [`Authorities::follow`]).
    fn keep_following(self: &Arc<Self>, group: &AnycastName, zone: &LocalZone) {
        let mut following = self.following.lock().unwrap_or_else(|p| p.into_inner());
        if following.contains(group) {
            return;
        }
        following.insert(group.clone());
        let (this, group, zone) = (self.clone(), group.clone(), zone.clone());
        tokio::spawn(async move {
            this.follow(&group, &zone).await;
            let mut following = this.following.lock().unwrap_or_else(|p| p.into_inner());
            following.remove(&group);
        });
    }

    /// Hears of `group`'s pushes as they land at the authority: asks the
    /// zone's current authority for the group's view with its last ETag and
    /// `wait_ms`, so that the authority answers as soon as the view changes
    /// (a push) or after [`FOLLOW_WAIT`] with a 304, and asks again at once.
    /// The pushed loads are adopted as by any fetch. Ends when the group is
    /// no longer asked for (its view has not been refreshed for four
    /// `cache_ttl`: refreshes happen only when queries come), or gone. The
    /// regular refreshes go on beside it (freshness, failover, serve-stale);
    /// a failing authority is left to them, and asked again here after
    /// [`FAILURE_RECHECK`].
    async fn follow(&self, group: &AnycastName, zone: &LocalZone) {
        // From the view just fetched: the first request already waits.
        let mut last: Option<Fetched> = self.groups.get(group).await;
        loop {
            let in_use = self
                .groups
                .get(group)
                .await
                .and_then(|f| f.at)
                .is_some_and(|at| at.elapsed() < zone.cache_ttl.saturating_mul(4));
            if !in_use {
                return;
            }
            let urls = if zone.authorities.is_empty() {
                self.discover(group.zone()).await.unwrap_or_default()
            } else {
                zone.authorities.clone()
            };
            if urls.is_empty() {
                tokio::time::sleep(FAILURE_RECHECK).await;
                continue;
            }
            let index = self.with_preference(group.zone(), |p| p.current_index(&urls));
            let url = format!(
                "{}/v1/groups/{group}?wait_ms={}",
                urls[index],
                FOLLOW_WAIT.as_millis()
            );
            let asked = Instant::now();
            let timeout = FOLLOW_WAIT + CLIENT_TIMEOUT;
            match self
                .fetch_url(&url, Some(timeout), group, last.as_ref())
                .await
            {
                Ok(fetched) if !fetched.found => return,
                Ok(fetched) => {
                    // The same view back at once: an authority that does not
                    // hold requests (an older one). Poll gently instead.
                    let unchanged_at_once = last.as_ref().is_some_and(|l| l.etag == fetched.etag)
                        && asked.elapsed() < FOLLOW_WAIT / 4;
                    last = Some(fetched);
                    if unchanged_at_once {
                        tokio::time::sleep(zone.cache_ttl / 2).await;
                    }
                }
                Err(_) => {
                    last = None;
                    tokio::time::sleep(FAILURE_RECHECK).await;
                }
            }
        }
    }

    /// Starts a refresh that goes on whether or not anyone waits for it.
    fn refresh_in_background(
        self: &Arc<Self>,
        group: &AnycastName,
        zone: &LocalZone,
    ) -> tokio::task::JoinHandle<Fetched> {
        let (this, group, zone) = (self.clone(), group.clone(), zone.clone());
        tokio::spawn(async move { this.refresh(&group, &zone).await })
    }

    /// Asks the authority unless another caller just did (single flight:
    /// callers queued behind an attempt share its outcome, success or
    /// failure).
    async fn refresh(&self, group: &AnycastName, zone: &LocalZone) -> Fetched {
        let started = Instant::now();
        let result = self
            .groups
            .entry(group.clone())
            .and_compute_with(|current| {
                let current = current.map(|e| e.into_value());
                async move {
                    if let Some(c) = &current {
                        // An attempt finished while this caller waited its turn.
                        if c.attempted >= started {
                            return Op::Nop;
                        }
                        let fresh =
                            c.at.is_some_and(|at| at.elapsed() < zone.cache_ttl.mul_f64(0.5));
                        let failed_recently =
                            c.error.is_some() && c.attempted.elapsed() < FAILURE_RECHECK;
                        if fresh || failed_recently {
                            return Op::Nop;
                        }
                    }
                    let attempted = Instant::now();
                    Op::Put(match self.fetch(group, zone, current.as_ref()).await {
                        Ok(f) => f,
                        Err(error) => match current {
                            Some(c) => Fetched {
                                attempted,
                                error: Some(error),
                                ..c
                            },
                            None => Fetched {
                                at: None,
                                etag: None,
                                found: false,
                                pushed: false,
                                attempted,
                                error: Some(error),
                            },
                        },
                    })
                }
            })
            .await;
        match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) | CompResult::Unchanged(e) => {
                e.into_value()
            }
            CompResult::Removed(_) | CompResult::StillNone(_) => Fetched {
                at: None,
                etag: None,
                found: false,
                pushed: false,
                attempted: Instant::now(),
                error: Some("nothing cached".to_owned()),
            },
        }
    }

    /// Asks the zone's authorities in order of preference until one answers
    /// (the module doc says which order); the error names every failure.
    async fn fetch(
        &self,
        group: &AnycastName,
        zone: &LocalZone,
        previous: Option<&Fetched>,
    ) -> Result<Fetched, String> {
        let urls = if zone.authorities.is_empty() {
            self.discover(group.zone()).await?
        } else {
            zone.authorities.clone()
        };
        let plan = self.with_preference(group.zone(), |p| p.plan(&urls, Instant::now()));
        let mut failed: Vec<(usize, String)> = Vec::new();
        for Attempt { index, timeout } in plan {
            match self
                .fetch_from(&urls[index], timeout, group, previous)
                .await
            {
                Ok(fetched) => {
                    let change = self.with_preference(group.zone(), |p| {
                        p.answered(&urls, index, &failed, Instant::now())
                    });
                    if let Some(change) = change {
                        change.log(group.zone());
                    }
                    return Ok(fetched);
                }
                Err(error) => failed.push((index, error)),
            }
        }
        if failed.is_empty() {
            return Err(format!("no authority for {}", group.zone()));
        }
        Err(failed
            .into_iter()
            .map(|(_, error)| error)
            .collect::<Vec<_>>()
            .join("; "))
    }

    fn with_preference<T>(&self, zone: &Zone, f: impl FnOnce(&mut Preference) -> T) -> T {
        let mut preferences = self.preferences.lock().unwrap_or_else(|p| p.into_inner());
        f(preferences.entry(zone.clone()).or_default())
    }

    /// One authority's answer for `group`, installed: the group learned
    /// (or forgotten, on 404) and its pushed loads adopted. `timeout`
    /// overrides the client's.
    async fn fetch_from(
        &self,
        base: &str,
        timeout: Option<Duration>,
        group: &AnycastName,
        previous: Option<&Fetched>,
    ) -> Result<Fetched, String> {
        let url = format!("{base}/v1/groups/{group}");
        self.fetch_url(&url, timeout, group, previous).await
    }

    /// [`Authorities::fetch_from`] at `url` (which may ask the authority to
    /// hold the request).
    async fn fetch_url(
        &self,
        url: &str,
        timeout: Option<Duration>,
        group: &AnycastName,
        previous: Option<&Fetched>,
    ) -> Result<Fetched, String> {
        let mut request = self.client.get(url);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if let Some(etag) = previous.and_then(|p| p.etag.as_deref()) {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let response = request.send().await.map_err(|e| with_causes(&e))?;
        let now = Instant::now();
        let status = response.status();
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status == reqwest::StatusCode::NOT_MODIFIED
            && let Some(previous) = previous
        {
            return Ok(Fetched {
                at: Some(now),
                attempted: now,
                error: None,
                ..previous.clone()
            });
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            if self.membership.learn(group, None).await {
                info!(%group, "the authority has no such group");
            }
            return Ok(Fetched {
                at: Some(now),
                etag: None,
                found: false,
                pushed: false,
                attempted: now,
                error: None,
            });
        }
        if !status.is_success() {
            return Err(format!("{url}: status {status}"));
        }
        let body = response.bytes().await.map_err(|e| with_causes(&e))?;
        let view: AuthorityView =
            serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
        view.spec.validate().map_err(|e| format!("{url}: {e}"))?;
        if self.membership.learn(group, Some(view.spec)).await {
            info!(%group, members = view.members.len(), "learned from the authority");
        }
        let pushed = view.members.iter().any(|m| m.push.is_some());
        for m in view.members {
            if let Some(p) = m.push {
                let age = Duration::try_from_secs_f64(p.age_s.max(0.0)).unwrap_or_default();
                self.pushes.adopt(
                    group,
                    m.endpoint,
                    MemberPush {
                        state: p.state,
                        tufr_ms: p.tufr_ms,
                        in_flight: p.in_flight,
                        workers: p.workers,
                        service_ms: p.service_ms,
                        stalled_ms: p.stalled_ms,
                        seq: p.seq,
                        received: now.checked_sub(age).unwrap_or(now),
                    },
                );
            }
        }
        Ok(Fetched {
            at: Some(now),
            etag,
            found: true,
            pushed,
            attempted: now,
            error: None,
        })
    }

    /// The authorities of `zone`, from its `_anycast.<zone>` TXT records:
    /// every `url=`, in the order of the answer.
    async fn discover(&self, zone: &Zone) -> Result<Vec<String>, String> {
        if let Some(urls) = self.discovered.get(zone).await {
            return Ok(urls);
        }
        let name = Name::from_ascii(format!("_anycast.{zone}."))
            .map_err(|e| format!("_anycast.{zone}: {e}"))?;
        let answer = self.forwarder.forward(&name, RecordType::TXT).await;
        let mut urls: Vec<String> = Vec::new();
        // A record's strings are one text (a long URL spans several).
        let texts = answer.answers.iter().filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(txt.txt_data.concat()),
            _ => None,
        });
        for text in texts {
            if let Some(url) = String::from_utf8_lossy(&text).strip_prefix("url=") {
                let url = url.trim_end_matches('/').to_owned();
                if !urls.contains(&url) {
                    urls.push(url);
                }
            }
        }
        if urls.is_empty() {
            return Err(format!("no `url=` TXT record at _anycast.{zone}"));
        }
        info!(%zone, urls = %urls.join(" "), "authority discovered in DNS");
        self.discovered.insert(zone.clone(), urls.clone()).await;
        Ok(urls)
    }

    fn log_stale(&self, group: &AnycastName, error: &str, age: Duration) {
        let mut logged = self.stale_logged.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let due = logged
            .get(group)
            .is_none_or(|at| now.saturating_duration_since(*at) >= STALE_LOG_EVERY);
        if due {
            logged.insert(group.clone(), now);
            warn!(%group, %error, age_s = age.as_secs_f64(), "authority unreachable: serving the last view (stale)");
        }
    }
}

/// One request of a fetch: which authority (an index into the zone's
/// URLs), and a timeout overriding the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    index: usize,
    timeout: Option<Duration>,
}

/// Which of a zone's authorities a fetch asks first. Pure: time comes in as
/// `now`. The URLs are passed each time (discovered ones may change), so the
/// current authority is kept as a URL, not an index.
#[derive(Debug, Default)]
struct Preference {
    /// The authority that answered last, when it is not the first
    /// (`None`: the first is current).
    current: Option<String>,
    /// When the first authority was last asked while it was not current,
    /// or last failed: it is asked again [`FIRST_RECHECK`] later.
    first_tried: Option<Instant>,
}

/// A change of a zone's current authority, to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    from: String,
    to: String,
    /// Why: the error of the authority that was current, or that the first
    /// one answers again.
    reason: String,
    /// The authority that was current failed (else: back to the first).
    failed_over: bool,
}

impl Preference {
    fn current_index(&self, urls: &[String]) -> usize {
        self.current
            .as_ref()
            .and_then(|c| urls.iter().position(|u| u == c))
            .unwrap_or(0)
    }

    /// The order in which a fetch at `now` asks `urls`: the current
    /// authority, then the others in the configured order; while the current
    /// one is not the first, the first is asked before it once per
    /// [`FIRST_RECHECK`], with [`RECHECK_TIMEOUT`].
    fn plan(&mut self, urls: &[String], now: Instant) -> Vec<Attempt> {
        if urls.is_empty() {
            return Vec::new();
        }
        let current = self.current_index(urls);
        let mut plan = Vec::with_capacity(urls.len());
        let recheck_due = self
            .first_tried
            .is_none_or(|at| now.saturating_duration_since(at) >= FIRST_RECHECK);
        if current != 0 && recheck_due {
            self.first_tried = Some(now);
            plan.push(Attempt {
                index: 0,
                timeout: Some(RECHECK_TIMEOUT),
            });
        }
        plan.push(Attempt {
            index: current,
            timeout: None,
        });
        for index in 0..urls.len() {
            if !plan.iter().any(|a| a.index == index) {
                plan.push(Attempt {
                    index,
                    timeout: None,
                });
            }
        }
        plan
    }

    /// `urls[index]` answered at `now`, after the attempts in `failed`
    /// (index, error) of the same fetch failed. It becomes current when it
    /// is the first, or when the current one failed; a fetch planned before
    /// another one changed the preference changes nothing.
    fn answered(
        &mut self,
        urls: &[String],
        index: usize,
        failed: &[(usize, String)],
        now: Instant,
    ) -> Option<Change> {
        if failed.iter().any(|(i, _)| *i == 0) {
            self.first_tried = Some(now);
        }
        let current = self.current_index(urls);
        let current_failed = failed.iter().find(|(i, _)| *i == current).map(|(_, e)| e);
        if index == current || (index != 0 && current_failed.is_none()) {
            return None;
        }
        self.current = (index != 0).then(|| urls[index].clone());
        Some(Change {
            from: urls[current].clone(),
            to: urls[index].clone(),
            reason: current_failed
                .cloned()
                .unwrap_or_else(|| "the first authority answers again".to_owned()),
            failed_over: current_failed.is_some(),
        })
    }
}

impl Change {
    fn log(&self, zone: &Zone) {
        let Change {
            from, to, reason, ..
        } = self;
        if self.failed_over {
            warn!(%zone, %from, %to, %reason, "authority changed");
        } else {
            info!(%zone, %from, %to, %reason, "authority changed");
        }
    }
}

/// An HTTP client error with its causes: reqwest's own text names the URL,
/// its causes say what went wrong (refused, closed, timed out).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn known(f: &Fetched) -> Known {
    if f.found {
        Known::Group
    } else {
        Known::NoGroup
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::PushView;

    fn urls(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://a{i}:8053")).collect()
    }

    fn order(plan: &[Attempt]) -> Vec<usize> {
        plan.iter().map(|a| a.index).collect()
    }

    fn down(index: usize) -> (usize, String) {
        (index, format!("a{index}: connection refused"))
    }

    #[test]
    fn the_first_authority_is_asked_first_then_the_others_in_order() {
        let (urls, t0) = (urls(3), Instant::now());
        let mut p = Preference::default();
        let plan = p.plan(&urls, t0);
        assert_eq!(order(&plan), [0, 1, 2]);
        assert!(plan.iter().all(|a| a.timeout.is_none()));
        assert_eq!(p.answered(&urls, 0, &[], t0), None);
        assert_eq!(order(&p.plan(&urls, t0)), [0, 1, 2]);
        // One authority: always it.
        assert_eq!(order(&Preference::default().plan(&urls[..1], t0)), [0]);
        assert!(Preference::default().plan(&[], t0).is_empty());
    }

    #[test]
    fn a_failover_is_one_change_and_the_next_fetches_start_where_it_landed() {
        let (urls, t0) = (urls(3), Instant::now());
        let mut p = Preference::default();
        // The first and second are down: the third answers, in one fetch.
        let change = p.answered(&urls, 2, &[down(0), down(1)], t0).unwrap();
        assert_eq!(
            (change.from.as_str(), change.to.as_str()),
            ("http://a0:8053", "http://a2:8053")
        );
        assert!(change.failed_over);
        assert_eq!(change.reason, "a0: connection refused");
        // Next fetches start with the third (the first just failed: no
        // recheck yet); they change nothing.
        let soon = t0 + FIRST_RECHECK / 2;
        assert_eq!(order(&p.plan(&urls, soon)), [2, 0, 1]);
        assert_eq!(p.answered(&urls, 2, &[], soon), None);
        // The current one fails: on to the others, the first before the second.
        let change = p.answered(&urls, 1, &[down(2), down(0)], soon).unwrap();
        assert_eq!(
            (change.from.as_str(), change.to.as_str()),
            ("http://a2:8053", "http://a1:8053")
        );
        assert_eq!(change.reason, "a2: connection refused");
    }

    #[test]
    fn the_first_authority_is_rechecked_once_a_second_and_preferred_when_back() {
        let (urls, t0) = (urls(3), Instant::now());
        let mut p = Preference::default();
        p.answered(&urls, 1, &[down(0)], t0).unwrap();
        assert_eq!(order(&p.plan(&urls, t0 + FIRST_RECHECK / 2)), [1, 0, 2]);
        // A recheck is due: the first, with a short timeout, then the current.
        let t1 = t0 + FIRST_RECHECK;
        let plan = p.plan(&urls, t1);
        assert_eq!(order(&plan), [0, 1, 2]);
        assert_eq!(plan[0].timeout, Some(RECHECK_TIMEOUT));
        assert_eq!(plan[1].timeout, None);
        // Other fetches meanwhile (other groups of the zone) do not recheck.
        assert_eq!(order(&p.plan(&urls, t1)), [1, 0, 2]);
        assert_eq!(order(&p.plan(&urls, t1 + FIRST_RECHECK / 2)), [1, 0, 2]);
        // Still down: the current one answers, nothing changes, and the
        // next recheck is a second after this one.
        assert_eq!(p.answered(&urls, 1, &[down(0)], t1), None);
        let t2 = t1 + FIRST_RECHECK;
        assert_eq!(order(&p.plan(&urls, t2)), [0, 1, 2]);
        // Back: the first answers its recheck and is current again.
        let change = p.answered(&urls, 0, &[], t2).unwrap();
        assert_eq!(
            (change.from.as_str(), change.to.as_str()),
            ("http://a1:8053", "http://a0:8053")
        );
        assert!(!change.failed_over);
        assert_eq!(change.reason, "the first authority answers again");
        assert_eq!(p.current, None);
        let plan = p.plan(&urls, t2 + FIRST_RECHECK * 5);
        assert_eq!(order(&plan), [0, 1, 2]);
        assert!(plan.iter().all(|a| a.timeout.is_none()));
    }

    #[test]
    fn a_fetch_planned_before_a_change_does_not_undo_it() {
        let (urls, t0) = (urls(2), Instant::now());
        let mut p = Preference::default();
        p.answered(&urls, 1, &[down(0)], t0).unwrap();
        // Group A rechecks the first, which is back; group B, planned
        // earlier, got its answer from the second without any failure.
        assert!(p.answered(&urls, 0, &[], t0 + FIRST_RECHECK).is_some());
        assert_eq!(p.answered(&urls, 1, &[], t0 + FIRST_RECHECK), None);
        assert_eq!(order(&p.plan(&urls, t0 + FIRST_RECHECK)), [0, 1]);
    }

    #[test]
    fn a_current_authority_no_longer_listed_falls_back_to_the_first() {
        let (urls, t0) = (urls(3), Instant::now());
        let mut p = Preference::default();
        p.answered(&urls, 2, &[down(0), down(1)], t0).unwrap();
        // Discovery now lists two: the current one is gone.
        assert_eq!(order(&p.plan(&urls[..2], t0)), [0, 1]);
    }

    #[test]
    fn a_local_resolver_reads_the_load_the_authority_shows() {
        let shown = PushView {
            state: ServerState::Up,
            tufr_ms: Some(12.25),
            in_flight: Some(6),
            workers: Some(4),
            service_ms: Some(11.5),
            stalled_ms: Some(30.0),
            age_s: 0.5,
            seq: 7,
        };
        let read: AuthorityPush =
            serde_json::from_value(serde_json::to_value(shown).unwrap()).unwrap();
        assert_eq!(
            (
                read.in_flight,
                read.workers,
                read.service_ms,
                read.stalled_ms,
                read.seq
            ),
            (Some(6), Some(4), Some(11.5), Some(30.0), 7)
        );
        // An authority without them (older, or no status page) still reads.
        let read: AuthorityPush =
            serde_json::from_str(r#"{"state":"down","tufr_ms":null,"age_s":1.0,"seq":8}"#).unwrap();
        assert_eq!(
            (
                read.state,
                read.in_flight,
                read.workers,
                read.service_ms,
                read.stalled_ms
            ),
            (ServerState::Down, None, None, None, None)
        );
    }
}
