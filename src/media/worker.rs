//! A media thread: one receive backend (io_uring or epoll), the streams it serves, and the ring
//! to its writer thread.
//!
//! Per packet: find the stream by token (a slab index, no hashing), drop what is not from the
//! latched source, demultiplex RTCP, decrypt SRTP into a scratch buffer, parse RTP, drop
//! duplicates, push `(PacketMeta, payload)` into the ring. No allocation, no lock, no log.
//! Commands (add/remove a stream) arrive on a channel, with the backend's waker to cut a wait
//! short; totals leave with each stream's end record, through the same ring as its packets,
//! so the writer sees them after the last packet.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use super::backend::{Received, RecvBackend};
use super::ring::{KIND_AUDIO, KIND_END, KIND_EVENT, PacketMeta, RingWriter, StreamTotals};
use super::rtp::{RtpHeader, is_rtcp, parse_rtp, payload};
use super::srtp::{SrtpContext, SrtpError, SrtpKey};
use super::stream::{PacketVerdict, StreamState};

/// Everything a media thread needs to record one stream.
#[derive(Debug)]
pub struct StreamConfig {
    /// Unique per stream across the process (the driver numbers them).
    pub key: u64,
    /// The writer's recording slot.
    pub recording: u32,
    /// m-line index in the offer.
    pub mline: u16,
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
    /// The negotiated codec's payload type.
    pub payload_type: u8,
    pub event_pt: Option<u8>,
    /// The SRC's offered SDES key: what it encrypts with.
    pub srtp: Option<SrtpKey>,
    /// Where the SRC's SDP says the stream is: a packet from there wins the latch.
    pub source: Option<SocketAddr>,
    /// Drop packets from any source but the first one heard.
    pub latch: bool,
}

/// A new offer's changes to a stream being recorded.
#[derive(Debug)]
pub struct StreamUpdate {
    pub key: u64,
    pub payload_type: u8,
    pub event_pt: Option<u8>,
    /// The SRC's key now; packets the old one protects still decrypt while they come.
    pub srtp: Option<SrtpKey>,
    pub source: Option<SocketAddr>,
    /// Forget the latched source: the SRC moved.
    pub relearn: bool,
}

/// A latched source silent this long gives the stream up to another one: an SBC that moved
/// its media (fail-over, a new port after a transfer) without a new offer.
const RELATCH_IDLE_NS: u64 = 1_000_000_000;
/// ... and this soon when it sent only a few packets: a stray that latched first.
const RELATCH_IDLE_STRAY_NS: u64 = 100_000_000;
/// What "only a few packets" is.
const STRAY_PACKETS: u32 = 4;

/// Packets of payload types the stream did not negotiate that one source must send, in a
/// row, before it may latch the stream anyway (an SRC whose RTP does not match its SDP).
const LATCH_ON_UNNEGOTIATED: u8 = 8;

pub enum MediaCommand {
    Add(Box<StreamConfig>),
    Update(Box<StreamUpdate>),
    /// Stop receiving; the stream's end record follows its last packet into the ring.
    Remove {
        key: u64,
    },
    Shutdown,
}

/// What a media thread tells the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaReport {
    /// The stream's sockets are closed: its ports may be reused.
    Closed { key: u64 },
}

/// Where a media thread sends its reports (must not block).
pub type ReportSink = Box<dyn Fn(MediaReport) + Send>;

/// Counters a media thread publishes (relaxed atomics, written about once per poll).
#[derive(Debug, Default)]
pub struct MediaCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub foreign: AtomicU64,
    pub duplicates: AtomicU64,
    pub srtp_failures: AtomicU64,
    pub srtp_replays: AtomicU64,
    pub malformed: AtomicU64,
    pub rtcp: AtomicU64,
    pub ring_drops: AtomicU64,
    /// TPROXY mode: datagrams to a port no stream is recorded on (dropped).
    pub unrouted: AtomicU64,
    /// TPROXY mode: datagrams that reached a stream's own socket instead of the shared one
    /// (no or a partial nftables rule, IPv6 media). Recorded all the same.
    pub tproxy_bypass: AtomicU64,
    pub ring_used_bytes: AtomicU64,
    pub enobufs: AtomicU64,
    pub wakeups: AtomicU64,
    pub streams: AtomicU64,
}

