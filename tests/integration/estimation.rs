//! End to end: hybrid push/probe estimation, the equivalent-server set and
//! health, with real binaries on loopback.
//!
//! Three test web servers with different delays, each with its own
//! `anycast-agent` writing the probe file into the server's docroot and
//! pushing to one `anycast-resolver`, which probes every member. Timing
//! settings are shorter than the defaults so the suite is quick; each bound
//! below is derived from them where it is asserted.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anycast_tests::bed::{
    ADN, Agents, Bed, Group, HEARTBEAT, Member, PROBE_INTERVAL, PROBE_PATH, ResolverConfig,
};
use anycast_tests::harness::{query_udp, tally, tally_burst, wait_until};
use anycast_tests::http;
use anycast_tests::web::WebServer;
use hickory_proto::rr::RecordType;
use serde_json::Value;

/// The bed's resolver config, with the estimation settings the bounds below
/// are derived from.
fn config() -> ResolverConfig {
    ResolverConfig::new().group(
        Group::bed()
            .probe_timeout(Duration::from_millis(500))
            .threshold(0.3)
            .slack(Duration::from_millis(5)),
    )
}

/// The bed: web servers on `(ip, delay in ms)`, the resolver, then an
/// agent per member.
fn start_bed(servers: &[(&str, u64)]) -> Bed {
    Bed::start_with_members(config(), servers, Agents::Measuring)
}

/// Waits until every member has a hybrid estimate.
fn wait_all_estimated(bed: &Bed, deadline: Duration) {
    let ok = wait_until(deadline, || {
        let view = bed.view();
        view["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["estimate"]["source"] == "hybrid")
    });
    assert!(
        ok,
        "not every member estimated within {deadline:?}: {:#}",
        bed.view()
    );
}

/// Addresses answered for `name` over `n` queries, each asked once the
/// answers before it have left every member ([`http::handouts_left`]):
/// the choice the estimates make at rest. (A member whose agent does
/// not tell its workers counts as serving one request at a time, so a
/// burst of answers would rightly spill over to the next members.)
fn answers_at_rest(bed: &Bed, name: &str, n: usize) -> HashMap<IpAddr, usize> {
    let mut answers = HashMap::new();
    for _ in 0..n {
        assert!(
            wait_until(Duration::from_secs(5), || http::handouts_left(&bed.view())),
            "the answers handed out never left: {:#}",
            bed.view()
        );
        for (ip, count) in tally(bed.dns(), name, 1) {
            *answers.entry(ip).or_insert(0) += count;
        }
    }
    answers
}

fn in_set(view: &Value) -> HashSet<String> {
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["in_set"] == true)
        .map(|m| m["endpoint"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn rt_answers_only_from_the_equivalent_set() {
    // 5, 20 and 60 ms servers: only the first is within max(30 %, 5 ms).
    // Steady agents: a real agent's timing on a busy machine can push a
    // spike that puts the 20 ms member in the set for a moment, and then
    // the set itself has changed (`two_close_members_share_the_answers`
    // and the tests below run real agents).
    let bed = Bed::start_with_members(
        config(),
        &[("127.0.11.1", 5), ("127.0.11.2", 20), ("127.0.11.3", 60)],
        Agents::Steady,
    );
    wait_all_estimated(&bed, Duration::from_secs(10));
    let set = in_set(&bed.view());
    assert_eq!(
        set,
        HashSet::from([bed.members[0].endpoint()]),
        "{:#}",
        bed.view()
    );
    let answers = answers_at_rest(&bed, &format!("rt.{ADN}"), 50);
    assert_eq!(
        answers.keys().copied().collect::<HashSet<_>>(),
        HashSet::from([bed.members[0].web.addr().ip()]),
        "rt answers only from the set: {answers:?}"
    );
    // The TXT view says the same, with the reason.
    let txt = query_udp(bed.resolver.addr(), &format!("rt.{ADN}"), RecordType::TXT);
    assert!(txt.metadata.truncation || !txt.answers.is_empty());
}

#[test]
fn two_close_members_share_the_answers() {
    // 10 and 12 ms are equivalent: while both are in the set, the answers
    // spread over both (no herding on the single best). On a loaded machine
    // a probe can spike past the set's limit for a moment, so each attempt
    // first waits until both are in the set, and a few attempts are allowed.
    let bed = start_bed(&[("127.0.12.1", 10), ("127.0.12.2", 12)]);
    wait_all_estimated(&bed, Duration::from_secs(10));
    let both: HashSet<String> = bed.members.iter().map(Member::endpoint).collect();
    let mut last = HashMap::new();
    for _ in 0..5 {
        assert!(
            wait_until(Duration::from_secs(10), || in_set(&bed.view()) == both),
            "both never in the set together: {:#}",
            bed.view()
        );
        last = tally(bed.dns(), &format!("rt.{ADN}"), 100);
        if last.len() == 2 && last.values().all(|n| *n >= 20) {
            return;
        }
    }
    panic!("answers herded on one member: {last:?} {:#}", bed.view());
}

/// Issue 17: with an answer per request, every client went to the one best
/// member until a push said it was loaded. The queue model counts each
/// answer as a request on its way: once the best member's workers are
/// taken by what the resolver handed out, the next answers go to the next
/// best member, before any push.
///
/// A answers in 100 ms and B in 300, two workers each, both idle (the
/// agents' own measurements at most one request in flight): A alone is in
/// the set (300 > 1.3 x 100), so a resolver that waits for pushes answers
/// every query with A (`rt_answers_only_from_the_equivalent_set`). Here the
/// first answers naming A take its workers and each further one adds 50 ms
/// of waiting (100 ms / 2 workers), and each naming B adds 150 ms to B. The
/// pick within the set is random, so the counts are bounded, not fixed: at
/// worst (A idle, B with one request in flight, A picked whenever it is in
/// the set), A leaves the set (above 1.3 x B's 300 ms) at its 7th answer,
/// so B gets one by the 8th; then A leaves again above 1.3 x 450 ms at its
/// 11th, so B has two by the 13th. Of twenty answers in a row, A gets at
/// least two and B at least two. (The queries are sent at once, so they
/// are answered within a few milliseconds however busy the machine; a
/// handout stays outstanding for about A's 100 ms, so what is handed out is
/// still counted at the last.)
#[test]
fn answers_spill_over_once_the_best_members_workers_are_taken() {
    let bed = Bed::start_with_members(
        config(),
        &[("127.0.16.1", 100), ("127.0.16.2", 300)],
        Agents::ReadingStatus { workers: 2 },
    );
    wait_all_estimated(&bed, Duration::from_secs(10));
    let a = bed.members[0].endpoint();
    let queue_known = |m: &Value| m["push"]["in_flight"].as_u64().is_some_and(|n| n <= 1);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let view = bed.view();
            in_set(&view) == HashSet::from([a.clone()])
                && view["members"].as_array().unwrap().iter().all(queue_known)
        }),
        "A alone in the set, both queues pushed: {:#}",
        bed.view()
    );
    let answers = tally_burst(bed.resolver.addr(), &format!("rt.{ADN}"), 20);
    let (a_ip, b_ip) = (
        bed.members[0].web.addr().ip(),
        bed.members[1].web.addr().ip(),
    );
    let (to_a, to_b) = (
        answers.get(&a_ip).copied().unwrap_or(0),
        answers.get(&b_ip).copied().unwrap_or(0),
    );
    println!("figure: of 20 answers in a row, {to_a} named A and {to_b} B");
    assert!(to_a >= 2, "A, the best, is answered first: {answers:?}");
    assert!(
        to_b >= 2,
        "answers spill over to B once A's workers are taken: {answers:?} {:#}",
        bed.view()
    );
}

