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
//! with `ts - first_ts` taken on an extended (wrap-free) timestamp. A new SSRC, or a sequence
//! restart within one, re-anchors at its own first packet; so does an audio packet (not a late
//! one, not an RFC 4733 event) whose position disagrees with its arrival by more than
//! [`DRIFT_LIMIT_S`], as when an SRC keeps its timestamps through a hold or jumps them. Gaps
//! (loss, hold, late start) are silence, late packets fill their slot, packets before t = 0 or
//! after the end are clipped.
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

use super::journal::{HeaderError, JournalReader, JournalRecord, RecordKind, Tail};
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

/// Seconds by which the RTP timestamps of a stream's newest packet may disagree with its
/// arrival time before the arrival time re-anchors the stream. Far above network jitter, and
/// hours of clock drift between an SRC and this host (50 ppm takes 5.5 h to drift 1 s, and then
/// costs one 1 s step); far below what an SRC that stops its timestamps through a hold (the
/// packets after it would land in the hold) or jumps them (they would land after the end)
/// gets wrong.
const DRIFT_LIMIT_S: u64 = 1;

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

impl StreamPlan<'_> {
    /// A G.711/G.722 stream that G.729 (static type 18) arrived on: a test tool replaying a
    /// capture whatever the answer said. Those packets go to a `.g729` file of their own
    /// beside the stream's channel of `audio.wav`.
    fn carries_g729(&self) -> bool {
        self.codec.in_wav() && self.entries.iter().any(|e| e.codec == Codec::G729)
    }
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
            state: StreamState::replaying(),
            anchors: Vec::new(),
            epochs: 0,
            tracker: DtmfTracker::new(),
            last_ssrc: None,
            dtmf: Vec::new(),
        }
    }

    /// Places one accepted packet: returns its timeline position and anchor epoch. `newest`:
    /// the packet is the newest of its SSRC so far (not a late one), so its arrival time may
    /// correct the anchor (see [`DRIFT_LIMIT_S`]).
    fn place(
        &mut self,
        ssrc: u32,
        ts: u32,
        arrival_ns: u64,
        t0_ns: i128,
        reanchor: bool,
        newest: bool,
    ) -> (i64, u32) {
        self.last_ssrc = Some(ssrc);
        // (arrival - t0) in clock units, floored; i128 so no clock or time can overflow.
        let ns = i128::from(arrival_ns) - t0_ns;
        let arrived = (ns * i128::from(self.clock)).div_euclid(1_000_000_000);
        let arrived = i64::try_from(arrived).unwrap_or(if arrived < 0 {
            i64::MIN / 2
        } else {
            i64::MAX / 2
        });
        let found = self.anchors.iter().position(|a| a.ssrc == ssrc);
        if let (Some(i), false) = (found, reanchor) {
            let a = &mut self.anchors[i];
            let pos = a.position(ts);
            if !newest || pos.abs_diff(arrived) <= u64::from(self.clock) * DRIFT_LIMIT_S {
                a.last_ext = pos - a.base;
                a.last_ts = ts;
                return (pos, a.epoch);
            }
            // The timestamps and the clock disagree by more than jitter can explain: an SRC
            // that kept its timestamps through a hold, or jumped them without time passing.
            // The arrival time wins, so the channels stay together on one timeline.
        }
        self.epochs += 1;
        let anchor = Anchor {
            ssrc,
            base: arrived,
            last_ts: ts,
            last_ext: 0,
            epoch: self.epochs,
        };
        match found {
            Some(i) => self.anchors[i] = anchor,
            None => self.anchors.push(anchor),
        }
        (arrived, self.epochs)
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
            let h = replayed_header(&rec);
            // The same bookkeeping the media thread ran: a record it would have dropped
            // (a duplicate journaled twice) is dropped here too, so nothing counts double.
            let (restarts, reordered) = (sp.state.restarts(), sp.state.reordered());
            let PacketVerdict::Accept { new_ssrc, .. } = sp.state.on_packet(&h, rec.arrival_ns)
            else {
                continue;
            };
            let reanchor = new_ssrc || sp.state.restarts() != restarts;
            // An RFC 4733 event keeps its timestamp for as long as the key is held: only
            // audio may correct the anchor.
            let newest = sp.state.reordered() == reordered && rec.kind == RecordKind::Audio;
            let (start, epoch) = sp.place(
                rec.ssrc,
                rec.timestamp,
                rec.arrival_ns,
                t0,
                reanchor,
                newest,
            );
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
            plan.warnings.push(format!(
                "{unknown} journal records name no stream of this recording"
            ));
        }
        for (i, sp) in streams.iter_mut().enumerate() {
            sp.tracker.flush();
            let last = sp.last_ssrc;
            sp.drain_digits(last);
            sp.entries.sort_by_key(|e| (e.start, e.idx));
            // Packets counted as recorded whose codec the stream's file cannot hold (an SRC
            // sending PCMA on a stream the answer made Opus, say) must not pass silently.
            let stream_codec = sp.codec;
            let fits = |c: Codec| {
                if stream_codec.in_wav() {
                    // G.729 on such a stream goes to its own file (`carries_g729`).
                    c.in_wav() || c == Codec::G729
                } else {
                    c == stream_codec
                }
            };
            let left_out = sp.entries.iter().filter(|e| !fits(e.codec)).count();
            if left_out > 0 {
                let label = meta.streams.get(i).map_or("?", |s| s.label.as_str());
                plan.warnings.push(format!(
                    "stream {label}: {left_out} audio packets in another codec than the \
                     stream's {} are counted but not in its audio",
                    meta.streams.get(i).map_or("?", |s| s.codec.as_str())
                ));
            }
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
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many channels for a WAV file",
            )
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
                render(&mut chans, frames, out, |b: &u8, o: &mut Vec<u8>| {
                    o.push(*b)
                })?
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

    /// Files stored per stream (not in `audio.wav`): `(stream index, file name)`. A G.711 or
    /// G.722 stream whose SRC sent G.729 instead (a test tool replaying a capture whatever the
    /// answer said) gets a `.g729` file too, so what arrived is kept.
    pub fn stored_files(&self, meta: &RecordingMeta) -> Vec<(usize, String)> {
        let mut files: Vec<(usize, String)> = stored_file_names(meta)
            .into_iter()
            .filter(|(i, name)| {
                // Unknown codecs get a file only when something arrived.
                !name.ends_with(".raw")
                    || self.streams.get(*i).is_some_and(|s| !s.entries.is_empty())
            })
            .collect();
        for (i, s) in meta.streams.iter().enumerate() {
            if self.streams.get(i).is_some_and(|sp| sp.carries_g729()) {
                push_stored_name(&mut files, i, s, "g729");
            }
        }
        files
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
        let codec = match sp.codec {
            c if !c.in_wav() => c,
            _ if sp.carries_g729() => Codec::G729,
            _ => return Ok(0),
        };
        match codec {
            Codec::Opus => write_opus(&sp.entries, meta.duration_ms(), index as u32 + 1, out),
            _ => {
                // Raw payloads in timeline order, each slot once (the later record wins).
                let mut n = 0u64;
                let wanted = codec;
                let mut it = sp.entries.iter().filter(|e| e.codec == wanted).peekable();
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
        push_stored_name(&mut out, i, s, ext);
    }
    out
}

/// Adds stream `i`'s file `<label>.<ext>` to `out`: the label made safe as a file name (at
/// most 64 characters; `stream<mline>` when nothing is left), `-<i>` added when taken.
fn push_stored_name(
    out: &mut Vec<(usize, String)>,
    i: usize,
    s: &crate::record::StreamRecord,
    ext: &str,
) {
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
    w.write_packet(
        &ogg::opus_tags(concat!("reel ", env!("CARGO_PKG_VERSION"))),
        0,
    )?;
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

/// The RTP header a journal record stands for, as the media thread saw it (what the stream
/// bookkeeping reads).
fn replayed_header(rec: &JournalRecord<'_>) -> RtpHeader {
    RtpHeader {
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
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::record::journal::{encode_into, file_header};
    use crate::record::model::StreamRecord;
    use crate::record::model::tests::t0;

    /// One journal record, arrival in ms after t0 (may be negative).
    #[derive(Clone)]
    struct P {
        stream: u16,
        kind: RecordKind,
        pt: u8,
        ssrc: u32,
        seq: u16,
        ts: u32,
        at_ms: i64,
        payload: Vec<u8>,
    }

    fn p(seq: u16, ts: u32, at_ms: i64, byte: u8) -> P {
        P {
            stream: 0,
            kind: RecordKind::Audio,
            pt: 0,
            ssrc: 0xAAAA,
            seq,
            ts,
            at_ms,
            payload: vec![byte; 160],
        }
    }

    fn t0_ns() -> i64 {
        t0().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
    }

    fn record(x: &P) -> JournalRecord<'_> {
        JournalRecord {
            stream: x.stream,
            kind: x.kind,
            marker: false,
            payload_type: x.pt,
            seq: x.seq,
            timestamp: x.ts,
            ssrc: x.ssrc,
            arrival_ns: (t0_ns() + x.at_ms * 1_000_000) as u64,
            payload: &x.payload,
        }
    }

    fn journal(ps: &[P]) -> Vec<u8> {
        let mut out = file_header().to_vec();
        for x in ps {
            encode_into(&record(x), &mut out);
        }
        out
    }

    fn stream(label: &str, codec: &str, pt: u8, mline: usize) -> StreamRecord {
        StreamRecord {
            label: label.into(),
            codec: codec.into(),
            payload_type: pt,
            clock_rate: if codec == "opus" { 48_000 } else { 8000 },
            mline,
            ..StreamRecord::default()
        }
    }

    fn meta(streams: Vec<StreamRecord>, ms: u64) -> RecordingMeta {
        let mut m = RecordingMeta::new("r", "c@h", t0(), "n");
        m.ended_at = t0() + Duration::from_millis(ms);
        m.streams = streams;
        m
    }

    fn pcmu(ms: u64) -> RecordingMeta {
        meta(vec![stream("1", "PCMU", 0, 0)], ms)
    }

    /// Renders; returns (layout, data bytes after the header).
    fn render_wav(m: &RecordingMeta, j: &[u8], audio: AudioFormat) -> (WavLayout, Vec<u8>) {
        let plan = Plan::new(j, m).unwrap();
        let layout = plan.layout(m, audio);
        let mut out = Vec::new();
        let n = plan.write_wav(m, audio, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        let header = layout.format.header_len() as usize;
        let data_len = u32::from_le_bytes(out[header - 4..header].try_into().unwrap()) as usize;
        (layout, out[header..header + data_len].to_vec())
    }

    fn mono(m: &RecordingMeta, ps: &[P]) -> Vec<u8> {
        render_wav(m, &journal(ps), AudioFormat::WavG711).1
    }

    fn counters(m: &RecordingMeta, ps: &[P]) -> RecordingMeta {
        let j = journal(ps);
        let plan = Plan::new(&j, m).unwrap();
        let mut m = m.clone();
        plan.apply_counters(&mut m);
        m
    }

    fn pcm(data: &[u8]) -> Vec<i16> {
        data.chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn packet_with_ts_plus_800_lands_100_ms_later() {
        let d = mono(&pcmu(1000), &[p(1, 1000, 0, 0x11), p(2, 1800, 5, 0x22)]);
        assert_eq!(d.len(), 8000);
        assert!(d[..160].iter().all(|&b| b == 0x11));
        assert!(d[160..800].iter().all(|&b| b == 0xFF), "silence between");
        assert!(d[800..960].iter().all(|&b| b == 0x22));
    }

    #[test]
    fn duration_is_exactly_ended_minus_started() {
        for ms in [0u64, 1, 999, 61_500] {
            let d = mono(&pcmu(ms), &[p(1, 0, 0, 0x11)]);
            assert_eq!(d.len() as u64, ms * 8, "{ms} ms");
        }
    }

    #[test]
    fn late_start_has_leading_silence() {
        let d = mono(&pcmu(3000), &[p(1, 123_456, 2000, 0x11)]);
        assert!(d[..16_000].iter().all(|&b| b == 0xFF));
        assert!(d[16_000..16_160].iter().all(|&b| b == 0x11));
        assert!(d[16_160..].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn loss_gap_is_silence_and_counted() {
        let ps = [p(1, 0, 0, 0x11), p(2, 160, 20, 0x22), p(5, 640, 80, 0x55)];
        let d = mono(&pcmu(200), &ps);
        assert!(d[320..640].iter().all(|&b| b == 0xFF));
        assert!(d[640..800].iter().all(|&b| b == 0x55));
        let m = counters(&pcmu(200), &ps);
        assert_eq!(m.streams[0].packets, 3);
        assert_eq!(m.streams[0].lost, 2);
    }

    #[test]
    fn hold_gap_is_silence_and_not_loss() {
        // Consecutive sequence numbers, timestamps jump 5 s (the sender was on hold).
        let ps = [
            p(1, 0, 0, 0x11),
            p(2, 160, 20, 0x22),
            p(3, 40_320, 5040, 0x33),
        ];
        let d = mono(&pcmu(6000), &ps);
        assert!(d[320..40_320].iter().all(|&b| b == 0xFF));
        assert!(d[40_320..40_480].iter().all(|&b| b == 0x33));
        assert_eq!(counters(&pcmu(6000), &ps).streams[0].lost, 0);
    }

    #[test]
    fn timestamp_wrap_is_continuous() {
        let start = u32::MAX - 159; // the second packet wraps to 0
        let ps = [
            p(1, start, 0, 0x11),
            p(2, start.wrapping_add(160), 20, 0x22),
            p(3, start.wrapping_add(320), 40, 0x33),
        ];
        let d = mono(&pcmu(100), &ps);
        assert!(d[..160].iter().all(|&b| b == 0x11));
        assert!(d[160..320].iter().all(|&b| b == 0x22));
        assert!(d[320..480].iter().all(|&b| b == 0x33));
    }

    #[test]
    fn sequence_wrap_is_not_loss() {
        let ps = [
            p(65_535, 0, 0, 0x11),
            p(0, 160, 20, 0x22),
            p(1, 320, 40, 0x33),
        ];
        let m = counters(&pcmu(100), &ps);
        assert_eq!((m.streams[0].packets, m.streams[0].lost), (3, 0));
    }

    #[test]
    fn ssrc_change_reanchors_at_its_first_packet() {
        let mut b = p(1, 999_999, 500, 0x22); // unrelated timestamp, arrives at 500 ms
        b.ssrc = 0xBBBB;
        let mut c = p(2, 999_999 + 160, 520, 0x33);
        c.ssrc = 0xBBBB;
        let ps = [p(1000, 0, 0, 0x11), b, c];
        let d = mono(&pcmu(1000), &ps);
        assert!(d[..160].iter().all(|&x| x == 0x11));
        assert!(d[4000..4160].iter().all(|&x| x == 0x22), "at 500 ms");
        assert!(d[4160..4320].iter().all(|&x| x == 0x33));
        let m = counters(&pcmu(1000), &ps);
        assert_eq!(m.streams[0].ssrcs, [0xAAAA, 0xBBBB]);
        assert_eq!(m.streams[0].packets, 3);
    }

    #[test]
    fn reordered_packets_land_in_order() {
        let ps = [
            p(1, 0, 0, 0x11),
            p(3, 320, 40, 0x33),
            p(2, 160, 45, 0x22),
            p(4, 480, 60, 0x44),
        ];
        let d = mono(&pcmu(100), &ps);
        for (k, b) in [0x11u8, 0x22, 0x33, 0x44].into_iter().enumerate() {
            assert!(
                d[k * 160..(k + 1) * 160].iter().all(|&x| x == b),
                "slot {k}"
            );
        }
        assert_eq!(counters(&pcmu(100), &ps).streams[0].lost, 0);
    }

    #[test]
    fn a_sequence_jump_the_media_thread_confirmed_keeps_every_journaled_packet() {
        // What the media thread saw: 1-5, three packets 30,000 ahead, then the old numbering.
        let seqs = [1u16, 2, 3, 4, 5, 30_006, 30_007, 30_008, 9, 10, 11];
        let sent: Vec<_> = seqs
            .iter()
            .enumerate()
            .map(|(i, &q)| p(q, 160 * i as u32, 20 * i as i64, 0x11))
            .collect();
        // It journals what its own bookkeeping accepts: a jump whose timestamp goes on is a
        // renumbering, kept at once; one whose timestamp does not costs the packet that
        // announced it (RFC 3550 A.1 confirmation), here 30,006 and 9.
        let sent: Vec<_> = sent
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                if i == 5 || i == 8 {
                    r.ts = r.ts.wrapping_add(1_000_000);
                }
                r
            })
            .collect();
        let mut media = crate::media::stream::StreamState::new();
        let journaled: Vec<_> = sent
            .iter()
            .filter(|r| {
                let rec = record(r);
                let verdict = media.on_packet(&replayed_header(&rec), rec.arrival_ns);
                matches!(verdict, PacketVerdict::Accept { .. })
            })
            .cloned()
            .collect();
        assert_eq!(journaled.len(), 9);
        let m = counters(&pcmu(1000), &journaled);
        assert_eq!(
            m.streams[0].packets, 9,
            "every journaled packet is in the recording"
        );
    }

    /// The byte at `ms` into a mono 8 kHz G.711 rendering.
    fn at_ms(d: &[u8], ms: usize) -> u8 {
        d[ms * 8]
    }

    #[test]
    fn an_src_that_keeps_its_timestamps_through_a_hold_is_placed_by_arrival_after_it() {
        // 1 s of audio, 5 s with no packets, then 1 s whose timestamps go on as if no time
        // had passed (some SBCs do this across a hold).
        let mut ps: Vec<P> = (0..50u16)
            .map(|i| p(i, 160 * u32::from(i), 20 * i64::from(i), 0x11))
            .collect();
        ps.extend((50..100u16).map(|i| p(i, 160 * u32::from(i), 5_000 + 20 * i64::from(i), 0x22)));
        let d = mono(&pcmu(7_000), &ps);
        assert_eq!(at_ms(&d, 500), 0x11);
        assert!(
            d[1_010 * 8..5_990 * 8].iter().all(|&b| b == 0xFF),
            "the hold is silence"
        );
        assert_eq!(at_ms(&d, 6_010), 0x22);
        assert_eq!(at_ms(&d, 6_990), 0x22);
    }

    #[test]
    fn timestamps_that_jump_ahead_without_time_passing_are_placed_by_arrival() {
        // Timestamps jump 2 s ahead at 1 s while the packets keep coming every 20 ms: by
        // timestamp the second second would land at 3-4 s, after the end.
        let mut ps: Vec<P> = (0..50u16)
            .map(|i| p(i, 160 * u32::from(i), 20 * i64::from(i), 0x11))
            .collect();
        ps.extend((50..100u16).map(|i| p(i, 16_000 + 160 * u32::from(i), 20 * i64::from(i), 0x22)));
        let d = mono(&pcmu(2_000), &ps);
        assert_eq!(at_ms(&d, 500), 0x11);
        assert_eq!(at_ms(&d, 1_010), 0x22);
        assert_eq!(at_ms(&d, 1_990), 0x22);
    }

    #[test]
    fn a_late_packet_or_a_long_event_does_not_move_the_anchor() {
        // Packet 10 arrives 1.5 s late: placed by its timestamp, the rest undisturbed.
        let mut ps: Vec<P> = (0..100u16)
            .filter(|&i| i != 10)
            .map(|i| p(i, 160 * u32::from(i), 20 * i64::from(i), 0x11))
            .collect();
        ps.push(p(10, 1_600, 1_700, 0x33));
        // A key held for 3 s: one event timestamp, arrivals going on; then audio again.
        let ev = |seq: u16, at: i64| P {
            kind: RecordKind::Event,
            pt: 101,
            payload: vec![5, 0x0a, 0, 160],
            ..p(seq, 16_000, at, 0)
        };
        ps.extend((100..250u16).map(|i| ev(i, 2_000 + 20 * i64::from(i - 100))));
        ps.extend(
            (250..300u16).map(|i| p(i, 160 * u32::from(i - 150), 20 * i64::from(i - 150), 0x44)),
        );
        let d = mono(&pcmu(6_000), &ps);
        assert_eq!(at_ms(&d, 205), 0x33, "the late packet in its own slot");
        assert_eq!(at_ms(&d, 225), 0x11);
        // Audio after the event, by its timestamps: 2.0-3.0 s... which its arrivals agree with.
        assert_eq!(at_ms(&d, 2_010), 0x44);
    }

    #[test]
    fn duplicate_records_do_not_double_count() {
        let ps = [p(1, 0, 0, 0x11), p(2, 160, 20, 0x22), p(2, 160, 21, 0x22)];
        let m = counters(&pcmu(100), &ps);
        assert_eq!(m.streams[0].packets, 2);
        assert_eq!(m.streams[0].lost, 0);
    }

    #[test]
    fn overlapping_packet_later_overwrites() {
        // Same slot twice (a sender's retransmission with a new sequence number).
        let ps = [p(1, 0, 0, 0x11), p(2, 0, 20, 0x22)];
        let d = mono(&pcmu(100), &ps);
        assert!(d[..160].iter().all(|&x| x == 0x22));
    }

    #[test]
    fn packets_before_t0_and_after_end_are_clipped() {
        // First packet arrives 10 ms before the 200 OK: its first 80 samples are cut.
        let ps = [p(1, 0, -10, 0x11), p(2, 160, 10, 0x22), p(3, 800, 90, 0x33)];
        let d = mono(&pcmu(100), &ps);
        assert_eq!(d.len(), 800);
        assert!(d[..80].iter().all(|&x| x == 0x11));
        assert!(d[80..240].iter().all(|&x| x == 0x22));
        assert!(
            d[720..].iter().all(|&x| x == 0x33),
            "packet at 90 ms cut at 100 ms"
        );
    }

    #[test]
    fn two_streams_are_stereo_in_streams_order() {
        // streams[0] is m-line 1: channel 0 must carry m-line 1's packets.
        let m = meta(
            vec![stream("b", "PCMU", 0, 1), stream("a", "PCMU", 0, 0)],
            100,
        );
        let mut on1 = p(1, 0, 0, 0x11);
        on1.stream = 1;
        let mut on0 = p(1, 0, 0, 0x22);
        on0.ssrc = 2;
        let (layout, d) = render_wav(&m, &journal(&[on1, on0]), AudioFormat::WavG711);
        assert_eq!(layout.channels, [0, 1]);
        assert_eq!(d.len(), 1600);
        assert_eq!((d[0], d[1]), (0x11, 0x22));
        assert_eq!((d[318], d[319]), (0x11, 0x22));
        assert_eq!((d[320], d[321]), (0xFF, 0xFF));
    }

    #[test]
    fn packets_in_a_codec_the_stream_file_cannot_hold_are_named_in_a_warning() {
        // PCMA packets on a stream the answer made Opus (an SRC that ignores the answer).
        let m = meta(vec![stream("1", "opus", 111, 0)], 100);
        let mut x = p(1, 0, 0, 0x2A);
        x.pt = 8;
        let j = journal(&[x]);
        let plan = Plan::new(&j, &m).unwrap();
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
        assert!(
            plan.warnings[0].starts_with("stream 1: 1 audio packets in another codec"),
            "{:?}",
            plan.warnings
        );
        // PCMA on a PCMU stream is decoded into audio.wav: nothing to warn of.
        let mut x = p(1, 0, 0, 0x2A);
        x.pt = 8;
        let j = journal(&[x]);
        assert!(Plan::new(&j, &pcmu(100)).unwrap().warnings.is_empty());
    }

    #[test]
    fn all_pcma_is_alaw_wav() {
        let m = meta(vec![stream("1", "PCMA", 8, 0)], 100);
        let mut x = p(1, 0, 0, 0x2A);
        x.pt = 8;
        let (layout, d) = render_wav(&m, &journal(&[x]), AudioFormat::WavG711);
        assert_eq!(layout.format, WavFormat::ALaw);
        assert!(d[..160].iter().all(|&b| b == 0x2A));
        assert!(d[160..].iter().all(|&b| b == 0xD5), "A-law silence");
    }

    #[test]
    fn all_pcmu_is_mulaw_wav() {
        let (layout, _) = render_wav(&pcmu(100), &journal(&[p(1, 0, 0, 1)]), AudioFormat::WavG711);
        assert_eq!((layout.format, layout.rate), (WavFormat::MuLaw, 8000));
    }

    #[test]
    fn mixed_laws_are_decoded_to_pcm16() {
        let m = meta(
            vec![stream("1", "PCMU", 0, 0), stream("2", "PCMA", 8, 1)],
            100,
        );
        let u = p(1, 0, 0, 0x80); // mu-law +32124
        let mut a = p(1, 0, 0, 0xAA); // A-law +32256
        a.stream = 1;
        a.pt = 8;
        a.ssrc = 9;
        let (layout, d) = render_wav(&m, &journal(&[u, a]), AudioFormat::WavG711);
        assert_eq!((layout.format, layout.rate), (WavFormat::Pcm16, 8000));
        let s = pcm(&d);
        assert_eq!((s[0], s[1]), (32124, 32256));
        assert_eq!((s[320], s[321]), (0, 0), "silence is 0");
    }

    #[test]
    fn pcmu_and_pcma_packets_in_one_stream_are_pcm16() {
        let mut a = p(2, 160, 20, 0xAA);
        a.pt = 8;
        let (layout, d) = render_wav(
            &pcmu(100),
            &journal(&[p(1, 0, 0, 0x80), a]),
            AudioFormat::WavG711,
        );
        assert_eq!(layout.format, WavFormat::Pcm16);
        let s = pcm(&d);
        assert_eq!((s[0], s[160]), (32124, 32256));
    }

    #[test]
    fn wav_pcm16_option_decodes_g711() {
        let (layout, d) = render_wav(
            &pcmu(100),
            &journal(&[p(1, 0, 0, 0x80)]),
            AudioFormat::WavPcm16,
        );
        assert_eq!((layout.format, layout.rate), (WavFormat::Pcm16, 8000));
        assert_eq!(pcm(&d)[0], 32124);
        assert_eq!(d.len(), 1600);
    }

    #[test]
    fn g722_is_decoded_at_16_khz() {
        let m = meta(
            vec![stream("1", "G722", 9, 0), stream("2", "PCMU", 0, 1)],
            1000,
        );
        // 1 kHz tone, encoded as the sender would: 20 ms = 320 samples = 160 bytes, ts += 160.
        let tone: Vec<i16> = (0..16_000)
            .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * i as f64 / 16.0).sin()) as i16)
            .collect();
        let mut bytes = Vec::new();
        g722::Encoder::new().encode(&tone, &mut bytes);
        let mut ps: Vec<P> = bytes
            .chunks(160)
            .enumerate()
            .map(|(i, c)| P {
                pt: 9,
                payload: c.to_vec(),
                ..p(i as u16, i as u32 * 160, i as i64 * 20, 0)
            })
            .collect();
        let mut u = p(1, 0, 0, 0x80);
        u.stream = 1;
        u.ssrc = 7;
        ps.push(u);
        let (layout, d) = render_wav(&m, &journal(&ps), AudioFormat::WavG711);
        assert_eq!((layout.format, layout.rate), (WavFormat::Pcm16, 16_000));
        let s = pcm(&d);
        assert_eq!(s.len(), 2 * 16_000, "two channels, one second at 16 kHz");
        let left: Vec<i16> = s.iter().step_by(2).copied().collect();
        let energy: f64 = left[4000..12_000]
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            / 8000.0;
        assert!(
            energy.sqrt() > 4000.0,
            "the tone is there: rms {}",
            energy.sqrt()
        );
        // The PCMU channel is upsampled: 160 bytes -> 320 samples at 16 kHz.
        assert_eq!(s[1], 32124);
        assert_eq!(s[2 * 319 + 1], 32124);
        assert_eq!(s[2 * 320 + 1], 0);
    }

    #[test]
    fn no_g711_or_g722_stream_gives_silent_mono_wav() {
        let m = meta(vec![stream("1", "opus", 111, 0)], 500);
        let (layout, d) = render_wav(&m, &journal(&[]), AudioFormat::WavG711);
        assert!(layout.channels.is_empty());
        assert_eq!(d.len(), 4000);
        assert!(d.iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn empty_or_headerless_journal_is_no_media() {
        for j in [&b""[..], b"REEL"] {
            let plan = Plan::new(j, &pcmu(100)).unwrap();
            assert!(!plan.has_media());
        }
    }

    #[test]
    fn foreign_file_is_an_error() {
        let e = Plan::new(b"RIFF....WAVEfmt xxxxxxxx", &pcmu(100))
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn unknown_stream_index_is_a_warning() {
        let mut x = p(1, 0, 0, 1);
        x.stream = 7;
        let j = journal(&[x]);
        let plan = Plan::new(&j, &pcmu(100)).unwrap();
        assert!(!plan.has_media());
        assert!(
            plan.warnings[0].contains("no stream"),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn dtmf_digits_are_listed_with_time_and_duration() {
        let ev = |seq: u16, ts: u32, at: i64, event: u8, end: bool, dur: u16| P {
            kind: RecordKind::Event,
            pt: 101,
            payload: vec![
                event,
                if end { 0x8A } else { 0x0A },
                (dur >> 8) as u8,
                dur as u8,
            ],
            ..p(seq, ts, at, 0)
        };
        let ps = [
            p(1, 0, 0, 0x11),
            ev(2, 8000, 1000, 5, false, 400),
            ev(3, 8000, 1050, 5, true, 800),
            ev(4, 8000, 1051, 5, true, 800),
            ev(5, 16_000, 2000, 11, true, 1600),
        ];
        let m = counters(&pcmu(3000), &ps);
        let d = &m.streams[0].dtmf;
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].digit.as_str(), d[0].at_ms, d[0].duration_ms),
            ("5", 1000, 100)
        );
        assert_eq!(
            (d[1].digit.as_str(), d[1].at_ms, d[1].duration_ms),
            ("#", 2000, 200)
        );
        assert_eq!(m.streams[0].packets, 5);
    }

    #[test]
    fn opus_stream_becomes_ogg_spanning_the_timeline() {
        let m = meta(vec![stream("caller 1", "opus", 111, 0)], 1000);
        // 20 ms CELT packets at 48 kHz, the first arriving 100 ms in, one lost in the middle.
        let ps: Vec<P> = (0..10u16)
            .filter(|&i| i != 4)
            .map(|i| P {
                pt: 111,
                payload: vec![0xFC, i as u8, 1, 2],
                ..p(i, 5000 + u32::from(i) * 960, 100 + i64::from(i) * 20, 0)
            })
            .collect();
        let j = journal(&ps);
        let plan = Plan::new(&j, &m).unwrap();
        let files = plan.stored_files(&m);
        assert_eq!(files, [(0, "caller_1.opus".to_string())]);
        let mut out = Vec::new();
        let n = plan.write_stored(&m, 0, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        let pages = crate::codec::ogg::tests::pages(&out);
        assert!(pages.iter().all(|p| p.4), "CRCs verify");
        assert_eq!(&out[..4], b"OggS");
        assert_eq!(
            pages.last().unwrap().1,
            48_000,
            "granule ends at the duration"
        );
        let packets: Vec<Vec<u8>> = pages[2..].iter().flat_map(|p| p.3.clone()).collect();
        let total: u32 = packets
            .iter()
            .map(|p| ogg::opus_packet_samples(p).unwrap())
            .sum();
        assert_eq!(total, 48_000);
        // 100 ms of leading gap packets, then the first real packet.
        assert!(packets[..5].iter().all(|p| p.len() == 1));
        assert_eq!(packets[5], [0xFC, 0, 1, 2]);
        assert_eq!(packets[8], [0xFC, 3, 1, 2]);
        assert_eq!(packets[9].len(), 1, "the lost packet is a gap packet");
        assert_eq!(packets[10], [0xFC, 5, 1, 2]);
        // The stream is not a WAV channel.
        assert!(plan.layout(&m, AudioFormat::WavG711).channels.is_empty());
    }

    #[test]
    fn g729_stream_is_raw_payloads_in_order() {
        let m = meta(
            vec![stream("1", "G729", 18, 0), stream("2", "PCMU", 0, 1)],
            1000,
        );
        let g = |seq: u16, at: i64, b: u8| P {
            pt: 18,
            payload: vec![b; 20],
            ..p(seq, u32::from(seq) * 160, at, 0)
        };
        let j = journal(&[g(1, 0, 1), g(3, 40, 3), g(2, 41, 2)]);
        let plan = Plan::new(&j, &m).unwrap();
        assert_eq!(plan.stored_files(&m), [(0, "1.g729".to_string())]);
        let mut out = Vec::new();
        plan.write_stored(&m, 0, &mut out).unwrap();
        let want: Vec<u8> = [1u8, 2, 3].iter().flat_map(|&b| [b; 20]).collect();
        assert_eq!(out, want);
        assert_eq!(plan.layout(&m, AudioFormat::WavG711).channels, [1]);
    }

    #[test]
    fn g729_sent_on_a_pcmu_stream_is_kept_in_its_own_file() {
        // Answered PCMU, but the SRC (a test tool replaying a capture) sent G.729.
        let m = meta(vec![stream("1", "PCMU", 0, 0)], 1000);
        let g = |seq: u16, at: i64, b: u8| P {
            pt: 18,
            payload: vec![b; 20],
            ..p(seq, u32::from(seq) * 160, at, 0)
        };
        let j = journal(&[g(1, 0, 1), g(2, 20, 2)]);
        let plan = Plan::new(&j, &m).unwrap();
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert_eq!(plan.stored_files(&m), [(0, "1.g729".to_string())]);
        let mut out = Vec::new();
        plan.write_stored(&m, 0, &mut out).unwrap();
        assert_eq!(out, [[1u8; 20], [2u8; 20]].concat());
        assert_eq!(
            plan.layout(&m, AudioFormat::WavG711).channels,
            [0],
            "still in the WAV"
        );
        // Only G.711: no extra file.
        let j = journal(&[p(1, 0, 0, 0x2A)]);
        assert!(Plan::new(&j, &m).unwrap().stored_files(&m).is_empty());
    }

    #[test]
    fn stored_file_names_are_safe_and_unique() {
        let m = meta(
            vec![
                stream("../x", "opus", 111, 0),
                stream("../x", "opus", 111, 1),
                stream("", "G729", 18, 2),
            ],
            10,
        );
        let names: Vec<String> = stored_file_names(&m).into_iter().map(|(_, n)| n).collect();
        assert_eq!(names, ["___x.opus", "___x-1.opus", "stream2.g729"]);
    }

    #[test]
    fn long_call_renders_in_windows() {
        // 10 minutes, 30,000 packets: the output is exact and rendering stays windowed.
        let ps: Vec<P> = (0..30_000u32)
            .map(|i| p(i as u16, i * 160, i64::from(i) * 20, (i % 200) as u8))
            .collect();
        let d = mono(&pcmu(600_000), &ps);
        assert_eq!(d.len(), 4_800_000);
        for i in [0usize, 1, 12_345, 29_999] {
            assert!(
                d[i * 160..(i + 1) * 160]
                    .iter()
                    .all(|&b| b == (i % 200) as u8),
                "{i}"
            );
        }
    }

    #[test]
    fn audio_format_names() {
        assert_eq!(AudioFormat::parse("wav-g711"), Some(AudioFormat::WavG711));
        assert_eq!(AudioFormat::parse("wav-pcm16"), Some(AudioFormat::WavPcm16));
        assert_eq!(AudioFormat::parse("mp3"), None);
        assert_eq!(AudioFormat::default().as_str(), "wav-g711");
    }
}
