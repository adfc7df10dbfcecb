//! A real nginx on loopback (Debian's package), as the replicated server the
//! agent measures and the resolver probes.
//!
//! [`Nginx::start`] writes a config into a temp dir that holds everything
//! nginx writes (pid, logs, temp paths) and starts nginx in the foreground
//! on a free port of the given address. The config is
//! `configs/nginx/anycast.conf`'s advice put to work:
//!
//! * `log_format anycast` logs `rt=$request_time uht=$upstream_header_time`,
//!   which the agent's passive mode reads (`format = "nginx-rt"` or
//!   `"nginx-uht"`);
//! * the probe file is a static file of the docroot, written by the agent;
//! * `/nginx_status` is `stub_status`, for the agent's `[status]`;
//! * every other path is proxied to a backend (a test web server whose
//!   delay the test sets), so a slow application makes a slow nginx.
//!
//! A port taken between our choosing it and nginx binding it makes nginx
//! exit; it is then started again on another port, a few times. Dropping it
//! stops nginx (SIGQUIT to the master, then SIGKILL).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::authority::find_program;

/// How long nginx may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How often the start is polled.
const POLL: Duration = Duration::from_millis(20);
/// Starts with a lost port before giving up.
const PORT_ATTEMPTS: usize = 3;

/// A running nginx, stopped when dropped.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    tls: bool,
}

impl Nginx {
    /// nginx on a free port of `ip`, proxying everything but the docroot's
    /// `.well-known/` and `/nginx_status` to `backend`.
    pub fn start(ip: &str, backend: SocketAddr) -> Nginx {
        Nginx::start_with(ip, backend, None)
    }

    /// [`Nginx::start`] serving HTTPS with `cert` and `key` (PEM files).
    pub fn start_tls(ip: &str, backend: SocketAddr, cert: &Path, key: &Path) -> Nginx {
        Nginx::start_with(ip, backend, Some((cert, key)))
    }

    fn start_with(ip: &str, backend: SocketAddr, tls: Option<(&Path, &Path)>) -> Nginx {
        let nginx = find_program("nginx", "nginx-light");
        let dir = tempfile::tempdir().expect("a temp dir");
        for sub in ["docroot/.well-known", "logs", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("nginx's directories");
        }
        for attempt in 1..=PORT_ATTEMPTS {
            let port = TcpListener::bind((ip, 0))
                .and_then(|l| l.local_addr())
                .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
                .port();
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("an address");
            std::fs::write(
                dir.path().join("nginx.conf"),
                config(dir.path(), addr, backend, tls),
            )
            .expect("nginx.conf");
            let mut child = Command::new(&nginx)
                .args(control_args(dir.path()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start nginx: {e}"));
            match wait_accepting(&mut child, addr, dir.path()) {
                Ok(()) => {
                    return Nginx {
                        child,
                        addr,
                        dir,
                        tls: tls.is_some(),
                    };
                }
                Err(why) => {
                    stop(&mut child);
                    if attempt == PORT_ATTEMPTS || !why.contains("in use") {
                        panic!("nginx on {addr} did not start: {why}");
                    }
                    eprintln!("nginx on {addr}: {why}; again on another port");
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The address it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr/`, or `https://addr/` over TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    /// The root of the static files (the probe file goes under it).
    pub fn docroot(&self) -> PathBuf {
        self.dir.path().join("docroot")
    }

    /// The access log, in `log_format anycast`.
    pub fn access_log(&self) -> PathBuf {
        self.dir.path().join("logs/access.log")
    }

    /// `nginx -s reopen`: what logrotate does after renaming the log.
    pub fn reopen_logs(&self) {
        let status = Command::new(find_program("nginx", "nginx-light"))
            .args(control_args(self.dir.path()))
            .args(["-s", "reopen"])
            .status()
            .expect("nginx -s reopen");
        assert!(status.success(), "nginx -s reopen failed");
    }

    /// The tail of its error log.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// The arguments that point nginx at the config and files in `dir`.
fn control_args(dir: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "-p".into(),
        dir.into(),
        "-c".into(),
        dir.join("nginx.conf").into(),
        "-e".into(),
        dir.join("logs/error.log").into(),
    ]
}

/// Waits until nginx accepts connections on `addr`; `Err` with its error
/// log if it exits or does not within [`START_DEADLINE`].
fn wait_accepting(child: &mut Child, addr: SocketAddr, dir: &Path) -> Result<(), String> {
    let error_log = || std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default();
    let end = Instant::now() + START_DEADLINE;
    while Instant::now() < end {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}): {}", error_log()));
        }
        if TcpStream::connect_timeout(&addr, POLL).is_ok() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    Err(format!(
        "not accepting after {START_DEADLINE:?}: {}",
        error_log()
    ))
}

/// Stops nginx: SIGQUIT (a graceful stop of the master and its workers),
/// then SIGKILL after 5 s.
fn stop(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-QUIT", &pid]).status();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The config of a test nginx in `dir` on `addr`.
fn config(
    dir: &Path,
    addr: SocketAddr,
    backend: SocketAddr,
    tls: Option<(&Path, &Path)>,
) -> String {
    let dir = dir.display();
    let listen = match tls {
        Some((cert, key)) => format!(
            "listen {addr} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};",
            cert.display(),
            key.display()
        ),
        None => format!("listen {addr};"),
    };
    format!(
        r#"# As root, the workers run as root too (the temp dir is ours alone);
# otherwise nginx ignores this.
user root;
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log info;

events {{
    worker_connections 512;
}}

http {{
    # configs/nginx/anycast.conf: the times the agent reads.
    log_format anycast '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                       'rt=$request_time uht=$upstream_header_time';
    access_log {dir}/logs/access.log anycast;

    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    default_type application/octet-stream;

    upstream application {{
        server {backend};
        keepalive 8;
    }}

    server {{
        {listen}
        root {dir}/docroot;

        # The probe file the agent writes; never cached by clients.
        location /.well-known/ {{
            add_header Cache-Control "no-store";
        }}
        location = /nginx_status {{
            stub_status;
            access_log off;
        }}
        location / {{
            proxy_pass http://application;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}