#[test]
fn the_best_server_slowed_leaves_within_two_push_intervals() {
    let bed = start_bed(&[("127.0.13.1", 5), ("127.0.13.2", 30), ("127.0.13.3", 60)]);
    wait_all_estimated(&bed, Duration::from_secs(10));
    let best = bed.members[0].endpoint();
    assert!(in_set(&bed.view()).contains(&best));

    // Bound: the agent's estimate crosses the others' within about 3 tau
    // (95 % of the step: 0.9 s with tau 300 ms, measuring every 50 ms); the
    // change is significant, so it is pushed at once or at most
    // min_interval (200 ms) later, and the resolver's estimate follows that
    // push without waiting for a probe. Two push intervals of the heartbeat
    // (2 x 1 s = 2 s) cover it with room for scheduling.
    let bound = 2 * HEARTBEAT;
    let changed = Instant::now();
    bed.members[0].web.set_delay(Duration::from_millis(200));
    let left = wait_until(bound, || !in_set(&bed.view()).contains(&best));
    let took = changed.elapsed();
    assert!(left, "still in the set after {took:?}: {:#}", bed.view());
    eprintln!("figure: load change to leaving the set took {took:?}");
    // And the answers moved: rt no longer names the slowed server.
    let answers = answers_at_rest(&bed, &format!("rt.{ADN}"), 30);
    assert!(
        !answers.contains_key(&bed.members[0].web.addr().ip()),
        "{answers:?}"
    );
}

