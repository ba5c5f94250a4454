//! Per-stream receive bookkeeping: extended sequence numbers, duplicates, reordering, loss and
//! SSRC changes (RFC 3550 Appendix A.1 and A.3), feeding the `packets`, `lost` and `ssrcs`
//! fields of `recording.json` (DESIGN.md §4).
//!
//! Owns: the verdict on each packet that reached the stream (accept with its extended sequence
//! number, or drop as a duplicate or as too old) and the counters behind it.
//!
//! Must not: allocate, lock, log or panic per packet, or look at addresses. Which source may
//! send on this stream (latching, `foreign`) and SRTP authentication are decided by the caller
//! before a packet gets here; decoding and gap filling happen at finalize.
//!
//! Shape: a [`StreamState`] is a fixed-size value (under 512 bytes) with up to [`MAX_SSRCS`]
//! per-SSRC sub-states, so a stream that changes SSRC (transfer, re-INVITE, SBC failover) keeps
//! each source's sequence space apart. Tracking is probation-free: the first packet of a new
//! SSRC is accepted at once, because a recorder that waits for RFC 3550's `MIN_SEQUENTIAL`
//! packets would cut the first 40 ms of every source.

use super::rtp::RtpHeader;

/// Per-SSRC sub-states kept at once. A fifth SSRC recycles the least recently heard one
/// (its loss is kept; if it comes back it starts afresh and is reported as new).
pub const MAX_SSRCS: usize = 4;

/// SSRCs remembered for [`StreamState::ssrcs`] (the `ssrcs` field of `recording.json`);
/// more are counted in [`StreamState::ssrcs_overflow`].
pub const MAX_LISTED_SSRCS: usize = 16;

/// RFC 3550 A.1 `MAX_DROPOUT`: a forward step of less than this many sequence numbers is
/// in-order (the packets between are missing, not yet lost for good); a bigger step is a
/// jump that needs confirmation.
pub const MAX_DROPOUT: u16 = 3000;

/// How far behind the highest sequence number a packet may arrive and still be accepted as
/// reordered. RFC 3550 uses 100; a recorder finalizes later, so a packet that is seconds late
/// is still audio worth keeping. Farther behind is [`PacketVerdict::TooOld`].
pub const MAX_MISORDER: u16 = 3000;

/// Packets behind the highest sequence number whose arrival is remembered, so duplicates in
/// this window are dropped. Late packets farther back (up to [`MAX_MISORDER`]) are accepted
/// without a duplicate check: a duplicate that late is rare, and finalize places packets by
/// RTP timestamp, so a stray copy overwrites its own slot rather than adding audio.
pub const DUPLICATE_WINDOW: u16 = 128;

const SEQ_MOD: u64 = 1 << 16;

/// What to do with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketVerdict {
    /// Keep it. `ext_seq` is the extended sequence number (monotonic within one SSRC, also
    /// across a sequence restart); it starts in cycle 1 (`65536 + seq`) so that a packet
    /// older than the first one still has a place. `new_ssrc` means a sub-state started with
    /// this packet: the timeline re-anchors here (DESIGN.md §4).
    Accept { ext_seq: u64, new_ssrc: bool },
    /// Seen already (same SSRC, same extended sequence number in the window): drop it.
    Duplicate,
    /// Too far behind to place, or the first packet of an unconfirmed big jump: drop it.
    TooOld,
}

/// One SSRC's sequence space.
#[derive(Clone, Copy, Debug, Default)]
struct SsrcState {
    ssrc: u32,
    /// Lowest extended sequence number of the current sequence space.
    base_ext: u64,
    /// Highest extended sequence number accepted.
    max_ext: u64,
    /// Packets accepted in the current sequence space.
    received: u64,
    /// Bit `i` set: `max_ext - i` was accepted. Bit 0 is always `max_ext` itself.
    window: u128,
    /// Loss of earlier sequence spaces of this SSRC (before a restart).
    retired_lost: u64,
    /// RFC 3550 A.1 `bad_seq`: the sequence number that confirms a big jump as a restart.
    bad_seq: Option<u16>,
    /// `StreamState::packets` when last accepted (its low 32 bits, which keeps the sub-state
    /// within 64 bytes): the least recent one is recycled.
    last_used: u32,
    /// RTP timestamp of the packet at `max_ext`.
    max_ts: u32,
}

