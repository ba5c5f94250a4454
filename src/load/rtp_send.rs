//! Paced G.711 and G.722 RTP from one thread for many streams, with scripted impairments.
//!
//! Owns: the per-stream RTP state (sequence number, timestamp, SSRC), the schedule (one packet
//! every 20 ms per stream, spread over the 20 ms so streams do not burst together), building
//! each packet, the impairments, and the `sendmmsg(2)` batches that put packets on the wire.
//!
//! Shape of the loop: a min-heap holds each stream's next due time. Every tick (1 ms by
//! default) the thread takes every packet that is due, writes it into a batch buffer and
//! sends the batch with one `sendmmsg` call per address family, then sleeps to the next tick.
//! Audio payloads are encoded once per distinct (tone, amplitude, codec) for a whole tone
//! period ([`crate::load::tone::frames_per_period`]) and shared between streams, so the per
//! packet work is a 12-byte header and a 160-byte copy. Unpaced mode ([`SendConfig::paced`]
//! false) runs the same schedule on virtual time, as fast as the socket takes it.
//!
//! Packet indices: impairments name packets by their index in the stream, 0 for the first
//! RTP packet, counting audio and telephone-event packets alike, whether or not an impairment
//! then drops or moves them. Before an SSRC change the sequence number of packet `k` is
//! `first_seq + k` (mod 2^16); indices stay unambiguous across that change and a wrap.
//!
//! Streams given up front ([`Sender::new`]) run from the start; a dynamic sender
//! ([`Sender::dynamic`]) also takes [`StreamCommand`]s through a [`StreamControl`] while it
//! runs (add a stream, pause and resume it, stop it), drained once per tick, and answers each
//! stop with the stream's final count ([`StreamEvent::Stopped`]) once its last packet is on
//! the wire, so a caller can send BYE knowing no packet of that stream will follow it.
//!
//! Must not: send anywhere the caller did not name, panic on a send error (errors are
//! counted in [`SendReport`]), or block anywhere but in `sendmmsg` and the tick sleep.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::tone::{
    FRAME_SAMPLES, Tone, frames_per_period, frames_per_period_at, linear_to_alaw, linear_to_ulaw,
};
use super::tone::{SAMPLE_RATE, telephone_event};

/// Packetisation interval of every stream.
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);
const INTERVAL_NS: u64 = 20_000_000;
/// RTP timestamp units per packet (20 ms at 8 kHz).
pub const TS_PER_PACKET: u32 = FRAME_SAMPLES as u32;
/// The dynamic payload type most SBCs use for telephone-event.
pub const DTMF_PAYLOAD_TYPE: u8 = 101;
/// Default tone amplitude: about -12 dBFS, loud enough for a Goertzel check, far from clipping.
pub const DEFAULT_AMPLITUDE: i16 = 8000;
/// The most packets one stream writes into a batch per slot: a swapped-out packet and the
/// current one, each possibly duplicated.
const MAX_PER_SLOT: usize = 4;

/// Codec of a stream's audio. All three put 160 bytes in a 20 ms packet and count the RTP
/// clock at 8000 Hz (RFC 3551 §4.5.2 keeps G.722's clock at 8000 although it samples at 16 kHz).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    /// G.722 at 64 kbit/s: the tone is generated at 16 kHz and ADPCM-encoded.
    G722,
}

impl Codec {
    /// The static payload type (RFC 3551): 0 for PCMU, 8 for PCMA, 9 for G.722.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
        }
    }

    /// The SDP encoding name (`a=rtpmap:<pt> <name>/8000`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
        }
    }

    /// Samples per second of the audio itself (not the RTP clock).
    pub fn sample_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => SAMPLE_RATE,
            Codec::G722 => 2 * SAMPLE_RATE,
        }
    }
}

/// Protects one RTP packet in place before it is sent (SRTP: encrypt the payload and append
/// the tag). Called once per packet on the sending thread, duplicates included.
pub type Protect = Box<dyn FnMut(&mut Vec<u8>) + Send>;

/// The SSRC changes at a packet, as when an SBC re-anchors media: the new SSRC takes over
/// from packet `at_packet` on, with a new random sequence number and timestamp (RFC 3550
/// §5.1: both start random for a new source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsrcChange {
    pub at_packet: u64,
    pub new_ssrc: u32,
}

/// A hold: nothing is sent for `gap` before packet `at_packet`. Sequence numbers stay
/// consecutive, and the timestamp of `at_packet` is 160 plus `gap` in samples after the one
/// before it, because RFC 3550 timestamps follow the sampling clock, which ran on during hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    pub at_packet: u64,
    pub gap: Duration,
}

/// One DTMF event (RFC 4733) that replaces audio from packet `at_packet` on.
///
/// The event takes `packets + 2` packet slots: a start packet (marker bit set), updates with
/// a duration growing by 160 each, then the final duration sent three times with the E bit,
/// all with the timestamp of the start packet and each with its own sequence number. Audio
/// resumes after it, with the timestamp the sampling clock reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfSpec {
    pub at_packet: u64,
    /// Event code, 0-9, 10 `*`, 11 `#`, 12-15 A-D.
    pub event: u8,
    /// Power level in -dBm0 (0..=63).
    pub volume: u8,
    /// Packets of distinct duration, at least 1 (the event lasts `packets * 20 ms`).
    pub packets: u16,
}

