//! Test signal for the load tool: sine tones, G.711 encoding, RFC 4733 event payloads.
//!
//! Owns: the sine generator ([`Tone`]) that fills 20 ms frames of 160 samples at 8 kHz with
//! continuous phase, the standard G.711 bit-manipulation encoders ([`linear_to_ulaw`],
//! [`linear_to_alaw`]), the telephone-event payload builder ([`telephone_event`]) and a
//! Goertzel filter ([`goertzel_power`]) for tests that check which tone came out.
//!
//! The decoders here ([`ulaw_to_linear`], [`alaw_to_linear`]) are the small reference ones the
//! load tool's tests use to turn a payload back into samples. They are not the recorder's
//! decoder: `media` owns that (with its tables) and must not depend on this module.

use std::f64::consts::TAU;

/// Sample rate of every G.711 stream the load tool sends.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms packet at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// One frame of linear samples.
pub type Frame = [i16; FRAME_SAMPLES];

/// A sine tone at 8 kHz whose phase runs on across frames, so consecutive frames join
/// without a click (a click would put energy at every frequency and blur a Goertzel check).
#[derive(Clone, Debug)]
pub struct Tone {
    /// Phase advance per sample, in radians.
    step: f64,
    /// Current phase in [0, TAU): kept wrapped so precision does not decay over long runs.
    phase: f64,
    amplitude: f64,
}

impl Tone {
    /// A tone of `hz` with peak `amplitude` (linear 16-bit units; 8000 is about -12 dBFS).
    /// Frequencies at or above the Nyquist limit (4000 Hz) alias; that is the caller's choice.
    pub fn new(hz: f32, amplitude: i16) -> Tone {
        Tone::at_rate(hz, amplitude, SAMPLE_RATE)
    }

    /// The same tone sampled at `rate` per second (16,000 for G.722's wideband audio).
    pub fn at_rate(hz: f32, amplitude: i16, rate: u32) -> Tone {
        Tone {
            step: TAU * f64::from(hz) / f64::from(rate),
            phase: 0.0,
            amplitude: f64::from(amplitude),
        }
    }

    /// The next sample.
    pub fn next_sample(&mut self) -> i16 {
        // |amplitude * sin| <= |amplitude| <= 32768, and `as` saturates, so no overflow.
        let s = (self.amplitude * self.phase.sin()).round() as i16;
        self.phase = (self.phase + self.step) % TAU;
        s
    }

    /// The next 20 ms frame.
    pub fn next_frame(&mut self) -> Frame {
        let mut f = [0i16; FRAME_SAMPLES];
        for s in &mut f {
            *s = self.next_sample();
        }
        f
    }
}

/// How many 20 ms frames a tone of `hz` (rounded to whole hertz) needs before its samples
/// repeat exactly: the period of an integer-Hz tone at 8 kHz is `8000 / gcd(hz, 8000)`
/// samples, and the frames repeat after the least common multiple of that and 160. Always
/// between 1 (e.g. 1000 Hz, 400 Hz) and 50 (one second, e.g. 1 Hz or 441 Hz).
pub fn frames_per_period(hz: u32) -> usize {
    frames_per_period_at(hz, SAMPLE_RATE)
}