struct Stream {
    key: u64,
    recording: u32,
    mline: u16,
    payload_type: u8,
    event_pt: Option<u8>,
    srtp: Option<SrtpContext>,
    /// The key before a re-key, for the packets still on their way; dropped once the new
    /// one has verified 50 packets.
    srtp_prev: Option<Box<SrtpContext>>,
    srtp_prev_uses: u8,
    latch: bool,
    latched: Option<SocketAddr>,
    /// Arrival of the last packet recorded from the latched source.
    latched_ns: u64,
    /// Packets recorded from the latched source (saturating).
    latched_packets: u32,
    /// The SDP's address for the stream, IPv4-mapped addresses as IPv4.
    expected: Option<SocketAddr>,
    /// Before the latch: the source sending payload types not negotiated, and how many in
    /// a row (see [`LATCH_ON_UNNEGOTIATED`]).
    stray: Option<(SocketAddr, u8)>,
    state: StreamState,
    totals: StreamTotals,
    /// TPROXY mode: the stream's RTP port (its route in the [`PortTable`]).
    port: u16,
}

/// TPROXY mode: per destination port, how many datagrams reached a media thread's shared
/// socket with no stream to go to. Shared by the media threads (relaxed increments, on
/// unrouted datagrams only) and read by the control thread, which holds the last run's ports
/// out of the pool until their RTP stops (`PortPool::check_cooling`): in this mode their own
/// sockets see nothing.
pub struct PortActivity(Box<[AtomicU32]>);

impl PortActivity {
    pub fn new() -> PortActivity {
        PortActivity((0..=u16::MAX).map(|_| AtomicU32::new(0)).collect())
    }

