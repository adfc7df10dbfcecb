//! End to end: the resolver's observability features, with real binaries on
//! loopback.
//!
//! * `GET /metrics` is scraped after a known mix of traffic and parsed with
//!   a Prometheus text-format parser (`prometheus-parse`), and every counter
//!   is checked to the exact value that traffic implies.
//! * `GET /v1/status` is checked against a known scenario: three members
//!   with agents and different delays, and a known number of DNS queries.
//! * The dashboard (`GET /`) is loaded in a real headless Chromium, driven
//!   over the W3C WebDriver protocol (`chromedriver`, spoken as plain HTTP
//!   and JSON, no WebDriver crate): the page is loaded once and watched as
//!   its own polling updates it, while one member is slowed down.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`,
//! installed by `scripts/install-test-deps.sh`; the browser test fails (it
//! does not skip) when they are missing. With `ANYCAST_SAVE_SCREENSHOT=1`
//! the browser test also writes the page's screenshot to
//! `docs/dashboard.png` (the README's picture).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anycast_proto::push::{Push, PushKey, SIGNATURE_HEADER, ServerState};
use anycast_tests::bed::{
    ADN, Agents, Bed, Group, HEARTBEAT, KEY_ID, Member, PROBE_PATH, ResolverConfig, SECRET, ZONE,
};
use anycast_tests::harness::{
    ANSWER_TIMEOUT, Resolver, exchange_udp, query_message, raw_header, send_udp_from, wait_until,
    with_edns, workspace_root,
};
use anycast_tests::http;
use anycast_tests::upstream::{Upstream, example_zone};
use base64::Engine as _;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::{Value, json};

/// Set to `1` to write the dashboard's screenshot to `docs/dashboard.png`.
const SAVE_SCREENSHOT_ENV: &str = "ANYCAST_SAVE_SCREENSHOT";

// ---------------------------------------------------------------------------
// The bed (anycast_tests::bed) with this file's settings, read through /v1/status
// ---------------------------------------------------------------------------

/// The bed: web servers on `(ip, delay in ms)` (free ports), the resolver
/// with short probe and heartbeat settings (a probe timeout with room for
/// a loaded machine: no test here waits for a probe to fail), then an
/// agent per member. The answers these tests ask for bring no requests to
/// the servers, so the group takes the pushed load as it is (`load_model =
/// "pushed"`): the queue model would count them as requests on their way,
/// and move the set the tests check.
fn start_bed(servers: &[(&str, u64)]) -> Bed {
    let group = Group::bed()
        .probe_timeout(Duration::from_secs(2))
        .threshold(0.3)
        .slack(Duration::from_millis(5))
        .load_model("pushed");
    Bed::start_with_members(
        ResolverConfig::new().group(group),
        servers,
        Agents::Measuring,
    )
}

/// The members of the only group of `/v1/status`.
fn status_members(bed: &Bed) -> Vec<Value> {
    let status = bed.status();
    status["groups"][0]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {status:#}"))
        .clone()
}

/// Waits until every member has a hybrid estimate, as `/v1/status` shows.
fn wait_all_estimated(bed: &Bed, deadline: Duration) {
    let ok = wait_until(deadline, || {
        status_members(bed)
            .iter()
            .all(|m| m["estimate"]["source"] == "hybrid")
    });
    assert!(
        ok,
        "not every member estimated within {deadline:?}: {:#}",
        bed.status()
    );
}

/// Endpoints in the equivalent set (metric rt) according to `/v1/status`.
fn in_set(bed: &Bed) -> Vec<String> {
    status_members(bed)
        .iter()
        .filter(|m| m["in_set"] == true)
        .map(|m| m["endpoint"].as_str().unwrap().to_owned())
        .collect()
}

/// Asks A for `name` `n` times from 127.0.0.1; the addresses answered.
fn answers(bed: &Bed, name: &str, n: usize) -> HashMap<IpAddr, u64> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let response = send_udp_from(
            bed.dns(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &query_message(name, RecordType::A),
        );
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        for record in &response.answers {
            if let RData::A(a) = &record.data {
                *seen.entry(IpAddr::V4(a.0)).or_insert(0) += 1;
            }
        }
    }
    seen
}

fn now_unix() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// A scrape of `/metrics`, parsed.
struct Scraped {
    text: String,
    samples: Vec<Sample>,
}

