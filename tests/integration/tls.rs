//! TLS where deployments need it: probes of members that serve HTTPS, and
//! agents pushing to resolvers behind HTTPS, with a CA the test creates
//! (`anycast_tests::tls`) and a real nginx serving TLS.

use std::time::Duration;

use anycast_tests::bed::{self, ADN, Group, KEY_ENV, PROBE_PATH, ResolverConfig, SECRET};
use anycast_tests::harness::{Agent, Resolver, wait_until_every};
use anycast_tests::http;
use anycast_tests::nginx::Nginx;
use anycast_tests::tls::make_certificates;
use anycast_tests::web::WebServer;
use serde_json::Value;

const POLL: Duration = Duration::from_millis(20);

/// A resolver config: group `web` with one member, at `member`, whose
/// probe file is at `probe`, and an empty `[probe]` section.
fn one_member(member: std::net::SocketAddr, probe: &str) -> ResolverConfig {
    ResolverConfig::new()
        .probe("")
        .group(Group::bed().member_probed_at(member, probe))
}

fn member_view(resolver: &Resolver) -> Value {
    let view = http::get_json(resolver.http_addr().unwrap(), &format!("/v1/groups/{ADN}"));
    view["members"][0].clone()
}

#[test]
fn probes_over_https_trust_the_configured_ca_and_say_why_they_fail() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path(), &["127.0.91.1"]);
    let application = WebServer::start(("127.0.91.1", 0)).unwrap();
    let nginx = Nginx::start_tls(
        "127.0.91.1",
        application.addr(),
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
    );
    // The probe file, as an agent would write it.
    let file = anycast_proto::probe::ProbeFile {
        server: nginx.addr().to_string(),
        state: anycast_proto::push::ServerState::Up,
        tufr_ms: Some(1.0),
        seq: 1,
        at_ms: 1,
        pad: String::new(),
    };
    std::fs::write(nginx.docroot().join(PROBE_PATH), file.to_json(256)).unwrap();
    let probe = format!("{}{PROBE_PATH}", nginx.url());
    assert!(probe.starts_with("https://"));

    let trusting = one_member(nginx.addr(), &probe)
        .probe(&format!(
            "ca_file = \"{}\"",
            dir.path().join("ca.pem").display()
        ))
        .start();
    let up = wait_until_every(POLL, Duration::from_secs(10), || {
        member_view(&trusting)["health"] == "up"
    });
    assert!(up, "{:#}", member_view(&trusting));
    eprintln!(
        "figure: a probe over TLS (a new connection and handshake each time) took {} ms",
        member_view(&trusting)["probe"]["rt_ms"]
    );

    // Without the CA: down, and the log says why, cause included.
    let distrusting = one_member(nginx.addr(), &probe).start();
    let line = distrusting
        .wait_for_log("member is down: probes fail", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{:?}", distrusting.logs()));
    assert!(
        line.contains("certificate") && line.contains("UnknownIssuer"),
        "the cause is in the log line: {line}"
    );
}

#[test]
fn an_agent_pushes_to_a_resolver_behind_https() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path(), &["127.0.91.2"]);
    let member = bed::Member::start("127.0.91.3", Duration::from_millis(20));
    let resolver = one_member(member.web.addr(), &member.probe_url()).start();
    // TLS in front of the resolver's HTTP listener.
    let front = Nginx::start_tls(
        "127.0.91.2",
        resolver.http_addr().unwrap(),
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
    );
    let push_url = format!("{}v1/push", front.url());
    let config = |ca: Option<&std::path::Path>| {
        let toml = bed::agent_toml(
            &member.web,
            member.docroot.path(),
            resolver.http_addr().unwrap(),
        )
        .replace(
            &format!("http://{}/v1/push", resolver.http_addr().unwrap()),
            &push_url,
        );
        match ca {
            Some(ca) => toml.replace(
                "[push]\n",
                &format!("[push]\nca_file = \"{}\"\n", ca.display()),
            ),
            None => toml,
        }
    };

    // Without the CA the pushes fail, and the agent says why.
    let distrusting = Agent::start(&config(None), &[(KEY_ENV, SECRET)]);
    let line = distrusting
        .wait_for_log("push failed", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{:?}", distrusting.logs()));
    assert!(
        line.contains("UnknownIssuer"),
        "the cause is in the log line: {line}"
    );
    drop(distrusting);

    let agent = Agent::start(
        &config(Some(&dir.path().join("ca.pem"))),
        &[(KEY_ENV, SECRET)],
    );
    let pushed = wait_until_every(POLL, Duration::from_secs(10), || {
        member_view(&resolver)["push"]["tufr_ms"].as_f64().is_some()
    });
    assert!(pushed, "{:#} {:?}", member_view(&resolver), agent.logs());
}

