//! nginx as the replicated server, for real (Debian's nginx, started by
//! `anycast_tests::nginx` on loopback with the advice of
//! `configs/nginx/anycast.conf`): the agent times a real location, reads
//! nginx's real access log across a rotation (`mv`, then `nginx -s reopen`,
//! as logrotate does), writes the probe file nginx serves; the resolver
//! probes it and answers.
//!
//! Each nginx proxies its other paths to a test web server whose delay the
//! test sets: the application behind nginx is what gets slow.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anycast_tests::bed::{self, ADN, Group, KEY_ENV, KEY_ID, PROBE_PATH, ResolverConfig, SECRET};
use anycast_tests::harness::{Agent, Resolver, a_records, query_udp, wait_until_every};
use anycast_tests::http;
use anycast_tests::nginx::Nginx;
use anycast_tests::web::WebServer;
use hickory_proto::rr::RecordType;
use serde_json::Value;

const POLL: Duration = Duration::from_millis(20);

/// A member: the application (a test web server) behind a real nginx.
struct NginxMember {
    application: WebServer,
    nginx: Nginx,
}

impl NginxMember {
    fn start(ip: &str, delay: Duration) -> NginxMember {
        let application = WebServer::start((ip, 0)).expect("the application");
        application.set_delay(delay);
        let nginx = Nginx::start(ip, application.addr());
        NginxMember { application, nginx }
    }
}

/// A resolver with group `web` of `members`, taking the bed's pushes,
/// answering with the whole equivalent set.
fn resolver(members: &[&NginxMember]) -> Resolver {
    ResolverConfig::new()
        .group(
            Group::bed()
                .answer("set")
                .members(members.iter().map(|m| m.nginx.addr())),
        )
        .start()
}

