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
//!
//! Memory: a transaction keeps one encoded message (its latest response, or its request) and
//! a few ids; it is removed when its last timer fires. An unanswered non-INVITE request is
//! dropped after 64*T1 (its client has given up by then); an INVITE waits for the user's final
//! response, which the user must always send. Malformed input is reported as
//! [`Event::Malformed`] whether or not a 400/505 could be sent for it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::header::{CSeq, NameAddr, Via};
use super::message::{Method, Request, Response, parse_raw, sanitize, split_list};

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
    /// The port a SIP URI or Via without one means (RFC 3261 §19.1.2): 5061 for TLS.
    pub fn default_port(self) -> u16 {
        if self == Transport::Tls { 5061 } else { 5060 }
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
    /// Seed for tags and branches; `None` seeds from the OS. Tests set it for repeatable runs.
    pub seed: Option<u64>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            user_agent: concat!("Reel/", env!("CARGO_PKG_VERSION")).to_string(),
            seed: None,
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

/// RFC 3261 §8.1.1.7: branches of RFC 3261 clients start with this.
const MAGIC_COOKIE: &str = "z9hG4bK";

/// How a server transaction is found again (§17.2.3). ACK is keyed as INVITE; CANCEL has its
/// own transactions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ServerKey {
    Rfc3261 {
        branch: String,
        host: String,
        port: Option<u16>,
        method: Method,
    },
    /// Clients without the magic cookie (RFC 2543): Call-ID, CSeq number, From tag and the top
    /// Via as written identify the transaction (Request-URI and To tag left out: they do not
    /// change between retransmissions of the requests we serve).
    Rfc2543 {
        call_id: String,
        cseq: u32,
        from_tag: String,
        via: String,
        method: Method,
    },
}

