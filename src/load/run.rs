//! `reel load`: the run. Starts calls at a rate up to a concurrency, gives each its targets
//! from the RFC 2782 [`Selector`] (also for a fixed `--target`), drives every
//! [`Call`] on one SIP thread over non-blocking sockets, and the RTP on one sender thread
//! ([`Sender::dynamic`]); then reports.
//!
//! Owns: one connected UDP socket per target (so an ICMP port unreachable comes back as
//! ECONNREFUSED on it: a transport error, i.e. failover) or one TCP connection per target with
//! Content-Length framing (refused or reset: failover); hold-down bookkeeping (a 503's
//! Retry-After shortens the hold-down, capped at `--holddown-s`); the overall deadline; the
//! Ctrl-C/SIGTERM flag; progress on stderr once a second; the [`LoadReport`].
//!
//! Must not: send anywhere but the selector's targets and the RTP addresses their answers
//! name, run without a deadline, or panic on anything a server sends.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::body::Flavour;
use super::call::{Call, CallConfig, Output, Phase, Tally, Transport};
use super::rtp_send::{Codec, SendConfig, SendReport, Sender, StreamEvent};
use crate::sip::framing::Frame;
use crate::sip::message::parse_message;
use crate::sip::{Message, Response, StreamFramer};
use crate::srv::resolve::SrvResolver;
use crate::srv::{HoldDown, Resolved, Selector};

/// Where calls go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// `--target` (repeatable): tried in the order given (priorities 0, 1, ...).
    Fixed(Vec<SocketAddr>),
    /// `--srv NAME [--dns ADDR:PORT]`.
    Srv {
        name: String,
        dns: Option<SocketAddr>,
    },
}

/// Everything `reel load` was asked to do.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub targets: Targets,
    pub calls: u64,
    pub concurrency: u64,
    /// New calls per second.
    pub rate: f64,
    pub duration: Duration,
    pub transport: Transport,
    pub codec: Codec,
    pub flavour: Flavour,
    pub hold: bool,
    pub failover_timeout: Duration,
    pub holddown: Duration,
    /// See [`CallConfig::bye_delay`].
    pub bye_delay: Duration,
    /// Progress lines on stderr once a second.
    pub progress: bool,
}

/// Set by SIGINT/SIGTERM: end every call with BYE and stop.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Routes SIGINT and SIGTERM to [`INTERRUPTED`].
pub fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the handler
    // value is a valid `extern "C" fn(c_int)` for the process's lifetime.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// The one place `--srv` is resolved (and refreshed when its TTL runs out): RFC 2782 order
/// is drawn per call by the [`Selector`]; this only fetches the records and addresses.
/// Targets whose addresses could not be found are left out and named on stderr.
pub fn resolve_srv(name: &str, dns: Option<SocketAddr>) -> Result<Resolved, String> {
    let resolver = SrvResolver::new(dns).map_err(|e| format!("--srv {name}: {e}"))?;
    let answer = resolver
        .lookup_detailed_blocking(name)
        .map_err(|e| format!("--srv {name}: {e}"))?;
    for w in &answer.warnings {
        eprintln!("reel load: --srv {name}: target {w}: left out");
    }
    Ok(answer.resolved)
}

/// How long a run may take at most; nothing runs past it. One call: every target's
/// failover timeout, its media, the BYE delay and a few seconds for re-INVITEs and BYE.
/// Calls start at `interval` and in waves of `concurrency`; the last one gets 40 s more for
/// a BYE that is retransmitted to its timeout.
fn run_bound(opts: &LoadOptions, targets: usize, interval: Duration) -> Duration {
    let per_call = opts.failover_timeout * targets.min(16) as u32
        + opts.duration
        + opts.bye_delay
        + Duration::from_secs(2);
    let waves = opts.calls.div_ceil(opts.concurrency.max(1));
    let by_rate = interval.mul_f64(opts.calls as f64);
    let by_waves = per_call.mul_f64(waves.saturating_sub(1) as f64);
    by_rate.max(by_waves) + per_call + Duration::from_secs(40)
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub tally: Tally,
    pub rtp: SendReport,
    pub calls_attempted: u64,
    /// `--calls`: a run interrupted before starting them all did not succeed.
    pub calls_requested: u64,
    pub elapsed: Duration,
    pub interrupted: bool,
    pub transport: Transport,
    pub codec: Codec,
    pub flavour: Flavour,
}