    /// Counts one unrouted datagram to `port`.
    pub fn bump(&self, port: u16) {
        if let Some(n) = self.0.get(usize::from(port)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Unrouted datagrams to `port` so far (wrapping).
    pub fn get(&self, port: u16) -> u32 {
        self.0
            .get(usize::from(port))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

impl Default for PortActivity {
    fn default() -> PortActivity {
        PortActivity::new()
    }
}

/// TPROXY mode's routing: destination port -> stream token, for the datagrams of the one
/// socket that receives the thread's whole share of the port range.
struct PortTable {
    /// Stream token + 1 per port (0: no stream).
    slots: Box<[u32]>,
    /// Datagrams for a port not (yet) in `slots`, kept until the commands queued meanwhile
    /// are applied. The SRC may send its first packets as soon as it has the 200, before this
    /// thread took the stream's `Add`; with per-stream sockets they wait in the socket, here
    /// they would be lost.
    late: Stash<()>,
    /// Where unrouted datagrams are counted per port.
    activity: Arc<PortActivity>,
}

/// Datagrams kept for one more try, with what the caller needs to know of each (`T`), in
/// room allocated once: what does not fit is refused, never a reallocation on the packet path.
struct Stash<T> {
    kept: Vec<Kept<T>>,
    bytes: Vec<u8>,
}

struct Kept<T> {
    tag: T,
    source: SocketAddr,
    arrival_ns: u64,
    dst_port: u16,
    start: usize,
    len: usize,
}

impl<T> Stash<T> {
    fn new(datagrams: usize, bytes: usize) -> Stash<T> {
        Stash {
            kept: Vec::with_capacity(datagrams),
            bytes: Vec::with_capacity(bytes),
        }
    }

    /// Keeps `rx` with `tag`; `false` when there is no room.
    fn keep(&mut self, tag: T, rx: &Received<'_>) -> bool {
        let start = self.bytes.len();
        if self.kept.len() == self.kept.capacity() || start + rx.data.len() > self.bytes.capacity()
        {
            return false;
        }
        self.bytes.extend_from_slice(rx.data);
        self.kept.push(Kept {
            tag,
            source: rx.source,
            arrival_ns: rx.arrival_ns,
            dst_port: rx.dst_port,
            start,
            len: rx.data.len(),
        });
        true
    }

    fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Each kept datagram, as received (token 0: the caller knows where it goes), with its tag.
    fn iter_mut(&mut self) -> impl Iterator<Item = (&mut T, Received<'_>)> {
        let bytes = &self.bytes;
        self.kept.iter_mut().map(move |k| {
            let rx = Received {
                token: 0,
                data: bytes.get(k.start..k.start + k.len).unwrap_or(&[]),
                arrival_ns: k.arrival_ns,
                source: k.source,
                dst_port: k.dst_port,
                truncated: false,
            };
            (&mut k.tag, rx)
        })
    }

    fn clear(&mut self) {
        self.kept.clear();
        self.bytes.clear();
    }
}

const LATE_PACKETS: usize = 2048;
const LATE_BYTES: usize = 512 * 1024;

/// [`PortTable::route`] over its slots alone (so a replay can borrow the held datagrams too).
fn route(slots: &[u32], port: u16) -> Option<u64> {
    match slots.get(usize::from(port)) {
        Some(&v) if v != 0 => Some(u64::from(v - 1)),
        _ => None,
    }
}

impl PortTable {
    fn new(activity: Arc<PortActivity>) -> PortTable {
        PortTable {
            slots: vec![0u32; 65536].into_boxed_slice(),
            late: Stash::new(LATE_PACKETS, LATE_BYTES),
            activity,
        }
    }

    /// The token of the stream `port` belongs to.
    fn route(&self, port: u16) -> Option<u64> {
        route(&self.slots, port)
    }

    /// Routes RTP `port` to `token` and `port + 1` to `token | 1` (RTCP). `false` when the
    /// token does not fit.
    fn set(&mut self, port: u16, token: u64) -> bool {
        let Ok(v) = u32::try_from(token + 1) else {
            return false;
        };
        self.slots[usize::from(port)] = v;
        if let Some(slot) = self.slots.get_mut(usize::from(port) + 1) {
            *slot = v + 1;
        }
        true
    }

    fn clear(&mut self, port: u16) {
        for p in [usize::from(port), usize::from(port) + 1] {
            if let Some(slot) = self.slots.get_mut(p) {
                *slot = 0;
            }
        }
    }

    /// Keeps an unrouted datagram for a replay; `false` when the preallocated room is full.
    fn hold(&mut self, rx: &Received<'_>) -> bool {
        self.late.keep((), rx)
    }
}

/// Packets that failed in this poll (a source other than the latched one, SRTP that did not
/// authenticate), kept to be tried once more after the commands queued meanwhile. A new
/// offer's address or key reaches this thread at its next wake, up to 80 ms after the 200
/// went out, and an SRC uses them as soon as it has the 200. Preallocated, never grown; what
/// does not fit is counted at once.
type Held = Stash<HeldTag>;

struct HeldTag {
    token: u64,
    /// The stream's key: its slab slot may hold another stream by the replay.
    key: u64,
    /// Tried again already (its stream was removed before the poll's replay).
    done: bool,
}

fn held_tag(stream: &Stream, rx: &Received<'_>) -> HeldTag {
    HeldTag {
        token: rx.token,
        key: stream.key,
        done: false,
    }
}

const HELD_PACKETS: usize = 1024;
const HELD_BYTES: usize = 256 * 1024;

/// The token of a media thread's TPROXY socket (stream tokens are slab indexes shifted left).
const TPROXY_TOKEN: u64 = u64::MAX;

/// Local tallies, flushed to the shared atomics once per poll.
#[derive(Default)]
struct Tally {
    packets: u64,
    bytes: u64,
    foreign: u64,
    duplicates: u64,
    srtp_failures: u64,
    srtp_replays: u64,
    malformed: u64,
    rtcp: u64,
    ring_drops: u64,
    unrouted: u64,
    tproxy_bypass: u64,
}

pub struct Worker {
    backend: Box<dyn RecvBackend>,
    commands: Receiver<MediaCommand>,
    reports: ReportSink,
    ring: RingWriter,
    counters: Arc<MediaCounters>,
    slab: Vec<Option<Stream>>,
    free: Vec<usize>,
    scratch: Box<[u8; 4096]>,
    /// TPROXY mode only.
    tproxy: Option<PortTable>,
    held: Held,
    /// Sleep between polls so each wake takes many completions (a recorder needs no
    /// per-packet latency; the socket buffers hold what arrives meanwhile).
    batch: Duration,
}

impl Worker {
    pub fn new(
        backend: Box<dyn RecvBackend>,
        commands: Receiver<MediaCommand>,
        reports: ReportSink,
        ring: RingWriter,
        counters: Arc<MediaCounters>,
        batch: Duration,
    ) -> Worker {
        Worker {
            backend,
            commands,
            reports,
            ring,
            counters,
            slab: Vec::new(),
            free: Vec::new(),
            scratch: Box::new([0u8; 4096]),
            tproxy: None,
            held: Held::new(HELD_PACKETS, HELD_BYTES),
            batch,
        }
    }

    /// Receives every stream of this thread on `socket` (see
    /// [`super::backend::open_tproxy_socket`]) instead of on the streams' own sockets, routing
    /// each datagram by its original destination port. The streams' own sockets stay open, so
    /// their ports stay reserved, but are not polled. Datagrams to a port without a stream
    /// are counted per port in `activity`.
    pub fn with_tproxy(
        mut self,
        socket: UdpSocket,
        activity: Arc<PortActivity>,
    ) -> std::io::Result<Worker> {
        self.backend.add_socket(socket, TPROXY_TOKEN)?;
        self.tproxy = Some(PortTable::new(activity));
        Ok(self)
    }

    /// Runs until [`MediaCommand::Shutdown`] or the command channel closes.
    pub fn run(mut self) {
        loop {
            if !self.take_commands() {
                break;
            }
            if self.poll_once(Duration::from_millis(100)).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if self.tproxy.as_ref().is_some_and(|t| !t.late.is_empty()) || !self.held.is_empty() {
                if !self.take_commands() {
                    break;
                }
                self.replay_late();
                self.replay_held();
            }
            if !self.batch.is_zero() {
                std::thread::sleep(self.batch);
            }
        }
        let _ = self.poll_once(Duration::ZERO);
        self.replay_late();
        self.replay_held();
        let keys: Vec<u64> = self.slab.iter().flatten().map(|s| s.key).collect();
        for key in keys {
            self.remove(key);
        }
    }

    /// Waits up to `timeout`, records every packet that is ready, and publishes the counts.
    fn poll_once(&mut self, timeout: Duration) -> std::io::Result<usize> {
        let mut tally = Tally::default();
        let Worker {
            backend,
            slab,
            scratch,
            ring,
            tproxy,
            held,
            ..
        } = self;
        let result = backend.poll(timeout, &mut |rx: Received<'_>| match tproxy.as_mut() {
            Some(table) if rx.token == TPROXY_TOKEN => match table.route(rx.dst_port) {
                Some(token) => on_packet(
                    slab,
                    scratch,
                    ring,
                    &mut tally,
                    Received { token, ..rx },
                    Some(&mut *held),
                ),
                None if table.hold(&rx) => {}
                None => {
                    tally.unrouted += 1;
                    table.activity.bump(rx.dst_port);
                }
            },
            Some(_) => {
                tally.tproxy_bypass += 1;
                on_packet(slab, scratch, ring, &mut tally, rx, Some(&mut *held))
            }
            None => on_packet(slab, scratch, ring, &mut tally, rx, Some(&mut *held)),
        });
        self.publish(&tally);
        result
    }

    /// Records the held datagrams whose port now has a stream; counts the rest as unrouted.
    fn replay_late(&mut self) {
        let mut tally = Tally::default();
        let Worker {
            slab,
            scratch,
            ring,
            tproxy,
            ..
        } = self;
        let Some(table) = tproxy.as_mut() else {
            return;
        };
        let PortTable {
            slots,
            late,
            activity,
        } = table;
        for ((), rx) in late.iter_mut() {
            let Some(token) = route(slots, rx.dst_port) else {
                tally.unrouted += 1;
                activity.bump(rx.dst_port);
                continue;
            };
            on_packet(
                slab,
                scratch,
                ring,
                &mut tally,
                Received { token, ..rx },
                None,
            );
        }
        late.clear();
        self.publish(&tally);
    }

    /// Tries the packets that failed in the last poll once more, now that the commands queued
    /// meanwhile are applied; what fails again is counted.
    fn replay_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        self.replay_held_of(None);
        self.held.clear();
    }

    /// Tries the held packets of stream `only` (all when `None`) once more and marks them
    /// done: a stream about to be removed counts its own before its totals go out.
    fn replay_held_of(&mut self, only: Option<u64>) {
        let mut tally = Tally::default();
        let Worker {
            slab,
            scratch,
            ring,
            held,
            ..
        } = self;
        for (h, rx) in held.iter_mut() {
            if h.done || only.is_some_and(|k| k != h.key) {
                continue;
            }
            h.done = true;
            let same_stream = slab
                .get((h.token >> 1) as usize)
                .is_some_and(|s| s.as_ref().is_some_and(|s| s.key == h.key));
            if same_stream {
                let rx = Received {
                    token: h.token,
                    ..rx
                };
                on_packet(slab, scratch, ring, &mut tally, rx, None);
            }
        }
        self.publish(&tally);
    }

    fn publish(&self, t: &Tally) {
        let c = &self.counters;
        // The first datagram past the shared socket is logged, once per thread.
        if t.tproxy_bypass > 0
            && c.tproxy_bypass
                .fetch_add(t.tproxy_bypass, Ordering::Relaxed)
                == 0
        {
            tracing::warn!(
                "TPROXY mode: RTP reached a stream's own socket, not the shared one (is the \
                 nftables rule printed at start installed? IPv6 media always comes this way); \
                 it is recorded all the same, counted in reel_media_tproxy_bypass_total"
            );
        }
        c.packets.fetch_add(t.packets, Ordering::Relaxed);
        c.bytes.fetch_add(t.bytes, Ordering::Relaxed);
        c.foreign.fetch_add(t.foreign, Ordering::Relaxed);
        c.duplicates.fetch_add(t.duplicates, Ordering::Relaxed);
        c.srtp_failures
            .fetch_add(t.srtp_failures, Ordering::Relaxed);
        c.srtp_replays.fetch_add(t.srtp_replays, Ordering::Relaxed);
        c.malformed.fetch_add(t.malformed, Ordering::Relaxed);
        c.rtcp.fetch_add(t.rtcp, Ordering::Relaxed);
        c.ring_drops.fetch_add(t.ring_drops, Ordering::Relaxed);
        c.unrouted.fetch_add(t.unrouted, Ordering::Relaxed);
        c.ring_used_bytes
            .store(self.ring.used() as u64, Ordering::Relaxed);
        let s = self.backend.stats();
        c.enobufs.store(s.enobufs, Ordering::Relaxed);
        c.wakeups.store(s.wakeups, Ordering::Relaxed);
        c.streams
            .store(self.slab.iter().flatten().count() as u64, Ordering::Relaxed);
    }

    /// Applies queued commands; `false` on shutdown.
    fn take_commands(&mut self) -> bool {
        let mut drained = false;
        loop {
            match self.commands.try_recv() {
                Ok(MediaCommand::Add(cfg)) => self.add(*cfg),
                Ok(MediaCommand::Update(u)) => self.update(*u),
                Ok(MediaCommand::Remove { key }) => {
                    // An SRC sends its last packets just before its BYE. Some may sit in the
                    // socket or the backend without a delivered completion yet (io_uring runs
                    // deferred receive work only inside the next enter), and `remove_socket`
                    // discards what was not delivered. They belong in the recording: record
                    // whatever is ready before closing the stream (once per batch of commands).
                    if !drained {
                        let _ = self.poll_once(Duration::ZERO);
                        drained = true;
                    }
                    self.remove(key)
                }
                Ok(MediaCommand::Shutdown) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn add(&mut self, cfg: StreamConfig) {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slab.push(None);
            self.slab.len() - 1
        });
        let token = (index as u64) << 1;
        let key = cfg.key;
        let mut port = 0u16;
        if let Some(table) = self.tproxy.as_mut() {
            // TPROXY mode: route the stream's ports to it from the shared socket. Its own
            // sockets are polled as well (below): idle while the nftables rule takes the
            // ports, they still record what comes past it (no rule yet, IPv6 media).
            port = cfg.rtp.local_addr().map(|a| a.port()).unwrap_or(0);
            if port == 0 || !table.set(port, token) {
                self.free.push(index);
                (self.reports)(MediaReport::Closed { key });
                return;
            }
        }
        if self.backend.add_socket(cfg.rtp, token).is_err() {
            // Nothing to record from; report the stream closed so its ports come back.
            if let Some(table) = self.tproxy.as_mut() {
                table.clear(port);
            }
            self.free.push(index);
            (self.reports)(MediaReport::Closed { key });
            return;
        }
        if let Some(rtcp) = cfg.rtcp {
            let _ = self.backend.add_socket(rtcp, token | 1);
        }
        self.slab[index] = Some(Stream {
            key,
            recording: cfg.recording,
            mline: cfg.mline,
            payload_type: cfg.payload_type,
            event_pt: cfg.event_pt,
            srtp: cfg.srtp.as_ref().map(SrtpContext::new),
            srtp_prev: None,
            srtp_prev_uses: 0,
            latch: cfg.latch,
            latched: None,
            latched_ns: 0,
            latched_packets: 0,
            expected: cfg.source.map(canonical),
            stray: None,
            state: StreamState::new(),
            totals: StreamTotals::default(),
            port,
        });
    }

    fn update(&mut self, u: StreamUpdate) {
        let Some(stream) = self.slab.iter_mut().flatten().find(|s| s.key == u.key) else {
            return;
        };
        stream.payload_type = u.payload_type;
        stream.event_pt = u.event_pt;
        stream.expected = u.source.map(canonical);
        let key_changed = match (&u.srtp, stream.srtp.as_ref()) {
            (Some(new), Some(_)) => {
                let old = stream.srtp.replace(SrtpContext::new(new));
                stream.srtp_prev = old.map(Box::new);
                stream.srtp_prev_uses = 0;
                true
            }
            (Some(new), None) => {
                stream.srtp = Some(SrtpContext::new(new));
                true
            }
            (None, Some(_)) => {
                stream.srtp = None;
                stream.srtp_prev = None;
                true
            }
            (None, None) => false,
        };
        if u.relearn || key_changed {
            stream.latched = None;
            stream.stray = None;
        }
    }

    fn remove(&mut self, key: u64) {
        let Some(index) = self
            .slab
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.key == key))
        else {
            (self.reports)(MediaReport::Closed { key });
            return;
        };
        // What it holds is tried under its final state and counted in its totals.
        if !self.held.is_empty() {
            self.replay_held_of(Some(key));
        }
        let token = (index as u64) << 1;
        if let Some(table) = self.tproxy.as_mut()
            && let Some(s) = self.slab[index].as_ref()
        {
            table.clear(s.port);
        }
        let _ = self.backend.remove_socket(token);
        let _ = self.backend.remove_socket(token | 1);
        if let Some(s) = self.slab[index].take() {
            let end = PacketMeta {
                stream: s.mline,
                kind: KIND_END,
                ..PacketMeta::default()
            };
            // The end record must arrive: wait for room (this is the control path, not the
            // packet path, and the writer drains every few milliseconds).
            let totals = s.totals.encode();
            for _ in 0..1000 {
                if self.ring.push(s.recording, &end, &totals) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.free.push(index);
        (self.reports)(MediaReport::Closed { key });
    }
}

/// Whether the first packet a stream would take may latch it: one of a payload type the
/// stream negotiated (codec, telephone-event, comfort noise; for a G.711 or G.722 stream any
/// of PCMU, PCMA, G722 and G.729), so that one stray packet from
/// elsewhere (a scanner, the stale stream of another call) cannot capture the stream for the
/// whole call; or the [`LATCH_ON_UNNEGOTIATED`]th in a row from one source, for an SRC whose
/// RTP does not match its SDP.
#[cold]
fn may_latch(stream: &mut Stream, h: &RtpHeader, source: SocketAddr) -> bool {
    const COMFORT_NOISE: u8 = 13;
    // On a G.711/G.722 stream, finalize keeps any static type it knows (PCMU, PCMA, G722 in
    // audio.wav, G.729 in its own file) whichever was negotiated: an SRC sending PCMA on a
    // stream answered PCMU, or replaying a G.729 capture, is recorded from its first packet,
    // not its eighth.
    use crate::codec::Codec;
    let pt = h.payload_type;
    let wav_stream =
        Codec::from_static_payload_type(stream.payload_type).is_some_and(Codec::in_wav);
    if pt == stream.payload_type
        || Some(pt) == stream.event_pt
        || pt == COMFORT_NOISE
        || (wav_stream && Codec::from_static_payload_type(pt).is_some())
    {
        return true;
    }
    let run = match stream.stray {
        Some((from, n)) if from == source => n.saturating_add(1),
        _ => 1,
    };
    stream.stray = Some((source, run));
    run >= LATCH_ON_UNNEGOTIATED
}

/// Whether a packet from `source`, not the latched one, takes the stream over: it comes from
/// where the SDP says the stream is (an SRC with symmetric RTP), or the latched source went
/// quiet ([`RELATCH_IDLE_NS`], sooner for a stray that sent a few packets). Then the stream
/// is unlatched, and the packet latches it as a first one would.
#[cold]
fn may_relatch(stream: &mut Stream, source: SocketAddr, arrival_ns: u64) -> bool {
    let from_sdp = stream.expected.is_some_and(|e| e == canonical(source))
        && stream.latched.map(canonical) != stream.expected;
    let idle = if stream.latched_packets < STRAY_PACKETS {
        RELATCH_IDLE_STRAY_NS
    } else {
        RELATCH_IDLE_NS
    };
    let quiet = stream.latched_ns != 0 && arrival_ns >= stream.latched_ns.saturating_add(idle);
    if from_sdp || quiet {
        stream.latched = None;
        stream.stray = None;
        return true;
    }
    false
}

/// IPv4-mapped IPv6 addresses (a dual-stack socket's view of IPv4) as IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// After a re-key, a packet the old key still protects (sent before the SRC switched).
#[cold]
fn unprotect_with_previous(
    stream: &mut Stream,
    scratch: &mut [u8; 4096],
    data: &[u8],
) -> Option<usize> {
    let prev = stream.srtp_prev.as_mut()?;
    let buf = scratch.get_mut(..data.len())?;
    buf.copy_from_slice(data);
    prev.unprotect_rtp(buf).ok()
}

/// The new key works: the old one is kept for a little while (late packets), then dropped.
#[cold]
fn retire_previous_key(stream: &mut Stream) {
    stream.srtp_prev_uses = stream.srtp_prev_uses.saturating_add(1);
    if stream.srtp_prev_uses >= 50 {
        stream.srtp_prev = None;
        stream.srtp_prev_uses = 0;
    }
}

#[inline]
fn on_packet(
    slab: &mut [Option<Stream>],
    scratch: &mut [u8; 4096],
    ring: &mut RingWriter,
    tally: &mut Tally,
    rx: Received<'_>,
    held: Option<&mut Held>,
) {
    let Some(Some(stream)) = slab.get_mut((rx.token >> 1) as usize) else {
        return;
    };
    tally.bytes += rx.data.len() as u64;
    if rx.token & 1 == 1 || is_rtcp(rx.data) {
        stream.totals.rtcp_packets += 1;
        tally.rtcp += 1;
        return;
    }
    if stream.latch
        && stream.latched.is_some_and(|a| a != rx.source)
        && !may_relatch(stream, rx.source, rx.arrival_ns)
    {
        if let Some(h) = held
            && h.keep(held_tag(stream, &rx), &rx)
        {
            return;
        }
        stream.totals.foreign += 1;
        tally.foreign += 1;
        return;
    }
    let packet: &[u8] = match stream.srtp.as_mut() {
        Some(ctx) => {
            let Some(buf) = scratch.get_mut(..rx.data.len()) else {
                stream.totals.malformed += 1;
                tally.malformed += 1;
                return;
            };
            buf.copy_from_slice(rx.data);
            match ctx.unprotect_rtp(buf) {
                Ok(n) => {
                    if stream.srtp_prev.is_some() {
                        retire_previous_key(stream);
                    }
                    &scratch[..n]
                }
                Err(e) => match unprotect_with_previous(stream, scratch, rx.data) {
                    Some(n) => &scratch[..n],
                    None => {
                        if e != SrtpError::Replay
                            && let Some(h) = held
                            && h.keep(held_tag(stream, &rx), &rx)
                        {
                            return;
                        }
                        // A replay is a packet seen before: the network's duplicate, not a
                        // key problem.
                        if e == SrtpError::Replay {
                            stream.totals.duplicates += 1;
                            tally.duplicates += 1;
                            tally.srtp_replays += 1;
                        } else {
                            stream.totals.srtp_failures += 1;
                            tally.srtp_failures += 1;
                        }
                        return;
                    }
                },
            }
        }
        None => rx.data,
    };
    let Ok(h) = parse_rtp(packet) else {
        stream.totals.malformed += 1;
        tally.malformed += 1;
        return;
    };
    if stream.latch && stream.latched.is_none() && !may_latch(stream, &h, rx.source) {
        stream.totals.foreign += 1;
        tally.foreign += 1;
        return;
    }
    match stream.state.on_packet(&h, rx.arrival_ns) {
        PacketVerdict::Accept { .. } => {}
        PacketVerdict::Duplicate | PacketVerdict::TooOld => {
            stream.totals.duplicates += 1;
            tally.duplicates += 1;
            return;
        }
    }
    if stream.latched.is_none() {
        stream.latched = Some(rx.source);
        stream.latched_packets = 0;
    }
    stream.latched_ns = rx.arrival_ns;
    stream.latched_packets = stream.latched_packets.saturating_add(1);
    let kind = if Some(h.payload_type) == stream.event_pt {
        KIND_EVENT
    } else {
        KIND_AUDIO
    };
    let meta = PacketMeta {
        stream: stream.mline,
        kind,
        marker: h.marker,
        payload_type: h.payload_type,
        seq: h.sequence,
        timestamp: h.timestamp,
        ssrc: h.ssrc,
        arrival_ns: rx.arrival_ns,
    };
    if ring.push(stream.recording, &meta, payload(packet, &h)) {
        stream.totals.packets += 1;
        tally.packets += 1;
    } else {
        stream.totals.ring_drops += 1;
        tally.ring_drops += 1;
    }
}
