//! Pushes: a member's load report, sent by `anycast-agent` to a resolver.
//!
//! The body is JSON ([`Push`]). It travels with a signature header
//! ([`SIGNATURE_HEADER`]) holding the key id, the sequence number, the
//! timestamp and an HMAC-SHA256 over those and the SHA-256 of the body
//! ([`Signature`]). The receiver checks the MAC in constant time, then that the
//! header and the body agree, then freshness, order and membership (that part
//! is the resolver's, since it owns membership).

use std::fmt;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// HTTP header carrying the [`Signature`].
pub const SIGNATURE_HEADER: &str = "x-anycast-signature";

/// Path of the push endpoint on a resolver's HTTP listener.
pub const PUSH_PATH: &str = "/v1/push";

/// Largest push body a receiver accepts (a push is a few hundred bytes).
pub const MAX_PUSH_BYTES: usize = 16 * 1024;

/// Largest TUFR a push may report: a server slower than this is down.
pub const MAX_TUFR_MS: f64 = 600_000.0;

/// Most requests in flight, and most workers, a push may report: a bound
/// far above any one server, so a garbled number is refused, not believed.
pub const MAX_IN_FLIGHT: u32 = 1_000_000;

/// Version tag mixed into every MAC, so a MAC of another message kind or
/// version never verifies as a push.
const MAC_CONTEXT: &str = "anycast-push-v1";

/// What a server says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    /// Answering; `tufr_ms` is its smoothed time until first read.
    Up,
    /// Not answering the agent's measurements; `tufr_ms` is absent.
    Down,
    /// Shutting down or taken out of service: send no new clients.
    Draining,
}

/// A load report, the push body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Push {
    /// The member's identity: the `address:port` it has in its groups.
    pub server: String,
    /// The groups (ADNs, DNS form) the server reports for.
    pub groups: Vec<String>,
    /// Up, down or draining.
    pub state: ServerState,
    /// Smoothed time until first read, in milliseconds; `None` unless up.
    pub tufr_ms: Option<f64>,
    /// Strictly increasing per server, across agent restarts (time-based).
    pub seq: u64,
    /// When the agent sent it, in milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// Requests in the server (being served or queued) at the latest
    /// reading of its status page, not counting the status request itself;
    /// not smoothed. Absent when the agent reads no status page, or the last
    /// read failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u32>,
    /// How many requests the server serves at once (its workers), from the
    /// agent's configuration or the status page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// The server's service time in milliseconds: its TUFR when no request
    /// waits (an average of the measurements that started while the status
    /// page showed a free worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ms: Option<f64>,
    /// How long, in milliseconds, the server had left the agent's status
    /// page unanswered when the agent sent this push (since the sending of
    /// a read that went overdue): a page the server answers at once unless
    /// it has stopped serving, so a new request will wait out the rest of
    /// the stall before its turn. The receiver grows it with its own clock
    /// until a push without it. Absent while the page is answered (or when
    /// the agent reads no status page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_ms: Option<f64>,
}

/// Why a push body is unacceptable on its face.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// Not the JSON of a [`Push`].
    #[error("malformed push body: {0}")]
    Malformed(String),
    /// TUFR not finite, negative, or beyond [`MAX_TUFR_MS`].
    #[error("tufr_ms {0} is not a finite number in 0..={MAX_TUFR_MS}")]
    TufrOutOfRange(f64),
    /// Up without a TUFR.
    #[error("state up needs tufr_ms")]
    MissingTufr,
    /// No group named.
    #[error("a push must name at least one group")]
    NoGroups,
    /// Requests in flight beyond [`MAX_IN_FLIGHT`].
    #[error("in_flight {0} is above {MAX_IN_FLIGHT}")]
    InFlightOutOfRange(u32),
    /// Workers zero or beyond [`MAX_IN_FLIGHT`].
    #[error("workers {0} is not in 1..={MAX_IN_FLIGHT}")]
    WorkersOutOfRange(u32),
    /// Service time not finite, negative, or beyond [`MAX_TUFR_MS`].
    #[error("service_ms {0} is not a finite number in 0..={MAX_TUFR_MS}")]
    ServiceOutOfRange(f64),
    /// Stall not finite, negative, or beyond [`MAX_TUFR_MS`].
    #[error("stalled_ms {0} is not a finite number in 0..={MAX_TUFR_MS}")]
    StalledOutOfRange(f64),
}

