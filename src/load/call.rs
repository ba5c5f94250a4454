//! One recorded call as `reel load` plays it, without I/O: INVITE (with failover to the next
//! target), ACK, RTP start, optional hold and resume by re-INVITE, RTP stop, BYE.
//!
//! Owns: the call's phases and its one client transaction at a time, RFC 3261 timers for
//! it (UDP retransmission from T1 = 500 ms doubling to T2 = 4 s: INVITE until a provisional,
//! non-INVITE until the final; timeout B/F = 64·T1 for in-dialog requests, and
//! `failover_timeout` for the initial INVITE), the requests' text, the ACKs (for 2xx and for
//! non-2xx finals), answers to an abandoned attempt (ACK and BYE), and counting what happened
//! into a [`Tally`].
//!
//! Failover keeps the Call-ID, From tag and CSeq and uses a new branch (RFC 3263 §4.3: the
//! same request to the next server), so the SRS sees one call however many targets it took.
//!
//! Must not: open sockets, read the clock, or choose targets: the driver passes `now`, the
//! responses with the address they came from, and the next target when the call asks for one
//! ([`Phase::NeedTarget`]); it sends what the call pushes into its [`Output`] list.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::body::{self, CallParties, Direction, Flavour};
use super::rtp_send::{Codec, StreamCommand, StreamSpec};
use crate::sip::{CSeq, Method, NameAddr, Request, Response, Via};

/// RFC 3261 timer T1.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 timer T2.
pub const T2: Duration = Duration::from_secs(4);
/// Tone of stream 0 (the caller's, channel 0) and stream 1 (the callee's, channel 1).
pub const TONES: [f32; 2] = [400.0, 1000.0];
/// How long a call waits for the RTP sender to confirm its streams stopped before it sends
/// BYE anyway.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// SIP transport of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    fn reliable(self) -> bool {
        self == Transport::Tcp
    }
}

/// What every call of a run shares.
#[derive(Clone, Debug)]
pub struct CallConfig {
    pub transport: Transport,
    pub codec: Codec,
    pub flavour: Flavour,
    /// Media time from the 200 OK to the BYE.
    pub duration: Duration,
    /// Hold (re-INVITE, streams `inactive`, RTP paused) at 1/3 of `duration`, resume at 2/3.
    pub hold: bool,
    /// No final answer to an initial INVITE within this: fail over.
    pub failover_timeout: Duration,
    /// Port the RTP sender sends from to IPv4 targets (offered in the SDP).
    pub rtp_port: u16,
    /// The same for IPv6 targets: the sender's IPv6 socket has a port of its own.
    pub rtp_port_v6: u16,
    /// Pause between the last RTP packet and the BYE: a real SRC's last packet precedes its
    /// BYE by at least a network delay, which loopback does not have.
    pub bye_delay: Duration,
}

impl CallConfig {
    /// The RTP port to offer from a local address of `ip`'s family.
    fn rtp_port_for(&self, ip: std::net::IpAddr) -> u16 {
        if ip.is_ipv6() {
            self.rtp_port_v6
        } else {
            self.rtp_port
        }
    }
}

/// Where a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Wants the driver to call [`Call::attempt`] with its next target, or [`Call::fail`].
    NeedTarget,
    Inviting,
    /// Answered, media running.
    Confirmed,
    /// A hold (true) or resume (false) re-INVITE is in flight.
    ReInviting {
        hold: bool,
    },
    /// Waiting for the RTP sender to confirm both streams stopped.
    Stopping,
    Byeing,
    Done,
}

/// Why a call did not succeed (the `failures` keys of the report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Every target failed; the last failure was this final status (503 ...).
    Status(u16),
    /// No final answer in time from the last target tried.
    Timeout,
    /// The last target could not be reached (connection refused, ICMP, reset).
    Transport,
    /// No target to try at all.
    NoTarget,
    /// A hold or resume re-INVITE got no 2xx.
    Hold,
    /// BYE got a non-2xx answer or none.
    Bye,
    /// The SRS ended the call with its own BYE.
    RemoteBye,
    /// The run's overall deadline came first.
    Deadline,
    /// Ctrl-C or SIGTERM before the call was answered.
    Interrupted,
}

impl Failure {
    pub fn key(&self) -> String {
        match self {
            Failure::Status(s) => format!("status_{s}"),
            Failure::Timeout => "timeout".into(),
            Failure::Transport => "transport".into(),
            Failure::NoTarget => "no_target".into(),
            Failure::Hold => "hold".into(),
            Failure::Bye => "bye".into(),
            Failure::RemoteBye => "remote_bye".into(),
            Failure::Deadline => "deadline".into(),
            Failure::Interrupted => "interrupted".into(),
        }
    }
}

/// What a call asks the driver to do.
#[derive(Debug)]
pub enum Output {
    Send {
        target: SocketAddr,
        data: Vec<u8>,
    },
    Rtp(StreamCommand),
    /// The target failed this call (503, timeout, transport): hold it down, for
    /// `retry_after` when the SRS said so.
    TargetFailed {
        target: SocketAddr,
        retry_after: Option<Duration>,
    },
    /// The target answered: it is up.
    TargetOk {
        target: SocketAddr,
    },
}

