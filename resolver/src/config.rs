//! The resolver's configuration: TOML in, one typed [`Config`] out.
//!
//! Parsing is two steps: serde reads the file into `Raw*` structs
//! (`deny_unknown_fields`, so a typo is an error, not a silent default), then
//! [`Config::from_raw`] checks what serde cannot (references between tables,
//! duplicates, ranges), section by section: each section's own check
//! (`DnsConfig::check`, `push_config`, `zone_configs`, `group_configs`, ...)
//! turns its raw struct into the typed one. A group's rules are the spec's
//! own ([`GroupSpec::check`], which the admin API and the state file use
//! too), written once. Either step's error names the file, the line and the
//! field, and nothing is bound before the whole file is accepted.
//! `configs/resolver.toml` is the commented reference.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use anycast_config_file::ConfigError;
use anycast_config_file::{
    HumanDuration, KeySource, Source, Spanned, positive, positive_duration, read_secret, spanned,
};
use anycast_proto::push::PushKey;
use anycast_proto::{AnycastName, Zone};
use ipnet::IpNet;
use serde::Deserialize;

use crate::estimate::{Calibration, LoadModel};
pub use crate::etcd::{EtcdAuth, EtcdConfig};
pub use crate::groups::MAX_TTL;
use crate::groups::{AnswerMode, GroupSpec, Member, default_probe_url};
pub use crate::groups::{LocalZone, ZoneConfig, ZoneRole};
pub use crate::https::TlsFiles;
pub use crate::push::{PushConfig, PushLimit};
use crate::select::Pick;
pub use anycast_daemon::tls::{ClientTls, Pem};

/// Why a group spelled like a zone is refused (config and admin alike).
pub fn shadowed(group: &AnycastName, zone: &Zone) -> String {
    format!("group {group} is spelled like the zone {zone}: its DNS name is that zone's apex")
}

/// Port of the DNS listener when the file names none (5353 belongs to mDNS).
pub const DEFAULT_DNS_PORT: u16 = 5300;

/// The whole configuration, validated and typed.
#[derive(Debug, Clone)]
pub struct Config {
    /// DNS listeners and their limits.
    pub dns: DnsConfig,
    /// The HTTP listener (push receiver, group views, self-registration).
    pub http: HttpConfig,
    /// Forwarding of names outside the anycast zones.
    pub forward: ForwardConfig,
    /// The push receiver.
    pub push: PushConfig,
    /// The anycast zones, each with its settings.
    pub zones: Vec<ZoneConfig>,
    /// The statically configured groups.
    pub groups: Vec<GroupConfig>,
    /// The admin API, if enabled.
    pub admin: Option<AdminConfig>,
    /// Resolver-wide probe settings.
    pub probe: ProbeConfig,
    /// Where runtime changes to membership are kept.
    pub membership: MembershipStore,
}

/// Where runtime changes to membership are kept (`[membership] store`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MembershipStore {
    /// This resolver's state file (`[admin] state_file`).
    #[default]
    File,
    /// etcd, shared by a fleet of resolvers; the state file, if any, caches it.
    Etcd(EtcdConfig),
}

/// Resolver-wide probe settings (per-group ones are in the group).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The local address probes are sent from, on a host with several; the
    /// path probed should be the one this resolver's clients use.
    pub source: Option<IpAddr>,
    /// For `https://` probe URLs: CAs the members' certificates may chain
    /// to, besides the system's roots.
    pub tls: ClientTls,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawProbe {
    source: Option<IpAddr>,
    ca_file: Option<Spanned<PathBuf>>,
}

/// DNS transport settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// Each address is served over both UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// UDP requests waiting on another server at once (forwarding, a local
    /// zone's authority); past it, such datagrams are dropped.
    pub max_inflight_udp: usize,
    /// Open TCP connections; past it, new connections are closed at once.
    pub max_tcp_connections: usize,
    /// A TCP connection that sends no complete request for this long (idle,
    /// or sending slowly), or takes this long to accept an answer, is closed.
    pub tcp_idle_timeout: Duration,
    /// Largest UDP response we send, whatever the client advertises
    /// (1232 avoids IP fragmentation, per DNS Flag Day 2020).
    pub udp_payload: u16,
}

/// HTTP listener settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Loopback by default: the API it will carry is for operators.
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsFiles>,
}

/// Forwarding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// Upstream DNS servers; empty means the system's (`/etc/resolv.conf`).
    pub upstreams: Vec<SocketAddr>,
    /// Clients allowed to recurse. Everyone else gets REFUSED for names
    /// outside the anycast zones, so the resolver is never an open resolver.
    pub allow: Vec<IpNet>,
    /// Entries in the forwarding cache.
    pub cache_size: u64,
    /// Time to wait for upstream before answering SERVFAIL.
    pub timeout: Duration,
}

/// One statically configured group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `<service>.<zone>`.
    pub name: AnycastName,
    /// Its settings and members.
    pub spec: GroupSpec,
}

/// The operator's API.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Loopback by default.
    pub listen: SocketAddr,
    /// The bearer token every request must carry.
    pub token: String,
    /// Where runtime changes are persisted.
    pub state_file: PathBuf,
    /// The token agents present to add their own server to a group
    /// (self-registration); `None` turns it off.
    pub join_token: Option<String>,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsFiles>,
}

impl Config {
    /// The sections of this config that differ from `running` and take
    /// effect only at a restart (listeners, keys, probe client, store): a
    /// reload applies zones and groups, and says which of these wait. Typed
    /// comparisons, so a push key's secret rotated under the same id counts.
    pub fn needs_restart(&self, running: &Config) -> Vec<&'static str> {
        [
            ("[dns]", self.dns != running.dns),
            ("[http]", self.http != running.http),
            ("[forward]", self.forward != running.forward),
            ("[push]", self.push != running.push),
            ("[admin]", self.admin != running.admin),
            ("[probe]", self.probe != running.probe),
            ("[membership]", self.membership != running.membership),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect()
    }