impl LoadReport {
    /// Every call succeeded.
    pub fn all_ok(&self) -> bool {
        self.tally.calls_failed == 0 && self.tally.calls_ok == self.calls_requested
    }

    /// Setup time percentile in ms (nearest rank), 0 with no answered call.
    pub fn setup_ms(&self, pct: f64) -> f64 {
        let mut v: Vec<f64> = self
            .tally
            .setup
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((pct / 100.0) * v.len() as f64).ceil() as usize;
        let x = v[rank.clamp(1, v.len()) - 1];
        (x * 10.0).round() / 10.0
    }

    pub fn to_json(&self) -> serde_json::Value {
        let t = &self.tally;
        let by_status = |m: &BTreeMap<u16, u64>| -> serde_json::Map<String, serde_json::Value> {
            m.iter()
                .map(|(k, v)| (k.to_string(), (*v).into()))
                .collect()
        };
        let by_target: serde_json::Map<String, serde_json::Value> = t
            .by_target
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        let failures: serde_json::Map<String, serde_json::Value> = t
            .failures
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        let secs = self.rtp.elapsed.as_secs_f64().max(1e-9);
        serde_json::json!({
            "calls_attempted": self.calls_attempted,
            "calls_ok": t.calls_ok,
            "calls_failed": t.calls_failed,
            "failures": failures,
            "responses": by_status(&t.responses),
            "reinvite_responses": by_status(&t.reinvite_responses),
            "by_target": by_target,
            "failovers": t.failovers,
            "bye_ok": t.bye_ok,
            "bye_failed": t.bye_failed,
            "hold_ok": t.hold_ok,
            "hold_failed": t.hold_failed,
            "retransmissions": t.retransmissions,
            "stray_answers": t.stray_answers,
            "rtp_packets_sent": self.rtp.packets_sent,
            "rtp_send_errors": self.rtp.send_errors,
            "rtp_pps": (self.rtp.packets_sent as f64 / secs).round(),
            "rtp_cpu_s": (self.rtp.cpu_time.as_secs_f64() * 1000.0).round() / 1000.0,
            "rtp_max_late_ms": (self.rtp.max_late.as_secs_f64() * 10_000.0).round() / 10.0,
            "setup_ms": {
                "p50": self.setup_ms(50.0),
                "p99": self.setup_ms(99.0),
                "max": self.setup_ms(100.0),
            },
            "duration_s": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "interrupted": self.interrupted,
            "transport": self.transport.via_name().to_ascii_lowercase(),
            "codec": self.codec.name(),
            "flavour": self.flavour.name(),
        })
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let t = &self.tally;
        let list = |m: &BTreeMap<u16, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!(
            "reel load: {} of {} calls ok, {} failed in {:.1} s ({} over {}, {}, {})\n",
            t.calls_ok,
            self.calls_attempted,
            t.calls_failed,
            self.elapsed.as_secs_f64(),
            self.flavour.name(),
            self.transport.via_name(),
            self.codec.name(),
            if self.interrupted {
                "interrupted"
            } else {
                "ran to the end"
            },
        );
        s += &format!("  INVITE answers: {}\n", list(&t.responses));
        if !t.failures.is_empty() {
            let f: Vec<String> = t
                .failures
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            s += &format!("  failures: {}\n", f.join(", "));
        }
        let targets: Vec<String> = t
            .by_target
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        s += &format!(
            "  answered by: {}; failovers {}\n",
            targets.join(", "),
            t.failovers
        );
        s += &format!(
            "  setup ms p50 {} p99 {} max {}\n",
            self.setup_ms(50.0),
            self.setup_ms(99.0),
            self.setup_ms(100.0)
        );
        if t.hold_ok + t.hold_failed > 0 {
            s += &format!(
                "  hold/resume re-INVITEs ok {} failed {} ({})\n",
                t.hold_ok,
                t.hold_failed,
                list(&t.reinvite_responses)
            );
        }
        s += &format!(
            "  BYE ok {} failed {}; UDP retransmissions {}; stray answers {}\n",
            t.bye_ok, t.bye_failed, t.retransmissions, t.stray_answers
        );
        let secs = self.rtp.elapsed.as_secs_f64().max(1e-9);
        s += &format!(
            "  RTP: {} packets sent ({:.0}/s), {} send errors, sender CPU {:.2} s, worst lateness {:?}\n",
            self.rtp.packets_sent,
            self.rtp.packets_sent as f64 / secs,
            self.rtp.send_errors,
            self.rtp.cpu_time.as_secs_f64(),
            self.rtp.max_late
        );
        s
    }
}