/// What a stream does wrong on purpose. Index lists need not be sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Impairments {
    /// Late start: the first packet goes out this long after the stream's start slot.
    pub start_delay: Duration,
    /// Packets that are never sent (their sequence numbers are used up: loss).
    pub drop: Vec<u64>,
    /// Each packet `k` here is sent right after packet `k + 1` (reordering by one).
    pub swap: Vec<u64>,
    /// Packets sent twice back to back.
    pub duplicate: Vec<u64>,
    pub ssrc_change: Option<SsrcChange>,
    pub holds: Vec<Hold>,
}

/// One RTP stream to send.
pub struct StreamSpec {
    pub dest: SocketAddr,
    pub payload_type: u8,
    pub ssrc: u32,
    /// Tone frequency, rounded to whole hertz (so the precomputed frames repeat exactly).
    pub tone_hz: f32,
    pub amplitude: i16,
    pub codec: Codec,
    pub first_seq: u16,
    pub first_ts: u32,
    /// Stop after this many packet slots (`None`: until the run ends).
    pub max_packets: Option<u64>,
    pub dtmf_payload_type: u8,
    pub dtmf: Vec<DtmfSpec>,
    pub impairments: Impairments,
    /// SRTP (or any) per-packet transform; `None` sends plain RTP.
    pub protect: Option<Protect>,
}

impl StreamSpec {
    /// A PCMU stream of a `tone_hz` tone with random first sequence number and timestamp
    /// (RFC 3550), no DTMF, no impairments, running until the run ends.
    pub fn new(dest: SocketAddr, ssrc: u32, tone_hz: f32) -> StreamSpec {
        StreamSpec {
            dest,
            payload_type: Codec::Pcmu.payload_type(),
            ssrc,
            tone_hz,
            amplitude: DEFAULT_AMPLITUDE,
            codec: Codec::Pcmu,
            first_seq: rand::random(),
            first_ts: rand::random(),
            max_packets: None,
            dtmf_payload_type: DTMF_PAYLOAD_TYPE,
            dtmf: Vec::new(),
            impairments: Impairments::default(),
            protect: None,
        }
    }

    /// Sets the codec and its static payload type.
    pub fn with_codec(mut self, codec: Codec) -> StreamSpec {
        self.codec = codec;
        self.payload_type = codec.payload_type();
        self
    }
}

impl fmt::Debug for StreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSpec")
            .field("dest", &self.dest)
            .field("payload_type", &self.payload_type)
            .field("ssrc", &self.ssrc)
            .field("tone_hz", &self.tone_hz)
            .field("amplitude", &self.amplitude)
            .field("codec", &self.codec)
            .field("first_seq", &self.first_seq)
            .field("first_ts", &self.first_ts)
            .field("max_packets", &self.max_packets)
            .field("dtmf_payload_type", &self.dtmf_payload_type)
            .field("dtmf", &self.dtmf)
            .field("impairments", &self.impairments)
            .field("protect", &self.protect.is_some())
            .finish()
    }
}

/// How the sender runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendConfig {
    /// Real time (true) or as fast as possible on virtual time (false, for benchmarks and
    /// tests that only look at the packet sequence).
    pub paced: bool,
    /// How long the thread sleeps between batches when paced: packets leave up to one tick
    /// late, in exchange for one wake-up and one `sendmmsg` per tick instead of per packet.
    pub tick: Duration,
    /// Most packets per `sendmmsg` call (the kernel caps one call at 1024).
    pub batch: usize,
    /// Spread the streams' first packets evenly over one 20 ms interval, as independent
    /// calls would be; false starts them all at 0.
    pub stagger: bool,
}

impl Default for SendConfig {
    fn default() -> SendConfig {
        SendConfig {
            paced: true,
            tick: Duration::from_millis(1),
            batch: 256,
            stagger: true,
        }
    }
}

/// What one stream sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// Datagrams the kernel accepted (duplicates count twice).
    pub packets: u64,
    /// UDP payload bytes of those datagrams (after `protect`).
    pub bytes: u64,
    /// Packets withheld by [`Impairments::drop`].
    pub dropped: u64,
}

/// What a run sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    pub packets_sent: u64,
    pub bytes: u64,
    /// Per stream, in the order the streams were given.
    pub per_stream: Vec<StreamReport>,
    /// Datagrams the kernel refused (each is skipped, not retried).
    pub send_errors: u64,
    pub last_send_error: Option<String>,
    /// User + system CPU time of the sending thread during the run (getrusage).
    pub cpu_time: Duration,
    pub elapsed: Duration,
    /// Worst lateness of a packet against its schedule (paced runs only): a value well
    /// above the tick means this thread cannot keep up with the offered rate.
    pub max_late: Duration,
}

/// A ready-to-run sender: sockets bound, payloads encoded.
pub struct Sender {
    streams: Vec<Stream>,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    config: SendConfig,
    /// Encoded tone periods by (Hz, amplitude, codec), shared by every stream that sends one.
    frames: HashMap<(u32, i16, Codec), Arc<[u8]>>,
    control: Option<Control>,
}

/// What a caller asks of a running dynamic sender. Ids are the caller's; an id that is not
/// (or no longer) running is ignored, except by `Stop`, which then answers with a zero count.
#[derive(Debug)]
pub enum StreamCommand {
    /// Start a stream now (plus its `start_delay`). Its `max_packets` still applies.
    Add { id: u64, spec: Box<StreamSpec> },
    /// Stop sending (hold): slots pass with no packet; the sequence number stays put and the
    /// timestamp runs on with the clock, as RFC 3550 wants across a pause.
    Pause(u64),
    /// Send again from the next slot, the first packet with the marker bit.
    Resume(u64),
    /// End the stream; answered with [`StreamEvent::Stopped`].
    Stop(u64),
}

