//! Prometheus metrics, through the `metrics` facade (so hickory-resolver's
//! own cache counters, `hickory_resolver_cache_hit_total` and
//! `hickory_resolver_cache_miss_total`, come out beside ours).
//!
//! Counters and histograms are recorded where things happen (DNS answers,
//! probes, forwarding). Per-member gauges are set from the push and probe
//! boards when `/metrics` is scraped, so they are never stale; gauges of
//! members that left stop being updated and are dropped after
//! [`GAUGE_IDLE`]. Labels are bounded: query type (a fixed list, else
//! `other`), response code, metric, group and member (configuration sizes),
//! rejection reason; never the client.

use std::sync::OnceLock;
use std::time::Duration;

use anycast_proto::Metric;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use metrics::{
    Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Gauges not set for this long (members that left) are dropped.
pub const GAUGE_IDLE: Duration = Duration::from_secs(120);

/// Histogram buckets for DNS answer latency, seconds.
const ANSWER_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// Histogram buckets for probe durations, seconds.
const PROBE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How often histogram samples are folded into their buckets, scraped or not.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every
/// [`UPKEEP_INTERVAL`] until `shutdown`. The recorder is built with
/// `build_recorder`, which starts no upkeep of its own: it keeps every
/// sample until the next scrape, so a resolver nobody scrapes would grow by
/// a latency sample per answer and per probe, without bound (about 17 bytes
/// per query, measured over 400 000 forwarded queries).
pub fn keep_up(handle: Option<PrometheusHandle>, shutdown: CancellationToken, tasks: &TaskTracker) {
    let Some(handle) = handle else { return };
    tasks.spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => handle.run_upkeep(),
            }
        }
    });
}

/// Installs the process-wide recorder once and returns its handle (later
/// calls return the same handle).
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("anycast_dns_answer_duration_seconds".into()),
                    ANSWER_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("anycast_probe_duration_seconds".into()),
                        PROBE_BUCKETS,
                    )
                })
                .map(|b| {
                    b.idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
                        .build_recorder()
                });
            let recorder = match recorder {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(%error, "metrics are off");
                    return None;
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics is off");
                return None;
            }
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "anycast_dns_queries_total",
        "DNS queries answered, by query type, response code and metric"
    );
    describe_histogram!(
        "anycast_dns_answer_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's bytes to its response's bytes"
    );
    describe_counter!(
        "anycast_forward_upstream_errors_total",
        "Forwarded lookups that failed upstream (SERVFAIL)"
    );
    describe_counter!("anycast_pushes_accepted_total", "Pushes accepted");
    describe_gauge!(
        "anycast_membership_store_up",
        "1 while the etcd membership store can be reached, 0 while it cannot (etcd store only)"
    );
    describe_counter!(
        "anycast_authority_served_stale_total",
        "Lookups of a local zone's group answered from a stale view (authority unreachable)"
    );
    describe_counter!(
        "anycast_pushes_rejected_total",
        "Pushes rejected, by reason"
    );
    describe_counter!(
        "anycast_probes_total",
        "Probes made, by result (ok, failed)"
    );
    describe_histogram!(
        "anycast_probe_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of successful probes"
    );
    describe_counter!(
        "anycast_member_answers_total",
        "Answers naming the member as the pick"
    );
    describe_gauge!(
        "anycast_member_pushed_tufr_seconds",
        "Latest pushed time until first read"
    );
    describe_gauge!(
        "anycast_member_probe_rt_seconds",
        "Last probe response time"
    );
    describe_gauge!(
        "anycast_member_scaling_factor",
        "Smoothed scaling factor SF = RT / TUFR"
    );
    describe_gauge!(
        "anycast_member_estimate_seconds",
        "Estimated response time (metric rt)"
    );
    describe_gauge!(
        "anycast_member_healthy",
        "1 if the member may be answered, else 0"
    );
    describe_gauge!(
        "anycast_member_in_set",
        "1 if the member is in the equivalent set for rt, else 0"
    );
}

/// The query types counted by name, "none" (no question) and "other" last.
const QTYPES: [&str; 12] = [
    "none", "A", "AAAA", "TXT", "SOA", "NS", "MX", "CNAME", "SRV", "PTR", "HTTPS", "other",
];

/// A query type as an index into [`QTYPES`]: a bounded label.
fn qtype_index(qtype: Option<RecordType>) -> usize {
    match qtype {
        None => 0,
        Some(RecordType::A) => 1,
        Some(RecordType::AAAA) => 2,
        Some(RecordType::TXT) => 3,
        Some(RecordType::SOA) => 4,
        Some(RecordType::NS) => 5,
        Some(RecordType::MX) => 6,
        Some(RecordType::CNAME) => 7,
        Some(RecordType::SRV) => 8,
        Some(RecordType::PTR) => 9,
        Some(RecordType::HTTPS) => 10,
        Some(_) => 11,
    }
}

/// The response codes counted by name, "other" last.
const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other",
];