impl Push {
    /// Parses and checks a body: well-formed JSON, finite in-range numbers.
    pub fn from_json(body: &[u8]) -> Result<Push, PushError> {
        let push: Push =
            serde_json::from_slice(body).map_err(|e| PushError::Malformed(e.to_string()))?;
        if let Some(t) = push.tufr_ms
            && !is_milliseconds(t)
        {
            return Err(PushError::TufrOutOfRange(t));
        }
        if push.state == ServerState::Up && push.tufr_ms.is_none() {
            return Err(PushError::MissingTufr);
        }
        if push.groups.is_empty() {
            return Err(PushError::NoGroups);
        }
        if let Some(n) = push.in_flight
            && n > MAX_IN_FLIGHT
        {
            return Err(PushError::InFlightOutOfRange(n));
        }
        if let Some(w) = push.workers
            && !(1..=MAX_IN_FLIGHT).contains(&w)
        {
            return Err(PushError::WorkersOutOfRange(w));
        }
        if let Some(s) = push.service_ms
            && !is_milliseconds(s)
        {
            return Err(PushError::ServiceOutOfRange(s));
        }
        if let Some(s) = push.stalled_ms
            && !is_milliseconds(s)
        {
            return Err(PushError::StalledOutOfRange(s));
        }
        Ok(push)
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A time a push may carry: finite, in `0..=MAX_TUFR_MS`.
pub(crate) fn is_milliseconds(ms: f64) -> bool {
    ms.is_finite() && (0.0..=MAX_TUFR_MS).contains(&ms)
}

/// A shared signing key, known to the agent and the resolver.
#[derive(Clone)]
pub struct PushKey {
    /// Names the key, so keys can be rotated.
    pub id: String,
    secret: Vec<u8>,
}

/// Two keys are the same key when both the id and the secret are: a secret
/// rotated under the same id is another key. The secrets are compared in
/// time that does not depend on where they differ.
impl PartialEq for PushKey {
    fn eq(&self, other: &PushKey) -> bool {
        self.id == other.id
            && self.secret.len() == other.secret.len()
            && self
                .secret
                .iter()
                .zip(&other.secret)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl Eq for PushKey {}

impl fmt::Debug for PushKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Too short to resist guessing.
    #[error("key {id:?} is {len} bytes; at least 16 are needed")]
    TooShort { id: String, len: usize },
    /// The key id cannot be written in the header.
    #[error("key id {0:?} must be 1 to 64 letters, digits, '-', '_' or '.'")]
    BadId(String),
}

impl PushKey {
    /// A key from its id and secret. Surrounding whitespace of the secret is
    /// ignored, so a key file may end with a newline.
    pub fn new(id: &str, secret: &[u8]) -> Result<PushKey, KeyError> {
        let ok_id = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok_id {
            return Err(KeyError::BadId(id.to_owned()));
        }
        let secret = secret.trim_ascii();
        if secret.len() < 16 {
            return Err(KeyError::TooShort {
                id: id.to_owned(),
                len: secret.len(),
            });
        }
        Ok(PushKey {
            id: id.to_owned(),
            secret: secret.to_vec(),
        })
    }

    fn mac(&self, seq: u64, timestamp: u64, body: &[u8]) -> hmac::Hmac<Sha256> {
        // The length of a secret is never invalid for HMAC.
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        let body_hash = Sha256::digest(body);
        mac.update(
            format!(
                "{MAC_CONTEXT}\n{}\n{seq}\n{timestamp}\n{}",
                self.id,
                hex::encode(body_hash)
            )
            .as_bytes(),
        );
        mac
    }

    /// Signs a body with the given sequence number and timestamp (seconds
    /// since the Unix epoch).
    pub fn sign(&self, seq: u64, timestamp: u64, body: &[u8]) -> Signature {
        Signature {
            key_id: self.id.clone(),
            seq,
            timestamp,
            mac: self
                .mac(seq, timestamp, body)
                .finalize()
                .into_bytes()
                .to_vec(),
        }
    }

    /// Whether `signature` is this key's MAC over `body`, compared in
    /// constant time.
    pub fn verify(&self, signature: &Signature, body: &[u8]) -> bool {
        signature.key_id == self.id
            && self
                .mac(signature.seq, signature.timestamp, body)
                .verify_slice(&signature.mac)
                .is_ok()
    }
}

/// The signature header's value:
/// `v1 key=<id> seq=<seq> ts=<unix seconds> mac=<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Which key signed.
    pub key_id: String,
    /// Must equal the body's `seq`.
    pub seq: u64,
    /// Signing time, seconds since the Unix epoch; bounds replay.
    pub timestamp: u64,
    /// HMAC-SHA256 over the key id, seq, timestamp and body hash.
    pub mac: Vec<u8>,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v1 key={} seq={} ts={} mac={}",
            self.key_id,
            self.seq,
            self.timestamp,
            hex::encode(&self.mac)
        )
    }
}

