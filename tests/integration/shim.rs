//! End-to-end tests of the client side: unmodified programs (`getent`,
//! `python3`, `curl`, and the small C programs of `client-shim/c/`) run with
//! `libanycast_shim.so` preloaded, or with `libnss_anycast.so.2` in their
//! `nsswitch.conf` (the [`nss`] module), against a real `anycast-resolver` on
//! loopback.
//!
//! Both libraries are built once per test process (`cargo build -p
//! anycast-shim -p anycast-nss`), the C programs compiled once next to them. Nothing leaves the machine: the
//! only names resolved without the shim are `localhost` and literals, which
//! `/etc/hosts` and the C library answer.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anycast_tests::harness::{
    NO_UPSTREAM, Resolver, resolver_head, run_with_deadline, workspace_root,
};
use anycast_tests::web::{BODY, WebServer};
use serde_json::Value;

const ZONE: &str = "any.example.net";
/// Group `web` (answer one).
const WEB: [&str; 2] = ["127.0.1.1", "127.0.1.2"];
/// Group `pool` (answer set).
const POOL: [&str; 3] = ["127.0.2.1", "127.0.2.2", "127.0.2.3"];
/// Group `dual`: one member of each family.
const DUAL: [&str; 2] = ["127.0.3.1", "::1"];
/// Group `six`: IPv6 only (loopback: the resolver probes every member).
const SIX: &str = "::1";
/// Group `big` (answer set): this many members, 127.0.5.1 upwards; its
/// answer does not fit a 1232-byte UDP response.
const BIG_MEMBERS: u8 = 100;
/// Every group's health settings. No member has a probe server, so every
/// probe fails; members that are never taken out stay "not measured", and
/// with none measured every member is equivalent: set answers are the whole
/// group, at any time. (With the default `fail_after`, members would leave
/// one by one in the first second, and set answers would shrink meanwhile.)
const HEALTH: &str = "fail_after = 1000000\nprobe_interval = \"1h\"";

/// How long one program run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

#[path = "shim/nss.rs"]
mod nss;

// ---------------------------------------------------------------------------
// Building the shim and the C programs
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Built {
    shim: PathBuf,
    /// A directory holding the NSS module as `libnss_anycast.so.2`.
    nss_dir: PathBuf,
    shimcheck: PathBuf,
    malloccount: PathBuf,
}

/// Builds the shim and the NSS module (once per process) and compiles the C
/// test programs.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(built) => built,
        Err(message) => panic!("{message}"),
    }
}

fn build() -> Result<Built, String> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "-p", "anycast-shim", "-p", "anycast-nss", "--lib"])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        return Err(format!(
            "building anycast-shim and anycast-nss failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let artifacts = String::from_utf8_lossy(&output.stdout);
    let library = |target: &str| {
        artifacts
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == target)
            .flat_map(|m| {
                m["filenames"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|f| f.as_str().map(PathBuf::from))
            })
            .find(|f| f.extension() == Some(OsStr::new("so")))
            .ok_or_else(|| format!("cargo did not name lib{target}.so"))
    };
    let shim = library("anycast_shim")?;
    let nss = library("nss_anycast")?;
    let dir = shim
        .parent()
        .ok_or("the shim has no directory")?
        .join("shim-tests");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // glibc loads the module by its soname.
    let nss_dir = dir.join("nss");
    std::fs::create_dir_all(&nss_dir)
        .map_err(|e| format!("cannot create {}: {e}", nss_dir.display()))?;
    // Copied aside and renamed, so that a program still running the last
    // copy keeps its own.
    let installed = nss_dir.join("libnss_anycast.so.2");
    let partial = nss_dir.join("libnss_anycast.so.2.partial");
    std::fs::copy(&nss, &partial)
        .and_then(|_| std::fs::rename(&partial, &installed))
        .map_err(|e| {
            format!(
                "cannot copy {} to {}: {e}",
                nss.display(),
                installed.display()
            )
        })?;
    let sources = root.join("client-shim").join("c");
    let shimcheck = compile(
        &sources.join("shimcheck.c"),
        &dir.join("shimcheck"),
        &["-pthread"],
    )?;
    let malloccount = compile(
        &sources.join("malloccount.c"),
        &dir.join("malloccount"),
        &["-rdynamic"],
    )?;
    Ok(Built {
        shim,
        nss_dir,
        shimcheck,
        malloccount,
    })
}

