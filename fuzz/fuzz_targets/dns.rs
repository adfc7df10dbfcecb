//! The DNS front, bytes in and bytes out, in process: decode, route, answer
//! from a group, encode with truncation.
//!
//! Input: one request as it arrives in a UDP datagram (or a TCP frame
//! without its length prefix). It is answered as both.
//!
//! The fixture's client may not recurse, so names outside the anycast zones
//! are refused, never forwarded: nothing leaves the process.
//!
//! Invariants: no answer to fewer than 12 bytes or to a response; an answer
//! carries the request's id, is a response, decodes as a DNS message, and
//! over UDP fits the payload the client offered (512 without EDNS, at most
//! our own limit); a request with EDNS gets EDNS back (RFC 6891 section 7,
//! truncated or not); the question is echoed.

#![no_main]

use std::sync::LazyLock;

use anycast_fuzz::DnsFixture;
use anycast_resolver::dns::Transport;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use libfuzzer_sys::fuzz_target;

static FIXTURE: LazyLock<DnsFixture> = LazyLock::new(DnsFixture::new);

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    let request = Message::from_vec(data).ok();
    for transport in [Transport::Udp, Transport::Tcp] {
        let Some(response) = fx.answer(data, transport) else {
            continue;
        };
        check(fx, data, request.as_ref(), &response, transport);
    }
    if data.len() < 12 || data[2] & 0x80 != 0 {
        assert_eq!(fx.answer(data, Transport::Udp), None, "answered {data:?}");
    }
});

fn check(
    fx: &DnsFixture,
    data: &[u8],
    request: Option<&Message>,
    response: &[u8],
    transport: Transport,
) {
    assert!(data.len() >= 12 && data[2] & 0x80 == 0, "answered {data:?}");
    assert!(response.len() >= 12, "short response {response:?}");
    assert_eq!(response[..2], data[..2], "id");
    let limit = match (transport, request) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(request)) => match &request.edns {
            Some(edns) => usize::from(edns.max_payload().clamp(512, fx.udp_payload)),
            None => 512,
        },
        (Transport::Udp, None) => usize::from(fx.udp_payload),
    };
    assert!(
        response.len() <= limit,
        "{transport:?} response of {} bytes, limit {limit}",
        response.len()
    );

    let decoded = match Message::from_vec(response) {
        Ok(decoded) => decoded,
        Err(error) => panic!("{transport:?} response does not decode: {error}\n{response:?}"),
    };
    assert_eq!(decoded.metadata.message_type, MessageType::Response);
    let Some(request) = request else {
        return;
    };
    if decoded.metadata.response_code == ResponseCode::FormErr {
        return;
    }
    assert_eq!(decoded.metadata.op_code, request.metadata.op_code);
    assert_eq!(
        decoded.metadata.recursion_desired,
        request.metadata.recursion_desired
    );
    assert_eq!(decoded.queries, request.queries, "question not echoed");
    if request.edns.is_some() {
        assert!(
            decoded.edns.is_some(),
            "{transport:?} response without OPT to a request with one: {decoded:?}"
        );
    }
}