/// A TCP connection to one target.
struct TcpConn {
    stream: TcpStream,
    framer: StreamFramer,
    out: Vec<u8>,
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpConn),
}

impl Conn {
    fn fd(&self) -> libc::c_int {
        match self {
            Conn::Udp(s) => s.as_raw_fd(),
            Conn::Tcp(c) => c.stream.as_raw_fd(),
        }
    }
}

/// Sockets by target, and what went wrong on them since the last look.
struct Transports {
    kind: Transport,
    connect_timeout: Duration,
    conns: HashMap<SocketAddr, (Conn, SocketAddr)>,
    errors: Vec<SocketAddr>,
}

const MAX_SIP_MESSAGE: usize = 65_535;
/// Wait after a failed SRV refresh before the next try.
const SRV_RETRY: Duration = Duration::from_secs(5);

impl Transports {
    /// Our address towards `target`, connecting first if need be.
    fn ensure(&mut self, target: SocketAddr) -> io::Result<SocketAddr> {
        if let Some((_, local)) = self.conns.get(&target) {
            return Ok(*local);
        }
        let conn = match self.kind {
            Transport::Udp => {
                let bind = if target.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let s = UdpSocket::bind(bind)?;
                s.connect(target)?;
                s.set_nonblocking(true)?;
                set_buffer(s.as_raw_fd(), libc::SO_RCVBUF, 4 << 20);
                set_buffer(s.as_raw_fd(), libc::SO_SNDBUF, 4 << 20);
                Conn::Udp(s)
            }
            Transport::Tcp => {
                // Blocking connect, bounded: on loopback it answers at once either way.
                let s = TcpStream::connect_timeout(&target, self.connect_timeout)?;
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                Conn::Tcp(TcpConn {
                    stream: s,
                    framer: StreamFramer::new(MAX_SIP_MESSAGE),
                    out: Vec::new(),
                })
            }
        };
        let local = match &conn {
            Conn::Udp(s) => s.local_addr()?,
            Conn::Tcp(c) => c.stream.local_addr()?,
        };
        self.conns.insert(target, (conn, local));
        Ok(local)
    }

    fn send(&mut self, target: SocketAddr, data: &[u8]) {
        // A TCP connection the SRS closed is opened again for the next request (RFC 3261
        // §18.1.1: a client may open a new connection).
        if !self.conns.contains_key(&target) && self.ensure(target).is_err() {
            self.errors.push(target);
            return;
        }
        let Some((conn, _)) = self.conns.get_mut(&target) else {
            self.errors.push(target);
            return;
        };
        match conn {
            Conn::Udp(s) => match s.send(data) {
                Ok(_) => {}
                // A full buffer loses this copy; UDP retransmission covers it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.errors.push(target),
            },
            Conn::Tcp(c) => {
                c.out.extend_from_slice(data);
                if flush(c).is_err() {
                    self.close(target);
                }
            }
        }
    }

    fn close(&mut self, target: SocketAddr) {
        self.conns.remove(&target);
        self.errors.push(target);
    }