/// A big sequence jump whose timestamp goes on from the last packet's by at most this much
/// (2 s at 48 kHz, 12 s at 8 kHz) is a renumbering (an SBC, a transcoder) and restarts the
/// space at once; one whose timestamp does not is confirmed by the next packet first.
pub const CONTINUING_TS: u32 = 96_000;

/// How one sub-state took a packet.
enum Track {
    Forward(u64),
    Late(u64),
    Restart(u64),
    Duplicate,
    TooOld,
}

impl SsrcState {
    fn new(ssrc: u32, seq: u16, ts: u32) -> Self {
        let ext = SEQ_MOD + u64::from(seq);
        SsrcState {
            ssrc,
            base_ext: ext,
            max_ext: ext,
            received: 1,
            window: 1,
            max_ts: ts,
            ..SsrcState::default()
        }
    }

    /// RFC 3550 A.3: expected minus received in the current sequence space, never negative.
    fn span_lost(&self) -> u64 {
        (self.max_ext - self.base_ext + 1).saturating_sub(self.received)
    }

    fn lost(&self) -> u64 {
        self.retired_lost + self.span_lost()
    }

    /// RFC 3550 A.1 `update_seq`, extended with a duplicate window and late packets.
    /// `confirmed`: a big jump is taken as a restart at once (a replay of packets the media
    /// thread already accepted, where the packet that confirmed the jump is not there).
    #[inline]
    fn track(&mut self, seq: u16, ts: u32, confirmed: bool) -> Track {
        // Truncation is the point: the low 16 bits of max_ext are the highest seq seen.
        let delta = seq.wrapping_sub(self.max_ext as u16);
        if delta == 0 {
            return Track::Duplicate;
        }
        if delta < MAX_DROPOUT {
            // In order, possibly with a gap (wraps 65535 -> 0 are just a delta of 1).
            self.max_ext += u64::from(delta);
            self.window = if delta < DUPLICATE_WINDOW {
                (self.window << delta) | 1
            } else {
                1
            };
            self.received += 1;
            self.bad_seq = None;
            self.max_ts = ts;
            return Track::Forward(self.max_ext);
        }
        if delta > u16::MAX - MAX_MISORDER {
            let behind = SEQ_MOD - u64::from(delta);
            // Spaces start at cycle >= 1, so this only fails on a corrupted state.
            let Some(ext) = self.max_ext.checked_sub(behind) else {
                return Track::TooOld;
            };
            if behind < u64::from(DUPLICATE_WINDOW) {
                let bit = 1u128 << behind;
                if self.window & bit != 0 {
                    return Track::Duplicate;
                }
                self.window |= bit;
            }
            // A packet older than the first one extends the space backwards: it was
            // expected all along (this happens when the first packets arrive reordered).
            self.base_ext = self.base_ext.min(ext);
            self.received += 1;
            self.bad_seq = None;
            return Track::Late(ext);
        }
        // A big jump either way. Like RFC 3550 A.1, restart only when the next packet
        // continues from the jump, and a lone stray (a very late packet, a corrupt one) is
        // dropped; unless the timestamp goes on from the last packet's, as when an SBC or a
        // transcoder renumbers a stream: then the packet is not a stray, and is kept.
        let continues = ts.wrapping_sub(self.max_ts) <= CONTINUING_TS;
        if confirmed || continues || self.bad_seq == Some(seq) {
            self.retired_lost += self.span_lost();
            // Two cycles up: ext stays monotonic, and late packets of the new space (up to
            // MAX_MISORDER behind) cannot fall into the old one's numbers.
            let ext = ((self.max_ext >> 16) + 2) * SEQ_MOD + u64::from(seq);
            self.base_ext = ext;
            self.max_ext = ext;
            self.received = 1;
            self.window = 1;
            self.bad_seq = None;
            self.max_ts = ts;
            return Track::Restart(ext);
        }
        self.bad_seq = Some(seq.wrapping_add(1));
        Track::TooOld
    }
}