fn compile(source: &Path, output: &Path, flags: &[&str]) -> Result<PathBuf, String> {
    let result = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(output)
        .arg(source)
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!("cannot run cc ({e}): install a C compiler (scripts/install-test-deps.sh)")
        })?;
    if !result.status.success() {
        return Err(format!(
            "cc {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    Ok(output.to_path_buf())
}

// ---------------------------------------------------------------------------
// The resolver under test, and programs run with the shim
// ---------------------------------------------------------------------------

fn groups_toml() -> String {
    let mut toml = format!(
        r#"
[[zone]]
name = "{ZONE}"

[[group]]
service = "web"
{HEALTH}
[[group.member]]
address = "{w0}"
[[group.member]]
address = "{w1}"

[[group]]
service = "pool"
{HEALTH}
answer = "set"
[[group.member]]
address = "{p0}"
[[group.member]]
address = "{p1}"
[[group.member]]
address = "{p2}"

[[group]]
service = "dual"
{HEALTH}
[[group.member]]
address = "{d0}"
[[group.member]]
address = "{d1}"

[[group]]
service = "six"
{HEALTH}
[[group.member]]
address = "{SIX}"

[[group]]
service = "big"
{HEALTH}
answer = "set"
"#,
        w0 = WEB[0],
        w1 = WEB[1],
        p0 = POOL[0],
        p1 = POOL[1],
        p2 = POOL[2],
        d0 = DUAL[0],
        d1 = DUAL[1],
    );
    for ip in big_members() {
        toml.push_str(&format!("[[group.member]]\naddress = \"{ip}\"\n"));
    }
    toml
}

fn big_members() -> Vec<String> {
    (1..=BIG_MEMBERS).map(|i| format!("127.0.5.{i}")).collect()
}

/// A resolver config with the test groups plus `extra` (more groups).
fn config(extra: &str) -> String {
    let head = resolver_head(NO_UPSTREAM, "");
    format!(
        r#"{head}
{groups}
{extra}"#,
        groups = groups_toml()
    )
}

fn start() -> Resolver {
    Resolver::start(&config(""))
}

/// `program` with the shim preloaded, pointed at `resolver` for the test
/// zone, and no other `ANYCAST_*` variable or config file.
fn with_shim(program: impl AsRef<OsStr>, resolver: SocketAddr) -> Command {
    let mut command = without_shim(program);
    command
        .env("LD_PRELOAD", &built().shim)
        .env("ANYCAST_RESOLVER", resolver.to_string())
        .env("ANYCAST_ZONES", ZONE);
    command
}

/// `program` with none of the shim's variables.
fn without_shim(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("ANYCAST_") || text == "LD_PRELOAD" {
            command.env_remove(&name);
        }
    }
    command
        .env("ANYCAST_CONFIG", "/nonexistent/anycast-shim-test.conf")
        .stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    run_with_deadline(command, RUN_DEADLINE)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs and asserts success; returns stdout.
fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

fn set(texts: &[&str]) -> BTreeSet<IpAddr> {
    texts.iter().map(|t| t.parse().unwrap()).collect()
}

/// The addresses (first column) of `getent ahosts`/`getent hosts` output.
fn first_column(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("not an address: {a:?}"))
        })
        .collect()
}

