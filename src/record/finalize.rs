//! From a journal and a [`RecordingMeta`] to audio files (DESIGN §4). Runs on the writer thread
//! at session end, or in the crash scan; never on the media hot path.
//!
//! Owns: the timeline (placement of packets by RTP timestamp), channel layout, the choice of
//! WAV encoding, decoding, the stored (not decoded) per-stream files, DTMF digits and the stream
//! counters computed from the journal. Must not: touch the spool's files itself: it writes into
//! any `Write` the spool hands it, so crash-safe file handling stays in one place (`spool`).
//!
//! ## Timeline
//!
//! t = 0 is `started_at` (the 200 OK); the end is `ended_at`; every channel spans exactly
//! `duration_ms`. A stream's packets are placed by RTP timestamp, anchored at the arrival time
//! of the first packet of each SSRC: `offset = (first_arrival - t0) * clock + (ts - first_ts)`,
//! with `ts - first_ts` taken on an extended (wrap-free) timestamp. A new SSRC, or a confirmed
//! sequence restart within one, re-anchors at its own first packet. Gaps (loss, hold, late start)
//! are silence, late packets fill their slot, packets before t = 0 or after the end are clipped.
//! Where packets overlap, the one placed later on the timeline wins, and for the same slot the
//! later journal record.
//!
//! Rendering is windowed: each channel keeps a short buffer from the current window's start to
//! the end of the furthest packet applied, so memory stays bounded by the window and the packet
//! size, not the call length (a 4-hour call does not need 4 hours of samples in memory).
//!
//! ## Layout and encodings
//!
//! `audio.wav` has one channel per G.711 or G.722 stream, in `streams[]` order (already channel
//! order). All PCMU: mu-law WAV; all PCMA: A-law WAV; mixed, or `record.audio = "wav-pcm16"`:
//! 16-bit PCM at 8 kHz; any G.722: 16-bit PCM at 16 kHz (G.711 channels upsampled). When no
//! stream is G.711 or G.722 (all Opus, say), a silent mono mu-law `audio.wav` spanning the
//! timeline is still written, so every recording folder has the same shape for tools.
//! Opus streams become `<label>.opus` (Ogg/Opus, RFC 7845, gaps filled with TOC-only packets so
//! its timeline matches), G.729 `<label>.g729` (raw payloads in timeline order, no gap filling:
//! G.729 has no standard container), other codecs `<label>.raw`.

use std::io::{self, Write};

use crate::codec::{Codec, g711, g722, ogg};
use crate::media::dtmf::DtmfTracker;
use crate::media::rtp::{FIXED_HEADER_LEN, RtpHeader};
use crate::media::stream::{PacketVerdict, StreamState};

use super::journal::{HeaderError, JournalReader, RecordKind, Tail};
use super::model::{DtmfRecord, RecordingMeta};
use super::wav::{self, WavFormat};

/// `record.audio` (DESIGN §5): how G.711 is written to `audio.wav`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AudioFormat {
    /// G.711 stored as is (mu-law or A-law WAV) when every stream uses the same law.
    #[default]
    WavG711,
    /// Always decoded to 16-bit PCM.
    WavPcm16,
}

impl AudioFormat {
    /// From the config value (`wav-g711`, `wav-pcm16`).
    pub fn parse(s: &str) -> Option<AudioFormat> {
        match s {
            "wav-g711" => Some(AudioFormat::WavG711),
            "wav-pcm16" => Some(AudioFormat::WavPcm16),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AudioFormat::WavG711 => "wav-g711",
            AudioFormat::WavPcm16 => "wav-pcm16",
        }
    }
}

/// Frames rendered per window.
const WINDOW: usize = 8192;

/// One accepted packet on a stream's timeline.
#[derive(Clone, Copy, Debug)]
struct Entry<'a> {
    /// Position in RTP clock units from t = 0 (negative: before the 200 OK).
    start: i64,
    /// Journal order, the tie-break for the same slot.
    idx: u32,
    codec: Codec,
    /// Anchor generation: a G.722 decoder restarts when it changes.
    epoch: u32,
    payload: &'a [u8],
}