impl Scraped {
    fn get(api: SocketAddr) -> Scraped {
        let response = http::get(api, "/metrics");
        assert_eq!(response.status, 200, "{}", response.text());
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/plain"),
            "content type {content_type:?}"
        );
        let text = response.text();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("/metrics does not parse ({e}):\n{text}"));
        Scraped {
            text,
            samples: scrape.samples,
        }
    }

    /// Every sample of the metric `name`.
    fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.metric == name).collect()
    }

    /// The value of a counter, gauge or untyped sample of `name` whose
    /// labels include `labels`; panics if there is not exactly one.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .all(name)
            .into_iter()
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect();
        match matching.as_slice() {
            [one] => scalar(one),
            other => panic!(
                "{} samples of {name} with {labels:?}, expected 1:\n{}",
                other.len(),
                self.text
            ),
        }
    }

    /// `name`'s samples as `labels values -> value`, keyed by the given labels.
    fn by_labels(&self, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
        self.all(name)
            .into_iter()
            .map(|s| {
                let key = keys
                    .iter()
                    .map(|k| {
                        s.labels
                            .get(k)
                            .unwrap_or_else(|| panic!("{name} without label {k}: {s:?}"))
                            .to_owned()
                    })
                    .collect();
                (key, scalar(s))
            })
            .collect()
    }
}

fn scalar(sample: &Sample) -> f64 {
    match &sample.value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
        other => panic!("{} is not a scalar: {other:?}", sample.metric),
    }
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

/// Signs and posts a push for `server`; returns the HTTP status and body.
fn push(
    api: SocketAddr,
    key: Option<&PushKey>,
    server: SocketAddr,
    seq: u64,
    tufr_ms: f64,
) -> (u16, Value) {
    let body = Push {
        server: server.to_string(),
        groups: vec![ADN.to_owned()],
        state: ServerState::Up,
        tufr_ms: Some(tufr_ms),
        seq,
        sent_at_ms: u64::try_from(now_unix().as_millis()).unwrap(),
        in_flight: None,
        workers: None,
        service_ms: None,
        stalled_ms: None,
    }
    .to_json();
    let signature = key.map(|k| k.sign(seq, now_unix().as_secs(), &body).to_string());
    let mut headers = vec![("content-type", "application/json")];
    if let Some(signature) = &signature {
        headers.push((SIGNATURE_HEADER, signature));
    }
    let response = http::post(api, "/v1/push", &headers, &body);
    (response.status, response.json())
}

/// A resolver after a known mix of traffic, and what that traffic was.
struct KnownTraffic {
    _resolver: Resolver,
    /// The group's members, in configuration order.
    members: Vec<SocketAddr>,
    upstream: Upstream,
    /// How often DNS named each member in the rr answers.
    answered: HashMap<IpAddr, u64>,
    /// DNS queries answered, whatever the response code.
    answered_queries: u64,
    /// `/metrics` after it all.
    scraped: Scraped,
}

