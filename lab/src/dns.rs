//! The clients' DNS: real queries over UDP, as a stub resolver sends them.
//!
//! Each client owns a [`Stub`]: one UDP socket on 127.0.0.1, a query per
//! lookup (A record, recursion desired, a random ID), a retry after a second
//! of silence, and an optional cache that keeps an answer for its TTL, as
//! the C library's or systemd-resolved's cache would. Whether clients honour
//! the TTL or ask before every request is the scenario's choice.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use rand::RngExt;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Time to wait for an answer before asking again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Tries per lookup.
const TRIES: u32 = 3;

/// Why a lookup gave no address.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No answer after every try.
    #[error("no answer from {0} after {TRIES} tries")]
    Timeout(SocketAddr),
    /// An answer without an A record.
    #[error("answer {0} without an A record")]
    NoAddress(ResponseCode),
    /// Socket trouble.
    #[error("DNS socket: {0}")]
    Io(#[from] std::io::Error),
    /// The query could not be encoded.
    #[error("cannot encode the query: {0}")]
    Encode(String),
}

/// An address with the time it may be kept until.
#[derive(Debug, Clone, Copy)]
struct Cached {
    address: Ipv4Addr,
    until: Instant,
}

/// One client's resolver stub.
#[derive(Debug)]
pub struct Stub {
    socket: UdpSocket,
    server: SocketAddr,
    name: Name,
    honour_ttl: bool,
    cached: Option<Cached>,
}

/// A lookup's outcome: the address and whether it came from the cache.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// The first A record.
    pub address: Ipv4Addr,
    /// Answered from the stub's cache (no query sent).
    pub cached: bool,
}

impl Stub {
    /// A stub asking `server` for `name`.
    pub async fn new(server: SocketAddr, name: &str, honour_ttl: bool) -> anyhow::Result<Stub> {
        let socket = UdpSocket::bind(if server.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        })
        .await?;
        let name = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
            .map_err(|e| anyhow::anyhow!("{name:?} is not a DNS name: {e}"))?;
        Ok(Stub {
            socket,
            server,
            name,
            honour_ttl,
            cached: None,
        })
    }

    /// The address to use now: from the cache while its TTL lasts (when the
    /// stub honours TTLs), else from a query.
    pub async fn lookup(&mut self) -> Result<Answer, LookupError> {
        let now = Instant::now();
        if let Some(c) = self.cached.filter(|c| self.honour_ttl && now < c.until) {
            return Ok(Answer {
                address: c.address,
                cached: true,
            });
        }
        let (address, ttl) = self.query().await?;
        self.cached = Some(Cached {
            address,
            until: Instant::now() + Duration::from_secs(u64::from(ttl)),
        });
        Ok(Answer {
            address,
            cached: false,
        })
    }

    /// Drops the cached answer (its address failed): the next lookup asks.
    pub fn forget(&mut self) {
        self.cached = None;
    }

    async fn query(&self) -> Result<(Ipv4Addr, u32), LookupError> {
        let id: u16 = rand::rng().random();
        let mut message = Message::query();
        message.metadata.id = id;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(self.name.clone(), RecordType::A));
        let bytes = message
            .to_vec()
            .map_err(|e| LookupError::Encode(e.to_string()))?;
        let mut buf = vec![0u8; 4096];
        for _ in 0..TRIES {
            self.socket.send_to(&bytes, self.server).await?;
            let end = Instant::now() + RETRY_AFTER;
            loop {
                let received = tokio::time::timeout_at(end, self.socket.recv_from(&mut buf)).await;
                let Ok(received) = received else { break };
                let (len, from) = received?;
                if from != self.server {
                    continue;
                }
                let Ok(response) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                if response.metadata.id != id
                    || response.metadata.message_type != MessageType::Response
                {
                    // A late answer to an earlier try.
                    continue;
                }
                return response
                    .answers
                    .iter()
                    .find_map(|r| match &r.data {
                        RData::A(a) => Some((a.0, r.ttl)),
                        _ => None,
                    })
                    .ok_or(LookupError::NoAddress(response.metadata.response_code));
            }
        }
        Err(LookupError::Timeout(self.server))
    }
}