/// Extended-timestamp anchor of one SSRC.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    ssrc: u32,
    /// Timeline position (clock units) of extended timestamp 0.
    base: i64,
    last_ts: u32,
    last_ext: i64,
    epoch: u32,
}

impl Anchor {
    /// Position of `ts`, measured from the last timestamp seen (so wraps and reordering within
    /// ±2^31 units resolve to the nearest).
    fn position(&self, ts: u32) -> i64 {
        self.base + self.last_ext + i64::from(ts.wrapping_sub(self.last_ts) as i32)
    }
}

/// What finalize knows about one stream of `meta.streams`.
struct StreamPlan<'a> {
    codec: Codec,
    /// The payload type the SDP gave the codec; other types are told by RFC 3551 number.
    payload_type: u8,
    clock: u32,
    entries: Vec<Entry<'a>>,
    state: StreamState,
    anchors: Vec<Anchor>,
    epochs: u32,
    tracker: DtmfTracker,
    last_ssrc: Option<u32>,
    dtmf: Vec<DtmfRecord>,
}

/// RTP clock of a codec: fixed by RFC 3551 / RFC 7587 where it is, else what the SDP said.
fn rtp_clock(codec: Codec, sdp_clock: u32) -> u32 {
    match codec {
        Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::G729 => 8000,
        Codec::Opus => 48_000,
        Codec::Other => {
            if sdp_clock == 0 {
                8000
            } else {
                sdp_clock
            }
        }
    }
}

impl<'a> StreamPlan<'a> {
    fn new(codec: Codec, payload_type: u8, sdp_clock: u32) -> StreamPlan<'a> {
        StreamPlan {
            codec,
            payload_type,
            clock: rtp_clock(codec, sdp_clock),
            entries: Vec::new(),
            state: StreamState::new(),
            anchors: Vec::new(),
            epochs: 0,
            tracker: DtmfTracker::new(),
            last_ssrc: None,
            dtmf: Vec::new(),
        }
    }

    /// Places one accepted packet: returns its timeline position and anchor epoch.
    fn place(&mut self, ssrc: u32, ts: u32, arrival_ns: u64, t0_ns: i128, reanchor: bool) -> (i64, u32) {
        self.last_ssrc = Some(ssrc);
        let found = self.anchors.iter().position(|a| a.ssrc == ssrc);
        if let (Some(i), false) = (found, reanchor) {
            let a = &mut self.anchors[i];
            let pos = a.position(ts);
            a.last_ext = pos - a.base;
            a.last_ts = ts;
            return (pos, a.epoch);
        }
        // (arrival - t0) in clock units, floored; i128 so no clock or time can overflow.
        let ns = i128::from(arrival_ns) - t0_ns;
        let base = (ns * i128::from(self.clock)).div_euclid(1_000_000_000);
        let base = i64::try_from(base).unwrap_or(if base < 0 { i64::MIN / 2 } else { i64::MAX / 2 });
        self.epochs += 1;
        let anchor = Anchor {
            ssrc,
            base,
            last_ts: ts,
            last_ext: 0,
            epoch: self.epochs,
        };
        match found {
            Some(i) => self.anchors[i] = anchor,
            None => self.anchors.push(anchor),
        }
        (base, self.epochs)
    }

    /// Moves completed digits out of the tracker onto the timeline, using `ssrc`'s anchor.
    fn drain_digits(&mut self, ssrc: Option<u32>) {
        if self.tracker.digits().is_empty() {
            return;
        }
        let anchor = ssrc.and_then(|s| self.anchors.iter().find(|a| a.ssrc == s).copied());
        let clock = u64::from(self.clock);
        for d in self.tracker.drain_digits() {
            let (Some(c), Some(a)) = (d.char(), anchor) else {
                continue;
            };
            let at = a.position(d.start_timestamp).max(0) as u64;
            self.dtmf.push(DtmfRecord {
                digit: c.to_string(),
                at_ms: at.saturating_mul(1000) / clock,
                duration_ms: u64::from(d.duration) * 1000 / clock,
            });
        }
    }
}

