//! G.711 mu-law and A-law (ITU-T G.711) to and from 16-bit linear PCM.
//!
//! Decoding is a 256-entry table built at compile time (finalize decodes millions of samples);
//! encoding is the segment search of the classic Sun reference, used for tests and tools.

/// mu-law byte -> linear, ±32124.
pub const ULAW_TO_LINEAR: [i16; 256] = build_ulaw();
/// A-law byte -> linear, ±32256.
pub const ALAW_TO_LINEAR: [i16; 256] = build_alaw();

/// mu-law silence (+0).
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law silence (the smallest positive step, with the even-bit inversion).
pub const ALAW_SILENCE: u8 = 0xD5;

const fn ulaw_decode(u: u8) -> i16 {
    let u = !u;
    let t = (((u & 0x0F) as i32) << 3) + 0x84;
    let t = t << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

const fn alaw_decode(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn build_ulaw() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode(i as u8);
        i += 1;
    }
    t
}

const fn build_alaw() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode(i as u8);
        i += 1;
    }
    t
}

/// Segment of a magnitude: the first of the bounds 0xFF, 0x1FF ... 0x7FFF it does not exceed
/// (8 when above them all).
fn segment(v: i32) -> u8 {
    let mut seg = 0u8;
    while seg < 8 && v > (0x100 << seg) - 1 {
        seg += 1;
    }
    seg
}

#[inline]
pub fn ulaw_to_linear(u: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(u)]
}

#[inline]
pub fn alaw_to_linear(a: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(a)]
}

/// Linear -> mu-law (bias 0x84, clipped at the top segment).
pub fn linear_to_ulaw(pcm: i16) -> u8 {
    let pcm = i32::from(pcm);
    let (v, mask) = if pcm < 0 {
        (0x84 - pcm, 0x7F)
    } else {
        (pcm + 0x84, 0xFF)
    };
    let seg = segment(v);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    ((seg << 4) | ((v >> (seg + 3)) & 0x0F) as u8) ^ mask
}

/// Linear -> A-law.
pub fn linear_to_alaw(pcm: i16) -> u8 {
    let pcm = i32::from(pcm);
    let (v, mask) = if pcm >= 0 {
        (pcm, 0xD5)
    } else {
        // -1..-8 map to the smallest negative step, not through a negative shift.
        ((-pcm - 8).max(0), 0x55)
    };
    let seg = segment(v);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let shift = if seg < 2 { 4 } else { seg + 3 };
    ((seg << 4) | ((v >> shift) & 0x0F) as u8) ^ mask
}

/// Decodes mu-law bytes into `out` (same length).
#[inline]
pub fn decode_ulaw(input: &[u8], out: &mut [i16]) {
    for (o, &b) in out.iter_mut().zip(input) {
        *o = ULAW_TO_LINEAR[usize::from(b)];
    }
}

/// Decodes A-law bytes into `out` (same length).
#[inline]
pub fn decode_alaw(input: &[u8], out: &mut [i16]) {
    for (o, &b) in out.iter_mut().zip(input) {
        *o = ALAW_TO_LINEAR[usize::from(b)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_bytes_decode_to_near_zero() {
        assert_eq!(ulaw_to_linear(ULAW_SILENCE), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(alaw_to_linear(ALAW_SILENCE), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
    }

    #[test]
    fn extremes() {
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn every_ulaw_byte_round_trips() {
        for b in 0..=255u8 {
            let back = linear_to_ulaw(ulaw_to_linear(b));
            // 0x7F and 0xFF are -0 and +0: both decode to 0, which encodes as +0.
            let want = if b == 0x7F { 0xFF } else { b };
            assert_eq!(back, want, "byte {b:#04x}");
        }
    }

    #[test]
    fn every_alaw_byte_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b, "byte {b:#04x}");
        }
    }

    #[test]
    fn encoding_is_monotonic_and_close() {
        for x in (-32768i32..32768).step_by(7) {
            let x = x as i16;
            let u = ulaw_to_linear(linear_to_ulaw(x));
            let a = alaw_to_linear(linear_to_alaw(x));
            // Quantisation error is at most half a step: 1/16 of the magnitude plus a bit.
            let tol = i32::from(x).abs() / 16 + 16;
            assert!(
                (i32::from(u) - i32::from(x)).abs() <= tol,
                "ulaw {x} -> {u}"
            );
            assert!(
                (i32::from(a) - i32::from(x)).abs() <= tol,
                "alaw {x} -> {a}"
            );
        }
    }

    #[test]
    fn slice_decoders_match_tables() {
        let input: Vec<u8> = (0..=255).collect();
        let mut out = vec![0i16; 256];
        decode_ulaw(&input, &mut out);
        assert_eq!(out, ULAW_TO_LINEAR);
        decode_alaw(&input, &mut out);
        assert_eq!(out, ALAW_TO_LINEAR);
    }
}
