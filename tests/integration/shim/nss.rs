//! The NSS module, `libnss_anycast.so.2`: programs run without `LD_PRELOAD`,
//! in a private mount namespace (`unshare -m`) whose `/etc/nsswitch.conf`
//! says `hosts: files anycast dns` (a file of the test, bind-mounted) and
//! whose `/etc/resolv.conf` names only 127.0.0.1, so that a name the module
//! passes on to glibc's DNS module never leaves the machine. The module is
//! found through `LD_LIBRARY_PATH`, as glibc `dlopen`s it by its soname.

use super::*;

/// The `hosts` line the module is documented with.
const HOSTS: &str = "files anycast dns";
/// The line that also lets the module's temporary failures stand (the DNS
/// module does not get the last word on an anycast name).
const HOSTS_AUTHORITATIVE: &str = "files anycast [!NOTFOUND=return] dns";
/// The line without the module.
const HOSTS_WITHOUT: &str = "files dns";

/// Mounts the two files over `/etc` in a new mount namespace, then runs the
/// program: `sh -c SCRIPT nss NSSWITCH RESOLV PROGRAM ARGS...`.
const SCRIPT: &str = r#"mount --bind "$1" /etc/nsswitch.conf && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@""#;

/// Files of one namespace, kept while its commands run.
struct Namespace {
    dir: tempfile::TempDir,
}

impl Namespace {
    fn new(hosts: &str) -> Namespace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nsswitch.conf"),
            format!("hosts: {hosts}\n"),
        )
        .unwrap();
        // Refused at once on loopback: nothing listens on port 53 there.
        std::fs::write(
            dir.path().join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        Namespace { dir }
    }

    /// `program` in the namespace with the module pointed at `resolver`
    /// (through the environment) and no `LD_PRELOAD`.
    fn command(&self, resolver: SocketAddr, program: impl AsRef<OsStr>) -> Command {
        let mut command = self.bare(program);
        command
            .env("ANYCAST_RESOLVER", resolver.to_string())
            .env("ANYCAST_ZONES", ZONE);
        command
    }

    /// `program` in the namespace with none of the module's variables.
    fn bare(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = without_shim("unshare");
        command
            .args(["-m", "sh", "-c", SCRIPT, "nss"])
            .arg(self.dir.path().join("nsswitch.conf"))
            .arg(self.dir.path().join("resolv.conf"))
            .arg(program)
            .env("LD_LIBRARY_PATH", &built().nss_dir);
        command
    }
}

/// The namespace with the module, and a check that the namespace works
/// here at all (it needs root, as the CI's and the test script's runs are).
fn namespace(hosts: &str) -> Namespace {
    let namespace = Namespace::new(hosts);
    let output = run(namespace.bare("cat").arg("/etc/nsswitch.conf"));
    assert!(
        output.status.success() && stdout(&output) == format!("hosts: {hosts}\n"),
        "cannot run a program in a private mount namespace (unshare -m needs root): {output:?}"
    );
    namespace
}