/// A journal read against a recording's streams: placements, counters and digits.
pub struct Plan<'a> {
    streams: Vec<StreamPlan<'a>>,
    /// Problems worth a line in `recording.json` `warnings[]`.
    pub warnings: Vec<String>,
    /// Arrival time of the last record (CLOCK_REALTIME ns), if any.
    pub last_arrival_ns: Option<u64>,
    /// Records read.
    pub records: u64,
}

fn ns_since_epoch(t: std::time::SystemTime) -> i128 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

impl<'a> Plan<'a> {
    /// Reads every record of `journal` (the bytes of `journal.bin`). A journal too short to
    /// hold its header is empty (the writer died before its first commit); a foreign or newer
    /// file is an error, so the spool quarantines it rather than writing silence over it.
    pub fn new(journal: &'a [u8], meta: &RecordingMeta) -> io::Result<Plan<'a>> {
        let mut streams: Vec<StreamPlan<'a>> = meta
            .streams
            .iter()
            .map(|s| StreamPlan::new(Codec::from_name(&s.codec), s.payload_type, s.clock_rate))
            .collect();
        let mut plan = Plan {
            streams: Vec::new(),
            warnings: Vec::new(),
            last_arrival_ns: None,
            records: 0,
        };
        let mut reader = match JournalReader::new(journal) {
            Ok(r) => r,
            Err(HeaderError::Truncated) => {
                plan.streams = streams;
                return Ok(plan);
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        };

        // Journal `stream` is the m-line index. Sessions saved before `mline` existed have it
        // 0 everywhere: then the only guess is position.
        let mlines: Vec<usize> = meta.streams.iter().map(|s| s.mline).collect();
        let distinct = mlines
            .iter()
            .enumerate()
            .all(|(i, m)| !mlines[..i].contains(m));
        if !distinct {
            plan.warnings
                .push("streams have no distinct m-line index: journal mapped by position".into());
        }
        let index_of = |m: u16| -> Option<usize> {
            let m = usize::from(m);
            if distinct {
                mlines.iter().position(|&x| x == m)
            } else {
                (m < mlines.len()).then_some(m)
            }
        };

        let t0 = ns_since_epoch(meta.started_at);
        let mut unknown = 0u64;
        let mut idx = 0u32;
        for rec in reader.by_ref() {
            plan.records += 1;
            plan.last_arrival_ns = Some(plan.last_arrival_ns.unwrap_or(0).max(rec.arrival_ns));
            if rec.kind == RecordKind::StreamEnd {
                continue;
            }
            let Some(sp) = index_of(rec.stream).and_then(|i| streams.get_mut(i)) else {
                unknown += 1;
                continue;
            };
            let h = RtpHeader {
                version: 2,
                padding: false,
                extension: false,
                csrc_count: 0,
                marker: rec.marker,
                payload_type: rec.payload_type,
                sequence: rec.seq,
                timestamp: rec.timestamp,
                ssrc: rec.ssrc,
                header_len: FIXED_HEADER_LEN,
                payload_len: rec.payload.len(),
            };
            // The same bookkeeping the media thread ran: a record it would have dropped
            // (a duplicate journaled twice) is dropped here too, so nothing counts double.
            let restarts = sp.state.restarts();
            let PacketVerdict::Accept { new_ssrc, .. } = sp.state.on_packet(&h, rec.arrival_ns)
            else {
                continue;
            };
            let reanchor = new_ssrc || sp.state.restarts() != restarts;
            let (start, epoch) = sp.place(rec.ssrc, rec.timestamp, rec.arrival_ns, t0, reanchor);
            match rec.kind {
                RecordKind::Audio => {
                    let codec = if rec.payload_type == sp.payload_type {
                        sp.codec
                    } else {
                        Codec::from_static_payload_type(rec.payload_type).unwrap_or(Codec::Other)
                    };
                    sp.entries.push(Entry {
                        start,
                        idx,
                        codec,
                        epoch,
                        payload: rec.payload,
                    });
                    idx = idx.wrapping_add(1);
                }
                RecordKind::Event => {
                    sp.tracker.on_packet(rec.timestamp, rec.payload);
                    sp.drain_digits(Some(rec.ssrc));
                }
                RecordKind::StreamEnd => {}
            }
        }
        if reader.tail() == Tail::Corrupt {
            plan.warnings.push(format!(
                "journal.bin has a corrupt record at byte {}: later records were not used",
                reader.offset()
            ));
        }
        if unknown > 0 {
            plan.warnings
                .push(format!("{unknown} journal records name no stream of this recording"));
        }
        for sp in &mut streams {
            sp.tracker.flush();
            let last = sp.last_ssrc;
            sp.drain_digits(last);
            sp.entries.sort_by_key(|e| (e.start, e.idx));
        }
        plan.streams = streams;
        Ok(plan)
    }

    /// Writes the journal's counters into `meta.streams`: `packets` (records that went into
    /// the recording), `lost` (RFC 3550, over the stream's SSRCs), `ssrcs`, `dtmf`.
    /// `duplicates`, `srtp_failures` and `foreign` are the media thread's and stay.
    pub fn apply_counters(&self, meta: &mut RecordingMeta) {
        for (s, sp) in meta.streams.iter_mut().zip(&self.streams) {
            s.packets = sp.state.packets();
            s.lost = sp.state.lost();
            s.ssrcs = sp.state.ssrcs().to_vec();
            s.dtmf = sp.dtmf.clone();
        }
    }

    /// Whether any stream has an accepted packet.
    pub fn has_media(&self) -> bool {
        self.streams.iter().any(|s| s.state.packets() > 0)
    }

    /// The `audio.wav` layout for `meta` with this journal's packets.
    pub fn layout(&self, meta: &RecordingMeta, audio: AudioFormat) -> WavLayout {
        layout_of(meta, audio, |i| {
            self.streams
                .get(i)
                .map(|s| s.entries.iter().map(|e| e.codec).collect())
                .unwrap_or_default()
        })
    }

    /// Writes `audio.wav` (header, samples, pad byte) to `out`; returns the bytes written.
    pub fn write_wav<W: Write>(
        &self,
        meta: &RecordingMeta,
        audio: AudioFormat,
        out: &mut W,
    ) -> io::Result<u64> {
        let layout = self.layout(meta, audio);
        let frames = layout.frames(meta);
        if layout.channels.is_empty() {
            return wav::write_silent(out, layout.format, 1, layout.rate, frames);
        }
        let nch = u16::try_from(layout.channels.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "too many channels for a WAV file")
        })?;
        wav::write_header(out, layout.format, nch, layout.rate, frames)?;
        let k = i64::from(layout.rate / 8000);
        let entries = |i: usize| self.streams.get(i).map_or(&[][..], |s| &s.entries[..]);
        let data = match layout.format {
            WavFormat::MuLaw | WavFormat::ALaw => {
                let law = if layout.format == WavFormat::MuLaw {
                    Codec::Pcmu
                } else {
                    Codec::Pcma
                };
                let mut chans: Vec<LawChannel> = layout
                    .channels
                    .iter()
                    .map(|&i| LawChannel {
                        entries: entries(i),
                        next: 0,
                        law,
                        tl: Timeline::new(layout.format.silence_byte()),
                    })
                    .collect();
                render(&mut chans, frames, out, |b: &u8, o: &mut Vec<u8>| o.push(*b))?
            }
            WavFormat::Pcm16 => {
                let mut chans: Vec<PcmChannel> = layout
                    .channels
                    .iter()
                    .map(|&i| PcmChannel::new(entries(i), k))
                    .collect();
                render(&mut chans, frames, out, |s: &i16, o: &mut Vec<u8>| {
                    o.extend_from_slice(&s.to_le_bytes())
                })?
            }
        };
        if data % 2 == 1 {
            out.write_all(&[layout.format.silence_byte()])?;
        }
        Ok(layout.format.header_len() + data + data % 2)
    }