    /// The groups as membership takes them: each name with its spec.
    pub fn group_specs(&self) -> impl Iterator<Item = (AnycastName, GroupSpec)> + '_ {
        self.groups.iter().map(|g| (g.name.clone(), g.spec.clone()))
    }

    /// Reads and validates a config file.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        Config::from_source(&Source::read(path)?, &|name| std::env::var_os(name))
    }

    /// Parses and validates config text; `path` is only used in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::from_source(&Source::new(text, path), &|name| std::env::var_os(name))
    }

    /// Validates a config source; `env` looks environment variables up (for
    /// push keys given by variable), so tests need not touch the process
    /// environment.
    pub fn from_source(
        source: &Source,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = source.parse()?;
        Config::from_raw(raw, source, env)
    }

    fn from_raw(
        raw: RawConfig,
        source: &Source,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Config, ConfigError> {
        let err = |span: Range<usize>, message: String| source.error_at(Some(span), message);
        let dns = DnsConfig::check(raw.dns, source)?;
        let forward = ForwardConfig::check(raw.forward, &dns.listen, source)?;
        let push = push_config(raw.push, source, env)?;
        let zones = zone_configs(raw.zones, source)?;
        let groups = group_configs(raw.groups, &zones, source)?;
        Ok(Config {
            dns,
            http: HttpConfig {
                listen: raw.http.listen,
                tls: tls_files(raw.http.tls_cert_file, raw.http.tls_key_file, &err)?,
            },
            forward,
            push,
            zones,
            groups,
            admin: raw
                .admin
                .map(|a| AdminConfig::check(a, source))
                .transpose()?,
            probe: ProbeConfig::check(raw.probe, source)?,
            membership: membership_store(raw.membership, &err)?,
        })
    }
}

impl DnsConfig {
    /// Checks `[dns]`.
    fn check(raw: RawDns, source: &Source) -> Result<DnsConfig, ConfigError> {
        if raw.listen.get_ref().is_empty() {
            return Err(source.error_at(Some(raw.listen.span()), "listen at least one address"));
        }
        let payload_span = raw.udp_payload.span();
        let udp_payload = raw.udp_payload.into_inner();
        if !(512..=4096).contains(&udp_payload) {
            return Err(source.error_at(
                Some(payload_span),
                format!("{udp_payload} is outside 512..=4096"),
            ));
        }
        Ok(DnsConfig {
            listen: raw.listen.into_inner(),
            max_inflight_udp: positive(source, raw.max_inflight_udp)?,
            max_tcp_connections: positive(source, raw.max_tcp_connections)?,
            tcp_idle_timeout: positive_duration(source, raw.tcp_idle_timeout)?,
            udp_payload,
        })
    }
}

impl ForwardConfig {
    /// Checks `[forward]`; `listen` are the resolver's own DNS addresses,
    /// which no upstream may be.
    fn check(
        raw: RawForward,
        listen: &[SocketAddr],
        source: &Source,
    ) -> Result<ForwardConfig, ConfigError> {
        let mut upstreams = Vec::new();
        for upstream in raw.upstreams {
            let span = upstream.span();
            let Upstream(address) = upstream.into_inner();
            if let Some(own) = own_listener(listen, address) {
                return Err(source.error_at(Some(span), forwarding_loop(address, own)));
            }
            upstreams.push(address);
        }
        Ok(ForwardConfig {
            upstreams,
            allow: raw.allow,
            cache_size: raw.cache_size,
            timeout: positive_duration(source, raw.timeout)?,
        })
    }
}