fn server_key(req: &Request, top_via_raw: &str, via: &Via, method: Method) -> Option<ServerKey> {
    let method = if method == Method::Ack {
        Method::Invite
    } else {
        method
    };
    match via.branch() {
        Some(branch) if branch.starts_with(MAGIC_COOKIE) => Some(ServerKey::Rfc3261 {
            branch: branch.to_string(),
            host: via.host.to_ascii_lowercase(),
            port: via.port,
            method,
        }),
        _ => {
            let cseq = CSeq::parse(req.headers.get("CSeq")?).ok()?;
            let from_tag = req
                .headers
                .get("From")
                .and_then(|f| NameAddr::parse(f).ok())
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default();
            Some(ServerKey::Rfc2543 {
                call_id: req.call_id()?.trim().to_string(),
                cseq: cseq.seq,
                from_tag,
                via: top_via_raw.to_string(),
                method,
            })
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerState {
    /// No response yet (non-INVITE "Trying") or a provisional one sent ("Proceeding").
    Proceeding,
    /// Final non-2xx sent (INVITE: waiting for the ACK; non-INVITE: Timer J).
    Completed,
    /// INVITE: ACK for the non-2xx received, Timer I running.
    Confirmed,
    /// INVITE: 2xx sent (RFC 6026); `acked` once the ACK arrived.
    Accepted { acked: bool },
}

struct ServerTx {
    key: ServerKey,
    invite: bool,
    state: ServerState,
    /// Where responses go now; `fallback` once the connection is gone (§18.2.2).
    dest: Flow,
    fallback: Flow,
    /// Identifies the 2xx's ACK (a new transaction) and the dialog on AckTimeout.
    call_id: String,
    cseq: u32,
    remote_tag: String,
    local_tag: String,
    /// The latest response, encoded, to answer retransmissions with.
    last_response: Option<Vec<u8>>,
    last_status: u16,
    /// Timer G / 2xx retransmission.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer H, I, J, or the 64*T1 wait for a 2xx's ACK.
    end_at: Option<Instant>,
}

impl ServerTx {
    fn deadline(&self) -> Option<Instant> {
        match (self.retransmit_at, self.end_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    Trying,
    Proceeding,
    Completed,
}

struct ClientTx {
    key: (String, Method),
    state: ClientState,
    flow: Flow,
    request: Vec<u8>,
    /// Timer E.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer F, then Timer K.
    end_at: Option<Instant>,
}

impl ClientTx {
    fn deadline(&self) -> Option<Instant> {
        match (self.retransmit_at, self.end_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Which map a timer entry points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerOf {
    Server,
    Client,
}

/// The transaction layer.
pub struct Endpoint {
    config: EndpointConfig,
    rng: SmallRng,
    next_id: u64,
    // BTreeMaps so that timers firing together are handled in a repeatable order.
    servers: BTreeMap<TxId, ServerTx>,
    server_index: HashMap<ServerKey, TxId>,
    /// (Call-ID, CSeq number) of INVITEs answered 2xx, to match their ACK (any branch).
    ack_index: HashMap<(String, u32), TxId>,
    /// The newest INVITE transaction per Call-ID whose 2xx waits for its ACK: the fallback
    /// for an ACK whose CSeq number is not the INVITE's (see `handle_ack`).
    ack_by_call: HashMap<String, TxId>,
    /// (Call-ID, From tag, CSeq number) of initial INVITEs (no To tag), to tell a merged
    /// request: the same INVITE arriving again by another path, with another branch.
    merge_index: HashMap<(String, String, u32), TxId>,
    clients: BTreeMap<TxId, ClientTx>,
    client_index: HashMap<(String, Method), TxId>,
    /// Deadlines, earliest first: an entry per deadline a transaction was given, so the next
    /// timeout and the due transactions are found without visiting every live transaction
    /// (thousands, each kept 64*T1 after its 2xx). Entries go stale when a deadline moves or
    /// its transaction ends; stale ones are dropped when they reach the top. Invariant: every
    /// live transaction's current deadline has an entry (`arm` after every change).
    timers: BinaryHeap<Reverse<(Instant, TimerOf, TxId)>>,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
}

/// Where responses to a request go (§18.2.2, RFC 3581), from its flow and its top Via (with
/// `received`/`rport` already filled in). Returns the flow to use now and the one to use once
/// the request's connection is gone.
fn response_flows(flow: Flow, via: &Via) -> (Flow, Flow) {
    let received_ip = via
        .param("received")
        .flatten()
        .and_then(|r| r.trim_matches(['[', ']']).parse::<IpAddr>().ok());
    let ip = received_ip
        .or_else(|| via.host.parse::<IpAddr>().ok())
        .unwrap_or(flow.remote.ip());
    let sent_by_port = via.port.unwrap_or(flow.transport.default_port());
    if flow.transport.is_reliable() {
        let fallback = Flow {
            remote: SocketAddr::new(ip, sent_by_port),
            conn: None,
            ..flow
        };
        let now = if flow.conn.is_some() { flow } else { fallback };
        (now, fallback)
    } else {
        let port = via
            .param("rport")
            .flatten()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(sent_by_port);
        let dest = Flow {
            remote: SocketAddr::new(ip, port),
            ..flow
        };
        (dest, dest)
    }
}

fn to_tag(headers: &super::Headers) -> Option<String> {
    headers
        .get("To")
        .and_then(|t| NameAddr::parse(t).ok())
        .and_then(|t| t.tag().map(str::to_string))
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Endpoint {
        let rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        Endpoint {
            config,
            rng,
            next_id: 1,
            servers: BTreeMap::new(),
            server_index: HashMap::new(),
            merge_index: HashMap::new(),
            ack_index: HashMap::new(),
            ack_by_call: HashMap::new(),
            clients: BTreeMap::new(),
            client_index: HashMap::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        }
    }

    /// A fresh random token (tags, branches): 64 bits as hex.
    pub fn random_token(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    fn new_id(&mut self) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        id
    }

    fn timer_64t1(&self) -> Duration {
        self.config.t1 * 64
    }

    /// One whole message received on `flow` (a datagram, or one frame from a stream).
    /// Retransmissions are answered from their transaction; malformed requests get a 400
    /// (505 for another SIP version) naming the problem when a response can be built at all.
    pub fn handle_message(&mut self, now: Instant, flow: Flow, data: &[u8]) {
        self.handle_message_inner(now, flow, data, None);
        self.prune_timers();
    }

    /// The header section of a message over the size limit (the framer skipped its body): a
    /// request gets 513 Message Too Large (RFC 3261 §21.5.14) naming `problem`, statelessly,
    /// when it carries what a response needs; a response is dropped. Either way it is reported
    /// as malformed and nothing else happens.
    pub fn handle_too_large(&mut self, now: Instant, flow: Flow, head: &[u8], problem: &str) {
        self.handle_message_inner(now, flow, head, Some(problem));
        self.prune_timers();
    }

    fn handle_message_inner(
        &mut self,
        now: Instant,
        flow: Flow,
        data: &[u8],
        too_large: Option<&str>,
    ) {
        let raw = match parse_raw(data) {
            Ok(raw) => raw,
            Err(e) => {
                self.events.push_back(Event::Malformed {
                    flow,
                    reason: e.reason,
                });
                return;
            }
        };
        let version_ok = raw.version_ok();
        match raw.message {
            super::Message::Response(response) => {
                let problem = if let Some(p) = too_large {
                    Some(p.to_string())
                } else if !version_ok {
                    Some(format!(
                        "Unsupported SIP version {}",
                        sanitize(&raw.version)
                    ))
                } else {
                    raw.problem
                };
                match problem {
                    Some(reason) => self.events.push_back(Event::Malformed { flow, reason }),
                    None => self.handle_response(now, response),
                }
            }
            super::Message::Request(mut request) => {
                // §18.2.1 / RFC 3581: record where the request really came from in the top Via,
                // before anything (including a 400) is answered from it.
                let top = request.headers.get_list("Via").into_iter().next();
                let via = top
                    .as_deref()
                    .and_then(|v| Via::parse(v).ok())
                    .map(|mut via| {
                        stamp_via(&mut via, flow.remote);
                        via
                    });
                if let Some(via) = &via {
                    replace_top_via(&mut request.headers, &via.to_header_value());
                }
                let problem = if let Some(p) = too_large {
                    Some((513, p.to_string()))
                } else if !version_ok {
                    Some((
                        505,
                        format!("Unsupported SIP version {}", sanitize(&raw.version)),
                    ))
                } else {
                    raw.problem
                        .or_else(|| request.validate().err())
                        .map(|p| (400, p))
                };
                let (Some(via), Some(top), None) = (via, top, problem.as_ref()) else {
                    let (status, reason) =
                        problem.unwrap_or_else(|| (400, "Missing Via header".to_string()));
                    self.reject(flow, &request, status, &reason);
                    return;
                };
                self.handle_request(now, flow, request, &top, via);
            }
        }
    }

    /// Answers a request that cannot be served (400/505/513) and reports it. Everything but an
    /// ACK gets its answer: per its top Via when that parses, else (no Via, or one that does
    /// not parse) straight back where the request came from (the UDP source, or the
    /// connection), since §18.2.2 has nothing better to offer and silence tells the sender
    /// nothing. A missing CSeq or Call-ID only leaves that header out of the answer.
    fn reject(&mut self, flow: Flow, request: &Request, status: u16, problem: &str) {
        if request.method != Method::Ack {
            let via = request
                .headers
                .get_list("Via")
                .into_iter()
                .next()
                .and_then(|v| Via::parse(&v).ok());
            let reason = if status == 400 {
                sanitize(problem)
            } else {
                String::new()
            };
            let mut response = Response::for_request(request, status, &reason);
            response
                .headers
                .push("Warning", format!("399 reel \"{}\"", sanitize(problem)));
            let dest = via.map_or(flow, |via| response_flows(flow, &via).0);
            self.send_stateless(dest, response);
        }
        self.events.push_back(Event::Malformed {
            flow,
            reason: problem.to_string(),
        });
    }

    /// Sends a response the endpoint builds itself, outside any transaction, to `dest`: adds
    /// `Server` and a To tag when missing.
    fn send_stateless(&mut self, dest: Flow, mut response: Response) {
        self.finish_own_response(&mut response, None);
        self.transmits.push_back(Transmit {
            flow: dest,
            data: response.encode(),
        });
    }

    /// `Server` header and, for anything but 100, a To tag (`tag` or a random one).
    fn finish_own_response(&mut self, response: &mut Response, tag: Option<&str>) {
        response
            .headers
            .push("Server", self.config.user_agent.clone());
        if response.status == 100 || to_tag(&response.headers).is_some() {
            return;
        }
        let tag = match tag {
            Some(t) => t.to_string(),
            None => self.random_token(),
        };
        if let Some(to) = response.headers.get("To") {
            let value = match NameAddr::parse(to) {
                Ok(mut addr) => {
                    addr.set_param("tag", Some(tag));
                    addr.to_header_value()
                }
                Err(_) => format!("{to};tag={tag}"),
            };
            response.headers.set("To", value);
        }
    }

    fn handle_request(&mut self, now: Instant, flow: Flow, request: Request, top: &str, via: Via) {
        // The key is built from the Via as the client wrote it (RFC 2543 matching compares the
        // whole header), not from our stamped copy.
        let method = request.method.clone();
        match method {
            Method::Ack => return self.handle_ack(now, flow, request, top, &via),
            Method::Cancel => return self.handle_cancel(now, flow, request, top, via),
            _ => {}
        }
        let Some(key) = server_key(&request, top, &via, method.clone()) else {
            return;
        };
        if let Some(id) = self.server_index.get(&key).copied() {
            // A retransmission over a new connection (the first one closed, §18.2.2): the
            // transaction's responses follow it. The old one cannot carry them any more, and
            // opening one back to an SRC's ephemeral TCP port rarely works.
            if flow.transport.is_reliable()
                && flow.conn.is_some()
                && let Some(tx) = self.servers.get_mut(&id)
                && tx.dest.conn != flow.conn
            {
                tx.dest = flow;
            }
            self.retransmit_last(id);
            return;
        }
        let id = self.new_id();
        let (dest, fallback) = response_flows(flow, &via);
        let invite = method == Method::Invite;
        let mut tx = ServerTx {
            key: key.clone(),
            invite,
            state: ServerState::Proceeding,
            dest,
            fallback,
            call_id: request.call_id().unwrap_or("").trim().to_string(),
            cseq: request
                .headers
                .get("CSeq")
                .and_then(|c| CSeq::parse(c).ok())
                .map_or(0, |c| c.seq),
            remote_tag: request
                .headers
                .get("From")
                .and_then(|f| NameAddr::parse(f).ok())
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default(),
            local_tag: String::new(),
            last_response: None,
            last_status: 0,
            retransmit_at: None,
            interval: self.config.t1,
            // A non-INVITE request the user never answers would otherwise live forever; its
            // client gives up after 64*T1 (Timer F), so may we.
            end_at: (!invite).then(|| now + self.timer_64t1()),
        };
        let initial = invite
            && !tx.remote_tag.is_empty()
            && request
                .headers
                .get("To")
                .and_then(|t| NameAddr::parse(t).ok())
                .is_some_and(|t| t.tag().is_none());
        if initial {
            // The first transaction of its (Call-ID, From tag, CSeq) stays the one listed.
            self.merge_index
                .entry((tx.call_id.clone(), tx.remote_tag.clone(), tx.cseq))
                .or_insert(id);
        }
        if invite {
            // §17.2.1: answer at once so that the client stops retransmitting over UDP.
            let mut trying = Response::for_request(&request, 100, "");
            if let Some(ts) = request.headers.get("Timestamp") {
                trying.headers.push("Timestamp", ts);
            }
            self.finish_own_response(&mut trying, None);
            let data = trying.encode();
            self.transmits.push_back(Transmit {
                flow: dest,
                data: data.clone(),
            });
            tx.last_response = Some(data);
            tx.last_status = 100;
        }
        self.servers.insert(id, tx);
        self.arm(TimerOf::Server, id);
        self.server_index.insert(key, id);
        self.events.push_back(Event::Request {
            tx: id,
            request,
            flow,
        });
    }

    /// RFC 3261 §8.2.2.2: whether initial INVITE `tx` is a merged request, the same
    /// request (Call-ID, From tag, CSeq) as an earlier transaction still here but arriving
    /// by another path with another branch (a forking proxy's second copy). The user answers
    /// it 482.
    pub fn is_merged(&self, tx: TxId) -> bool {
        self.servers.get(&tx).is_some_and(|s| {
            let key = (s.call_id.clone(), s.remote_tag.clone(), s.cseq);
            self.merge_index.get(&key).is_some_and(|&first| first != tx)
        })
    }

    fn retransmit_last(&mut self, id: TxId) {
        if let Some(tx) = self.servers.get(&id)
            && let Some(data) = &tx.last_response
        {
            self.transmits.push_back(Transmit {
                flow: tx.dest,
                data: data.clone(),
            });
        }
    }

    fn handle_ack(&mut self, now: Instant, flow: Flow, request: Request, top: &str, via: &Via) {
        let by_key = server_key(&request, top, via, Method::Ack)
            .and_then(|k| self.server_index.get(&k).copied());
        // The ACK for a 2xx is its own transaction with a new branch (§17.1.1.3): match it by
        // Call-ID and CSeq number.
        let by_dialog = || {
            let call_id = request.call_id()?.trim().to_string();
            let cseq = CSeq::parse(request.headers.get("CSeq")?).ok()?.seq;
            self.ack_index.get(&(call_id, cseq)).copied()
        };
        // Tolerated: an ACK with another CSeq number (SRC test scripts in the field send one
        // made up, e.g. MiaRec's BroadWorks SIPp scenarios) still acknowledges the 2xx that
        // its dialog (Call-ID and Reel's To tag) is waiting on; without this, Reel would
        // retransmit the 2xx for 32 s and then end the recording for want of an ACK.
        let by_call = || {
            let id = *self.ack_by_call.get(request.call_id()?.trim())?;
            let tx = self.servers.get(&id)?;
            let waiting = matches!(tx.state, ServerState::Accepted { acked: false });
            (waiting && to_tag(&request.headers).as_deref() == Some(tx.local_tag.as_str()))
                .then_some(id)
        };
        let Some(id) = by_key.or_else(by_dialog).or_else(by_call) else {
            self.events.push_back(Event::Ack { request, flow });
            return;
        };
        let t4 = self.config.t4;
        let Some(tx) = self.servers.get_mut(&id) else {
            self.events.push_back(Event::Ack { request, flow });
            return;
        };
        match tx.state {
            ServerState::Completed => {
                // §17.2.1: Confirmed; Timer I absorbs further ACK retransmissions.
                tx.state = ServerState::Confirmed;
                tx.retransmit_at = None;
                if tx.dest.transport.is_reliable() {
                    self.remove_server(id);
                } else {
                    tx.end_at = Some(now + t4);
                }
            }
            ServerState::Accepted { acked: false } => {
                // Stop retransmitting the 2xx, but keep the transaction until Timer L so that a
                // late INVITE retransmission still gets the 2xx and is not taken for a new call.
                tx.state = ServerState::Accepted { acked: true };
                tx.retransmit_at = None;
                self.events.push_back(Event::Ack { request, flow });
            }
            // Retransmitted ACKs, or an ACK before any final response: nothing to do.
            ServerState::Accepted { acked: true }
            | ServerState::Confirmed
            | ServerState::Proceeding => {}
        }
        self.arm(TimerOf::Server, id);
    }

    fn handle_cancel(&mut self, now: Instant, flow: Flow, request: Request, top: &str, via: Via) {
        let Some(own_key) = server_key(&request, top, &via, Method::Cancel) else {
            return;
        };
        if let Some(id) = self.server_index.get(&own_key).copied() {
            self.retransmit_last(id);
            return;
        }
        // §9.2: the CANCEL carries the branch and sent-by of the INVITE it cancels.
        let invite = server_key(&request, top, &via, Method::Invite)
            .and_then(|k| self.server_index.get(&k).copied())
            .and_then(|id| {
                self.servers
                    .get(&id)
                    .filter(|tx| tx.invite)
                    .map(|tx| (id, tx))
            })
            .map(|(id, tx)| {
                let tag = (!tx.local_tag.is_empty()).then(|| tx.local_tag.clone());
                (id, tx.last_status >= 200, tag)
            });
        let (status, tag, cancelled) = match invite {
            Some((id, final_sent, tag)) => (200, tag, (!final_sent).then_some(id)),
            None => (481, None, None),
        };
        let mut response = Response::for_request(&request, status, "");
        self.finish_own_response(&mut response, tag.as_deref());

        // The CANCEL's own non-INVITE transaction, already completed, answers retransmissions.
        let id = self.new_id();
        let (dest, fallback) = response_flows(flow, &via);
        let data = response.encode();
        self.transmits.push_back(Transmit {
            flow: dest,
            data: data.clone(),
        });
        let end_at = (!dest.transport.is_reliable()).then(|| now + self.timer_64t1());
        if end_at.is_some() {
            self.servers.insert(
                id,
                ServerTx {
                    key: own_key.clone(),
                    invite: false,
                    state: ServerState::Completed,
                    dest,
                    fallback,
                    call_id: String::new(),
                    cseq: 0,
                    remote_tag: String::new(),
                    local_tag: String::new(),
                    last_response: Some(data),
                    last_status: status,
                    retransmit_at: None,
                    interval: self.config.t1,
                    end_at,
                },
            );
            self.arm(TimerOf::Server, id);
            self.server_index.insert(own_key, id);
        }
        if let Some(invite_tx) = cancelled {
            self.events.push_back(Event::Cancel { invite_tx, request });
        }
    }

    fn handle_response(&mut self, now: Instant, response: Response) {
        let Some(via) = response
            .headers
            .get_list("Via")
            .into_iter()
            .next()
            .and_then(|v| Via::parse(&v).ok())
        else {
            return;
        };
        let Some(cseq) = response
            .headers
            .get("CSeq")
            .and_then(|c| CSeq::parse(c).ok())
        else {
            return;
        };
        let Some(branch) = via.branch() else { return };
        let Some(id) = self
            .client_index
            .get(&(branch.to_string(), cseq.method))
            .copied()
        else {
            return;
        };
        let t2 = self.config.t2;
        let t4 = self.config.t4;
        let Some(tx) = self.clients.get_mut(&id) else {
            return;
        };
        if tx.state == ClientState::Completed {
            // Retransmitted final response: absorbed by Timer K's wait.
            return;
        }
        if response.status < 200 {
            // §17.1.2.2: in Proceeding, Timer E fires every T2.
            tx.state = ClientState::Proceeding;
            tx.interval = t2;
        } else {
            tx.state = ClientState::Completed;
            tx.retransmit_at = None;
            if tx.flow.transport.is_reliable() {
                self.remove_client(id);
            } else {
                tx.end_at = Some(now + t4);
            }
        }
        self.arm(TimerOf::Client, id);
        self.events.push_back(Event::Response { tx: id, response });
    }

    /// Sends a response in server transaction `tx` (provisional or final). Unknown or finished
    /// transactions are ignored.
    pub fn respond(&mut self, now: Instant, tx: TxId, response: Response) {
        let t1 = self.config.t1;
        let timer_64t1 = self.timer_64t1();
        let Some(stx) = self.servers.get_mut(&tx) else {
            return;
        };
        if stx.state != ServerState::Proceeding {
            return;
        }
        let data = response.encode();
        self.transmits.push_back(Transmit {
            flow: stx.dest,
            data: data.clone(),
        });
        stx.last_response = Some(data);
        stx.last_status = response.status;
        if let Some(tag) = to_tag(&response.headers) {
            stx.local_tag = tag;
        }
        if response.status < 200 {
            return;
        }
        let unreliable = !stx.dest.transport.is_reliable();
        if stx.invite {
            if (200..300).contains(&response.status) {
                stx.state = ServerState::Accepted { acked: false };
                self.ack_index.insert((stx.call_id.clone(), stx.cseq), tx);
                self.ack_by_call.insert(stx.call_id.clone(), tx);
            } else {
                stx.state = ServerState::Completed;
            }
            // Timer G (non-2xx) and the 2xx retransmission share the T1-doubling schedule;
            // Timer H and the 2xx's ACK wait are both 64*T1.
            stx.interval = t1;
            stx.retransmit_at = unreliable.then(|| now + t1);
            stx.end_at = Some(now + timer_64t1);
        } else {
            stx.state = ServerState::Completed;
            if unreliable {
                stx.end_at = Some(now + timer_64t1);
            } else {
                self.remove_server(tx);
            }
        }
        self.arm(TimerOf::Server, tx);
        self.prune_timers();
    }

    /// Starts a non-INVITE client transaction. The endpoint puts its own top Via (with a fresh
    /// branch and `rport`) on the request.
    pub fn send_request(&mut self, now: Instant, request: Request, flow: Flow) -> TxId {
        let id = self.send_request_inner(now, request, flow);
        self.prune_timers();
        id
    }

    fn send_request_inner(&mut self, now: Instant, request: Request, flow: Flow) -> TxId {
        let mut request = request;
        let branch = format!("{MAGIC_COOKIE}{}", self.random_token());
        let host = match flow.local.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        request.headers.push_front(
            "Via",
            format!(
                "SIP/2.0/{} {host}:{};branch={branch};rport",
                flow.transport.as_via(),
                flow.local.port()
            ),
        );
        if request.headers.get("Max-Forwards").is_none() {
            request.headers.push("Max-Forwards", "70");
        }
        let id = self.new_id();
        let data = request.encode();
        self.transmits.push_back(Transmit {
            flow,
            data: data.clone(),
        });
        if request.method == Method::Ack {
            // An ACK has no transaction (§17.1.1.3): nothing to retransmit or wait for.
            return id;
        }
        let key = (branch, request.method.clone());
        let unreliable = !flow.transport.is_reliable();
        self.clients.insert(
            id,
            ClientTx {
                key: key.clone(),
                state: ClientState::Trying,
                flow,
                request: data,
                retransmit_at: unreliable.then(|| now + self.config.t1),
                interval: self.config.t1,
                end_at: Some(now + self.timer_64t1()),
            },
        );
        self.arm(TimerOf::Client, id);
        self.client_index.insert(key, id);
        id
    }

    /// A stream connection closed: transactions that would send on it fall back to opening a
    /// new connection (§18.2.2), client transactions on it fail.
    pub fn handle_connection_closed(&mut self, now: Instant, conn: ConnId) {
        let _ = now;
        for tx in self.servers.values_mut() {
            if tx.dest.conn == Some(conn) {
                tx.dest = tx.fallback;
            }
        }
        let failed: Vec<TxId> = self
            .clients
            .iter()
            .filter(|(_, tx)| tx.flow.conn == Some(conn))
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            let was_pending = self
                .clients
                .get(&id)
                .is_some_and(|tx| tx.state != ClientState::Completed);
            self.remove_client(id);
            if was_pending {
                self.events.push_back(Event::ClientTimeout { tx: id });
            }
        }
        self.prune_timers();
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let t2 = self.config.t2;
        // The entries due, by transaction, in id order (repeatable when timers fire together);
        // only those whose current deadline is due are acted on, the rest were stale.
        let mut due_servers = Vec::new();
        let mut due_clients = Vec::new();
        while let Some(&Reverse((at, of, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match of {
                TimerOf::Server => due_servers.push(id),
                TimerOf::Client => due_clients.push(id),
            }
        }
        for due in [&mut due_servers, &mut due_clients] {
            due.sort_unstable();
            due.dedup();
        }
        due_servers.retain(|id| {
            self.servers
                .get(id)
                .and_then(ServerTx::deadline)
                .is_some_and(|d| d <= now)
        });
        due_clients.retain(|id| {
            self.clients
                .get(id)
                .and_then(ClientTx::deadline)
                .is_some_and(|d| d <= now)
        });
        for &id in &due_servers {
            let Some(tx) = self.servers.get_mut(&id) else {
                continue;
            };
            // The end of a transaction wins over a retransmission due at the same time.
            if tx.end_at.is_some_and(|at| at <= now) {
                if tx.state == (ServerState::Accepted { acked: false }) {
                    let event = Event::AckTimeout {
                        tx: id,
                        call_id: tx.call_id.clone(),
                        local_tag: tx.local_tag.clone(),
                        remote_tag: tx.remote_tag.clone(),
                    };
                    self.events.push_back(event);
                }
                self.remove_server(id);
                continue;
            }
            if tx.retransmit_at.is_some_and(|at| at <= now) {
                if let Some(data) = &tx.last_response {
                    self.transmits.push_back(Transmit {
                        flow: tx.dest,
                        data: data.clone(),
                    });
                }
                tx.interval = (tx.interval * 2).min(t2);
                tx.retransmit_at = Some(now + tx.interval);
            }
        }

        for &id in &due_clients {
            let Some(tx) = self.clients.get_mut(&id) else {
                continue;
            };
            if tx.end_at.is_some_and(|at| at <= now) {
                // Timer F (no final response) or Timer K (done).
                let timed_out = tx.state != ClientState::Completed;
                self.remove_client(id);
                if timed_out {
                    self.events.push_back(Event::ClientTimeout { tx: id });
                }
                continue;
            }
            if tx.retransmit_at.is_some_and(|at| at <= now) {
                self.transmits.push_back(Transmit {
                    flow: tx.flow,
                    data: tx.request.clone(),
                });
                tx.interval = match tx.state {
                    ClientState::Trying => (tx.interval * 2).min(t2),
                    _ => t2,
                };
                tx.retransmit_at = Some(now + tx.interval);
            }
        }
        for id in due_servers {
            self.arm(TimerOf::Server, id);
        }
        for id in due_clients {
            self.arm(TimerOf::Client, id);
        }
        self.prune_timers();
    }

    /// The current deadline of a transaction, if it is live and has one.
    fn deadline_of(&self, of: TimerOf, id: TxId) -> Option<Instant> {
        match of {
            TimerOf::Server => self.servers.get(&id).and_then(ServerTx::deadline),
            TimerOf::Client => self.clients.get(&id).and_then(ClientTx::deadline),
        }
    }

    /// Records a transaction's current deadline (after it was set or moved).
    fn arm(&mut self, of: TimerOf, id: TxId) {
        if let Some(at) = self.deadline_of(of, id) {
            self.timers.push(Reverse((at, of, id)));
        }
    }

    /// Drops stale entries from the top, so that the top is the earliest live deadline.
    fn prune_timers(&mut self) {
        while let Some(&Reverse((at, of, id))) = self.timers.peek() {
            if self.deadline_of(of, id) == Some(at) {
                return;
            }
            self.timers.pop();
        }
    }

    fn remove_server(&mut self, id: TxId) {
        if let Some(tx) = self.servers.remove(&id) {
            self.server_index.remove(&tx.key);
            let merge_key = (tx.call_id.clone(), tx.remote_tag, tx.cseq);
            if self.merge_index.get(&merge_key) == Some(&id) {
                self.merge_index.remove(&merge_key);
            }
            if self.ack_by_call.get(&tx.call_id) == Some(&id) {
                self.ack_by_call.remove(&tx.call_id);
            }
            let ack_key = (tx.call_id, tx.cseq);
            if self.ack_index.get(&ack_key) == Some(&id) {
                self.ack_index.remove(&ack_key);
            }
        }
    }

    fn remove_client(&mut self, id: TxId) {
        if let Some(tx) = self.clients.remove(&id) {
            self.client_index.remove(&tx.key);
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The earliest time `handle_timeout` must be called. O(1): the top of the deadline heap,
    /// which every input keeps free of stale entries.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Live transactions, for metrics and tests.
    pub fn transaction_count(&self) -> usize {
        self.servers.len() + self.clients.len()
    }
}

/// §18.2.1 and RFC 3581 §4: `received` when the sent-by host is not the source address, and
/// an empty `rport` filled with the source port (which also requires `received`).
fn stamp_via(via: &mut Via, source: SocketAddr) {
    let wants_rport = matches!(via.param("rport"), Some(None) | Some(Some("")));
    let same_host = via.host.parse::<IpAddr>().is_ok_and(|ip| ip == source.ip());
    if wants_rport {
        via.set_param("rport", Some(source.port().to_string()));
    }
    if !same_host || wants_rport {
        via.set_param("received", Some(source.ip().to_string()));
    }
}

/// Replaces the first element of the first Via line, keeping the other elements of that line.
fn replace_top_via(headers: &mut super::Headers, top: &str) {
    let Some(first_line) = headers.get("Via") else {
        return;
    };
    let mut elements = split_list(first_line);
    if elements.is_empty() {
        return;
    }
    elements[0] = top.to_string();
    headers.replace_first("Via", elements.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Message, parse_message};

    const SRC: &str = "192.0.2.5:40000";
    const LOCAL: &str = "10.0.0.1:5060";

    fn endpoint() -> Endpoint {
        Endpoint::new(EndpointConfig {
            seed: Some(7),
            ..EndpointConfig::default()
        })
    }

    fn flow(transport: Transport) -> Flow {
        Flow {
            transport,
            local: LOCAL.parse().unwrap(),
            remote: SRC.parse().unwrap(),
            conn: transport.is_reliable().then_some(ConnId(1)),
        }
    }

    fn udp() -> Flow {
        flow(Transport::Udp)
    }

    fn request_text(method: &str, branch: &str, cseq: u32, via_extra: &str) -> String {
        format!(
            "{method} sip:srs@10.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.5:5060;branch={branch}{via_extra}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:src@192.0.2.5>;tag=from1\r\n\
             To: <sip:srs@10.0.0.1>\r\n\
             Call-ID: call-1\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:src@192.0.2.5>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    fn invite() -> String {
        request_text("INVITE", "z9hG4bKinv", 1, "")
    }

    fn transmits(ep: &mut Endpoint) -> Vec<Transmit> {
        std::iter::from_fn(|| ep.poll_transmit()).collect()
    }

    fn events(ep: &mut Endpoint) -> Vec<Event> {
        std::iter::from_fn(|| ep.poll_event()).collect()
    }

    fn response(t: &Transmit) -> Response {
        match parse_message(&t.data) {
            Ok(Message::Response(r)) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    fn statuses(ts: &[Transmit]) -> Vec<u16> {
        ts.iter().map(|t| response(t).status).collect()
    }

    fn one_request(ep: &mut Endpoint) -> (TxId, Request) {
        match events(ep).as_slice() {
            [Event::Request { tx, request, .. }] => (*tx, request.clone()),
            other => panic!("{other:?}"),
        }
    }

    /// Feeds a new INVITE and returns its transaction and request, with the 100 consumed.
    fn start_invite(ep: &mut Endpoint, now: Instant, flow: Flow) -> (TxId, Request) {
        ep.handle_message(now, flow, invite().as_bytes());
        assert_eq!(statuses(&transmits(ep)), [100]);
        match events(ep).as_slice() {
            [Event::Request { tx, request, .. }] => (*tx, request.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_invite_retransmitted_on_a_new_connection_is_answered_there() {
        let mut ep = endpoint();
        let now = Instant::now();
        let first = flow(Transport::Tcp);
        let (tx, req) = start_invite(&mut ep, now, first);
        // The first connection closes; the SRC sends the same INVITE on a new one.
        let second = Flow {
            conn: Some(ConnId(2)),
            remote: "192.0.2.5:40001".parse().unwrap(),
            ..first
        };
        ep.handle_message(now, second, invite().as_bytes());
        let sent = transmits(&mut ep);
        assert_eq!(statuses(&sent), [100]);
        assert_eq!(sent[0].flow, second, "the 100 again, on the new connection");
        assert!(
            events(&mut ep).is_empty(),
            "a retransmission, not a new request"
        );
        ep.respond(now, tx, answer(&req, 200));
        let sent = transmits(&mut ep);
        assert_eq!(statuses(&sent), [200]);
        assert_eq!(sent[0].flow, second, "and the final answer too");
    }

    fn answer(req: &Request, status: u16) -> Response {
        let mut r = Response::for_request(req, status, "");
        r.headers.set("To", "<sip:srs@10.0.0.1>;tag=local1");
        r
    }

    /// Advances to each poll_timeout up to `until`, returning the times transmits happened.
    fn run_until(ep: &mut Endpoint, start: Instant, until: Duration) -> Vec<Duration> {
        let mut sent = Vec::new();
        while let Some(at) = ep.poll_timeout() {
            if at > start + until {
                break;
            }
            ep.handle_timeout(at);
            for _ in transmits(ep) {
                sent.push(at - start);
            }
        }
        sent
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn new_invite_gets_100_trying_before_request_event() {
        let mut ep = endpoint();
        let now = Instant::now();
        ep.handle_message(now, udp(), invite().as_bytes());
        let sent = transmits(&mut ep);
        let trying = response(&sent[0]);
        assert_eq!(trying.status, 100);
        assert!(trying.headers.get("Server").is_some());
        assert!(matches!(
            events(&mut ep).as_slice(),
            [Event::Request { .. }]
        ));
        assert_eq!(ep.transaction_count(), 1);
    }

    #[test]
    fn invite_retransmission_gets_same_response_without_new_event() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.handle_message(now, udp(), invite().as_bytes());
        assert_eq!(statuses(&transmits(&mut ep)), [100]);
        ep.respond(now, tx, answer(&req, 180));
        transmits(&mut ep);
        ep.handle_message(now, udp(), invite().as_bytes());
        assert_eq!(statuses(&transmits(&mut ep)), [180]);
        assert!(events(&mut ep).is_empty());
    }

    #[test]
    fn invite_retransmission_after_final_gets_final() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.respond(now, tx, answer(&req, 486));
        transmits(&mut ep);
        ep.handle_message(now, udp(), invite().as_bytes());
        assert_eq!(statuses(&transmits(&mut ep)), [486]);
        assert!(events(&mut ep).is_empty());
    }

    #[test]
    fn timer_g_doubles_to_t2() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.respond(now, tx, answer(&req, 486));
        assert_eq!(statuses(&transmits(&mut ep)), [486]);
        let sent = run_until(&mut ep, now, Duration::from_millis(15_500));
        assert_eq!(sent, ms(&[500, 1500, 3500, 7500, 11_500, 15_500]));
    }

    #[test]
    fn timer_h_ends_invite_without_ack() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.respond(now, tx, answer(&req, 486));
        run_until(&mut ep, now, Duration::from_secs(32));
        assert_eq!(ep.transaction_count(), 0);
        assert!(events(&mut ep).is_empty());
        assert_eq!(ep.poll_timeout(), None);
    }

    #[test]
    fn ack_for_non_2xx_is_absorbed_and_timer_i_ends_tx() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.respond(now, tx, answer(&req, 486));
        transmits(&mut ep);
        let ack = request_text("ACK", "z9hG4bKinv", 1, "");
        ep.handle_message(now, udp(), ack.as_bytes());
        assert!(events(&mut ep).is_empty());
        // Timer I (T4) then gone, without any further 486.
        assert_eq!(ep.poll_timeout(), Some(now + Duration::from_secs(5)));
        ep.handle_timeout(now + Duration::from_secs(5));
        assert!(transmits(&mut ep).is_empty());
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn reliable_non_2xx_is_not_retransmitted_and_ack_ends_tx_at_once() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, flow(Transport::Tcp));
        ep.respond(now, tx, answer(&req, 486));
        transmits(&mut ep);
        assert_eq!(ep.poll_timeout(), Some(now + Duration::from_secs(32)));
        let ack = request_text("ACK", "z9hG4bKinv", 1, "");
        ep.handle_message(now, flow(Transport::Tcp), ack.as_bytes());
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn two_xx_is_retransmitted_until_ack_with_new_branch() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.respond(now, tx, answer(&req, 200));
        assert_eq!(statuses(&transmits(&mut ep)), [200]);
        let sent = run_until(&mut ep, now, Duration::from_millis(3500));
        assert_eq!(sent, ms(&[500, 1500, 3500]));
        let ack = request_text("ACK", "z9hG4bKack", 1, "");
        ep.handle_message(now + Duration::from_secs(4), udp(), ack.as_bytes());
        assert!(matches!(events(&mut ep).as_slice(), [Event::Ack { .. }]));
        assert!(run_until(&mut ep, now, Duration::from_secs(60)).is_empty());
        assert!(events(&mut ep).is_empty(), "no AckTimeout after the ACK");
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn ack_retransmission_for_2xx_is_passed_up_once() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.respond(now, tx, answer(&req, 200));
        let ack = request_text("ACK", "z9hG4bKack", 1, "");
        ep.handle_message(now, udp(), ack.as_bytes());
        ep.handle_message(now, udp(), ack.as_bytes());
        assert_eq!(events(&mut ep).len(), 1);
    }

    #[test]
    fn ack_timeout_after_64_t1_without_ack() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.respond(now, tx, answer(&req, 200));
        transmits(&mut ep);
        let sent = run_until(&mut ep, now, Duration::from_secs(32));
        // 0.5, 1.5, 3.5, 7.5 then every T2 until 31.5 (32 s ends it instead).
        assert_eq!(sent.len(), 10);
        match events(&mut ep).as_slice() {
            [
                Event::AckTimeout {
                    tx: t,
                    call_id,
                    local_tag,
                    remote_tag,
                },
            ] => {
                assert_eq!(*t, tx);
                assert_eq!(call_id, "call-1");
                assert_eq!(local_tag, "local1");
                assert_eq!(remote_tag, "from1");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn invite_retransmission_after_2xx_gets_2xx_again() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.respond(now, tx, answer(&req, 200));
        transmits(&mut ep);
        let ack = request_text("ACK", "z9hG4bKack", 1, "");
        ep.handle_message(now, udp(), ack.as_bytes());
        events(&mut ep);
        ep.handle_message(now, udp(), invite().as_bytes());
        assert_eq!(statuses(&transmits(&mut ep)), [200]);
        assert!(events(&mut ep).is_empty());
    }

    #[test]
    fn reliable_2xx_is_not_retransmitted_but_ack_timeout_still_fires() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, flow(Transport::Tls));
        ep.respond(now, tx, answer(&req, 200));
        transmits(&mut ep);
        assert!(run_until(&mut ep, now, Duration::from_secs(32)).is_empty());
        assert!(matches!(
            events(&mut ep).as_slice(),
            [Event::AckTimeout { .. }]
        ));
    }

    #[test]
    fn unmatched_ack_is_passed_up() {
        let mut ep = endpoint();
        let ack = request_text("ACK", "z9hG4bKzzz", 9, "");
        ep.handle_message(Instant::now(), udp(), ack.as_bytes());
        assert!(matches!(events(&mut ep).as_slice(), [Event::Ack { .. }]));
        assert!(transmits(&mut ep).is_empty());
    }

    #[test]
    fn non_invite_final_is_resent_on_retransmission_until_timer_j() {
        let mut ep = endpoint();
        let now = Instant::now();
        let bye = request_text("BYE", "z9hG4bKbye", 2, "");
        ep.handle_message(now, udp(), bye.as_bytes());
        let (tx, request) = one_request(&mut ep);
        // No 100 for non-INVITE, and a retransmission before the answer is absorbed.
        assert!(transmits(&mut ep).is_empty());
        ep.handle_message(now, udp(), bye.as_bytes());
        assert!(transmits(&mut ep).is_empty());
        ep.respond(now, tx, answer(&request, 200));
        assert_eq!(statuses(&transmits(&mut ep)), [200]);
        ep.handle_message(now, udp(), bye.as_bytes());
        assert_eq!(statuses(&transmits(&mut ep)), [200]);
        assert!(events(&mut ep).is_empty());
        assert_eq!(ep.poll_timeout(), Some(now + Duration::from_secs(32)));
        ep.handle_timeout(now + Duration::from_secs(32));
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn non_invite_over_tcp_ends_at_final_response() {
        let mut ep = endpoint();
        let now = Instant::now();
        let bye = request_text("BYE", "z9hG4bKbye", 2, "");
        ep.handle_message(now, flow(Transport::Tcp), bye.as_bytes());
        let (tx, request) = one_request(&mut ep);
        ep.respond(now, tx, answer(&request, 200));
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn unanswered_non_invite_is_dropped_after_64_t1() {
        let mut ep = endpoint();
        let now = Instant::now();
        let opts = request_text("OPTIONS", "z9hG4bKo", 2, "");
        ep.handle_message(now, udp(), opts.as_bytes());
        ep.handle_timeout(now + Duration::from_secs(32));
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn cancel_before_final_emits_event_and_200() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, _) = start_invite(&mut ep, now, udp());
        let cancel = request_text("CANCEL", "z9hG4bKinv", 1, "");
        ep.handle_message(now, udp(), cancel.as_bytes());
        let sent = transmits(&mut ep);
        let ok = response(&sent[0]);
        assert_eq!(ok.status, 200);
        assert_eq!(ok.headers.get("CSeq"), Some("1 CANCEL"));
        assert!(ok.headers.get("To").unwrap().contains("tag="));
        match events(&mut ep).as_slice() {
            [Event::Cancel { invite_tx, request }] => {
                assert_eq!(*invite_tx, tx);
                assert_eq!(request.method, Method::Cancel);
            }
            other => panic!("{other:?}"),
        }
        // A retransmitted CANCEL gets the same 200 and no second event.
        ep.handle_message(now, udp(), cancel.as_bytes());
        assert_eq!(sent[0].data, transmits(&mut ep)[0].data);
        assert!(events(&mut ep).is_empty());
    }

    #[test]
    fn cancel_after_final_gets_200_without_event() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.respond(now, tx, answer(&req, 200));
        transmits(&mut ep);
        let cancel = request_text("CANCEL", "z9hG4bKinv", 1, "");
        ep.handle_message(now, udp(), cancel.as_bytes());
        let ok = response(&transmits(&mut ep)[0]);
        assert_eq!(ok.status, 200);
        assert!(ok.headers.get("To").unwrap().contains("tag=local1"));
        assert!(events(&mut ep).is_empty());
    }

    #[test]
    fn cancel_without_match_gets_481() {
        let mut ep = endpoint();
        let cancel = request_text("CANCEL", "z9hG4bKnone", 1, "");
        ep.handle_message(Instant::now(), udp(), cancel.as_bytes());
        let r = response(&transmits(&mut ep)[0]);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (481, "Call/Transaction Does Not Exist")
        );
        assert!(events(&mut ep).is_empty());
    }

    #[test]
    fn rport_response_goes_to_source_port() {
        let mut ep = endpoint();
        let now = Instant::now();
        let text = request_text("INVITE", "z9hG4bKr", 1, ";rport");
        ep.handle_message(now, udp(), text.as_bytes());
        let sent = transmits(&mut ep);
        assert_eq!(sent[0].flow.remote, SRC.parse::<SocketAddr>().unwrap());
        assert_eq!(sent[0].flow.local, LOCAL.parse::<SocketAddr>().unwrap());
        let via = response(&sent[0]).headers.get("Via").unwrap().to_string();
        assert!(via.contains(";rport=40000"), "{via}");
        assert!(via.contains(";received=192.0.2.5"), "{via}");
    }

    #[test]
    fn without_rport_response_goes_to_sent_by_port() {
        let mut ep = endpoint();
        ep.handle_message(Instant::now(), udp(), invite().as_bytes());
        let sent = transmits(&mut ep);
        assert_eq!(
            sent[0].flow.remote,
            "192.0.2.5:5060".parse::<SocketAddr>().unwrap()
        );
        // Sent-by host equals the source: no received.
        assert!(
            !response(&sent[0])
                .headers
                .get("Via")
                .unwrap()
                .contains("received")
        );
    }

    #[test]
    fn received_is_added_when_sent_by_differs_from_source() {
        let mut ep = endpoint();
        let text = invite().replace("192.0.2.5:5060;branch", "pbx.example:5080;branch");
        ep.handle_message(Instant::now(), udp(), text.as_bytes());
        let sent = transmits(&mut ep);
        assert_eq!(
            sent[0].flow.remote,
            "192.0.2.5:5080".parse::<SocketAddr>().unwrap()
        );
        let (_, request) = one_request(&mut ep);
        assert!(
            request
                .headers
                .get("Via")
                .unwrap()
                .ends_with(";received=192.0.2.5")
        );
    }

    #[test]
    fn only_the_top_via_is_stamped() {
        let mut ep = endpoint();
        let text = invite().replace(
            "Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKinv",
            "Via: SIP/2.0/UDP a.example;branch=z9hG4bKinv;rport, SIP/2.0/UDP b.example;rport",
        );
        ep.handle_message(Instant::now(), udp(), text.as_bytes());
        let via = response(&transmits(&mut ep)[0])
            .headers
            .get("Via")
            .unwrap()
            .to_string();
        assert_eq!(
            via,
            "SIP/2.0/UDP a.example;branch=z9hG4bKinv;rport=40000;received=192.0.2.5, \
             SIP/2.0/UDP b.example;rport"
        );
    }

    #[test]
    fn tcp_response_uses_the_request_connection_then_reconnects() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, flow(Transport::Tcp));
        ep.handle_connection_closed(now, ConnId(1));
        ep.respond(now, tx, answer(&req, 486));
        let sent = transmits(&mut ep);
        assert_eq!(sent[0].flow.conn, None);
        assert_eq!(
            sent[0].flow.remote,
            "192.0.2.5:5060".parse::<SocketAddr>().unwrap()
        );

        let mut ep = endpoint();
        ep.handle_message(now, flow(Transport::Tcp), invite().as_bytes());
        assert_eq!(transmits(&mut ep)[0].flow, flow(Transport::Tcp));
    }

    #[test]
    fn tls_reconnect_defaults_to_port_5061() {
        let mut ep = endpoint();
        let now = Instant::now();
        let text = invite().replace("192.0.2.5:5060;branch", "192.0.2.5;branch");
        ep.handle_message(now, flow(Transport::Tls), text.as_bytes());
        let (tx, request) = one_request(&mut ep);
        ep.handle_connection_closed(now, ConnId(1));
        ep.respond(now, tx, answer(&request, 486));
        let sent = transmits(&mut ep);
        assert_eq!(
            sent[1].flow.remote,
            "192.0.2.5:5061".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn malformed_request_gets_400_with_warning() {
        let mut ep = endpoint();
        let text = invite().replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
        ep.handle_message(Instant::now(), udp(), text.as_bytes());
        let r = response(&transmits(&mut ep)[0]);
        assert_eq!(r.status, 400);
        assert!(r.reason.contains("CSeq method"), "{}", r.reason);
        let warning = r.headers.get("Warning").unwrap();
        assert!(warning.starts_with("399 reel \"CSeq method"), "{warning}");
        assert!(r.headers.get("To").unwrap().contains(";tag="));
        assert!(r.headers.get("Server").is_some());
        assert!(matches!(
            events(&mut ep).as_slice(),
            [Event::Malformed { .. }]
        ));
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn bad_content_length_gets_400() {
        let mut ep = endpoint();
        let text = invite().replace("Content-Length: 0", "Content-Length: fifty");
        ep.handle_message(Instant::now(), udp(), text.as_bytes());
        let r = response(&transmits(&mut ep)[0]);
        assert_eq!(r.status, 400);
        assert!(r.reason.contains("Content-Length"));
    }

    #[test]
    fn a_broken_request_line_on_a_sip_request_gets_400_naming_it() {
        for (line, why) in [
            ("INV\0ITE sip:srs@10.0.0.1 SIP/2.0", "Invalid method"),
            (
                "INVITE sip:srs@10.0.0.1 extra SIP/2.0",
                "Malformed request line",
            ),
            ("INVITE sip:srs@10.0.0.1", "Malformed request line"),
            ("INVITE sip:srs@10.0.0.1 HTTP/1.1", "Not a SIP request line"),
        ] {
            let mut ep = endpoint();
            let text = invite().replacen("INVITE sip:srs@10.0.0.1 SIP/2.0", line, 1);
            assert!(text.starts_with(line), "the request line was replaced");
            ep.handle_message(Instant::now(), udp(), text.as_bytes());
            let sent = transmits(&mut ep);
            assert_eq!(sent.len(), 1, "{line:?}");
            let r = response(&sent[0]);
            assert_eq!(r.status, 400, "{line:?}");
            assert!(r.reason.contains(why), "{line:?}: {}", r.reason);
            assert_eq!(r.headers.get("CSeq"), Some("1 INVITE"));
        }
        // A broken ACK is never answered; garbage without Via/CSeq neither.
        let mut ep = endpoint();
        let ack = request_text("ACK", "z9hG4bK-a", 1, "").replacen("ACK sip:", "A\0CK sip:", 1);
        ep.handle_message(Instant::now(), udp(), ack.as_bytes());
        ep.handle_message(Instant::now(), udp(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(transmits(&mut ep).is_empty());
    }

    #[test]
    fn request_missing_call_id_gets_400_naming_it() {
        let mut ep = endpoint();
        let text = invite().replace("Call-ID: call-1\r\n", "");
        ep.handle_message(Instant::now(), udp(), text.as_bytes());
        let sent = transmits(&mut ep);
        assert_eq!(
            sent.len(),
            1,
            "answered: Via and CSeq are enough to match the response"
        );
        let r = response(&sent[0]);
        assert_eq!(r.status, 400);
        assert!(r.reason.contains("Call-ID"), "{}", r.reason);
        match events(&mut ep).as_slice() {
            [Event::Malformed { reason, .. }] => assert!(reason.contains("Call-ID")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_without_a_usable_via_or_cseq_is_answered_at_its_source() {
        let top = "Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKinv\r\n";
        assert!(invite().contains(top), "the fixture's top Via");
        for (text, why) in [
            (invite().replace(top, ""), "Missing Via"),
            (invite().replace(top, "Via: garbage\r\n"), "Invalid Via"),
            (invite().replace("CSeq: 1 INVITE\r\n", ""), "Missing CSeq"),
        ] {
            let mut ep = endpoint();
            ep.handle_message(Instant::now(), udp(), text.as_bytes());
            let sent = transmits(&mut ep);
            assert_eq!(sent.len(), 1, "{why}: answered, not dropped");
            let r = response(&sent[0]);
            assert_eq!(r.status, 400, "{why}");
            assert!(r.reason.contains(why), "{why}: {}", r.reason);
            if why != "Missing CSeq" {
                // Nothing in the request says where else to send it.
                assert_eq!(sent[0].flow, udp(), "{why}: back to the source");
            }
            assert_eq!(ep.transaction_count(), 0, "{why}");
        }
        // An ACK is never answered, usable Via or not.
        let mut ep = endpoint();
        let ack = request_text("ACK", "z9hG4bK-a", 1, "").replace("Via: ", "X-Via: ");
        ep.handle_message(Instant::now(), udp(), ack.as_bytes());
        assert!(transmits(&mut ep).is_empty());
    }

    #[test]
    fn other_sip_version_gets_505() {
        let mut ep = endpoint();
        let text = invite().replace("sip:srs@10.0.0.1 SIP/2.0", "sip:srs@10.0.0.1 SIP/3.0");
        ep.handle_message(Instant::now(), udp(), text.as_bytes());
        let r = response(&transmits(&mut ep)[0]);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (505, "Version Not Supported")
        );
    }

    #[test]
    fn garbage_emits_malformed_only() {
        let mut ep = endpoint();
        ep.handle_message(Instant::now(), udp(), b"\x00\x01hello\xff\r\n\r\n");
        assert!(transmits(&mut ep).is_empty());
        assert!(matches!(
            events(&mut ep).as_slice(),
            [Event::Malformed { .. }]
        ));
    }

    #[test]
    fn response_without_transaction_is_dropped() {
        let mut ep = endpoint();
        let text = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n\
                    CSeq: 1 BYE\r\nCall-ID: c\r\n\r\n";
        ep.handle_message(Instant::now(), udp(), text.as_bytes());
        assert!(events(&mut ep).is_empty());
        assert!(transmits(&mut ep).is_empty());
    }

    #[test]
    fn rfc2543_retransmission_matches_without_magic_cookie() {
        let mut ep = endpoint();
        let now = Instant::now();
        let text = invite().replace("branch=z9hG4bKinv", "branch=old1");
        ep.handle_message(now, udp(), text.as_bytes());
        ep.handle_message(now, udp(), text.as_bytes());
        assert_eq!(statuses(&transmits(&mut ep)), [100, 100]);
        assert_eq!(events(&mut ep).len(), 1);
        // Same Call-ID, higher CSeq: a new transaction.
        let next = text.replace("CSeq: 1 INVITE", "CSeq: 2 INVITE");
        ep.handle_message(now, udp(), next.as_bytes());
        assert_eq!(events(&mut ep).len(), 1);
        assert_eq!(ep.transaction_count(), 2);
    }

    #[test]
    fn same_branch_different_sent_by_is_a_different_transaction() {
        let mut ep = endpoint();
        let now = Instant::now();
        ep.handle_message(now, udp(), invite().as_bytes());
        let other = invite().replace("192.0.2.5:5060;branch", "192.0.2.6:5060;branch");
        ep.handle_message(now, udp(), other.as_bytes());
        assert_eq!(events(&mut ep).len(), 2);
    }

    fn bye() -> Request {
        Request {
            method: Method::Bye,
            uri: "sip:src@192.0.2.5".into(),
            headers: {
                let mut h = crate::sip::Headers::new();
                h.push("From", "<sip:srs@10.0.0.1>;tag=local1");
                h.push("To", "<sip:src@192.0.2.5>;tag=from1");
                h.push("Call-ID", "call-1");
                h.push("CSeq", "1 BYE");
                h
            },
            body: Vec::new(),
        }
    }

    fn peer_flow() -> Flow {
        Flow {
            remote: "192.0.2.5:5060".parse().unwrap(),
            ..udp()
        }
    }

    /// A response from the peer to what the endpoint sent in `t`.
    fn reply_to(t: &Transmit, status: u16) -> Vec<u8> {
        let Ok(Message::Request(req)) = parse_message(&t.data) else {
            panic!()
        };
        Response::for_request(&req, status, "").encode()
    }

    #[test]
    fn client_request_gets_via_branch_rport_and_max_forwards() {
        let mut ep = endpoint();
        ep.send_request(Instant::now(), bye(), peer_flow());
        let sent = transmits(&mut ep);
        let Ok(Message::Request(req)) = parse_message(&sent[0].data) else {
            panic!()
        };
        let via = Via::parse(req.headers.get("Via").unwrap()).unwrap();
        assert_eq!(via.transport, "UDP");
        assert_eq!((via.host.as_str(), via.port), ("10.0.0.1", Some(5060)));
        assert!(via.branch().unwrap().starts_with("z9hG4bK"));
        assert!(via.branch().unwrap().len() > 7 + 8);
        assert_eq!(via.param("rport"), Some(None));
        assert_eq!(req.headers.get("Max-Forwards"), Some("70"));
        assert_eq!(req.headers.iter().next().unwrap().name, "Via");
        assert_eq!(sent[0].flow, peer_flow());
    }

    #[test]
    fn client_via_brackets_ipv6_local_address() {
        let mut ep = endpoint();
        let f = Flow {
            local: "[2001:db8::1]:5060".parse().unwrap(),
            remote: "[2001:db8::2]:5060".parse().unwrap(),
            ..udp()
        };
        ep.send_request(Instant::now(), bye(), f);
        let sent = transmits(&mut ep);
        let text = String::from_utf8_lossy(&sent[0].data).to_string();
        assert!(
            text.contains("Via: SIP/2.0/UDP [2001:db8::1]:5060;branch="),
            "{text}"
        );
    }

    #[test]
    fn timer_e_doubles_and_timer_f_times_out() {
        let mut ep = endpoint();
        let now = Instant::now();
        let tx = ep.send_request(now, bye(), peer_flow());
        transmits(&mut ep);
        let sent = run_until(&mut ep, now, Duration::from_secs(32));
        assert_eq!(&sent[..5], ms(&[500, 1500, 3500, 7500, 11_500]).as_slice());
        assert_eq!(sent.len(), 10);
        assert!(matches!(events(&mut ep).as_slice(), [Event::ClientTimeout { tx: t }] if *t == tx));
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn timer_e_uses_t2_after_provisional() {
        let mut ep = endpoint();
        let now = Instant::now();
        ep.send_request(now, bye(), peer_flow());
        let first = transmits(&mut ep).remove(0);
        ep.handle_message(now, peer_flow(), &reply_to(&first, 100));
        let sent = run_until(&mut ep, now, Duration::from_millis(8500));
        assert_eq!(sent, ms(&[500, 4500, 8500]));
    }

    #[test]
    fn client_final_response_reported_once_then_timer_k() {
        let mut ep = endpoint();
        let now = Instant::now();
        let tx = ep.send_request(now, bye(), peer_flow());
        let first = transmits(&mut ep).remove(0);
        let ok = reply_to(&first, 200);
        ep.handle_message(now, peer_flow(), &ok);
        ep.handle_message(now, peer_flow(), &ok);
        match events(&mut ep).as_slice() {
            [Event::Response { tx: t, response }] => {
                assert_eq!(*t, tx);
                assert_eq!(response.status, 200);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ep.poll_timeout(), Some(now + Duration::from_secs(5)));
        assert!(run_until(&mut ep, now, Duration::from_secs(5)).is_empty());
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn response_with_other_cseq_method_does_not_match() {
        let mut ep = endpoint();
        let now = Instant::now();
        ep.send_request(now, bye(), peer_flow());
        let first = transmits(&mut ep).remove(0);
        let text = String::from_utf8(reply_to(&first, 200)).unwrap();
        let text = text.replace("1 BYE", "1 INFO");
        ep.handle_message(now, peer_flow(), text.as_bytes());
        assert!(events(&mut ep).is_empty());
    }

    #[test]
    fn client_tx_fails_when_connection_closes() {
        let mut ep = endpoint();
        let now = Instant::now();
        let tx = ep.send_request(now, bye(), flow(Transport::Tcp));
        assert_eq!(ep.poll_timeout(), Some(now + Duration::from_secs(32)));
        ep.handle_connection_closed(now, ConnId(1));
        assert!(matches!(events(&mut ep).as_slice(), [Event::ClientTimeout { tx: t }] if *t == tx));
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn poll_timeout_is_the_earliest_deadline() {
        let mut ep = endpoint();
        let now = Instant::now();
        assert_eq!(ep.poll_timeout(), None);
        let (tx, req) = start_invite(&mut ep, now, udp());
        // The INVITE tx waits for the user: no timer.
        assert_eq!(ep.poll_timeout(), None);
        ep.send_request(now + Duration::from_millis(100), bye(), peer_flow());
        assert_eq!(ep.poll_timeout(), Some(now + Duration::from_millis(600)));
        ep.respond(now + Duration::from_millis(50), tx, answer(&req, 486));
        assert_eq!(ep.poll_timeout(), Some(now + Duration::from_millis(550)));
    }

    /// The earliest deadline by visiting every transaction (what the heap replaces).
    fn scanned_deadline(ep: &Endpoint) -> Option<Instant> {
        let servers = ep.servers.values().filter_map(ServerTx::deadline);
        let clients = ep.clients.values().filter_map(ClientTx::deadline);
        servers.chain(clients).min()
    }

    #[test]
    fn deadline_heap_agrees_with_a_scan_as_timers_move_and_end() {
        let mut ep = endpoint();
        let t0 = Instant::now();
        let mut txs = Vec::new();
        for i in 0..40u64 {
            let now = t0 + Duration::from_millis(i * 37);
            let text = invite()
                .replace("z9hG4bKinv", &format!("z9hG4bKinv{i}"))
                .replace("Call-ID: call-1", &format!("Call-ID: call-{i}"));
            ep.handle_message(now, udp(), text.as_bytes());
            let (tx, req) = one_request(&mut ep);
            ep.respond(now, tx, answer(&req, if i % 5 == 0 { 486 } else { 200 }));
            if i % 3 == 0 {
                ep.send_request(now, bye(), peer_flow());
            }
            txs.push((i, now));
            assert_eq!(ep.poll_timeout(), scanned_deadline(&ep), "after INVITE {i}");
        }
        // Every other 2xx gets its ACK: its retransmissions stop, its deadline moves later.
        for (i, at) in &txs {
            if i % 2 == 0 && i % 5 != 0 {
                let ack = request_text("ACK", &format!("z9hG4bKack{i}"), 1, "")
                    .replace("Call-ID: call-1", &format!("Call-ID: call-{i}"));
                ep.handle_message(*at + Duration::from_millis(700), udp(), ack.as_bytes());
                assert_eq!(ep.poll_timeout(), scanned_deadline(&ep), "after ACK {i}");
            }
        }
        let mut steps = 0;
        while let Some(at) = ep.poll_timeout() {
            ep.handle_timeout(at);
            transmits(&mut ep);
            events(&mut ep);
            assert_eq!(ep.poll_timeout(), scanned_deadline(&ep));
            assert!(ep.poll_timeout().is_none_or(|next| next > at), "progress");
            steps += 1;
            assert!(steps < 10_000, "bounded");
        }
        assert_eq!(ep.transaction_count(), 0);
        assert!(ep.timers.is_empty(), "no entry outlives its transaction");
    }

    #[test]
    fn respond_to_unknown_or_finished_tx_is_ignored() {
        let mut ep = endpoint();
        let now = Instant::now();
        let (tx, req) = start_invite(&mut ep, now, udp());
        ep.respond(now, TxId(999), answer(&req, 200));
        assert!(transmits(&mut ep).is_empty());
        ep.respond(now, tx, answer(&req, 486));
        ep.respond(now, tx, answer(&req, 200));
        assert_eq!(statuses(&transmits(&mut ep)), [486]);
    }

    #[test]
    fn seeded_endpoints_are_deterministic() {
        let run = || {
            let mut ep = endpoint();
            ep.send_request(Instant::now(), bye(), peer_flow());
            transmits(&mut ep).remove(0).data
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn mangled_messages_never_panic_the_endpoint() {
        let mut ep = endpoint();
        let mut now = Instant::now();
        let mut state: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let texts = [
            invite(),
            request_text("ACK", "z9hG4bKinv", 1, ";rport"),
            request_text("CANCEL", "z9hG4bKinv", 1, ""),
            request_text("BYE", "nocookie", 2, ";rport=;received=x"),
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKx\r\nCSeq: 1 BYE\r\n\r\n"
                .to_string(),
        ];
        for round in 0..3000 {
            let mut data = texts[round % texts.len()].clone().into_bytes();
            for _ in 0..(next() % 4) {
                let i = (next() as usize) % data.len();
                data[i] = next() as u8;
            }
            let f = if round % 2 == 0 {
                udp()
            } else {
                flow(Transport::Tcp)
            };
            ep.handle_message(now, f, &data);
            for event in events(&mut ep) {
                if let Event::Request { tx, request, .. } = event {
                    ep.respond(now, tx, Response::for_request(&request, 200, ""));
                }
            }
            transmits(&mut ep);
            now += Duration::from_millis(50);
            ep.handle_timeout(now);
        }
        ep.handle_timeout(now + Duration::from_secs(40));
        assert_eq!(ep.transaction_count(), 0);
    }

    #[test]
    fn many_calls_leave_no_transactions_behind() {
        let mut ep = endpoint();
        let now = Instant::now();
        for i in 0..50u32 {
            let text = invite().replace("z9hG4bKinv", &format!("z9hG4bK{i}"));
            let text = text.replace("call-1", &format!("call-{i}"));
            ep.handle_message(now, udp(), text.as_bytes());
        }
        for event in events(&mut ep) {
            if let Event::Request { tx, request, .. } = event {
                ep.respond(now, tx, answer(&request, 603));
            }
        }
        assert_eq!(ep.transaction_count(), 50);
        ep.handle_timeout(now + Duration::from_secs(32));
        assert_eq!(ep.transaction_count(), 0);
        assert!(ep.server_index.is_empty() && ep.ack_index.is_empty());
        assert!(ep.ack_by_call.is_empty());
    }
}