/// What a dynamic sender reports back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// Stream `id` is over and every packet it sent is already handed to the kernel.
    Stopped { id: u64, report: StreamReport },
}

/// The caller's side of a dynamic sender: commands in, events out. Dropping it lets the
/// sender end once its last stream is done.
pub struct StreamControl {
    commands: mpsc::Sender<StreamCommand>,
    events: mpsc::Receiver<StreamEvent>,
    sent: Arc<AtomicU64>,
}

impl StreamControl {
    /// Queues a command for the sender's next tick; false when the sender has ended.
    pub fn send(&self, command: StreamCommand) -> bool {
        self.commands.send(command).is_ok()
    }

    /// The next event, if one is waiting.
    pub fn try_event(&self) -> Option<StreamEvent> {
        self.events.try_recv().ok()
    }

    /// Packets sent so far by the whole sender (updated once per tick), for progress lines.
    pub fn packets_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// The sender's side of [`StreamControl`].
struct Control {
    commands: mpsc::Receiver<StreamCommand>,
    events: mpsc::Sender<StreamEvent>,
    /// Caller id -> stream index.
    ids: HashMap<u64, u32>,
    /// Indices of ended streams whose heap entry is gone, free for the next `Add`.
    free: Vec<u32>,
    /// The caller dropped its [`StreamControl`]: end when no stream is left.
    orphaned: bool,
    sent: Arc<AtomicU64>,
}

/// A sender running on its own thread.
pub struct SenderHandle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<SendReport>,
}

impl SenderHandle {
    /// Asks the thread to stop at its next tick.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the run to end (duration over, every stream finished, or [`Self::stop`]).
    pub fn join(self) -> io::Result<SendReport> {
        self.thread
            .join()
            .map_err(|_| io::Error::other("rtp sender thread panicked"))
    }
}

/// Sends `streams` paced in real time on the calling thread until `duration` has passed,
/// every stream has sent its `max_packets`, or `stop` is set. Fails only when the sending
/// sockets cannot be set up.
pub fn run(
    streams: Vec<StreamSpec>,
    duration: Duration,
    stop: &AtomicBool,
) -> io::Result<SendReport> {
    Ok(Sender::new(streams, SendConfig::default())?.run(duration, stop))
}

impl Sender {
    /// Binds one unconnected UDP socket per address family in use (to the wildcard address,
    /// so the kernel picks the source for each destination) and encodes the tone frames.
    pub fn new(specs: Vec<StreamSpec>, config: SendConfig) -> io::Result<Sender> {
        let mut v4 = None;
        let mut v6 = None;
        if specs.iter().any(|s| s.dest.is_ipv4()) {
            v4 = Some(send_socket("0.0.0.0:0")?);
        }
        if specs.iter().any(|s| s.dest.is_ipv6()) {
            v6 = Some(send_socket("[::]:0")?);
        }
        let n = specs.len().max(1) as u64;
        let mut frames = HashMap::new();
        let streams = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let offset = if config.stagger {
                    i as u64 * INTERVAL_NS / n
                } else {
                    0
                };
                // `as` saturates: negative and NaN frequencies become 0 Hz (silence).
                let payload = shared_frames(&mut frames, &spec);
                Stream::new(spec, payload, offset)
            })
            .collect();
        Ok(Sender {
            streams,
            v4,
            v6,
            config,
            frames,
            control: None,
        })
    }

    /// A sender with no streams yet, driven through the returned [`StreamControl`] while it
    /// runs. Binds an IPv4 socket, and an IPv6 one where the host has IPv6.
    pub fn dynamic(config: SendConfig) -> io::Result<(Sender, StreamControl)> {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (ev_tx, ev_rx) = mpsc::channel();
        let sent = Arc::new(AtomicU64::new(0));
        let sender = Sender {
            streams: Vec::new(),
            v4: Some(send_socket("0.0.0.0:0")?),
            v6: send_socket("[::]:0").ok(),
            config,
            frames: HashMap::new(),
            control: Some(Control {
                commands: cmd_rx,
                events: ev_tx,
                ids: HashMap::new(),
                free: Vec::new(),
                orphaned: false,
                sent: Arc::clone(&sent),
            }),
        };
        let control = StreamControl {
            commands: cmd_tx,
            events: ev_rx,
            sent,
        };
        Ok((sender, control))
    }

    /// The local address packets to IPv4 destinations come from (port chosen at bind).
    pub fn local_addr_v4(&self) -> Option<SocketAddr> {
        self.v4.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The same for IPv6 destinations (its own socket, so its own port), where bound.
    pub fn local_addr_v6(&self) -> Option<SocketAddr> {
        self.v6.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Runs on a new thread; stop it with [`SenderHandle::stop`] or let `duration` pass.
    pub fn spawn(self, duration: Duration) -> io::Result<SenderHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("rtp-send".into())
            .spawn(move || self.run(duration, &flag))?;
        Ok(SenderHandle { stop, thread })
    }

    /// Sends until `duration` has passed, every stream is finished, or `stop` is set.
    pub fn run(mut self, duration: Duration, stop: &AtomicBool) -> SendReport {
        let cpu_start = thread_cpu_time();
        let start = Instant::now();
        let end_ns = duration.as_nanos().min(u128::from(u64::MAX)) as u64;
        let tick_ns = (self.config.tick.as_nanos() as u64).max(1);
        let cap = self.config.batch.clamp(MAX_PER_SLOT, 1024);
        let mut batch = Batch::new(cap);
        let mut sink = Sink::new(cap, self.v4.as_ref(), self.v6.as_ref());
        let mut report = SendReport {
            per_stream: vec![StreamReport::default(); self.streams.len()],
            ..SendReport::default()
        };
        let mut heap: BinaryHeap<Reverse<(u64, u32)>> = self
            .streams
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.finished())
            .map(|(i, s)| Reverse((s.due_ns, i as u32)))
            .collect();

        while !stop.load(Ordering::Relaxed) {
            let now = start.elapsed().as_nanos() as u64;
            if now >= end_ns {
                break;
            }
            self.apply_commands(now, &mut heap, &mut report);
            while let Some(&Reverse((due, i))) = heap.peek() {
                // Paced, only what is due now goes out (so nothing due after the end does, as
                // now < end); unpaced, the heap's order is the virtual clock.
                if self.config.paced && due > now {
                    break;
                }
                if batch.len + MAX_PER_SLOT > cap {
                    if !self.config.paced {
                        // Unpaced: one batch per pass, so time and `stop` are checked often.
                        break;
                    }
                    sink.send(&mut batch, &self.streams, &mut report);
                }
                heap.pop();
                if self.config.paced {
                    report.max_late = report.max_late.max(Duration::from_nanos(now - due));
                }
                let Some(stream) = self.streams.get_mut(i as usize) else {
                    continue;
                };
                if stream.stopped {
                    stream.in_heap = false;
                    if let Some(c) = &mut self.control {
                        c.free.push(i);
                    }
                } else if stream.paused {
                    stream.skip_slot();
                    heap.push(Reverse((stream.due_ns, i)));
                } else if stream.next(&mut batch, i) {
                    heap.push(Reverse((stream.due_ns, i)));
                } else {
                    stream.in_heap = false;
                }
            }
            sink.send(&mut batch, &self.streams, &mut report);
            if let Some(c) = &self.control {
                c.sent.store(report.packets_sent, Ordering::Relaxed);
            }
            let next_due = match (heap.peek(), &self.control) {
                (Some(&Reverse((due, _))), _) => due,
                // A dynamic sender idles until its caller lets go; new streams may come.
                (None, Some(c)) if !c.orphaned => now + tick_ns,
                (None, _) => break,
            };
            if self.config.paced {
                // Wake at the next tick, or later if nothing is due before then; wake at
                // least every 10 ms to see `stop`, and not after the end.
                let after = start.elapsed().as_nanos() as u64;
                let wake = next_due
                    .max(now + tick_ns)
                    .min(after + 10_000_000)
                    .min(end_ns);
                if wake > after {
                    std::thread::sleep(Duration::from_nanos(wake - after));
                }
            }
        }

        for (r, s) in report.per_stream.iter_mut().zip(&self.streams) {
            r.dropped = s.dropped;
        }
        // Streams still running at the end are stopped by the end: say so, with their counts.
        if let Some(c) = self.control.take() {
            for (id, i) in c.ids {
                if let Some(r) = report.per_stream.get(i as usize) {
                    let _ = c.events.send(StreamEvent::Stopped { id, report: *r });
                }
            }
        }
        report.elapsed = start.elapsed();
        report.cpu_time = thread_cpu_time().saturating_sub(cpu_start);
        report
    }
}

