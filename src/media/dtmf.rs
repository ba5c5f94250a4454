//! RFC 4733 telephone-event payloads and the per-stream tracker that turns them into digits.
//!
//! Owns: reading the 4-byte event payload, and folding one event's packets (a start packet,
//! updates with growing duration, usually three redundant end packets, all with the same RTP
//! timestamp) into one completed [`Digit`] with its start timestamp and duration.
//!
//! Must not: allocate, lock, log or panic per packet. Finished digits wait in a fixed array of
//! [`MAX_PENDING_DIGITS`] (overflow is counted, not grown); [`DtmfTracker::drain_digits`]
//! allocates and is for the control side, off the hot path. Which payload type carries
//! telephone-event comes from the SDP; the caller only hands packets of that type here.

/// Digits buffered between two drains.
pub const MAX_PENDING_DIGITS: usize = 64;

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfEvent {
    /// Event code: 0-9, 10 `*`, 11 `#`, 12-15 A-D, 16 flash (RFC 4733 §3.2).
    pub event: u8,
    /// E bit: this is (one of the copies of) the event's final packet.
    pub end: bool,
    /// Power level in -dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, from the event's RTP timestamp.
    pub duration: u16,
}

/// Reads the first event of a telephone-event payload; `None` when shorter than 4 bytes.
/// The R bit is ignored (reserved). Trailing bytes (padding some senders add) are ignored.
#[inline]
pub fn parse_event(payload: &[u8]) -> Option<DtmfEvent> {
    let b = payload.first_chunk::<4>()?;
    Some(DtmfEvent {
        event: b[0],
        end: b[1] & 0x80 != 0,
        volume: b[1] & 0x3f,
        duration: u16::from_be_bytes([b[2], b[3]]),
    })
}

/// The character for a DTMF event code: `0`-`9`, `*`, `#`, `A`-`D`, and `!` for flash (16),
/// the usual spelling of hook flash in SIP INFO `dtmf-relay`. Other codes (tones, RFC 4734
/// events) have none.
pub fn digit_char(event: u8) -> Option<char> {
    match event {
        0..=9 => char::from_digit(u32::from(event), 10),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + (event - 12))),
        16 => Some('!'),
        _ => None,
    }
}

/// One completed event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digit {
    pub event: u8,
    /// RTP timestamp of the event start (the timestamp every packet of the event carries).
    pub start_timestamp: u32,
    /// Duration in RTP timestamp units. Wider than the payload's `u16` because RFC 4733
    /// §2.5.1.3 splits events longer than 0xFFFF units into segments, which are joined here.
    pub duration: u32,
    /// Volume of the last packet, -dBm0.
    pub volume: u8,
    /// An end packet arrived. `false` when the event was closed by the next event or by
    /// [`DtmfTracker::flush`] because all its end packets were lost.
    pub end_seen: bool,
}

impl Digit {
    /// See [`digit_char`].
    pub fn char(&self) -> Option<char> {
        digit_char(self.event)
    }
}

/// The event being received.
#[derive(Clone, Copy, Debug)]
struct Active {
    event: u8,
    start_timestamp: u32,
    /// Durations of finished segments of a long event.
    earlier_segments: u32,
    /// RTP timestamp of the current segment (equals `start_timestamp` unless segmented).
    segment_timestamp: u32,
    segment_duration: u16,
    volume: u8,
}

impl Active {
    fn new(timestamp: u32, ev: &DtmfEvent) -> Self {
        Active {
            event: ev.event,
            start_timestamp: timestamp,
            earlier_segments: 0,
            segment_timestamp: timestamp,
            segment_duration: ev.duration,
            volume: ev.volume,
        }
    }

    fn digit(&self, end_seen: bool) -> Digit {
        Digit {
            event: self.event,
            start_timestamp: self.start_timestamp,
            duration: self
                .earlier_segments
                .saturating_add(u32::from(self.segment_duration)),
            volume: self.volume,
            end_seen,
        }
    }

