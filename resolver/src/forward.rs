//! Forwarding of names outside the anycast zones to upstream DNS.
//!
//! A thin room around hickory-resolver, which brings the cache, retries and
//! UDP-then-TCP. It turns a lookup into what the DNS front needs to build a
//! response: a response code and the records of each section.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};

use crate::config::ForwardConfig;

/// Why the forwarder could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The system resolver configuration could not be read.
    #[error(
        "cannot read the system's resolver configuration (set [forward] upstreams instead): {0}"
    )]
    SystemConfig(String),
    /// hickory-resolver refused the configuration.
    #[error("cannot build the forwarding resolver: {0}")]
    Build(String),
}

/// What upstream said about a name.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// NOERROR (possibly with no answers: NODATA), NXDOMAIN or SERVFAIL.
    pub rcode: ResponseCode,
    /// Answer section, TTLs counted down to what is left in the cache; for
    /// NXDOMAIN or NODATA, the CNAME chain that led to it, if any.
    pub answers: Vec<Record>,
    /// Authority section (the SOA of a negative answer).
    pub authorities: Vec<Record>,
}

/// The upstream forwarder with its cache.
#[derive(Clone)]
pub struct Forwarder {
    resolver: TokioResolver,
    timeout: Duration,
    /// Where it forwards: `[forward] upstreams`, or the system's name
    /// servers (`/etc/resolv.conf`) when that is empty.
    upstreams: Vec<SocketAddr>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Builds the forwarder; it sends nothing until asked.
    pub fn new(config: &ForwardConfig) -> Result<Self, ForwardError> {
        let provider = TokioRuntimeProvider::default();
        let mut upstreams = config.upstreams.clone();
        let mut builder = if config.upstreams.is_empty() {
            let (system, options) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| ForwardError::SystemConfig(e.to_string()))?;
            for server in system.name_servers() {
                for connection in &server.connections {
                    let address = SocketAddr::new(server.ip, connection.port);
                    if !upstreams.contains(&address) {
                        upstreams.push(address);
                    }
                }
            }
            let mut builder = TokioResolver::builder_with_config(system, provider);
            *builder.options_mut() = options;
            builder
        } else {
            let servers = config
                .upstreams
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options: &mut ResolverOpts = builder.options_mut();
        // Names come from queries and are fully qualified: never append search domains.
        options.ndots = 0;
        options.cache_size = config.cache_size;
        options.preserve_intermediates = true;
        options.attempts = 2;
        options.timeout = config.timeout / 2;
        options.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let resolver = builder
            .build()
            .map_err(|e| ForwardError::Build(e.to_string()))?;
        Ok(Self {
            resolver,
            timeout: config.timeout,
            upstreams,
        })
    }

    /// Where it forwards (the system's name servers when `[forward]
    /// upstreams` is empty).
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Looks `name` up upstream (or in the cache). Never takes longer than the
    /// configured timeout: past it the answer is SERVFAIL.
    pub async fn forward(&self, name: &Name, rtype: RecordType) -> Forwarded {
        let mut name = name.clone();
        name.set_fqdn(true);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let lookup =
            tokio::time::timeout_at(deadline, self.resolver.lookup(name.clone(), rtype)).await;
        match lookup {
            Ok(Ok(lookup)) => Forwarded {
                rcode: ResponseCode::NoError,
                answers: answers_left(&lookup),
                authorities: lookup.authorities().to_vec(),
            },
            Ok(Err(e)) if e.is_no_records_found() => {
                let rcode = if e.is_nx_domain() {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                // hickory-resolver follows a CNAME chain to its end but keeps
                // the chain only when the end has records: for NODATA or
                // NXDOMAIN at the end, its error names the last name alone.
                // The chain is part of the answer (RFC 2308 section 2.1,
                // RFC 6604), so it is asked again, link by link (cached),
                // and left out only if that fails.
                let answers = match negative_name(&e) {
                    Some(last) if last != name => {
                        tokio::time::timeout_at(deadline, self.cname_chain(&name, &last))
                            .await
                            .ok()
                            .flatten()
                            .unwrap_or_default()
                    }
                    _ => Vec::new(),
                };
                let authorities = e
                    .into_soa()
                    .map(|soa| vec![soa.into_record_of_rdata()])
                    .unwrap_or_default();
                Forwarded {
                    rcode,
                    answers,
                    authorities,
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upstream lookup failed");
                crate::telemetry::upstream_error();
                Forwarded::servfail()
            }
            Err(_) => {
                tracing::debug!("upstream lookup timed out");
                crate::telemetry::upstream_error();
                Forwarded::servfail()
            }
        }
    }

    /// The records leading from `from` to `to`: at each link, the answer
    /// to a CNAME query, which is the CNAME or, under a DNAME (RFC 6672), the
    /// DNAME and the CNAME synthesised from it. `None` if a link is missing
    /// or the chain has more than [`MAX_CNAME_CHAIN`] links (a loop, say).
    async fn cname_chain(&self, from: &Name, to: &Name) -> Option<Vec<Record>> {
        let mut chain: Vec<Record> = Vec::new();
        let mut current = from.clone();
        let mut links = 0;
        while current != *to {
            if links == MAX_CNAME_CHAIN {
                return None;
            }
            links += 1;
            let lookup = self
                .resolver
                .lookup(current.clone(), RecordType::CNAME)
                .await
                .ok()?;
            let answers = answers_left(&lookup);
            let target = answers.iter().find_map(|r| match &r.data {
                RData::CNAME(CNAME(target)) if r.name == current => Some(target.clone()),
                _ => None,
            })?;
            for record in answers {
                // A DNAME covers every link below it: once is enough.
                if !chain
                    .iter()
                    .any(|r| r.name == record.name && r.data == record.data)
                {
                    chain.push(record);
                }
            }
            current = target;
        }
        Some(chain)
    }
}

/// How many links a CNAME chain rebuilt for a negative answer may have: as
/// many as hickory-resolver follows.
const MAX_CNAME_CHAIN: usize = 8;

/// The answers of a lookup, TTLs counted down to what is left in the cache.
fn answers_left(lookup: &Lookup) -> Vec<Record> {
    let left = lookup
        .valid_until()
        .saturating_duration_since(Instant::now())
        .as_secs();
    let left = u32::try_from(left).unwrap_or(u32::MAX);
    lookup
        .answers()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.ttl = r.ttl.min(left);
            r
        })
        .collect()
}

/// The name a negative answer is about: the query's name, or the end of the
/// CNAME chain that hickory-resolver followed from it.
fn negative_name(error: &NetError) -> Option<Name> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
            let mut name = no_records.query.name().clone();
            name.set_fqdn(true);
            Some(name)
        }
        _ => None,
    }
}

impl Forwarded {
    fn servfail() -> Self {
        Self {
            rcode: ResponseCode::ServFail,
            answers: Vec::new(),
            authorities: Vec::new(),
        }
    }
}