/// Checks `[push]`: its keys (secrets read through `env`) and its limit.
fn push_config(
    raw: RawPush,
    source: &Source,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<PushConfig, ConfigError> {
    let err = |span: Range<usize>, message: String| source.error_at(Some(span), message);
    let mut keys: Vec<PushKey> = Vec::new();
    for k in raw.keys {
        let span = k.span();
        let k = k.into_inner();
        let secret = read_secret(k.file.as_deref(), k.env.as_deref(), env)
            .map_err(|m| err(span.clone(), m))?;
        let key = PushKey::new(&k.id, &secret).map_err(|e| err(span.clone(), e.to_string()))?;
        if keys.iter().any(|o| o.id == key.id) {
            return Err(err(span, format!("key {:?} is defined twice", key.id)));
        }
        keys.push(key);
    }
    let RawPushLimit {
        rate,
        burst,
        sources,
    } = raw.limit;
    let rate_span = rate.span();
    let rate = rate.into_inner();
    if !(rate.is_finite() && rate > 0.0) {
        return Err(err(
            rate_span,
            "rate must be a number of pushes per second above 0".into(),
        ));
    }
    Ok(PushConfig {
        keys,
        window: positive_duration(source, raw.window)?,
        limit: PushLimit {
            rate,
            burst: positive(source, burst)?,
            sources: positive(source, sources)?,
        },
    })
}

/// Checks every `[[zone]]`: names, no zone twice, a role's own fields.
fn zone_configs(raw_zones: Vec<RawZone>, source: &Source) -> Result<Vec<ZoneConfig>, ConfigError> {
    let err = |span: Range<usize>, message: String| source.error_at(Some(span), message);
    let mut zones: Vec<ZoneConfig> = Vec::new();
    for raw in raw_zones {
        let span = raw.name.span();
        let name = Zone::new(raw.name.get_ref()).map_err(|e| err(span.clone(), e.to_string()))?;
        if zones.iter().any(|z| z.name == name) {
            return Err(err(span, format!("zone {name} is defined twice")));
        }
        let role = match raw.role {
            RawRole::Authoritative => {
                if raw.authority.is_some() {
                    return Err(err(
                        span,
                        "`authority` goes only with role = \"local\"".into(),
                    ));
                }
                ZoneRole::Authoritative
            }
            RawRole::Local => ZoneRole::Local(LocalZone {
                authorities: RawAuthorities::check(raw.authority, source)?,
                cache_ttl: positive_duration(source, raw.cache_ttl)?,
                max_stale: positive_duration(source, raw.max_stale)?,
            }),
        };
        zones.push(ZoneConfig {
            name,
            negative_ttl: raw.negative_ttl,
            role,
        });
    }
    Ok(zones)
}

/// Checks every `[[group]]` against the zones: each one's name, then its
/// spec by the spec's own rules ([`GroupSpec::check`]), an error pointed at
/// the field it is about.
fn group_configs(
    raw_groups: Vec<RawGroup>,
    zones: &[ZoneConfig],
    source: &Source,
) -> Result<Vec<GroupConfig>, ConfigError> {
    let mut groups: Vec<GroupConfig> = Vec::new();
    for raw in raw_groups {
        let name = raw.name(zones, source)?;
        let span = raw.service.span();
        if groups.iter().any(|g| g.name == name) {
            return Err(source.error_at(Some(span), format!("group {name} is defined twice")));
        }
        let spec = raw.spec(source)?;
        groups.push(GroupConfig { name, spec });
    }
    Ok(groups)
}

impl RawGroup {
    /// The group's name: its service in its zone (named, or the only one),
    /// which must be authoritative here and not spelled like another zone.
    fn name(&self, zones: &[ZoneConfig], source: &Source) -> Result<AnycastName, ConfigError> {
        let err = |span: Range<usize>, message: String| source.error_at(Some(span), message);
        let span = self.service.span();
        let zone = match &self.zone {
            Some(z) => {
                let wanted = Zone::new(z.get_ref()).map_err(|e| err(z.span(), e.to_string()))?;
                zones
                    .iter()
                    .find(|c| c.name == wanted)
                    .map(|c| c.name.clone())
                    .ok_or_else(|| {
                        err(
                            z.span(),
                            format!("zone {wanted} is not defined by any [[zone]]"),
                        )
                    })?
            }
            None => match zones {
                [only] => only.name.clone(),
                _ => {
                    return Err(err(
                        span,
                        "this group needs `zone = ...`: there is not exactly one [[zone]]"
                            .to_owned(),
                    ));
                }
            },
        };
        if zones
            .iter()
            .any(|z| z.name == zone && matches!(z.role, ZoneRole::Local(_)))
        {
            return Err(err(
                span,
                format!("zone {zone} is local: its groups come from its authority"),
            ));
        }
        let name = AnycastName::new(self.service.get_ref(), None, zone)
            .map_err(|e| err(span.clone(), e.to_string()))?;
        // An invariant of the `config` fuzz target.
        if let Some(zone) = name.shadowing_zone(zones.iter().map(|z| &z.name)) {
            return Err(err(span, shadowed(&name, zone)));
        }
        Ok(name)
    }

    /// The group's spec, checked by [`GroupSpec::check`]; an error names
    /// the line of the field (or member) it is about.
    fn spec(self, source: &Source) -> Result<GroupSpec, ConfigError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let group_span = self.service.span();
        let field_span = |field: &str| match field {
            "ttl" => self.ttl.span(),
            "probe_interval_ms" => self.probe_interval.span(),
            "probe_timeout_ms" => self.probe_timeout.span(),
            "heartbeat_ms" => self.heartbeat.span(),
            "fail_after" => self.fail_after.span(),
            "recover_after" => self.recover_after.span(),
            "resolvers" => self.resolvers.span(),
            "threshold" => self.threshold.span(),
            _ => group_span.clone(),
        };
        let member_span = |m: &RawMember, field: &str| match (field, &m.probe) {
            ("probe", Some(url)) => url.span(),
            ("weight", _) => m.weight.span(),
            _ => m.address.span(),
        };
        let spec = GroupSpec {
            ttl: *self.ttl.get_ref(),
            answer: self.answer,
            probe_interval_ms: ms(self.probe_interval.get_ref().0),
            probe_timeout_ms: ms(self.probe_timeout.get_ref().0),
            fail_after: *self.fail_after.get_ref(),
            recover_after: *self.recover_after.get_ref(),
            calibration: self.calibration,
            load_model: self.load_model,
            resolvers: *self.resolvers.get_ref(),
            tufr_floor_ms: self.tufr_floor.0.as_secs_f64() * 1000.0,
            heartbeat_ms: ms(self.heartbeat.get_ref().0),
            threshold: *self.threshold.get_ref(),
            slack_ms: self.slack.0.as_secs_f64() * 1000.0,
            pick: self.pick,
            members: self
                .members
                .iter()
                .map(|m| {
                    let address = *m.address.get_ref();
                    Member {
                        address,
                        port: m.port,
                        probe: m.probe.as_ref().map_or_else(
                            || default_probe_url(SocketAddr::new(address, m.port)),
                            |url| url.get_ref().clone(),
                        ),
                        cost: m.cost,
                        weight: *m.weight.get_ref(),
                        drained: false,
                    }
                })
                .collect(),
        };
        spec.check().map_err(|(member, e)| {
            let span = match member.and_then(|i| self.members.get(i)) {
                Some(m) => member_span(m, e.field()),
                None => field_span(e.field()),
            };
            source.error_at(Some(span), e.to_string())
        })?;
        Ok(spec)
    }
}

impl AdminConfig {
    /// Checks `[admin]`: reads its token files and its certificate.
    fn check(raw: RawAdmin, source: &Source) -> Result<AdminConfig, ConfigError> {
        let err = |span: Range<usize>, message: String| source.error_at(Some(span), message);
        let read_token = |file: &Spanned<PathBuf>, what: &str| {
            let text = std::fs::read_to_string(file.get_ref()).map_err(|e| {
                err(
                    file.span(),
                    format!(
                        "cannot read the {what} file {}: {e}",
                        file.get_ref().display()
                    ),
                )
            })?;
            let token = text.trim().to_owned();
            if token.len() < 16 {
                return Err(err(
                    file.span(),
                    format!("the {what} must be at least 16 characters"),
                ));
            }
            Ok(token)
        };
        Ok(AdminConfig {
            listen: raw.listen,
            tls: tls_files(raw.tls_cert_file, raw.tls_key_file, &err)?,
            token: read_token(&raw.token_file, "admin token")?,
            state_file: raw.state_file,
            join_token: match &raw.join_token_file {
                Some(file) => Some(read_token(file, "join token")?),
                None => None,
            },
        })
    }
}

impl ProbeConfig {
    /// Checks `[probe]`: reads its CA file.
    fn check(raw: RawProbe, source: &Source) -> Result<ProbeConfig, ConfigError> {
        let err = |span: Range<usize>, message: String| source.error_at(Some(span), message);
        let tls = match raw.ca_file {
            None => ClientTls::default(),
            Some(file) => {
                let span = file.span();
                let tls = ClientTls {
                    ca: Some(read_pem(file, &err)?),
                    identity: None,
                };
                tls.check().map_err(|why| err(span, why))?;
                tls
            }
        };
        Ok(ProbeConfig {
            source: raw.source,
            tls,
        })
    }
}

