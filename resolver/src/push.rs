//! The push receiver: checks a member's load report and keeps the latest per
//! member.
//!
//! Checks, in order (the first failure decides the status):
//!
//! | check | rejection | HTTP |
//! |---|---|---|
//! | the source within its rate ([`limit`]), before the body is read | `rate_limited` | 429 |
//! | body within [`MAX_PUSH_BYTES`] | `too_large` | 413 |
//! | signature header present and readable | `unsigned` | 401 |
//! | key id known | `unknown_key` | 401 |
//! | HMAC matches (constant time) | `bad_signature` | 401 |
//! | timestamp within the window of our clock | `stale` | 401 |
//! | body is a well-formed push, numbers finite and in range | `malformed` | 400 |
//! | header and body carry the same seq | `malformed` | 400 |
//! | the server is a member of every group it names | `not_member` | 403 |
//! | seq above the last accepted from this server | `replayed` | 409 |
//!
//! Membership comes from the directory (configuration), never from a push.
//! A rejected push changes nothing. Pure apart from mutexes: the caller
//! passes the clocks in.

pub mod limit;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anycast_proto::push::{MAX_PUSH_BYTES, Push, PushKey, ServerState, Signature};
use anycast_proto::{AnycastName, name};

use crate::groups::{Directory, PerMember};
pub use limit::PushLimit;
use limit::SourceLimiter;

/// How long a rejection reason stays quiet in the log after being logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Receiver settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PushConfig {
    /// Keys agents sign with.
    pub keys: Vec<PushKey>,
    /// Largest accepted difference between a push's timestamp and our clock.
    pub window: Duration,
    /// The per-source rate limit.
    pub limit: PushLimit,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The source sent more pushes than its rate allows.
    RateLimited,
    /// Larger than the body cap.
    TooLarge,
    /// No signature header, or one that cannot be read.
    Unsigned,
    /// Signed with a key id we do not have.
    UnknownKey,
    /// The MAC does not match.
    BadSignature,
    /// Timestamp outside the window.
    Stale,
    /// Not a well-formed push, or header and body disagree.
    Malformed,
    /// The server is not a member of a group it reports for.
    NotMember,
    /// Sequence number not above the last accepted one.
    Replayed,
}

impl Rejection {
    /// Every reason, in table order.
    pub const ALL: [Rejection; 9] = [
        Rejection::RateLimited,
        Rejection::TooLarge,
        Rejection::Unsigned,
        Rejection::UnknownKey,
        Rejection::BadSignature,
        Rejection::Stale,
        Rejection::Malformed,
        Rejection::NotMember,
        Rejection::Replayed,
    ];

    /// The label used in counters and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::RateLimited => "rate_limited",
            Rejection::TooLarge => "too_large",
            Rejection::Unsigned => "unsigned",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::Stale => "stale",
            Rejection::Malformed => "malformed",
            Rejection::NotMember => "not_member",
            Rejection::Replayed => "replayed",
        }
    }

    /// The HTTP status the receiver answers with.
    pub fn status(self) -> u16 {
        match self {
            Rejection::RateLimited => 429,
            Rejection::TooLarge => 413,
            Rejection::Unsigned
            | Rejection::UnknownKey
            | Rejection::BadSignature
            | Rejection::Stale => 401,
            Rejection::Malformed => 400,
            Rejection::NotMember => 403,
            Rejection::Replayed => 409,
        }
    }

    fn index(self) -> usize {
        Rejection::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// The latest accepted push of one member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberPush {
    /// Up, down or draining.
    pub state: ServerState,
    /// Smoothed TUFR in milliseconds, when up.
    pub tufr_ms: Option<f64>,
    /// Requests in the server (served or queued) at the agent's latest
    /// reading of its status page, when the agent reads one.
    pub in_flight: Option<u32>,
    /// Requests the server serves at once, when known.
    pub workers: Option<u32>,
    /// The server's service time (TUFR with no queue), milliseconds.
    pub service_ms: Option<f64>,
    /// How long the agent's status read had waited, unanswered, when the
    /// push came (it grows from `received` until a push says otherwise).
    pub stalled_ms: Option<f64>,
    /// The push's sequence number.
    pub seq: u64,
    /// When we accepted it (our monotonic clock), for its age.
    pub received: Instant,
}

/// A refusal with its detail, for the HTTP answer and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The reason.
    pub rejection: Rejection,
    /// What exactly was wrong.
    pub detail: String,
}