#[test]
fn a_killed_member_leaves_within_the_health_bound_and_returns() {
    let mut bed = start_bed(&[("127.0.14.1", 10), ("127.0.14.2", 11)]);
    wait_all_estimated(&bed, Duration::from_secs(10));
    let victim = bed.members[1].endpoint();
    let addr = bed.members[1].web.addr();
    // 10 and 11 ms are equivalent, but a probe that a busy machine delays
    // can put one out of the set for a moment: wait for it to be in.
    assert!(
        wait_until(Duration::from_secs(10), || in_set(&bed.view())
            .contains(&victim)),
        "never in the set: {:#}",
        bed.view()
    );

    // Bound: connections are refused at once, so two failed probes take at
    // most one probe interval (300 ms + 10 % jitter) plus the 250 ms retry;
    // the agent also reports it down. 3 s is the target with defaults.
    let killed = Instant::now();
    let member = bed.members.remove(1);
    let docroot = member.docroot;
    let agent = member.agent;
    drop(member.web);
    let left = wait_until(Duration::from_secs(3), || {
        !in_set(&bed.view()).contains(&victim)
    });
    let took = killed.elapsed();
    assert!(left, "still in the set after {took:?}: {:#}", bed.view());
    eprintln!("figure: killed member left the set after {took:?}");
    let answers = tally(bed.dns(), &format!("rt.{ADN}"), 30);
    assert!(!answers.contains_key(&addr.ip()), "{answers:?}");

    // Restart on the same address: two good probes (hysteresis) and the
    // agent's next push bring it back.
    let web = WebServer::with_docroot(addr, docroot.path()).unwrap();
    web.set_delay(Duration::from_millis(11));
    let back = wait_until(Duration::from_secs(5), || {
        in_set(&bed.view()).contains(&victim)
    });
    assert!(back, "not back: {:#}", bed.view());
    drop(agent);
}

#[test]
fn a_lying_agent_does_not_capture_the_traffic_once_probed() {
    // An honest 20 ms server, and a 40 ms server whose "agent" claims 4 ms
    // in every push and probe file. Both agents are steady, so that only
    // the probes move the estimates.
    let mut bed = Bed::start_with_members(
        config(),
        &[("127.0.15.1", 20), ("127.0.15.2", 40)],
        Agents::None,
    );
    let http_addr = bed.http();
    bed.members[0].start_steady_agent(http_addr, 20.0);
    bed.members[1].start_steady_agent(http_addr, 4.0);
    let liar_member = &bed.members[1];

    // Bound: once the liar has been probed twice (two probe intervals,
    // 600 ms, plus jitter), its SF is RT / 4 ms and its estimate RT_est =
    // SF x 4 ms is its true response time, about 40 ms + path: out of the
    // set (limit max(1.3 x ~21, ~26) ms). From then on it gets no rt answer.
    let liar_endpoint = liar_member.endpoint();
    let calibrated = wait_until(Duration::from_secs(5), || {
        let m = bed.member_view(&liar_endpoint);
        m["probe"].is_object() && m["in_set"] == false && m["estimate"]["source"] == "hybrid"
    });
    assert!(calibrated, "{:#}", bed.view());
    let m = bed.member_view(&liar_endpoint);
    let est = m["estimate"]["rt_ms"].as_f64().unwrap();
    assert!(
        est >= 30.0,
        "the lie is absorbed: estimate {est} ms for a 40 ms server: {m:#}"
    );
    // The lies pushed since still predict the true time: the honest
    // member stays the only one in the set at rest.
    let answers = answers_at_rest(&bed, &format!("rt.{ADN}"), 50);
    assert!(
        !answers.contains_key(&liar_member.web.addr().ip()),
        "the liar captured answers: {answers:?} {:#}",
        bed.view()
    );
}

/// Figures for the closing note (not assertions): median relative error of
/// RT_est against response times measured the way clients see them, and
/// probe requests per member per minute.
///
/// `cargo test -p anycast-tests --test integration -- --ignored --nocapture estimation::figures`
#[test]
#[ignore = "figures, not a test: run by hand"]
fn figures_estimation_error_and_probe_rate() {
    let bed = start_bed(&[("127.0.16.1", 5), ("127.0.16.2", 20), ("127.0.16.3", 60)]);
    wait_all_estimated(&bed, Duration::from_secs(10));
    let mut errors = Vec::new();
    let start = Instant::now();
    let probes_before: Vec<u64> = bed.members.iter().map(|m| m.web.file_requests()).collect();
    let mut own_fetches = 0u64;
    while start.elapsed() < Duration::from_secs(20) {
        for m in &bed.members {
            let t0 = Instant::now();
            let response = http::get(m.web.addr(), &format!("/{PROBE_PATH}"));
            let measured = t0.elapsed().as_secs_f64() * 1000.0;
            own_fetches += 1;
            assert_eq!(response.status, 200);
            let est = bed.member_view(&m.endpoint())["estimate"]["rt_ms"]
                .as_f64()
                .unwrap();
            errors.push((est - measured).abs() / measured);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    eprintln!(
        "figure: median relative error of RT_est: {:.1} % over {} samples",
        median * 100.0,
        errors.len()
    );
    let minutes = start.elapsed().as_secs_f64() / 60.0;
    let own_per_member = own_fetches / bed.members.len() as u64;
    for (m, before) in bed.members.iter().zip(probes_before) {
        let probes = m.web.file_requests() - before - own_per_member;
        eprintln!(
            "figure: {} received {:.1} probe requests per minute from the resolver (probe_interval {:?})",
            m.endpoint(),
            probes as f64 / minutes,
            PROBE_INTERVAL
        );
    }
}