/// The signature header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed signature header: {0}")]
pub struct BadSignatureHeader(pub &'static str);

impl std::str::FromStr for Signature {
    type Err = BadSignatureHeader;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_ascii_whitespace();
        if parts.next() != Some("v1") {
            return Err(BadSignatureHeader("expected version v1"));
        }
        let (mut key_id, mut seq, mut timestamp, mut mac) = (None, None, None, None);
        for part in parts {
            let (k, v) = part
                .split_once('=')
                .ok_or(BadSignatureHeader("expected key=value"))?;
            match k {
                "key" => key_id = Some(v.to_owned()),
                "seq" => seq = Some(v.parse().map_err(|_| BadSignatureHeader("bad seq"))?),
                "ts" => timestamp = Some(v.parse().map_err(|_| BadSignatureHeader("bad ts"))?),
                "mac" => mac = Some(hex::decode(v).map_err(|_| BadSignatureHeader("bad mac"))?),
                _ => return Err(BadSignatureHeader("unknown field")),
            }
        }
        Ok(Signature {
            key_id: key_id.ok_or(BadSignatureHeader("missing key"))?,
            seq: seq.ok_or(BadSignatureHeader("missing seq"))?,
            timestamp: timestamp.ok_or(BadSignatureHeader("missing ts"))?,
            mac: mac.ok_or(BadSignatureHeader("missing mac"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PushKey {
        PushKey::new("k1", b"0123456789abcdef0123\n").unwrap()
    }

    fn push() -> Push {
        Push {
            server: "127.0.0.1:8080".into(),
            groups: vec!["web.any.example.net".into()],
            state: ServerState::Up,
            tufr_ms: Some(12.5),
            seq: 7,
            sent_at_ms: 1_700_000_000_000,
            in_flight: None,
            workers: None,
            service_ms: None,
            stalled_ms: None,
        }
    }

    /// [`push`] with the status page's numbers.
    fn loaded() -> Push {
        Push {
            in_flight: Some(3),
            workers: Some(8),
            service_ms: Some(4.25),
            ..push()
        }
    }

    #[test]
    fn sign_then_verify_through_the_header_text() {
        let body = push().to_json();
        let sig = key().sign(7, 1_700_000_000, &body);
        let parsed: Signature = sig.to_string().parse().unwrap();
        assert_eq!(parsed, sig);
        assert!(key().verify(&parsed, &body));
    }

    #[test]
    fn any_change_breaks_the_mac() {
        let body = push().to_json();
        let sig = key().sign(7, 1_700_000_000, &body);
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert!(!key().verify(&sig, &tampered));
        assert!(!key().verify(
            &Signature {
                seq: 8,
                ..sig.clone()
            },
            &body
        ));
        assert!(!key().verify(
            &Signature {
                timestamp: 1,
                ..sig.clone()
            },
            &body
        ));
        let other = PushKey::new("k1", b"another secret of 16+ bytes").unwrap();
        assert!(!other.verify(&sig, &body));
        let renamed = PushKey::new("k2", b"0123456789abcdef0123").unwrap();
        assert!(!renamed.verify(
            &Signature {
                key_id: "k2".into(),
                ..sig
            },
            &body
        ));
    }

    #[test]
    fn bodies_are_checked() {
        assert_eq!(Push::from_json(&push().to_json()), Ok(push()));
        let out = Push {
            tufr_ms: Some(-1.0),
            ..push()
        };
        assert_eq!(
            Push::from_json(&out.to_json()),
            Err(PushError::TufrOutOfRange(-1.0))
        );
        let nan = br#"{"server":"a:1","groups":["g"],"state":"up","tufr_ms":1e999,"seq":1,"sent_at_ms":1}"#;
        assert!(Push::from_json(nan).is_err());
        let up_without = Push {
            tufr_ms: None,
            ..push()
        };
        assert_eq!(
            Push::from_json(&up_without.to_json()),
            Err(PushError::MissingTufr)
        );
        let down = Push {
            state: ServerState::Down,
            tufr_ms: None,
            ..push()
        };
        assert!(Push::from_json(&down.to_json()).is_ok());
        assert!(matches!(
            Push::from_json(b"{\"server\":1}"),
            Err(PushError::Malformed(_))
        ));
        let extra = br#"{"server":"a:1","groups":["g"],"state":"up","tufr_ms":1,"seq":1,"sent_at_ms":1,"x":1}"#;
        assert!(matches!(
            Push::from_json(extra),
            Err(PushError::Malformed(_))
        ));
    }

    #[test]
    fn load_fields_round_trip_and_are_left_out_when_absent() {
        let json = String::from_utf8(loaded().to_json()).unwrap();
        assert!(
            json.contains(r#""in_flight":3,"workers":8,"service_ms":4.25"#),
            "{json}"
        );
        assert_eq!(Push::from_json(json.as_bytes()), Ok(loaded()));
        // Absent: not written at all, so a push without them is the same
        // bytes as before they existed, and older receivers accept it.
        let json = String::from_utf8(push().to_json()).unwrap();
        for field in ["in_flight", "workers", "service_ms", "stalled_ms"] {
            assert!(!json.contains(field), "{json}");
        }
        let bare =
            br#"{"server":"a:1","groups":["g"],"state":"up","tufr_ms":1,"seq":1,"sent_at_ms":1}"#;
        let parsed = Push::from_json(bare).unwrap();
        assert_eq!(
            (
                parsed.in_flight,
                parsed.workers,
                parsed.service_ms,
                parsed.stalled_ms
            ),
            (None, None, None, None)
        );
        // Limits included; a down server may still report its queue.
        let edge = Push {
            state: ServerState::Down,
            tufr_ms: None,
            in_flight: Some(MAX_IN_FLIGHT),
            workers: Some(MAX_IN_FLIGHT),
            service_ms: Some(MAX_TUFR_MS),
            stalled_ms: Some(MAX_TUFR_MS),
            ..push()
        };
        assert_eq!(Push::from_json(&edge.to_json()), Ok(edge));
        let zero = Push {
            in_flight: Some(0),
            workers: Some(1),
            service_ms: Some(0.0),
            stalled_ms: Some(0.0),
            ..push()
        };
        assert_eq!(Push::from_json(&zero.to_json()), Ok(zero));
    }

    #[test]
    fn load_fields_out_of_range_are_refused() {
        let check = |p: Push, e: PushError| assert_eq!(Push::from_json(&p.to_json()), Err(e));
        check(
            Push {
                in_flight: Some(MAX_IN_FLIGHT + 1),
                ..loaded()
            },
            PushError::InFlightOutOfRange(MAX_IN_FLIGHT + 1),
        );
        check(
            Push {
                workers: Some(0),
                ..loaded()
            },
            PushError::WorkersOutOfRange(0),
        );
        check(
            Push {
                workers: Some(MAX_IN_FLIGHT + 1),
                ..loaded()
            },
            PushError::WorkersOutOfRange(MAX_IN_FLIGHT + 1),
        );
        check(
            Push {
                service_ms: Some(-0.5),
                ..loaded()
            },
            PushError::ServiceOutOfRange(-0.5),
        );
        check(
            Push {
                service_ms: Some(MAX_TUFR_MS * 2.0),
                ..loaded()
            },
            PushError::ServiceOutOfRange(MAX_TUFR_MS * 2.0),
        );
        check(
            Push {
                stalled_ms: Some(-1.0),
                ..loaded()
            },
            PushError::StalledOutOfRange(-1.0),
        );
        check(
            Push {
                stalled_ms: Some(MAX_TUFR_MS + 1.0),
                ..loaded()
            },
            PushError::StalledOutOfRange(MAX_TUFR_MS + 1.0),
        );
        // Not numbers JSON can carry, or not of the field's type.
        for bad in [
            r#""service_ms":1e999"#,
            r#""in_flight":-1"#,
            r#""in_flight":1.5"#,
            r#""workers":"4""#,
            r#""in_flight":4294967296"#,
            r#""service_ms":null,"service_ms":1"#,
        ] {
            let body = format!(
                r#"{{"server":"a:1","groups":["g"],"state":"up","tufr_ms":1,"seq":1,"sent_at_ms":1,{bad}}}"#
            );
            assert!(
                matches!(
                    Push::from_json(body.as_bytes()),
                    Err(PushError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // An explicit null is the same as absent.
        let null = br#"{"server":"a:1","groups":["g"],"state":"up","tufr_ms":1,"seq":1,"sent_at_ms":1,"in_flight":null}"#;
        assert_eq!(Push::from_json(null).unwrap().in_flight, None);
        // The messages say which field and why.
        assert_eq!(
            PushError::WorkersOutOfRange(0).to_string(),
            "workers 0 is not in 1..=1000000"
        );
    }

    #[test]
    fn keys_and_headers_are_validated() {
        assert!(matches!(
            PushKey::new("k", b"short"),
            Err(KeyError::TooShort { .. })
        ));
        assert!(matches!(
            PushKey::new("a b", b"0123456789abcdef"),
            Err(KeyError::BadId(_))
        ));
        assert!(format!("{:?}", key()).contains("redacted"));
        for bad in [
            "",
            "v2 key=a seq=1 ts=1 mac=00",
            "v1 key=a seq=x ts=1 mac=00",
            "v1 key=a ts=1 mac=00",
            "v1 key=a seq=1 ts=1 mac=zz",
        ] {
            assert!(bad.parse::<Signature>().is_err(), "{bad}");
        }
    }
}