/// Checks `[membership]`.
fn membership_store(
    raw: RawMembership,
    err: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<MembershipStore, ConfigError> {
    if *raw.store.get_ref() == RawStore::File {
        let etcd_only = [
            (
                "endpoints",
                (!raw.endpoints.get_ref().is_empty()).then(|| raw.endpoints.span()),
            ),
            ("prefix", raw.prefix.as_ref().map(Spanned::span)),
            ("user", raw.user.as_ref().map(Spanned::span)),
            (
                "password_file",
                raw.password_file.as_ref().map(Spanned::span),
            ),
        ];
        if let Some((field, Some(span))) = etcd_only.into_iter().find(|(_, span)| span.is_some()) {
            return Err(err(
                span,
                format!("`{field}` goes only with store = \"etcd\""),
            ));
        }
        return Ok(MembershipStore::File);
    }
    if raw.endpoints.get_ref().is_empty() {
        return Err(err(
            raw.store.span(),
            "store = \"etcd\" needs `endpoints`, the etcd client URLs (e.g. [\"http://127.0.0.1:2379\"])"
                .into(),
        ));
    }
    let mut endpoints = Vec::new();
    for endpoint in raw.endpoints.into_inner() {
        let text = endpoint.get_ref().trim_end_matches('/');
        let url = reqwest::Url::parse(text)
            .map_err(|e| err(endpoint.span(), format!("{text:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host().is_none()
            || url.path() != "/"
            || url.port().is_none()
        {
            return Err(err(
                endpoint.span(),
                format!(
                    "{text:?} is not an etcd client URL such as \"http://127.0.0.1:2379\" or \"https://10.0.0.1:2379\""
                ),
            ));
        }
        if endpoints
            .first()
            .is_some_and(|first: &String| !first.starts_with(&format!("{}:", url.scheme())))
        {
            return Err(err(
                endpoint.span(),
                "every endpoint takes the same scheme: all http:// or all https://".into(),
            ));
        }
        endpoints.push(text.to_owned());
    }
    let prefix = match raw.prefix {
        Some(prefix) if prefix.get_ref().is_empty() => {
            return Err(err(
                prefix.span(),
                "the prefix must not be empty: the resolver would read the whole keyspace".into(),
            ));
        }
        Some(prefix) => prefix.into_inner(),
        None => DEFAULT_ETCD_PREFIX.to_owned(),
    };
    let auth = match (raw.user, raw.password_file) {
        (None, None) => None,
        (Some(user), Some(file)) => {
            let password = std::fs::read_to_string(file.get_ref()).map_err(|e| {
                err(
                    file.span(),
                    format!(
                        "cannot read the etcd password file {}: {e}",
                        file.get_ref().display()
                    ),
                )
            })?;
            Some(EtcdAuth {
                user: user.into_inner(),
                password: password.trim_end_matches(['\r', '\n']).to_owned(),
            })
        }
        (Some(user), None) => {
            return Err(err(user.span(), "`user` needs `password_file`".into()));
        }
        (None, Some(file)) => {
            return Err(err(file.span(), "`password_file` needs `user`".into()));
        }
    };
    let https = endpoints.iter().all(|e| e.starts_with("https:"));
    let pem = |file: Option<Spanned<PathBuf>>,
               what: &str|
     -> Result<Option<(Pem, std::ops::Range<usize>)>, ConfigError> {
        let Some(file) = file else {
            return Ok(None);
        };
        if !https {
            return Err(err(
                file.span(),
                format!("`{what}` goes only with https:// endpoints"),
            ));
        }
        let span = file.span();
        Ok(Some((read_pem(file, err)?, span)))
    };
    let ca = pem(raw.ca_file, "ca_file")?;
    let identity = match (
        pem(raw.cert_file, "cert_file")?,
        pem(raw.key_file, "key_file")?,
    ) {
        (None, None) => None,
        (Some((mut cert, span)), Some((key, _))) => {
            cert.text.extend_from_slice(b"\n");
            cert.text.extend_from_slice(&key.text);
            Some((cert, span))
        }
        (Some((_, span)), None) => return Err(err(span, "`cert_file` needs `key_file`".into())),
        (None, Some((_, span))) => return Err(err(span, "`key_file` needs `cert_file`".into())),
    };
    // Each file is checked here, with its line, not at the first request.
    let check = |tls: ClientTls, span: &std::ops::Range<usize>| {
        tls.check().map_err(|why| err(span.clone(), why))
    };
    if let Some((pem, span)) = &ca {
        check(
            ClientTls {
                ca: Some(pem.clone()),
                identity: None,
            },
            span,
        )?;
    }
    if let Some((pem, span)) = &identity {
        check(
            ClientTls {
                ca: None,
                identity: Some(pem.clone()),
            },
            span,
        )?;
    }
    Ok(MembershipStore::Etcd(EtcdConfig {
        endpoints,
        prefix,
        auth,
        tls: ClientTls {
            ca: ca.map(|(pem, _)| pem),
            identity: identity.map(|(pem, _)| pem),
        },
    }))
}

/// A listener's `tls_cert_file` and `tls_key_file`: both or neither, and
/// they must load (a chain, and the key that matches it).
fn tls_files(
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
    err: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let span = cert.span();
            let files = TlsFiles {
                cert: cert.into_inner(),
                key: key.into_inner(),
            };
            files.load().map_err(|why| err(span, why))?;
            Ok(Some(files))
        }
        (Some(cert), None) => Err(err(
            cert.span(),
            "`tls_cert_file` needs `tls_key_file`".into(),
        )),
        (None, Some(key)) => Err(err(
            key.span(),
            "`tls_key_file` needs `tls_cert_file`".into(),
        )),
    }
}

/// Reads a PEM file named in the config; the error has its line.
fn read_pem(
    file: Spanned<PathBuf>,
    err: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Pem, ConfigError> {
    let span = file.span();
    Pem::read(file.get_ref()).map_err(|why| err(span, why))
}

/// The etcd keys of membership start with this unless `prefix` says.
pub const DEFAULT_ETCD_PREFIX: &str = "/anycast/";

/// An upstream written as `"IP"` (port 53) or `"IP:port"`.
#[derive(Debug, Clone, Copy)]
struct Upstream(SocketAddr);

/// The listener among `listen` that receives what is sent to `to`: the same
/// address and port, or the port on a wildcard listener and a local address
/// (loopback, or the wildcard itself).
fn own_listener(listen: &[SocketAddr], to: SocketAddr) -> Option<SocketAddr> {
    listen.iter().copied().find(|l| {
        l.port() == to.port()
            && (l.ip() == to.ip()
                || (l.ip().is_unspecified() && (to.ip().is_loopback() || to.ip().is_unspecified())))
    })
}

fn forwarding_loop(upstream: SocketAddr, own: SocketAddr) -> String {
    format!(
        "upstream {upstream} is this resolver's own [dns] listen address {own}: forwarded \
         queries would come back to it; name the DNS server it should forward to (the one \
         /etc/resolv.conf named before)"
    )
}

/// Why forwarding to `upstreams` would come back to a resolver listening
/// on `listen`, if it would.
pub fn forwarding_loop_among(upstreams: &[SocketAddr], listen: &[SocketAddr]) -> Option<String> {
    upstreams
        .iter()
        .find_map(|u| own_listener(listen, *u).map(|own| forwarding_loop(*u, own)))
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Upstream(addr));
        }
        text.parse::<IpAddr>()
            .map(|ip| Upstream(SocketAddr::new(ip, 53)))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not an upstream address (write \"IP\" or \"IP:port\")"
                ))
            })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    forward: RawForward,
    #[serde(default)]
    push: RawPush,
    admin: Option<RawAdmin>,
    #[serde(default)]
    probe: RawProbe,
    #[serde(default, rename = "zone")]
    zones: Vec<RawZone>,
    #[serde(default, rename = "group")]
    groups: Vec<RawGroup>,
    #[serde(default)]
    membership: RawMembership,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMembership {
    store: Spanned<RawStore>,
    endpoints: Spanned<Vec<Spanned<String>>>,
    prefix: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    ca_file: Option<Spanned<PathBuf>>,
    cert_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
}

