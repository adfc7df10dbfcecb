//! The client side's configuration (the shim's and the NSS module's): a small
//! `key = value` file, overridden key by key by `ANYCAST_*` environment
//! variables. Read once, when the library loads or on its first lookup.
//!
//! Parsing is pure ([`Config::from_sources`]): the caller hands in the file's
//! text and a lookup for the environment, so tests need neither.

use std::net::SocketAddr;
use std::time::Duration;

use anycast_proto::Zone;

/// Where the resolver is when nothing says otherwise.
pub const DEFAULT_RESOLVER: &str = "127.0.0.1:5300";
/// The config file read when `ANYCAST_CONFIG` does not name another.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/anycast/shim.conf";
/// How long one UDP attempt waits for its answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// UDP attempts per lookup.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// Bounds on the per-attempt timeout, in milliseconds.
const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=10_000;
/// Bounds on the number of attempts.
const ATTEMPTS_RANGE: std::ops::RangeInclusive<u32> = 1..=5;
/// A config file longer than this is refused (it is a few lines).
const MAX_FILE_LEN: usize = 64 * 1024;

/// How the shim chooses among the addresses the resolver answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Every address, in the resolver's order (its pick first); IPv4 before
    /// IPv6 when both families were asked for.
    None,
    /// One address, uniformly at random among those answered.
    Random,
    /// One address: the first IPv4 one, else the first IPv6 one.
    PreferV4,
    /// One address: the first IPv6 one, else the first IPv4 one.
    PreferV6,
}

impl Filter {
    fn parse(text: &str) -> Option<Filter> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "none" | "all" => Some(Filter::None),
            "random" => Some(Filter::Random),
            "prefer-v4" | "prefer-ipv4" | "v4" => Some(Filter::PreferV4),
            "prefer-v6" | "prefer-ipv6" | "v6" => Some(Filter::PreferV6),
            _ => None,
        }
    }
}

/// Everything the shim or the NSS module reads at load time.
#[derive(Debug, Clone)]
pub struct Config {
    /// Which library this is, the prefix of its lines on stderr
    /// (`anycast-shim`, `anycast-nss`).
    pub program: &'static str,
    /// The anycast resolver; `Err` holds why the configured value is unusable
    /// (anycast lookups then fail with `EAI_FAIL` rather than go elsewhere).
    pub resolver: Result<SocketAddr, String>,
    /// Names in or under these zones are anycast names (besides the `%` form).
    pub zones: Vec<Zone>,
    /// How long one UDP attempt waits.
    pub timeout: Duration,
    /// UDP attempts per lookup.
    pub attempts: u32,
    /// Ask the resolver for the whole equivalent-server set.
    pub set: bool,
    /// The client-side choice among the answered addresses.
    pub filter: Filter,
    /// Write one line per anycast lookup to stderr.
    pub debug: bool,
    /// Problems found while reading the configuration, for one warning each.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            program: "anycast",
            resolver: DEFAULT_RESOLVER
                .parse()
                .map_err(|e| format!("bad default resolver: {e}")),
            zones: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            set: false,
            filter: Filter::None,
            debug: false,
            warnings: Vec::new(),
        }
    }
}

/// The keys, with the environment variable that overrides each.
const KEYS: [(&str, &str); 7] = [
    ("resolver", "ANYCAST_RESOLVER"),
    ("zones", "ANYCAST_ZONES"),
    ("timeout_ms", "ANYCAST_TIMEOUT_MS"),
    ("attempts", "ANYCAST_ATTEMPTS"),
    ("set", "ANYCAST_SET"),
    ("filter", "ANYCAST_FILTER"),
    ("debug", "ANYCAST_DEBUG"),
];

/// The variable naming the config file.
pub const CONFIG_ENV: &str = "ANYCAST_CONFIG";

impl Config {
    /// Reads the environment (with `secure_getenv`) and the config file it
    /// names, or the default one, for `program` (the prefix of its lines).
    pub fn load(program: &'static str) -> Config {
        let env = |name: &str| crate::sys::secure_getenv(name);
        let path = env(CONFIG_ENV).unwrap_or_else(|| DEFAULT_CONFIG_PATH.to_owned());
        let (file, file_warning) = read_file(&path);
        let mut config =
            Config::from_sources(file.as_deref().map(|text| (path.as_str(), text)), env);
        config.warnings.extend(file_warning);
        config.program = program;
        config
    }