/// Receive state of one recorded stream (one `m=` line), fed every packet that passed the
/// source and SRTP checks.
#[derive(Clone, Debug)]
pub struct StreamState {
    subs: [SsrcState; MAX_SSRCS],
    /// Sub-states in use (`subs[..live]`).
    live: usize,
    /// Index of the sub-state that took the last packet: almost every packet hits it.
    current: usize,
    listed: [u32; MAX_LISTED_SSRCS],
    listed_len: usize,
    ssrcs_overflow: u64,
    /// Loss of recycled sub-states.
    recycled_lost: u64,
    packets: u64,
    duplicates: u64,
    too_old: u64,
    reordered: u64,
    restarts: u64,
    recycled: u64,
    payload_type_changes: u64,
    last_payload_type: Option<u8>,
    first_arrival_ns: Option<u64>,
    last_arrival_ns: Option<u64>,
    /// See [`StreamState::replaying`].
    replay: bool,
}

impl Default for StreamState {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamState {
    pub const fn new() -> Self {
        const EMPTY: SsrcState = SsrcState {
            ssrc: 0,
            base_ext: 0,
            max_ext: 0,
            received: 0,
            window: 0,
            retired_lost: 0,
            bad_seq: None,
            last_used: 0,
            max_ts: 0,
        };
        StreamState {
            subs: [EMPTY; MAX_SSRCS],
            live: 0,
            current: 0,
            listed: [0; MAX_LISTED_SSRCS],
            listed_len: 0,
            ssrcs_overflow: 0,
            recycled_lost: 0,
            packets: 0,
            duplicates: 0,
            too_old: 0,
            reordered: 0,
            restarts: 0,
            recycled: 0,
            payload_type_changes: 0,
            last_payload_type: None,
            first_arrival_ns: None,
            last_arrival_ns: None,
            replay: false,
        }
    }

    /// The state finalize replays a journal through: the journal holds only packets the media
    /// thread accepted, so a sequence jump in it was confirmed there (by a packet the media
    /// thread dropped and the journal does not hold) and is a restart at once; replaying it
    /// with the confirmation rule dropped the first packet after every jump, uncounted.
    pub const fn replaying() -> Self {
        let mut s = Self::new();
        s.replay = true;
        s
    }

    /// Takes one packet's header and its arrival time (monotonic ns) and says whether it goes
    /// into the recording. Constant time: at most [`MAX_SSRCS`] comparisons, no allocation.
    #[inline]
    pub fn on_packet(&mut self, h: &RtpHeader, arrival_ns: u64) -> PacketVerdict {
        let (ext_seq, new_ssrc) = match self.find(h.ssrc) {
            Some(i) => {
                let sub = &mut self.subs[i];
                match sub.track(h.sequence, h.timestamp, self.replay) {
                    Track::Forward(ext) => (ext, false),
                    Track::Late(ext) => {
                        self.reordered += 1;
                        (ext, false)
                    }
                    Track::Restart(ext) => {
                        self.restarts += 1;
                        (ext, false)
                    }
                    Track::Duplicate => {
                        self.duplicates += 1;
                        return PacketVerdict::Duplicate;
                    }
                    Track::TooOld => {
                        self.too_old += 1;
                        return PacketVerdict::TooOld;
                    }
                }
            }
            None => (self.start_ssrc(h.ssrc, h.sequence, h.timestamp), true),
        };

        self.packets += 1;
        // `current` was set by find/start_ssrc and is always < MAX_SSRCS.
        self.subs[self.current].last_used = self.packets as u32;
        if let Some(prev) = self.last_payload_type
            && prev != h.payload_type
        {
            self.payload_type_changes += 1;
        }
        self.last_payload_type = Some(h.payload_type);
        if self.first_arrival_ns.is_none() {
            self.first_arrival_ns = Some(arrival_ns);
        }
        self.last_arrival_ns = Some(arrival_ns);
        PacketVerdict::Accept { ext_seq, new_ssrc }
    }