    /// Files stored per stream (not in `audio.wav`): `(stream index, file name)`.
    pub fn stored_files(&self, meta: &RecordingMeta) -> Vec<(usize, String)> {
        stored_file_names(meta)
            .into_iter()
            .filter(|(i, name)| {
                // Unknown codecs get a file only when something arrived.
                !name.ends_with(".raw") || self.streams.get(*i).is_some_and(|s| !s.entries.is_empty())
            })
            .collect()
    }

    /// Writes the stored file of stream `index` (see [`Plan::stored_files`]); returns bytes.
    pub fn write_stored<W: Write>(
        &self,
        meta: &RecordingMeta,
        index: usize,
        out: &mut W,
    ) -> io::Result<u64> {
        let Some(sp) = self.streams.get(index) else {
            return Ok(0);
        };
        match sp.codec {
            Codec::Opus => write_opus(&sp.entries, meta.duration_ms(), index as u32 + 1, out),
            _ => {
                // Raw payloads in timeline order, each slot once (the later record wins).
                let mut n = 0u64;
                let wanted = sp.codec;
                let mut it = sp
                    .entries
                    .iter()
                    .filter(|e| e.codec == wanted)
                    .peekable();
                while let Some(e) = it.next() {
                    if it.peek().is_some_and(|next| next.start == e.start) {
                        continue;
                    }
                    out.write_all(e.payload)?;
                    n += e.payload.len() as u64;
                }
                Ok(n)
            }
        }
    }
}