/// A push refused by the rate limit, before anything else was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// The refusal (reason `rate_limited`).
    pub refused: Refused,
    /// How long until the source may push again.
    pub retry_after: Duration,
}

/// The latest push of every member, and the receiver's counters.
#[derive(Debug)]
pub struct PushBoard {
    config: PushConfig,
    limiter: SourceLimiter,
    state: Mutex<BoardState>,
    /// Apart from `state`, which the DNS path reads: refusals (a flood of
    /// them) never wait on it.
    last_logged: Mutex<HashMap<Rejection, Instant>>,
    accepted: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
    /// Bumped at every accepted or adopted push, for those who wait for one.
    changes: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct BoardState {
    latest: PerMember<MemberPush>,
    last_seq: HashMap<SocketAddr, u64>,
}

impl PushBoard {
    /// An empty board.
    pub fn new(config: PushConfig) -> Self {
        Self {
            limiter: SourceLimiter::new(config.limit),
            config,
            state: Mutex::new(BoardState::default()),
            last_logged: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
            rejected: Default::default(),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    /// A receiver told of every push accepted or adopted from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Lets a push from `source` in by the per-source rate limit; called
    /// before its body is read. `now` is tokio's clock. A refusal is
    /// counted and logged like any other.
    pub fn admit(&self, source: IpAddr, now: tokio::time::Instant) -> Result<(), Throttled> {
        let Err(retry_after) = self.limiter.admit(source, now) else {
            return Ok(());
        };
        let limit = self.limiter.limit();
        let refused = Refused {
            rejection: Rejection::RateLimited,
            detail: format!(
                "source {source} is over {} pushes/s (burst {})",
                limit.rate, limit.burst
            ),
        };
        self.count_and_log(&refused, now.into_std());
        Err(Throttled {
            refused,
            retry_after,
        })
    }

    /// Whether any key is configured (without one every push is refused).
    pub fn has_keys(&self) -> bool {
        !self.config.keys.is_empty()
    }

    /// Checks a push and, if it passes, records it. `now` is our monotonic
    /// clock, `now_unix` our wall clock in seconds since the Unix epoch.
    pub fn receive(
        &self,
        signature: Option<&str>,
        body: &[u8],
        directory: &Directory,
        now: Instant,
        now_unix: u64,
    ) -> Result<Push, Refused> {
        let result = self.check_and_record(signature, body, directory, now, now_unix);
        match &result {
            Ok(push) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(server = %push.server, seq = push.seq, state = ?push.state, tufr_ms = ?push.tufr_ms, stalled_ms = ?push.stalled_ms, "push accepted");
            }
            Err(refused) => {
                self.count_and_log(refused, now);
            }
        }
        result
    }

    /// Counts and logs a refusal decided outside [`PushBoard::receive`]
    /// (an unreadable body), and hands it back.
    pub fn refuse(&self, refused: Refused, now: Instant) -> Refused {
        self.count_and_log(&refused, now);
        refused
    }

    fn count_and_log(&self, refused: &Refused, now: Instant) {
        self.rejected[refused.rejection.index()].fetch_add(1, Ordering::Relaxed);
        self.log_rarely(refused, now);
    }

    fn check_and_record(
        &self,
        signature: Option<&str>,
        body: &[u8],
        directory: &Directory,
        now: Instant,
        now_unix: u64,
    ) -> Result<Push, Refused> {
        let refuse = |rejection, detail: String| Refused { rejection, detail };
        if body.len() > MAX_PUSH_BYTES {
            return Err(refuse(
                Rejection::TooLarge,
                format!("{} bytes; at most {MAX_PUSH_BYTES}", body.len()),
            ));
        }
        let signature: Signature = signature
            .ok_or_else(|| refuse(Rejection::Unsigned, "no signature header".into()))?
            .parse()
            .map_err(|e: anycast_proto::push::BadSignatureHeader| {
                refuse(Rejection::Unsigned, e.to_string())
            })?;
        let key = self
            .config
            .keys
            .iter()
            .find(|k| k.id == signature.key_id)
            .ok_or_else(|| refuse(Rejection::UnknownKey, format!("key {:?}", signature.key_id)))?;
        if !key.verify(&signature, body) {
            return Err(refuse(Rejection::BadSignature, format!("key {:?}", key.id)));
        }
        let skew = now_unix.abs_diff(signature.timestamp);
        if skew > self.config.window.as_secs() {
            return Err(refuse(
                Rejection::Stale,
                format!(
                    "timestamp {} s from ours; window {} s",
                    skew,
                    self.config.window.as_secs()
                ),
            ));
        }
        let push =
            Push::from_json(body).map_err(|e| refuse(Rejection::Malformed, e.to_string()))?;
        if push.seq != signature.seq {
            return Err(refuse(
                Rejection::Malformed,
                "seq differs between header and body".into(),
            ));
        }
        let server: SocketAddr = push.server.parse().map_err(|_| {
            refuse(
                Rejection::NotMember,
                format!("server {:?} is not address:port", push.server),
            )
        })?;
        let mut groups = Vec::with_capacity(push.groups.len());
        for g in &push.groups {
            let name = name::parse(g, directory.zones())
                .map_err(|e| refuse(Rejection::NotMember, format!("group {g:?}: {e}")))?;
            let group = directory
                .group(&name)
                .ok_or_else(|| refuse(Rejection::NotMember, format!("no group {name}")))?;
            if !group.members.iter().any(|m| m.endpoint() == server) {
                return Err(refuse(
                    Rejection::NotMember,
                    format!("{server} is not a member of {name}"),
                ));
            }
            groups.push(group.name.clone());
        }

        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let last = state.last_seq.get(&server).copied().unwrap_or(0);
        if push.seq <= last {
            return Err(refuse(
                Rejection::Replayed,
                format!("seq {} not above {last}", push.seq),
            ));
        }
        state.last_seq.insert(server, push.seq);
        let record = MemberPush {
            state: push.state,
            tufr_ms: push.tufr_ms,
            in_flight: push.in_flight,
            workers: push.workers,
            service_ms: push.service_ms,
            stalled_ms: push.stalled_ms,
            seq: push.seq,
            received: now,
        };
        for group in groups {
            *state.latest.get_or_insert_with(&group, server, || record) = record;
        }
        drop(state);
        self.changed();
        Ok(push)
    }

    fn log_rarely(&self, refused: &Refused, now: Instant) {
        let mut last_logged = self.last_logged.lock().unwrap_or_else(|p| p.into_inner());
        let due = last_logged
            .get(&refused.rejection)
            .is_none_or(|at| now.saturating_duration_since(*at) >= LOG_EVERY);
        if due {
            last_logged.insert(refused.rejection, now);
            tracing::warn!(
                reason = refused.rejection.reason(),
                detail = %refused.detail,
                "push rejected (this reason is logged at most once a minute; see the counters)"
            );
        }
    }

    /// Records a push as a local zone's authority reports it: no signature
    /// to check (the authority checked it), kept if it is newer than what
    /// is already here. The push already here, if the same, stays as it
    /// is: its arrival is worked out from the age the authority's view
    /// gives, and every view (one per push of any member, while following)
    /// would move it by that fetch's own delay, and the handouts counted
    /// since the push would start again each time.
    pub fn adopt(&self, group: &AnycastName, member: SocketAddr, push: MemberPush) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let previous = state.latest.get(group, member).map(|p| p.seq);
        if previous.is_some_and(|seq| push.seq <= seq) {
            return;
        }
        *state.latest.get_or_insert_with(group, member, || push) = push;
        drop(state);
        self.changed();
    }