/// The same for audio sampled at `rate` per second in 20 ms frames (`rate / 50` samples):
/// also between 1 and 50.
pub fn frames_per_period_at(hz: u32, rate: u32) -> usize {
    let frame = u64::from(rate / 50);
    let period = rate / gcd(hz % rate, rate);
    let lcm = u64::from(period) * frame / u64::from(gcd(period, frame as u32));
    (lcm / frame) as usize
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Linear PCM to mu-law (ITU-T G.711, the segment/bias encoder used by every reference
/// implementation): bias 0x84, clip at 32635, output bits inverted.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(CLIP) + BIAS;
    // pcm is in 0x84..=0x7FFF here, so pcm >> 7 is in 1..=255 and the exponent in 0..=7.
    let exponent = 31 - ((pcm >> 7) as u32).leading_zeros();
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !(sign | ((exponent as i32) << 4) | mantissa) as u8
}

/// Linear PCM to A-law (ITU-T G.711): 13-bit magnitude, segment search, even bits inverted
/// (XOR 0x55) and the sign bit set for positive values (XOR 0xD5 overall).
pub fn linear_to_alaw(sample: i16) -> u8 {
    // Segment end points of the 13-bit magnitude.
    const SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut pcm = i32::from(sample) >> 3;
    let mask = if pcm >= 0 {
        0xD5
    } else {
        // One's complement, so -1 (just below zero) lands in the smallest negative step.
        pcm = -pcm - 1;
        0x55
    };
    let Some(seg) = SEG_END.iter().position(|&end| pcm <= end) else {
        return 0x7F ^ mask;
    };
    let mantissa = if seg < 2 {
        (pcm >> 1) & 0x0F
    } else {
        (pcm >> seg) & 0x0F
    };
    (((seg as i32) << 4) | mantissa) as u8 ^ mask
}

/// Mu-law to linear PCM (reference decoder for tests; see the module docs).
pub fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let t = ((i32::from(u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// A-law to linear PCM (reference decoder for tests; see the module docs).
pub fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = i32::from(a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// An RFC 4733 §2.3 telephone-event payload: event code, E bit, R bit zero, volume in
/// -dBm0 (masked to 6 bits) and duration in timestamp units.
pub fn telephone_event(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
    let d = duration.to_be_bytes();
    [event, (u8::from(end) << 7) | (volume & 0x3F), d[0], d[1]]
}

/// Power of `samples` at `hz` (Goertzel algorithm), normalised by the sample count squared so
/// blocks of different lengths compare. Tests compare it across frequencies: the tone that
/// was sent dominates the others by orders of magnitude.
pub fn goertzel_power(samples: &[i16], hz: f32, sample_rate: u32) -> f64 {
    let coeff = 2.0 * (TAU * f64::from(hz) / f64::from(sample_rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let n = samples.len().max(1) as f64;
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (n * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        // 1000 is in segment 3: (1000 + 132) >> 7 = 8 -> exponent 3, mantissa (1132 >> 6) & 15.
        assert_eq!(
            linear_to_ulaw(1000),
            !((3 << 4) | ((1132 >> 6) & 0x0F)) as u8
        );
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn decode_then_encode_is_identity() {
        for code in 0..=255u8 {
            // 0x7F is mu-law "negative zero": it decodes to 0, which encodes as 0xFF.
            if code != 0x7F {
                assert_eq!(
                    linear_to_ulaw(ulaw_to_linear(code)),
                    code,
                    "ulaw {code:#04x}"
                );
            }
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "alaw {code:#04x}"
            );
        }
    }

    #[test]
    fn encode_then_decode_is_close() {
        // G.711 keeps at least ~4 bits of mantissa: the error is below 1/16 of the value
        // plus the smallest step.
        for s in (-32768i32..=32767).step_by(97) {
            let s = s as i16;
            for back in [
                ulaw_to_linear(linear_to_ulaw(s)),
                alaw_to_linear(linear_to_alaw(s)),
            ] {
                let err = (i32::from(back) - i32::from(s)).abs();
                assert!(err <= i32::from(s).abs() / 16 + 132, "{s} -> {back}");
            }
        }
    }

    #[test]
    fn tone_phase_is_continuous_and_periodic() {
        let mut t = Tone::new(1000.0, 8000);
        let a = t.next_frame();
        let b = t.next_frame();
        // 1 kHz at 8 kHz repeats every 8 samples, so every frame is the same.
        assert_eq!(frames_per_period(1000), 1);
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((i32::from(*x) - i32::from(*y)).abs() <= 1);
        }
        assert_eq!(a[2], 8000);
        assert_eq!(frames_per_period(440), 5);
        assert_eq!(frames_per_period(1), 50);
        assert_eq!(frames_per_period(441), 50);
        assert_eq!(frames_per_period(0), 1);
    }

    #[test]
    fn goertzel_finds_the_tone() {
        let mut t = Tone::new(697.0, 8000);
        let samples: Vec<i16> = (0..800).map(|_| t.next_sample()).collect();
        let on = goertzel_power(&samples, 697.0, SAMPLE_RATE);
        for off in [400.0, 1000.0, 1633.0] {
            assert!(on > 100.0 * goertzel_power(&samples, off, SAMPLE_RATE));
        }
    }

    #[test]
    fn telephone_event_layout() {
        assert_eq!(telephone_event(5, false, 10, 160), [5, 10, 0, 160]);
        assert_eq!(
            telephone_event(11, true, 0xFF, 0x1234),
            [11, 0x80 | 0x3F, 0x12, 0x34]
        );
    }
}
