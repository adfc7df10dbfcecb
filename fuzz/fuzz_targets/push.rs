//! The push message: the signature header, the body, the HMAC check, and
//! the resolver's whole acceptance path (`PushBoard::receive`).
//!
//! Input: the signature header, a newline, then the body.
//!
//! Two receptions per input, each on a fresh board:
//! * as given: forging a MAC is not the fuzzer's job, so this covers the
//!   header parser and the refusals before the body is read;
//! * re-signed with the resolver's key over the header's seq and timestamp
//!   (or the body's seq and the board's clock), so the body, freshness,
//!   membership and replay checks are reached.
//!
//! Invariants: a header that parses prints back to itself; a body that
//! parses serialises back to itself; a signature made by the key verifies
//! through its header text and fails for any other body; an accepted push
//! is recorded for every group it names, and the same push again is
//! refused as replayed.

#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use anycast_fuzz::{NOW_UNIX, directory, push_key, resolver_config, same_tufr};
use anycast_proto::push::{Push, Signature};
use anycast_proto::{name, push::PushKey};
use anycast_resolver::config::PushConfig;
use anycast_resolver::groups::Directory;
use anycast_resolver::push::{PushBoard, Rejection};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    key: PushKey,
    config: PushConfig,
    directory: Directory,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| Fixture {
    key: push_key(),
    config: resolver_config().push,
    directory: directory(),
});

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    let header = String::from_utf8_lossy(header);

    let signature = header.parse::<Signature>().ok();
    if let Some(sig) = &signature {
        let printed = sig.to_string();
        assert_eq!(
            printed.parse::<Signature>().as_ref(),
            Ok(sig),
            "{printed:?}"
        );
    }

    let parsed = Push::from_json(body);
    if let Ok(push) = &parsed {
        let again = Push::from_json(&push.to_json()).expect("a serialised push parses");
        assert_same_push(push, &again);
    }

    // As given.
    let board = PushBoard::new(fx.config.clone());
    let now = Instant::now();
    match board.receive(Some(&header), body, &fx.directory, now, NOW_UNIX) {
        Ok(push) => {
            let sig = signature.as_ref().expect("accepted with a readable header");
            assert!(fx.key.verify(sig, body), "accepted without a valid MAC");
            check_accepted(fx, &board, &header, body, &push, now);
        }
        Err(refused) if signature.is_none() => assert!(
            matches!(refused.rejection, Rejection::Unsigned | Rejection::TooLarge),
            "{refused:?}"
        ),
        Err(_) => {}
    }

    // Re-signed.
    let (seq, timestamp) = match (&signature, &parsed) {
        (Some(sig), _) => (sig.seq, sig.timestamp),
        (None, Ok(push)) => (push.seq, NOW_UNIX),
        (None, Err(_)) => (1, NOW_UNIX),
    };
    let sig = fx.key.sign(seq, timestamp, body);
    let text = sig.to_string();
    assert_eq!(text.parse::<Signature>().as_ref(), Ok(&sig));
    assert!(fx.key.verify(&sig, body));
    let mut other = body.to_vec();
    other.push(b' ');
    assert!(!fx.key.verify(&sig, &other), "MAC ignores a trailing byte");

    let board = PushBoard::new(fx.config.clone());
    match board.receive(Some(&text), body, &fx.directory, now, NOW_UNIX) {
        Ok(push) => check_accepted(fx, &board, &text, body, &push, now),
        Err(refused) => assert!(
            !matches!(
                refused.rejection,
                Rejection::Unsigned | Rejection::UnknownKey | Rejection::BadSignature
            ),
            "a correctly signed push refused as {refused:?}"
        ),
    }
});

fn check_accepted(
    fx: &Fixture,
    board: &PushBoard,
    header: &str,
    body: &[u8],
    push: &Push,
    now: Instant,
) {
    assert_eq!(board.accepted(), 1);
    let server = push.server.parse().expect("an accepted server parses");
    for group in &push.groups {
        let name = name::parse(group, fx.directory.zones()).expect("an accepted group parses");
        let latest = board
            .latest(&name.group_name(), server)
            .expect("an accepted push is recorded");
        assert_eq!(latest.seq, push.seq);
        assert_eq!(latest.state, push.state);
    }
    let again = board.receive(Some(header), body, &fx.directory, now, NOW_UNIX);
    assert_eq!(
        again.map_err(|r| r.rejection),
        Err(Rejection::Replayed),
        "the same push twice"
    );
}

/// Equal, but for the last bits of the TUFR and the service time
/// ([`same_tufr`]).
fn assert_same_push(a: &Push, b: &Push) {
    assert!(
        same_tufr(a.tufr_ms, b.tufr_ms),
        "tufr {:?} became {:?}",
        a.tufr_ms,
        b.tufr_ms
    );
    assert!(
        same_tufr(a.service_ms, b.service_ms),
        "service_ms {:?} became {:?}",
        a.service_ms,
        b.service_ms
    );
    assert!(
        same_tufr(a.stalled_ms, b.stalled_ms),
        "stalled_ms {:?} became {:?}",
        a.stalled_ms,
        b.stalled_ms
    );
    let strip = |p: &Push| Push {
        tufr_ms: None,
        service_ms: None,
        stalled_ms: None,
        ..p.clone()
    };
    assert_eq!(strip(a), strip(b));
}
