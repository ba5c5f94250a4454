//! Ogg pages (RFC 3533) carrying Opus (RFC 7845): what finalize stores an Opus stream as.
//!
//! Owns: page framing (lacing, continuation, BOS/EOS flags, the page CRC) and the two Opus
//! header packets. The caller hands in Opus packets (RTP payloads, RFC 7587: one Opus packet
//! per RTP packet) with the granule position (48 kHz samples) at their end.
//!
//! The page CRC is CRC-32 with polynomial 0x04C11DB7, initial value 0, no reflection and no
//! final XOR, computed over the whole page with the CRC field zeroed.

use std::io::{self, Write};

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04C1_1DB7
            } else {
                r << 1
            };
            k += 1;
        }
        t[i] = r;
        i += 1;
    }
    t
}

const CRC_TABLE: [u32; 256] = crc_table();

/// The Ogg page checksum of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

/// Most lacing values on one page (the segment count is a byte).
const MAX_SEGMENTS: usize = 255;
/// Pages are closed once they hold this much, so a reader can seek in about one second steps.
const PAGE_TARGET_BYTES: usize = 4096;

/// Writes one logical Ogg stream.
pub struct OggWriter<W: Write> {
    out: W,
    serial: u32,
    sequence: u32,
    segments: Vec<u8>,
    body: Vec<u8>,
    /// Granule of the last packet that ended on the pending page, if any did.
    granule: Option<u64>,
    /// The pending page starts with the rest of a packet from the previous page.
    continued: bool,
    bos_written: bool,
    bytes: u64,
}

impl<W: Write> OggWriter<W> {
    pub fn new(out: W, serial: u32) -> OggWriter<W> {
        OggWriter {
            out,
            serial,
            sequence: 0,
            segments: Vec::with_capacity(MAX_SEGMENTS),
            body: Vec::with_capacity(PAGE_TARGET_BYTES + 1024),
            granule: None,
            continued: false,
            bos_written: false,
            bytes: 0,
        }
    }

    /// Adds one packet ending at `granule`. Pages are closed when full; a packet larger than a
    /// page continues on the next one.
    pub fn write_packet(&mut self, packet: &[u8], granule: u64) -> io::Result<()> {
        // Close a full page only now, so the last page is still pending when `finish` marks
        // it end-of-stream.
        if self.body.len() >= PAGE_TARGET_BYTES {
            self.flush_page(false)?;
        }
        let mut rest = packet;
        loop {
            if self.segments.len() == MAX_SEGMENTS {
                self.flush_page(false)?;
                self.continued = true;
            }
            let n = rest.len().min(255);
            self.segments.push(n as u8);
            self.body.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            // A lacing value below 255 ends the packet (a multiple of 255 ends with a 0).
            if n < 255 {
                break;
            }
        }
        self.granule = Some(granule);
        Ok(())
    }

    /// Closes the pending page now (header packets must end their pages).
    pub fn flush(&mut self) -> io::Result<()> {
        self.flush_page(false)
    }

    /// Closes the stream: the pending page (or an empty one) with the end-of-stream flag.
    /// Returns the writer and the bytes written.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.flush_page(true)?;
        self.out.flush()?;
        Ok((self.out, self.bytes))
    }

    fn flush_page(&mut self, eos: bool) -> io::Result<()> {
        if self.segments.is_empty() && !eos {
            return Ok(());
        }
        let mut flags = 0u8;
        if self.continued && !self.segments.is_empty() {
            flags |= 0x01;
        }
        if !self.bos_written {
            flags |= 0x02;
        }
        if eos {
            flags |= 0x04;
        }
        // -1: no packet ends on this page.
        let granule = self.granule.map_or(u64::MAX, |g| g);
        let mut page = Vec::with_capacity(27 + self.segments.len() + self.body.len());
        page.extend_from_slice(b"OggS");
        page.push(0);
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.sequence.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(self.segments.len() as u8);
        page.extend_from_slice(&self.segments);
        page.extend_from_slice(&self.body);
        let crc = crc32(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&page)?;
        self.bytes += page.len() as u64;
        self.sequence = self.sequence.wrapping_add(1);
        self.bos_written = true;
        self.segments.clear();
        self.body.clear();
        self.granule = None;
        self.continued = false;
        Ok(())
    }
}

/// Opus "ID header" (RFC 7845 §5.1), channel mapping family 0.
///
/// Pre-skip is 0: the RTP sender's encoder delay is unknown, and trimming real audio from the
/// start of a recording is worse than a few milliseconds of decoder warm-up.
pub fn opus_head(channels: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1); // version
    h.push(channels.clamp(1, 2));
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
    h.extend_from_slice(&48_000u32.to_le_bytes()); // input sample rate (informational)
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // mapping family
    h
}

/// Opus comment header (RFC 7845 §5.2): vendor string, no user comments.
pub fn opus_tags(vendor: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(16 + vendor.len());
    t.extend_from_slice(b"OpusTags");
    t.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    t.extend_from_slice(vendor.as_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    t
}

/// Samples (at 48 kHz) an Opus packet decodes to, from its TOC byte (RFC 6716 §3.1); `None`
/// for an empty or malformed packet.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame = match config {
        // SILK: 10, 20, 40, 60 ms
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid: 10, 20 ms
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT: 2.5, 5, 10, 20 ms
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3F),
    };
    let samples = frame * frames;
    // RFC 6716: a packet holds at most 120 ms.
    (frames > 0 && samples <= 5760).then_some(samples)
}

