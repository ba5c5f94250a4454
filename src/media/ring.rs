//! Packet records over a lock-free SPSC byte ring (`rtrb`), from one media thread to one
//! writer thread.
//!
//! A record is `[len: u32][recording: u32][journal record]`, little-endian, written in place
//! into the ring (no allocation, no lock), where the journal record is exactly what
//! `record::journal` stores (its 32-byte header with the CRC field 0, then the payload): the
//! writer copies it into the journal's frame as it is ([`RingReader::drain_encoded`]), with no
//! decode, re-encode or per-packet CRC. A full ring hands the packet back: [`RingWriter::push`]
//! returns `false` and counts a drop; the media thread never waits.

use rtrb::{Consumer, Producer, RingBuffer};

use crate::record::journal::{
    JournalRecord, RECORD_HEADER_LEN, RecordKind, parse_record, record_header,
};

/// What the writer needs of a packet besides its payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// m-line index of the stream in the offer.
    pub stream: u16,
    /// 0 = audio, 1 = RFC 4733 event, 2 = end of stream (payload = encoded [`StreamTotals`]).
    pub kind: u8,
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// CLOCK_REALTIME nanoseconds (kernel receive timestamp).
    pub arrival_ns: u64,
}

pub const KIND_AUDIO: u8 = 0;
pub const KIND_EVENT: u8 = 1;
pub const KIND_END: u8 = 2;

const META_LEN: usize = RECORD_HEADER_LEN;
const PREFIX_LEN: usize = 8;

impl PacketMeta {
    /// The journal record header for this packet and its payload.
    fn encode(&self, payload: &[u8]) -> [u8; META_LEN] {
        record_header(&JournalRecord {
            stream: self.stream,
            kind: RecordKind::from_code(self.kind).unwrap_or(RecordKind::Audio),
            marker: self.marker,
            payload_type: self.payload_type,
            seq: self.seq,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            arrival_ns: self.arrival_ns,
            payload,
        })
    }

    /// The packet of one ring record (journal record header, then payload).
    fn decode(b: &[u8]) -> Option<(PacketMeta, &[u8])> {
        let h: &[u8; META_LEN] = b.get(..META_LEN)?.try_into().ok()?;
        let r = parse_record(h, b.get(META_LEN..)?)?;
        let meta = PacketMeta {
            stream: r.stream,
            kind: r.kind.code(),
            marker: r.marker,
            payload_type: r.payload_type,
            seq: r.seq,
            timestamp: r.timestamp,
            ssrc: r.ssrc,
            arrival_ns: r.arrival_ns,
        };
        Some((meta, r.payload))
    }
}

/// What the media thread counted for a stream, sent with its end-of-stream record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamTotals {
    pub packets: u64,
    pub duplicates: u64,
    pub foreign: u64,
    pub srtp_failures: u64,
    pub ring_drops: u64,
    pub rtcp_packets: u64,
    pub malformed: u64,
}

impl StreamTotals {
    pub const LEN: usize = 56;
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let fields = [
            self.packets,
            self.duplicates,
            self.foreign,
            self.srtp_failures,
            self.ring_drops,
            self.rtcp_packets,
            self.malformed,
        ];
        for (i, v) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }
    pub fn decode(b: &[u8]) -> StreamTotals {
        let f = |i: usize| {
            b.get(i * 8..i * 8 + 8)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        StreamTotals {
            packets: f(0),
            duplicates: f(1),
            foreign: f(2),
            srtp_failures: f(3),
            ring_drops: f(4),
            rtcp_packets: f(5),
            malformed: f(6),
        }
    }
}

/// Copies `data` to position `at` of the logical buffer `a ++ b` (a ring chunk that may wrap),
/// with at most two `memcpy`s. Returns the position after it.
#[inline]
fn write_split(a: &mut [u8], b: &mut [u8], at: usize, data: &[u8]) -> usize {
    let end = at + data.len();
    if end <= a.len() {
        a[at..end].copy_from_slice(data);
    } else if at >= a.len() {
        let from = at - a.len();
        b[from..from + data.len()].copy_from_slice(data);
    } else {
        let split = a.len() - at;
        a[at..].copy_from_slice(&data[..split]);
        b[..data.len() - split].copy_from_slice(&data[split..]);
    }
    end
}