    /// RFC 4733 §2.5.1.3: a segment of a long event starts where the previous one ends, and
    /// the previous one ran to (nearly) the 16-bit limit. Both conditions are required so two
    /// presses of the same key, whose end packets were all lost, stay two digits.
    fn continues_as(&self, timestamp: u32, ev: &DtmfEvent) -> bool {
        const NEAR_FULL: u16 = 0xF000;
        let step = timestamp.wrapping_sub(self.segment_timestamp);
        ev.event == self.event
            && self.segment_duration >= NEAR_FULL
            && step >= u32::from(self.segment_duration)
            && step <= 0x1_0000
    }
}

/// Turns one stream's telephone-event packets into digits.
#[derive(Clone, Debug)]
pub struct DtmfTracker {
    active: Option<Active>,
    /// (RTP timestamp of the segment, event) of the last event that ended: its redundant end
    /// packets and any late update carry the same pair and are ignored.
    last_end: Option<(u32, u8)>,
    digits: [Digit; MAX_PENDING_DIGITS],
    len: usize,
    overflow: u64,
    redundant: u64,
    malformed: u64,
}

impl Default for DtmfTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl DtmfTracker {
    pub const fn new() -> Self {
        const NONE: Digit = Digit {
            event: 0,
            start_timestamp: 0,
            duration: 0,
            volume: 0,
            end_seen: false,
        };
        DtmfTracker {
            active: None,
            last_end: None,
            digits: [NONE; MAX_PENDING_DIGITS],
            len: 0,
            overflow: 0,
            redundant: 0,
            malformed: 0,
        }
    }