    /// Every message waiting on every socket, with the target it came from.
    fn receive(&mut self, buf: &mut [u8], got: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let mut dead = Vec::new();
        for (target, (conn, _)) in self.conns.iter_mut() {
            match conn {
                Conn::Udp(s) => loop {
                    match s.recv(buf) {
                        Ok(n) => got.push((*target, buf[..n].to_vec())),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            // ECONNREFUSED: an ICMP error for something we sent there.
                            self.errors.push(*target);
                            break;
                        }
                    }
                },
                Conn::Tcp(c) => {
                    let mut closed = flush(c).is_err();
                    while !closed {
                        match c.stream.read(buf) {
                            Ok(0) => closed = true,
                            Ok(n) => c.framer.push(&buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => closed = true,
                        }
                    }
                    loop {
                        match c.framer.next_frame() {
                            Ok(Some(Frame::Message(m))) => got.push((*target, m)),
                            Ok(Some(Frame::Ping)) => c.out.extend_from_slice(b"\r\n"),
                            // An over-size message from the server: nothing to act on.
                            Ok(Some(Frame::TooLarge { .. })) => {}
                            Ok(None) => break,
                            Err(_) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    if closed {
                        dead.push(*target);
                    }
                }
            }
        }
        for t in dead {
            self.close(t);
        }
    }

    fn poll_fds(&self) -> Vec<libc::pollfd> {
        self.conns
            .values()
            .map(|(c, _)| libc::pollfd {
                fd: c.fd(),
                events: libc::POLLIN
                    | match c {
                        Conn::Tcp(t) if !t.out.is_empty() => libc::POLLOUT,
                        _ => 0,
                    },
                revents: 0,
            })
            .collect()
    }
}

fn flush(c: &mut TcpConn) -> io::Result<()> {
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn set_buffer(fd: libc::c_int, opt: libc::c_int, size: libc::c_int) {
    // SAFETY: setsockopt reads one c_int from `&size`, which lives across the call. Best
    // effort: the kernel caps it at its maximum.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The run's state on the SIP thread.
struct Runner<'a> {
    opts: &'a LoadOptions,
    cfg: CallConfig,
    /// Where calls go: the answer in use and the hold-down of targets that failed.
    selector: Selector,
    /// Earliest time for the next SRV refresh attempt.
    next_refresh: Instant,
    /// The answer of a refresh in progress.
    refresh: Option<std::sync::mpsc::Receiver<Result<Resolved, String>>>,
    transports: Transports,
    rtp: super::rtp_send::StreamControl,
    calls: HashMap<u64, Call>,
    by_call_id: HashMap<String, u64>,
    tally: Tally,
    rng: rand::rngs::ThreadRng,
    out: Vec<Output>,
}

impl Runner<'_> {
    /// Carries out what calls asked for until nothing is left, and gives every call that
    /// wants a target its next one.
    fn settle(&mut self, now: Instant, index: u64) {
        loop {
            let outputs = std::mem::take(&mut self.out);
            for o in outputs {
                self.apply(now, o);
            }
            let Some(call) = self.calls.get_mut(&index) else {
                return;
            };
            if call.phase != Phase::NeedTarget {
                if self.out.is_empty() {
                    return;
                }
                continue;
            }
            if call.ending {
                call.fail(&mut self.tally);
                continue;
            }
            match call.take_candidate() {
                None => call.fail(&mut self.tally),
                Some(target) => match self.transports.ensure(target) {
                    Ok(local) => call.attempt(
                        now,
                        &self.cfg,
                        target,
                        local,
                        &mut self.tally,
                        &mut self.out,
                    ),
                    Err(_) => {
                        self.selector.report_failure(target, now);
                        call.note_transport_failure();
                    }
                },
            }
        }
    }

    fn apply(&mut self, now: Instant, o: Output) {
        match o {
            Output::Send { target, data } => self.transports.send(target, &data),
            Output::Rtp(cmd) => {
                let _ = self.rtp.send(cmd);
            }
            Output::TargetFailed {
                target,
                retry_after,
            } => self
                .selector
                .report_failure_retry_after(target, now, retry_after),
            Output::TargetOk { target } => self.selector.report_success(target),
        }
    }

    /// Refreshes the SRV answer when its TTL ran out. The lookup runs on a thread of its own
    /// (a slow or dead DNS server must not stall the calls in flight); new calls use the old
    /// answer until the new one arrives. A failed refresh keeps the old answer (better stale
    /// than no target) and is retried a few seconds later, not once per new call.
    fn refresh_targets(&mut self, now: Instant) {
        if let Some(rx) = &self.refresh {
            match rx.try_recv() {
                Ok(Ok(r)) => {
                    self.selector.update(r);
                    self.refresh = None;
                }
                Ok(Err(e)) => {
                    eprintln!("reel load: SRV refresh failed, keeping the old answer: {e}");
                    self.next_refresh = now + SRV_RETRY;
                    self.refresh = None;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => self.refresh = None,
            }
        }
        if self.refresh.is_none()
            && self.selector.needs_refresh(now)
            && now >= self.next_refresh
            && let Targets::Srv { name, dns } = &self.opts.targets
        {
            let (tx, rx) = std::sync::mpsc::channel();
            let (name, dns) = (name.clone(), *dns);
            let spawned = std::thread::Builder::new()
                .name("reel-load-srv".into())
                .spawn(move || {
                    let _ = tx.send(resolve_srv(&name, dns));
                });
            if spawned.is_ok() {
                self.refresh = Some(rx);
            }
        }
    }

    fn start_call(&mut self, now: Instant, index: u64) {
        self.refresh_targets(now);
        let candidates = self.selector.candidates(now, &mut self.rng);
        let call = Call::new(index, candidates, std::time::SystemTime::now());
        self.by_call_id.insert(call.call_id.clone(), index);
        self.calls.insert(index, call);
        self.settle(now, index);
    }

    fn on_message(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Ok(msg) = parse_message(data) else {
            return;
        };
        let call_id = match &msg {
            Message::Request(r) => r.call_id(),
            Message::Response(r) => r.headers.get("Call-ID"),
        };
        let Some(&index) = call_id.and_then(|c| self.by_call_id.get(c.trim())) else {
            if let Message::Request(r) = &msg
                && r.method != crate::sip::Method::Ack
            {
                let resp = Response::for_request(r, 481, "");
                self.transports.send(from, &resp.encode());
            }
            return;
        };
        let Some(call) = self.calls.get_mut(&index) else {
            return;
        };
        match &msg {
            Message::Response(r) => {
                call.on_response(now, &self.cfg, from, r, &mut self.tally, &mut self.out)
            }
            Message::Request(r) => call.on_request(from, r, &mut self.tally, &mut self.out),
        }
        self.settle(now, index);
    }

    fn on_transport_error(&mut self, now: Instant, target: SocketAddr) {
        self.selector.report_failure(target, now);
        let affected: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.target == Some(target) && !c.is_done())
            .map(|(i, _)| *i)
            .collect();
        for index in affected {
            if let Some(call) = self.calls.get_mut(&index) {
                call.on_transport_error(now, &self.cfg, target, &mut self.tally, &mut self.out);
            }
            self.settle(now, index);
        }
    }

    fn on_rtp_event(&mut self, now: Instant, ev: StreamEvent) {
        let StreamEvent::Stopped { id, report } = ev;
        let index = id / 2;
        if let Some(call) = self.calls.get_mut(&index) {
            call.on_stream_stopped(
                now,
                &self.cfg,
                report.packets,
                &mut self.tally,
                &mut self.out,
            );
            self.settle(now, index);
        }
    }

    fn reap(&mut self) {
        let done: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.is_done())
            .map(|(i, _)| *i)
            .collect();
        for i in done {
            if let Some(c) = self.calls.remove(&i) {
                self.by_call_id.remove(&c.call_id);
            }
        }
    }
}

/// Runs the load and reports. Fails only when the run cannot start (no target, sockets).
pub fn run(opts: &LoadOptions) -> Result<LoadReport, String> {
    let resolved = match &opts.targets {
        Targets::Fixed(addrs) if addrs.is_empty() => return Err("no target".into()),
        Targets::Fixed(addrs) => Resolved::fixed_many(addrs),
        Targets::Srv { name, dns } => resolve_srv(name, *dns)?,
    };
    let selector = Selector::new(resolved, HoldDown::new(opts.holddown));
    let (sender, control) =
        Sender::dynamic(SendConfig::default()).map_err(|e| format!("RTP sender: {e}"))?;
    let rtp_port = sender.local_addr_v4().map_or(0, |a| a.port());
    let rtp_port_v6 = sender.local_addr_v6().map_or(0, |a| a.port());
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(1e-3));
    let bound = run_bound(opts, selector.resolved().addrs.len().max(1), interval);
    let handle = sender
        .spawn(bound + Duration::from_secs(5))
        .map_err(|e| format!("RTP sender thread: {e}"))?;

