//! The recording-session state machine (sans-IO).
//!
//! Inputs: [`Recorder::handle_message`] (bytes from a transport), [`Recorder::handle_storage`]
//! (the writer thread saved a session's state), [`Recorder::handle_timeout`],
//! [`Recorder::start_drain`]. Outputs: [`Recorder::poll_transmit`], [`Recorder::poll_storage`],
//! [`Recorder::poll_timeout`].
//!
//! A new INVITE is answered 200 only after its spool state is saved ([`StorageOp::Begin`] then
//! [`Recorder::handle_storage`]): a 200 promises a recording. Until then the INVITE is pending
//! and a CANCEL ends it with 487.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::record::{ParticipantRecord, RecordingMeta, RecordingState, StreamRecord};
use crate::sip::{
    ConnId, Dialog, Endpoint, EndpointConfig, Event, Flow, Method, Request, Response, Transmit,
    TxId,
};
use crate::siprec::metadata::Limits;
use crate::siprec::sdp::{self, Direction, SessionDescription, StreamPlan};
use crate::siprec::{self, BodyError, BodyPart, Metadata};

/// What the recorder needs from its host: RTP ports and the address to advertise.
pub trait MediaHost {
    /// Binds an even RTP port and RTP+1; `None` when the range is exhausted.
    fn allocate_port(&mut self) -> Option<u16>;
    /// Closes the pair's sockets and returns the port to the pool.
    fn release_port(&mut self, port: u16);
    /// The address to put in SDP `c=` and Contact for a request that arrived on `flow`.
    fn media_ip(&mut self, flow: &Flow) -> IpAddr;
    /// Start recording what arrives on an allocated port (after the 200 OK that announced it).
    /// [`MediaHost::release_port`] later stops it; the port is reused only once its sockets
    /// are closed.
    fn start_stream(&mut self, port: u16, spec: MediaSpec);
    /// A new offer changed a recorded stream's payload types, SRTP key or address: the media
    /// path follows it. `relearn`: forget the latched source (the SRC moved).
    fn update_stream(&mut self, port: u16, spec: MediaSpec, relearn: bool);
}

/// What the media path needs to record one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSpec {
    /// The session, as the writer's recording slot.
    pub session: SessionKey,
    /// m-line index in the offer.
    pub mline: u16,
    pub payload_type: u8,
    pub event_pt: Option<u8>,
    /// The SRC's own SDES key (what it encrypts with).
    pub srtp: Option<crate::media::srtp::SrtpKey>,
    /// Where the SRC's SDP says the stream is (`c=` and `m=` port): an SRC with symmetric
    /// RTP sends from there, and a packet from there wins the latch.
    pub source: Option<std::net::SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct RecorderConfig {
    pub node_name: String,
    pub max_sessions: usize,
    pub max_streams: usize,
    pub retry_after_s: u32,
    pub min_se_s: u32,
    pub drain_timeout: Duration,
    pub allow_from: Vec<ipnet::IpNet>,
    pub metadata_max_bytes: usize,
    pub metadata_max_depth: usize,
    /// `record.codec_preference = "wav"`: answer G.711/G.722 when offered, even after G.729 or
    /// opus (see `MediaDescription::choose_codecs_preferring`); false: the offer's order.
    pub prefer_wav_codecs: bool,
    pub endpoint: EndpointConfig,
    /// For tests: a request with a [`FAULT_HEADER`] header makes its handling panic, so that
    /// they can check a panic costs that request alone. `reel serve` turns it on only in a
    /// debug build with `REEL_FAULT_INJECTION` set.
    pub fault_injection: bool,
}

/// See [`RecorderConfig::fault_injection`].
pub const FAULT_HEADER: &str = "X-Reel-Fault";

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            node_name: "reel".into(),
            max_sessions: 10_000,
            max_streams: 16,
            retry_after_s: 30,
            min_se_s: 90,
            drain_timeout: Duration::from_secs(30),
            allow_from: Vec::new(),
            metadata_max_bytes: 256 * 1024,
            metadata_max_depth: 32,
            prefer_wav_codecs: true,
            endpoint: EndpointConfig::default(),
            fault_injection: false,
        }
    }
}

/// A session, numbered by the recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u64);

/// Work for the writer thread, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum StorageOp {
    /// Create the spool entry; answer with [`Recorder::handle_storage`].
    Begin {
        session: SessionKey,
        meta: RecordingMeta,
    },
    /// Save the current state (for crash recovery).
    Save { meta: RecordingMeta },
    /// Store one received metadata document.
    Metadata { id: String, xml: Vec<u8> },
    /// The session ended: write the recording folder once the end records of `media_streams`
    /// (m-line indexes handed to the media path) have arrived from the media threads.
    Finalize {
        meta: RecordingMeta,
        media_streams: Vec<u16>,
    },
    /// A session that never started (cancelled, refused after Begin): drop its spool entry.
    Abandon { id: String },
}

/// How long a drained recorder keeps answering retransmissions before it exits.
pub const DRAIN_LINGER: Duration = Duration::from_secs(2);

/// The longest session interval Reel runs (RFC 4028): larger asks are answered with this.
pub const MAX_SESSION_EXPIRES_S: u64 = 86_400;
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";
const ACCEPT: &str = "application/sdp, application/rs-metadata+xml, multipart/mixed";
const SUPPORTED: &str = "siprec, timer";
/// The Request-URI schemes a recorder can be addressed by.
const URI_SCHEMES: [&str; 3] = ["sip", "sips", "tel"];

/// The SRC's tag of a session's dialog (before the dialog exists: its INVITE's From tag).
fn remote_tag(s: &Session) -> Option<String> {
    match &s.dialog {
        Some(d) => Some(d.remote_tag.clone()),
        None => header_tag(&s.invite, "From"),
    }
}

/// The tag parameter of a From or To header.
fn header_tag(req: &Request, name: &str) -> Option<String> {
    crate::sip::NameAddr::parse(req.headers.get(name)?)
        .ok()?
        .tag()
        .map(str::to_string)
}

/// Option tags Reel implements (RFC 3261 §8.2.2.3: any other in Require gets 420).
const UNDERSTOOD: &[&str] = &["siprec", "timer"];

#[derive(Clone, Debug)]
struct StreamState {
    /// Position of the m-line in the offer.
    index: usize,
    label: String,
    port: Option<u16>,
    codec: Option<sdp::Codec>,
    telephone_event: Option<sdp::Codec>,
    crypto: Option<String>,
    /// The key the SRC encrypts this stream with (from its offer).
    srtp: Option<crate::media::srtp::SrtpKey>,
    direction: Direction,
    /// The SRC's address for the stream in its SDP (see [`MediaSpec::source`]).
    source: Option<std::net::SocketAddr>,
    /// Handed to the media path (after the 200 OK that announced the port).
    started: bool,
}

impl StreamState {
    fn media_spec(&self, session: SessionKey, codec: &sdp::Codec) -> MediaSpec {
        MediaSpec {
            session,
            mline: u16::try_from(self.index).unwrap_or(u16::MAX),
            payload_type: codec.payload_type,
            event_pt: self.telephone_event.as_ref().map(|c| c.payload_type),
            srtp: self.srtp.clone(),
            source: self.source,
        }
    }