    /// Writes one line to stderr, prefixed with the program.
    pub fn log(&self, line: &str) {
        crate::sys::log_line(self.program, line);
    }

    /// Builds the configuration from the file's text (with its path, for
    /// messages) and an environment lookup; the environment wins key by key.
    pub fn from_sources(
        file: Option<(&str, &str)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Config {
        let mut config = Config::default();
        if let Some((path, text)) = file {
            for (number, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let origin = format!("{path}:{}", number + 1);
                let Some((key, value)) = line.split_once('=') else {
                    config
                        .warnings
                        .push(format!("{origin}: expected `key = value`"));
                    continue;
                };
                let key = key.trim();
                if KEYS.iter().any(|(k, _)| *k == key) {
                    config.apply(key, unquote(value.trim()), &origin);
                } else {
                    config
                        .warnings
                        .push(format!("{origin}: unknown key `{key}`"));
                }
            }
        }
        for (key, var) in KEYS {
            if let Some(value) = env(var) {
                config.apply(key, value.trim(), var);
            }
        }
        config
    }

    /// Sets one key from its text; a bad value keeps the previous one and
    /// adds a warning naming `origin`.
    fn apply(&mut self, key: &str, value: &str, origin: &str) {
        let mut bad = |what: &str| {
            self.warnings.push(format!(
                "{origin}: {what}: {value:?}; keeping the previous value"
            ));
        };
        match key {
            "resolver" => {
                self.resolver = value.parse::<SocketAddr>().map_err(|_| {
                    format!("{origin}: the resolver must be an IP:port literal, not {value:?}")
                });
                if let Err(message) = &self.resolver {
                    self.warnings.push(message.clone());
                }
            }
            "zones" => {
                let mut zones = Vec::new();
                for text in value.split([',', ' ', '\t']).filter(|t| !t.is_empty()) {
                    match Zone::new(text) {
                        Ok(zone) => {
                            if !zones.contains(&zone) {
                                zones.push(zone);
                            }
                        }
                        Err(e) => self
                            .warnings
                            .push(format!("{origin}: zone {text:?} ignored: {e}")),
                    }
                }
                self.zones = zones;
            }
            "timeout_ms" => match value.parse::<u64>() {
                Ok(ms) if TIMEOUT_MS_RANGE.contains(&ms) => {
                    self.timeout = Duration::from_millis(ms);
                }
                _ => bad("timeout_ms must be 1 to 10000"),
            },
            "attempts" => match value.parse::<u32>() {
                Ok(n) if ATTEMPTS_RANGE.contains(&n) => self.attempts = n,
                _ => bad("attempts must be 1 to 5"),
            },
            "set" => match parse_bool(value) {
                Some(b) => self.set = b,
                None => bad("set must be a boolean"),
            },
            "filter" => match Filter::parse(value) {
                Some(f) => self.filter = f,
                None => bad("filter must be none, random, prefer-v4 or prefer-v6"),
            },
            "debug" => match parse_bool(value) {
                Some(b) => self.debug = b,
                None => bad("debug must be a boolean"),
            },
            _ => {}
        }
    }

    /// Whether a lookup should ask the resolver for the whole set: asked for,
    /// or implied by a filter that chooses on the client.
    pub fn wants_set(&self) -> bool {
        self.set || self.filter != Filter::None
    }
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// The file's text; a missing file is no error (the default path usually
/// does not exist), any other failure is a warning.
fn read_file(path: &str) -> (Option<String>, Option<String>) {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, None),
        Err(e) => return (None, Some(format!("cannot open {path}: {e}"))),
    };
    let mut text = String::new();
    let limit = u64::try_from(MAX_FILE_LEN).unwrap_or(u64::MAX) + 1;
    match file.take(limit).read_to_string(&mut text) {
        Ok(len) if len > MAX_FILE_LEN => (
            None,
            Some(format!(
                "{path} is longer than {MAX_FILE_LEN} bytes; ignored"
            )),
        ),
        Ok(_) => (Some(text), None),
        Err(e) => (None, Some(format!("cannot read {path}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let c = Config::from_sources(None, env(&[]));
        assert_eq!(c.resolver, Ok("127.0.0.1:5300".parse().unwrap()));
        assert!(c.zones.is_empty());
        assert_eq!((c.timeout, c.attempts), (DEFAULT_TIMEOUT, DEFAULT_ATTEMPTS));
        assert_eq!((c.set, c.filter, c.debug), (false, Filter::None, false));
        assert!(c.warnings.is_empty());
        assert!(!c.wants_set());
    }

    /// `configs/shim.conf` documents every key with its default: with the
    /// commented-out settings turned on, it parses without a warning to the
    /// defaults (the zone aside, which has none).
    #[test]
    fn the_example_file_documents_every_key_and_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/shim.conf");
        let text = std::fs::read_to_string(path).unwrap();
        let settings: String = text
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| {
                line.split_once(" = ")
                    .is_some_and(|(key, _)| KEYS.iter().any(|(k, _)| *k == key))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let documented: Vec<&str> = settings
            .lines()
            .filter_map(|l| l.split(" = ").next())
            .collect();
        let mut keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        let mut sorted = documented.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, keys, "every key documented once");
        let c = Config::from_sources(Some((path, &settings)), env(&[]));
        let d = Config::default();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.resolver, d.resolver);
        assert_eq!((c.timeout, c.attempts), (d.timeout, d.attempts));
        assert_eq!((c.set, c.filter, c.debug), (d.set, d.filter, d.debug));
    }

    #[test]
    fn file_then_environment() {
        let file = "# the shim\nresolver = 127.0.0.2:53\nzones = any.example.net, Other.Example.\n\
                    timeout_ms = 200 # short\nattempts=2\nset = yes\nfilter = \"prefer-v6\"\n";
        let c = Config::from_sources(Some(("f", file)), env(&[]));
        assert_eq!(c.resolver, Ok("127.0.0.2:53".parse().unwrap()));
        let zones: Vec<&str> = c.zones.iter().map(Zone::as_str).collect();
        assert_eq!(zones, ["any.example.net", "other.example"]);
        assert_eq!(c.timeout, Duration::from_millis(200));
        assert_eq!(c.attempts, 2);
        assert!(c.set);
        assert_eq!(c.filter, Filter::PreferV6);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let c = Config::from_sources(
            Some(("f", file)),
            env(&[
                ("ANYCAST_RESOLVER", "[::1]:5300"),
                ("ANYCAST_ZONES", "a.test"),
                ("ANYCAST_FILTER", "random"),
                ("ANYCAST_SET", "0"),
            ]),
        );
        assert_eq!(c.resolver, Ok("[::1]:5300".parse().unwrap()));
        assert_eq!(c.zones, [Zone::new("a.test").unwrap()]);
        assert_eq!(c.filter, Filter::Random);
        assert!(!c.set);
        assert!(c.wants_set(), "a client-side filter needs the set");
        assert_eq!(c.attempts, 2, "keys the environment does not set stay");
    }

    #[test]
    fn bad_values_warn_and_keep_the_previous_value() {
        let file = "resolver = localhost:53\nzones = ok.test, bad..zone\nwhat = 1\nnonsense\n\
                    timeout_ms = 0\nattempts = 9\nfilter = fastest\nset = maybe\n";
        let c = Config::from_sources(Some(("f", file)), env(&[("ANYCAST_DEBUG", "2")]));
        assert!(
            c.resolver.is_err(),
            "never a name: resolving it would recurse"
        );
        assert_eq!(c.zones, [Zone::new("ok.test").unwrap()]);
        assert_eq!((c.timeout, c.attempts), (DEFAULT_TIMEOUT, DEFAULT_ATTEMPTS));
        assert_eq!((c.set, c.filter, c.debug), (false, Filter::None, false));
        let text = c.warnings.join("\n");
        for needle in [
            "f:1:",
            "bad..zone",
            "f:3: unknown key `what`",
            "f:4: expected",
            "f:5:",
            "f:6:",
            "f:7:",
            "f:8:",
            "ANYCAST_DEBUG",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }

    #[test]
    fn missing_file_is_silent() {
        assert_eq!(read_file("/nonexistent/anycast/shim.conf"), (None, None));
    }
}