    /// The sub-state for `ssrc`, trying the last one used first.
    #[inline]
    fn find(&mut self, ssrc: u32) -> Option<usize> {
        if self.current < self.live && self.subs[self.current].ssrc == ssrc {
            return Some(self.current);
        }
        let i = self.subs[..self.live].iter().position(|s| s.ssrc == ssrc)?;
        self.current = i;
        Some(i)
    }

    /// A new sub-state for an SSRC not held now; returns the first extended sequence number.
    #[cold]
    fn start_ssrc(&mut self, ssrc: u32, seq: u16, ts: u32) -> u64 {
        let i = if self.live < MAX_SSRCS {
            self.live += 1;
            self.live - 1
        } else {
            // Recycle the least recently heard; its loss stays in the stream's total.
            let (i, oldest) = self
                .subs
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, s)| (i, *s))
                .unwrap_or((0, self.subs[0]));
            self.recycled_lost += oldest.lost();
            self.recycled += 1;
            i
        };
        self.subs[i] = SsrcState::new(ssrc, seq, ts);
        self.current = i;
        if !self.listed[..self.listed_len].contains(&ssrc) {
            if self.listed_len < MAX_LISTED_SSRCS {
                self.listed[self.listed_len] = ssrc;
                self.listed_len += 1;
            } else {
                self.ssrcs_overflow += 1;
            }
        }
        self.subs[i].base_ext
    }

    /// Packets accepted (what went into the recording).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Packets dropped as duplicates.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets dropped as too far behind, including the unconfirmed first packet of each
    /// sequence jump.
    pub fn too_old(&self) -> u64 {
        self.too_old
    }

    /// Accepted packets that arrived with an extended sequence number below the highest.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Times an accepted packet's payload type differed from the previous accepted one's
    /// (telephone-event packets between audio packets count too).
    pub fn payload_type_changes(&self) -> u64 {
        self.payload_type_changes
    }

    /// Confirmed sequence jumps of more than [`MAX_DROPOUT`] within one SSRC.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Sub-states recycled because more than [`MAX_SSRCS`] SSRCs were active.
    pub fn recycled(&self) -> u64 {
        self.recycled
    }

    /// RFC 3550 A.3 cumulative loss summed over the stream's SSRCs and sequence spaces:
    /// expected (highest − lowest extended sequence number + 1) minus received, each space
    /// clamped at 0. Consecutive sequence numbers across a hold are therefore not loss, and
    /// a big jump (restart) does not count the numbers it skipped.
    pub fn lost(&self) -> u64 {
        self.recycled_lost
            + self.subs[..self.live]
                .iter()
                .map(SsrcState::lost)
                .sum::<u64>()
    }

    /// SSRCs in the order first seen (at most [`MAX_LISTED_SSRCS`]).
    pub fn ssrcs(&self) -> &[u32] {
        &self.listed[..self.listed_len]
    }

    /// SSRCs seen beyond [`MAX_LISTED_SSRCS`], not listed by [`Self::ssrcs`].
    pub fn ssrcs_overflow(&self) -> u64 {
        self.ssrcs_overflow
    }

    /// Arrival time of the first accepted packet.
    pub fn first_arrival_ns(&self) -> Option<u64> {
        self.first_arrival_ns
    }

    /// Arrival time of the latest accepted packet.
    pub fn last_arrival_ns(&self) -> Option<u64> {
        self.last_arrival_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(ssrc: u32, seq: u16) -> RtpHeader {
        RtpHeader {
            version: 2,
            padding: false,
            extension: false,
            csrc_count: 0,
            marker: false,
            payload_type: 0,
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            ssrc,
            header_len: 12,
            payload_len: 160,
        }
    }

    /// Feeds `seqs` from one SSRC, returning the verdicts.
    fn feed(
        s: &mut StreamState,
        ssrc: u32,
        seqs: impl IntoIterator<Item = u16>,
    ) -> Vec<PacketVerdict> {
        seqs.into_iter()
            .map(|q| s.on_packet(&hdr(ssrc, q), 1_000 + u64::from(q)))
            .collect()
    }

    fn accepted(v: PacketVerdict) -> u64 {
        match v {
            PacketVerdict::Accept { ext_seq, .. } => ext_seq,
            other => panic!("expected Accept, got {other:?}"),
        }
    }

    #[test]
    fn fixed_size_and_cheap() {
        assert!(std::mem::size_of::<StreamState>() <= 512);
        assert!(std::mem::size_of::<PacketVerdict>() <= 16);
    }

    #[test]
    fn first_packet_is_accepted_without_probation() {
        let mut s = StreamState::new();
        let v = s.on_packet(&hdr(7, 100), 5);
        assert_eq!(
            v,
            PacketVerdict::Accept {
                ext_seq: SEQ_MOD + 100,
                new_ssrc: true
            }
        );
        assert_eq!(s.packets(), 1);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.ssrcs(), &[7]);
    }

    #[test]
    fn in_order_packets_have_consecutive_ext_seq() {
        let mut s = StreamState::new();
        let v = feed(&mut s, 1, 10..20);
        let ext: Vec<u64> = v.into_iter().map(accepted).collect();
        assert!(ext.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(s.packets(), 10);
        assert_eq!((s.lost(), s.reordered(), s.duplicates()), (0, 0, 0));
    }

    #[test]
    fn sequence_wrap_is_not_loss() {
        let mut s = StreamState::new();
        let v = feed(&mut s, 1, (65530..=65535).chain(0..5));
        let ext: Vec<u64> = v.into_iter().map(accepted).collect();
        assert!(ext.windows(2).all(|w| w[1] == w[0] + 1), "{ext:?}");
        assert_eq!(ext[6], 2 * SEQ_MOD, "seq 0 after the wrap is in cycle 2");
        assert_eq!(s.lost(), 0);
        assert_eq!(s.packets(), 11);
    }

    #[test]
    fn loss_is_expected_minus_received() {
        let mut s = StreamState::new();
        feed(&mut s, 1, [1, 2, 3, 6, 7, 10]);
        // Expected 1..=10 = 10, received 6.
        assert_eq!(s.lost(), 4);
        assert_eq!(s.packets(), 6);
    }

    #[test]
    fn loss_across_the_wrap() {
        let mut s = StreamState::new();
        feed(&mut s, 1, [65533, 65534, 1, 2]);
        // 65535 and 0 missing.
        assert_eq!(s.lost(), 2);
    }

    #[test]
    fn duplicate_in_window_is_flagged() {
        let mut s = StreamState::new();
        feed(&mut s, 1, 1..=50);
        assert_eq!(s.on_packet(&hdr(1, 50), 0), PacketVerdict::Duplicate);
        assert_eq!(s.on_packet(&hdr(1, 40), 0), PacketVerdict::Duplicate);
        assert_eq!(s.on_packet(&hdr(1, 1), 0), PacketVerdict::Duplicate);
        assert_eq!(s.duplicates(), 3);
        assert_eq!(s.packets(), 50);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn duplicate_of_a_late_packet_is_flagged() {
        let mut s = StreamState::new();
        feed(&mut s, 1, [1, 2, 4, 5]);
        assert!(matches!(
            s.on_packet(&hdr(1, 3), 0),
            PacketVerdict::Accept { .. }
        ));
        assert_eq!(s.on_packet(&hdr(1, 3), 0), PacketVerdict::Duplicate);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn duplicates_do_not_make_negative_loss() {
        let mut s = StreamState::new();
        for q in 1..=20u16 {
            s.on_packet(&hdr(1, q), 0);
            s.on_packet(&hdr(1, q), 0);
        }
        assert_eq!(s.packets(), 20);
        assert_eq!(s.duplicates(), 20);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn duplicate_window_survives_a_gap() {
        let mut s = StreamState::new();
        feed(&mut s, 1, [1, 2, 3]);
        feed(&mut s, 1, [103]); // 99 missing, window shifted by 100
        assert_eq!(s.on_packet(&hdr(1, 3), 0), PacketVerdict::Duplicate);
        assert!(matches!(
            s.on_packet(&hdr(1, 4), 0),
            PacketVerdict::Accept { .. }
        ));
        assert_eq!(s.lost(), 98);
    }

    #[test]
    fn reordered_packet_fills_the_gap() {
        let mut s = StreamState::new();
        let v = feed(&mut s, 1, [1, 2, 4, 3, 5]);
        assert_eq!(accepted(v[3]), SEQ_MOD + 3);
        assert_eq!(s.reordered(), 1);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.packets(), 5);
    }

    #[test]
    fn reordered_across_the_wrap() {
        let mut s = StreamState::new();
        let v = feed(&mut s, 1, [65534, 0, 65535, 1]);
        assert_eq!(accepted(v[2]), SEQ_MOD + 65535);
        assert_eq!(accepted(v[1]), 2 * SEQ_MOD);
        assert_eq!((s.lost(), s.reordered()), (0, 1));
    }

    #[test]
    fn packet_older_than_the_first_extends_the_base() {
        let mut s = StreamState::new();
        let v = feed(&mut s, 1, [2, 0, 1]);
        assert_eq!(accepted(v[1]), SEQ_MOD);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.reordered(), 2);
        // Even across the wrap: the first packet is seq 1, then 65535 arrives late.
        let mut s = StreamState::new();
        let v = feed(&mut s, 1, [1, 65535, 0]);
        assert_eq!(accepted(v[1]), SEQ_MOD - 1);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn late_packet_beyond_window_is_accepted_unchecked() {
        let mut s = StreamState::new();
        feed(&mut s, 1, (1..=500).filter(|q| *q != 100));
        assert_eq!(s.lost(), 1);
        assert!(matches!(
            s.on_packet(&hdr(1, 100), 0),
            PacketVerdict::Accept { .. }
        ));
        assert_eq!(s.lost(), 0);
        assert_eq!(s.reordered(), 1);
    }

    #[test]
    fn far_behind_is_too_old() {
        let mut s = StreamState::new();
        feed(&mut s, 1, 0..5000);
        assert_eq!(s.on_packet(&hdr(1, 1000), 0), PacketVerdict::TooOld);
        assert_eq!(s.too_old(), 1);
        assert_eq!(s.packets(), 5000);
        // A lone stray does not disturb what follows.
        assert!(matches!(
            s.on_packet(&hdr(1, 5000), 0),
            PacketVerdict::Accept { .. }
        ));
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn big_jump_restarts_without_huge_loss() {
        let mut s = StreamState::new();
        let v = feed(&mut s, 1, (0..10).chain(30_000..30_010));
        let before = accepted(v[9]);
        // The first packet after the jump is unconfirmed and dropped; the second restarts.
        assert_eq!(v[10], PacketVerdict::TooOld);
        let after = accepted(v[11]);
        assert!(after > before, "ext_seq stays monotonic across a restart");
        assert!(v[12..].iter().all(|v| matches!(
            v,
            PacketVerdict::Accept {
                new_ssrc: false,
                ..
            }
        )));
        assert_eq!(s.restarts(), 1);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.packets(), 19);
    }

    #[test]
    fn a_renumbering_whose_timestamp_goes_on_is_kept_from_its_first_packet() {
        let mut s = StreamState::new();
        let at = |seq: u16, i: u32| RtpHeader {
            timestamp: 8_000 + 160 * i,
            ..hdr(1, seq)
        };
        for i in 0..10u32 {
            assert!(matches!(
                s.on_packet(&at(i as u16, i), 0),
                PacketVerdict::Accept { .. }
            ));
        }
        // An SBC renumbers: sequence +20,000, timestamps go on.
        for i in 10..20u32 {
            let v = s.on_packet(&at(20_000 + i as u16, i), 0);
            assert!(
                matches!(v, PacketVerdict::Accept { .. }),
                "packet {i}: {v:?}"
            );
        }
        assert_eq!(s.restarts(), 1);
        assert_eq!((s.packets(), s.lost(), s.too_old()), (20, 0, 0));
    }

    #[test]
    fn jump_just_under_dropout_is_a_gap() {
        let mut s = StreamState::new();
        feed(&mut s, 1, [0, MAX_DROPOUT - 1]);
        assert_eq!(s.lost(), u64::from(MAX_DROPOUT) - 2);
        assert_eq!(s.restarts(), 0);
    }

    #[test]
    fn loss_before_a_restart_is_kept() {
        let mut s = StreamState::new();
        feed(&mut s, 1, [0, 1, 4, 40_000, 40_001, 40_003]);
        // 2 and 3 lost before the jump; 40_002 lost after it.
        assert_eq!(s.lost(), 3);
        // Late packets of the new space are still placed in it.
        assert!(matches!(
            s.on_packet(&hdr(1, 40_002), 0),
            PacketVerdict::Accept { .. }
        ));
        assert_eq!(s.lost(), 2);
    }

    #[test]
    fn hold_with_consecutive_seq_is_not_loss() {
        let mut s = StreamState::new();
        // 2 s of audio, a long hold with no packets (arrival jumps), then the next seq.
        for q in 0..100u16 {
            s.on_packet(&hdr(1, q), u64::from(q) * 20_000_000);
        }
        for q in 100..200u16 {
            s.on_packet(&hdr(1, q), 60_000_000_000 + u64::from(q) * 20_000_000);
        }
        assert_eq!(s.lost(), 0);
        assert_eq!(s.packets(), 200);
        assert_eq!(s.first_arrival_ns(), Some(0));
        assert_eq!(s.last_arrival_ns(), Some(60_000_000_000 + 199 * 20_000_000));
    }

    #[test]
    fn ssrc_change_starts_new_substate() {
        let mut s = StreamState::new();
        feed(&mut s, 0xaaaa, 100..110);
        let v = s.on_packet(&hdr(0xbbbb, 5000), 0);
        assert_eq!(
            v,
            PacketVerdict::Accept {
                ext_seq: SEQ_MOD + 5000,
                new_ssrc: true
            }
        );
        feed(&mut s, 0xbbbb, 5001..5010);
        assert_eq!(s.ssrcs(), &[0xaaaa, 0xbbbb]);
        // Different sequence spaces: the jump from 109 to 5000 is neither loss nor restart.
        assert_eq!((s.lost(), s.restarts(), s.packets()), (0, 0, 20));
    }

    #[test]
    fn returning_ssrc_continues_its_own_space() {
        let mut s = StreamState::new();
        feed(&mut s, 1, 0..10);
        feed(&mut s, 2, 500..510);
        let v = s.on_packet(&hdr(1, 12), 0);
        assert_eq!(
            v,
            PacketVerdict::Accept {
                ext_seq: SEQ_MOD + 12,
                new_ssrc: false
            }
        );
        assert_eq!(s.lost(), 2, "seq 10 and 11 of SSRC 1 are missing");
        assert_eq!(s.ssrcs(), &[1, 2]);
        assert_eq!(s.on_packet(&hdr(2, 509), 0), PacketVerdict::Duplicate);
    }

    #[test]
    fn loss_is_summed_over_ssrcs() {
        let mut s = StreamState::new();
        feed(&mut s, 1, [0, 2, 4]);
        feed(&mut s, 2, [0, 3]);
        assert_eq!(s.lost(), 2 + 2);
    }

    #[test]
    fn fifth_ssrc_recycles_the_least_recent_and_keeps_its_loss() {
        let mut s = StreamState::new();
        feed(&mut s, 1, [0, 5]); // 4 lost
        for ssrc in 2..=4 {
            feed(&mut s, ssrc, [0, 1]);
        }
        feed(&mut s, 1, [6]); // SSRC 1 is now the most recent; 2 is the oldest
        let v = s.on_packet(&hdr(5, 0), 0);
        assert!(matches!(v, PacketVerdict::Accept { new_ssrc: true, .. }));
        assert_eq!(s.recycled(), 1);
        assert_eq!(s.lost(), 4);
        // SSRC 2 comes back: a fresh sub-state, reported as new, listed once.
        let v = s.on_packet(&hdr(2, 2), 0);
        assert!(matches!(v, PacketVerdict::Accept { new_ssrc: true, .. }));
        assert_eq!(s.ssrcs(), &[1, 2, 3, 4, 5]);
        // SSRC 1 survived: its duplicate is still caught.
        assert_eq!(s.on_packet(&hdr(1, 6), 0), PacketVerdict::Duplicate);
    }

    #[test]
    fn ssrc_list_is_bounded() {
        let mut s = StreamState::new();
        for ssrc in 0..(MAX_LISTED_SSRCS as u32 + 3) {
            s.on_packet(&hdr(ssrc, 0), 0);
        }
        assert_eq!(s.ssrcs().len(), MAX_LISTED_SSRCS);
        assert_eq!(s.ssrcs_overflow(), 3);
        assert_eq!(s.packets(), MAX_LISTED_SSRCS as u64 + 3);
    }

    #[test]
    fn payload_type_changes_are_counted() {
        let mut s = StreamState::new();
        for (q, pt) in [(1u16, 0u8), (2, 0), (3, 101), (4, 101), (5, 0), (6, 8)] {
            let mut h = hdr(1, q);
            h.payload_type = pt;
            s.on_packet(&h, 0);
        }
        assert_eq!(s.payload_type_changes(), 3);
    }

    #[test]
    fn dropped_packets_do_not_touch_arrival_or_payload_type() {
        let mut s = StreamState::new();
        s.on_packet(&hdr(1, 1), 10);
        let mut dup = hdr(1, 1);
        dup.payload_type = 8;
        assert_eq!(s.on_packet(&dup, 99), PacketVerdict::Duplicate);
        assert_eq!(s.last_arrival_ns(), Some(10));
        assert_eq!(s.payload_type_changes(), 0);
    }

    #[test]
    fn empty_stream_reports_nothing() {
        let s = StreamState::default();
        assert_eq!((s.packets(), s.lost()), (0, 0));
        assert!(s.ssrcs().is_empty());
        assert_eq!(s.first_arrival_ns(), None);
    }

    #[test]
    fn random_sequences_never_panic_and_stay_consistent() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut s = StreamState::new();
        let mut accepted = 0;
        for i in 0..300_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly a few SSRCs, sometimes many; any sequence number.
            let ssrc = if x & 0xff == 0 {
                (x >> 8) as u32
            } else {
                (x >> 40) as u32 & 7
            };
            let seq = (x >> 16) as u16;
            if let PacketVerdict::Accept { .. } = s.on_packet(&hdr(ssrc, seq), i) {
                accepted += 1;
            }
        }
        assert_eq!(s.packets(), accepted);
        assert_eq!(accepted + s.duplicates() + s.too_old(), 300_000);
    }
}