/// Starts a resolver with one group and a fake upstream, sends it:
///
/// * 4 pushes: 2 accepted, 1 with a bad signature, 1 unsigned;
/// * 5 A and 3 TXT queries for `rr.web`;
/// * 3 NXDOMAIN: two unknown services and an unknown metric;
/// * 3 forwarded queries: two names, one of them asked twice;
/// * 1 forwarded name from a client that may not recurse (REFUSED);
/// * 1 readable header with an undecodable body (FORMERR);
///
/// and scrapes `/metrics`.
fn known_traffic() -> KnownTraffic {
    // Three members nobody serves: rr needs no measurement, and probes are
    // kept out of the picture (a first probe after an hour at the earliest,
    // and a hundred failures before a member would be taken as down), so
    // the round robin is over all three, in configuration order. The
    // pushed load is taken as it is (`load_model = "pushed"`), so a
    // member's estimate is exactly its pushed 4 ms, whatever the round
    // robin's answers have handed it.
    let members: Vec<SocketAddr> = ["127.0.51.1:8081", "127.0.51.2:8082", "127.0.51.3:8083"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    let upstream = Upstream::start(example_zone()).unwrap();
    // Clients: 127.0.53.1 may recurse, 127.0.53.2 may not.
    let allowed = IpAddr::V4(Ipv4Addr::new(127, 0, 53, 1));
    let refused = IpAddr::V4(Ipv4Addr::new(127, 0, 53, 2));
    let resolver = ResolverConfig::new()
        .upstream(upstream.addr())
        .forward(&format!("allow = [\"{allowed}/32\"]"))
        .group(
            Group::new("web")
                .probe_interval(Duration::from_secs(3600))
                .settings("fail_after = 100")
                .load_model("pushed")
                .members(members.iter().copied()),
        )
        .start();
    let dns = resolver.addr();
    let api = resolver.http_addr().unwrap();
    let ask = |from: IpAddr, name: &str, rtype: RecordType| -> Message {
        send_udp_from(dns, from, &with_edns(query_message(name, rtype), 1232, 0))
    };

    // Pushes: two accepted, one with a bad signature, one unsigned.
    let push_key = PushKey::new(KEY_ID, SECRET.as_bytes()).unwrap();
    let forged = PushKey::new(KEY_ID, b"not-the-shared-secret-at-all").unwrap();
    let seq = u64::try_from(now_unix().as_micros()).unwrap();
    let (status, body) = push(api, Some(&push_key), members[0], seq, 4.0);
    assert_eq!((status, &body["accepted"]), (200, &json!(true)), "{body}");
    let (status, body) = push(api, Some(&push_key), members[1], seq + 1, 4.0);
    assert_eq!((status, &body["accepted"]), (200, &json!(true)), "{body}");
    let (status, body) = push(api, Some(&forged), members[2], seq + 2, 4.0);
    assert_eq!((status, &body["error"]), (401, &json!("bad_signature")));
    let (status, body) = push(api, None, members[2], seq + 3, 4.0);
    assert_eq!((status, &body["error"]), (401, &json!("unsigned")));

    // 5 A for rr.web: round robin over the three members.
    let rr = format!("rr.{ADN}");
    let mut answered: HashMap<IpAddr, u64> = HashMap::new();
    for _ in 0..5 {
        let response = ask(allowed, &rr, RecordType::A);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(response.answers.len(), 1, "{response:?}");
        if let RData::A(a) = &response.answers[0].data {
            *answered.entry(IpAddr::V4(a.0)).or_insert(0) += 1;
        }
    }
    // 3 TXT for rr.web: the explained view.
    for _ in 0..3 {
        let response = ask(allowed, &rr, RecordType::TXT);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(!response.answers.is_empty(), "{response:?}");
    }
    // 2 unknown services and 1 unknown metric: NXDOMAIN.
    for name in [
        format!("mail.{ZONE}"),
        format!("rt.mail.{ZONE}"),
        format!("fastest.{ADN}"),
    ] {
        let response = ask(allowed, &name, RecordType::A);
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}"
        );
    }
    // 2 forwarded names, one asked twice (a cache hit the second time).
    for (name, rtype) in [
        ("www.example.org", RecordType::A),
        ("v6.example.org", RecordType::AAAA),
        ("www.example.org", RecordType::A),
    ] {
        let response = ask(allowed, name, rtype);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(!response.answers.is_empty(), "{name}: {response:?}");
    }
    assert_eq!(
        upstream.queries(),
        2,
        "the repeated name came from the cache"
    );
    // 1 forwarded name from a client that may not recurse: REFUSED.
    let response = ask(refused, "www.example.org", RecordType::A);
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
    // 1 readable header with an undecodable body: FORMERR.
    let mut garbage = raw_header(0x4242, 0x0100, [1, 0, 0, 0]);
    garbage.extend_from_slice(&[0xc0, 0xff, 0xee, 0x00, 0x01]);
    let response = exchange_udp(dns, allowed, &garbage, ANSWER_TIMEOUT).expect("a FORMERR");
    let response = Message::from_vec(&response).unwrap();
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(
        upstream.queries(),
        2,
        "REFUSED and FORMERR reach no upstream"
    );
    let answered_queries = 5 + 3 + 3 + 3 + 1 + 1;

    let scraped = Scraped::get(api);
    KnownTraffic {
        _resolver: resolver,
        members,
        upstream,
        answered,
        answered_queries,
        scraped,
    }
}