/// Counts over all calls of a run.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub calls_ok: u64,
    pub calls_failed: u64,
    /// Final responses to initial INVITEs, by status (first copy of each only).
    pub responses: BTreeMap<u16, u64>,
    /// Final responses to hold/resume re-INVITEs, by status.
    pub reinvite_responses: BTreeMap<u16, u64>,
    /// Calls answered 200 per target.
    pub by_target: BTreeMap<SocketAddr, u64>,
    /// Targets tried after the first (each a failover to another target), whether the
    /// first failed by answer, ICMP error, time-out or refused connection.
    pub failovers: u64,
    pub bye_ok: u64,
    pub bye_failed: u64,
    pub hold_ok: u64,
    pub hold_failed: u64,
    /// UDP retransmissions of requests.
    pub retransmissions: u64,
    /// 2xx answers to attempts already abandoned (each ACKed and ended with BYE).
    pub stray_answers: u64,
    pub failures: BTreeMap<String, u64>,
    /// First INVITE sent -> 200 received, per answered call.
    pub setup: Vec<Duration>,
    /// RTP packets the sender confirmed per stopped stream, summed.
    pub rtp_packets_confirmed: u64,
}

/// The one client transaction a call has in flight.
#[derive(Debug)]
struct ClientTx {
    method: Method,
    cseq: u32,
    branch: String,
    data: Vec<u8>,
    target: SocketAddr,
    /// Next UDP retransmission, and the interval after it.
    next_retx: Option<Instant>,
    interval: Duration,
    deadline: Instant,
}

/// One call's state.
pub struct Call {
    /// When the call started, wall clock (passed in: this module reads no clock).
    wall: SystemTime,
    pub index: u64,
    pub call_id: String,
    pub phase: Phase,
    /// Addresses to try, first choice first (from the selector when the call started).
    pub candidates: Vec<SocketAddr>,
    pub next_candidate: usize,
    /// The target of the current attempt or dialog, and our address towards it.
    pub target: Option<SocketAddr>,
    local: Option<SocketAddr>,
    from_tag: String,
    parties: CallParties,
    sdp_session: u64,
    sdp_version: u32,
    cseq: u32,
    invite_cseq: u32,
    invite_branch: String,
    tx: Option<ClientTx>,
    to_tag: Option<String>,
    remote_uri: Option<String>,
    /// First INVITE sent (setup time runs from here, across failovers).
    invite_started: Option<Instant>,
    attempts: u32,
    hold_at: Option<Instant>,
    resume_at: Option<Instant>,
    end_at: Option<Instant>,
    streams_running: u8,
    stop_wait: Option<Instant>,
    /// The reason for failover or failure, kept for when the candidates run out.
    last_failure: Option<Failure>,
    /// A problem that makes the call failed even if it ends normally (hold).
    flaw: Option<Failure>,
    pub outcome: Option<Result<(), Failure>>,
    /// Interrupted while inviting: end as soon as answered, try no other target.
    pub ending: bool,
}

impl Call {
    /// Call `index`, to try `candidates` in order; `wall` is when it starts, as a person reads
    /// time (the metadata's associate-time).
    pub fn new(index: u64, candidates: Vec<SocketAddr>, wall: SystemTime) -> Call {
        Call {
            index,
            wall,
            call_id: format!("{:016x}-{index}@reel-load", rand::random::<u64>()),
            phase: Phase::NeedTarget,
            candidates,
            next_candidate: 0,
            target: None,
            local: None,
            from_tag: format!("{:08x}", rand::random::<u32>()),
            parties: CallParties::new(index),
            sdp_session: u64::from(rand::random::<u32>()),
            sdp_version: 1,
            cseq: 1,
            invite_cseq: 1,
            invite_branch: String::new(),
            tx: None,
            to_tag: None,
            remote_uri: None,
            invite_started: None,
            attempts: 0,
            hold_at: None,
            resume_at: None,
            end_at: None,
            streams_running: 0,
            stop_wait: None,
            last_failure: None,
            flaw: None,
            outcome: None,
            ending: false,
        }
    }