impl Sender {
    /// Drains the dynamic sender's command queue (a fixed sender has none). Runs at the start
    /// of a tick, after the previous tick's batch was sent, so a stopped stream's count is
    /// final when it is reported.
    fn apply_commands(
        &mut self,
        now: u64,
        heap: &mut BinaryHeap<Reverse<(u64, u32)>>,
        report: &mut SendReport,
    ) {
        let Some(mut c) = self.control.take() else {
            return;
        };
        loop {
            let command = match c.commands.try_recv() {
                Ok(command) => command,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    c.orphaned = true;
                    break;
                }
            };
            match command {
                StreamCommand::Add { id, spec } => {
                    if c.ids.contains_key(&id) {
                        continue;
                    }
                    let payload = shared_frames(&mut self.frames, &spec);
                    let stream = Stream::new(*spec, payload, now);
                    let i = match c.free.pop() {
                        Some(i) => {
                            self.streams[i as usize] = stream;
                            report.per_stream[i as usize] = StreamReport::default();
                            i
                        }
                        None => {
                            self.streams.push(stream);
                            report.per_stream.push(StreamReport::default());
                            (self.streams.len() - 1) as u32
                        }
                    };
                    let s = &mut self.streams[i as usize];
                    if s.finished() {
                        s.in_heap = false;
                    } else {
                        heap.push(Reverse((s.due_ns, i)));
                    }
                    c.ids.insert(id, i);
                }
                StreamCommand::Pause(id) => {
                    if let Some(s) = c
                        .ids
                        .get(&id)
                        .and_then(|&i| self.streams.get_mut(i as usize))
                    {
                        s.paused = true;
                    }
                }
                StreamCommand::Resume(id) => {
                    if let Some(s) = c
                        .ids
                        .get(&id)
                        .and_then(|&i| self.streams.get_mut(i as usize))
                    {
                        if s.paused {
                            s.marker = true;
                        }
                        s.paused = false;
                    }
                }
                StreamCommand::Stop(id) => {
                    let mut r = StreamReport::default();
                    if let Some(i) = c.ids.remove(&id)
                        && let Some(s) = self.streams.get_mut(i as usize)
                    {
                        s.stopped = true;
                        if let Some(pr) = report.per_stream.get_mut(i as usize) {
                            pr.dropped = s.dropped;
                            r = *pr;
                        }
                        if !s.in_heap {
                            c.free.push(i);
                        }
                    }
                    let _ = c.events.send(StreamEvent::Stopped { id, report: r });
                }
            }
        }
        self.control = Some(c);
    }
}