#[test]
fn metrics_count_known_traffic_exactly() {
    let KnownTraffic {
        members,
        upstream,
        answered,
        answered_queries,
        scraped,
        ..
    } = known_traffic();
    let text = &scraped.text;

    // Queries, by (qtype, rcode, metric): exactly these series.
    let queries = scraped.by_labels("anycast_dns_queries_total", &["qtype", "rcode", "metric"]);
    let expected: BTreeMap<Vec<String>, f64> = [
        (key(&["A", "NOERROR", "rr"]), 5.0),
        (key(&["TXT", "NOERROR", "rr"]), 3.0),
        (key(&["A", "NXDOMAIN", "none"]), 3.0),
        (key(&["A", "NOERROR", "none"]), 2.0),
        (key(&["AAAA", "NOERROR", "none"]), 1.0),
        (key(&["A", "REFUSED", "none"]), 1.0),
        (key(&["none", "FORMERR", "none"]), 1.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(queries, expected, "{text}");
    assert!(
        scraped
            .all("anycast_dns_queries_total")
            .iter()
            .all(|s| s.labels.len() == 3),
        "only qtype, rcode and metric label the query counter:\n{text}"
    );

    // Answers per member: round robin over three in configuration order
    // gives 2, 2, 1, and the counter agrees with what DNS answered.
    let per_member = scraped.by_labels("anycast_member_answers_total", &["group", "member"]);
    let expected: BTreeMap<Vec<String>, f64> = members
        .iter()
        .zip([2.0, 2.0, 1.0])
        .map(|(m, n)| (key(&[ADN, &m.to_string()]), n))
        .collect();
    assert_eq!(per_member, expected, "{text}");
    assert_eq!(per_member.values().sum::<f64>(), 5.0);
    for m in &members {
        let counted = scraped.value(
            "anycast_member_answers_total",
            &[("member", &m.to_string())],
        );
        let seen = answered.get(&m.ip()).copied().unwrap_or(0);
        assert_eq!(counted, seen as f64, "{m}: DNS answered it {seen} times");
    }

    // Pushes.
    assert_eq!(scraped.value("anycast_pushes_accepted_total", &[]), 2.0);
    let rejected = scraped.by_labels("anycast_pushes_rejected_total", &["reason"]);
    let expected: BTreeMap<Vec<String>, f64> = [
        "rate_limited",
        "too_large",
        "unsigned",
        "unknown_key",
        "bad_signature",
        "stale",
        "malformed",
        "not_member",
        "replayed",
    ]
    .into_iter()
    .map(|r| {
        let n = match r {
            "unsigned" | "bad_signature" => 1.0,
            _ => 0.0,
        };
        (key(&[r]), n)
    })
    .collect();
    assert_eq!(rejected, expected, "{text}");

    // hickory-resolver's upstream exchanges: the two misses, both answered.
    // (Its cache counters are checked by the test below.)
    let upstream_answers = scraped.by_labels(
        "hickory_resolver_name_server_query_responses_total",
        &["status"],
    );
    assert_eq!(
        upstream_answers,
        BTreeMap::from([(key(&["success"]), upstream.queries() as f64)]),
        "{text}"
    );

    // Answer latency: one observation per answered query.
    let histogram = scraped.all("anycast_dns_answer_duration_seconds");
    let [histogram] = histogram.as_slice() else {
        panic!("one anycast_dns_answer_duration_seconds histogram:\n{text}");
    };
    let Metric::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {histogram:?}");
    };
    let infinite = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("a +Inf bucket");
    assert_eq!(infinite.count, answered_queries as f64, "{text}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
        "buckets are cumulative: {buckets:?}"
    );
    assert_eq!(
        scraped.value("anycast_dns_answer_duration_seconds_count", &[]),
        answered_queries as f64
    );
    let sum = scraped.value("anycast_dns_answer_duration_seconds_sum", &[]);
    assert!(
        sum > 0.0 && sum < answered_queries as f64 * 5.0,
        "sum {sum}"
    );

    // Per-member gauges: the two pushed members are estimated at their
    // pushed 4 ms (no probe yet) and form the rt set; the third is
    // unmeasured, out of the set, and has no estimate.
    for (m, pushed) in members.iter().zip([true, true, false]) {
        let m = m.to_string();
        let labels = [("group", ADN), ("member", m.as_str())];
        assert_eq!(scraped.value("anycast_member_healthy", &labels), 1.0, "{m}");
        let in_set = scraped.value("anycast_member_in_set", &labels);
        assert_eq!(in_set, if pushed { 1.0 } else { 0.0 }, "{m}\n{text}");
        for gauge in [
            "anycast_member_pushed_tufr_seconds",
            "anycast_member_estimate_seconds",
        ] {
            let found: Vec<f64> = scraped
                .all(gauge)
                .into_iter()
                .filter(|s| s.labels.get("member") == Some(m.as_str()))
                .map(scalar)
                .collect();
            let expected = if pushed { vec![0.004] } else { vec![] };
            assert_eq!(found, expected, "{gauge} of {m}\n{text}");
        }
    }

    // Conventions: counters end in _total; durations and times are in
    // seconds (never milliseconds); names are ours or hickory's.
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            types.insert(parts.next().unwrap(), parts.next().unwrap());
        }
    }
    assert!(types.len() >= 10, "{text}");
    for (name, kind) in &types {
        assert!(
            name.starts_with("anycast_") || name.starts_with("hickory_resolver_"),
            "{name}: not an anycast_ or hickory_resolver_ metric"
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}: snake case"
        );
        if *kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        } else {
            assert!(
                !name.ends_with("_total"),
                "{kind} {name} must not end in _total"
            );
        }
        let is_time = ["duration", "tufr", "_rt_", "estimate", "latency", "time"]
            .iter()
            .any(|t| name.contains(t));
        if is_time {
            assert!(name.ends_with("_seconds"), "{name} is a time: in _seconds");
        }
        assert!(
            !name.contains("_ms") && !name.contains("millis"),
            "{name}: base units (seconds), not milliseconds"
        );
    }
    for name in [
        "anycast_dns_queries_total",
        "anycast_member_answers_total",
        "anycast_pushes_accepted_total",
        "anycast_pushes_rejected_total",
        "hickory_resolver_name_server_query_responses_total",
    ] {
        assert_eq!(types.get(name), Some(&"counter"), "{name}\n{text}");
    }
    assert_eq!(
        types.get("anycast_dns_answer_duration_seconds"),
        Some(&"histogram")
    );
    for name in [
        "anycast_member_pushed_tufr_seconds",
        "anycast_member_estimate_seconds",
        "anycast_member_healthy",
        "anycast_member_in_set",
    ] {
        assert_eq!(types.get(name), Some(&"gauge"), "{name}\n{text}");
    }

    // No label carries a client's address: label names are the bounded
    // ones, and no value names a client (every DNS client was 127.0.53.x).
    let member_names: Vec<String> = members.iter().map(ToString::to_string).collect();
    for sample in &scraped.samples {
        for (name, value) in sample.labels.iter() {
            assert!(
                [
                    "qtype", "rcode", "metric", "group", "member", "reason", "result", "protocol",
                    "status", "quantile", "le",
                ]
                .contains(&name.as_str()),
                "unexpected label {name}={value:?} on {}",
                sample.metric
            );
            assert!(
                !value.contains("127.0.53."),
                "a client address in {}{{{name}={value:?}}}",
                sample.metric
            );
            if name == "member" {
                assert!(member_names.contains(value), "{value} is not a member");
            }
        }
    }
}