    /// An offered m-line before anything is accepted for it; without `a=label` its position
    /// stands in for the label.
    fn offered(index: usize, m: &sdp::MediaDescription) -> StreamState {
        StreamState {
            index,
            label: m.label.clone().unwrap_or_else(|| index.to_string()),
            port: None,
            codec: None,
            telephone_event: None,
            crypto: None,
            srtp: None,
            direction: m.direction,
            source: m
                .connection
                .filter(|ip| !ip.is_unspecified() && m.port != 0)
                .map(|ip| std::net::SocketAddr::new(ip, m.port)),
            started: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// INVITE received, waiting for the spool entry before answering.
    Starting,
    /// 200 sent, waiting for ACK.
    Answered,
    Confirmed,
}

struct Session {
    id: String,
    call_id: String,
    local_tag: String,
    phase: Phase,
    invite_tx: Option<TxId>,
    invite: Request,
    flow: Flow,
    dialog: Option<Dialog>,
    offer: SessionDescription,
    streams: Vec<StreamState>,
    metadata: Metadata,
    metadata_versions: usize,
    warnings: Vec<String>,
    media_ip: IpAddr,
    sdp_session_id: u64,
    sdp_version: u64,
    started_wall: SystemTime,
    /// RFC 4028: interval and when we give up waiting for a refresh.
    session_timer: Option<(Duration, Instant)>,
}

pub struct Recorder {
    config: RecorderConfig,
    endpoint: Endpoint,
    host: Box<dyn MediaHost>,
    sessions: HashMap<SessionKey, Session>,
    /// Session-timer deadlines, earliest first, so that neither the next timeout nor the
    /// expired sessions need a pass over every session. Stale entries (refreshed or ended
    /// sessions) are dropped when they reach the top; every live timer has an entry.
    session_timers: BinaryHeap<Reverse<(Instant, SessionKey)>>,
    /// (Call-ID, our tag) -> session.
    /// Live sessions by (Call-ID, Reel's To tag); ordered so that a Call-ID's sessions can be
    /// found without a To tag (`tagless_bye_dialog`).
    by_dialog: BTreeMap<(String, String), SessionKey>,
    by_invite_tx: HashMap<TxId, SessionKey>,
    next_key: u64,
    storage: VecDeque<StorageOp>,
    /// Set by SIGTERM; never cleared.
    draining: bool,
    /// When the drain gives up waiting and ends the remaining sessions itself (cleared once done).
    drain_deadline: Option<Instant>,
    /// Draining with no session left since then: transactions get a short linger to deliver
    /// their last answers, not the full 64*T1 they keep to absorb retransmissions.
    quiet_since: Option<Instant>,
    linger_over: bool,
    disk_ok: bool,
    rng: rand::rngs::StdRng,
    pub stats: RecorderStats,
}

/// Counters the driver exports.
#[derive(Clone, Debug, Default)]
pub struct RecorderStats {
    pub sessions_started: u64,
    pub sessions_ended: u64,
    pub rejected: HashMap<u16, u64>,
    pub malformed: u64,
    /// Requests whose handling panicked (a bug): each answered 500, the rest went on.
    pub panics: u64,
}

impl Recorder {
    pub fn new(config: RecorderConfig, host: Box<dyn MediaHost>, seed: u64) -> Recorder {
        use rand::SeedableRng;
        Recorder {
            endpoint: Endpoint::new(config.endpoint.clone()),
            config,
            host,
            sessions: HashMap::new(),
            session_timers: BinaryHeap::new(),
            by_dialog: BTreeMap::new(),
            by_invite_tx: HashMap::new(),
            next_key: 1,
            storage: VecDeque::new(),
            draining: false,
            drain_deadline: None,
            quiet_since: None,
            linger_over: false,
            disk_ok: true,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            stats: RecorderStats::default(),
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    /// One whole SIP message received on `flow`.
    pub fn handle_message(&mut self, now: Instant, wall: SystemTime, flow: Flow, data: &[u8]) {
        self.endpoint.handle_message(now, flow, data);
        self.process_events(now, wall);
        self.prune_session_timers();
    }

    /// The header section of a message over the size limit (see
    /// [`crate::sip::transaction::Endpoint::handle_too_large`]).
    pub fn handle_too_large(
        &mut self,
        now: Instant,
        wall: SystemTime,
        flow: Flow,
        head: &[u8],
        problem: &str,
    ) {
        self.endpoint.handle_too_large(now, flow, head, problem);
        self.process_events(now, wall);
    }

    /// A stream connection closed.
    pub fn handle_connection_closed(&mut self, now: Instant, wall: SystemTime, conn: ConnId) {
        self.endpoint.handle_connection_closed(now, conn);
        for session in self.sessions.values_mut() {
            if session.flow.conn == Some(conn) {
                session.flow.conn = None;
            }
            if let Some(d) = session.dialog.as_mut()
                && d.flow.conn == Some(conn)
            {
                // A request of ours (a BYE at drain or at a session-timer expiry) now needs a
                // new connection: to the SRC's Contact (RFC 3261 §12.2.1.1), not to the source
                // port of the one that closed, which nothing listens on.
                d.flow.conn = None;
                if let Some(to) = target_address(&d.remote_target, d.flow.transport) {
                    d.flow.remote = to;
                }
            }
        }
        self.process_events(now, wall);
        self.prune_session_timers();
    }

    /// The writer thread created (`Ok`) or failed to create (`Err`, with why) the spool entry
    /// of `session`.
    pub fn handle_storage(
        &mut self,
        now: Instant,
        wall: SystemTime,
        session: SessionKey,
        result: Result<(), String>,
    ) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        if s.phase != Phase::Starting {
            return;
        }
        match result {
            Ok(()) => self.answer_initial(now, wall, session),
            Err(why) => {
                self.disk_ok = false;
                let warning = format!("cannot store the recording: {why}");
                self.refuse_starting(now, session, 503, "Recording Storage Unavailable", &warning);
            }
        }
        self.prune_session_timers();
    }

    /// Free disk space went below (false) or back above (true) the threshold.
    pub fn set_disk_ok(&mut self, ok: bool) {
        self.disk_ok = ok;
    }

    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        if self.quiet_since.is_some_and(|t| now >= t + DRAIN_LINGER) {
            self.linger_over = true;
        }
        self.endpoint.handle_timeout(now);
        self.process_events(now, wall);
        let mut expired = Vec::new();
        while let Some(&Reverse((at, key))) = self.session_timers.peek() {
            if at > now {
                break;
            }
            self.session_timers.pop();
            expired.push(key);
        }
        expired.sort_unstable();
        expired.dedup();
        expired.retain(|k| {
            self.sessions
                .get(k)
                .is_some_and(|s| matches!(s.session_timer, Some((_, at)) if at <= now))
        });
        for key in expired {
            self.end_session(now, wall, key, "session-timer", true);
        }
        if let Some(deadline) = self.drain_deadline
            && now >= deadline
        {
            self.drain_deadline = None;
            let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
            for key in keys {
                self.end_session(now, wall, key, "shutdown", true);
            }
        }
        self.prune_session_timers();
    }

    /// Records a session's current session-timer deadline (after it was set or refreshed).
    fn arm_session_timer(&mut self, key: SessionKey) {
        if let Some((_, at)) = self.sessions.get(&key).and_then(|s| s.session_timer) {
            self.session_timers.push(Reverse((at, key)));
        }
    }

    /// Drops stale entries from the top, so the top is the earliest live session timer.
    fn prune_session_timers(&mut self) {
        while let Some(&Reverse((at, key))) = self.session_timers.peek() {
            let live = self.sessions.get(&key).and_then(|s| s.session_timer);
            if live.is_some_and(|(_, t)| t == at) {
                return;
            }
            self.session_timers.pop();
        }
    }

    /// SIGTERM: refuse new sessions (503), let active ones finish; after the drain timeout Reel
    /// ends the rest itself with BYE.
    pub fn start_drain(&mut self, now: Instant) {
        if !self.draining {
            self.draining = true;
            self.drain_deadline = Some(now + self.config.drain_timeout);
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Draining and nothing left to do: no session, no storage work, and either no live
    /// transaction or [`DRAIN_LINGER`] passed since the last session ended.
    pub fn is_drained(&mut self, now: Instant) -> bool {
        if !self.draining || !self.sessions.is_empty() || !self.storage.is_empty() {
            self.quiet_since = None;
            self.linger_over = false;
            return false;
        }
        let since = *self.quiet_since.get_or_insert(now);
        if now >= since + DRAIN_LINGER {
            self.linger_over = true;
        }
        self.endpoint.transaction_count() == 0 || self.linger_over
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Live SIP transactions (for metrics).
    pub fn transaction_count(&self) -> usize {
        self.endpoint.transaction_count()
    }

    // ---- outputs ------------------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.endpoint.poll_transmit()
    }

    pub fn poll_storage(&mut self) -> Option<StorageOp> {
        self.storage.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self
            .session_timers
            .peek()
            .map(|Reverse((at, _))| *at)
            .into_iter();
        let linger = self
            .quiet_since
            .filter(|_| !self.linger_over)
            .map(|t| t + DRAIN_LINGER);
        let all = sessions
            .chain(self.endpoint.poll_timeout())
            .chain(self.drain_deadline)
            .chain(linger);
        all.min()
    }

    /// A summary of the active sessions, for the HTTP API.
    pub fn active_sessions(&self) -> Vec<serde_json::Value> {
        self.sessions
            .values()
            .map(|s| {
                serde_json::json!({
                    "id": s.id,
                    "call_id": s.call_id,
                    "state": format!("{:?}", s.phase).to_lowercase(),
                    "started_at": crate::record::model::rfc3339_millis(s.started_wall),
                    "streams": s.streams.iter().map(|st| serde_json::json!({
                        "label": st.label, "port": st.port,
                        "codec": st.codec.as_ref().map(|c| c.name.clone()),
                        "direction": format!("{:?}", st.direction).to_lowercase(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect()
    }

    // ---- events -------------------------------------------------------------------------

    fn process_events(&mut self, now: Instant, wall: SystemTime) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::Request { tx, request, flow } => {
                    // A bug met by one request must cost that request alone, not every call
                    // the process records: the panic is caught, logged and answered 500.
                    let copy = request.clone();
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.on_request(now, wall, tx, request, flow)
                    }));
                    if let Err(payload) = handled {
                        self.on_request_panic(now, tx, &copy, payload.as_ref());
                    }
                }
                Event::Ack { request, .. } => self.on_ack(&request),
                Event::Cancel { invite_tx, .. } => self.on_cancel(now, wall, invite_tx),
                Event::AckTimeout {
                    call_id, local_tag, ..
                } => {
                    if let Some(key) = self.by_dialog.get(&(call_id, local_tag)).copied() {
                        self.end_session(now, wall, key, "ack-timeout", true);
                    }
                }
                Event::Response { .. } | Event::ClientTimeout { .. } => {
                    // Only BYEs are sent by Reel, and the session is finalized when they go
                    // out: their outcome changes nothing.
                }
                Event::Malformed { .. } => self.stats.malformed += 1,
            }
        }
    }

    #[cold]
    fn on_request_panic(
        &mut self,
        now: Instant,
        tx: TxId,
        req: &Request,
        payload: &(dyn std::any::Any + Send),
    ) {
        self.stats.panics += 1;
        tracing::error!(
            method = %req.method,
            call_id = req.headers.get("Call-ID").unwrap_or("-"),
            panic = crate::panic_text(payload),
            "BUG: handling this request panicked; it is answered 500 and every other call goes on"
        );
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.reply(
                now,
                tx,
                req,
                500,
                "Server Internal Error",
                Some("internal error; the recorder's log has it"),
            )
        }));
    }

    fn on_request(
        &mut self,
        now: Instant,
        wall: SystemTime,
        tx: TxId,
        mut req: Request,
        flow: Flow,
    ) {
        if self.config.fault_injection && req.headers.get(FAULT_HEADER).is_some() {
            panic!("fault injection: {FAULT_HEADER}");
        }
        if !self.allowed(&flow) {
            return self.reply(now, tx, &req, 403, "Source Not Allowed", None);
        }
        // RFC 3261 §8.2.2.1: a Request-URI scheme Reel cannot serve gets 416 (an ACK none).
        let scheme = req.uri.split(':').next().unwrap_or_default();
        if req.method != Method::Ack && !URI_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme))
        {
            let why = format!("Request-URI scheme '{scheme}' is not sip, sips or tel");
            return self.reply(now, tx, &req, 416, "Unsupported URI Scheme", Some(&why));
        }
        let mut to_tag = header_tag(&req, "To");
        if to_tag.is_none()
            && req.method == Method::Bye
            && let Some(tag) = self.tagless_bye_dialog(&mut req)
        {
            to_tag = Some(tag);
        }
        if let Some(tag) = to_tag {
            return self.on_in_dialog(now, wall, tx, req, flow, tag);
        }
        match req.method {
            Method::Invite => self.on_initial_invite(now, wall, tx, req, flow),
            Method::Options => self.on_options(now, tx, &req),
            Method::Bye | Method::Update | Method::Info | Method::Prack => {
                self.reply(now, tx, &req, 481, "Call/Transaction Does Not Exist", None)
            }
            _ => self.reply_405(now, tx, &req),
        }
    }

    fn allowed(&self, flow: &Flow) -> bool {
        let ip = canonical_ip(flow.remote.ip());
        self.config.allow_from.is_empty() || self.config.allow_from.iter().any(|n| n.contains(&ip))
    }

    fn on_options(&mut self, now: Instant, tx: TxId, req: &Request) {
        if self.draining {
            return self.reply_503(now, tx, req, "Draining");
        }
        if let Some(status) = self.check_require(now, tx, req) {
            return status;
        }
        self.answer_options(now, tx, req);
    }

    /// 200 to an OPTIONS, with what Reel supports.
    fn answer_options(&mut self, now: Instant, tx: TxId, req: &Request) {
        let mut resp = Response::for_request(req, 200, "OK");
        self.decorate(&mut resp);
        ensure_to_tag(&mut resp, &mut self.rng);
        self.endpoint.respond(now, tx, resp);
    }

    fn on_initial_invite(
        &mut self,
        now: Instant,
        wall: SystemTime,
        tx: TxId,
        req: Request,
        flow: Flow,
    ) {
        if self.draining {
            return self.reply_503(now, tx, &req, "Draining");
        }
        if self.sessions.len() >= self.config.max_sessions {
            return self.reply_503(now, tx, &req, "Maximum Sessions Reached");
        }
        if !self.disk_ok {
            return self.reply_503(now, tx, &req, "Insufficient Disk Space");
        }
        if let Some(status) = self.check_require(now, tx, &req) {
            return status;
        }
        let Some(call_id) = req.call_id().map(str::to_string) else {
            return self.reply(now, tx, &req, 400, "Missing Call-ID", None);
        };
        if self.endpoint.is_merged(tx) {
            return self.reply(now, tx, &req, 482, "Loop Detected (merged request)", None);
        }
        let timer = match self.session_timer_request(&req) {
            Ok(t) => t,
            Err(()) => return self.reply_422(now, tx, &req),
        };
        let offer = match self.read_offer(&req) {
            Ok(o) => o,
            Err(e) => return self.reply_body_error(now, tx, &req, &e),
        };
        let Offer {
            sdp,
            metadata_docs,
            warnings: mut offer_warnings,
            siprec,
        } = offer;
        if !siprec {
            offer_warnings.push(
                "not a SIPREC request (no siprec option tag, +sip.src or metadata); \
                 recorded as a plain SDP session"
                    .into(),
            );
        }

        let media_ip = self.host.media_ip(&flow);
        let mut streams = Vec::new();
        let mut why_rejected = Vec::new();
        for (index, m) in sdp.media.iter().enumerate() {
            let mut st = StreamState::offered(index, m);
            match self.accept_stream(m) {
                Ok(a) => match self.host.allocate_port() {
                    Some(port) => {
                        st.port = Some(port);
                        st.codec = Some(a.codec);
                        st.telephone_event = a.te;
                        st.crypto = a.crypto;
                        st.srtp = a.srtp;
                    }
                    None => {
                        self.release_streams(&streams);
                        return self.reply_503(now, tx, &req, "No RTP Ports Available");
                    }
                },
                Err(why) => why_rejected.push(format!("stream {}: {why}", st.label)),
            }
            streams.push(st);
        }
        if streams.iter().all(|s| s.port.is_none()) {
            let why = if why_rejected.is_empty() {
                "no media stream offered".to_string()
            } else {
                why_rejected.join("; ")
            };
            return self.reply(now, tx, &req, 488, "Not Acceptable Here", Some(&why));
        }
        for m in &sdp.media {
            if m.label.is_none() {
                offer_warnings.push("an SDP stream has no a=label; its position is used".into());
                break;
            }
        }

        let key = SessionKey(self.next_key);
        self.next_key += 1;
        let id = new_recording_id(&mut self.rng);
        let local_tag = random_token(&mut self.rng, 16);
        let mut metadata = Metadata::default();
        let mut versions = Vec::new();
        for (doc, xml) in metadata_docs {
            metadata.apply(doc);
            versions.push(xml);
        }
        use rand::Rng;
        let session = Session {
            id: id.clone(),
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            phase: Phase::Starting,
            invite_tx: Some(tx),
            invite: req,
            flow,
            dialog: None,
            offer: sdp,
            streams,
            metadata,
            metadata_versions: versions.len(),
            warnings: offer_warnings,
            media_ip,
            sdp_session_id: self.rng.random_range(1..u32::MAX as u64),
            sdp_version: 1,
            started_wall: wall,
            session_timer: timer.map(|d| (d, now + d)),
        };
        self.sessions.insert(key, session);
        self.arm_session_timer(key);
        self.by_invite_tx.insert(tx, key);
        self.by_dialog.insert((call_id, local_tag), key);
        // The metadata goes to the writer before Begin: the 200 goes out once Begin is done,
        // and a crash just after it then finds the metadata written (it was once still a
        // temporary file the crash scan threw away, the recording left without labels).
        for xml in versions {
            self.storage.push_back(StorageOp::Metadata {
                id: id.clone(),
                xml,
            });
        }
        let meta = self.snapshot(key, wall, RecordingState::NoMedia, "");
        if let Some(meta) = meta {
            self.storage
                .push_back(StorageOp::Begin { session: key, meta });
        }
    }

    /// Sends the 200 for a session whose spool entry exists.
    fn answer_initial(&mut self, now: Instant, wall: SystemTime, key: SessionKey) {
        let answer = match self.sessions.get(&key) {
            Some(s) => self.build_answer_sdp(s),
            None => return,
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(tx) = s.invite_tx else { return };
        let mut resp = Response::for_request(&s.invite, 200, "OK");
        let dialog = match Dialog::new_uas(&s.invite, &s.local_tag, s.flow) {
            Ok(d) => d,
            Err(e) => {
                let (status, reason) = (e.status, e.reason.clone());
                self.refuse_starting(now, key, status, &reason, &reason);
                return;
            }
        };
        dialog.tag_response(&mut resp);
        resp.headers
            .push("Contact", contact_for(s.media_ip, &s.flow));
        resp.headers.push("Content-Type", "application/sdp");
        if let Some((interval, _)) = s.session_timer {
            resp.headers.push(
                "Session-Expires",
                format!("{};refresher=uac", interval.as_secs()),
            );
            resp.headers.push("Require", "timer");
        }
        resp.body = answer.into_bytes();
        s.dialog = Some(dialog);
        s.phase = Phase::Answered;
        s.started_wall = wall;
        s.invite_tx = None;
        self.by_invite_tx.remove(&tx);
        self.stats.sessions_started += 1;
        self.decorate(&mut resp);
        self.endpoint.respond(now, tx, resp);
        self.start_media(key);
        if let Some(meta) = self.snapshot(key, wall, RecordingState::NoMedia, "") {
            self.storage.push_back(StorageOp::Save { meta });
        }
    }

    /// Hands every accepted, not yet started stream of the session to the media path.
    fn start_media(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        for st in s.streams.iter_mut().filter(|st| !st.started) {
            let (Some(port), Some(codec)) = (st.port, st.codec.as_ref()) else {
                continue;
            };
            let spec = st.media_spec(key, codec);
            self.host.start_stream(port, spec);
            st.started = true;
        }
    }

    fn refuse_starting(
        &mut self,
        now: Instant,
        key: SessionKey,
        status: u16,
        reason: &str,
        warning: &str,
    ) {
        let Some(s) = self.remove_session(key) else {
            return;
        };
        if let Some(tx) = s.invite_tx {
            self.reply(now, tx, &s.invite, status, reason, Some(warning));
        }
        self.storage.push_back(StorageOp::Abandon { id: s.id });
    }

    /// A CANCEL before our 200: 487, and the attempt still ends in a folder (`no-media`,
    /// `end_reason: cancel`, timeline from the INVITE to the CANCEL) so an audit can see that
    /// the SRC tried to record this call and withdrew.
    fn on_cancel(&mut self, now: Instant, wall: SystemTime, invite_tx: TxId) {
        let Some(key) = self.by_invite_tx.get(&invite_tx).copied() else {
            return;
        };
        let meta = self.snapshot(key, wall, RecordingState::NoMedia, "cancel");
        let Some(s) = self.remove_session(key) else {
            return;
        };
        let mut resp = Response::for_request(&s.invite, 487, "Request Terminated");
        add_tag(&mut resp, &s.local_tag);
        self.decorate(&mut resp);
        self.endpoint.respond(now, invite_tx, resp);
        self.stats.sessions_ended += 1;
        if let Some(meta) = meta {
            self.storage.push_back(StorageOp::Finalize {
                meta,
                media_streams: Vec::new(),
            });
        }
    }

    fn on_ack(&mut self, req: &Request) {
        let Some(key) = self.dialog_key(req) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&key)
            && s.phase == Phase::Answered
        {
            s.phase = Phase::Confirmed;
        }
    }

    fn on_in_dialog(
        &mut self,
        now: Instant,
        wall: SystemTime,
        tx: TxId,
        req: Request,
        flow: Flow,
        _to_tag: String,
    ) {
        if req.method == Method::Options {
            // An in-dialog OPTIONS is the SRC asking whether the recording still lives (Acme's
            // in-dialog ping, RFC 3261 §12.2.2): 200 for a live one, draining or not (it runs
            // to its BYE), and 481 for one that is gone (e.g. died with the last process), so
            // the SRC tears it down and stops sending its RTP.
            // `by_dialog` holds exactly the live sessions (`remove_session` clears both).
            let Some(key) = self.dialog_key(&req) else {
                return self.reply(now, tx, &req, 481, "Call/Transaction Does Not Exist", None);
            };
            self.follow_connection(key, flow);
            if let Some(status) = self.check_require(now, tx, &req) {
                return status;
            }
            return self.answer_options(now, tx, &req);
        }
        let Some(key) = self.dialog_key(&req) else {
            return self.reply(now, tx, &req, 481, "Call/Transaction Does Not Exist", None);
        };
        let check = match self.sessions.get_mut(&key).and_then(|s| s.dialog.as_mut()) {
            Some(d) => d.on_request(&req),
            None => {
                return self.reply(now, tx, &req, 481, "Call/Transaction Does Not Exist", None);
            }
        };
        if let Err(e) = check {
            let (status, reason) = (e.status, e.reason);
            return self.reply(now, tx, &req, status, &reason, None);
        }
        self.follow_connection(key, flow);
        match req.method {
            Method::Bye => {
                let mut resp = Response::for_request(&req, 200, "OK");
                self.decorate(&mut resp);
                self.endpoint.respond(now, tx, resp);
                self.end_session(now, wall, key, "bye", false);
            }
            Method::Invite | Method::Update => self.on_refresh(now, wall, tx, req, key),
            Method::Info => {
                if let Some(status) = self.check_require(now, tx, &req) {
                    return status;
                }
                let mut resp = Response::for_request(&req, 200, "OK");
                self.decorate(&mut resp);
                self.endpoint.respond(now, tx, resp);
            }
            _ => self.reply_405(now, tx, &req),
        }
    }

    /// An in-dialog request came on a TCP or TLS connection: Reel's own requests in the
    /// dialog go on the connection the SRC uses now (it may have opened a new one after the
    /// first closed, or moved to another of its proxies' connections).
    fn follow_connection(&mut self, key: SessionKey, flow: Flow) {
        if flow.conn.is_none() {
            return;
        }
        if let Some(d) = self.sessions.get_mut(&key).and_then(|s| s.dialog.as_mut())
            && d.flow.transport == flow.transport
        {
            d.flow = flow;
        }
    }

    /// re-INVITE or UPDATE: new offer (hold, resume, streams added or removed), new metadata,
    /// or both; also a session refresh (RFC 4028).
    fn on_refresh(
        &mut self,
        now: Instant,
        wall: SystemTime,
        tx: TxId,
        req: Request,
        key: SessionKey,
    ) {
        if let Some(status) = self.check_require(now, tx, &req) {
            return status;
        }
        let timer = match self.session_timer_request(&req) {
            Ok(t) => t,
            Err(()) => return self.reply_422(now, tx, &req),
        };
        let offer = match self.read_update(&req) {
            Ok(o) => o,
            Err(e) => return self.reply_body_error(now, tx, &req, &e),
        };
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        // Plan the new offer against the current streams before changing anything, so a
        // refused offer leaves the session as it was (RFC 3264 §8).
        let mut new_ports: Vec<u16> = Vec::new();
        let mut plan: Vec<StreamState> = Vec::new();
        if let Some(sdp) = &offer.sdp {
            if sdp.media.len() < s.offer.media.len() {
                return self.reply(
                    now,
                    tx,
                    &req,
                    488,
                    "Not Acceptable Here",
                    Some("a new offer must keep every m-line of the previous one (RFC 3264 §8)"),
                );
            }
            let existing = s.streams.clone();
            for (index, m) in sdp.media.iter().enumerate() {
                let old = existing.iter().find(|st| st.index == index);
                let mut st = StreamState::offered(index, m);
                let accepted = if m.port == 0 {
                    Err("removed".into())
                } else {
                    self.accept_stream(m)
                };
                // Recorded so far: handed to the media path, or removed by an earlier offer
                // after that (no port left, its codec kept).
                let recorded =
                    |o: &&StreamState| o.started || o.port.is_none() && o.codec.is_some();
                if accepted.is_err()
                    && let Some(o) = old.filter(recorded)
                {
                    // Removed (port 0) or no longer recordable: what was recorded of it stays
                    // in the recording, a channel of its own; only the port goes. So also
                    // when a later offer (a refresh repeating the SDP) removes it again.
                    st.codec = o.codec.clone();
                    st.telephone_event = o.telephone_event.clone();
                }
                if let Ok(a) = accepted {
                    let port = match old.and_then(|o| o.port) {
                        Some(p) => Some(p),
                        None => match self.host.allocate_port() {
                            Some(p) => {
                                new_ports.push(p);
                                Some(p)
                            }
                            None => None,
                        },
                    };
                    if port.is_none() {
                        for p in new_ports {
                            self.host.release_port(p);
                        }
                        return self.reply_503(now, tx, &req, "No RTP Ports Available");
                    }
                    // A kept stream keeps our answer's key while the SRC keeps its own; a
                    // re-offer with a new SRC key (or another crypto tag) gets a fresh answer
                    // for it, and the media path follows the new key (RFC 4568 §7.1.4).
                    let same_key = old.is_some_and(|o| o.srtp == a.srtp)
                        && old.and_then(|o| o.crypto.as_deref()).map(crypto_tag)
                            == a.crypto.as_deref().map(crypto_tag);
                    let crypto = if same_key {
                        old.and_then(|o| o.crypto.clone()).or(a.crypto)
                    } else {
                        a.crypto
                    };
                    st.srtp = a.srtp;
                    st.started = old.is_some_and(|o| o.started && o.port == port);
                    st.port = port;
                    st.codec = Some(a.codec);
                    st.telephone_event = a.te;
                    st.crypto = crypto;
                }
                plan.push(st);
            }
            if plan.iter().all(|st| st.port.is_none()) {
                for p in new_ports {
                    self.host.release_port(p);
                }
                return self.reply(
                    now,
                    tx,
                    &req,
                    488,
                    "Not Acceptable Here",
                    Some("no recordable stream in the new offer"),
                );
            }
        }

        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut released = Vec::new();
        // Kept streams whose payload types, key or address the new offer changed.
        let mut updates = Vec::new();
        for new in plan.iter().filter(|n| n.started) {
            let (Some(port), Some(codec)) = (new.port, new.codec.as_ref()) else {
                continue;
            };
            let Some(old) = s.streams.iter().find(|o| o.index == new.index) else {
                continue;
            };
            let spec = new.media_spec(key, codec);
            let was = old.codec.as_ref().map(|c| old.media_spec(key, c));
            if was.as_ref() != Some(&spec) {
                let relearn = old.source != new.source || old.srtp != new.srtp;
                updates.push((port, spec, relearn));
            }
        }
        if let Some(sdp) = offer.sdp {
            for old in &s.streams {
                if let Some(p) = old.port
                    && !plan.iter().any(|n| n.port == Some(p))
                {
                    released.push(p);
                }
            }
            // Streams that no longer exist stay in the recording (they were recorded) but
            // without a port.
            let mut merged = plan;
            for old in &s.streams {
                if old.index >= merged.len() {
                    let mut gone = old.clone();
                    gone.port = None;
                    merged.push(gone);
                }
            }
            s.streams = merged;
            s.offer = sdp;
            s.sdp_version += 1;
        }
        let mut new_versions = Vec::new();
        for (doc, xml) in offer.metadata_docs {
            s.metadata.apply(doc);
            s.metadata_versions += 1;
            new_versions.push(xml);
        }
        s.warnings.extend(offer.warnings);
        if let Some(d) = timer {
            s.session_timer = Some((d, now + d));
        } else if let Some((d, _)) = s.session_timer {
            s.session_timer = Some((d, now + d));
        }
        let id = s.id.clone();
        for p in released {
            self.host.release_port(p);
        }
        self.arm_session_timer(key);
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        let mut resp = Response::for_request(&req, 200, "OK");
        if let Some(d) = &s.dialog {
            d.tag_response(&mut resp);
        }
        resp.headers
            .push("Contact", contact_for(s.media_ip, &s.flow));
        if let Some((interval, _)) = s.session_timer {
            resp.headers.push(
                "Session-Expires",
                format!("{};refresher=uac", interval.as_secs()),
            );
            resp.headers.push("Require", "timer");
        }
        // A re-INVITE always gets an SDP answer (or, without an offer, our offer: the current
        // description); an UPDATE only when it carried an offer.
        let has_offer = offer_was_present(&req);
        if req.method == Method::Invite || has_offer {
            resp.headers.push("Content-Type", "application/sdp");
            resp.body = self.build_answer_sdp(s).into_bytes();
        }
        self.decorate(&mut resp);
        self.endpoint.respond(now, tx, resp);
        self.start_media(key);
        for (port, spec, relearn) in updates {
            self.host.update_stream(port, spec, relearn);
        }
        for xml in new_versions {
            self.storage.push_back(StorageOp::Metadata {
                id: id.clone(),
                xml,
            });
        }
        if let Some(meta) = self.snapshot(key, wall, RecordingState::NoMedia, "") {
            self.storage.push_back(StorageOp::Save { meta });
        }
    }

    // ---- session end ---------------------------------------------------------------------

    /// Ends a session: finalize its recording, close its ports, and (when Reel ends it) send
    /// BYE.
    fn end_session(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: SessionKey,
        why: &str,
        send_bye: bool,
    ) {
        let Some(phase) = self.sessions.get(&key).map(|s| s.phase) else {
            return;
        };
        if phase == Phase::Starting {
            // Never answered: refuse instead.
            let status = if why == "shutdown" { 503 } else { 500 };
            return self.refuse_starting(now, key, status, "Session Ended", why);
        }
        let meta = self.snapshot(key, wall, RecordingState::NoMedia, why);
        let Some(mut s) = self.remove_session(key) else {
            return;
        };
        let media_streams: Vec<u16> = s
            .streams
            .iter()
            .filter(|st| st.started)
            .map(|st| u16::try_from(st.index).unwrap_or(u16::MAX))
            .collect();
        if send_bye && let Some(d) = s.dialog.as_mut() {
            let mut bye = d.make_request(Method::Bye);
            bye.headers
                .push("Reason", format!("SIP;cause=200;text=\"{why}\""));
            bye.headers
                .push("User-Agent", self.config.endpoint.user_agent.clone());
            let flow = d.flow;
            self.endpoint.send_request(now, bye, flow);
        }
        self.stats.sessions_ended += 1;
        if let Some(meta) = meta {
            self.storage.push_back(StorageOp::Finalize {
                meta,
                media_streams,
            });
        }
    }

    fn remove_session(&mut self, key: SessionKey) -> Option<Session> {
        let s = self.sessions.remove(&key)?;
        self.by_dialog
            .remove(&(s.call_id.clone(), s.local_tag.clone()));
        if let Some(tx) = s.invite_tx {
            self.by_invite_tx.remove(&tx);
        }
        self.release_streams(&s.streams);
        Some(s)
    }

    fn release_streams(&mut self, streams: &[StreamState]) {
        for st in streams {
            if let Some(p) = st.port {
                self.host.release_port(p);
            }
        }
    }

    /// The recording's metadata as it stands, for the writer thread.
    fn snapshot(
        &self,
        key: SessionKey,
        wall: SystemTime,
        state: RecordingState,
        end_reason: &str,
    ) -> Option<RecordingMeta> {
        let s = self.sessions.get(&key)?;
        let participants: Vec<ParticipantRecord> = s
            .metadata
            .participants
            .iter()
            .map(|p| ParticipantRecord {
                id: p.id.clone(),
                aor: p.aor.clone(),
                name: p.name.clone(),
            })
            .collect();
        let mut streams: Vec<(usize, StreamRecord)> = s
            .streams
            .iter()
            .filter(|st| st.codec.is_some())
            .map(|st| {
                let codec = st.codec.clone().unwrap_or_else(|| sdp::Codec {
                    name: "unknown".into(),
                    payload_type: 0,
                    clock_rate: 8000,
                    channels: 1,
                    fmtp: None,
                });
                let sender = s.metadata.sender_of_label(&st.label).map(|p| p.id.clone());
                let rank = sender
                    .as_ref()
                    .and_then(|id| participants.iter().position(|p| &p.id == id))
                    .unwrap_or(usize::MAX);
                (
                    rank,
                    StreamRecord {
                        label: st.label.clone(),
                        codec: codec.name,
                        participant: sender,
                        packets: 0,
                        lost: 0,
                        ssrcs: Vec::new(),
                        payload_type: codec.payload_type,
                        clock_rate: codec.clock_rate,
                        mline: st.index,
                        rtp_port: st.port,
                        ..StreamRecord::default()
                    },
                )
            })
            .collect();
        // Channel order: the first participant's sending stream first (DESIGN §4), then the
        // others; streams without a known sender keep their m-line order.
        streams.sort_by_key(|(rank, _)| *rank);
        let labels: Vec<String> = s.streams.iter().map(|st| st.label.clone()).collect();
        let mut warnings = s.warnings.clone();
        if s.metadata_versions > 0 {
            warnings.extend(s.metadata.warnings(&labels));
        }
        Some(RecordingMeta {
            id: s.id.clone(),
            call_id: s.call_id.clone(),
            session_id: s.metadata.session_id.clone(),
            state,
            started_at: s.started_wall,
            ended_at: wall,
            participants,
            streams: streams.into_iter().map(|(_, st)| st).collect(),
            extensions: s.metadata.extensions.clone(),
            warnings,
            replicated_to: Vec::new(),
            end_reason: end_reason.to_string(),
            node: self.config.node_name.clone(),
        })
    }

    // ---- helpers -------------------------------------------------------------------------

    /// A BYE without a To tag (RFC 3261 §12.2.2 would answer 481) that names exactly one live
    /// recording by its Call-ID and the SRC's From tag is taken as that dialog's BYE: SRC test
    /// scripts in the field send one (MiaRec's BroadWorks SIPp scenarios), and answering 481
    /// would leave the recording running until its RTP stops. The request gets Reel's tag in
    /// its To header, as the answer would carry anyway; returns that tag.
    fn tagless_bye_dialog(&self, req: &mut Request) -> Option<String> {
        let call_id = req.call_id()?.trim().to_string();
        let from_tag = Some(header_tag(req, "From")?);
        let mut found = self
            .by_dialog
            .range((call_id.clone(), String::new())..)
            .take_while(|((c, _), _)| *c == call_id)
            .filter(|(_, key)| {
                self.sessions
                    .get(key)
                    .is_some_and(|s| remote_tag(s) == from_tag)
            })
            .map(|((_, local), _)| local.clone());
        let local = found.next()?;
        if found.next().is_some() {
            return None;
        }
        let to = req.headers.get("To")?;
        let mut addr = crate::sip::NameAddr::parse(to).ok()?;
        addr.set_param("tag", Some(local.clone()));
        req.headers.set("To", addr.to_header_value());
        tracing::warn!(
            call_id = %crate::sip::message::sanitize(&call_id),
            "a BYE without a To tag taken for the one recording of its Call-ID and From tag"
        );
        Some(local)
    }

    /// The session whose dialog a request belongs to: Call-ID, our tag (To) and the SRC's
    /// tag (From) all matching (RFC 3261 §12.2.2). A wrong From tag is another dialog, so a
    /// stray or misrouted BYE that shares a Call-ID and To tag gets 481 and ends nothing.
    fn dialog_key(&self, req: &Request) -> Option<SessionKey> {
        let call_id = req.call_id()?.to_string();
        let key = *self.by_dialog.get(&(call_id, header_tag(req, "To")?))?;
        let s = self.sessions.get(&key)?;
        (header_tag(req, "From") == remote_tag(s)).then_some(key)
    }

    /// 420 for option tags in Require that Reel does not implement. Returns `Some(())` when
    /// the request was answered.
    fn check_require(&mut self, now: Instant, tx: TxId, req: &Request) -> Option<()> {
        let unknown: Vec<String> = req
            .headers
            .get_list("Require")
            .into_iter()
            .filter(|t| !t.is_empty() && !UNDERSTOOD.iter().any(|u| u.eq_ignore_ascii_case(t)))
            .collect();
        if unknown.is_empty() {
            return None;
        }
        let mut resp = Response::for_request(req, 420, "Bad Extension");
        resp.headers.push("Unsupported", unknown.join(", "));
        self.decorate(&mut resp);
        ensure_to_tag(&mut resp, &mut self.rng);
        self.count_reject(420);
        self.endpoint.respond(now, tx, resp);
        Some(())
    }

    /// RFC 4028: the interval to run, `None` when no timer is asked for (or the UAC does not
    /// support refreshing it), `Err` when it is below our Min-SE.
    fn session_timer_request(&self, req: &Request) -> Result<Option<Duration>, ()> {
        let Some(value) = req.headers.get("Session-Expires") else {
            return Ok(None);
        };
        let delta = value.split(';').next().unwrap_or("").trim();
        let Ok(secs) = delta.parse::<u64>() else {
            return Ok(None);
        };
        if secs < u64::from(self.config.min_se_s) {
            return Err(());
        }
        let uac_refreshes = req.headers.has_token("Supported", "timer")
            || req.headers.has_token("Require", "timer");
        if !uac_refreshes {
            return Ok(None);
        }
        // We give up waiting at expiry minus min(32 s, interval/3) (RFC 4028 §10) plus the
        // grace a BYE from the SRC needs to arrive: we simply wait the whole interval. A UAS
        // may shorten the interval in its answer (§9), which carries the one we run: a day at
        // most, so no value from the wire can overflow a timer.
        Ok(Some(Duration::from_secs(secs.min(MAX_SESSION_EXPIRES_S))))
    }

    fn accept_stream(&self, m: &sdp::MediaDescription) -> Result<Accepted, String> {
        if m.port == 0 {
            return Err("offered with port 0".into());
        }
        if !m.media.eq_ignore_ascii_case("audio") {
            return Err(format!("{} streams are not recorded", m.media));
        }
        if !m.acceptable_transport() {
            return Err(format!(
                "transport {} with these keys cannot be decrypted",
                m.proto
            ));
        }
        let Some((codec, te)) = m.choose_codecs_preferring(self.config.prefer_wav_codecs) else {
            return Err("no offered codec among PCMU, PCMA, G722, G729, opus".into());
        };
        let (crypto, srtp) = if m.proto.to_ascii_uppercase().contains("SAVP") {
            // The first offered line whose key Reel can actually use decides; an offer with
            // none is refused rather than answered with plain RTP.
            let usable = m.crypto.iter().find_map(|c| {
                let key = crate::media::srtp::SrtpKey::from_sdes(&c.suite, &c.key_params).ok()?;
                Some((sdp::answer_crypto(c)?, key))
            });
            match usable {
                Some((answer, key)) => (Some(answer), Some(key)),
                None => return Err("no usable SRTP crypto line (suite or key)".into()),
            }
        } else {
            (None, None)
        };
        Ok(Accepted {
            codec,
            te,
            crypto,
            srtp,
        })
    }

    fn build_answer_sdp(&self, s: &Session) -> String {
        let plan: Vec<StreamPlan> = (0..s.offer.media.len())
            .map(|i| match s.streams.iter().find(|st| st.index == i) {
                Some(StreamState {
                    port: Some(port),
                    codec: Some(codec),
                    telephone_event,
                    crypto,
                    ..
                }) => StreamPlan::Accepted {
                    port: *port,
                    codec: codec.clone(),
                    telephone_event: telephone_event.clone(),
                    crypto: crypto.clone(),
                },
                _ => StreamPlan::Rejected,
            })
            .collect();
        sdp::build_answer(&s.offer, &plan, s.media_ip, s.sdp_session_id, s.sdp_version)
    }

    fn read_offer(&self, req: &Request) -> Result<Offer, BodyError> {
        let parts = self.split(req)?;
        let siprec = siprec::is_siprec(req, &parts);
        let mut offer = self.read_parts(parts)?;
        offer.siprec = siprec;
        let Some(sdp) = offer.sdp.take() else {
            // Offerless (RFC 3261 lets the UAS offer in its 200; Reel, recvonly, does not):
            // 488 whether the body is empty or metadata alone. A body with neither SDP nor
            // metadata was answered 415 by `read_parts`.
            let what = if req.body.is_empty() {
                "an INVITE without an SDP offer"
            } else {
                "an INVITE with metadata but no SDP offer"
            };
            return Err(BodyError::NotAcceptable(format!(
                "{what} is not supported by this recorder"
            )));
        };
        Ok(Offer {
            sdp,
            metadata_docs: offer.metadata_docs,
            warnings: offer.warnings,
            siprec,
        })
    }

    fn read_update(&self, req: &Request) -> Result<Update, BodyError> {
        let parts = self.split(req)?;
        let u = self.read_parts(parts)?;
        Ok(Update {
            sdp: u.sdp,
            metadata_docs: u.metadata_docs,
            warnings: u.warnings,
        })
    }

    fn split(&self, req: &Request) -> Result<Vec<BodyPart>, BodyError> {
        if req.body.is_empty() {
            return Ok(Vec::new());
        }
        let ct = req.headers.get("Content-Type");
        if ct.is_none() {
            return Err(BodyError::Malformed("body without Content-Type".into()));
        }
        siprec::split_body(ct, &req.body)
    }

    fn read_parts(&self, parts: Vec<BodyPart>) -> Result<PartsRead, BodyError> {
        let limits = Limits {
            max_bytes: self.config.metadata_max_bytes,
            max_depth: self.config.metadata_max_depth,
        };
        let mut out = PartsRead::default();
        let mut known = false;
        for part in parts {
            if part.content_type == "application/sdp" {
                if out.sdp.is_some() {
                    out.warnings
                        .push("more than one SDP part; the first is used".into());
                    continue;
                }
                let sdp = sdp::parse_sdp(&part.body)?;
                if sdp.media.len() > self.config.max_streams {
                    return Err(BodyError::TooLarge(format!(
                        "{} media streams offered; at most {} per session",
                        sdp.media.len(),
                        self.config.max_streams
                    )));
                }
                out.sdp = Some(sdp);
                known = true;
            } else if siprec::is_metadata_type(&part.content_type) {
                known = true;
                match siprec::metadata::parse_metadata(&part.body, &limits) {
                    Ok(doc) => out.metadata_docs.push((doc, part.body)),
                    // Unsafe or oversized XML is refused outright; merely broken XML does not
                    // cost the recording: the audio matters more than its labels.
                    Err(e @ (BodyError::TooLarge(_) | BodyError::Refused(_))) => return Err(e),
                    Err(e) => out
                        .warnings
                        .push(format!("metadata ignored: {}", e.reason())),
                }
            } else {
                out.warnings
                    .push(format!("body part {} ignored", part.content_type));
            }
        }
        if !known && !out.warnings.is_empty() {
            return Err(BodyError::UnsupportedType(format!(
                "no application/sdp or rs-metadata part ({})",
                out.warnings.join(", ")
            )));
        }
        Ok(out)
    }

    fn reply_body_error(&mut self, now: Instant, tx: TxId, req: &Request, e: &BodyError) {
        let status = e.status();
        let reason = match status {
            400 => "Bad Request",
            413 => "Request Entity Too Large",
            415 => "Unsupported Media Type",
            488 => "Not Acceptable Here",
            _ => "Bad Request",
        };
        let mut resp = Response::for_request(req, status, reason);
        if status == 415 {
            resp.headers.push("Accept", ACCEPT);
        }
        resp.headers.push("Warning", warning_value(e.reason()));
        self.decorate(&mut resp);
        ensure_to_tag(&mut resp, &mut self.rng);
        self.count_reject(status);
        self.endpoint.respond(now, tx, resp);
    }

    fn reply(
        &mut self,
        now: Instant,
        tx: TxId,
        req: &Request,
        status: u16,
        reason: &str,
        warning: Option<&str>,
    ) {
        let mut resp = Response::for_request(req, status, reason);
        if let Some(w) = warning {
            resp.headers.push("Warning", warning_value(w));
        }
        self.decorate(&mut resp);
        ensure_to_tag(&mut resp, &mut self.rng);
        if status >= 300 {
            self.count_reject(status);
        }
        self.endpoint.respond(now, tx, resp);
    }

    fn reply_503(&mut self, now: Instant, tx: TxId, req: &Request, reason: &str) {
        let mut resp = Response::for_request(req, 503, reason);
        resp.headers
            .push("Retry-After", self.config.retry_after_s.to_string());
        self.decorate(&mut resp);
        ensure_to_tag(&mut resp, &mut self.rng);
        self.count_reject(503);
        self.endpoint.respond(now, tx, resp);
    }

    /// RFC 4028 §6: the requested session interval is below our Min-SE.
    fn reply_422(&mut self, now: Instant, tx: TxId, req: &Request) {
        let mut resp = Response::for_request(req, 422, "Session Interval Too Small");
        resp.headers
            .push("Min-SE", self.config.min_se_s.to_string());
        self.decorate(&mut resp);
        ensure_to_tag(&mut resp, &mut self.rng);
        self.count_reject(422);
        self.endpoint.respond(now, tx, resp);
    }

    fn reply_405(&mut self, now: Instant, tx: TxId, req: &Request) {
        let mut resp = Response::for_request(req, 405, "Method Not Allowed");
        self.decorate(&mut resp);
        ensure_to_tag(&mut resp, &mut self.rng);
        self.count_reject(405);
        self.endpoint.respond(now, tx, resp);
    }

    /// Headers every response of ours carries.
    fn decorate(&self, resp: &mut Response) {
        resp.headers.push("Allow", ALLOW);
        resp.headers.push("Supported", SUPPORTED);
        if resp.status == 200 && resp.body.is_empty() {
            resp.headers.push("Accept", ACCEPT);
        }
        resp.headers
            .push("Server", self.config.endpoint.user_agent.clone());
    }

    fn count_reject(&mut self, status: u16) {
        *self.stats.rejected.entry(status).or_default() += 1;
    }
}

struct Accepted {
    codec: sdp::Codec,
    te: Option<sdp::Codec>,
    crypto: Option<String>,
    srtp: Option<crate::media::srtp::SrtpKey>,
}

struct Offer {
    sdp: SessionDescription,
    metadata_docs: Vec<(siprec::MetadataDoc, Vec<u8>)>,
    warnings: Vec<String>,
    siprec: bool,
}

struct Update {
    sdp: Option<SessionDescription>,
    metadata_docs: Vec<(siprec::MetadataDoc, Vec<u8>)>,
    warnings: Vec<String>,
}

#[derive(Default)]
struct PartsRead {
    sdp: Option<SessionDescription>,
    metadata_docs: Vec<(siprec::MetadataDoc, Vec<u8>)>,
    warnings: Vec<String>,
    siprec: bool,
}

fn offer_was_present(req: &Request) -> bool {
    let ct = req
        .headers
        .get("Content-Type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("application/sdp") {
        return true;
    }
    if ct.starts_with("multipart/") {
        return siprec::split_body(Some(&ct), &req.body)
            .map(|parts| parts.iter().any(|p| p.content_type == "application/sdp"))
            .unwrap_or(false);
    }
    false
}

/// `Warning: 399 reel "text"` (RFC 3261 §20.43), quotes and controls removed from the text.
fn warning_value(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '\''
            } else {
                c
            }
        })
        .take(200)
        .collect();
    format!("399 reel \"{clean}\"")
}

