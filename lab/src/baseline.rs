//! `anycast-lab baseline-dns`: a plain authoritative DNS server, the
//! baseline for the resolver's throughput (`scripts/bench-dns.sh`).
//!
//! It is hickory-server's own `Catalog` over an in-memory zone, on the same
//! hickory version the resolver is built on: whatever the resolver costs
//! beyond this is the price of anycast (name parsing, selection, views) and
//! of our own socket loops. The zone `bench.example.` answers
//! `www.bench.example. A 192.0.2.1` (TTL 3600), and any other name under it
//! from a wildcard, so the same server can also be the resolver's upstream
//! for the forwarded-name measurement.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hickory_proto::rr::rdata::{A, NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

/// The zone served.
pub const ZONE: &str = "bench.example.";

/// The name `scripts/bench-dns.sh` asks.
pub const NAME: &str = "www.bench.example.";

/// Serves the zone on `listen` (UDP and TCP) until `shutdown`.
pub async fn serve(listen: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let catalog = catalog()?;
    // TCP on the same port as UDP, so port 0 gives one address for both.
    let pair = anycast_listen::bind(listen)
        .with_context(|| format!("cannot listen on {listen} (UDP and TCP)"))?;
    let bound = pair.local_addr()?;
    pair.udp.set_nonblocking(true)?;
    pair.tcp.set_nonblocking(true)?;
    let udp = UdpSocket::from_std(pair.udp)?;
    let tcp = TcpListener::from_std(pair.tcp)?;
    let mut server = Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
    eprintln!("listening on {bound} listener=\"dns-udp\"");
    eprintln!("listening on {bound} listener=\"dns-tcp\"");
    shutdown.cancelled().await;
    server
        .shutdown_gracefully()
        .await
        .map_err(|e| anyhow::anyhow!("shutting down: {e}"))?;
    Ok(())
}

fn name(text: &str) -> anyhow::Result<Name> {
    Name::from_ascii(text).map_err(|e| anyhow::anyhow!("{text}: {e}"))
}

/// The catalog: one in-memory primary zone.
fn catalog() -> anyhow::Result<Catalog> {
    let origin = name(ZONE)?;
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let ns = name("ns.bench.example.")?;
    let records = [
        Record::from_rdata(
            origin.clone(),
            3600,
            RData::SOA(SOA::new(
                ns.clone(),
                name("hostmaster.bench.example.")?,
                1,
                3600,
                600,
                86_400,
                60,
            )),
        ),
        Record::from_rdata(origin.clone(), 3600, RData::NS(NS(ns.clone()))),
        Record::from_rdata(ns, 3600, RData::A(A::new(192, 0, 2, 53))),
        Record::from_rdata(name(NAME)?, 3600, RData::A(A::new(192, 0, 2, 1))),
        Record::from_rdata(
            name("*.bench.example.")?,
            3600,
            RData::A(A::new(192, 0, 2, 2)),
        ),
    ];
    for record in records {
        let what = format!("{} {}", record.name, record.record_type());
        if !zone.upsert_mut(record, 1) {
            anyhow::bail!("cannot add {what} to the baseline zone");
        }
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
    Ok(catalog)
}