impl Default for RawMembership {
    fn default() -> Self {
        Self {
            store: spanned(RawStore::File),
            endpoints: spanned(Vec::new()),
            prefix: None,
            user: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawStore {
    #[default]
    File,
    Etcd,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDns {
    listen: Spanned<Vec<SocketAddr>>,
    max_inflight_udp: Spanned<usize>,
    max_tcp_connections: Spanned<usize>,
    tcp_idle_timeout: Spanned<HumanDuration>,
    udp_payload: Spanned<u16>,
}

impl Default for RawDns {
    fn default() -> Self {
        Self {
            listen: Spanned::new(
                0..0,
                vec![SocketAddr::from(([127, 0, 0, 1], DEFAULT_DNS_PORT))],
            ),
            max_inflight_udp: spanned(1024),
            max_tcp_connections: spanned(128),
            tcp_idle_timeout: spanned(Duration::from_secs(10).into()),
            udp_payload: spanned(1232),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    listen: SocketAddr,
    tls_cert_file: Option<Spanned<PathBuf>>,
    tls_key_file: Option<Spanned<PathBuf>>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8053)),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawForward {
    upstreams: Vec<Spanned<Upstream>>,
    allow: Vec<IpNet>,
    cache_size: u64,
    timeout: Spanned<HumanDuration>,
}

impl Default for RawForward {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            allow: vec![
                IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::LOCALHOST, 8).trunc()),
                IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            cache_size: 4096,
            // Below 2 s with room to spare: a client waiting for a failed
            // lookup gets SERVFAIL within 2 s (the fault tests' bound).
            timeout: spanned(Duration::from_millis(1500).into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    listen: SocketAddr,
    token_file: Spanned<PathBuf>,
    state_file: PathBuf,
    join_token_file: Option<Spanned<PathBuf>>,
    tls_cert_file: Option<Spanned<PathBuf>>,
    tls_key_file: Option<Spanned<PathBuf>>,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8054))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPush {
    window: Spanned<HumanDuration>,
    #[serde(rename = "key")]
    keys: Vec<Spanned<KeySource>>,
    limit: RawPushLimit,
}

impl Default for RawPush {
    fn default() -> Self {
        Self {
            window: spanned(Duration::from_secs(30).into()),
            keys: Vec::new(),
            limit: RawPushLimit::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPushLimit {
    rate: Spanned<f64>,
    burst: Spanned<u32>,
    sources: Spanned<usize>,
}

impl Default for RawPushLimit {
    fn default() -> Self {
        let d = PushLimit::default();
        Self {
            rate: spanned(d.rate),
            burst: spanned(d.burst),
            sources: spanned(d.sources),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: Spanned<String>,
    #[serde(default = "default_negative_ttl")]
    negative_ttl: u32,
    #[serde(default)]
    role: RawRole,
    authority: Option<Spanned<RawAuthorities>>,
    #[serde(default = "default_cache_ttl")]
    cache_ttl: Spanned<HumanDuration>,
    #[serde(default = "default_max_stale")]
    max_stale: Spanned<HumanDuration>,
}

/// A local zone's `authority`: one URL, or a list of them in order of
/// preference (each element keeps its own span, so an error names its line).
enum RawAuthorities {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawAuthorities {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Not `#[serde(untagged)]`: it buffers the value and so loses the
        // elements' spans, and its error names neither form.
        struct Urls;
        impl<'de> serde::de::Visitor<'de> for Urls {
            type Value = RawAuthorities;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an http:// URL or a list of them")
            }

            fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<Self::Value, E> {
                Ok(RawAuthorities::One(url.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut urls = Vec::new();
                while let Some(url) = seq.next_element()? {
                    urls.push(url);
                }
                Ok(RawAuthorities::Many(urls))
            }
        }
        d.deserialize_any(Urls)
    }
}

impl RawAuthorities {
    /// The base URLs, checked (http://, no duplicates) where each is written.
    fn check(
        raw: Option<Spanned<RawAuthorities>>,
        source: &Source,
    ) -> Result<Vec<String>, ConfigError> {
        let err =
            |span: std::ops::Range<usize>, message: String| source.error_at(Some(span), message);
        let mut authorities: Vec<String> = Vec::new();
        let Some(raw) = raw else {
            return Ok(authorities);
        };
        let list_span = raw.span();
        let urls = match raw.into_inner() {
            RawAuthorities::One(url) => vec![Spanned::new(list_span.clone(), url)],
            RawAuthorities::Many(urls) => urls,
        };
        if urls.is_empty() {
            return Err(err(
                list_span,
                "list at least one authority URL (or leave `authority` out to find the \
                 authorities in DNS)"
                    .into(),
            ));
        }
        for url in urls {
            let url_span = url.span();
            let url = url.into_inner();
            if !url.starts_with("http://") {
                return Err(err(url_span, format!("{url:?} is not an http:// URL")));
            }
            let url = url.trim_end_matches('/').to_owned();
            if authorities.contains(&url) {
                return Err(err(url_span, format!("authority {url} is listed twice")));
            }
            authorities.push(url);
        }
        Ok(authorities)
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawRole {
    #[default]
    Authoritative,
    Local,
}

fn default_cache_ttl() -> Spanned<HumanDuration> {
    spanned(Duration::from_secs(2).into())
}

fn default_max_stale() -> Spanned<HumanDuration> {
    spanned(Duration::from_secs(300).into())
}

fn default_negative_ttl() -> u32 {
    5
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    service: Spanned<String>,
    zone: Option<Spanned<String>>,
    #[serde(default = "default_ttl")]
    ttl: Spanned<u32>,
    #[serde(default)]
    answer: AnswerMode,
    #[serde(default = "default_probe_interval")]
    probe_interval: Spanned<HumanDuration>,
    #[serde(default = "default_probe_timeout")]
    probe_timeout: Spanned<HumanDuration>,
    #[serde(default = "default_threshold")]
    threshold: Spanned<f64>,
    #[serde(default = "default_slack")]
    slack: HumanDuration,
    #[serde(default)]
    pick: Pick,
    #[serde(default)]
    calibration: Calibration,
    #[serde(default)]
    load_model: LoadModel,
    #[serde(default = "default_resolvers")]
    resolvers: Spanned<u32>,
    #[serde(default = "default_tufr_floor")]
    tufr_floor: HumanDuration,
    #[serde(default = "default_heartbeat")]
    heartbeat: Spanned<HumanDuration>,
    #[serde(default = "default_fail_after")]
    fail_after: Spanned<u32>,
    #[serde(default = "default_recover_after")]
    recover_after: Spanned<u32>,
    #[serde(default, rename = "member")]
    members: Vec<RawMember>,
}

fn default_ttl() -> Spanned<u32> {
    spanned(GroupSpec::default().ttl)
}

fn default_probe_interval() -> Spanned<HumanDuration> {
    spanned(Duration::from_millis(GroupSpec::default().probe_interval_ms).into())
}

fn default_probe_timeout() -> Spanned<HumanDuration> {
    spanned(Duration::from_millis(GroupSpec::default().probe_timeout_ms).into())
}

fn default_threshold() -> Spanned<f64> {
    spanned(GroupSpec::default().threshold)
}

fn default_slack() -> HumanDuration {
    Duration::from_secs_f64(GroupSpec::default().slack_ms / 1000.0).into()
}

fn default_tufr_floor() -> HumanDuration {
    Duration::from_secs_f64(GroupSpec::default().tufr_floor_ms / 1000.0).into()
}

fn default_heartbeat() -> Spanned<HumanDuration> {
    spanned(Duration::from_millis(GroupSpec::default().heartbeat_ms).into())
}

fn default_resolvers() -> Spanned<u32> {
    spanned(GroupSpec::default().resolvers)
}

fn default_fail_after() -> Spanned<u32> {
    spanned(GroupSpec::default().fail_after)
}

fn default_recover_after() -> Spanned<u32> {
    spanned(GroupSpec::default().recover_after)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    address: Spanned<IpAddr>,
    #[serde(default = "default_port")]
    port: u16,
    probe: Option<Spanned<String>>,
    #[serde(default)]
    cost: u32,
    #[serde(default = "default_weight")]
    weight: Spanned<u32>,
}

fn default_port() -> u16 {
    80
}

fn default_weight() -> Spanned<u32> {
    spanned(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    fn error(text: &str) -> String {
        parse(text)
            .expect_err("config should be refused")
            .to_string()
    }

    /// `GOOD` with a push key whose secret is `secret` and, if given, a
    /// `[probe]` section.
    fn with_key(secret: &str, probe: &str) -> Config {
        let text = format!("{GOOD}\n[[push.key]]\nid = \"k1\"\nenv = \"KEY\"\n{probe}");
        let secret = std::ffi::OsString::from(secret);
        Config::from_source(&Source::new(&text, Path::new("test.toml")), &|_| {
            Some(secret.clone())
        })
        .unwrap()
    }

    /// configs/resolver.toml shows "every configuration field, with its
    /// default": left out, each field it sets must give the same
    /// configuration, but for the fields that have no default (required)
    /// and those whose value is the example site's.
    #[test]
    fn the_example_shows_each_fields_real_default() {
        let example = include_str!("../../configs/resolver.toml");
        let parse = |text: &str| {
            Config::from_source(&Source::new(text, Path::new("resolver.toml")), &|_| {
                Some("0123456789abcdef".into())
            })
        };
        // The site's values: a key, an upstream and costs (their comments
        // give the default).
        let site = [
            "push.key[0].id",
            "push.key[0].env",
            "forward.upstreams",
            "group[0].member[0].cost",
            "group[0].member[1].cost",
        ];
        let (checked, wrong) = anycast_config_file::fields_off_their_default(example, &site, parse);
        assert!(
            wrong.is_empty(),
            "configs/resolver.toml shows these fields with another value than their default: {wrong:?}"
        );
        assert!(checked >= 10, "only {checked} fields checked");
    }

    /// The group rules are the spec's own (`GroupSpec::check`), and each
    /// error still names the line of the field or member it is about.
    #[test]
    fn a_groups_mistakes_name_their_line_by_the_specs_rules() {
        let group = "[[zone]]\nname = \"a.b\"\n[[group]]\nservice = \"w\"\n";
        for (field, line, says) in [
            ("ttl = 86401", 5, "ttl 86401 is out of range: 0..=86400 s"),
            ("probe_interval = \"0s\"", 5, "probe_interval_ms 0"),
            ("heartbeat = \"0s\"", 5, "heartbeat_ms 0"),
            ("fail_after = 0", 5, "fail_after 0"),
            ("threshold = -1.0", 5, "threshold -1"),
        ] {
            let e = error(&format!("{group}{field}\n"));
            assert!(
                e.starts_with(&format!("test.toml:{line}:")) && e.contains(says),
                "{field}: {e}"
            );
        }
        let e = error(&format!(
            "{group}[[group.member]]\naddress = \"1.2.3.4\"\n[[group.member]]\naddress = \"1.2.3.5\"\nprobe = \"ftp://x/\"\n"
        ));
        assert!(
            e.starts_with("test.toml:9:") && e.contains("not an http(s) URL"),
            "{e}"
        );
    }

    #[test]
    fn a_reload_names_the_sections_that_wait_for_a_restart() {
        let running = with_key("0123456789abcdef", "");
        assert!(
            with_key("0123456789abcdef", "")
                .needs_restart(&running)
                .is_empty()
        );
        // The same key id with another secret: another key.
        assert_eq!(
            with_key("fedcba9876543210", "").needs_restart(&running),
            ["[push]"]
        );
        assert_eq!(
            with_key("0123456789abcdef", "[probe]\nsource = \"127.0.0.1\"\n")
                .needs_restart(&running),
            ["[probe]"]
        );
        // Groups and zones are applied, not waited for.
        let mut regrouped = with_key("0123456789abcdef", "");
        regrouped.groups.clear();
        assert!(regrouped.needs_restart(&running).is_empty());
    }

    const GOOD: &str = r#"
[dns]
listen = ["127.0.0.1:5300"]
tcp_idle_timeout = "3s"

[forward]
upstreams = ["127.0.0.1:5301", "127.0.0.2"]

[[zone]]
name = "Any.Example.Net."

[[group]]
service = "web"
ttl = 3
answer = "set"

[[group.member]]
address = "127.0.0.1"
port = 8080
cost = 2

[[group.member]]
address = "::1"
probe = "http://[::1]:80/p.json"
"#;

    #[test]
    fn a_good_config_is_typed() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.dns.tcp_idle_timeout, Duration::from_secs(3));
        assert_eq!(c.dns.max_inflight_udp, 1024);
        assert_eq!(c.forward.upstreams[1], "127.0.0.2:53".parse().unwrap());
        assert_eq!(c.forward.allow.len(), 2);
        assert!(c.forward.allow[0].contains(&"127.9.9.9".parse::<IpAddr>().unwrap()));
        assert_eq!(c.zones[0].name.as_str(), "any.example.net");
        let g = &c.groups[0];
        assert_eq!(g.name.to_string(), "web.any.example.net");
        assert_eq!(g.spec.answer, AnswerMode::Set);
        assert_eq!(
            g.spec.members[0].probe,
            "http://127.0.0.1:8080/.well-known/anycast-probe.json"
        );
        assert_eq!(g.spec.members[1].port, 80);
        assert_eq!(g.spec.members[0].cost, 2);
    }

    #[test]
    fn forwarding_to_its_own_listener_is_refused_with_the_line() {
        let e = error(
            "[dns]\nlisten = [\"127.0.0.1:53\"]\n[forward]\nupstreams = [\"10.0.0.53\", \"127.0.0.1\"]\n",
        );
        assert!(
            e.starts_with("test.toml:4:")
                && e.contains("upstream 127.0.0.1:53 is this resolver's own"),
            "{e}"
        );
        let e =
            error("[dns]\nlisten = [\"0.0.0.0:53\"]\n[forward]\nupstreams = [\"127.0.0.1:53\"]\n");
        assert!(e.contains("own [dns] listen address 0.0.0.0:53"), "{e}");
        // Another port, or another machine, is an upstream.
        parse("[dns]\nlisten = [\"127.0.0.1:5300\"]\n[forward]\nupstreams = [\"127.0.0.1:53\"]\n")
            .unwrap();
        parse("[dns]\nlisten = [\"0.0.0.0:53\"]\n[forward]\nupstreams = [\"10.0.0.53:53\"]\n")
            .unwrap();
    }

    #[test]
    fn defaults_are_safe() {
        let c = parse("").unwrap();
        assert_eq!(
            c.dns.listen,
            vec!["127.0.0.1:5300".parse::<SocketAddr>().unwrap()]
        );
        assert!(c.http.listen.ip().is_loopback());
        assert!(c.forward.upstreams.is_empty());
        assert_eq!(c.push.limit, PushLimit::default());
        assert!(
            !c.forward
                .allow
                .iter()
                .any(|n| n.contains(&"10.0.0.1".parse::<IpAddr>().unwrap()))
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = error("[dns]\nlisten = [\"127.0.0.1:5300\"]\nlisen = 3\n");
        assert!(e.starts_with("test.toml:3:1:"), "{e}");
        assert!(e.contains("lisen"), "{e}");

        let e = error(
            "[[zone]]\nname = \"a.b\"\n[[group]]\nservice = \"w\"\n[[group.member]]\naddress = \"1.2.3\"\n",
        );
        assert!(e.starts_with("test.toml:6:11:"), "{e}");
        assert!(e.contains("field `address` in [[group.member]]"), "{e}");

        let e = error("[dns]\ntcp_idle_timeout = \"ten\"\n");
        assert!(
            e.contains("test.toml:2:") && e.contains("tcp_idle_timeout"),
            "{e}"
        );

        let e = error("[push.limit]\nrate = 0\n");
        assert!(e.starts_with("test.toml:2:") && e.contains("rate"), "{e}");
        let e = error("[push.limit]\nburst = 0\n");
        assert!(
            e.starts_with("test.toml:2:") && e.contains("greater than zero"),
            "{e}"
        );
        let c = parse("[push.limit]\nrate = 0.5\nburst = 3\n").unwrap();
        assert_eq!((c.push.limit.rate, c.push.limit.burst), (0.5, 3));

        let e = error("[dns]\nudp_payload = 100\n");
        assert!(
            e.contains("test.toml:2:") && e.contains("512..=4096"),
            "{e}"
        );
    }

    #[test]
    fn the_etcd_store_is_checked_with_its_line() {
        assert_eq!(parse("").unwrap().membership, MembershipStore::File);
        let c = parse(
            "[membership]\nstore = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379/\", \"http://[::1]:2379\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.membership,
            MembershipStore::Etcd(EtcdConfig {
                endpoints: vec!["http://127.0.0.1:2379".into(), "http://[::1]:2379".into()],
                prefix: DEFAULT_ETCD_PREFIX.into(),
                auth: None,
                tls: ClientTls::default(),
            })
        );

        let e = error("[membership]\nstore = \"etcd\"\n");
        assert!(
            e.starts_with("test.toml:2:") && e.contains("needs `endpoints`"),
            "{e}"
        );
        let e = error(
            "[membership]\nstore = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n",
        );
        assert!(
            e.starts_with("test.toml:3:") && e.contains("same scheme"),
            "{e}"
        );
        let e = error(
            "[membership]\nstore = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\nca_file = \"/etc/hostname\"\n",
        );
        assert!(
            e.starts_with("test.toml:4:") && e.contains("only with https://"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = error(&format!(
            "[membership]\nstore = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\"]\nca_file = \"{}\"\n",
            junk.display()
        ));
        assert!(e.starts_with("test.toml:4:") && e.contains("ca.pem"), "{e}");
        let e = error(&format!(
            "[membership]\nstore = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\"]\ncert_file = \"{}\"\n",
            junk.display()
        ));
        assert!(
            e.starts_with("test.toml:4:") && e.contains("needs `key_file`"),
            "{e}"
        );
        let e = error("[membership]\nstore = \"etcd\"\nendpoints = [\"10.0.0.1:2379\"]\n");
        assert!(e.starts_with("test.toml:3:"), "{e}");
        let e =
            error("[membership]\nstore = \"etcd\"\nendpoints = [\"http://a:1\"]\nprefix = \"\"\n");
        assert!(
            e.starts_with("test.toml:4:") && e.contains("must not be empty"),
            "{e}"
        );
        let e = error("[membership]\nprefix = \"/x/\"\n");
        assert!(
            e.starts_with("test.toml:2:") && e.contains("only with store = \"etcd\""),
            "{e}"
        );
        let e =
            error("[membership]\nstore = \"etcd\"\nendpoints = [\"http://a:1\"]\nuser = \"u\"\n");
        assert!(
            e.starts_with("test.toml:4:") && e.contains("needs `password_file`"),
            "{e}"
        );
        let e = error("[membership]\nstore = \"consul\"\n");
        assert!(e.starts_with("test.toml:2:") && e.contains("consul"), "{e}");
    }

    #[test]
    fn a_group_spelled_like_a_zone_is_refused() {
        let e = error(
            "[[zone]]\nname = \"example.net\"\n[[zone]]\nname = \"any.example.net\"\n[[group]]\nzone = \"example.net\"\nservice = \"any\"\n",
        );
        assert!(
            e.starts_with("test.toml:7:") && e.contains("spelled like the zone any.example.net"),
            "{e}"
        );
    }

    #[test]
    fn a_local_zone_takes_one_authority_or_several_in_order() {
        let local = |authority: &str| {
            format!("[[zone]]\nname = \"a.b\"\nrole = \"local\"\nauthority = {authority}\n")
        };
        let authorities = |text: &str| match &parse(text).unwrap().zones[0].role {
            ZoneRole::Local(zone) => zone.authorities.clone(),
            ZoneRole::Authoritative => panic!("a local zone"),
        };
        assert_eq!(
            authorities(&local("\"http://a:8053/\"")),
            vec!["http://a:8053"]
        );
        assert_eq!(
            authorities(&local("[\"http://b:8053\", \"http://a:8053/\"]")),
            vec!["http://b:8053", "http://a:8053"]
        );
        assert!(
            authorities("[[zone]]\nname = \"a.b\"\nrole = \"local\"\n").is_empty(),
            "no `authority`: found in DNS"
        );

        // Each URL is checked where it is written.
        let e = error(&local("[\n  \"http://a:8053\",\n  \"https://b:8053\",\n]"));
        assert!(
            e.starts_with("test.toml:6:3:") && e.contains("not an http:// URL"),
            "{e}"
        );
        let e = error(&local("\"ftp://a\""));
        assert!(
            e.starts_with("test.toml:4:13:") && e.contains("not an http:// URL"),
            "{e}"
        );
        let e = error(&local("[\n  \"http://a:8053\",\n  \"http://a:8053/\",\n]"));
        assert!(
            e.starts_with("test.toml:6:") && e.contains("listed twice"),
            "{e}"
        );
        let e = error(&local("[]"));
        assert!(
            e.starts_with("test.toml:4:") && e.contains("at least one"),
            "{e}"
        );
        let e = error(&local("[\"http://a:8053\", 3]"));
        assert!(e.starts_with("test.toml:4:"), "{e}");
        let e = error(&local("3"));
        assert!(
            e.starts_with("test.toml:4:") && e.contains("an http:// URL or a list of them"),
            "{e}"
        );
        let e =
            error("[[zone]]\nname = \"a.b\"\nauthority = [\"http://a:8053\", \"http://b:8053\"]\n");
        assert!(e.contains("goes only with role"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_the_culprit() {
        let e = error("[[zone]]\nname = \"a.b\"\n[[zone]]\nname = \"A.B\"\n");
        assert!(
            e.starts_with("test.toml:4:8:") && e.contains("twice"),
            "{e}"
        );

        let e = error("[[zone]]\nname = \"a.b\"\n[[group]]\nservice = \"w\"\nzone = \"c.d\"\n");
        assert!(
            e.starts_with("test.toml:5:") && e.contains("not defined"),
            "{e}"
        );

        let e = error("[[zone]]\nname = \"a.b\"\n[[group]]\nservice = \"w w\"\n");
        assert!(
            e.starts_with("test.toml:4:") && e.contains("field `service`"),
            "{e}"
        );

        let e = error(
            "[[zone]]\nname = \"a.b\"\n[[group]]\nservice = \"w\"\n[[group]]\nservice = \"W\"\n",
        );
        assert!(e.starts_with("test.toml:6:") && e.contains("twice"), "{e}");

        let e = error(
            "[[zone]]\nname = \"a.b\"\n[[group]]\nservice = \"w\"\n[[group.member]]\naddress = \"1.2.3.4\"\n[[group.member]]\naddress = \"1.2.3.4\"\n",
        );
        assert!(
            e.starts_with("test.toml:8:") && e.contains("listed twice"),
            "{e}"
        );

        let e = error("[[zone]]\nname = \"a.b\"\n[[group]]\nservice = \"w\"\nresolvers = 0\n");
        assert!(
            e.starts_with("test.toml:5:") && e.contains("resolvers 0 is out of range"),
            "{e}"
        );
        let c =
            parse("[[zone]]\nname = \"a.b\"\n[[group]]\nservice = \"w\"\nresolvers = 4\n").unwrap();
        assert_eq!(c.groups[0].spec.resolvers, 4);

        let e = error(
            "[[zone]]\nname = \"a.b\"\n[[group]]\nservice = \"w\"\n[[group.member]]\naddress = \"1.2.3.4\"\nweight = 0\n",
        );
        assert!(
            e.starts_with("test.toml:7:") && e.contains("weight 0 is out of range"),
            "{e}"
        );

        let e = error(
            "[[zone]]\nname = \"a.b\"\n[[zone]]\nname = \"c.d\"\n[[group]]\nservice = \"w\"\n",
        );
        assert!(e.contains("needs `zone"), "{e}");

        let e = error("[[zone]]\nname = \"a.b\"\n[[group]]\nservice = \"w\"\nttl = 100000\n");
        assert!(
            e.starts_with("test.toml:5:") && e.contains("field `ttl`"),
            "{e}"
        );

        let e = error(
            "[[zone]]\nname = \"a.b\"\nrole = \"local\"\nauthority = \"http://127.0.0.1:1\"\n[[group]]\nservice = \"w\"\n",
        );
        assert!(e.starts_with("test.toml:6:") && e.contains("local"), "{e}");
    }
}