fn add_tag(resp: &mut Response, tag: &str) {
    if let Some(to) = resp.headers.get("To")
        && !to.contains(";tag=")
    {
        let v = format!("{to};tag={tag}");
        resp.headers.set("To", v);
    }
}

fn ensure_to_tag(resp: &mut Response, rng: &mut rand::rngs::StdRng) {
    let tag = random_token(rng, 12);
    add_tag(resp, &tag);
}

fn random_token(rng: &mut rand::rngs::StdRng, len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A random (version 4) UUID: unique across nodes without coordination.
fn new_recording_id(rng: &mut rand::rngs::StdRng) -> String {
    use rand::Rng;
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    crate::record::model::uuid_text(&b)
}

fn contact_for(ip: IpAddr, flow: &Flow) -> String {
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let transport = match flow.transport {
        crate::sip::Transport::Udp => "",
        crate::sip::Transport::Tcp => ";transport=tcp",
        crate::sip::Transport::Tls => ";transport=tls",
    };
    let scheme = "sip";
    format!(
        "<{scheme}:reel@{host}:{}{transport}>;+sip.srs",
        flow.local.port()
    )
}

/// The address of a dialog's remote target for a new connection: an IP literal and its port
/// (5060, or 5061 for sips: and TLS, when the URI names none). `None` for a host name: the
/// control thread resolves no names, so the caller keeps the address it had.
fn target_address(uri: &str, transport: crate::sip::Transport) -> Option<std::net::SocketAddr> {
    let (host, port) = crate::sip::header::uri_host_port(uri)?;
    let ip: IpAddr = host.parse().ok()?;
    let secure = uri.trim_start().to_ascii_lowercase().starts_with("sips:");
    let port = port.unwrap_or(if secure {
        5061
    } else {
        transport.default_port()
    });
    Some(std::net::SocketAddr::new(ip, port))
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) compare as IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The tag of an `a=crypto` value (`1 AES_CM_128_HMAC_SHA1_80 inline:...` -> `1`).
fn crypto_tag(value: &str) -> &str {
    value.split_whitespace().next().unwrap_or("")
}