/// A response code as an index into [`RCODES`].
fn rcode_index(rcode: ResponseCode) -> usize {
    match rcode {
        ResponseCode::NoError => 0,
        ResponseCode::FormErr => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::NXDomain => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::Refused => 5,
        ResponseCode::BADVERS => 6,
        _ => 7,
    }
}

/// The anycast metric as an index: 0 for none, then [`Metric::ALL`]'s order.
fn metric_index(metric: Option<Metric>) -> usize {
    metric.map_or(0, |m| {
        1 + Metric::ALL.iter().position(|&a| a == m).unwrap_or_default()
    })
}

/// Combinations of the query counter's labels.
const QUERY_SERIES: usize = QTYPES.len() * RCODES.len() * (Metric::ALL.len() + 1);

/// The query counter of each combination of labels, registered the first
/// time it is counted: after that, counting a query allocates nothing
/// (`counter!` with labels builds its key, three boxed labels, every call).
static QUERY_COUNTERS: [OnceLock<Counter>; QUERY_SERIES] =
    [const { OnceLock::new() }; QUERY_SERIES];

/// Records one answered query. `metric` is the anycast metric, if the name
/// was an anycast name.
pub fn query_answered(
    qtype: Option<RecordType>,
    rcode: ResponseCode,
    metric: Option<Metric>,
    took: Duration,
) {
    let (q, r, m) = (qtype_index(qtype), rcode_index(rcode), metric_index(metric));
    let series = (q * RCODES.len() + r) * (Metric::ALL.len() + 1) + m;
    QUERY_COUNTERS[series]
        .get_or_init(|| {
            counter!(
                "anycast_dns_queries_total",
                "qtype" => QTYPES[q],
                "rcode" => RCODES[r],
                "metric" => metric.map_or("none", Metric::label),
            )
        })
        .increment(1);
    static DURATION: OnceLock<Histogram> = OnceLock::new();
    DURATION
        .get_or_init(|| histogram!("anycast_dns_answer_duration_seconds"))
        .record(took.as_secs_f64());
}

/// Records an answer given from a stale view of a local zone's group.
pub fn served_stale() {
    counter!("anycast_authority_served_stale_total").increment(1);
}

/// Records whether the membership store can be reached.
pub fn membership_store(up: bool) {
    gauge!("anycast_membership_store_up").set(if up { 1.0 } else { 0.0 });
}

/// Records a forwarded lookup that failed upstream.
pub fn upstream_error() {
    counter!("anycast_forward_upstream_errors_total").increment(1);
}

/// Records a probe's outcome.
pub fn probed(ok: bool, took: Duration) {
    counter!("anycast_probes_total", "result" => if ok { "ok" } else { "failed" }).increment(1);
    if ok {
        histogram!("anycast_probe_duration_seconds").record(took.as_secs_f64());
    }
}

/// Sets the push counters to their totals at scrape time: accepted, and
/// refused by reason.
pub fn pushes(accepted: u64, rejected: impl IntoIterator<Item = (&'static str, u64)>) {
    counter!("anycast_pushes_accepted_total").absolute(accepted);
    for (reason, n) in rejected {
        counter!("anycast_pushes_rejected_total", "reason" => reason).absolute(n);
    }
}

/// What is known of one member at scrape time (times in milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct MemberGauges {
    /// The latest pushed TUFR.
    pub pushed_tufr_ms: Option<f64>,
    /// The latest probe's response time.
    pub probe_rt_ms: Option<f64>,
    /// The ratio calibration's scaling factor.
    pub scaling_factor: Option<f64>,
    /// The estimated response time.
    pub estimate_ms: Option<f64>,
    /// Whether it may be handed out.
    pub healthy: bool,
    /// Whether it is in `rt`'s equivalent set.
    pub in_set: bool,
    /// Answers that named it since start.
    pub answers: u64,
}

/// Sets one member's gauges and answer count at scrape time.
pub fn member(group: &str, member: &str, gauges: MemberGauges) {
    let labels = [("group", group.to_owned()), ("member", member.to_owned())];
    let seconds = |v: Option<f64>| v.map(|v| v / 1000.0);
    let values = [
        (
            "anycast_member_pushed_tufr_seconds",
            seconds(gauges.pushed_tufr_ms),
        ),
        (
            "anycast_member_probe_rt_seconds",
            seconds(gauges.probe_rt_ms),
        ),
        ("anycast_member_scaling_factor", gauges.scaling_factor),
        (
            "anycast_member_estimate_seconds",
            seconds(gauges.estimate_ms),
        ),
        (
            "anycast_member_healthy",
            Some(f64::from(u8::from(gauges.healthy))),
        ),
        (
            "anycast_member_in_set",
            Some(f64::from(u8::from(gauges.in_set))),
        ),
    ];
    for (name, value) in values {
        if let Some(value) = value {
            gauge!(name, &labels).set(value);
        }
    }
    counter!("anycast_member_answers_total", &labels).absolute(gauges.answers);
}