/// Channels and encoding of `audio.wav`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WavLayout {
    pub format: WavFormat,
    pub rate: u32,
    /// Indices into `meta.streams`, in channel order. Empty: one silent channel.
    pub channels: Vec<usize>,
}

impl WavLayout {
    /// Frames spanning the timeline: `duration_ms * rate / 1000`.
    pub fn frames(&self, meta: &RecordingMeta) -> u64 {
        meta.duration_ms() * u64::from(self.rate) / 1000
    }
}

/// The layout rule (see the module docs); `codecs_of(i)` lists the codecs of stream `i`'s
/// packets (empty when there is no journal).
pub fn layout_of(
    meta: &RecordingMeta,
    audio: AudioFormat,
    codecs_of: impl Fn(usize) -> Vec<Codec>,
) -> WavLayout {
    let channels: Vec<usize> = meta
        .streams
        .iter()
        .enumerate()
        .filter(|(_, s)| Codec::from_name(&s.codec).in_wav())
        .map(|(i, _)| i)
        .collect();
    let mut seen = [false; 3]; // PCMU, PCMA, G722
    for &i in &channels {
        let declared = Codec::from_name(&meta.streams[i].codec);
        for c in std::iter::once(declared).chain(codecs_of(i)) {
            match c {
                Codec::Pcmu => seen[0] = true,
                Codec::Pcma => seen[1] = true,
                Codec::G722 => seen[2] = true,
                _ => {}
            }
        }
    }
    let (format, rate) = if seen[2] {
        (WavFormat::Pcm16, 16_000)
    } else if audio == AudioFormat::WavPcm16 && !channels.is_empty() {
        (WavFormat::Pcm16, 8000)
    } else if seen[1] && !seen[0] {
        (WavFormat::ALaw, 8000)
    } else if seen[0] && seen[1] {
        (WavFormat::Pcm16, 8000)
    } else {
        (WavFormat::MuLaw, 8000)
    };
    WavLayout {
        format,
        rate,
        channels,
    }
}

/// Names of the stored files: `<label>.opus`, `<label>.g729`, `<label>.raw` for streams not in
/// `audio.wav`. Labels are made safe as file names and unique.
pub fn stored_file_names(meta: &RecordingMeta) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, s) in meta.streams.iter().enumerate() {
        let ext = match Codec::from_name(&s.codec) {
            c if c.in_wav() => continue,
            Codec::Opus => "opus",
            Codec::G729 => "g729",
            _ => "raw",
        };
        let mut stem: String = s
            .label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if stem.is_empty() {
            stem = format!("stream{}", s.mline);
        }
        let mut name = format!("{stem}.{ext}");
        if out.iter().any(|(_, n)| *n == name) {
            name = format!("{stem}-{i}.{ext}");
        }
        out.push((i, name));
    }
    out
}