#[test]
fn metrics_count_forwarding_cache_hits_and_misses() {
    let KnownTraffic {
        upstream, scraped, ..
    } = known_traffic();
    let text = &scraped.text;
    // Two names looked up (misses), one of them again (a hit); the upstream
    // saw exactly the misses.
    let hits = scraped.by_labels("hickory_resolver_cache_hit_total", &[]);
    let misses = scraped.by_labels("hickory_resolver_cache_miss_total", &[]);
    assert_eq!(
        (hits.values().sum::<f64>(), misses.values().sum::<f64>()),
        (1.0, 2.0),
        "hickory_resolver_cache_hit_total and _miss_total:\n{text}"
    );
    assert_eq!(misses.values().sum::<f64>(), upstream.queries() as f64);
    for name in [
        "hickory_resolver_cache_hit_total",
        "hickory_resolver_cache_miss_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} counter")),
            "{name}\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------
// /v1/status
// ---------------------------------------------------------------------------

/// The `N` of a `why` string's `... N <= L ms` or `... N > L ms`, and `L`.
fn why_numbers(why: &str) -> (f64, f64) {
    let words: Vec<&str> = why.split_whitespace().collect();
    match words.as_slice() {
        [_, value, _, limit, "ms"] => (value.parse().unwrap(), limit.parse().unwrap()),
        _ => panic!("unexpected why {why:?}"),
    }
}