/// `curl` of `url` trusting `ca`: the HTTP status, or 0 when the TLS
/// handshake (or anything before a status) failed.
fn curl_status(url: &str, ca: &std::path::Path, headers: &[&str]) -> u16 {
    let mut command = std::process::Command::new("curl");
    command
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(ca);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command
        .arg(url)
        .output()
        .expect("curl (scripts/install-test-deps.sh)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn the_resolvers_listeners_serve_https_and_reload_the_certificate() {
    const TOKEN: &str = "tls-e2e-admin-token-0123456789";
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    make_certificates(first.path(), &["127.0.0.1"]);
    make_certificates(second.path(), &["127.0.0.1"]);
    let live = tempfile::tempdir().unwrap();
    let (cert, key) = (
        live.path().join("server.pem"),
        live.path().join("server.key"),
    );
    let install = |from: &std::path::Path| {
        std::fs::copy(from.join("server.pem"), &cert).unwrap();
        std::fs::copy(from.join("server.key"), &key).unwrap();
    };
    install(first.path());
    std::fs::write(live.path().join("token"), TOKEN).unwrap();
    let tls_lines = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );

    let member = bed::Member::start("127.0.91.4", Duration::from_millis(20));
    let resolver = one_member(member.web.addr(), &member.probe_url())
        .http(&tls_lines)
        .admin(&live.path().join("token"), &live.path().join("state.json"))
        .admin_settings(&tls_lines)
        .start();
    let api = format!("https://{}", resolver.http_addr().unwrap());
    let admin = format!("https://{}", resolver.admin_addr().unwrap());
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (ca1, ca2) = (first.path().join("ca.pem"), second.path().join("ca.pem"));
    assert_eq!(curl_status(&format!("{api}/v1/status"), &ca1, &[]), 200);
    assert_eq!(
        curl_status(&format!("{admin}/v1/admin/groups"), &ca1, &[&bearer]),
        200
    );

    // An agent pushes over HTTPS, straight to the resolver.
    let agent_config = bed::agent_toml(
        &member.web,
        member.docroot.path(),
        resolver.http_addr().unwrap(),
    )
    .replace(&format!("http://{}", resolver.http_addr().unwrap()), &api)
    .replace(
        "[push]\n",
        &format!("[push]\nca_file = \"{}\"\n", ca1.display()),
    );
    let agent = Agent::start(&agent_config, &[(KEY_ENV, SECRET)]);
    let pushed = wait_until_every(POLL, Duration::from_secs(10), || {
        let view = http_get_over_tls(&api, &ca1);
        view["members"][0]["push"]["tufr_ms"].as_f64().is_some()
    });
    assert!(pushed, "{:?}", agent.logs());

    // A new certificate, from another CA, taken at the reload.
    install(second.path());
    resolver.signal("HUP");
    assert!(
        resolver
            .wait_for_log("TLS certificate reloaded", Duration::from_secs(10))
            .is_some(),
        "{:?}",
        resolver.logs()
    );
    let switched = wait_until_every(POLL, Duration::from_secs(10), || {
        curl_status(&format!("{api}/v1/status"), &ca2, &[]) == 200
            && curl_status(&format!("{admin}/v1/admin/groups"), &ca2, &[&bearer]) == 200
    });
    assert!(switched, "{:?}", resolver.logs());
    assert_eq!(
        curl_status(&format!("{api}/v1/status"), &ca1, &[]),
        0,
        "the old certificate is gone"
    );

    // A broken file at reload: logged, and the certificate in service stays.
    std::fs::write(&key, "not a key").unwrap();
    resolver.signal("HUP");
    assert!(
        resolver
            .wait_for_log("TLS certificate not reloaded", Duration::from_secs(10))
            .is_some()
    );
    assert_eq!(curl_status(&format!("{api}/v1/status"), &ca2, &[]), 200);
}

/// The group's JSON view, over HTTPS with `curl`.
fn http_get_over_tls(api: &str, ca: &std::path::Path) -> Value {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg(format!("{api}/v1/groups/{ADN}"))
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}