    /// The RTP sender's id of stream `k` (0 caller, 1 callee) of this call.
    pub fn stream_id(&self, k: u64) -> u64 {
        self.index * 2 + k
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Media is flowing (answered and not yet ending).
    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Confirmed | Phase::ReInviting { .. })
    }

    /// On hold: the hold re-INVITE went out (its time is cleared then) and the resume is
    /// still to come.
    fn held(&self) -> bool {
        self.hold_at.is_none() && self.resume_at.is_some()
    }

    /// The next target to try, if any is left.
    pub fn take_candidate(&mut self) -> Option<SocketAddr> {
        let c = self.candidates.get(self.next_candidate).copied();
        self.next_candidate += 1;
        c
    }

    /// Sends the initial INVITE to `target`, from `local` (our address towards it).
    pub fn attempt(
        &mut self,
        now: Instant,
        cfg: &CallConfig,
        target: SocketAddr,
        local: SocketAddr,
        tally: &mut Tally,
        out: &mut Vec<Output>,
    ) {
        self.attempts += 1;
        if self.attempts > 1 {
            tally.failovers += 1;
        }
        self.target = Some(target);
        self.local = Some(local);
        self.invite_started.get_or_insert(now);
        let sdp = body::offer(
            cfg.flavour,
            cfg.codec,
            local.ip(),
            cfg.rtp_port_for(local.ip()),
            self.sdp_session,
            self.sdp_version,
            Direction::SendOnly,
        );
        let start = humantime::format_rfc3339_millis(self.wall).to_string();
        let xml = body::metadata(cfg.flavour, &self.parties, &start);
        let multipart = body::multipart(cfg.flavour, &sdp, &xml, &self.parties);
        let mut extra = String::new();
        if cfg.flavour.requires_siprec() {
            extra.push_str("Require: siprec\r\n");
        }
        extra.push_str("Accept: application/sdp, application/rs-metadata+xml\r\n");
        extra.push_str(&format!(
            "Content-Type: multipart/mixed;boundary={}\r\n",
            body::boundary(cfg.flavour)
        ));
        let branch = new_branch();
        self.invite_branch = branch.clone();
        let data = self.request(
            cfg,
            "INVITE",
            &branch,
            self.invite_cseq,
            false,
            &extra,
            multipart.as_bytes(),
        );
        self.send_tx(
            now,
            cfg,
            Method::Invite,
            self.invite_cseq,
            branch,
            data,
            out,
        );
        self.phase = Phase::Inviting;
    }

    /// The driver could not even reach the target it took (connect refused): the call still
    /// wants a target, and remembers why the last one failed.
    pub fn note_transport_failure(&mut self) {
        // A target that could not even be connected to counts as tried: the next attempt
        // is a failover like one after an ICMP error or a 503.
        self.attempts += 1;
        self.last_failure = Some(Failure::Transport);
        self.phase = Phase::NeedTarget;
    }

    /// No target is left (or the run is ending): the call fails with the last reason seen.
    pub fn fail(&mut self, tally: &mut Tally) {
        let reason = if self.ending {
            Failure::Interrupted
        } else {
            self.last_failure.take().unwrap_or(Failure::NoTarget)
        };
        self.finish(Err(reason), tally);
    }

    /// The earliest time [`Call::on_timer`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut min = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        if let Some(tx) = &self.tx {
            min(tx.next_retx);
            min(Some(tx.deadline));
        }
        match self.phase {
            Phase::Confirmed => {
                if self.held() {
                    min(self.resume_at);
                } else {
                    min(self.hold_at);
                }
                min(self.end_at);
            }
            Phase::Stopping => min(self.stop_wait),
            _ => {}
        }
        d
    }

    /// Runs whatever is due at `now`.
    pub fn on_timer(
        &mut self,
        now: Instant,
        cfg: &CallConfig,
        tally: &mut Tally,
        out: &mut Vec<Output>,
    ) {
        if let Some(tx) = &mut self.tx {
            if tx.deadline <= now {
                let method = tx.method.clone();
                let target = tx.target;
                self.tx = None;
                self.tx_timed_out(now, cfg, method, target, tally, out);
                return;
            }
            if let Some(at) = tx.next_retx
                && at <= now
            {
                out.push(Output::Send {
                    target: tx.target,
                    data: tx.data.clone(),
                });
                tally.retransmissions += 1;
                tx.next_retx = Some(now + tx.interval);
                tx.interval = (tx.interval * 2).min(T2);
            }
        }
        match self.phase {
            Phase::Confirmed => {
                if self.end_at.is_some_and(|t| t <= now) {
                    self.stop_media(now, out);
                } else if !self.held() && self.hold_at.is_some_and(|t| t <= now) {
                    self.hold_at = None;
                    self.reinvite(now, cfg, true, out);
                } else if self.held() && self.resume_at.is_some_and(|t| t <= now) {
                    self.resume_at = None;
                    self.reinvite(now, cfg, false, out);
                }
            }
            Phase::Stopping if self.stop_wait.is_some_and(|t| t <= now) => {
                self.bye(now, cfg, out);
            }
            _ => {}
        }
    }

    /// Ends the call early (Ctrl-C, deadline): media stops and BYE follows; an unanswered
    /// call is abandoned.
    pub fn shutdown(&mut self, now: Instant, tally: &mut Tally, out: &mut Vec<Output>) {
        match self.phase {
            Phase::Confirmed | Phase::ReInviting { .. } => {
                self.end_at = Some(now);
                if matches!(self.phase, Phase::ReInviting { .. }) {
                    self.tx = None;
                    self.phase = Phase::Confirmed;
                }
                self.stop_media(now, out);
            }
            Phase::NeedTarget => self.finish(Err(Failure::Interrupted), tally),
            // Let the answer come, so a 200 is ACKed and ended with BYE at once rather than
            // left open at the SRS; no further target is tried.
            Phase::Inviting => self.ending = true,
            Phase::Stopping | Phase::Byeing | Phase::Done => {}
        }
    }

    /// The run's hard deadline passed: whatever is still open fails.
    pub fn abandon(&mut self, tally: &mut Tally) {
        if !self.is_done() {
            self.tx = None;
            self.finish(Err(Failure::Deadline), tally);
        }
    }

    /// The RTP sender confirmed that stream `id` stopped after `packets` packets.
    pub fn on_stream_stopped(
        &mut self,
        now: Instant,
        cfg: &CallConfig,
        packets: u64,
        tally: &mut Tally,
        out: &mut Vec<Output>,
    ) {
        tally.rtp_packets_confirmed += packets;
        self.streams_running = self.streams_running.saturating_sub(1);
        if self.streams_running == 0 && self.phase == Phase::Stopping {
            if cfg.bye_delay.is_zero() {
                self.bye(now, cfg, out);
            } else {
                self.stop_wait = Some(now + cfg.bye_delay);
            }
        }
    }

    /// The transport to `target` failed (refused, ICMP unreachable, reset). The caller holds
    /// the target down; the call moves on to its next candidate.
    pub fn on_transport_error(
        &mut self,
        now: Instant,
        cfg: &CallConfig,
        target: SocketAddr,
        tally: &mut Tally,
        out: &mut Vec<Output>,
    ) {
        if self.target != Some(target) {
            return;
        }
        match self.phase {
            Phase::Inviting => {
                // The driver holds the target down: the socket failed for every call on it.
                self.tx = None;
                self.last_failure = Some(Failure::Transport);
                self.phase = Phase::NeedTarget;
            }
            Phase::ReInviting { .. } | Phase::Byeing => {
                if let Some(tx) = self.tx.take() {
                    self.tx_timed_out(now, cfg, tx.method, target, tally, out);
                }
            }
            _ => {}
        }
    }

    /// A request from the SRS inside this call (BYE, OPTIONS ...): answered 200; a BYE ends
    /// the call.
    pub fn on_request(
        &mut self,
        from: SocketAddr,
        req: &Request,
        tally: &mut Tally,
        out: &mut Vec<Output>,
    ) {
        if req.method == Method::Ack {
            return;
        }
        let resp = Response::for_request(req, 200, "");
        out.push(Output::Send {
            target: from,
            data: resp.encode(),
        });
        if req.method == Method::Bye && !self.is_done() {
            for k in 0..2 {
                out.push(Output::Rtp(StreamCommand::Stop(self.stream_id(k))));
            }
            self.tx = None;
            self.finish(Err(Failure::RemoteBye), tally);
        }
    }

    /// A response to one of this call's requests, from `from`.
    pub fn on_response(
        &mut self,
        now: Instant,
        cfg: &CallConfig,
        from: SocketAddr,
        resp: &Response,
        tally: &mut Tally,
        out: &mut Vec<Output>,
    ) {
        let Some(cseq) = resp.headers.get("CSeq").and_then(|v| CSeq::parse(v).ok()) else {
            return;
        };
        let branch = resp
            .headers
            .get("Via")
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let current = self.tx.as_ref().is_some_and(|tx| {
            tx.branch == branch && tx.cseq == cseq.seq && tx.method == cseq.method
        });
        if !current {
            self.on_late_response(cfg, from, &cseq, &branch, resp, tally, out);
            return;
        }
        if resp.status < 200 {
            if let Some(tx) = &mut self.tx
                && tx.method == Method::Invite
            {
                // RFC 3261 §17.1.1.2: a provisional stops INVITE retransmissions.
                tx.next_retx = None;
            }
            return;
        }
        let Some(tx) = self.tx.take() else {
            return;
        };
        match (self.phase, &tx.method) {
            (Phase::Inviting, Method::Invite) => {
                *tally.responses.entry(resp.status).or_default() += 1;
                self.on_invite_final(now, cfg, tx, resp, tally, out);
            }
            (Phase::ReInviting { hold }, Method::Invite) => {
                *tally.reinvite_responses.entry(resp.status).or_default() += 1;
                self.ack(cfg, &tx, resp, out);
                if (200..300).contains(&resp.status) {
                    tally.hold_ok += 1;
                } else {
                    tally.hold_failed += 1;
                    self.flaw = Some(Failure::Hold);
                }
                if !hold {
                    // Media goes on after a resume even if the SRS refused it: the call's
                    // media is the caller's, not the recorder's, to stop.
                    for k in 0..2 {
                        out.push(Output::Rtp(StreamCommand::Resume(self.stream_id(k))));
                    }
                }
                self.phase = Phase::Confirmed;
                self.on_timer(now, cfg, tally, out);
            }
            (Phase::Byeing, Method::Bye) => {
                if (200..300).contains(&resp.status) {
                    tally.bye_ok += 1;
                    let result = match self.flaw.take() {
                        Some(f) => Err(f),
                        None => Ok(()),
                    };
                    self.finish(result, tally);
                } else {
                    tally.bye_failed += 1;
                    self.finish(Err(Failure::Bye), tally);
                }
            }
            _ => {}
        }
    }

    fn on_invite_final(
        &mut self,
        now: Instant,
        cfg: &CallConfig,
        tx: ClientTx,
        resp: &Response,
        tally: &mut Tally,
        out: &mut Vec<Output>,
    ) {
        let target = tx.target;
        if !(200..300).contains(&resp.status) {
            self.ack(cfg, &tx, resp, out);
            if resp.status == 503 {
                let retry_after = resp
                    .headers
                    .get("Retry-After")
                    .and_then(|v| v.split([';', '(', ' ']).next())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                out.push(Output::TargetFailed {
                    target,
                    retry_after,
                });
                self.last_failure = Some(Failure::Status(503));
                self.phase = Phase::NeedTarget;
            } else {
                // A definite answer from a live server: no other target would say otherwise.
                out.push(Output::TargetOk { target });
                self.finish(Err(Failure::Status(resp.status)), tally);
            }
            return;
        }
        out.push(Output::TargetOk { target });
        *tally.by_target.entry(target).or_default() += 1;
        if let Some(t0) = self.invite_started {
            tally.setup.push(now.saturating_duration_since(t0));
        }
        self.to_tag = resp
            .headers
            .get("To")
            .and_then(|v| NameAddr::parse(v).ok())
            .and_then(|n| n.tag().map(str::to_string));
        self.remote_uri = resp
            .headers
            .get("Contact")
            .and_then(|v| NameAddr::parse(v).ok())
            .map(|n| n.uri);
        self.ack(cfg, &tx, resp, out);
        let dests = body::answer_destinations(&resp.body, target.ip());
        self.streams_running = 0;
        for (k, dest) in dests.iter().take(2).enumerate() {
            let Some(dest) = dest else { continue };
            let spec = StreamSpec::new(*dest, rand::random(), TONES[k]).with_codec(cfg.codec);
            out.push(Output::Rtp(StreamCommand::Add {
                id: self.stream_id(k as u64),
                spec: Box::new(spec),
            }));
            self.streams_running += 1;
        }
        self.end_at = Some(if self.ending { now } else { now + cfg.duration });
        if cfg.hold && !self.ending {
            self.hold_at = Some(now + cfg.duration / 3);
            self.resume_at = Some(now + cfg.duration * 2 / 3);
        }
        self.phase = Phase::Confirmed;
    }

    /// A response that is not for the transaction in flight: a retransmitted 2xx (ACK
    /// again), or an answer to an attempt this call already gave up on.
    #[allow(clippy::too_many_arguments)]
    fn on_late_response(
        &mut self,
        cfg: &CallConfig,
        from: SocketAddr,
        cseq: &CSeq,
        branch: &str,
        resp: &Response,
        tally: &mut Tally,
        out: &mut Vec<Output>,
    ) {
        if cseq.method != Method::Invite || resp.status < 200 {
            return;
        }
        let to = resp.headers.get("To").unwrap_or("");
        let tag = NameAddr::parse(to)
            .ok()
            .and_then(|n| n.tag().map(str::to_string));
        let ours = branch == self.invite_branch && Some(from) == self.target;
        if (200..300).contains(&resp.status) {
            // ACK for 2xx is end to end with its own branch (RFC 3261 §13.2.2.4).
            let ack = self.request_to(
                cfg,
                from,
                "ACK",
                &new_branch(),
                cseq.seq,
                tag.as_deref(),
                "",
                b"",
            );
            out.push(Output::Send {
                target: from,
                data: ack,
            });
            if !ours && cseq.seq == self.invite_cseq {
                tally.stray_answers += 1;
                let bye = self.request_to(
                    cfg,
                    from,
                    "BYE",
                    &new_branch(),
                    cseq.seq + 1,
                    tag.as_deref(),
                    "",
                    b"",
                );
                out.push(Output::Send {
                    target: from,
                    data: bye,
                });
            }
        } else {
            // A retransmitted non-2xx final: ACK it again, hop by hop on its branch.
            let ack = self.request_to(cfg, from, "ACK", branch, cseq.seq, tag.as_deref(), "", b"");
            out.push(Output::Send {
                target: from,
                data: ack,
            });
        }
    }

    fn tx_timed_out(
        &mut self,
        now: Instant,
        cfg: &CallConfig,
        method: Method,
        target: SocketAddr,
        tally: &mut Tally,
        out: &mut Vec<Output>,
    ) {
        match self.phase {
            Phase::Inviting => {
                self.last_failure = Some(Failure::Timeout);
                out.push(Output::TargetFailed {
                    target,
                    retry_after: None,
                });
                self.phase = Phase::NeedTarget;
            }
            Phase::ReInviting { hold } => {
                tally.hold_failed += 1;
                self.flaw = Some(Failure::Hold);
                if !hold {
                    for k in 0..2 {
                        out.push(Output::Rtp(StreamCommand::Resume(self.stream_id(k))));
                    }
                }
                self.phase = Phase::Confirmed;
                self.on_timer(now, cfg, tally, out);
            }
            Phase::Byeing if method == Method::Bye => {
                tally.bye_failed += 1;
                self.finish(Err(Failure::Bye), tally);
            }
            _ => {}
        }
    }

    fn reinvite(&mut self, now: Instant, cfg: &CallConfig, hold: bool, out: &mut Vec<Output>) {
        let (Some(local), Some(_)) = (self.local, self.target) else {
            return;
        };
        if hold {
            for k in 0..2 {
                out.push(Output::Rtp(StreamCommand::Pause(self.stream_id(k))));
            }
        }
        self.sdp_version += 1;
        let dir = if hold {
            Direction::Inactive
        } else {
            Direction::SendOnly
        };
        let sdp = body::offer(
            cfg.flavour,
            cfg.codec,
            local.ip(),
            cfg.rtp_port_for(local.ip()),
            self.sdp_session,
            self.sdp_version,
            dir,
        );
        self.cseq += 1;
        let branch = new_branch();
        let data = self.request(
            cfg,
            "INVITE",
            &branch,
            self.cseq,
            true,
            "Content-Type: application/sdp\r\n",
            sdp.as_bytes(),
        );
        self.send_tx(now, cfg, Method::Invite, self.cseq, branch, data, out);
        self.phase = Phase::ReInviting { hold };
    }

    fn stop_media(&mut self, now: Instant, out: &mut Vec<Output>) {
        for k in 0..2 {
            out.push(Output::Rtp(StreamCommand::Stop(self.stream_id(k))));
        }
        self.phase = Phase::Stopping;
        self.stop_wait = Some(now + STOP_WAIT);
        if self.streams_running == 0 {
            // Nothing was started (every stream rejected): BYE at once on the next timer.
            self.stop_wait = Some(now);
        }
    }

    fn bye(&mut self, now: Instant, cfg: &CallConfig, out: &mut Vec<Output>) {
        self.stop_wait = None;
        self.cseq += 1;
        let branch = new_branch();
        let data = self.request(cfg, "BYE", &branch, self.cseq, true, "", b"");
        self.send_tx(now, cfg, Method::Bye, self.cseq, branch, data, out);
        self.phase = Phase::Byeing;
    }

    #[allow(clippy::too_many_arguments)]
    fn send_tx(
        &mut self,
        now: Instant,
        cfg: &CallConfig,
        method: Method,
        cseq: u32,
        branch: String,
        data: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        let Some(target) = self.target else {
            return;
        };
        let initial = method == Method::Invite && self.to_tag.is_none();
        let deadline = now
            + if initial {
                cfg.failover_timeout
            } else {
                64 * T1
            };
        out.push(Output::Send {
            target,
            data: data.clone(),
        });
        self.tx = Some(ClientTx {
            method,
            cseq,
            branch,
            data,
            target,
            next_retx: (!cfg.transport.reliable()).then(|| now + T1),
            interval: (2 * T1).min(T2),
            deadline,
        });
    }

    /// ACK for a final response to INVITE transaction `tx`: for 2xx a new transaction (own
    /// branch, end to end); for non-2xx part of the INVITE transaction (its branch).
    fn ack(&self, cfg: &CallConfig, tx: &ClientTx, resp: &Response, out: &mut Vec<Output>) {
        let tag = resp
            .headers
            .get("To")
            .and_then(|v| NameAddr::parse(v).ok())
            .and_then(|n| n.tag().map(str::to_string));
        let branch = if (200..300).contains(&resp.status) {
            new_branch()
        } else {
            tx.branch.clone()
        };
        let data = self.request_to(
            cfg,
            tx.target,
            "ACK",
            &branch,
            tx.cseq,
            tag.as_deref(),
            "",
            b"",
        );
        out.push(Output::Send {
            target: tx.target,
            data,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        cfg: &CallConfig,
        method: &str,
        branch: &str,
        cseq: u32,
        in_dialog: bool,
        extra: &str,
        body: &[u8],
    ) -> Vec<u8> {
        let target = self
            .target
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)));
        let tag = if in_dialog { self.to_tag.clone() } else { None };
        self.request_to(
            cfg,
            target,
            method,
            branch,
            cseq,
            tag.as_deref(),
            extra,
            body,
        )
    }

    /// One request's bytes. In-dialog requests (a To tag given) go to the SRS's Contact.
    #[allow(clippy::too_many_arguments)]
    fn request_to(
        &self,
        cfg: &CallConfig,
        target: SocketAddr,
        method: &str,
        branch: &str,
        cseq: u32,
        to_tag: Option<&str>,
        extra: &str,
        body: &[u8],
    ) -> Vec<u8> {
        let local = self
            .local
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let initial_uri = format!("sip:srs@{target}");
        // Inside our dialog the Request-URI is the SRS's Contact (RFC 3261 §12.2.1.1); the
        // ACK of a non-2xx and anything for an abandoned attempt use the initial one.
        let in_dialog = to_tag.is_some() && to_tag == self.to_tag.as_deref();
        let uri = match &self.remote_uri {
            Some(u) if in_dialog => u.clone(),
            _ => initial_uri.clone(),
        };
        let to = match to_tag {
            Some(t) => format!("<{initial_uri}>;tag={t}"),
            None => format!("<{initial_uri}>"),
        };
        let transport = cfg.transport.via_name();
        let contact_transport = transport.to_ascii_lowercase();
        let mut head = format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"{name}\" <sip:src@{ip}>;tag={from_tag}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:src@{local};transport={contact_transport}>;{param}\r\n\
             User-Agent: reel-load\r\n\
             {extra}\
             Content-Length: {len}\r\n\r\n",
            name = self.parties.caller_name,
            ip = host(local),
            from_tag = self.from_tag,
            call_id = self.call_id,
            param = cfg.flavour.contact_param(),
            len = body.len(),
        )
        .into_bytes();
        head.extend_from_slice(body);
        head
    }

    fn finish(&mut self, result: Result<(), Failure>, tally: &mut Tally) {
        if self.outcome.is_some() {
            return;
        }
        match &result {
            Ok(()) => tally.calls_ok += 1,
            Err(f) => {
                tally.calls_failed += 1;
                *tally.failures.entry(f.key()).or_default() += 1;
            }
        }
        self.outcome = Some(result);
        self.phase = Phase::Done;
    }
}