#[test]
fn status_json_for_a_known_scenario() {
    // 5, 20 and 60 ms servers: only the first is within max(30 %, 5 ms).
    let delays = [5.0, 20.0, 60.0];
    let bed = start_bed(&[("127.0.52.1", 5), ("127.0.52.2", 20), ("127.0.52.3", 60)]);
    wait_all_estimated(&bed, Duration::from_secs(10));
    let fast = bed.members[0].endpoint();
    assert!(
        wait_until(Duration::from_secs(5), || in_set(&bed) == [fast.clone()]),
        "only the 5 ms member in the set: {:#}",
        bed.status()
    );
    // The known traffic below counts on every member being available (rr
    // goes round the available ones): on a loaded machine one may be out
    // for a moment (a slow probe, a late push) when the set settles.
    assert!(
        wait_until(Duration::from_secs(10), || status_members(&bed)
            .iter()
            .all(|m| m["unavailable"].is_null())),
        "every member available: {:#}",
        bed.status()
    );

    // Known traffic: 10 rt queries (all to the fast member), 6 rr queries
    // (two for each member, in turn).
    let rt = answers(&bed, &format!("rt.{ADN}"), 10);
    assert_eq!(rt, HashMap::from([(bed.members[0].web.addr().ip(), 10)]));
    let rr = answers(&bed, &format!("rr.{ADN}"), 6);
    assert!(rr.values().all(|n| *n == 2) && rr.len() == 3, "{rr:?}");
    let expected_answers = [12, 2, 2];

    let status = bed.status();
    let groups = status["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{status:#}");
    let group = &groups[0];
    assert_eq!(group["name"], ADN);
    assert_eq!(group["paper_name"], format!("web%{ZONE}"));
    assert_eq!(group["metric"], "rt");
    assert_eq!(group["answer"], "one");
    let basis = group["basis"].as_str().unwrap();
    assert!(
        basis.starts_with("estimated response time (hybrid push/probe): best "),
        "{basis}"
    );
    let members = group["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{status:#}");

    for ((m, view), (delay, answers)) in bed
        .members
        .iter()
        .zip(members)
        .zip(delays.into_iter().zip(expected_answers))
    {
        let endpoint = m.endpoint();
        let context = format!("{endpoint} ({delay} ms): {view:#}");
        assert_eq!(view["endpoint"], endpoint.as_str(), "{context}");
        assert_eq!(
            view["probe_url"],
            format!("http://{endpoint}/{PROBE_PATH}"),
            "{context}"
        );
        assert_eq!(view["answers"], answers, "{context}");
        assert_eq!(view["health"], "up", "{context}");
        assert_eq!(view["unavailable"], Value::Null, "{context}");

        let push = &view["push"];
        assert_eq!(push["state"], "up", "{context}");
        let tufr = push["tufr_ms"].as_f64().expect("a pushed TUFR");
        assert!(
            tufr >= delay * 0.95 && tufr <= delay * 2.0 + 40.0,
            "pushed TUFR {tufr} ms for a {delay} ms server: {context}"
        );
        assert!(push["seq"].as_u64().is_some_and(|s| s > 0), "{context}");
        let push_age = push["age_s"].as_f64().unwrap();
        assert!(
            (0.0..=3.0 * HEARTBEAT.as_secs_f64()).contains(&push_age),
            "{context}"
        );

        let probe = &view["probe"];
        let rt = probe["rt_ms"].as_f64().expect("a probe RT");
        assert!(
            rt >= delay * 0.95 && rt <= delay * 2.0 + 100.0,
            "probe RT {rt} ms for a {delay} ms server: {context}"
        );
        assert!(probe["tufr_ms"].as_f64().is_some(), "{context}");
        assert!(probe["age_s"].as_f64().unwrap() < 5.0, "{context}");

        let estimate = &view["estimate"];
        assert_eq!(estimate["source"], "hybrid", "{context}");
        let est = estimate["rt_ms"].as_f64().unwrap();
        assert!(
            est >= delay * 0.8 && est <= delay * 2.0 + 100.0,
            "estimate {est} ms for a {delay} ms server: {context}"
        );
        assert!(
            estimate["sf"].as_f64().is_some_and(|sf| sf > 0.0),
            "{context}"
        );

        // In the set only the fast one, and why says so with the numbers.
        let why = view["why"].as_str().unwrap();
        let (value, limit) = why_numbers(why);
        assert!((value - est).abs() < 0.051, "{why} vs estimate {est}");
        if endpoint == fast {
            assert_eq!(view["in_set"], true, "{context}");
            assert!(why.starts_with("in: ") && why.contains(" <= "), "{context}");
            assert!(value <= limit, "{context}");
        } else {
            assert_eq!(view["in_set"], false, "{context}");
            assert!(why.starts_with("out: ") && why.contains(" > "), "{context}");
            assert!(value > limit, "{context}");
        }
    }

    // /v1/status is the same view as the group's own endpoint.
    let single = http::get_json(bed.http(), &format!("/v1/groups/{ADN}"));
    let endpoints = |members: &Value| -> Vec<Value> {
        members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| json!([m["endpoint"], m["in_set"], m["answers"]]))
            .collect()
    };
    assert_eq!(endpoints(&single["members"]), endpoints(&group["members"]));
}

// ---------------------------------------------------------------------------
// The dashboard in headless Chromium
// ---------------------------------------------------------------------------

/// Chromium's flags: headless, and quiet on the network (without the
/// background-networking flags it tries to reach Google's services).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

/// The page's size in the browser (and the screenshot's).
const VIEWPORT: (i64, i64) = (1200, 700);

/// How long a WebDriver command may take (a new session starts Chromium).
const WEBDRIVER_TIMEOUT: Duration = Duration::from_secs(30);

/// `name`'s path on `PATH`, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn missing(program: &str, package: &str) -> ! {
    panic!(
        "{program} is not installed (Debian package {package}): run scripts/install-test-deps.sh \
         as root, which installs chromium and chromium-driver"
    )
}