    /// The latest push of `member` for `group`.
    pub fn latest(&self, group: &AnycastName, member: SocketAddr) -> Option<MemberPush> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.latest.get(group, member).copied()
    }

    /// Pushes accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Pushes rejected since start, by reason.
    pub fn rejected(&self) -> Vec<(Rejection, u64)> {
        Rejection::ALL
            .iter()
            .map(|r| (*r, self.rejected[r.index()].load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::{AnswerMode, Group, Member, ZoneConfig};
    use anycast_proto::Zone;

    const NOW_UNIX: u64 = 1_800_000_000;

    fn key() -> PushKey {
        PushKey::new("k1", b"0123456789abcdef").unwrap()
    }

    fn directory() -> Directory {
        let zone = Zone::new("any.example.net").unwrap();
        let member = |a: &str| Member::new(format!("{a}:8080").parse().unwrap());
        Directory::new(
            vec![ZoneConfig {
                name: zone.clone(),
                negative_ttl: 5,
                role: Default::default(),
            }],
            [Group::new(
                AnycastName::new("web", None, zone).unwrap(),
                5,
                AnswerMode::One,
                vec![member("127.0.1.1"), member("127.0.1.2")],
            )],
        )
    }

    fn board() -> PushBoard {
        PushBoard::new(PushConfig {
            keys: vec![key()],
            window: Duration::from_secs(30),
            limit: PushLimit::default(),
        })
    }

    fn push(seq: u64) -> Push {
        Push {
            server: "127.0.1.1:8080".into(),
            groups: vec!["web.any.example.net".into()],
            state: ServerState::Up,
            tufr_ms: Some(4.0),
            seq,
            sent_at_ms: NOW_UNIX * 1000,
            in_flight: None,
            workers: None,
            service_ms: None,
            stalled_ms: None,
        }
    }

    fn signed(p: &Push) -> (String, Vec<u8>) {
        let body = p.to_json();
        (key().sign(p.seq, NOW_UNIX, &body).to_string(), body)
    }

    fn reject(board: &PushBoard, sig: Option<&str>, body: &[u8]) -> Rejection {
        board
            .receive(sig, body, &directory(), Instant::now(), NOW_UNIX)
            .unwrap_err()
            .rejection
    }

    fn group() -> AnycastName {
        anycast_proto::name::parse(
            "web.any.example.net",
            &[Zone::new("any.example.net").unwrap()],
        )
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_over_its_rate_is_refused_first_counted_and_told_when_to_come_back() {
        let b = board();
        let flood: IpAddr = "192.0.2.1".parse().unwrap();
        let now = tokio::time::Instant::now();
        let burst = PushLimit::default().burst;
        for _ in 0..burst {
            b.admit(flood, now).unwrap();
        }
        let throttled = b.admit(flood, now).unwrap_err();
        assert_eq!(throttled.refused.rejection, Rejection::RateLimited);
        assert_eq!(throttled.refused.rejection.status(), 429);
        assert!(throttled.refused.detail.contains("192.0.2.1"));
        assert_eq!(
            throttled.retry_after,
            Duration::from_secs_f64(1.0 / PushLimit::default().rate)
        );
        b.admit(flood, now).unwrap_err();
        let counts: HashMap<&str, u64> = b
            .rejected()
            .into_iter()
            .map(|(r, n)| (r.reason(), n))
            .collect();
        assert_eq!(counts["rate_limited"], 2);
        assert_eq!(b.accepted(), 0);

        // Another source is not affected, and the flooder gets in again
        // once a push's worth has refilled.
        b.admit("192.0.2.2".parse().unwrap(), now).unwrap();
        tokio::time::advance(throttled.retry_after).await;
        b.admit(flood, tokio::time::Instant::now()).unwrap();
    }

    #[test]
    fn a_good_push_is_recorded() {
        let b = board();
        let (sig, body) = signed(&push(10));
        b.receive(Some(&sig), &body, &directory(), Instant::now(), NOW_UNIX)
            .unwrap();
        let latest = b
            .latest(&group(), "127.0.1.1:8080".parse().unwrap())
            .unwrap();
        assert_eq!((latest.seq, latest.tufr_ms), (10, Some(4.0)));
        assert_eq!(
            (latest.in_flight, latest.workers, latest.service_ms),
            (None, None, None)
        );
        assert_eq!(b.accepted(), 1);
    }

    #[test]
    fn the_load_of_a_push_is_kept_and_replaced_by_the_next() {
        let b = board();
        let member = "127.0.1.1:8080".parse().unwrap();
        let loaded = Push {
            in_flight: Some(6),
            workers: Some(4),
            service_ms: Some(11.5),
            ..push(10)
        };
        let (sig, body) = signed(&loaded);
        b.receive(Some(&sig), &body, &directory(), Instant::now(), NOW_UNIX)
            .unwrap();
        let latest = b.latest(&group(), member).unwrap();
        assert_eq!(
            (latest.in_flight, latest.workers, latest.service_ms),
            (Some(6), Some(4), Some(11.5))
        );
        // The latest push says it all: a push without them (the status page
        // failed) clears them.
        let (sig, body) = signed(&push(11));
        b.receive(Some(&sig), &body, &directory(), Instant::now(), NOW_UNIX)
            .unwrap();
        let latest = b.latest(&group(), member).unwrap();
        assert_eq!(
            (latest.in_flight, latest.workers, latest.service_ms),
            (None, None, None)
        );
        // Out of range: refused as malformed, nothing changes.
        let bad = Push {
            workers: Some(0),
            ..push(12)
        };
        let (sig, body) = signed(&bad);
        assert_eq!(reject(&b, Some(&sig), &body), Rejection::Malformed);
        assert_eq!(b.latest(&group(), member).unwrap().seq, 11);
    }

    #[test]
    fn every_bad_push_is_refused_for_its_reason_and_changes_nothing() {
        let b = board();
        let (sig, body) = signed(&push(10));
        b.receive(Some(&sig), &body, &directory(), Instant::now(), NOW_UNIX)
            .unwrap();

        assert_eq!(reject(&b, None, &body), Rejection::Unsigned);
        assert_eq!(reject(&b, Some("v1 garbage"), &body), Rejection::Unsigned);
        let other = PushKey::new("k9", b"0123456789abcdef").unwrap();
        let (_, body11) = signed(&push(11));
        assert_eq!(
            reject(
                &b,
                Some(&other.sign(11, NOW_UNIX, &body11).to_string()),
                &body11
            ),
            Rejection::UnknownKey
        );
        let forged = PushKey::new("k1", b"not the real key!").unwrap();
        assert_eq!(
            reject(
                &b,
                Some(&forged.sign(11, NOW_UNIX, &body11).to_string()),
                &body11
            ),
            Rejection::BadSignature
        );
        let mut tampered = body11.clone();
        let at = tampered.iter().position(|c| *c == b'4').unwrap();
        tampered[at] = b'9';
        let (sig11, _) = signed(&push(11));
        assert_eq!(reject(&b, Some(&sig11), &tampered), Rejection::BadSignature);
        let stale = key().sign(11, NOW_UNIX - 31, &body11).to_string();
        assert_eq!(reject(&b, Some(&stale), &body11), Rejection::Stale);
        assert_eq!(reject(&b, Some(&sig), &body), Rejection::Replayed);
        let mismatch = key().sign(12, NOW_UNIX, &body11).to_string();
        assert_eq!(reject(&b, Some(&mismatch), &body11), Rejection::Malformed);
        let garbage = b"{not json";
        assert_eq!(
            reject(
                &b,
                Some(&key().sign(12, NOW_UNIX, garbage).to_string()),
                garbage
            ),
            Rejection::Malformed
        );
        let outsider = Push {
            server: "127.0.9.9:8080".into(),
            ..push(12)
        };
        let (s, bd) = signed(&outsider);
        assert_eq!(reject(&b, Some(&s), &bd), Rejection::NotMember);
        let elsewhere = Push {
            groups: vec!["mail.any.example.net".into()],
            ..push(12)
        };
        let (s, bd) = signed(&elsewhere);
        assert_eq!(reject(&b, Some(&s), &bd), Rejection::NotMember);
        let huge = vec![b' '; MAX_PUSH_BYTES + 1];
        assert_eq!(reject(&b, Some(&sig), &huge), Rejection::TooLarge);

        let latest = b
            .latest(&group(), "127.0.1.1:8080".parse().unwrap())
            .unwrap();
        assert_eq!(latest.seq, 10, "state unchanged by every rejection");
        let counts: HashMap<&str, u64> = b
            .rejected()
            .into_iter()
            .map(|(r, n)| (r.reason(), n))
            .collect();
        assert_eq!(counts["unsigned"], 2);
        assert_eq!(counts["bad_signature"], 2);
        assert_eq!(counts["not_member"], 2);
        assert_eq!(counts["malformed"], 2);
        assert_eq!(counts["replayed"], 1);
        assert_eq!(counts["too_large"], 1);
        assert_eq!(counts["stale"], 1);
        assert_eq!(counts["unknown_key"], 1);
        assert_eq!(b.accepted(), 1);
    }

    /// A local resolver learns each push from every view the authority
    /// sends, its arrival worked out from the view's age; the same push
    /// seen again keeps its first arrival, and a newer one replaces it.
    #[test]
    fn an_adopted_push_seen_again_keeps_its_arrival() {
        let board = board();
        let group = AnycastName::new("web", None, Zone::new("any.example.net").unwrap()).unwrap();
        let member = "127.0.1.1:8080".parse().unwrap();
        let t0 = Instant::now();
        let at = |seq, received| MemberPush {
            state: ServerState::Up,
            tufr_ms: Some(4.0),
            in_flight: Some(3),
            workers: Some(4),
            stalled_ms: None,
            service_ms: Some(2.0),
            seq,
            received,
        };
        board.adopt(&group, member, at(7, t0));
        board.adopt(&group, member, at(7, t0 + Duration::from_millis(3)));
        assert_eq!(board.latest(&group, member).unwrap().received, t0);
        board.adopt(&group, member, at(6, t0 + Duration::from_millis(5)));
        assert_eq!(board.latest(&group, member).unwrap().seq, 7);
        let newer = t0 + Duration::from_millis(9);
        board.adopt(&group, member, at(8, newer));
        assert_eq!(board.latest(&group, member).unwrap().received, newer);
    }
}