/// The encoded tone period for `spec`, encoded once and shared.
fn shared_frames(
    frames: &mut HashMap<(u32, i16, Codec), Arc<[u8]>>,
    spec: &StreamSpec,
) -> Arc<[u8]> {
    // `as` saturates: negative and NaN frequencies become 0 Hz (silence).
    let hz = spec.tone_hz.round() as u32;
    frames
        .entry((hz, spec.amplitude, spec.codec))
        .or_insert_with(|| encode_period(hz, spec.amplitude, spec.codec))
        .clone()
}

fn send_socket(bind: &str) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(bind)?;
    // A large send buffer so a burst of one tick never blocks in sendmmsg. Best effort: the
    // kernel caps it at net.core.wmem_max, and a smaller buffer only costs speed.
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&size`, which lives across
    // the call; the descriptor is owned by `sock`.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(sock)
}

/// One whole tone period of encoded 20 ms frames, back to back.
fn encode_period(hz: u32, amplitude: i16, codec: Codec) -> Arc<[u8]> {
    match codec {
        Codec::Pcmu | Codec::Pcma => {
            let frames = frames_per_period(hz);
            let mut tone = Tone::new(hz as f32, amplitude);
            let law = if codec == Codec::Pcmu {
                linear_to_ulaw
            } else {
                linear_to_alaw
            };
            (0..frames * FRAME_SAMPLES)
                .map(|_| law(tone.next_sample()))
                .collect()
        }
        Codec::G722 => encode_g722_period(hz, amplitude),
    }
}

/// G.722 frames of a 16 kHz tone. The samples repeat after `frames_per_period_at` frames;
/// ADPCM state does not, so two periods are encoded and the second is kept: the encoder has
/// settled on the tone by then and the seam where the period repeats is inaudible to a
/// Goertzel check.
fn encode_g722_period(hz: u32, amplitude: i16) -> Arc<[u8]> {
    let rate = Codec::G722.sample_rate();
    let frames = frames_per_period_at(hz, rate);
    let mut tone = Tone::at_rate(hz as f32, amplitude, rate);
    let samples: Vec<i16> = (0..2 * frames * (rate / 50) as usize)
        .map(|_| tone.next_sample())
        .collect();
    let mut out = Vec::with_capacity(samples.len() / 2);
    crate::codec::g722::Encoder::new().encode(&samples, &mut out);
    // G.722 puts one byte on the wire per two 16 kHz samples: a 20 ms frame is 160 bytes.
    out.split_off(frames * FRAME_SAMPLES).into()
}

/// Thread CPU time (user + system) from getrusage(RUSAGE_THREAD); zero if it fails.
fn thread_cpu_time() -> Duration {
    // SAFETY: getrusage writes one `struct rusage` into the zeroed value we own.
    let (rc, ru) = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_THREAD, &mut ru), ru)
    };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A sorted list of packet indices, read in increasing order.
#[derive(Debug, Default)]
struct IndexSet {
    indices: Vec<u64>,
    next: usize,
}

impl IndexSet {
    fn new(mut indices: Vec<u64>) -> IndexSet {
        indices.sort_unstable();
        indices.dedup();
        IndexSet { indices, next: 0 }
    }

    /// Whether `k` is in the set; calls must come with non-decreasing `k`.
    fn hit(&mut self, k: u64) -> bool {
        while self.indices.get(self.next).is_some_and(|&x| x < k) {
            self.next += 1;
        }
        if self.indices.get(self.next) == Some(&k) {
            self.next += 1;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Body {
    /// Byte offset of the frame in the stream's encoded tone period.
    Audio(usize),
    Event([u8; 4]),
}

/// One packet before it is written: everything the header needs, and where the payload is.
#[derive(Clone, Copy, Debug)]
struct Packet {
    marker: bool,
    payload_type: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    body: Body,
    copies: u8,
}

#[derive(Clone, Copy, Debug)]
struct ActiveEvent {
    spec: DtmfSpec,
    ts: u32,
    sent: u16,
}

/// A stream's running state.
struct Stream {
    addr: RawAddr,
    payload_type: u8,
    dtmf_payload_type: u8,
    ssrc: u32,
    /// Sequence number and timestamp of the next packet slot.
    seq: u16,
    ts: u32,
    /// Index of the next packet slot, and when it is due (ns from the run's start).
    slot: u64,
    due_ns: u64,
    /// Next packet starts a talkspurt (first packet, after hold, after an SSRC change): RFC
    /// 3551 §4.1 sets the marker bit there.
    marker: bool,
    frames: Arc<[u8]>,
    frame: usize,
    max_packets: Option<u64>,
    drop: IndexSet,
    swap: IndexSet,
    duplicate: IndexSet,
    ssrc_change: Option<SsrcChange>,
    holds: Vec<Hold>,
    next_hold: usize,
    dtmf: Vec<DtmfSpec>,
    next_dtmf: usize,
    event: Option<ActiveEvent>,
    /// A packet waiting to go out after its successor (swap).
    held_back: Option<Packet>,
    dropped: u64,
    protect: Option<Protect>,
    /// Held: slots pass without packets (dynamic senders only).
    paused: bool,
    /// Ended by the caller; its heap entry frees the slot when it comes up.
    stopped: bool,
    /// The heap holds an entry for this stream.
    in_heap: bool,
}

impl Stream {
    fn new(spec: StreamSpec, frames: Arc<[u8]>, offset_ns: u64) -> Stream {
        let imp = spec.impairments;
        let mut holds = imp.holds;
        holds.sort_by_key(|h| h.at_packet);
        let mut dtmf = spec.dtmf;
        dtmf.sort_by_key(|d| d.at_packet);
        let mut s = Stream {
            addr: RawAddr::new(spec.dest),
            payload_type: spec.payload_type & 0x7F,
            dtmf_payload_type: spec.dtmf_payload_type & 0x7F,
            ssrc: spec.ssrc,
            seq: spec.first_seq,
            ts: spec.first_ts,
            slot: 0,
            due_ns: offset_ns.saturating_add(imp.start_delay.as_nanos() as u64),
            marker: true,
            frames,
            frame: 0,
            max_packets: spec.max_packets,
            drop: IndexSet::new(imp.drop),
            swap: IndexSet::new(imp.swap),
            duplicate: IndexSet::new(imp.duplicate),
            ssrc_change: imp.ssrc_change,
            holds,
            next_hold: 0,
            dtmf,
            next_dtmf: 0,
            event: None,
            held_back: None,
            dropped: 0,
            protect: spec.protect,
            paused: false,
            stopped: false,
            in_heap: true,
        };
        s.enter_slot();
        s
    }

    /// A slot passes in silence: the sampling clock (timestamp) and the schedule move on, the
    /// sequence number does not (RFC 3550 §5.1: it counts packets sent).
    fn skip_slot(&mut self) {
        self.ts = self.ts.wrapping_add(TS_PER_PACKET);
        self.due_ns = self.due_ns.saturating_add(INTERVAL_NS);
    }

    fn finished(&self) -> bool {
        self.max_packets.is_some_and(|m| self.slot >= m)
    }

    /// Applies what happens before slot `self.slot`: holds and the SSRC change.
    fn enter_slot(&mut self) {
        while let Some(h) = self.holds.get(self.next_hold)
            && h.at_packet <= self.slot
        {
            if h.at_packet == self.slot {
                let gap_ns = h.gap.as_nanos();
                self.due_ns = self.due_ns.saturating_add(gap_ns as u64);
                // Samples at 8 kHz; truncated to whole samples, as a sampling clock would.
                let samples = gap_ns * u128::from(SAMPLE_RATE) / 1_000_000_000;
                self.ts = self.ts.wrapping_add(samples as u32);
                self.marker = true;
            }
            self.next_hold += 1;
        }
        if let Some(c) = self.ssrc_change
            && c.at_packet == self.slot
        {
            self.ssrc = c.new_ssrc;
            self.seq = rand::random();
            self.ts = rand::random();
            self.marker = true;
        }
    }

    /// Produces slot `self.slot` into `batch` (after impairments) and moves to the next
    /// slot; returns whether the stream has another slot.
    fn next(&mut self, batch: &mut Batch, owner: u32) -> bool {
        if self.finished() {
            return false;
        }
        let k = self.slot;
        let mut packet = self.build(k);
        if self.duplicate.hit(k) {
            packet.copies = 2;
        }
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(TS_PER_PACKET);
        self.slot += 1;
        self.due_ns = self.due_ns.saturating_add(INTERVAL_NS);
        self.enter_slot();

        if self.drop.hit(k) {
            self.dropped += 1;
            if let Some(p) = self.held_back.take() {
                self.emit(p, batch, owner);
            }
        } else if self.swap.hit(k) {
            if let Some(p) = self.held_back.replace(packet) {
                self.emit(p, batch, owner);
            }
        } else {
            self.emit(packet, batch, owner);
            if let Some(p) = self.held_back.take() {
                self.emit(p, batch, owner);
            }
        }
        if self.finished() {
            // A packet swapped with a successor that never comes still goes out.
            if let Some(p) = self.held_back.take() {
                self.emit(p, batch, owner);
            }
            return false;
        }
        true
    }

    /// The packet for slot `k`: a telephone-event packet while an event runs, else audio.
    fn build(&mut self, k: u64) -> Packet {
        if self.event.is_none()
            && let Some(d) = self.dtmf.get(self.next_dtmf)
            && d.at_packet <= k
        {
            // An event due while another ran starts right after it.
            self.event = Some(ActiveEvent {
                spec: *d,
                ts: self.ts,
                sent: 0,
            });
            self.next_dtmf += 1;
        }
        let mut packet = Packet {
            marker: false,
            payload_type: self.payload_type,
            seq: self.seq,
            ts: self.ts,
            ssrc: self.ssrc,
            body: Body::Audio(self.frame * FRAME_SAMPLES),
            copies: 1,
        };
        if let Some(ev) = &mut self.event {
            let n = ev.spec.packets.max(1);
            let j = ev.sent;
            let end = j + 1 >= n;
            // Duration so far: 160 per packet up to the final one, which is then repeated.
            let duration = (u32::from(j.min(n - 1)) + 1) * TS_PER_PACKET;
            let duration = u16::try_from(duration).unwrap_or(u16::MAX);
            packet.marker = j == 0;
            packet.payload_type = self.dtmf_payload_type;
            packet.ts = ev.ts;
            packet.body = Body::Event(telephone_event(
                ev.spec.event,
                end,
                ev.spec.volume,
                duration,
            ));
            ev.sent += 1;
            if ev.sent >= n.saturating_add(2) {
                self.event = None;
            }
        } else {
            packet.marker = std::mem::take(&mut self.marker);
            self.frame = (self.frame + 1) % (self.frames.len() / FRAME_SAMPLES).max(1);
        }
        packet
    }

    /// Writes `packet` (and its duplicate) into the batch, through `protect`.
    fn emit(&mut self, packet: Packet, batch: &mut Batch, owner: u32) {
        for _ in 0..packet.copies {
            let buf = batch.push(owner);
            buf.push(0x80); // V=2, no padding, no extension, no CSRC
            buf.push((u8::from(packet.marker) << 7) | packet.payload_type);
            buf.extend_from_slice(&packet.seq.to_be_bytes());
            buf.extend_from_slice(&packet.ts.to_be_bytes());
            buf.extend_from_slice(&packet.ssrc.to_be_bytes());
            match packet.body {
                Body::Audio(at) => {
                    let frame = self.frames.get(at..at + FRAME_SAMPLES).unwrap_or(&[]);
                    buf.extend_from_slice(frame);
                }
                Body::Event(p) => buf.extend_from_slice(&p),
            }
            if let Some(protect) = &mut self.protect {
                protect(buf);
            }
        }
    }
}

/// Packet buffers of one batch, reused across batches so sending allocates nothing.
struct Batch {
    bufs: Vec<Vec<u8>>,
    owners: Vec<u32>,
    len: usize,
}

impl Batch {
    fn new(cap: usize) -> Batch {
        Batch {
            // 12 + 160 bytes, plus room for an SRTP tag and MKI.
            bufs: (0..cap).map(|_| Vec::with_capacity(256)).collect(),
            owners: vec![0; cap],
            len: 0,
        }
    }

    /// An empty buffer for the next packet of stream `owner`.
    fn push(&mut self, owner: u32) -> &mut Vec<u8> {
        if self.len == self.bufs.len() {
            // Callers flush before a batch can overflow; growing keeps this panic-free.
            self.bufs.push(Vec::with_capacity(256));
            self.owners.push(0);
        }
        let i = self.len;
        self.len += 1;
        self.owners[i] = owner;
        let buf = &mut self.bufs[i];
        buf.clear();
        buf
    }
}

/// A destination in the form `sendmmsg` takes.
#[derive(Clone, Copy)]
enum RawAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawAddr {
    fn new(addr: SocketAddr) -> RawAddr {
        match addr {
            SocketAddr::V4(a) => RawAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => RawAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    fn is_v6(&self) -> bool {
        matches!(self, RawAddr::V6(_))
    }

    fn as_ptr_len(&self) -> (*const libc::c_void, libc::socklen_t) {
        match self {
            RawAddr::V4(a) => (
                (a as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            RawAddr::V6(a) => (
                (a as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// The `sendmmsg` side: header arrays reused across batches. Lives only inside
/// [`Sender::run`], because its raw pointers make it neither `Send` nor safe to keep around.
struct Sink {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    v4: Option<libc::c_int>,
    v6: Option<libc::c_int>,
}

impl Sink {
    fn new(cap: usize, v4: Option<&UdpSocket>, v6: Option<&UdpSocket>) -> Sink {
        Sink {
            // SAFETY: mmsghdr and iovec are plain C structs for which all-zero (null
            // pointers, zero lengths) is a valid value.
            hdrs: (0..cap).map(|_| unsafe { std::mem::zeroed() }).collect(),
            iovs: (0..cap).map(|_| unsafe { std::mem::zeroed() }).collect(),
            v4: v4.map(AsRawFd::as_raw_fd),
            v6: v6.map(AsRawFd::as_raw_fd),
        }
    }

    /// Sends every packet in `batch`, in order, and empties it. Runs of packets to the same
    /// address family go in one `sendmmsg` call each.
    fn send(&mut self, batch: &mut Batch, streams: &[Stream], report: &mut SendReport) {
        let n = batch.len;
        batch.len = 0;
        if self.hdrs.len() < n {
            // SAFETY: as in `new`.
            self.hdrs.resize_with(n, || unsafe { std::mem::zeroed() });
            self.iovs.resize_with(n, || unsafe { std::mem::zeroed() });
        }
        let mut start = 0;
        while start < n {
            let v6 = streams
                .get(batch.owners[start] as usize)
                .is_some_and(|s| s.addr.is_v6());
            let mut end = start;
            while end < n
                && streams
                    .get(batch.owners[end] as usize)
                    .is_some_and(|s| s.addr.is_v6() == v6)
            {
                end += 1;
            }
            if end == start {
                // Owner out of range: cannot happen; skip rather than loop forever.
                start += 1;
                continue;
            }
            let fd = if v6 { self.v6 } else { self.v4 };
            self.send_run(fd, start, end, batch, streams, report);
            start = end;
        }
    }

    fn send_run(
        &mut self,
        fd: Option<libc::c_int>,
        start: usize,
        end: usize,
        batch: &Batch,
        streams: &[Stream],
        report: &mut SendReport,
    ) {
        let Some(fd) = fd else {
            report.send_errors += (end - start) as u64;
            return;
        };
        for i in start..end {
            let buf = &batch.bufs[i];
            let Some(stream) = streams.get(batch.owners[i] as usize) else {
                continue;
            };
            let (name, namelen) = stream.addr.as_ptr_len();
            self.iovs[i] = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            let h = &mut self.hdrs[i].msg_hdr;
            // The kernel only reads the name and the iovec: the casts to *mut are for the C
            // signature, nothing is written through them.
            h.msg_name = name as *mut libc::c_void;
            h.msg_namelen = namelen;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut i = start;
        while i < end {
            // SAFETY: hdrs[i..end] were filled above; each points at one iovec in
            // `self.iovs`, one buffer in `batch` and one address in `streams`, all of which
            // outlive this call and are not moved or written during it.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(i),
                    (end - i) as libc::c_uint,
                    0,
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Message `i` failed: count it and go on with the next one.
                report.send_errors += 1;
                report.last_send_error = Some(err.to_string());
                i += 1;
                continue;
            }
            let sent = (rc as usize).min(end - i);
            if sent == 0 {
                report.send_errors += 1;
                i += 1;
                continue;
            }
            for j in i..i + sent {
                let len = batch.bufs[j].len() as u64;
                report.packets_sent += 1;
                report.bytes += len;
                if let Some(r) = report.per_stream.get_mut(batch.owners[j] as usize) {
                    r.packets += 1;
                    r.bytes += len;
                }
            }
            i += sent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max: u64) -> StreamSpec {
        let mut s = StreamSpec::new("127.0.0.1:9".parse().unwrap(), 0x1234, 1000.0);
        s.first_seq = 65530;
        s.first_ts = 1000;
        s.max_packets = Some(max);
        s
    }

    /// (seq, ts, ssrc, marker, pt, payload) of one packet written by a stream.
    type Sent = (u16, u32, u32, bool, u8, Vec<u8>);

    /// Drives one stream without sockets: the packets it writes and each slot's due time.
    fn drive(spec: StreamSpec) -> (Vec<Sent>, Vec<u64>) {
        let frames = encode_period(spec.tone_hz as u32, spec.amplitude, spec.codec);
        let mut s = Stream::new(spec, frames, 0);
        let mut batch = Batch::new(8);
        let mut out = Vec::new();
        let mut dues = Vec::new();
        loop {
            dues.push(s.due_ns);
            let more = s.next(&mut batch, 0);
            for b in &batch.bufs[..batch.len] {
                out.push((
                    u16::from_be_bytes([b[2], b[3]]),
                    u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                    b[1] & 0x80 != 0,
                    b[1] & 0x7F,
                    b[12..].to_vec(),
                ));
            }
            batch.len = 0;
            if !more {
                break;
            }
        }
        (out, dues)
    }

    #[test]
    fn plain_stream_counts_up_and_wraps() {
        let (pkts, dues) = drive(spec(10));
        assert_eq!(pkts.len(), 10);
        for (i, p) in pkts.iter().enumerate() {
            assert_eq!(p.0, 65530u16.wrapping_add(i as u16));
            assert_eq!(p.1, 1000 + 160 * i as u32);
            assert_eq!(p.2, 0x1234);
            assert_eq!(p.3, i == 0, "marker only on the first packet");
            assert_eq!(p.4, 0);
            assert_eq!(p.5.len(), 160);
        }
        assert_eq!(dues[1] - dues[0], INTERVAL_NS);
    }

    #[test]
    fn impairments_shape_the_sequence() {
        let mut s = spec(10);
        s.impairments.drop = vec![2];
        s.impairments.swap = vec![4];
        s.impairments.duplicate = vec![7];
        let (pkts, _) = drive(s);
        let seqs: Vec<u16> = pkts.iter().map(|p| p.0.wrapping_sub(65530)).collect();
        assert_eq!(seqs, [0, 1, 3, 5, 4, 6, 7, 7, 8, 9]);
    }

    #[test]
    fn swapped_last_packet_still_goes_out() {
        let mut s = spec(3);
        s.impairments.swap = vec![2];
        let (pkts, _) = drive(s);
        assert_eq!(pkts.len(), 3);
    }

    #[test]
    fn hold_moves_time_and_timestamp() {
        let mut s = spec(6);
        s.impairments.holds = vec![Hold {
            at_packet: 3,
            gap: Duration::from_millis(500),
        }];
        let (pkts, dues) = drive(s);
        assert_eq!(pkts[3].0, pkts[2].0.wrapping_add(1));
        assert_eq!(pkts[3].1 - pkts[2].1, 160 + 4000);
        assert!(pkts[3].3, "marker after hold");
        assert_eq!(dues[3] - dues[2], INTERVAL_NS + 500_000_000);
    }

    #[test]
    fn dtmf_replaces_audio() {
        let mut s = spec(10);
        s.dtmf = vec![DtmfSpec {
            at_packet: 2,
            event: 5,
            volume: 10,
            packets: 3,
        }];
        let (pkts, _) = drive(s);
        let ev: Vec<_> = pkts.iter().filter(|p| p.4 == DTMF_PAYLOAD_TYPE).collect();
        assert_eq!(ev.len(), 5);
        assert!(ev.iter().all(|p| p.1 == pkts[2].1));
        let durations: Vec<u16> = ev
            .iter()
            .map(|p| u16::from_be_bytes([p.5[2], p.5[3]]))
            .collect();
        assert_eq!(durations, [160, 320, 480, 480, 480]);
        let ends: Vec<bool> = ev.iter().map(|p| p.5[1] & 0x80 != 0).collect();
        assert_eq!(ends, [false, false, true, true, true]);
        assert!(ev[0].3 && !ev[1].3);
        assert_eq!(pkts[7].4, 0);
        assert_eq!(pkts[7].1, pkts[2].1 + 5 * 160);
    }

    #[test]
    fn index_set_reads_in_order() {
        let mut s = IndexSet::new(vec![5, 1, 5, 3]);
        let hits: Vec<u64> = (0..7).filter(|&k| s.hit(k)).collect();
        assert_eq!(hits, [1, 3, 5]);
    }
}