/// A headless Chromium driven by `chromedriver` over WebDriver (W3C), one
/// session; the browser and the driver are ended when dropped.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    dir: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let chromium = on_path("chromium").unwrap_or_else(|| missing("chromium", "chromium"));
        let chromedriver =
            on_path("chromedriver").unwrap_or_else(|| missing("chromedriver", "chromium-driver"));
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).unwrap();
        let mut driver = Command::new(&chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        // "ChromeDriver was started successfully on port N."
        let port = {
            let mut port = None;
            let started = wait_until(Duration::from_secs(10), || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                port = text
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|n| n.trim().parse::<u16>().ok());
                port.is_some()
            });
            if !started {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!(
                    "chromedriver did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            port.unwrap()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": chromium, "args": args },
                }
            }
        });
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            dir,
        };
        let created = browser.command("POST", "/session", Some(&capabilities));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    /// Sends one WebDriver command; returns its `value`, panics on an error.
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(Value::to_string).unwrap_or_default();
        let (status, response) = webdriver_request(self.addr, method, path, &body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} failed: {e}"));
        let value: Value = serde_json::from_slice(&response).unwrap_or_else(|e| {
            panic!(
                "WebDriver {method} {path}: status {status}, not JSON ({e}): {}",
                String::from_utf8_lossy(&response)
            )
        });
        assert_eq!(status, 200, "WebDriver {method} {path}: {value:#}");
        value["value"].clone()
    }

    fn session_path(&self, what: &str) -> String {
        format!("/session/{}/{what}", self.session)
    }

    fn goto(&self, url: &str) {
        self.command(
            "POST",
            &self.session_path("url"),
            Some(&json!({ "url": url })),
        );
    }

    /// Runs `script` (a function body) in the page and returns its result.
    fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            &self.session_path("execute/sync"),
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// Resizes the window so that the page's viewport is `width` x `height`
    /// (the window's size includes whatever the browser draws around it).
    fn set_viewport(&self, width: i64, height: i64) {
        let inner = self.eval("return [window.innerWidth, window.innerHeight];");
        let rect = self.command("GET", &self.session_path("window/rect"), None);
        let outer = |key: &str, inner: &Value, want: i64| {
            rect[key].as_i64().unwrap() + want - inner.as_i64().unwrap()
        };
        let size = json!({
            "width": outer("width", &inner[0], width),
            "height": outer("height", &inner[1], height),
        });
        self.command("POST", &self.session_path("window/rect"), Some(&size));
        let inner = self.eval("return [window.innerWidth, window.innerHeight];");
        assert_eq!(inner, json!([width, height]), "the viewport after resizing");
    }

    /// A PNG of the viewport.
    fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", &self.session_path("screenshot"), None);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 text"))
            .expect("a base64 screenshot")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session quits Chromium; then the driver, ours by pid.
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = webdriver_request(self.addr, "DELETE", &path, "");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A browser whose session never came up (or did not quit) outlives
        // its driver: find it by its own profile directory, ours alone.
        let profile = self.dir.path().join("profile");
        let mut signal = "TERM";
        let gone = wait_until(Duration::from_secs(3), || {
            let left = processes_naming(&profile);
            for pid in &left {
                let _ = Command::new("kill")
                    .args([format!("-{signal}"), pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            signal = "KILL";
            left.is_empty()
        });
        if !gone {
            eprintln!(
                "browser processes outlived their driver: {:?}",
                processes_naming(&profile)
            );
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("chromedriver.log"));
            eprintln!("--- chromedriver log:\n{}", log.unwrap_or_default());
        }
    }
}

/// The processes whose command line names `path`.
fn processes_naming(path: &Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
        })
        .collect()
}

/// One HTTP/1.1 exchange with chromedriver, with a timeout long enough for
/// a browser to start: status and body. chromedriver keeps the connection
/// open whatever the request says, so the body is read to its length.
fn webdriver_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, WEBDRIVER_TIMEOUT)?;
    stream.set_read_timeout(Some(WEBDRIVER_TIMEOUT))?;
    stream.set_write_timeout(Some(WEBDRIVER_TIMEOUT))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if let Some(response) = complete_response(&raw) {
            return Ok(response);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("incomplete response: {:?}", String::from_utf8_lossy(&raw)),
            ));
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// The status and body of `raw` once it holds a whole response.
fn complete_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let rest = &raw[end + 4..];
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Some((status, dechunk(rest)?));
    }
    let length: usize = header("content-length")?.parse().ok()?;
    Some((status, rest.get(..length)?.to_vec()))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A member row of the dashboard as the page shows it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    endpoint: String,
    in_set_attr: String,
    class: String,
    shown_endpoint: String,
    badge: String,
    why: String,
    visible: bool,
}

/// The dashboard's member rows, read from the live page.
fn rows(browser: &Browser) -> Vec<Row> {
    let value = browser.eval(
        r#"return Array.from(document.querySelectorAll("tr.member")).map(r => {
             const cell = r.querySelector("td.endpoint");
             const box = cell ? cell.getBoundingClientRect() : null;
             return {
               endpoint: r.dataset.endpoint || "",
               in_set: r.dataset.inSet || "",
               class: r.className,
               shown: cell ? cell.innerText.trim() : "",
               badge: (r.querySelector(".badge") || {}).innerText || "",
               why: (r.querySelector("td.why") || {}).innerText || "",
               visible: !!box && box.width > 0 && box.height > 0
                 && box.bottom <= window.innerHeight && box.right <= window.innerWidth,
             };
           });"#,
    );
    value
        .as_array()
        .unwrap_or_else(|| panic!("rows: {value}"))
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or_default().trim().to_owned();
            Row {
                endpoint: text("endpoint"),
                in_set_attr: text("in_set"),
                class: text("class"),
                shown_endpoint: text("shown"),
                badge: text("badge"),
                why: text("why"),
                visible: r["visible"] == true,
            }
        })
        .collect()
}

