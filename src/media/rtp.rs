//! RTP header view (RFC 3550 §5.1) and the rtcp-mux test (RFC 5761 §4).
//!
//! Owns: reading the fixed header, skipping the CSRC list and any header extension, and
//! removing padding, so the caller knows where the payload is. The view borrows nothing and
//! copies nothing: [`RtpHeader`] is a small `Copy` value of offsets and fields, and
//! [`payload`] slices the caller's buffer.
//!
//! Must not: allocate, log, lock or panic. This runs once per received packet on a media
//! thread, and every byte it reads comes from the network, so every read is bounds-checked
//! through `first_chunk`/`get` and every failure is an [`RtpError`] value.
//!
//! SRTP: the padding count sits in the encrypted part of an SRTP packet, followed by the
//! authentication tag, so call [`parse_rtp`] on the authenticated, decrypted packet (tag
//! removed). The header length does not depend on padding, so decryption can use the same
//! CSRC/extension arithmetic first.

use std::fmt;

/// Length of the fixed RTP header (RFC 3550 §5.1).
pub const FIXED_HEADER_LEN: usize = 12;

/// The fields of one RTP header plus where its payload lies in the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    pub version: u8,
    pub padding: bool,
    pub extension: bool,
    pub csrc_count: u8,
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Fixed header + CSRC list + header extension, in bytes: the payload starts here.
    pub header_len: usize,
    /// Payload bytes after removing padding.
    pub payload_len: usize,
}

/// Why a datagram is not a usable RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpError {
    /// Fewer than 12 bytes.
    TooShort,
    /// Version bits are not 2 (carries the version found).
    BadVersion(u8),
    /// The CSRC count says more CSRCs than the packet holds.
    TruncatedCsrc,
    /// The X bit is set but the extension header or its data runs past the end.
    TruncatedExtension,
    /// The P bit is set but the pad count is larger than what follows the header.
    BadPadding,
}

impl RtpError {
    /// A fixed, human-readable reason, for counters and the occasional (rate-limited) log.
    pub fn reason(&self) -> &'static str {
        match self {
            RtpError::TooShort => "shorter than the 12-byte RTP header",
            RtpError::BadVersion(_) => "RTP version is not 2",
            RtpError::TruncatedCsrc => "CSRC list runs past the end of the packet",
            RtpError::TruncatedExtension => "header extension runs past the end of the packet",
            RtpError::BadPadding => "padding count is larger than the payload",
        }
    }
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtpError::BadVersion(v) => write!(f, "{} (found {v})", self.reason()),
            _ => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for RtpError {}

/// Parses the header of one RTP packet.
///
/// - Version must be 2.
/// - The CSRC list (4 bytes per CSRC) is skipped.
/// - A header extension is skipped by its length field. RFC 3550 §5.3.1, RFC 8285 one-byte
///   (`0xBEDE`) and two-byte (`0x100x`) forms all share the same 4-byte preamble with a length
///   in 32-bit words, so the profile is not inspected: a recorder never needs the elements.
/// - With the P bit, the last byte is the pad count; it must not exceed what follows the
///   header. A count of 0 is tolerated as "no padding" (RFC 3550 says the count includes
///   itself, but dropping audio over that would help nobody).
#[inline]
pub fn parse_rtp(packet: &[u8]) -> Result<RtpHeader, RtpError> {
    let Some(fixed) = packet.first_chunk::<FIXED_HEADER_LEN>() else {
        return Err(RtpError::TooShort);
    };
    let version = fixed[0] >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let padding = fixed[0] & 0x20 != 0;
    let extension = fixed[0] & 0x10 != 0;
    let csrc_count = fixed[0] & 0x0f;

    // At most 12 + 15 * 4 + 4 + 65535 * 4 bytes: no overflow possible in usize.
    let mut header_len = FIXED_HEADER_LEN + 4 * usize::from(csrc_count);
    if packet.len() < header_len {
        return Err(RtpError::TruncatedCsrc);
    }
    if extension {
        let Some(ext) = packet
            .get(header_len..)
            .and_then(|rest| rest.first_chunk::<4>())
        else {
            return Err(RtpError::TruncatedExtension);
        };
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        header_len += 4 + 4 * words;
        if packet.len() < header_len {
            return Err(RtpError::TruncatedExtension);
        }
    }

    let mut payload_len = packet.len() - header_len;
    if padding {
        // `packet` has at least 12 bytes here, so `last` is always `Some`.
        let pad = usize::from(packet.last().copied().unwrap_or(0));
        if pad > payload_len {
            return Err(RtpError::BadPadding);
        }
        payload_len -= pad;
    }

    Ok(RtpHeader {
        version,
        padding,
        extension,
        csrc_count,
        marker: fixed[1] & 0x80 != 0,
        payload_type: fixed[1] & 0x7f,
        sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
        timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        header_len,
        payload_len,
    })
}