/// A TOC-only Opus packet (CELT fullband, no frame data) lasting `samples` (120, 240, 480 or
/// 960): a decoder treats it as a lost frame and conceals, fading to silence. Finalize fills
/// gaps with these so the Ogg timeline matches the recording's.
pub fn opus_gap_packet(samples: u32) -> Option<[u8; 1]> {
    let config = match samples {
        120 => 28u8,
        240 => 29,
        480 => 30,
        960 => 31,
        _ => return None,
    };
    Some([config << 3])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A parsed page: (flags, granule, sequence, packets completed on it, CRC ok).
    pub(crate) type Page = (u8, u64, u32, Vec<Vec<u8>>, bool);

    /// Parses pages back.
    pub(crate) fn pages(bytes: &[u8]) -> Vec<Page> {
        let mut out = Vec::new();
        let mut at = 0;
        let mut partial: Vec<u8> = Vec::new();
        while at < bytes.len() {
            assert_eq!(&bytes[at..at + 4], b"OggS", "page at {at}");
            let flags = bytes[at + 5];
            let granule = u64::from_le_bytes(bytes[at + 6..at + 14].try_into().unwrap());
            let seq = u32::from_le_bytes(bytes[at + 18..at + 22].try_into().unwrap());
            let crc = u32::from_le_bytes(bytes[at + 22..at + 26].try_into().unwrap());
            let nseg = usize::from(bytes[at + 26]);
            let lacing = &bytes[at + 27..at + 27 + nseg];
            let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
            let end = at + 27 + nseg + body_len;
            let mut page = bytes[at..end].to_vec();
            page[22..26].fill(0);
            let crc_ok = crc32(&page) == crc;
            let mut packets = Vec::new();
            let mut pos = at + 27 + nseg;
            for &l in lacing {
                partial.extend_from_slice(&bytes[pos..pos + usize::from(l)]);
                pos += usize::from(l);
                if l < 255 {
                    packets.push(std::mem::take(&mut partial));
                }
            }
            out.push((flags, granule, seq, packets, crc_ok));
            at = end;
        }
        out
    }

    #[test]
    fn crc_of_known_input() {
        // CRC-32/MPEG-2 without the init/xorout: "123456789" -> 0x89A1897F.
        assert_eq!(crc32(b"123456789"), 0x89A1_897F);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn stream_starts_with_oggs_and_every_crc_verifies() {
        let mut w = OggWriter::new(Vec::new(), 0x1234);
        w.write_packet(&opus_head(1), 0).unwrap();
        w.flush().unwrap();
        w.write_packet(&opus_tags("reel"), 0).unwrap();
        w.flush().unwrap();
        for i in 0..100u64 {
            w.write_packet(&[0xF8, i as u8, 1, 2, 3], (i + 1) * 960)
                .unwrap();
        }
        let (bytes, n) = w.finish().unwrap();
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(&bytes[..4], b"OggS");
        let p = pages(&bytes);
        assert!(p.iter().all(|x| x.4), "CRCs");
        assert_eq!(p[0].0, 0x02, "BOS");
        assert_eq!(p[0].3, vec![opus_head(1)]);
        assert_eq!(p[1].3, vec![opus_tags("reel")]);
        assert_eq!(p.last().unwrap().0 & 0x04, 0x04, "EOS");
        assert_eq!(p.last().unwrap().1, 100 * 960);
        let seqs: Vec<u32> = p.iter().map(|x| x.2).collect();
        assert_eq!(seqs, (0..p.len() as u32).collect::<Vec<_>>());
        let audio: usize = p[2..].iter().map(|x| x.3.len()).sum();
        assert_eq!(audio, 100);
    }

    #[test]
    fn packet_of_255_multiple_ends_with_zero_lacing() {
        let mut w = OggWriter::new(Vec::new(), 1);
        w.write_packet(&[7u8; 510], 960).unwrap();
        let (bytes, _) = w.finish().unwrap();
        assert_eq!(bytes[26], 3);
        assert_eq!(&bytes[27..30], &[255, 255, 0]);
        assert_eq!(pages(&bytes)[0].3, vec![vec![7u8; 510]]);
    }

    #[test]
    fn huge_packet_continues_on_next_page() {
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut w = OggWriter::new(Vec::new(), 1);
        w.write_packet(&big, 960).unwrap();
        let (bytes, _) = w.finish().unwrap();
        let p = pages(&bytes);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].1, u64::MAX, "no packet ends on the first page");
        assert_eq!(p[1].0 & 0x01, 0x01, "continued");
        assert_eq!(p[1].3, vec![big]);
    }

    #[test]
    fn opus_head_layout() {
        let h = opus_head(2);
        assert_eq!(h.len(), 19);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!(h[8], 1);
        assert_eq!(h[9], 2);
        assert_eq!(u32::from_le_bytes(h[12..16].try_into().unwrap()), 48_000);
    }

    #[test]
    fn packet_durations_from_toc() {
        assert_eq!(opus_packet_samples(&[0xF8]), Some(960)); // CELT FB 20 ms
        assert_eq!(opus_packet_samples(&[0x08]), Some(960)); // SILK NB 20 ms
        assert_eq!(opus_packet_samples(&[0x70]), Some(480)); // hybrid FB 10 ms
        assert_eq!(opus_packet_samples(&[0x09]), Some(1920)); // two 20 ms frames
        assert_eq!(opus_packet_samples(&[0xE3, 0x03]), Some(360)); // three 2.5 ms frames
        assert_eq!(opus_packet_samples(&[0x1B, 0x03]), None); // 3 x 60 ms > 120 ms
        assert_eq!(opus_packet_samples(&[0x03]), None); // code 3 without count byte
        assert_eq!(opus_packet_samples(&[]), None);
    }

    #[test]
    fn gap_packets_have_the_asked_duration() {
        for n in [120, 240, 480, 960] {
            assert_eq!(opus_packet_samples(&opus_gap_packet(n).unwrap()), Some(n));
        }
        assert_eq!(opus_gap_packet(100), None);
    }
}
