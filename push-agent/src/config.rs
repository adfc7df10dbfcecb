//! The agent's configuration: TOML in, one typed [`AgentConfig`] out.
//! `configs/agent.toml` is the commented reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anycast_config_file::{
    ConfigError, HumanDuration, KeySource, Source, Spanned, positive, positive_duration,
    read_secret, spanned,
};
use anycast_proto::push::{MAX_IN_FLIGHT, PushKey};
use serde::Deserialize;

use crate::passive::{LogFormat, NginxField, TimeUnit};
use crate::policy::PushPolicy;
use crate::smooth::SmoothingConfig;
pub use crate::status::StatusConfig;
use crate::status::StatusFormat;

/// Environment variable read for the key when `[key]` names neither `file`
/// nor `env`.
pub const DEFAULT_KEY_ENV: &str = "ANYCAST_PUSH_KEY";

/// The whole configuration, validated and typed.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The member's identity: the address and port it has in its groups.
    pub server: SocketAddr,
    /// The groups (ADNs) it belongs to.
    pub groups: Vec<String>,
    /// Where to push (each resolver's `/v1/push`).
    pub push_urls: Vec<String>,
    /// The signing key.
    pub key: PushKey,
    /// Active measurement, if enabled.
    pub active: Option<ActiveConfig>,
    /// Passive measurement, if enabled.
    pub passive: Option<PassiveConfig>,
    /// The server's status page (requests in flight), if read.
    pub status: Option<StatusConfig>,
    /// Smoothing of samples.
    pub smoothing: SmoothingConfig,
    /// Where the probe file goes.
    pub probe_file: ProbeFileConfig,
    /// When to push.
    pub policy: PushPolicy,
    /// Timeout of one push.
    pub push_timeout: Duration,
    /// For `https://` push URLs: CAs the resolvers' certificates may chain
    /// to, besides the system's roots.
    pub push_tls: anycast_daemon::tls::ClientTls,
    /// Self-registration, if configured.
    pub join: Option<JoinConfig>,
}

/// Self-registration: at start, the agent asks each resolver to add its
/// server to its groups (the resolver must allow it with a join token).
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The join token.
    pub token: String,
    /// The probe URL to register (default: the standard path on `server`).
    pub probe_url: Option<String>,
}

/// Active measurement: timing a small request through the real server.
#[derive(Debug, Clone)]
pub struct ActiveConfig {
    /// The URL timed (on loopback, beside the server).
    pub url: String,
    /// Time between measurements.
    pub interval: Duration,
    /// A measurement slower than this is a failure.
    pub timeout: Duration,
}

/// Passive measurement: reading request times from the access log.
#[derive(Debug, Clone)]
pub struct PassiveConfig {
    /// The access log.
    pub log: PathBuf,
    /// Which field holds the request time.
    pub format: LogFormat,
    /// How often the log is read.
    pub poll: Duration,
}

/// Where the probe file is published.
#[derive(Debug, Clone, Default)]
pub struct ProbeFileConfig {
    /// Written atomically here (in the server's docroot), if set.
    pub path: Option<PathBuf>,
    /// Served by the agent itself on this address, if set.
    pub listen: Option<SocketAddr>,
    /// Padded to at least this many bytes.
    pub size: usize,
}