/// Bytes `start..end` of the logical buffer `a ++ b`, as up to two slices.
#[inline]
fn pieces<'a>(a: &'a [u8], b: &'a [u8], start: usize, end: usize) -> (&'a [u8], &'a [u8]) {
    if end <= a.len() {
        (&a[start..end], &[])
    } else if start >= a.len() {
        (&b[start - a.len()..end - a.len()], &[])
    } else {
        (&a[start..], &b[..end - a.len()])
    }
}

pub struct RingWriter {
    producer: Producer<u8>,
    pub drops: u64,
}

pub struct RingReader {
    consumer: Consumer<u8>,
    scratch: Vec<u8>,
}

/// A ring of `bytes` capacity.
pub fn packet_ring(bytes: usize) -> (RingWriter, RingReader) {
    let (producer, consumer) = RingBuffer::new(bytes);
    (
        RingWriter { producer, drops: 0 },
        RingReader {
            consumer,
            scratch: Vec::with_capacity(4096),
        },
    )
}

impl RingWriter {
    /// Appends one record; `false` (and a counted drop) when the ring is full.
    #[inline]
    pub fn push(&mut self, recording: u32, meta: &PacketMeta, payload: &[u8]) -> bool {
        let payload = &payload[..payload.len().min(usize::from(u16::MAX))];
        let total = PREFIX_LEN + META_LEN + payload.len();
        let Ok(mut chunk) = self.producer.write_chunk(total) else {
            self.drops += 1;
            return false;
        };
        let mut head = [0u8; PREFIX_LEN + META_LEN];
        head[0..4].copy_from_slice(&(total as u32).to_le_bytes());
        head[4..8].copy_from_slice(&recording.to_le_bytes());
        head[8..].copy_from_slice(&meta.encode(payload));
        let (a, b) = chunk.as_mut_slices();
        let at = write_split(a, b, 0, &head);
        write_split(a, b, at, payload);
        chunk.commit_all();
        true
    }

    /// Bytes in use, for the occupancy gauge.
    pub fn used(&self) -> usize {
        self.producer.buffer().capacity() - self.producer.slots()
    }
}

impl RingReader {
    /// Delivers every whole record in the ring as `(recording, kind, journal record bytes)`,
    /// the bytes in up to two pieces (the record may wrap around the ring's end); nothing is
    /// copied. The whole backlog is taken as one chunk and released at once after the last
    /// record: two atomic operations per drain, not per record. Returns how many.
    pub fn drain_encoded(&mut self, mut on_record: impl FnMut(u32, u8, &[u8], &[u8])) -> usize {
        let available = self.consumer.slots();
        if available < PREFIX_LEN + META_LEN {
            return 0;
        }
        let Ok(chunk) = self.consumer.read_chunk(available) else {
            return 0;
        };
        let (a, b) = chunk.as_slices();
        let mut pos = 0;
        let mut n = 0;
        while available - pos >= PREFIX_LEN + META_LEN {
            let mut head = [0u8; PREFIX_LEN + META_LEN];
            let (ha, hb) = pieces(a, b, pos, pos + head.len());
            head[..ha.len()].copy_from_slice(ha);
            head[ha.len()..].copy_from_slice(hb);
            let total = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if total < PREFIX_LEN + META_LEN || total > available - pos {
                // A writer commits whole records, so a short count means a bug, not a race:
                // stop rather than misread.
                break;
            }
            let recording = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let kind = head[PREFIX_LEN + 1];
            let (ra, rb) = pieces(a, b, pos + PREFIX_LEN, pos + total);
            on_record(recording, kind, ra, rb);
            pos += total;
            n += 1;
        }
        chunk.commit(pos);
        n
    }

    /// Delivers every whole record in the ring, decoded. Returns how many.
    pub fn drain(&mut self, mut on_record: impl FnMut(u32, &PacketMeta, &[u8])) -> usize {
        let mut scratch = std::mem::take(&mut self.scratch);
        let n = self.drain_encoded(|recording, _, a, b| {
            scratch.clear();
            scratch.extend_from_slice(a);
            scratch.extend_from_slice(b);
            if let Some((meta, payload)) = PacketMeta::decode(&scratch) {
                on_record(recording, &meta, payload);
            }
        });
        self.scratch = scratch;
        n
    }