/// Runs a python3 script (which prints one JSON value) with the shim.
fn python(command: Command, script: &str) -> Value {
    let mut command = command;
    command.arg("-c").arg(format!("{PYTHON_PRELUDE}\n{script}"));
    let out = run_ok(&mut command);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

/// Helpers for the python scripts: results as plain JSON, errors as numbers.
const PYTHON_PRELUDE: &str = r#"
import json, socket, sys
def gai(*args):
    try:
        return [[int(f), int(t), int(p), sa[0], sa[1], c] for f, t, p, c, sa in socket.getaddrinfo(*args)]
    except socket.gaierror as e:
        return {"error": e.errno}
def ghbn(name):
    try:
        return socket.gethostbyname(name)
    except OSError as e:
        return {"error": e.errno}
def ghbn_ex(name):
    try:
        n, aliases, addresses = socket.gethostbyname_ex(name)
        return [n, aliases, addresses]
    except OSError as e:
        return {"error": e.errno}
"#;

fn addresses_of(gai: &Value) -> Vec<IpAddr> {
    gai.as_array()
        .unwrap_or_else(|| panic!("not a result list: {gai}"))
        .iter()
        .map(|row| row[3].as_str().unwrap().parse().unwrap())
        .collect()
}

fn error_of(value: &Value) -> i64 {
    value["error"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error, got {value}"))
}

const EAI_NONAME: i64 = -2;
const EAI_AGAIN: i64 = -3;
const EAI_FAIL: i64 = -4;
const EAI_NODATA: i64 = -5;
const EAI_SERVICE: i64 = -8;

// ---------------------------------------------------------------------------
// getent
// ---------------------------------------------------------------------------

/// `getent` (the program `getent()` runs) answers group `web` by both name
/// forms and with metrics: `ahosts` (getaddrinfo, with the canonical name)
/// and `hosts` (gethostbyname2: AF_INET6, which has no data, then AF_INET).
fn getent_answers_both_forms(getent: impl Fn() -> Command) {
    let web = set(&WEB);
    for (name, canonical) in [
        ("web.any.example.net", "web.any.example.net"),
        ("Web%any.example.net", "web.any.example.net"),
        ("RR.Web%Any.Example.Net", "rr.web.any.example.net"),
        ("cost.web.any.example.net.", "cost.web.any.example.net"),
    ] {
        let out = run_ok(getent().args(["ahosts", name]));
        let addresses = first_column(&out);
        assert!(!addresses.is_empty(), "{name}: {out}");
        assert!(addresses.iter().all(|a| web.contains(a)), "{name}: {out}");
        let first = out.lines().next().unwrap();
        assert!(
            first.ends_with(&format!("STREAM {canonical}")),
            "{name}: {out}"
        );
        let out = run_ok(getent().args(["hosts", name]));
        let fields: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fields.len(), 2, "{name}: {out}");
        assert!(web.contains(&fields[0].parse().unwrap()), "{name}: {out}");
        assert_eq!(fields[1], canonical);
    }
}

#[test]
fn getent_resolves_both_name_forms() {
    let resolver = start();
    getent_answers_both_forms(|| with_shim("getent", resolver.addr()));

    // The set, with the pick first: every member once per socket type.
    let out = run_ok(with_shim("getent", resolver.addr()).args(["ahosts", "pool.any.example.net"]));
    let addresses: BTreeSet<IpAddr> = first_column(&out).into_iter().collect();
    assert_eq!(addresses, set(&POOL), "{out}");
    assert_eq!(out.lines().count(), 3 * POOL.len(), "{out}");

    // IPv6 through gethostbyname2(AF_INET6).
    let out = run_ok(with_shim("getent", resolver.addr()).args(["hosts", "six%any.example.net"]));
    assert_eq!(
        first_column(&out),
        [SIX.parse::<IpAddr>().unwrap()],
        "{out}"
    );

    // No such name: getent's exit status 2 ("not found"), for both forms.
    for name in [
        "nosuch.any.example.net",
        "nosuch%any.example.net",
        "fastest.web.any.example.net",
        "a.b.web.any.example.net",
    ] {
        for database in ["ahosts", "hosts"] {
            let output = run(with_shim("getent", resolver.addr()).args([database, name]));
            assert_eq!(
                output.status.code(),
                Some(2),
                "getent {database} {name}: {output:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// python3
// ---------------------------------------------------------------------------

#[test]
fn python_getaddrinfo_honours_hints() {
    let resolver = start();
    let result = python(
        with_shim("python3", resolver.addr()),
        r#"
S = socket
print(json.dumps({
    "canon": gai("web.any.example.net", "http", S.AF_INET, S.SOCK_STREAM, 0, S.AI_CANONNAME),
    "paper_dgram": gai("Pool%any.example.net", 8443, 0, S.SOCK_DGRAM),
    "no_service": gai("web.any.example.net", None),
    "udp_proto": gai("web.any.example.net", 53, S.AF_INET, 0, S.IPPROTO_UDP),
    "v6_only": gai("web.any.example.net", 80, S.AF_INET6),
    "v4_mapped": gai("web.any.example.net", 80, S.AF_INET6, S.SOCK_STREAM, 0, S.AI_V4MAPPED),
    "mapped_all": gai("dual.any.example.net", 80, S.AF_INET6, S.SOCK_STREAM, 0, S.AI_V4MAPPED | S.AI_ALL),
    "dual": gai("dual.any.example.net", 80, 0, S.SOCK_STREAM),
    "six_v4": gai("six.any.example.net", 80, S.AF_INET),
    "numerichost": gai("web.any.example.net", 80, 0, 0, 0, S.AI_NUMERICHOST),
    "bad_service": gai("web.any.example.net", "no-such-service", 0, S.SOCK_STREAM),
    "nosuch": gai("nosuch.any.example.net", 80),
    "bad_metric": gai("fastest.Web%any.example.net", 80),
    "ghbn": ghbn("Web%any.example.net"),
    "ghbn_ex": ghbn_ex("pool.any.example.net"),
}))
"#,
    );
    let web = set(&WEB);

    let canon = result["canon"].as_array().unwrap();
    assert_eq!(canon.len(), 1, "{canon:?}");
    assert_eq!(canon[0][0], 2, "AF_INET");
    assert_eq!(canon[0][1], 1, "SOCK_STREAM");
    assert_eq!(canon[0][2], 6, "IPPROTO_TCP");
    assert!(web.contains(&canon[0][3].as_str().unwrap().parse().unwrap()));
    assert_eq!(canon[0][4], 80, "the service name `http`");
    assert_eq!(canon[0][5], "web.any.example.net");

    let dgram = result["paper_dgram"].as_array().unwrap();
    assert_eq!(
        addresses_of(&result["paper_dgram"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        set(&POOL)
    );
    for row in dgram {
        assert_eq!(
            (&row[1], &row[2], &row[4]),
            (&2.into(), &17.into(), &8443.into()),
            "{row}"
        );
        assert_eq!(row[5], "", "no canonical name unless asked");
    }

    // No socket type: one result per socket type, as glibc gives.
    let types: BTreeSet<i64> = result["no_service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_i64().unwrap())
        .collect();
    assert_eq!(types, BTreeSet::from([1, 2, 3]), "{}", result["no_service"]);
    let udp = result["udp_proto"].as_array().unwrap();
    assert_eq!(udp.len(), 1, "{udp:?}");
    assert_eq!(
        (&udp[0][1], &udp[0][2], &udp[0][4]),
        (&2.into(), &17.into(), &53.into())
    );

    // Families.
    assert_eq!(error_of(&result["v6_only"]), EAI_NODATA);
    let mapped = addresses_of(&result["v4_mapped"]);
    assert_eq!(mapped.len(), 1, "{mapped:?}");
    let IpAddr::V6(v6) = mapped[0] else {
        panic!("{mapped:?}")
    };
    assert!(
        web.contains(&IpAddr::V4(v6.to_ipv4_mapped().unwrap())),
        "{mapped:?}"
    );
    assert_eq!(
        addresses_of(&result["mapped_all"]),
        ["::1", "::ffff:127.0.3.1"]
            .map(|a| a.parse::<IpAddr>().unwrap())
            .to_vec(),
        "IPv6 first, then the mapped IPv4 ones"
    );
    assert_eq!(
        addresses_of(&result["dual"]),
        DUAL.map(|a| a.parse::<IpAddr>().unwrap()).to_vec(),
        "IPv4 first, then IPv6"
    );
    assert_eq!(error_of(&result["six_v4"]), EAI_NODATA);

    // Errors.
    assert_eq!(
        error_of(&result["numerichost"]),
        EAI_NONAME,
        "AI_NUMERICHOST: not a number"
    );
    assert_eq!(error_of(&result["bad_service"]), EAI_SERVICE);
    assert_eq!(error_of(&result["nosuch"]), EAI_NONAME);
    assert_eq!(error_of(&result["bad_metric"]), EAI_NONAME);

    // gethostbyname (Python uses getaddrinfo) and gethostbyname_ex
    // (gethostbyname_r).
    assert!(web.contains(&result["ghbn"].as_str().unwrap().parse().unwrap()));
    let ex = &result["ghbn_ex"];
    assert_eq!(ex[0], "pool.any.example.net");
    assert_eq!(ex[1], Value::Array(vec![]));
    let pool: BTreeSet<IpAddr> = ex[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(pool, set(&POOL));
}

// ---------------------------------------------------------------------------
// Client filters and the whole set
// ---------------------------------------------------------------------------

#[test]
fn client_filters_choose_among_the_set() {
    let resolver = start();
    let script = r#"
print(json.dumps([gai(n, 80, 0, socket.SOCK_STREAM) for n in sys.argv[1:]]))
"#;
    let run_with = |vars: &[(&str, &str)], names: &[&str]| -> Vec<Vec<IpAddr>> {
        let mut command = with_shim("python3", resolver.addr());
        command.envs(vars.iter().copied());
        command.arg("-c").arg(format!("{PYTHON_PRELUDE}\n{script}"));
        command.args(names);
        let out = run_ok(&mut command);
        let value: Value = serde_json::from_str(out.trim()).unwrap();
        value.as_array().unwrap().iter().map(addresses_of).collect()
    };
    let pool = set(&POOL);

    // random: one address per call, a member, not always the same one.
    let names = vec!["pool.any.example.net"; 40];
    let picks = run_with(&[("ANYCAST_FILTER", "random")], &names);
    let mut seen = BTreeSet::new();
    for pick in &picks {
        assert_eq!(pick.len(), 1, "{pick:?}");
        assert!(pool.contains(&pick[0]), "{pick:?}");
        seen.insert(pick[0]);
    }
    assert!(seen.len() >= 2, "40 random picks among 3 gave {seen:?}");

    // The first of a preferred family, else of the other.
    let v4: IpAddr = DUAL[0].parse().unwrap();
    let v6: IpAddr = DUAL[1].parse().unwrap();
    let six: IpAddr = SIX.parse().unwrap();
    let names = ["dual.any.example.net", "six.any.example.net"];
    assert_eq!(
        run_with(&[("ANYCAST_FILTER", "prefer-v6")], &names),
        [vec![v6], vec![six]]
    );
    assert_eq!(
        run_with(&[("ANYCAST_FILTER", "prefer-v4")], &names),
        [vec![v4], vec![six]]
    );

    // The whole set asked for (EDNS option 65350): every member of the
    // equivalent set, whatever the group's answer mode, so a group that
    // answers one member to others gives this client the whole set.
    let answers = run_with(
        &[("ANYCAST_SET", "1")],
        &["pool.any.example.net", "web.any.example.net"],
    );
    assert_eq!(answers[0].iter().copied().collect::<BTreeSet<_>>(), pool);
    assert_eq!(
        answers[1].iter().copied().collect::<BTreeSet<_>>(),
        set(&WEB),
        "{answers:?}"
    );
}

#[test]
fn truncated_answers_are_asked_again_over_tcp() {
    let resolver = start();
    let members: BTreeSet<IpAddr> = big_members().iter().map(|a| a.parse().unwrap()).collect();
    let result = python(
        with_shim("python3", resolver.addr()),
        r#"print(json.dumps({
    "gai": gai("big.any.example.net", 80, socket.AF_INET, socket.SOCK_STREAM),
    "ex": ghbn_ex("Big%any.example.net"),
}))"#,
    );
    let got = addresses_of(&result["gai"]);
    assert_eq!(got.len(), members.len(), "{got:?}");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), members);
    // 100 A records do not fit the 1232 bytes the shim offers over UDP: the
    // resolver truncated, and the shim asked again over TCP.
    assert_eq!(result["ex"][2].as_array().unwrap().len(), members.len());
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

/// A web server on 127.0.4.1 and a resolver whose group `site` is it.
fn site() -> (WebServer, Resolver) {
    let server = WebServer::start("127.0.4.1:0").expect("cannot start the web server");
    let group = format!(
        "[[group]]\nservice = \"site\"\n{HEALTH}\n[[group.member]]\naddress = \"{}\"\nport = {}\n",
        server.addr().ip(),
        server.addr().port()
    );
    let resolver = Resolver::start(&config(&group));
    (server, resolver)
}

/// `curl` (the program `command` runs) fetches `/hello` from `server` by
/// the anycast name `name`.
fn curl_fetches(mut command: Command, server: &WebServer, name: &str) {
    let url = format!("http://{name}:{}/hello", server.addr().port());
    let before = server.requests();
    let out = run_ok(command.args([
        "--silent",
        "--show-error",
        "--fail",
        "--noproxy",
        "*",
        "--max-time",
        "20",
        &url,
    ]));
    assert_eq!(out.as_bytes(), BODY, "{url}");
    assert!(
        server.requests() > before,
        "{url}: the server saw no request"
    );
}

#[test]
fn curl_fetches_by_an_anycast_name() {
    let (server, resolver) = site();
    for name in ["site.any.example.net", "rr.site.any.example.net"] {
        curl_fetches(with_shim("curl", resolver.addr()), &server, name);
    }
    // Without the shim curl cannot resolve the name (not tried: it would ask
    // the system's DNS, off the machine).
}

// ---------------------------------------------------------------------------
// C programs: hostent forms, threads, fork, errors, valgrind
// ---------------------------------------------------------------------------

fn shimcheck(resolver: SocketAddr, args: &[&str]) -> String {
    run_ok(with_shim(&built().shimcheck, resolver).args(args))
}

#[test]
fn hostent_forms_set_h_errno_and_refuse_small_buffers() {
    let resolver = start();
    let addr = resolver.addr();
    let web = set(&WEB);

    // gethostbyname: a member, the canonical name, no alias.
    let out = shimcheck(addr, &["ghbn", "Web%any.example.net", "0"]);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        fields[..6],
        ["name", "web.any.example.net", "type", "2", "length", "4"],
        "{out}"
    );
    assert_eq!(fields[6], "addr", "{out}");
    assert!(web.contains(&fields[7].parse().unwrap()), "{out}");
    assert_eq!(fields.len(), 8, "{out}");

    // gethostbyname2 for IPv6.
    let out = shimcheck(addr, &["ghbn", "six.any.example.net", "10"]);
    assert_eq!(
        out.trim(),
        format!("name six.any.example.net type 10 length 16 addr {SIX}")
    );

    // h_errno: HOST_NOT_FOUND (1), NO_DATA (4).
    assert_eq!(
        shimcheck(addr, &["ghbn", "nosuch.any.example.net", "0"]).trim(),
        "null h_errno 1"
    );
    assert_eq!(
        shimcheck(addr, &["ghbn", "six.any.example.net", "2"]).trim(),
        "null h_errno 4"
    );

    // The _r forms: ERANGE (34) with NETDB_INTERNAL (-1) on a small buffer,
    // the caller retries with a larger one.
    assert_eq!(
        shimcheck(addr, &["ghbn_r", "web.any.example.net", "0", "16"]).trim(),
        "rc 34 h_errno -1 result null"
    );
    let out = shimcheck(addr, &["ghbn_r", "web.any.example.net", "0", "256"]);
    assert!(
        out.starts_with("rc 0 h_errno 0 result set\nname web.any.example.net type 2"),
        "{out}"
    );
    let out = shimcheck(addr, &["ghbn_r", "big.any.example.net", "2", "8192"]);
    assert_eq!(
        out.matches(" addr ").count(),
        usize::from(BIG_MEMBERS),
        "{out}"
    );
    assert_eq!(
        shimcheck(addr, &["ghbn_r", "nosuch%any.example.net", "2", "256"]).trim(),
        "rc 0 h_errno 1 result null"
    );

    // getaddrinfo with NULL hints (glibc's defaults) and AI_CANONNAME.
    let out = shimcheck(
        addr,
        &["gai", "web.any.example.net", "-", "null", "0", "0", "0"],
    );
    assert_eq!(out.lines().count(), 3, "three socket types: {out}");
    let out = shimcheck(
        addr,
        &["gai", "dual%any.example.net", "443", "0", "1", "0", "2"],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "2 1 6 127.0.3.1 443 dual.any.example.net",
            "10 1 6 ::1 443 -"
        ],
        "{out}"
    );
}

#[test]
fn threads_and_fork_resolve_concurrently() {
    let resolver = start();
    let mut args = vec!["threads", "web.any.example.net", "16", "40", "8"];
    args.extend(WEB);
    let out = shimcheck(resolver.addr(), &args);
    assert_eq!(out.trim(), "threads 16 iterations 40 forks 8 problems 0");
}

#[test]
fn an_unreachable_resolver_is_a_temporary_failure_within_a_bound() {
    let shimcheck = &built().shimcheck;
    // A port nothing listens on: refused at once.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A socket that never answers: every attempt times out.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (resolver, at_least) in [
        (closed, Duration::ZERO),
        (silent.local_addr().unwrap(), Duration::from_millis(400)),
    ] {
        let mut command = with_shim(shimcheck, resolver);
        command
            .env("ANYCAST_TIMEOUT_MS", "200")
            .env("ANYCAST_ATTEMPTS", "2")
            .args(["gai", "web.any.example.net", "80", "0", "1", "0", "0"]);
        let start = Instant::now();
        let out = run_ok(&mut command);
        let elapsed = start.elapsed();
        assert_eq!(
            out.trim(),
            format!("error {EAI_AGAIN} Temporary failure in name resolution")
        );
        assert!(elapsed >= at_least, "{resolver}: {elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{resolver}: {elapsed:?}");

        let mut command = with_shim(shimcheck, resolver);
        command
            .env("ANYCAST_TIMEOUT_MS", "200")
            .env("ANYCAST_ATTEMPTS", "2")
            .args(["ghbn", "web.any.example.net", "0"]);
        assert_eq!(run_ok(&mut command).trim(), "null h_errno 2", "TRY_AGAIN");
        let mut command = with_shim(shimcheck, resolver);
        command
            .env("ANYCAST_TIMEOUT_MS", "200")
            .env("ANYCAST_ATTEMPTS", "2")
            .args(["ghbn_r", "web.any.example.net", "0", "1024"]);
        assert_eq!(
            run_ok(&mut command).trim(),
            "rc 11 h_errno 2 result null",
            "EAGAIN"
        );
    }
    // With the default timeouts (3 x 500 ms) too.
    let start = Instant::now();
    let out = shimcheck_at(silent.local_addr().unwrap());
    assert_eq!(
        out.trim(),
        format!("error {EAI_AGAIN} Temporary failure in name resolution")
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

fn shimcheck_at(resolver: SocketAddr) -> String {
    run_ok(with_shim(&built().shimcheck, resolver).args([
        "gai",
        "web.any.example.net",
        "80",
        "0",
        "1",
        "0",
        "0",
    ]))
}

#[test]
fn a_bad_configuration_warns_and_fails_anycast_names_only() {
    let resolver = start();
    // Not an IP literal: never resolved (that would recurse), never replaced.
    let output = run(with_shim(&built().shimcheck, resolver.addr())
        .env("ANYCAST_RESOLVER", "localhost:5300")
        .args(["gai", "web.any.example.net", "80", "0", "1", "0", "0"]));
    assert_eq!(
        stdout(&output).trim(),
        format!("error {EAI_FAIL} Non-recoverable failure in name resolution")
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("anycast-shim: ANYCAST_RESOLVER"),
        "{stderr}"
    );
    let out = run_ok(
        with_shim(&built().shimcheck, resolver.addr())
            .env("ANYCAST_RESOLVER", "localhost:5300")
            .args(["gai", "localhost", "80", "2", "1", "0", "0"]),
    );
    assert_eq!(out.trim(), "2 1 6 127.0.0.1 80 -");

    // The config file, when the environment says nothing.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shim.conf");
    std::fs::write(
        &file,
        format!(
            "# test\nresolver = {}\nzones = {ZONE}\nfilter = prefer-v6\n",
            resolver.addr()
        ),
    )
    .unwrap();
    let mut command = without_shim(&built().shimcheck);
    command
        .env("LD_PRELOAD", &built().shim)
        .env("ANYCAST_CONFIG", &file)
        .args(["gai", "dual.any.example.net", "80", "0", "1", "0", "0"]);
    assert_eq!(run_ok(&mut command).trim(), "10 1 6 ::1 80 -");
}

#[test]
fn valgrind_finds_no_leak_and_no_invalid_free() {
    let resolver = start();
    valgrind_shimcheck_loop(with_shim("valgrind", resolver.addr()));
}

/// Runs `shimcheck loop` (every entry point, three times) under `valgrind`,
/// the program `command` runs, and asserts that memcheck finds no error and
/// nothing lost.
fn valgrind_shimcheck_loop(mut command: Command) {
    command
        .args([
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99",
            "--child-silent-after-fork=yes",
        ])
        .arg(&built().shimcheck)
        .args(["loop", "web.any.example.net", "3"]);
    let output = run_with_deadline(&mut command, Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "valgrind: {}\n{}\n{stderr}",
        output.status,
        stdout(&output)
    );
    assert_eq!(stdout(&output).trim(), "loop 3 failures 0");
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    assert!(
        stderr.contains("definitely lost: 0 bytes")
            || stderr.contains("All heap blocks were freed"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Other names: untouched
// ---------------------------------------------------------------------------

/// Runs both and asserts the same standard output and exit status, and
/// nothing on the first's standard error; returns the first's output.
fn same_output(with: &mut Command, without: &mut Command) -> String {
    let a = run(with);
    let b = run(without);
    assert_eq!(
        (stdout(&a), a.status.code()),
        (stdout(&b), b.status.code()),
        "{with:?}"
    );
    assert!(
        a.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    stdout(&a)
}

#[test]
fn other_names_resolve_exactly_as_without_the_shim() {
    let resolver = start();
    let addr = resolver.addr();
    let shimcheck = &built().shimcheck;
    let both = |program: &Path, args: &[&str]| {
        let mut with = with_shim(program, addr);
        let mut without = without_shim(program);
        same_output(with.args(args), without.args(args))
    };
    let getent = Path::new("getent");
    // Only lookups that /etc/hosts or the C library answers: nothing may go
    // to the system's DNS. (`getent hosts localhost` asks for IPv6 first,
    // which /etc/hosts may not have.)
    for args in [
        &["ahosts", "localhost"][..],
        &["ahostsv4", "localhost"],
        &["hosts", "127.0.0.1"],
        &["ahosts", "::1"],
    ] {
        both(getent, args);
    }
    for args in [
        &["gai", "localhost", "http", "0", "0", "0", "2"][..],
        &["gai", "localhost", "-", "null", "0", "0", "0"],
        &["gai", "localhost", "no-such-service", "0", "1", "0", "0"],
        &["gai", "127.0.0.1", "80", "0", "0", "0", "4"],
        &["gai", "::1", "80", "0", "2", "0", "0"],
        // A scoped IPv6 literal has a `%` but is no anycast name.
        &["gai", "fe80::1%lo", "80", "0", "1", "0", "4"],
        // AI_NUMERICHOST: the shim stays out even for an anycast name.
        &["gai", "Web%any.example.net", "80", "0", "1", "0", "4"],
        &["gai", "web.any.example.net", "80", "0", "1", "0", "4"],
        &["gai", "-", "80", "0", "1", "0", "1"],
        &["ghbn", "localhost", "0"],
        &["ghbn", "localhost", "2"],
        &["ghbn_r", "localhost", "0", "1024"],
        &["ghbn_r", "localhost", "0", "8"],
    ] {
        both(shimcheck, args);
    }
    let out = both(
        Path::new("python3"),
        &[
            "-c",
            "import socket; print(socket.getaddrinfo('localhost', 80), socket.gethostbyname_ex('localhost'))",
        ],
    );
    assert!(out.contains("127.0.0.1"), "{out}");

    // And without an allocation more: the same count with the shim as
    // without, for getaddrinfo, gethostbyname and gethostbyname_r.
    let malloccount = &built().malloccount;
    for name in ["localhost", "127.0.0.1"] {
        let counted = |mut command: Command| {
            let out = run_ok(command.args([name, "50"]));
            out.trim()
                .strip_prefix("allocations ")
                .unwrap_or_else(|| panic!("{out}"))
                .parse::<u64>()
                .unwrap()
        };
        let with = counted(with_shim(malloccount, addr));
        let without = counted(without_shim(malloccount));
        assert!(without > 0, "the counter counts nothing");
        assert_eq!(
            with, without,
            "{name}: allocations with and without the shim"
        );
    }
}