/// A channel's samples from the current window start onwards.
struct Timeline<T> {
    base: i64,
    buf: Vec<T>,
    silence: T,
}

impl<T: Copy> Timeline<T> {
    fn new(silence: T) -> Timeline<T> {
        Timeline {
            base: 0,
            buf: Vec::with_capacity(2 * WINDOW),
            silence,
        }
    }

    /// Writes `samples` at timeline position `start`, clipping what lies before the window.
    fn put(&mut self, start: i64, samples: &[T]) {
        let end = start.saturating_add(samples.len() as i64);
        if end <= self.base {
            return;
        }
        let skip = (self.base - start).max(0) as usize;
        let off = (start + skip as i64 - self.base) as usize;
        let need = off + samples.len() - skip;
        if self.buf.len() < need {
            self.buf.resize(need, self.silence);
        }
        self.buf[off..need].copy_from_slice(&samples[skip..]);
    }

    /// Hands out the next `out.len()` samples (silence where nothing was put).
    fn take(&mut self, out: &mut [T]) {
        let n = out.len();
        if self.buf.len() < n {
            self.buf.resize(n, self.silence);
        }
        out.copy_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        self.base += n as i64;
    }
}

/// Produces one channel's samples window by window.
trait Channel {
    type Sample: Copy + Default;
    /// Applies every packet starting before `end`, then hands out the next `out.len()`
    /// samples.
    fn fill(&mut self, end: i64, out: &mut [Self::Sample]);
}

/// G.711 stored as is: packets of the output law are copied byte for byte.
struct LawChannel<'p, 'a> {
    entries: &'p [Entry<'a>],
    next: usize,
    law: Codec,
    tl: Timeline<u8>,
}

impl Channel for LawChannel<'_, '_> {
    type Sample = u8;

    fn fill(&mut self, end: i64, out: &mut [u8]) {
        while let Some(e) = self.entries.get(self.next) {
            if e.start >= end {
                break;
            }
            if e.codec == self.law {
                self.tl.put(e.start, e.payload);
            }
            self.next += 1;
        }
        self.tl.take(out);
    }
}

/// Decoded to 16-bit PCM at 8 kHz (`k` = 1) or 16 kHz (`k` = 2).
struct PcmChannel<'p, 'a> {
    entries: &'p [Entry<'a>],
    next: usize,
    k: i64,
    tl: Timeline<i16>,
    g722: g722::Decoder,
    epoch: u32,
    narrow: Vec<i16>,
    wide: Vec<i16>,
}

impl<'p, 'a> PcmChannel<'p, 'a> {
    fn new(entries: &'p [Entry<'a>], k: i64) -> Self {
        PcmChannel {
            entries,
            next: 0,
            k,
            tl: Timeline::new(0),
            g722: g722::Decoder::new(),
            epoch: 0,
            narrow: Vec::new(),
            wide: Vec::new(),
        }
    }
}

impl Channel for PcmChannel<'_, '_> {
    type Sample = i16;

    fn fill(&mut self, end: i64, out: &mut [i16]) {
        while let Some(e) = self.entries.get(self.next) {
            let start = e.start.saturating_mul(self.k);
            if start >= end {
                break;
            }
            self.next += 1;
            match e.codec {
                Codec::Pcmu | Codec::Pcma => {
                    self.narrow.resize(e.payload.len(), 0);
                    if e.codec == Codec::Pcmu {
                        g711::decode_ulaw(e.payload, &mut self.narrow);
                    } else {
                        g711::decode_alaw(e.payload, &mut self.narrow);
                    }
                    if self.k == 2 {
                        upsample2(&self.narrow, &mut self.wide);
                        self.tl.put(start, &self.wide);
                    } else {
                        self.tl.put(start, &self.narrow);
                    }
                }
                // G.722 is only ever rendered at 16 kHz (k = 2): the layout guarantees it.
                Codec::G722 if self.k == 2 => {
                    if e.epoch != self.epoch {
                        // A new source: the adaptive state of the old one means nothing.
                        self.g722 = g722::Decoder::new();
                        self.epoch = e.epoch;
                    }
                    self.wide.resize(2 * e.payload.len(), 0);
                    self.g722.decode(e.payload, &mut self.wide);
                    self.tl.put(start, &self.wide);
                }
                _ => {}
            }
        }
        self.tl.take(out);
    }
}