#[test]
fn getent_and_python_resolve_both_forms_without_ld_preload() {
    let resolver = start();
    let ns = namespace(HOSTS);
    let web = set(&WEB);

    // getaddrinfo goes through gethostbyname4_r, gethostbyname2 through
    // gethostbyname3_r.
    getent_answers_both_forms(|| ns.command(resolver.addr(), "getent"));

    // The set, every member once per socket type; a set too large for
    // glibc's first buffer (it grows the buffer and asks again).
    let out = run_ok(
        ns.command(resolver.addr(), "getent")
            .args(["ahosts", "pool.any.example.net"]),
    );
    assert_eq!(
        first_column(&out).into_iter().collect::<BTreeSet<_>>(),
        set(&POOL),
        "{out}"
    );
    let out = run_ok(
        ns.command(resolver.addr(), "getent")
            .args(["ahostsv4", "big%any.example.net"]),
    );
    assert_eq!(
        first_column(&out).into_iter().collect::<BTreeSet<_>>(),
        big_members().iter().map(|a| a.parse().unwrap()).collect(),
        "{out}"
    );

    // No such name: not found (exit status 2), both forms, both databases.
    for name in ["nosuch.any.example.net", "nosuch%any.example.net"] {
        for database in ["ahosts", "hosts"] {
            let output = run(ns.command(resolver.addr(), "getent").args([database, name]));
            assert_eq!(
                output.status.code(),
                Some(2),
                "{database} {name}: {output:?}"
            );
        }
    }

    // python's socket module: families, hints, gethostbyname_ex.
    let result = python(
        ns.command(resolver.addr(), "python3"),
        r#"
S = socket
print(json.dumps({
    "canon": gai("Web%any.example.net", "http", S.AF_INET, S.SOCK_STREAM, 0, S.AI_CANONNAME),
    "dual": gai("dual.any.example.net", 80, 0, S.SOCK_STREAM),
    "dual_v4": gai("dual%any.example.net", 80, S.AF_INET, S.SOCK_STREAM),
    "dual_v6": gai("dual%any.example.net", 80, S.AF_INET6, S.SOCK_STREAM),
    "nosuch": gai("nosuch%any.example.net", 80),
    "ex": ghbn_ex("Pool%any.example.net"),
}))
"#,
    );
    let canon = &result["canon"];
    assert!(web.contains(&addresses_of(canon)[0]), "{canon}");
    assert_eq!(canon[0][5], "web.any.example.net", "{canon}");
    assert_eq!(
        addresses_of(&result["dual"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        set(&DUAL),
        "{result}"
    );
    assert_eq!(
        addresses_of(&result["dual_v4"]),
        [DUAL[0].parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        addresses_of(&result["dual_v6"]),
        [DUAL[1].parse::<IpAddr>().unwrap()]
    );
    assert_eq!(error_of(&result["nosuch"]), EAI_NONAME, "{result}");
    let ex = &result["ex"];
    assert_eq!(ex[0], "pool.any.example.net", "{ex}");
    let listed: BTreeSet<IpAddr> = ex[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(listed, set(&POOL), "{ex}");
}

#[test]
fn other_names_resolve_exactly_as_without_the_module() {
    let resolver = start();
    let with = namespace(HOSTS);
    let without = Namespace::new(HOSTS_WITHOUT);
    let both = |program: &Path, args: &[&str]| {
        let mut a = with.command(resolver.addr(), program);
        let mut b = without.command(resolver.addr(), program);
        same_output(a.args(args), b.args(args));
    };
    // /etc/hosts and literals, and a name no module knows (the DNS module
    // asks 127.0.0.1:53, which refuses).
    for args in [
        &["ahosts", "localhost"][..],
        &["ahostsv4", "localhost"],
        &["hosts", "127.0.0.1"],
        &["ahosts", "::1"],
        &["ahosts", "nosuch.invalid"],
    ] {
        both(Path::new("getent"), args);
    }
    for args in [
        &["gai", "localhost", "http", "0", "0", "0", "2"][..],
        &["gai", "fe80::1%lo", "80", "0", "1", "0", "4"],
        &["gai", "nosuch.invalid", "80", "0", "1", "0", "0"],
        &["ghbn", "localhost", "0"],
        &["ghbn_r", "localhost", "0", "1024"],
    ] {
        both(&built().shimcheck, args);
    }
}

#[test]
fn curl_and_sixteen_threads_resolve_through_the_module() {
    let (server, resolver) = site();
    let ns = namespace(HOSTS);
    curl_fetches(
        ns.command(resolver.addr(), "curl"),
        &server,
        "site.any.example.net",
    );

    let mut args = vec!["threads", "Web%any.example.net", "16", "40", "8"];
    args.extend(WEB);
    let out = run_ok(ns.command(resolver.addr(), &built().shimcheck).args(&args));
    assert_eq!(out.trim(), "threads 16 iterations 40 forks 8 problems 0");
}

#[test]
fn hostent_forms_follow_glibcs_conventions() {
    let resolver = start();
    let ns = namespace(HOSTS);
    let check = |args: &[&str]| run_ok(ns.command(resolver.addr(), &built().shimcheck).args(args));
    let out = check(&["ghbn", "Web%any.example.net", "0"]);
    assert!(
        out.starts_with("name web.any.example.net type 2 length 4 addr 127.0.1."),
        "{out}"
    );
    assert_eq!(
        check(&["ghbn", "six.any.example.net", "10"]).trim(),
        format!("name six.any.example.net type 10 length 16 addr {SIX}")
    );
    // HOST_NOT_FOUND for no such name; the DNS module, asked next, agrees.
    assert_eq!(
        check(&["ghbn", "nosuch%any.example.net", "0"]).trim(),
        "null h_errno 1"
    );
    // A buffer too small: the module says ERANGE, glibc hands it on.
    assert_eq!(
        check(&["ghbn_r", "web.any.example.net", "0", "16"]).trim(),
        "rc 34 h_errno -1 result null"
    );
    let out = check(&["ghbn_r", "big.any.example.net", "2", "8192"]);
    assert_eq!(
        out.matches(" addr ").count(),
        usize::from(BIG_MEMBERS),
        "{out}"
    );
}

#[test]
fn a_stopped_resolver_is_a_temporary_failure_within_a_second_and_a_half() {
    let resolver = start();
    let addr = resolver.addr();
    let ns = namespace(HOSTS_AUTHORITATIVE);
    let gai = |name: &str| {
        let start = Instant::now();
        let out = run_ok(
            ns.command(addr, &built().shimcheck)
                .args(["gai", name, "80", "2", "1", "0", "0"]),
        );
        (out.trim().to_owned(), start.elapsed())
    };
    let (out, _) = gai("Web%any.example.net");
    assert!(out.starts_with("2 1 6 127.0.1."), "{out}");
    drop(resolver);
    for name in ["Web%any.example.net", "web.any.example.net"] {
        let (out, elapsed) = gai(name);
        assert_eq!(
            out,
            format!("error {EAI_AGAIN} Temporary failure in name resolution"),
            "{name}"
        );
        assert!(elapsed < Duration::from_millis(1500), "{name}: {elapsed:?}");
    }
    let out =
        run_ok(
            ns.command(addr, &built().shimcheck)
                .args(["ghbn", "web.any.example.net", "0"]),
        );
    assert_eq!(out.trim(), "null h_errno 2", "TRY_AGAIN");
    // Other names still resolve.
    let out = run_ok(ns.command(addr, "getent").args(["ahostsv4", "localhost"]));
    assert!(out.starts_with("127.0.0.1"), "{out}");
}

#[test]
fn the_module_reads_the_config_file() {
    let resolver = start();
    let ns = namespace(HOSTS);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shim.conf");
    std::fs::write(
        &file,
        format!(
            "resolver = {}\nzones = {ZONE}\nfilter = prefer-v6\n",
            resolver.addr()
        ),
    )
    .unwrap();
    let out = run_ok(
        ns.bare(&built().shimcheck)
            .env("ANYCAST_CONFIG", &file)
            .args(["gai", "dual.any.example.net", "80", "0", "1", "0", "0"]),
    );
    assert_eq!(out.trim(), "10 1 6 ::1 80 -");
    // A bad value: one warning naming the file and line, on the first lookup.
    std::fs::write(&file, "resolver = localhost:53\n").unwrap();
    let output = run(ns
        .bare(&built().shimcheck)
        .env("ANYCAST_CONFIG", &file)
        .args(["gai", "Web%any.example.net", "80", "0", "1", "0", "0"]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("anycast-nss: {}:1:", file.display())),
        "{stderr}"
    );
}

#[test]
fn valgrind_finds_no_error_and_no_leak_in_the_module() {
    let resolver = start();
    let ns = namespace(HOSTS);
    valgrind_shimcheck_loop(ns.command(resolver.addr(), "valgrind"));
}