    /// The media thread is gone and its ring is empty.
    pub fn is_finished(&self) -> bool {
        self.consumer.is_abandoned() && self.consumer.slots() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u16) -> PacketMeta {
        PacketMeta {
            stream: 1,
            kind: KIND_AUDIO,
            marker: seq == 0,
            payload_type: 8,
            seq,
            timestamp: u32::from(seq) * 160,
            ssrc: 0xdead_beef,
            arrival_ns: 1_700_000_000_000_000_000 + u64::from(seq),
        }
    }

    #[test]
    fn records_round_trip_including_across_the_wrap() {
        let (mut w, mut r) = packet_ring(1000);
        let payload = [7u8; 160];
        let mut seen = Vec::new();
        for seq in 0..50u16 {
            assert!(w.push(42, &meta(seq), &payload));
            r.drain(|rec, m, p| {
                assert_eq!(rec, 42);
                assert_eq!(p, &payload[..]);
                seen.push(*m);
            });
        }
        assert_eq!(seen.len(), 50);
        assert_eq!(seen[49], meta(49));
    }

    #[test]
    fn full_ring_hands_the_packet_back_and_counts() {
        let (mut w, mut r) = packet_ring(500);
        let payload = [1u8; 160];
        let mut pushed = 0;
        while w.push(1, &meta(pushed), &payload) {
            pushed += 1;
        }
        assert_eq!(w.drops, 1);
        assert_eq!(r.drain(|_, _, _| {}), pushed as usize);
        assert!(w.push(1, &meta(0), &payload), "room again after the drain");
    }

    #[test]
    fn totals_round_trip() {
        let t = StreamTotals {
            packets: 5,
            duplicates: 1,
            foreign: 2,
            srtp_failures: 3,
            ring_drops: 4,
            rtcp_packets: 6,
            malformed: 7,
        };
        assert_eq!(StreamTotals::decode(&t.encode()), t);
        assert_eq!(
            StreamTotals::decode(&[1, 2]),
            StreamTotals::default(),
            "short input is zeros"
        );
    }

    #[test]
    fn ring_records_are_journal_records_even_across_the_wrap() {
        use crate::record::journal::{JournalReader, file_header_v2, frame};
        let (mut w, mut r) = packet_ring(700);
        let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let mut records = Vec::new();
        for seq in 0..20u16 {
            let mut m = meta(seq);
            m.kind = if seq % 5 == 0 { KIND_EVENT } else { KIND_AUDIO };
            assert!(w.push(7, &m, &payload));
            r.drain_encoded(|rec, kind, a, b| {
                assert_eq!(rec, 7);
                assert_eq!(kind, m.kind);
                records.extend_from_slice(a);
                records.extend_from_slice(b);
            });
        }
        let mut bytes = file_header_v2().to_vec();
        bytes.extend_from_slice(&frame(&records));
        let got: Vec<_> = JournalReader::new(&bytes).unwrap().collect();
        assert_eq!(got.len(), 20);
        for (seq, rec) in got.iter().enumerate() {
            let m = meta(seq as u16);
            assert_eq!(rec.seq, m.seq);
            assert_eq!(rec.timestamp, m.timestamp);
            assert_eq!(rec.ssrc, m.ssrc);
            assert_eq!(rec.arrival_ns, m.arrival_ns);
            assert_eq!(rec.marker, m.marker);
            assert_eq!(rec.payload_type, m.payload_type);
            assert_eq!(rec.stream, m.stream);
            let kind = if seq % 5 == 0 {
                RecordKind::Event
            } else {
                RecordKind::Audio
            };
            assert_eq!(rec.kind, kind);
            assert_eq!(rec.payload, &payload[..]);
        }
    }

    #[test]
    fn reader_sees_abandoned_writer() {
        let (w, r) = packet_ring(100);
        drop(w);
        assert!(r.is_finished());
    }
}