/// The payload of `packet` as described by `h` (padding excluded). Returns an empty slice
/// rather than panicking if `h` does not belong to `packet`.
#[inline]
pub fn payload<'a>(packet: &'a [u8], h: &RtpHeader) -> &'a [u8] {
    h.header_len
        .checked_add(h.payload_len)
        .and_then(|end| packet.get(h.header_len..end))
        .unwrap_or(&[])
}

/// rtcp-mux demultiplexing (RFC 5761 §4): RTCP when version is 2 and the second byte (marker
/// bit + payload type in RTP terms) is 192..=223, the RTCP packet types SR, RR, SDES, BYE,
/// APP, RTPFB, PSFB ... RTP payload types 64..=95 are never assigned for this reason.
/// Anything shorter than the 4-byte RTCP common header is not RTCP.
#[inline]
pub fn is_rtcp(packet: &[u8]) -> bool {
    match packet.first_chunk::<4>() {
        Some(head) => head[0] >> 6 == 2 && (192..=223).contains(&head[1]),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain packet: V=2, given PT/seq/ts/ssrc, `payload` after the fixed header.
    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn fixed_header_fields_are_read() {
        let mut p = packet(0, 0x1234, 0xdead_beef, 0x0102_0304, &[7; 160]);
        p[1] |= 0x80;
        let h = parse_rtp(&p).unwrap();
        assert_eq!(h.version, 2);
        assert!(h.marker);
        assert!(!h.padding && !h.extension);
        assert_eq!(h.payload_type, 0);
        assert_eq!(h.sequence, 0x1234);
        assert_eq!(h.timestamp, 0xdead_beef);
        assert_eq!(h.ssrc, 0x0102_0304);
        assert_eq!(h.header_len, 12);
        assert_eq!(h.payload_len, 160);
        assert_eq!(payload(&p, &h), &[7; 160][..]);
    }

    #[test]
    fn version_must_be_2() {
        for first in [0x00u8, 0x40, 0xc0] {
            let mut p = packet(0, 1, 1, 1, &[0; 4]);
            p[0] = first;
            assert_eq!(parse_rtp(&p), Err(RtpError::BadVersion(first >> 6)));
        }
    }

    #[test]
    fn shorter_than_fixed_header_is_error() {
        let p = packet(0, 1, 1, 1, &[]);
        assert_eq!(parse_rtp(&p[..11]), Err(RtpError::TooShort));
        assert_eq!(parse_rtp(&[]), Err(RtpError::TooShort));
        // Exactly 12 bytes is a valid packet with an empty payload.
        assert_eq!(parse_rtp(&p).unwrap().payload_len, 0);
    }

    #[test]
    fn csrc_and_extension_are_skipped() {
        let mut p = packet(8, 1, 2, 3, &[]);
        p[0] |= 0x10 | 2; // X bit, CC = 2
        p.extend_from_slice(&[0xaa; 8]); // two CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01]); // RFC 8285 one-byte form, 1 word
        p.extend_from_slice(&[0x10, 0xff, 0x00, 0x00]);
        p.extend_from_slice(&[1, 2, 3]);
        let h = parse_rtp(&p).unwrap();
        assert_eq!(h.csrc_count, 2);
        assert!(h.extension);
        assert_eq!(h.header_len, 12 + 8 + 4 + 4);
        assert_eq!(payload(&p, &h), &[1, 2, 3]);
    }

    #[test]
    fn two_byte_extension_form_is_skipped_by_length() {
        let mut p = packet(0, 1, 2, 3, &[]);
        p[0] |= 0x10;
        p.extend_from_slice(&[0x10, 0x00, 0x00, 0x02]); // RFC 8285 two-byte form, 2 words
        p.extend_from_slice(&[0x01, 0x03, 9, 9, 9, 0, 0, 0]);
        p.push(42);
        let h = parse_rtp(&p).unwrap();
        assert_eq!(h.header_len, 24);
        assert_eq!(payload(&p, &h), &[42]);
    }

    #[test]
    fn csrc_list_past_end_is_error() {
        let mut p = packet(0, 1, 2, 3, &[0; 7]);
        p[0] |= 2; // needs 8 bytes of CSRCs
        assert_eq!(parse_rtp(&p), Err(RtpError::TruncatedCsrc));
    }

    #[test]
    fn extension_past_end_is_error() {
        let mut p = packet(0, 1, 2, 3, &[0xbe, 0xde]);
        p[0] |= 0x10;
        assert_eq!(parse_rtp(&p), Err(RtpError::TruncatedExtension));
        let mut p = packet(0, 1, 2, 3, &[0xbe, 0xde, 0x00, 0x02, 0, 0, 0, 0]);
        p[0] |= 0x10;
        assert_eq!(parse_rtp(&p), Err(RtpError::TruncatedExtension));
    }

    #[test]
    fn padding_is_removed_from_payload() {
        let mut p = packet(0, 1, 2, 3, &[5, 6, 0, 0, 3]);
        p[0] |= 0x20;
        let h = parse_rtp(&p).unwrap();
        assert!(h.padding);
        assert_eq!(payload(&p, &h), &[5, 6]);
    }

    #[test]
    fn padding_may_fill_the_whole_payload() {
        let mut p = packet(0, 1, 2, 3, &[0, 0, 0, 4]);
        p[0] |= 0x20;
        assert_eq!(parse_rtp(&p).unwrap().payload_len, 0);
    }

    #[test]
    fn padding_count_beyond_payload_is_error() {
        let mut p = packet(0, 1, 2, 3, &[0, 0, 4]);
        p[0] |= 0x20;
        assert_eq!(parse_rtp(&p), Err(RtpError::BadPadding));
        // The header's own bytes are never padding: a bare header with P set and a count
        // in its last SSRC byte is an error too.
        let mut p = packet(0, 1, 2, 1, &[]);
        p[0] |= 0x20;
        assert_eq!(parse_rtp(&p), Err(RtpError::BadPadding));
    }

    #[test]
    fn zero_pad_count_is_tolerated() {
        let mut p = packet(0, 1, 2, 3, &[9, 9, 0]);
        p[0] |= 0x20;
        assert_eq!(parse_rtp(&p).unwrap().payload_len, 3);
    }

    #[test]
    fn padding_counts_after_the_extension() {
        let mut p = packet(0, 1, 2, 3, &[]);
        p[0] |= 0x20 | 0x10;
        p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x00, 1, 2]);
        p.push(2);
        let h = parse_rtp(&p).unwrap();
        assert_eq!(h.header_len, 16);
        assert_eq!(payload(&p, &h), &[1]);
        *p.last_mut().unwrap() = 4;
        assert_eq!(parse_rtp(&p), Err(RtpError::BadPadding));
    }

    #[test]
    fn payload_of_a_foreign_header_is_empty_not_a_panic() {
        let p = packet(0, 1, 2, 3, &[1, 2, 3]);
        let mut h = parse_rtp(&p).unwrap();
        h.payload_len = 1000;
        assert!(payload(&p, &h).is_empty());
        h.header_len = usize::MAX;
        assert!(payload(&p, &h).is_empty());
    }

    #[test]
    fn rtcp_mux_is_recognised() {
        // SR (200), RR (201), SDES (202), BYE (203), APP (204), RTPFB (205), PSFB (206), XR.
        for pt in [200u8, 201, 202, 203, 204, 205, 206, 207, 192, 223] {
            assert!(is_rtcp(&[0x80, pt, 0, 6]), "pt {pt}");
        }
        // RTCP with a reception report count in the first byte is still RTCP.
        assert!(is_rtcp(&[0x81, 201, 0, 7]));
    }

    #[test]
    fn rtp_is_not_taken_for_rtcp() {
        // PCMU, PCMA, telephone-event 101 with and without marker; PT 96 with marker = 224.
        for b1 in [0u8, 8, 101, 0x80, 0x88, 0x80 | 101, 0x80 | 96, 0x80 | 63] {
            assert!(!is_rtcp(&packet(b1, 1, 2, 3, &[0; 160])), "byte {b1}");
        }
    }

    #[test]
    fn rtcp_needs_version_2_and_common_header() {
        assert!(!is_rtcp(&[0x40, 200, 0, 6]));
        assert!(!is_rtcp(&[0x80, 200, 0]));
        assert!(!is_rtcp(&[]));
    }

    #[test]
    fn truncated_packets_never_panic() {
        // Every prefix of well-formed packets with every feature, and random bytes.
        let mut full = packet(0, 1, 2, 3, &[]);
        full[0] |= 0x20 | 0x10 | 3;
        full.extend_from_slice(&[1; 12]);
        full.extend_from_slice(&[0x10, 0x00, 0x00, 0x01, 1, 1, 0, 0]);
        full.extend_from_slice(&[5; 20]);
        full.push(3);
        assert!(parse_rtp(&full).is_ok());
        for n in 0..=full.len() {
            let p = &full[..n];
            if let Ok(h) = parse_rtp(p) {
                assert!(h.header_len + h.payload_len <= p.len());
                let _ = payload(p, &h);
            }
            let _ = is_rtcp(p);
        }

        // Deterministic xorshift so a failure reproduces.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 96];
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 97) as usize;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (x.rotate_left(i as u32 * 7) >> 3) as u8 ^ i as u8;
            }
            // Bias toward version 2 so the deeper paths run.
            buf[0] = (buf[0] & 0x3f) | 0x80;
            let p = &buf[..len];
            if let Ok(h) = parse_rtp(p) {
                assert!(h.header_len + h.payload_len <= p.len());
                assert_eq!(payload(p, &h).len(), h.payload_len);
            }
            let _ = is_rtcp(p);
        }
    }

    #[test]
    fn error_reasons_are_distinct() {
        let all = [
            RtpError::TooShort,
            RtpError::BadVersion(1),
            RtpError::TruncatedCsrc,
            RtpError::TruncatedExtension,
            RtpError::BadPadding,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.reason(), b.reason());
            }
        }
        assert_eq!(
            RtpError::BadVersion(1).to_string(),
            "RTP version is not 2 (found 1)"
        );
    }
}