    /// Takes one telephone-event packet (its RTP timestamp and payload). Returns how many
    /// digits it completed: 0, 1, or 2 (an event whose end packets were lost is closed when
    /// the next event starts, and that next event may itself end in this packet).
    #[inline]
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8]) -> usize {
        let Some(ev) = parse_event(payload) else {
            self.malformed += 1;
            return 0;
        };
        if self.last_end == Some((timestamp, ev.event)) {
            // Redundant end packet (RFC 4733 §2.5.1.4), or an update reordered after them.
            self.redundant += 1;
            return 0;
        }

        let mut completed = 0;
        match &mut self.active {
            Some(a) if a.segment_timestamp == timestamp && a.event == ev.event => {
                // Updates only grow; a reordered older update must not shorten the event.
                a.segment_duration = a.segment_duration.max(ev.duration);
                a.volume = ev.volume;
            }
            Some(a) if a.continues_as(timestamp, &ev) => {
                a.earlier_segments = a
                    .earlier_segments
                    .saturating_add(u32::from(a.segment_duration));
                a.segment_timestamp = timestamp;
                a.segment_duration = ev.duration;
                a.volume = ev.volume;
            }
            Some(a) => {
                let unterminated = a.digit(false);
                self.push(unterminated);
                completed += 1;
                self.active = Some(Active::new(timestamp, &ev));
            }
            None => self.active = Some(Active::new(timestamp, &ev)),
        }

        if ev.end
            && let Some(a) = self.active.take()
        {
            self.push(a.digit(true));
            self.last_end = Some((timestamp, ev.event));
            completed += 1;
        }
        completed
    }

    /// Closes an event still in progress (the stream or the call ended before its end
    /// packet). Returns whether there was one.
    pub fn flush(&mut self) -> bool {
        match self.active.take() {
            Some(a) => {
                self.push(a.digit(false));
                true
            }
            None => false,
        }
    }

    fn push(&mut self, d: Digit) {
        match self.digits.get_mut(self.len) {
            Some(slot) => {
                *slot = d;
                self.len += 1;
            }
            None => self.overflow += 1,
        }
    }

    /// Completed digits not drained yet, oldest first.
    pub fn digits(&self) -> &[Digit] {
        &self.digits[..self.len]
    }

    /// Takes the completed digits, oldest first. Allocates: call off the hot path.
    pub fn drain_digits(&mut self) -> Vec<Digit> {
        let out = self.digits().to_vec();
        self.len = 0;
        out
    }

    /// Digits dropped because the buffer was full (drain more often).
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Packets ignored as redundant copies of an end packet already counted.
    pub fn redundant(&self) -> u64 {
        self.redundant
    }

    /// Payloads shorter than 4 bytes.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, (u8::from(end) << 7) | volume, d[0], d[1]]
    }

    /// The usual sender pattern: start, updates every 160 units, three end packets.
    fn press(t: &mut DtmfTracker, event: u8, ts: u32, duration: u16) -> usize {
        let mut done = 0;
        let mut d = 160;
        while d < duration {
            done += t.on_packet(ts, &ev(event, false, 10, d));
            d += 160;
        }
        for _ in 0..3 {
            done += t.on_packet(ts, &ev(event, true, 10, duration));
        }
        done
    }

    #[test]
    fn event_fields_are_read() {
        let e = parse_event(&[11, 0x80 | 0x40 | 7, 0x03, 0x20]).unwrap();
        assert_eq!(
            e,
            DtmfEvent {
                event: 11,
                end: true,
                volume: 7,
                duration: 800
            }
        );
    }

    #[test]
    fn short_payload_is_none() {
        assert_eq!(parse_event(&[1, 2, 3]), None);
        assert_eq!(parse_event(&[]), None);
        assert!(parse_event(&[1, 2, 3, 4, 0, 0]).is_some());
    }

    #[test]
    fn digit_chars_cover_the_keypad_and_flash() {
        let s: String = (0..=16).filter_map(digit_char).collect();
        assert_eq!(s, "0123456789*#ABCD!");
        assert_eq!(digit_char(17), None);
        assert_eq!(digit_char(255), None);
    }

    #[test]
    fn one_press_is_one_digit() {
        let mut t = DtmfTracker::new();
        assert_eq!(press(&mut t, 5, 16_000, 1_120), 1);
        let d = t.drain_digits();
        assert_eq!(
            d,
            vec![Digit {
                event: 5,
                start_timestamp: 16_000,
                duration: 1_120,
                volume: 10,
                end_seen: true
            }]
        );
        assert_eq!(d[0].char(), Some('5'));
        assert!(t.digits().is_empty());
    }

    #[test]
    fn dtmf_end_packets_counted_once() {
        let mut t = DtmfTracker::new();
        press(&mut t, 1, 1000, 800);
        assert_eq!(t.digits().len(), 1);
        assert_eq!(t.redundant(), 2);
        // A fourth copy much later is still the same event.
        assert_eq!(t.on_packet(1000, &ev(1, true, 10, 800)), 0);
        assert_eq!(t.digits().len(), 1);
    }

    #[test]
    fn same_key_twice_is_two_digits() {
        let mut t = DtmfTracker::new();
        press(&mut t, 7, 1000, 800);
        press(&mut t, 7, 3000, 800);
        let d = t.drain_digits();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].start_timestamp, d[1].start_timestamp), (1000, 3000));
    }

    #[test]
    fn digit_sequence_keeps_order() {
        let mut t = DtmfTracker::new();
        for (i, e) in [1u8, 2, 3, 10, 11].into_iter().enumerate() {
            press(&mut t, e, 8000 * i as u32, 640);
        }
        let s: String = t.drain_digits().iter().filter_map(Digit::char).collect();
        assert_eq!(s, "123*#");
    }

    #[test]
    fn late_update_after_end_is_ignored() {
        let mut t = DtmfTracker::new();
        press(&mut t, 4, 500, 960);
        assert_eq!(t.on_packet(500, &ev(4, false, 10, 640)), 0);
        assert_eq!(t.digits().len(), 1);
        assert!(!t.flush());
    }

    #[test]
    fn reordered_update_does_not_shorten() {
        let mut t = DtmfTracker::new();
        t.on_packet(0, &ev(9, false, 10, 480));
        t.on_packet(0, &ev(9, false, 10, 320));
        t.flush();
        assert_eq!(t.digits()[0].duration, 480);
    }

    #[test]
    fn lost_start_packets_still_give_a_digit() {
        let mut t = DtmfTracker::new();
        assert_eq!(t.on_packet(2000, &ev(0, true, 10, 960)), 1);
        assert_eq!(t.digits()[0].duration, 960);
        assert!(t.digits()[0].end_seen);
    }

    #[test]
    fn lost_end_packets_close_on_next_event() {
        let mut t = DtmfTracker::new();
        t.on_packet(1000, &ev(2, false, 10, 160));
        t.on_packet(1000, &ev(2, false, 10, 320));
        // Next key starts: the first is closed as it stood, without an end.
        assert_eq!(t.on_packet(5000, &ev(3, false, 10, 160)), 1);
        assert_eq!(t.on_packet(5000, &ev(3, true, 10, 480)), 1);
        let d = t.drain_digits();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].event, d[0].duration, d[0].end_seen), (2, 320, false));
        assert_eq!((d[1].event, d[1].end_seen), (3, true));
    }

    #[test]
    fn one_packet_can_complete_two_digits() {
        let mut t = DtmfTracker::new();
        t.on_packet(1000, &ev(2, false, 10, 160));
        assert_eq!(t.on_packet(5000, &ev(3, true, 10, 480)), 2);
    }

    #[test]
    fn flush_closes_an_unfinished_event() {
        let mut t = DtmfTracker::new();
        t.on_packet(0, &ev(16, false, 10, 160));
        assert!(t.flush());
        assert!(!t.flush());
        assert_eq!(t.digits()[0].char(), Some('!'));
        assert!(!t.digits()[0].end_seen);
    }

    #[test]
    fn long_event_segments_are_joined() {
        let mut t = DtmfTracker::new();
        // RFC 4733 §2.5.1.3: the first segment runs to 0xFFFF, the next starts there.
        t.on_packet(10_000, &ev(8, false, 10, 0xff00));
        t.on_packet(10_000, &ev(8, false, 10, 0xffff));
        t.on_packet(10_000 + 0xffff, &ev(8, false, 10, 160));
        for _ in 0..3 {
            t.on_packet(10_000 + 0xffff, &ev(8, true, 10, 4000));
        }
        let d = t.drain_digits();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].start_timestamp, d[0].duration),
            (10_000, 0xffff + 4000)
        );
        assert_eq!(t.redundant(), 2);
    }

    #[test]
    fn timestamp_wrap_within_an_event_is_fine() {
        let mut t = DtmfTracker::new();
        press(&mut t, 6, u32::MAX - 100, 800);
        press(&mut t, 6, 2000, 800);
        assert_eq!(t.digits().len(), 2);
    }

    #[test]
    fn buffer_is_bounded_and_overflow_counted() {
        let mut t = DtmfTracker::new();
        for i in 0..(MAX_PENDING_DIGITS as u32 + 5) {
            press(&mut t, 1, i * 4000, 320);
        }
        assert_eq!(t.digits().len(), MAX_PENDING_DIGITS);
        assert_eq!(t.overflow(), 5);
        assert_eq!(t.drain_digits().len(), MAX_PENDING_DIGITS);
        press(&mut t, 2, 1_000_000, 320);
        assert_eq!(t.digits().len(), 1);
    }

    #[test]
    fn malformed_payload_is_counted_and_ignored() {
        let mut t = DtmfTracker::new();
        assert_eq!(t.on_packet(0, &[1, 2]), 0);
        assert_eq!(t.malformed(), 1);
        assert!(t.digits().is_empty());
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut t = DtmfTracker::new();
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_be_bytes();
            let len = (x >> 61) as usize; // 0..=7
            t.on_packet((x >> 32) as u32 & 0x3fff, &bytes[..len]);
            if t.digits().len() == MAX_PENDING_DIGITS {
                t.drain_digits();
            }
        }
        t.flush();
    }
}