fn host(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => v.ip().to_string(),
        SocketAddr::V6(v) => format!("[{}]", v.ip()),
    }
}

/// A fresh RFC 3261 branch (magic cookie + 64 random bits).
fn new_branch() -> String {
    format!("z9hG4bK-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse_message;
    use crate::sip::{Message, Request};

    fn cfg(transport: Transport, hold: bool) -> CallConfig {
        CallConfig {
            transport,
            codec: Codec::Pcmu,
            flavour: Flavour::Rfc7865,
            duration: Duration::from_secs(3),
            hold,
            failover_timeout: Duration::from_secs(2),
            rtp_port: 40000,
            rtp_port_v6: 40002,
            bye_delay: Duration::ZERO,
        }
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn sent(out: &mut Vec<Output>) -> Vec<(SocketAddr, Request)> {
        let mut v = Vec::new();
        out.retain(|o| match o {
            Output::Send { target, data } => {
                if let Ok(Message::Request(r)) = parse_message(data) {
                    v.push((*target, r));
                }
                false
            }
            _ => true,
        });
        v
    }

    fn answer(req: &Request, status: u16, body: &str) -> Response {
        let mut r = Response::for_request(req, status, "");
        let to = format!("{};tag=srs1", req.headers.get("To").unwrap());
        r.headers.set("To", to);
        r.headers
            .push("Contact", "<sip:srs@127.0.0.1:5060>;+sip.srs");
        r.body = body.as_bytes().to_vec();
        r
    }

    const ANSWER: &str =
        "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 20000 RTP/AVP 0\r\nm=audio 20002 RTP/AVP 0\r\n";

    fn started(call: &mut Call, c: &CallConfig, now: Instant, tally: &mut Tally) -> Request {
        let mut out = Vec::new();
        let t = call.take_candidate().unwrap();
        call.attempt(now, c, t, a("127.0.0.1:40001"), tally, &mut out);
        let mut reqs = sent(&mut out);
        assert_eq!(reqs.len(), 1);
        reqs.remove(0).1
    }

    #[test]
    fn the_offer_names_the_rtp_port_of_the_targets_address_family() {
        // The RTP sender's IPv4 and IPv6 sockets have ports of their own.
        let c = cfg(Transport::Udp, false);
        for (target, local, port) in [
            ("127.0.0.1:5060", "127.0.0.1:40001", c.rtp_port),
            ("[::1]:5060", "[::1]:40001", c.rtp_port_v6),
        ] {
            let mut call = Call::new(1, vec![a(target)], SystemTime::now());
            let mut out = Vec::new();
            let t = call.take_candidate().unwrap();
            call.attempt(
                Instant::now(),
                &c,
                t,
                a(local),
                &mut Tally::default(),
                &mut out,
            );
            let inv = sent(&mut out).remove(0).1;
            let body = String::from_utf8_lossy(&inv.body);
            assert!(
                body.contains(&format!("m=audio {port} ")),
                "{target}: {body}"
            );
        }
    }

    #[test]
    fn invite_is_a_siprec_request_that_parses() {
        let c = cfg(Transport::Udp, false);
        let mut call = Call::new(1, vec![a("127.0.0.1:5060")], SystemTime::now());
        let mut tally = Tally::default();
        let inv = started(&mut call, &c, Instant::now(), &mut tally);
        assert_eq!(inv.method, Method::Invite);
        assert!(inv.headers.has_token("Require", "siprec"));
        assert!(
            inv.headers
                .get("Content-Type")
                .unwrap()
                .starts_with("multipart/mixed")
        );
        assert!(inv.validate().is_ok(), "{:?}", inv.validate());
    }

    #[test]
    fn udp_invite_retransmits_until_provisional_then_fails_over_at_timeout() {
        let c = cfg(Transport::Udp, false);
        let t0 = Instant::now();
        let mut call = Call::new(
            1,
            vec![a("127.0.0.1:5060"), a("127.0.0.1:5070")],
            SystemTime::now(),
        );
        let mut tally = Tally::default();
        let inv = started(&mut call, &c, t0, &mut tally);
        let mut out = Vec::new();
        call.on_timer(t0 + T1, &c, &mut tally, &mut out);
        assert_eq!(sent(&mut out).len(), 1, "retransmit at T1");
        call.on_timer(
            t0 + T1 + Duration::from_millis(600),
            &c,
            &mut tally,
            &mut out,
        );
        assert!(sent(&mut out).is_empty(), "next one at 3*T1, not before");
        call.on_timer(t0 + 3 * T1, &c, &mut tally, &mut out);
        assert_eq!(sent(&mut out).len(), 1, "retransmit at 3*T1");
        let trying = Response::for_request(&inv, 100, "");
        call.on_response(
            t0 + 3 * T1,
            &c,
            a("127.0.0.1:5060"),
            &trying,
            &mut tally,
            &mut out,
        );
        assert_eq!(call.deadline(), Some(t0 + c.failover_timeout));
        call.on_timer(t0 + c.failover_timeout, &c, &mut tally, &mut out);
        assert_eq!(call.phase, Phase::NeedTarget);
        assert!(matches!(
            out[0],
            Output::TargetFailed {
                retry_after: None,
                ..
            }
        ));
        assert_eq!(tally.retransmissions, 2);
    }

    #[test]
    fn tcp_never_retransmits() {
        let c = cfg(Transport::Tcp, false);
        let t0 = Instant::now();
        let mut call = Call::new(1, vec![a("127.0.0.1:5060")], SystemTime::now());
        let mut tally = Tally::default();
        started(&mut call, &c, t0, &mut tally);
        let mut out = Vec::new();
        call.on_timer(t0 + Duration::from_millis(1900), &c, &mut tally, &mut out);
        assert!(sent(&mut out).is_empty());
    }

    #[test]
    fn status_503_fails_over_with_retry_after_and_acks_on_the_invite_branch() {
        let c = cfg(Transport::Udp, false);
        let t0 = Instant::now();
        let mut call = Call::new(
            1,
            vec![a("127.0.0.1:5060"), a("127.0.0.1:5070")],
            SystemTime::now(),
        );
        let mut tally = Tally::default();
        let inv = started(&mut call, &c, t0, &mut tally);
        let mut r = answer(&inv, 503, "");
        r.headers.push("Retry-After", "5 (full)");
        let mut out = Vec::new();
        call.on_response(t0, &c, a("127.0.0.1:5060"), &r, &mut tally, &mut out);
        let acks = sent(&mut out);
        assert_eq!(acks[0].1.method, Method::Ack);
        assert_eq!(
            Via::parse(acks[0].1.headers.get("Via").unwrap())
                .unwrap()
                .branch(),
            Via::parse(inv.headers.get("Via").unwrap())
                .unwrap()
                .branch()
        );
        assert!(matches!(
            out[0],
            Output::TargetFailed { retry_after: Some(d), .. } if d == Duration::from_secs(5)
        ));
        assert_eq!(call.phase, Phase::NeedTarget);
        // Next target: same Call-ID, new branch.
        let t = call.take_candidate().unwrap();
        call.attempt(t0, &c, t, a("127.0.0.1:40001"), &mut tally, &mut out);
        let inv2 = sent(&mut out).remove(0).1;
        assert_eq!(inv2.headers.get("Call-ID"), inv.headers.get("Call-ID"));
        assert_ne!(inv2.headers.get("Via"), inv.headers.get("Via"));
        assert_eq!(tally.failovers, 1);
        assert_eq!(tally.responses.get(&503), Some(&1));
    }

    #[test]
    fn whole_call_with_hold() {
        let c = cfg(Transport::Udp, true);
        let t0 = Instant::now();
        let srs = a("127.0.0.1:5060");
        let mut call = Call::new(3, vec![srs], SystemTime::now());
        let mut tally = Tally::default();
        let inv = started(&mut call, &c, t0, &mut tally);
        let mut out = Vec::new();
        call.on_response(
            t0,
            &c,
            srs,
            &answer(&inv, 200, ANSWER),
            &mut tally,
            &mut out,
        );
        let adds = out
            .iter()
            .filter(|o| matches!(o, Output::Rtp(StreamCommand::Add { .. })))
            .count();
        assert_eq!(adds, 2);
        let ack = sent(&mut out);
        assert_eq!(ack[0].1.method, Method::Ack);
        assert!(ack[0].1.headers.get("To").unwrap().contains("tag=srs1"));
        assert_eq!(call.phase, Phase::Confirmed);
        out.clear();
        // Hold at 1/3.
        call.on_timer(t0 + Duration::from_secs(1), &c, &mut tally, &mut out);
        let re = sent(&mut out).remove(0).1;
        assert_eq!(re.method, Method::Invite);
        assert_eq!(
            String::from_utf8_lossy(&re.body)
                .matches("a=inactive")
                .count(),
            2
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Rtp(StreamCommand::Pause(6))))
        );
        out.clear();
        call.on_response(
            t0 + Duration::from_secs(1),
            &c,
            srs,
            &answer(&re, 200, ANSWER),
            &mut tally,
            &mut out,
        );
        out.clear();
        // Resume at 2/3.
        call.on_timer(t0 + Duration::from_secs(2), &c, &mut tally, &mut out);
        let re2 = sent(&mut out).remove(0).1;
        assert!(String::from_utf8_lossy(&re2.body).contains("a=sendonly"));
        call.on_response(
            t0 + Duration::from_secs(2),
            &c,
            srs,
            &answer(&re2, 200, ANSWER),
            &mut tally,
            &mut out,
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Rtp(StreamCommand::Resume(7))))
        );
        out.clear();
        // End: stop streams, BYE after both stopped.
        call.on_timer(t0 + Duration::from_secs(3), &c, &mut tally, &mut out);
        assert_eq!(call.phase, Phase::Stopping);
        assert!(
            sent(&mut out).is_empty(),
            "no BYE before the streams stopped"
        );
        call.on_stream_stopped(t0 + Duration::from_secs(3), &c, 100, &mut tally, &mut out);
        call.on_stream_stopped(t0 + Duration::from_secs(3), &c, 100, &mut tally, &mut out);
        let bye = sent(&mut out).remove(0).1;
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(
            CSeq::parse(bye.headers.get("CSeq").unwrap()).unwrap().seq,
            4
        );
        call.on_response(
            t0 + Duration::from_secs(3),
            &c,
            srs,
            &answer(&bye, 200, ""),
            &mut tally,
            &mut out,
        );
        assert_eq!(call.outcome, Some(Ok(())));
        assert_eq!((tally.calls_ok, tally.hold_ok, tally.bye_ok), (1, 2, 1));
        assert_eq!(tally.rtp_packets_confirmed, 200);
    }

    #[test]
    fn bye_waits_for_the_delay_after_the_last_packet() {
        let mut c = cfg(Transport::Udp, false);
        c.bye_delay = Duration::from_millis(100);
        let t0 = Instant::now();
        let srs = a("127.0.0.1:5060");
        let mut call = Call::new(1, vec![srs], SystemTime::now());
        let mut tally = Tally::default();
        let inv = started(&mut call, &c, t0, &mut tally);
        let mut out = Vec::new();
        call.on_response(
            t0,
            &c,
            srs,
            &answer(&inv, 200, ANSWER),
            &mut tally,
            &mut out,
        );
        out.clear();
        let end = t0 + c.duration;
        call.on_timer(end, &c, &mut tally, &mut out);
        call.on_stream_stopped(end, &c, 1, &mut tally, &mut out);
        call.on_stream_stopped(end, &c, 1, &mut tally, &mut out);
        assert!(sent(&mut out).is_empty(), "no BYE yet");
        assert_eq!(call.deadline(), Some(end + c.bye_delay));
        call.on_timer(end + c.bye_delay, &c, &mut tally, &mut out);
        assert_eq!(sent(&mut out).remove(0).1.method, Method::Bye);
    }

    #[test]
    fn stray_2xx_from_abandoned_attempt_is_acked_and_ended() {
        let c = cfg(Transport::Udp, false);
        let t0 = Instant::now();
        let (first, second) = (a("127.0.0.1:5060"), a("127.0.0.1:5070"));
        let mut call = Call::new(1, vec![first, second], SystemTime::now());
        let mut tally = Tally::default();
        let inv = started(&mut call, &c, t0, &mut tally);
        let mut out = Vec::new();
        call.on_timer(t0 + c.failover_timeout, &c, &mut tally, &mut out);
        out.clear();
        let t = call.take_candidate().unwrap();
        call.attempt(t0, &c, t, a("127.0.0.1:40001"), &mut tally, &mut out);
        out.clear();
        call.on_response(
            t0,
            &c,
            first,
            &answer(&inv, 200, ANSWER),
            &mut tally,
            &mut out,
        );
        let reqs = sent(&mut out);
        let methods: Vec<_> = reqs.iter().map(|(t, r)| (*t, r.method.clone())).collect();
        assert_eq!(methods, vec![(first, Method::Ack), (first, Method::Bye)]);
        assert_eq!(tally.stray_answers, 1);
        assert_eq!(call.phase, Phase::Inviting);
    }

    #[test]
    fn junk_responses_do_not_panic() {
        let c = cfg(Transport::Udp, false);
        let t0 = Instant::now();
        let mut call = Call::new(1, vec![a("127.0.0.1:5060")], SystemTime::now());
        let mut tally = Tally::default();
        let inv = started(&mut call, &c, t0, &mut tally);
        let mut out = Vec::new();
        let mut r = answer(&inv, 200, "m=audio x\r\nc=IN");
        r.headers.set("CSeq", "garbage");
        call.on_response(t0, &c, a("127.0.0.1:5060"), &r, &mut tally, &mut out);
        r.headers.set("CSeq", "1 INVITE");
        r.headers.remove("Via");
        call.on_response(t0, &c, a("127.0.0.1:5060"), &r, &mut tally, &mut out);
        assert_eq!(call.phase, Phase::Inviting);
    }
}