fn row<'r>(rows: &'r [Row], endpoint: &str) -> Option<&'r Row> {
    rows.iter().find(|r| r.endpoint == endpoint)
}

/// Whether `row` is shown as in the set: the attribute, the class and the badge.
fn shown_in_set(row: &Row) -> bool {
    row.in_set_attr == "true"
        && row.class.split_whitespace().any(|c| c == "in")
        && row.badge == "in set"
}

/// Whether `row` is shown as out of the set.
fn shown_out(row: &Row) -> bool {
    row.in_set_attr == "false"
        && row.class.split_whitespace().any(|c| c == "out")
        && row.badge == "out"
        && row.why.starts_with("out:")
}

#[test]
fn dashboard_shows_every_member_and_marks_a_slowed_one_out() {
    // 10 and 12 ms are equivalent (limit max(1.3 x 10, 10 + 5) = 15 ms);
    // 60 ms is not.
    let bed = start_bed(&[("127.0.54.1", 10), ("127.0.54.2", 12), ("127.0.54.3", 60)]);
    let browser = Browser::start();
    wait_all_estimated(&bed, Duration::from_secs(10));
    let endpoints: Vec<String> = bed.members.iter().map(Member::endpoint).collect();
    let (fast, slowed, slow) = (&endpoints[0], &endpoints[1], &endpoints[2]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let mut set = in_set(&bed);
            set.sort();
            set == [fast.clone(), slowed.clone()]
        }),
        "the 10 and 12 ms members form the set: {:#}",
        bed.status()
    );
    // Some answers, so the answers column has something to show.
    answers(&bed, &format!("rt.{ADN}"), 20);

    browser.goto(&format!("http://{}/", bed.http()));
    browser.set_viewport(VIEWPORT.0, VIEWPORT.1);
    let title = browser.eval("return document.title;");
    assert_eq!(title, "anycast resolver");

    // Every member is shown, with its endpoint as text, and the two fast
    // ones are marked in the set, the slow one out.
    let mut last = Vec::new();
    let shown = wait_until(Duration::from_secs(5), || {
        last = rows(&browser);
        last.len() == 3
            && endpoints
                .iter()
                .all(|e| row(&last, e).is_some_and(|r| &r.shown_endpoint == e && r.visible))
            && row(&last, fast).is_some_and(shown_in_set)
            && row(&last, slowed).is_some_and(shown_in_set)
            && row(&last, slow).is_some_and(shown_out)
    });
    assert!(
        shown,
        "the page shows {last:#?}; the API says {:#}",
        bed.status()
    );
    let text = browser.eval("return document.body.innerText;");
    let text = text.as_str().unwrap();
    for e in &endpoints {
        assert!(
            text.contains(e.as_str()),
            "{e} not in the page's text:\n{text}"
        );
    }
    assert!(text.contains(ADN), "{text}");
    let error = browser.eval(r#"return document.getElementById("error").innerText;"#);
    assert_eq!(error, "", "the page reports an error");

    // Slow one of the fast members down: the page, polling by itself,
    // marks it out. Bound: it leaves the set within two heartbeats (see
    // estimation.rs), and the page polls every second.
    let changed = Instant::now();
    bed.members[1].web.set_delay(Duration::from_millis(200));
    let marked = wait_until(2 * HEARTBEAT + Duration::from_secs(3), || {
        last = rows(&browser);
        row(&last, slowed).is_some_and(shown_out)
    });
    let took = changed.elapsed();
    assert!(
        marked,
        "after {took:?} the page shows {last:#?}; the API says {:#}",
        bed.status()
    );
    eprintln!("figure: the dashboard marked the slowed member out after {took:?}");
    assert!(row(&last, fast).is_some_and(shown_in_set), "{last:#?}");
    assert!(row(&last, slow).is_some_and(shown_out), "{last:#?}");
    assert_eq!(last.len(), 3, "{last:#?}");

    // The picture for the README: only on request, so a test run leaves
    // the tree clean. Let the charts gather some history first.
    let save = std::env::var(SAVE_SCREENSHOT_ENV).is_ok_and(|v| v == "1");
    if save {
        for _ in 0..6 {
            answers(&bed, &format!("rt.{ADN}"), 10);
            std::thread::sleep(Duration::from_secs(10));
        }
    }
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(
        (i64::from(width), i64::from(height)),
        VIEWPORT,
        "the screenshot's size"
    );
    if save {
        let path = workspace_root().join("docs").join("dashboard.png");
        std::fs::write(&path, &png).unwrap();
        eprintln!(
            "wrote {} ({width}x{height}, {} bytes)",
            path.display(),
            png.len()
        );
    }
}
