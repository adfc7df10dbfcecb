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
//! * concurrent refreshes of one group are one fetch (single flight), and
//!   everyone waiting shares its outcome, failure included; a failing
//!   authority is asked again at most once a second per group;
//! * when the authority cannot be reached, the last view keeps answering for
//!   up to `max_stale` (serve-stale, in the spirit of RFC 8767), with a log
//!   line (at most once a minute per group) and a counter; past it, SERVFAIL.
//!   A query never waits more than 500 ms for a refresh when a stale view
//!   exists.
//!
//! The authority is the zone's `authority` URL, or, without one, found in DNS:
//! a TXT record `_anycast.<zone>` holding `url=...`, looked up through the
//! forwarder and cached.

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

/// A failed attempt is not repeated for this long (RFC 8767's failure
/// recheck): callers meanwhile share its outcome.
const FAILURE_RECHECK: Duration = Duration::from_secs(1);

/// A query with a stale view waits this long for a refresh, then is answered
/// from the stale view while the refresh goes on (RFC 8767 suggests 1.8 s at
/// most).
const STALE_ANSWER_AFTER: Duration = Duration::from_millis(500);

/// Groups cached per local resolver, at most.
const MAX_GROUPS: u64 = 100_000;

/// What a local resolver knows of a group of a local zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The authority has it (fresh, or stale within `max_stale`).
    Group,
    /// The authority says there is no such group.
    NoGroup,
    /// The authority cannot be reached and nothing usable is cached.
    Unavailable,
}

/// What is cached of one group: the last good view, and the last attempt.
#[derive(Debug, Clone)]
struct Fetched {
    /// When the authority last answered (`None`: never).
    at: Option<Instant>,
    etag: Option<String>,
    found: bool,
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
    discovered: Cache<Zone, String>,
    stale_logged: Mutex<std::collections::HashMap<AnycastName, Instant>>,
}

impl Authorities {
    /// Learning through `membership`, adopting pushes into `pushes`.
    pub fn new(
        membership: Arc<Membership>,
        pushes: Arc<PushBoard>,
        forwarder: Forwarder,
    ) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
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
            stale_logged: Mutex::new(std::collections::HashMap::new()),
        }))
    }

    /// Makes sure `group` (a group name of `zone`) is known as well as it can
    /// be now; fetches it if needed. A query waits for at most one fetch
    /// (the authority client's 2 s timeout) when nothing is cached, and at
    /// most [`STALE_ANSWER_AFTER`] when a stale view is.
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
                attempted: Instant::now(),
                error: Some("nothing cached".to_owned()),
            },
        }
    }

    async fn fetch(
        &self,
        group: &AnycastName,
        zone: &LocalZone,
        previous: Option<&Fetched>,
    ) -> Result<Fetched, String> {
        let base = match &zone.authority {
            Some(url) => url.clone(),
            None => self.discover(group.zone()).await?,
        };
        let url = format!("{base}/v1/groups/{group}");
        let mut request = self.client.get(&url);
        if let Some(etag) = previous.and_then(|p| p.etag.as_deref()) {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
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
                attempted: now,
                error: None,
            });
        }
        if !status.is_success() {
            return Err(format!("{url}: status {status}"));
        }
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        let view: AuthorityView =
            serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
        view.spec.validate().map_err(|e| format!("{url}: {e}"))?;
        if self.membership.learn(group, Some(view.spec)).await {
            info!(%group, members = view.members.len(), "learned from the authority");
        }
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
            attempted: now,
            error: None,
        })
    }

    /// The authority of `zone`, from its `_anycast.<zone>` TXT record.
    async fn discover(&self, zone: &Zone) -> Result<String, String> {
        if let Some(url) = self.discovered.get(zone).await {
            return Ok(url);
        }
        let name = Name::from_ascii(format!("_anycast.{zone}."))
            .map_err(|e| format!("_anycast.{zone}: {e}"))?;
        let answer = self.forwarder.forward(&name, RecordType::TXT).await;
        let url = answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt.txt_data.concat()),
                _ => None,
            })
            .find_map(|text| {
                String::from_utf8_lossy(&text)
                    .strip_prefix("url=")
                    .map(str::to_owned)
            })
            .ok_or_else(|| format!("no `url=` TXT record at _anycast.{zone}"))?;
        let url = url.trim_end_matches('/').to_owned();
        info!(%zone, %url, "authority discovered in DNS");
        self.discovered.insert(zone.clone(), url.clone()).await;
        Ok(url)
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

    #[test]
    fn a_local_resolver_reads_the_load_the_authority_shows() {
        let shown = PushView {
            state: ServerState::Up,
            tufr_ms: Some(12.25),
            in_flight: Some(6),
            workers: Some(4),
            service_ms: Some(11.5),
            age_s: 0.5,
            seq: 7,
        };
        let read: AuthorityPush =
            serde_json::from_value(serde_json::to_value(shown).unwrap()).unwrap();
        assert_eq!(
            (read.in_flight, read.workers, read.service_ms, read.seq),
            (Some(6), Some(4), Some(11.5), 7)
        );
        // An authority without them (older, or no status page) still reads.
        let read: AuthorityPush =
            serde_json::from_str(r#"{"state":"down","tufr_ms":null,"age_s":1.0,"seq":8}"#).unwrap();
        assert_eq!(
            (read.state, read.in_flight, read.workers, read.service_ms),
            (ServerState::Down, None, None, None)
        );
    }
}