    let cfg = CallConfig {
        transport: opts.transport,
        codec: opts.codec,
        flavour: opts.flavour,
        duration: opts.duration,
        hold: opts.hold,
        failover_timeout: opts.failover_timeout,
        rtp_port,
        rtp_port_v6,
        bye_delay: opts.bye_delay,
    };
    let mut r = Runner {
        opts,
        cfg,
        selector,
        next_refresh: Instant::now(),
        refresh: None,
        transports: Transports {
            kind: opts.transport,
            connect_timeout: opts.failover_timeout,
            conns: HashMap::new(),
            errors: Vec::new(),
        },
        rtp: control,
        calls: HashMap::new(),
        by_call_id: HashMap::new(),
        tally: Tally::default(),
        rng: rand::rng(),
        out: Vec::new(),
    };

    let start = Instant::now();
    let hard_deadline = start + bound;
    let mut started = 0u64;
    let mut next_start = start;
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_packets = 0u64;
    let mut shutting = false;
    let mut buf = vec![0u8; MAX_SIP_MESSAGE + 1];
    let mut got = Vec::new();
    loop {
        let now = Instant::now();
        if INTERRUPTED.load(Ordering::Relaxed) && !shutting {
            shutting = true;
            let open: Vec<u64> = r.calls.keys().copied().collect();
            for i in open {
                if let Some(c) = r.calls.get_mut(&i) {
                    c.shutdown(now, &mut r.tally, &mut r.out);
                }
                r.settle(now, i);
            }
        }
        if now >= hard_deadline {
            for c in r.calls.values_mut() {
                c.abandon(&mut r.tally);
            }
            break;
        }
        while !shutting
            && started < opts.calls
            && (r.calls.len() as u64) < opts.concurrency
            && next_start <= now
        {
            r.start_call(now, started);
            started += 1;
            next_start += interval;
        }
        if (r.calls.len() as u64) >= opts.concurrency {
            // Waiting for a free slot does not bank starts for a burst later.
            next_start = next_start.max(now);
        }
        while let Some(ev) = r.rtp.try_event() {
            r.on_rtp_event(now, ev);
        }
        let due: Vec<u64> = r
            .calls
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            if let Some(c) = r.calls.get_mut(&i) {
                c.on_timer(now, &r.cfg, &mut r.tally, &mut r.out);
            }
            r.settle(now, i);
        }
        got.clear();
        r.transports.receive(&mut buf, &mut got);
        for (from, data) in std::mem::take(&mut got) {
            r.on_message(now, from, &data);
        }
        while let Some(t) = r.transports.errors.pop() {
            r.on_transport_error(now, t);
        }
        r.reap();
        if opts.progress && now >= next_progress {
            next_progress += Duration::from_secs(1);
            let up = r.calls.values().filter(|c| c.is_up()).count();
            let packets = r.rtp.packets_sent();
            let pps = packets.saturating_sub(last_packets);
            last_packets = packets;
            eprintln!(
                "[{:>4.0}s] started {started}/{}, up {up}, done {}, failed {}, rtp {pps} pps ({packets} packets)",
                now.duration_since(start).as_secs_f64(),
                opts.calls,
                r.tally.calls_ok + r.tally.calls_failed,
                r.tally.calls_failed,
            );
        }
        if (started >= opts.calls || shutting) && r.calls.is_empty() {
            break;
        }
        // Sleep until a socket is readable or the next timer, at most 10 ms.
        let mut wake = now + Duration::from_millis(10);
        if !shutting && started < opts.calls {
            wake = wake.min(next_start.max(now));
        }
        for c in r.calls.values() {
            if let Some(d) = c.deadline() {
                wake = wake.min(d);
            }
        }
        let timeout_ms = wake
            .saturating_duration_since(Instant::now())
            .as_micros()
            .div_ceil(1000) as libc::c_int;
        let mut fds = r.transports.poll_fds();
        if timeout_ms > 0 {
            // SAFETY: `fds` is a live, correctly sized array of pollfd for the call.
            unsafe {
                libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms);
            }
        }
    }
    // Streams of calls abandoned at the deadline end with the sender.
    handle.stop();
    let rtp = handle.join().map_err(|e| format!("RTP sender: {e}"))?;
    Ok(LoadReport {
        tally: r.tally,
        rtp,
        calls_attempted: started,
        calls_requested: opts.calls,
        elapsed: start.elapsed(),
        interrupted: shutting,
        transport: opts.transport,
        codec: opts.codec,
        flavour: opts.flavour,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_targets_keep_their_order() {
        let a: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let sel = Selector::new(
            Resolved::fixed_many(&[a, b]),
            HoldDown::new(Duration::from_secs(30)),
        );
        let mut rng = rand::rng();
        for _ in 0..20 {
            assert_eq!(sel.candidates(Instant::now(), &mut rng), vec![a, b]);
        }
        let mut sel = sel;
        sel.report_failure(a, Instant::now());
        assert_eq!(sel.candidates(Instant::now(), &mut rng), vec![b]);
    }

    fn opts(calls: u64, concurrency: u64) -> LoadOptions {
        LoadOptions {
            targets: Targets::Fixed(vec!["127.0.0.1:5060".parse().unwrap()]),
            calls,
            concurrency,
            rate: 100.0,
            duration: Duration::from_secs(10),
            transport: Transport::Udp,
            codec: Codec::Pcmu,
            flavour: Flavour::Rfc7865,
            hold: false,
            failover_timeout: Duration::from_secs(2),
            holddown: Duration::from_secs(30),
            bye_delay: Duration::from_millis(100),
            progress: false,
        }
    }

    #[test]
    fn bound_covers_calls_run_in_waves_of_the_concurrency() {
        let interval = Duration::from_millis(10);
        // 1000 calls at 100/s all at once: the start phase (10 s) plus one call.
        let all = run_bound(&opts(1000, 1000), 1, interval);
        assert!(
            all >= Duration::from_secs(10 + 14) && all < Duration::from_secs(80),
            "{all:?}"
        );
        // 10 at a time: 100 waves of a 14 s call each.
        let waves = run_bound(&opts(1000, 10), 1, interval);
        assert!(waves >= Duration::from_secs(100 * 14), "{waves:?}");
    }

    #[test]
    fn srv_errors_name_the_flag_and_the_name() {
        // A bad name is refused before any query, so no DNS server is needed.
        let e = resolve_srv(
            "two words.example",
            Some(SocketAddr::from(([127, 0, 0, 1], 9))),
        )
        .unwrap_err();
        assert!(e.contains("--srv two words.example"), "{e}");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let tally = Tally {
            setup: (1..=100).map(Duration::from_millis).collect(),
            ..Tally::default()
        };
        let r = LoadReport {
            tally,
            rtp: SendReport::default(),
            calls_attempted: 100,
            calls_requested: 100,
            elapsed: Duration::ZERO,
            interrupted: false,
            transport: Transport::Udp,
            codec: Codec::Pcmu,
            flavour: Flavour::Rfc7865,
        };
        assert_eq!(r.setup_ms(50.0), 50.0);
        assert_eq!(r.setup_ms(99.0), 99.0);
        assert_eq!(r.setup_ms(100.0), 100.0);
    }
}