impl AgentConfig {
    /// Reads and validates a config file.
    pub fn read(path: &Path) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_source(&Source::read(path)?, &|name| std::env::var_os(name))
    }

    /// Validates config text; `env` looks environment variables up (tests
    /// pass their own instead of mutating the process environment).
    pub fn from_source(
        source: &Source,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<AgentConfig, ConfigError> {
        let raw: RawAgent = source.parse()?;
        let err = |span: std::ops::Range<usize>, msg: String| source.error_at(Some(span), msg);

        if raw.groups.get_ref().is_empty() {
            return Err(err(raw.groups.span(), "name at least one group".into()));
        }
        if raw.push_urls.get_ref().is_empty() {
            return Err(err(
                raw.push_urls.span(),
                "name at least one push URL".into(),
            ));
        }
        for url in raw.push_urls.get_ref() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(err(
                    raw.push_urls.span(),
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }

        let key_span = raw.key.span();
        let key = raw.key.into_inner();
        // With neither `file` nor `env`, the default variable is read.
        let env_name = match (&key.file, &key.env) {
            (None, None) => Some(DEFAULT_KEY_ENV),
            (_, name) => name.as_deref(),
        };
        let secret = read_secret(key.file.as_deref(), env_name, env)
            .map_err(|m| err(key_span.clone(), m))?;
        let key = PushKey::new(&key.id, &secret).map_err(|e| err(key_span, e.to_string()))?;

        let active = match raw.active {
            None => None,
            Some(a) => Some(ActiveConfig {
                url: {
                    if !a.url.get_ref().starts_with("http://") {
                        return Err(err(a.url.span(), "the active URL must be http://".into()));
                    }
                    a.url.into_inner()
                },
                interval: positive_duration(source, a.interval)?,
                timeout: positive_duration(source, a.timeout)?,
            }),
        };
        let passive = match raw.passive {
            None => None,
            Some(p) => {
                let span = p.format.span();
                let format = match (p.format.into_inner(), p.regex, p.unit) {
                    (RawFormat::NginxRt, None, None) => LogFormat::Nginx(NginxField::RequestTime),
                    (RawFormat::NginxUht, None, None) => {
                        LogFormat::Nginx(NginxField::UpstreamHeaderTime)
                    }
                    (RawFormat::Apache, None, None) => LogFormat::Apache,
                    (RawFormat::Regex, Some(regex), Some(unit)) => {
                        let compiled = regex::Regex::new(regex.get_ref())
                            .map_err(|e| err(regex.span(), e.to_string()))?;
                        if compiled.capture_names().all(|n| n != Some("t")) {
                            return Err(err(
                                regex.span(),
                                "the regex needs a named capture `t`".into(),
                            ));
                        }
                        LogFormat::Regex {
                            regex: compiled,
                            unit: match unit {
                                RawUnit::S => TimeUnit::Seconds,
                                RawUnit::Ms => TimeUnit::Milliseconds,
                                RawUnit::Us => TimeUnit::Microseconds,
                            },
                        }
                    }
                    (RawFormat::Regex, _, _) => {
                        return Err(err(
                            span,
                            "format \"regex\" needs `regex` and `unit`".into(),
                        ));
                    }
                    _ => {
                        return Err(err(
                            span,
                            "`regex` and `unit` go only with format \"regex\"".into(),
                        ));
                    }
                };
                Some(PassiveConfig {
                    log: p.log,
                    format,
                    poll: positive_duration(source, p.poll)?,
                })
            }
        };
        let status = match raw.status {
            None => None,
            Some(st) => Some(StatusConfig {
                url: {
                    if !st.url.get_ref().starts_with("http://") {
                        return Err(err(
                            st.url.span(),
                            "the status page URL must be http://".into(),
                        ));
                    }
                    st.url.into_inner()
                },
                format: match st.format {
                    RawStatusFormat::Nginx => StatusFormat::Nginx,
                    RawStatusFormat::Apache => StatusFormat::Apache,
                    RawStatusFormat::PhpFpm => StatusFormat::PhpFpm,
                },
                workers: match st.workers {
                    None => None,
                    Some(w) if (1..=MAX_IN_FLIGHT).contains(w.get_ref()) => Some(w.into_inner()),
                    Some(w) => {
                        return Err(err(
                            w.span(),
                            format!("workers must be 1 to {MAX_IN_FLIGHT}"),
                        ));
                    }
                },
                interval: positive_duration(source, st.interval)?,
                timeout: positive_duration(source, st.timeout)?,
            }),
        };
        if active.is_none() && passive.is_none() {
            return Err(source.error_at(None, "enable [active] or [passive] measurement (or both)"));
        }

        let s = raw.smoothing;
        let clamp_span = s.clamp.span();
        let clamp = s.clamp.into_inner();
        if !(clamp.is_finite() && clamp > 1.0) {
            return Err(err(clamp_span, "clamp must be a number above 1".into()));
        }
        let smoothing = SmoothingConfig {
            time_constant: positive_duration(source, s.time_constant)?,
            clamp,
            down_after: positive(source, s.down_after)?,
            stale_after: positive_duration(source, s.stale_after)?,
        };

        let pp = raw.push;
        let threshold_span = pp.threshold.span();
        let threshold = pp.threshold.into_inner();
        if !(threshold.is_finite() && threshold >= 0.0) {
            return Err(err(
                threshold_span,
                "threshold must be a number of at least 0".into(),
            ));
        }
        let heartbeat_span = pp.heartbeat.span();
        let policy = PushPolicy {
            threshold,
            floor: pp.floor.0,
            min_interval: positive_duration(source, pp.min_interval)?,
            rise_interval: positive_duration(source, pp.rise_interval)?,
            queue_interval: positive_duration(source, pp.queue_interval)?,
            heartbeat: positive_duration(source, pp.heartbeat)?,
            max_backoff: positive_duration(source, pp.max_backoff)?,
        };
        if policy.heartbeat < policy.min_interval {
            return Err(err(
                heartbeat_span,
                "heartbeat must not be shorter than min_interval".into(),
            ));
        }

        let join = match raw.join {
            None => None,
            Some(j) => {
                let span = j.span();
                let j = j.into_inner();
                let token = read_secret(j.file.as_deref(), j.env.as_deref(), env)
                    .map_err(|m| err(span.clone(), m))?;
                let token = String::from_utf8(token)
                    .map_err(|_| err(span.clone(), "the join token is not UTF-8".into()))?
                    .trim()
                    .to_owned();
                if let Some(url) = &j.probe_url
                    && !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    return Err(err(
                        span,
                        format!("probe_url {url:?} is not an http(s) URL"),
                    ));
                }
                Some(JoinConfig {
                    token,
                    probe_url: j.probe_url,
                })
            }
        };

        let push_tls = match pp.ca_file {
            None => anycast_daemon::tls::ClientTls::default(),
            Some(file) => {
                let span = file.span();
                let tls = anycast_daemon::tls::ClientTls {
                    ca: Some(
                        anycast_daemon::tls::Pem::read(file.get_ref())
                            .map_err(|why| err(span.clone(), why))?,
                    ),
                    identity: None,
                };
                tls.check().map_err(|why| err(span, why))?;
                tls
            }
        };

        Ok(AgentConfig {
            server: raw.server,
            groups: raw.groups.into_inner(),
            push_urls: raw.push_urls.into_inner(),
            key,
            active,
            passive,
            status,
            smoothing,
            probe_file: ProbeFileConfig {
                path: raw.probe_file.path,
                listen: raw.probe_file.listen,
                size: raw.probe_file.size,
            },
            policy,
            push_timeout: positive_duration(source, pp.timeout)?,
            push_tls,
            join,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    server: SocketAddr,
    groups: Spanned<Vec<String>>,
    push_urls: Spanned<Vec<String>>,
    key: Spanned<KeySource>,
    active: Option<RawActive>,
    passive: Option<RawPassive>,
    status: Option<RawStatus>,
    #[serde(default)]
    smoothing: RawSmoothing,
    #[serde(default)]
    probe_file: RawProbeFile,
    #[serde(default)]
    push: RawPush,
    join: Option<Spanned<RawJoin>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJoin {
    file: Option<PathBuf>,
    env: Option<String>,
    probe_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActive {
    url: Spanned<String>,
    #[serde(default = "default_active_interval")]
    interval: Spanned<HumanDuration>,
    #[serde(default = "default_timeout")]
    timeout: Spanned<HumanDuration>,
}

fn default_active_interval() -> Spanned<HumanDuration> {
    spanned(Duration::from_millis(200).into())
}

fn default_timeout() -> Spanned<HumanDuration> {
    spanned(Duration::from_secs(2).into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPassive {
    log: PathBuf,
    format: Spanned<RawFormat>,
    regex: Option<Spanned<String>>,
    unit: Option<RawUnit>,
    #[serde(default = "default_poll")]
    poll: Spanned<HumanDuration>,
}

fn default_poll() -> Spanned<HumanDuration> {
    spanned(Duration::from_millis(250).into())
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawFormat {
    NginxRt,
    NginxUht,
    Apache,
    Regex,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawUnit {
    S,
    Ms,
    Us,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    url: Spanned<String>,
    format: RawStatusFormat,
    workers: Option<Spanned<u32>>,
    #[serde(default = "default_status_interval")]
    interval: Spanned<HumanDuration>,
    #[serde(default = "default_status_timeout")]
    timeout: Spanned<HumanDuration>,
}

fn default_status_interval() -> Spanned<HumanDuration> {
    spanned(Duration::from_millis(100).into())
}

fn default_status_timeout() -> Spanned<HumanDuration> {
    spanned(Duration::from_secs(1).into())
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawStatusFormat {
    Nginx,
    Apache,
    PhpFpm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSmoothing {
    time_constant: Spanned<HumanDuration>,
    clamp: Spanned<f64>,
    down_after: Spanned<u32>,
    stale_after: Spanned<HumanDuration>,
}

impl Default for RawSmoothing {
    fn default() -> Self {
        let d = SmoothingConfig::default();
        Self {
            time_constant: spanned(d.time_constant.into()),
            clamp: spanned(d.clamp),
            down_after: spanned(d.down_after),
            stale_after: spanned(d.stale_after.into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawProbeFile {
    path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    size: usize,
}

/// The probe file's size when the config names none: the paper's "dummy
/// file", big enough that a probe transfers data as a small page does.
pub const DEFAULT_PROBE_FILE_SIZE: usize = 512;

impl Default for RawProbeFile {
    fn default() -> Self {
        RawProbeFile {
            path: None,
            listen: None,
            size: DEFAULT_PROBE_FILE_SIZE,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPush {
    threshold: Spanned<f64>,
    floor: HumanDuration,
    min_interval: Spanned<HumanDuration>,
    rise_interval: Spanned<HumanDuration>,
    queue_interval: Spanned<HumanDuration>,
    heartbeat: Spanned<HumanDuration>,
    max_backoff: Spanned<HumanDuration>,
    timeout: Spanned<HumanDuration>,
    ca_file: Option<Spanned<std::path::PathBuf>>,
}

impl Default for RawPush {
    fn default() -> Self {
        let d = PushPolicy::default();
        Self {
            threshold: spanned(d.threshold),
            floor: d.floor.into(),
            min_interval: spanned(d.min_interval.into()),
            rise_interval: spanned(d.rise_interval.into()),
            queue_interval: spanned(d.queue_interval.into()),
            heartbeat: spanned(d.heartbeat.into()),
            max_backoff: spanned(d.max_backoff.into()),
            timeout: spanned(Duration::from_secs(2).into()),
            ca_file: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef-secret";

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let env = |name: &str| (name == "ANYCAST_PUSH_KEY").then(|| KEY.into());
        AgentConfig::from_source(&Source::new(text, Path::new("agent.toml")), &env)
    }

    const BASE: &str = r#"
server = "127.0.0.1:8080"
groups = ["web.any.example.net"]
push_urls = ["http://127.0.0.1:8053/v1/push"]
[key]
id = "k1"
[active]
url = "http://127.0.0.1:8080/"
"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.key.id, "k1");
        let a = c.active.unwrap();
        assert_eq!(a.interval, Duration::from_millis(200));
        assert_eq!(c.smoothing, SmoothingConfig::default());
        assert_eq!(c.policy, PushPolicy::default());
        assert!(c.passive.is_none());
    }

    #[test]
    fn passive_formats() {
        let c = parse(&format!(
            "{BASE}[passive]\nlog = \"/var/log/nginx/access.log\"\nformat = \"regex\"\nregex = 'took (?P<t>[0-9.]+)'\nunit = \"ms\"\n"
        ))
        .unwrap();
        assert!(matches!(
            c.passive.unwrap().format,
            LogFormat::Regex {
                unit: TimeUnit::Milliseconds,
                ..
            }
        ));
        let e = parse(&format!("{BASE}[passive]\nlog = \"/x\"\nformat = \"regex\"\nregex = 'took ([0-9]+)'\nunit = \"ms\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.toml:12:") && e.contains("named capture"),
            "{e}"
        );
        let e = parse(&format!(
            "{BASE}[passive]\nlog = \"/x\"\nformat = \"nginx\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("agent.toml:11:") && e.contains("format"), "{e}");
    }

    #[test]
    fn status_section_with_its_defaults() {
        let c = parse(BASE).unwrap();
        assert!(c.status.is_none(), "no status page unless configured");
        let c = parse(&format!(
            "{BASE}[status]\nurl = \"http://127.0.0.1:8080/nginx_status\"\nformat = \"nginx\"\nworkers = 16\n"
        ))
        .unwrap();
        let s = c.status.unwrap();
        assert_eq!(s.url, "http://127.0.0.1:8080/nginx_status");
        assert_eq!(s.format, StatusFormat::Nginx);
        assert_eq!(s.workers, Some(16));
        assert_eq!(s.interval, Duration::from_millis(100));
        assert_eq!(s.timeout, Duration::from_secs(1));
        for (name, format) in [
            ("apache", StatusFormat::Apache),
            ("php-fpm", StatusFormat::PhpFpm),
        ] {
            let c = parse(&format!(
                "{BASE}[status]\nurl = \"http://127.0.0.1/s\"\nformat = \"{name}\"\ninterval = \"50ms\"\ntimeout = \"300ms\"\n"
            ))
            .unwrap();
            let s = c.status.unwrap();
            assert_eq!(
                (s.format, s.workers, s.interval, s.timeout),
                (
                    format,
                    None,
                    Duration::from_millis(50),
                    Duration::from_millis(300)
                )
            );
        }
    }

    /// configs/agent.toml shows "every configuration field, with its
    /// default": left out, each field it sets must give the same
    /// configuration, but for the fields that have no default (required)
    /// and those whose value is the example site's.
    #[test]
    fn the_example_shows_each_fields_real_default() {
        let example = include_str!("../../configs/agent.toml");
        let site = [
            "server",
            "groups",
            "push_urls",
            "key.id",
            "key.env",
            "active.url",
            "probe_file.path",
        ];
        let (checked, wrong) = anycast_config_file::fields_off_their_default(example, &site, parse);
        assert!(
            wrong.is_empty(),
            "configs/agent.toml shows these fields with another value than their default: {wrong:?}"
        );
        assert!(checked >= 10, "only {checked} fields checked");
    }

    #[test]
    fn the_example_status_section_parses_once_uncommented() {
        // configs/agent.toml documents [status] commented out (a server
        // without a status page is the common case); uncommented, it must
        // parse and give the documented defaults.
        let example = include_str!("../../configs/agent.toml");
        let (before, section) = example
            .split_once("# [status]\n")
            .expect("the example documents [status]");
        let section: String = section
            .lines()
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let text = format!("{before}[status]\n{section}");
        let c = parse(&text).unwrap();
        let s = c.status.expect("the section was read");
        assert_eq!(
            (s.format, s.workers, s.interval, s.timeout),
            (
                StatusFormat::Nginx,
                Some(16),
                Duration::from_millis(100),
                Duration::from_secs(1)
            )
        );
    }

    #[test]
    fn status_mistakes_name_the_line_and_field() {
        // BASE starts with an empty line: [status] is line 9.
        let status = |body: &str| {
            parse(&format!("{BASE}[status]\n{body}"))
                .unwrap_err()
                .to_string()
        };
        let e = status("url = \"http://127.0.0.1/s\"\nformat = \"lighttpd\"\n");
        assert!(
            e.starts_with("agent.toml:11:") && e.contains("field `format` in [status]"),
            "{e}"
        );
        let e = status("url = \"http://127.0.0.1/s\"\nformat = \"nginx\"\nworkers = 0\n");
        assert!(
            e.starts_with("agent.toml:12:")
                && e.contains("field `workers` in [status]")
                && e.contains("workers must be 1 to 1000000"),
            "{e}"
        );
        let e = status("url = \"http://127.0.0.1/s\"\nformat = \"nginx\"\nworkers = -4\n");
        assert!(
            e.starts_with("agent.toml:12:") && e.contains("field `workers` in [status]"),
            "{e}"
        );
        let e = status("url = \"https://127.0.0.1/s\"\nformat = \"nginx\"\n");
        assert!(
            e.starts_with("agent.toml:10:") && e.contains("must be http://"),
            "{e}"
        );
        let e = status("url = \"http://127.0.0.1/s\"\nformat = \"nginx\"\ninterval = \"0ms\"\n");
        assert!(
            e.starts_with("agent.toml:12:")
                && e.contains("field `interval` in [status]")
                && e.contains("longer than zero"),
            "{e}"
        );
        let e = status("url = \"http://127.0.0.1/s\"\nformat = \"nginx\"\ntimout = \"1s\"\n");
        assert!(
            e.starts_with("agent.toml:12:") && e.contains("timout"),
            "{e}"
        );
        let e = status("format = \"nginx\"\n");
        assert!(e.contains("url"), "{e}");
    }

    #[test]
    fn key_problems_are_clear() {
        let e = parse(&BASE.replace("id = \"k1\"", "id = \"k1\"\nenv = \"NOPE\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("NOPE is not set"), "{e}");
        let e = parse(&BASE.replace("id = \"k1\"", "id = \"k1\"\nfile = \"/nonexistent/key\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read key file /nonexistent/key"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, "tiny\n").unwrap();
        let e = parse(&BASE.replace("id = \"k1\"", &format!("id = \"k1\"\nfile = {:?}", short)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 16"), "{e}");
    }

    #[test]
    fn other_mistakes() {
        let e = parse(&BASE.replace("[active]\nurl = \"http://127.0.0.1:8080/\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("enable [active] or [passive]"), "{e}");
        let e = parse(&BASE.replace(
            "push_urls = [\"http://127.0.0.1:8053/v1/push\"]",
            "push_urls = []",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("agent.toml:4:") && e.contains("push URL"), "{e}");
        let e = parse(&format!("{BASE}[push]\nheartbeat = \"100ms\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("heartbeat must not be shorter"), "{e}");
        let e = parse(&format!("{BASE}[smoothing]\nclamp = 0.5\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.toml:10:") && e.contains("above 1"), "{e}");
    }
}