/// 8 kHz -> 16 kHz by linear interpolation within the packet (the last sample is held).
fn upsample2(input: &[i16], out: &mut Vec<i16>) {
    out.clear();
    for (i, &s) in input.iter().enumerate() {
        let next = input.get(i + 1).copied().unwrap_or(s);
        out.push(s);
        out.push(((i32::from(s) + i32::from(next)) / 2) as i16);
    }
}

/// Renders `frames` frames of all channels, interleaved, through `encode`; returns data bytes.
fn render<C: Channel, W: Write>(
    chans: &mut [C],
    frames: u64,
    out: &mut W,
    encode: impl Fn(&C::Sample, &mut Vec<u8>),
) -> io::Result<u64> {
    let nch = chans.len();
    let mut per: Vec<Vec<C::Sample>> = vec![vec![C::Sample::default(); WINDOW]; nch];
    let mut bytes: Vec<u8> = Vec::with_capacity(WINDOW * nch * 2);
    let mut done = 0u64;
    let mut written = 0u64;
    while done < frames {
        let n = (frames - done).min(WINDOW as u64) as usize;
        let end = (done + n as u64) as i64;
        for (c, buf) in chans.iter_mut().zip(per.iter_mut()) {
            c.fill(end, &mut buf[..n]);
        }
        bytes.clear();
        if nch == 1 {
            for s in &per[0][..n] {
                encode(s, &mut bytes);
            }
        } else {
            for i in 0..n {
                for buf in &per {
                    encode(&buf[i], &mut bytes);
                }
            }
        }
        out.write_all(&bytes)?;
        written += bytes.len() as u64;
        done += n as u64;
    }
    Ok(written)
}

/// Ogg/Opus of one stream spanning `duration_ms`: packets in timeline order, gaps filled with
/// TOC-only packets (decoders conceal them as silence), the end trimmed by the last granule.
fn write_opus<W: Write>(
    entries: &[Entry],
    duration_ms: u64,
    serial: u32,
    out: &mut W,
) -> io::Result<u64> {
    let total = duration_ms.saturating_mul(48);
    let stereo = entries
        .iter()
        .any(|e| e.codec == Codec::Opus && e.payload.first().is_some_and(|t| t & 0x04 != 0));
    let mut w = ogg::OggWriter::new(out, serial);
    w.write_packet(&ogg::opus_head(if stereo { 2 } else { 1 }), 0)?;
    w.flush()?;
    w.write_packet(&ogg::opus_tags(concat!("reel ", env!("CARGO_PKG_VERSION"))), 0)?;
    w.flush()?;
    let mut pos = 0u64;
    let fill = |w: &mut ogg::OggWriter<&mut W>, pos: &mut u64, upto: u64| -> io::Result<()> {
        while upto.saturating_sub(*pos) >= 120 {
            let gap = upto - *pos;
            let n = [960u32, 480, 240, 120]
                .into_iter()
                .find(|&n| u64::from(n) <= gap)
                .unwrap_or(120);
            *pos += u64::from(n);
            if let Some(p) = ogg::opus_gap_packet(n) {
                w.write_packet(&p, *pos)?;
            }
        }
        Ok(())
    };
    for e in entries.iter().filter(|e| e.codec == Codec::Opus) {
        let Some(ns) = ogg::opus_packet_samples(e.payload) else {
            continue;
        };
        if e.start < 0 {
            continue; // before the 200 OK
        }
        let start = e.start as u64;
        if start >= total {
            break;
        }
        // Half a frame of slack: timestamps of a steady sender line up with `pos`.
        if start + 480 < pos {
            continue; // overlaps what is already written: a stream cannot overwrite
        }
        fill(&mut w, &mut pos, start)?;
        pos += u64::from(ns);
        w.write_packet(e.payload, pos.min(total))?;
    }
    fill(&mut w, &mut pos, total)?;
    Ok(w.finish()?.1)
}