/// The resolver's view of the member at `server`.
fn member_view(resolver: &Resolver, server: SocketAddr) -> Value {
    let view = http::get_json(resolver.http_addr().unwrap(), &format!("/v1/groups/{ADN}"));
    view["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["endpoint"] == server.to_string()))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The pushed time until first read of the member at `server`, if any.
fn pushed_tufr_ms(resolver: &Resolver, server: SocketAddr) -> Option<f64> {
    member_view(resolver, server)["push"]["tufr_ms"].as_f64()
}

/// Clients fetching `url` every 20 ms until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn to(addr: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let _ = http::request(addr, "GET", "/app", &[], b"");
                std::thread::sleep(POLL);
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn the_agent_reads_nginxs_access_log_across_a_reopen() {
    let member = NginxMember::start("127.0.90.1", Duration::from_millis(30));
    let resolver = resolver(&[&member]);
    let nginx = &member.nginx;
    let config = format!(
        r#"
server = "{server}"
groups = ["{ADN}"]
push_urls = ["http://{http}/v1/push"]

[key]
id = "{KEY_ID}"
env = "{KEY_ENV}"

[passive]
log = "{log}"
format = "nginx-rt"
poll = "100ms"

[smoothing]
time_constant = "{tau}ms"

[probe_file]
path = "{probe}"

[push]
min_interval = "{min_push}ms"
heartbeat = "{heartbeat}ms"
"#,
        server = nginx.addr(),
        http = resolver.http_addr().unwrap(),
        log = nginx.access_log().display(),
        tau = bed::TAU.as_millis(),
        probe = nginx.docroot().join(PROBE_PATH).display(),
        min_push = bed::MIN_PUSH_INTERVAL.as_millis(),
        heartbeat = bed::HEARTBEAT.as_millis(),
    );
    let agent = Agent::start(&config, &[(KEY_ENV, SECRET)]);
    let _traffic = Traffic::to(nginx.addr());

    // rt = the application's 30 ms plus nginx's own time.
    let near = |low: f64, high: f64| {
        wait_until_every(POLL, Duration::from_secs(15), || {
            pushed_tufr_ms(&resolver, nginx.addr()).is_some_and(|t| (low..high).contains(&t))
        })
    };
    assert!(
        near(25.0, 80.0),
        "pushed {:?} for a 30 ms application; agent: {:?}",
        pushed_tufr_ms(&resolver, nginx.addr()),
        agent.logs()
    );
    // The probe file the agent writes is what nginx serves, and the
    // resolver's probes of it succeed.
    let probed = wait_until_every(POLL, Duration::from_secs(10), || {
        member_view(&resolver, nginx.addr())["health"] == "up"
    });
    assert!(probed, "{:#}", member_view(&resolver, nginx.addr()));

    // logrotate: rename, then reopen; the agent follows to the new file.
    let rotated = nginx.access_log().with_extension("log.1");
    std::fs::rename(nginx.access_log(), &rotated).unwrap();
    nginx.reopen_logs();
    member.application.set_delay(Duration::from_millis(150));
    assert!(
        near(140.0, 400.0),
        "pushed {:?} after the rotation for a 150 ms application; agent: {:?}",
        pushed_tufr_ms(&resolver, nginx.addr()),
        agent.logs()
    );
    let reopened = std::fs::read_to_string(nginx.access_log()).unwrap();
    assert!(
        reopened.contains("rt="),
        "nginx writes the new log: {reopened:?}"
    );
    assert!(
        agent
            .logs()
            .iter()
            .all(|l| !l.contains("cannot read the access log")),
        "{:?}",
        agent.logs()
    );
}

#[test]
fn answers_move_away_from_a_slow_nginx() {
    let a = NginxMember::start("127.0.90.2", Duration::from_millis(5));
    let b = NginxMember::start("127.0.90.3", Duration::from_millis(5));
    let resolver = resolver(&[&a, &b]);
    let http_addr = resolver.http_addr().unwrap();
    // Each agent times its nginx's proxied location, actively.
    let _agents: Vec<Agent> = [&a, &b]
        .iter()
        .map(|m| {
            let url = format!("{}app", m.nginx.url());
            let config = bed::agent_toml_for(m.nginx.addr(), &url, &m.nginx.docroot(), http_addr);
            Agent::start(&config, &[(KEY_ENV, SECRET)])
        })
        .collect();
    let answered = |ip: &str| -> bool {
        a_records(&query_udp(resolver.addr(), ADN, RecordType::A))
            .iter()
            .any(|answer| answer.to_string() == ip)
    };
    let both = wait_until_every(POLL, Duration::from_secs(15), || {
        answered("127.0.90.2") && answered("127.0.90.3")
    });
    assert!(
        both,
        "{:#}",
        http::get_json(http_addr, &format!("/v1/groups/{ADN}"))
    );

    // The application behind a becomes slow: a leaves the answers.
    // Both 5 ms members may leave the set now and then by noise before
    // that: the figure is when `a` left for good (out of every answer for a
    // second since).
    a.application.set_delay(Duration::from_millis(200));
    let slowed = Instant::now();
    let mut out_since: Option<Instant> = None;
    let left = loop {
        let now = Instant::now();
        if !answered("127.0.90.2") && answered("127.0.90.3") {
            let since = *out_since.get_or_insert(now);
            if now.duration_since(since) >= Duration::from_secs(1) {
                break Some(since.duration_since(slowed));
            }
        } else {
            out_since = None;
        }
        if now.duration_since(slowed) > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(POLL);
    };
    let Some(leaving) = left else {
        panic!(
            "{:#}",
            http::get_json(http_addr, &format!("/v1/groups/{ADN}"))
        );
    };
    // The push follows the application's 200 ms (the agent's smoothing
    // takes a few of its time constants: it may still be rising when the
    // member leaves the set, as CI run 12 saw).
    let pushed = wait_until_every(POLL, Duration::from_secs(10), || {
        pushed_tufr_ms(&resolver, a.nginx.addr()).is_some_and(|t| t > 150.0)
    });
    let view = member_view(&resolver, a.nginx.addr());
    eprintln!(
        "figure: the slowed nginx left the answers {leaving:?} after its application slowed; \
         push {} probe {} why {}",
        view["push"], view["probe"], view["why"]
    );
    assert!(pushed, "{view:#}");
    assert!(
        a.application.requests() > 0 && b.application.requests() > 0,
        "the agents time the application through nginx"
    );
}
