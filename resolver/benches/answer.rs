//! The DNS answer path without the network: request bytes in, response bytes out.
//!
//! Run with:
//!
//! ```text
//! cargo bench -p anycast-resolver --bench answer
//! ```
//!
//! * `name/parse`: the anycast-name grammar alone.
//! * `select/*`: choosing a member by metric from a three-member group.
//! * `answer/adn`, `answer/rt`: request bytes to response bytes for
//!   `web.any.example.net` and `rt.web.any.example.net`, as the UDP path
//!   answers them (`answer_now`, into a reused buffer).
//! * `answer/forwarded_cached`: a forwarded name answered from the cache
//!   (the upstream is a fake on loopback, queried once to warm the cache).
//!
//! Before the timings, it prints the heap allocations one answer makes (a
//! counting global allocator around the system's, over 10,000 answers whose
//! request bytes were made beforehand), for `web.` and `rt.web.` as the UDP
//! path answers them, and for the cached forwarded name (`answer`, which
//! waits on the forwarder).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anycast_proto::{Metric, Zone};
use anycast_resolver::authority::Authorities;
use anycast_resolver::config::Config;
use anycast_resolver::dns::{DnsFront, Ready, Transport};
use anycast_resolver::forward::Forwarder;
use anycast_resolver::membership::Membership;
use anycast_resolver::observe::Observations;
use anycast_selection::select::{Family, select};
use anycast_tests::upstream::{Upstream, example_zone};
use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

/// The system's allocator, counting allocations (and reallocations, which
/// may move: each is a trip to the allocator an answer could avoid).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Answers counted for the allocations per answer.
const COUNTED: u64 = 10_000;

/// Heap allocations per answer to `request` as the UDP path answers it:
/// `answer_now` into one reused buffer.
fn allocations_per_answer_now(front: &DnsFront, request: &[u8], client: SocketAddr) -> f64 {
    let mut response = Vec::with_capacity(512);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..COUNTED {
        let ready = front.answer_now(black_box(request), client, Transport::Udp, &mut response);
        assert_eq!(ready, Ready::Answered);
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / COUNTED as f64
}

/// Heap allocations per answer to `request` through `answer` (the
/// requests' bytes made before counting starts).
fn allocations_per_answer(
    runtime: &tokio::runtime::Runtime,
    front: &DnsFront,
    request: &[u8],
    client: SocketAddr,
) -> f64 {
    let requests: Vec<Vec<u8>> = (0..COUNTED).map(|_| request.to_vec()).collect();
    runtime.block_on(async {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for request in requests {
            black_box(front.answer(request, client, Transport::Udp).await);
        }
        (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / COUNTED as f64
    })
}

fn config(upstream: SocketAddr) -> Config {
    let text = format!(
        r#"
[forward]
upstreams = ["{upstream}"]

[[zone]]
name = "any.example.net"

[[group]]
service = "web"

[[group.member]]
address = "127.0.1.1"
cost = 1

[[group.member]]
address = "127.0.1.2"
cost = 2

[[group.member]]
address = "127.0.1.3"
cost = 1
"#
    );
    Config::from_toml(&text, Path::new("bench.toml")).expect("bench config is valid")
}

fn query(name: &str) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_ascii(name).expect("valid name"),
        RecordType::A,
    ));
    message.to_vec().expect("encodable query")
}

fn benches(c: &mut Criterion) {
    let upstream = Upstream::start(example_zone()).expect("fake upstream starts");
    let config = config(upstream.addr());
    let membership =
        Membership::new(config.zones.clone(), config.group_specs(), None).expect("membership");
    let directory = membership.directory();
    let observations = Observations::new(config.push.clone());
    let zones = vec![Zone::new("any.example.net").expect("valid zone")];

    c.bench_function("name/parse", |b| {
        b.iter(|| anycast_proto::name::parse(black_box("rt.web.any.example.net"), &zones))
    });

    let name = anycast_proto::name::parse("web.any.example.net", &zones).expect("valid name");
    let group = directory.group(&name).expect("group exists");
    let observed = observations.at(std::time::Instant::now());
    for metric in [Metric::Rr, Metric::Random, Metric::Cost, Metric::Rt] {
        c.bench_function(&format!("select/{metric}"), |b| {
            let mut rng = rand::rng();
            b.iter(|| {
                select(group, black_box(metric), Family::V4, &observed, &mut rng)
                    .map(|c| c.pick.address)
            })
        });
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let front = {
        let _guard = runtime.enter();
        let forwarder = Forwarder::new(&config.forward).expect("forwarder");
        let membership = Arc::new(membership);
        let authorities = Authorities::new(
            membership.clone(),
            observations.pushes.clone(),
            forwarder.clone(),
        )
        .expect("authorities");
        DnsFront::new(
            &config,
            membership.subscribe(),
            observations.clone(),
            authorities,
            forwarder,
        )
    };
    let client: SocketAddr = "127.0.0.1:40000".parse().expect("addr");

    let adn = query("web.any.example.net.");
    let forwarded = query("www.example.org.");
    let warm = runtime.block_on(front.answer(forwarded.clone(), client, Transport::Udp));
    assert!(
        warm.is_some_and(|r| r.len() > 40),
        "cache warmed with an answer"
    );
    let rt = query("rt.web.any.example.net.");
    for (label, request) in [
        ("web.any.example.net", &adn),
        ("rt.web.any.example.net", &rt),
    ] {
        let n = allocations_per_answer_now(&front, request, client);
        println!("allocations per answer, {label}: {n:.2}");
    }
    let n = allocations_per_answer(&runtime, &front, &forwarded, client);
    println!("allocations per answer, www.example.org (forwarded, cached): {n:.2}");

    for (label, request) in [("answer/adn", &adn), ("answer/rt", &rt)] {
        let mut response = Vec::with_capacity(512);
        c.bench_function(label, |b| {
            b.iter(|| front.answer_now(black_box(request), client, Transport::Udp, &mut response))
        });
    }

    let before = upstream.queries();
    c.bench_function("answer/forwarded_cached", |b| {
        b.to_async(&runtime)
            .iter(|| front.answer(black_box(forwarded.clone()), client, Transport::Udp))
    });
    assert_eq!(
        upstream.queries(),
        before,
        "every benchmarked answer came from the cache"
    );
}

criterion_group!(answer, benches);
criterion_main!(answer);
