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

use std::collections::{BTreeMap, HashMap, VecDeque};
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
    clients: BTreeMap<TxId, ClientTx>,
    client_index: HashMap<(String, Method), TxId>,
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
    let default_port = if flow.transport == Transport::Tls {
        5061
    } else {
        5060
    };
    let sent_by_port = via.port.unwrap_or(default_port);
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
            ack_index: HashMap::new(),
            clients: BTreeMap::new(),
            client_index: HashMap::new(),
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
                let problem = if !version_ok {
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
                let problem = if !version_ok {
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
                    let reason = problem
                        .map(|(_, p)| p)
                        .unwrap_or_else(|| "Missing Via header".to_string());
                    self.reject(flow, &request, status_of(&raw.version, version_ok), &reason);
                    return;
                };
                self.handle_request(now, flow, request, &top, via);
            }
        }
    }

    /// Answers a request that cannot be served (400/505) when it carries what a response needs,
    /// and reports it either way.
    fn reject(&mut self, flow: Flow, request: &Request, status: u16, problem: &str) {
        let answerable = request.method != Method::Ack
            && ["Via", "From", "To", "Call-ID", "CSeq"]
                .iter()
                .all(|h| request.headers.get(h).is_some());
        let via = request
            .headers
            .get_list("Via")
            .into_iter()
            .next()
            .and_then(|v| Via::parse(&v).ok());
        if let (true, Some(via)) = (answerable, via) {
            let reason = if status == 400 {
                sanitize(problem)
            } else {
                String::new()
            };
            let mut response = Response::for_request(request, status, &reason);
            response
                .headers
                .push("Warning", format!("399 reel \"{}\"", sanitize(problem)));
            self.send_stateless(flow, &via, response);
        }
        self.events.push_back(Event::Malformed {
            flow,
            reason: problem.to_string(),
        });
    }

    /// Sends a response the endpoint builds itself, outside any transaction: adds `Server` and
    /// a To tag when missing.
    fn send_stateless(&mut self, flow: Flow, via: &Via, mut response: Response) {
        self.finish_own_response(&mut response, None);
        let (dest, _) = response_flows(flow, via);
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
        self.server_index.insert(key, id);
        self.events.push_back(Event::Request {
            tx: id,
            request,
            flow,
        });
    }

    fn retransmit_last(&mut self, id: TxId) {
        if let Some(tx) = self.servers.get(&id) {
            if let Some(data) = &tx.last_response {
                self.transmits.push_back(Transmit {
                    flow: tx.dest,
                    data: data.clone(),
                });
            }
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
        let Some(id) = by_key.or_else(by_dialog) else {
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
    }

    /// Starts a non-INVITE client transaction. The endpoint puts its own top Via (with a fresh
    /// branch and `rport`) on the request.
    pub fn send_request(&mut self, now: Instant, request: Request, flow: Flow) -> TxId {
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
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let t2 = self.config.t2;
        let due: Vec<TxId> = self
            .servers
            .iter()
            .filter(|(_, tx)| tx.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
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

        let due: Vec<TxId> = self
            .clients
            .iter()
            .filter(|(_, tx)| tx.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
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
    }

    fn remove_server(&mut self, id: TxId) {
        if let Some(tx) = self.servers.remove(&id) {
            self.server_index.remove(&tx.key);
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

    /// The earliest time `handle_timeout` must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let servers = self.servers.values().filter_map(ServerTx::deadline);
        let clients = self.clients.values().filter_map(ClientTx::deadline);
        servers.chain(clients).min()
    }

    /// Live transactions, for metrics and tests.
    pub fn transaction_count(&self) -> usize {
        self.servers.len() + self.clients.len()
    }
}

/// The status for a request refused before any transaction exists.
fn status_of(version: &str, version_ok: bool) -> u16 {
    let _ = version;
    if version_ok { 400 } else { 505 }
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
