//! RFC 3261 transactions (§17) without I/O, in the shape of `quinn-proto`'s `Endpoint`:
//! `handle_*` inputs, commands (`respond`, `send_request`), and `poll_*` outputs.
//!
//! Server side: INVITE (100 Trying sent at once; final responses retransmitted on Timer G over
//! UDP until ACK or Timer H; Timer I), 2xx retransmitted by the endpoint itself from T1 doubling
//! to T2 until the ACK arrives or 64*T1 passes (RFC 6026 "Accepted": a retransmitted INVITE is
//! answered with the 2xx again, never passed up twice); non-INVITE (Timer J). CANCEL is matched
//! to its INVITE (§9.2), answered 200 (or 481) here, and reported as [`Event::Cancel`].
//! Client side: non-INVITE (Timers E, F, K) for the requests Reel sends itself (BYE).
//! Responses go where §18.2.2 and RFC 3581 (rport) say.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{Request, Response};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
    /// The Via transport token.
    pub fn as_via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// A stream connection, numbered by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Where a message came from or goes to. For TCP/TLS, `conn` names the connection to use; a
/// transmit with `conn: None` on a stream transport asks the driver to open a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub conn: Option<ConnId>,
}

/// Bytes to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub flow: Flow,
    pub data: Vec<u8>,
}

/// A transaction, server or client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    /// Value of the `Server` / `User-Agent` header on what the endpoint builds itself.
    pub user_agent: String,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            user_agent: concat!("Reel/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// What the endpoint reports to its user (`control::Recorder`).
#[derive(Clone, Debug)]
pub enum Event {
    /// A new request (not ACK, not CANCEL) that passed validation. Answer it with
    /// [`Endpoint::respond`] (a final response is required; provisional ones are optional).
    Request {
        tx: TxId,
        request: Request,
        flow: Flow,
    },
    /// An ACK for a 2xx (the endpoint has already stopped retransmitting that 2xx).
    Ack { request: Request, flow: Flow },
    /// A CANCEL matched `invite_tx`, which had no final response yet. The endpoint answered the
    /// CANCEL with 200; the user should answer the INVITE with 487.
    Cancel { invite_tx: TxId, request: Request },
    /// A 2xx to the INVITE `tx` got no ACK within 64*T1. `call_id` and the tags identify the
    /// dialog the user should end.
    AckTimeout {
        tx: TxId,
        call_id: String,
        local_tag: String,
        remote_tag: String,
    },
    /// A response to a client transaction started with [`Endpoint::send_request`].
    Response { tx: TxId, response: Response },
    /// A client transaction got no final response (Timer F), or its transport failed.
    ClientTimeout { tx: TxId },
    /// Something arrived that was not a usable SIP message; already answered where possible.
    Malformed { flow: Flow, reason: String },
}

/// The transaction layer.
pub struct Endpoint {
    _config: EndpointConfig,
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Endpoint {
        Endpoint { _config: config }
    }

    /// One whole message received on `flow` (a datagram, or one frame from a stream).
    /// Retransmissions are answered from their transaction; malformed requests get a 400
    /// (505 for another SIP version) naming the problem when a response can be built at all.
    pub fn handle_message(&mut self, now: Instant, flow: Flow, data: &[u8]) {
        let _ = (now, flow, data);
        todo!()
    }

    /// Sends a response in server transaction `tx` (provisional or final). Unknown or finished
    /// transactions are ignored.
    pub fn respond(&mut self, now: Instant, tx: TxId, response: Response) {
        let _ = (now, tx, response);
        todo!()
    }

    /// Starts a non-INVITE client transaction. The endpoint puts its own top Via (with a fresh
    /// branch and `rport`) on the request.
    pub fn send_request(&mut self, now: Instant, request: Request, flow: Flow) -> TxId {
        let _ = (now, request, flow);
        todo!()
    }

    /// A stream connection closed: transactions that would send on it fall back to opening a
    /// new connection (§18.2.2), client transactions on it fail.
    pub fn handle_connection_closed(&mut self, now: Instant, conn: ConnId) {
        let _ = (now, conn);
        todo!()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        todo!()
    }

    /// The earliest time `handle_timeout` must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// Live transactions, for metrics and tests.
    pub fn transaction_count(&self) -> usize {
        todo!()
    }
}
