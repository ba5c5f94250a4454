//! ITU-T G.722 sub-band ADPCM at 64 kbit/s (mode 1): decoder to 16 kHz PCM16, and the
//! matching encoder (used by tests and benches to make real G.722 input).
//!
//! Written from the ITU-T G.722 block diagrams (blocks 1L..6L, 1H..6H, the 24-tap QMF); the
//! block names in comments are the Recommendation's. Each input byte carries one low-band
//! sample (6 bits) and one high-band sample (2 bits) at 8 kHz, which the receive QMF turns into
//! two 16 kHz output samples. RFC 3551: the RTP clock is 8000 Hz although audio is 16 kHz, so
//! one RTP timestamp unit is one byte is two output samples.
//!
//! All arithmetic is in `i32` with the Recommendation's saturation to 16 bits; no input byte
//! sequence can overflow or panic.

/// Low-band 6-bit inverse quantiser (block 5L, INVQBL).
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// Low-band 4-bit inverse quantiser used for prediction (block 2L, INVQAL).
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// High-band 2-bit inverse quantiser (block 2H, INVQAH).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
/// Log-scale factor adaptation, low band (block 3L, LOGSCL).
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Log-scale factor adaptation, high band (block 3H, LOGSCH).
const WH: [i32; 3] = [0, -214, 798];
const RH2: [usize; 4] = [2, 1, 2, 1];
/// Inverse log table (blocks 3L/3H, SCALEL/SCALEH).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// QMF coefficients (half of the symmetric 24 taps).
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];
/// The same, reversed (the odd taps run the other way).
const QMF_REV: [i32; 12] = [-11, 53, -156, 362, -805, 3876, 951, -210, 32, 12, -11, 3];
/// Encoder: low-band quantiser decision levels (block 1L, QUANTL).
const Q6: [i32; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];
const ILN: [i32; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4, 0,
];
const ILP: [i32; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32, 0,
];
const IHN: [i32; 3] = [0, 1, 0];
const IHP: [i32; 3] = [2, 3, 2];

#[inline]
fn sat(x: i32) -> i32 {
    x.clamp(-32768, 32767)
}

/// The adaptive predictor and scale factor of one sub-band.
#[derive(Clone, Copy, Debug, Default)]
struct Band {
    /// Predicted signal (block 4, PREDIC), its pole and zero parts.
    s: i32,
    sp: i32,
    sz: i32,
    /// Reconstructed signal, partial reconstructed signal, quantised differences: history.
    r: [i32; 3],
    p: [i32; 3],
    d: [i32; 7],
    /// Pole (a) and zero (b) predictor coefficients, and their updates.
    a: [i32; 3],
    ap: [i32; 3],
    b: [i32; 7],
    bp: [i32; 7],
    sg: [i32; 7],
    /// Log scale factor and scale factor.
    nb: i32,
    det: i32,
}

impl Band {
    fn new(det: i32) -> Band {
        Band {
            det,
            ..Band::default()
        }
    }

    /// Block 4: reconstruction, predictor adaptation (UPPOL1/2, UPZERO), delays, prediction.
    fn update(&mut self, d: i32) {
        // RECONS, PARREC
        self.d[0] = d;
        self.r[0] = sat(self.s + d);
        self.p[0] = sat(self.sz + d);

        // UPPOL2
        for i in 0..3 {
            self.sg[i] = self.p[i] >> 15;
        }
        let wd1 = sat(self.a[1] << 2);
        let wd2 = if self.sg[0] == self.sg[1] { -wd1 } else { wd1 }.min(32767);
        let mut wd3 = if self.sg[0] == self.sg[2] { 128 } else { -128 };
        wd3 += wd2 >> 7;
        wd3 += (self.a[2] * 32512) >> 15;
        self.ap[2] = wd3.clamp(-12288, 12288);

        // UPPOL1
        self.sg[0] = self.p[0] >> 15;
        self.sg[1] = self.p[1] >> 15;
        let wd1 = if self.sg[0] == self.sg[1] { 192 } else { -192 };
        let wd2 = (self.a[1] * 32640) >> 15;
        self.ap[1] = sat(wd1 + wd2);
        let wd3 = sat(15360 - self.ap[2]);
        self.ap[1] = self.ap[1].clamp(-wd3, wd3);

        // UPZERO
        let wd1 = if d == 0 { 0 } else { 128 };
        self.sg[0] = d >> 15;
        for i in 1..7 {
            self.sg[i] = self.d[i] >> 15;
            let wd2 = if self.sg[i] == self.sg[0] { wd1 } else { -wd1 };
            let wd3 = (self.b[i] * 32640) >> 15;
            self.bp[i] = sat(wd2 + wd3);
        }

        // DELAYZ, DELAYA
        for i in (1..7).rev() {
            self.d[i] = self.d[i - 1];
            self.b[i] = self.bp[i];
        }
        for i in (1..3).rev() {
            self.r[i] = self.r[i - 1];
            self.p[i] = self.p[i - 1];
            self.a[i] = self.ap[i];
        }

        // FILTEP
        let wd1 = (self.a[1] * sat(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat(self.r[2] + self.r[2])) >> 15;
        self.sp = sat(wd1 + wd2);

        // FILTEZ
        let mut sz = 0;
        for i in (1..7).rev() {
            sz += (self.b[i] * sat(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = sat(sz);

        // PREDIC
        self.s = sat(self.sp + self.sz);
    }

    /// Blocks 3L/3H: log scale factor adaptation, then the linear scale factor.
    fn scale(&mut self, w: i32, nb_max: i32, shift_base: i32) {
        self.nb = (((self.nb * 127) >> 7) + w).clamp(0, nb_max);
        let wd1 = ((self.nb >> 6) & 31) as usize;
        let wd2 = shift_base - (self.nb >> 11);
        let wd3 = if wd2 < 0 {
            ILB[wd1] << -wd2
        } else {
            ILB[wd1] >> wd2
        };
        self.det = wd3 << 2;
    }
}

/// G.722 64 kbit/s decoder state. One per stream (per SSRC): it is adaptive, so packets must be
/// fed in order.
#[derive(Clone, Debug)]
pub struct Decoder {
    low: Band,
    high: Band,
    /// Receive QMF delay lines (even and odd taps), each value stored twice, at `i` and
    /// `i + 12`, so the last 12 values are always the contiguous `[pos..pos + 12]`: no shifting
    /// per sample, and the dot products vectorise (bench/finalize: G.722 448 -> 638 s/s).
    even: [i32; 24],
    odd: [i32; 24],
    pos: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            low: Band::new(32),
            high: Band::new(8),
            even: [0; 24],
            odd: [0; 24],
            pos: 0,
        }
    }

    /// Decodes `input` (one byte per 8 kHz period) into `out`, two 16 kHz samples per byte.
    /// Returns the samples written: `2 * input.len()`, or fewer if `out` is shorter.
    pub fn decode(&mut self, input: &[u8], out: &mut [i16]) -> usize {
        let mut n = 0;
        for (&code, pair) in input.iter().zip(out.chunks_exact_mut(2)) {
            let (a, b) = self.decode_byte(code);
            pair[0] = a;
            pair[1] = b;
            n += 2;
        }
        n
    }

    #[inline]
    fn decode_byte(&mut self, code: u8) -> (i16, i16) {
        let ilow = usize::from(code & 0x3F);
        let ihigh = usize::from(code >> 6);

        // Low band: INVQBL, RECONS, LIMIT (output), INVQAL (prediction), LOGSCL, SCALEL.
        let wd2 = (self.low.det * QM6[ilow]) >> 15;
        let rlow = (self.low.s + wd2).clamp(-16384, 16383);
        let ril = ilow >> 2;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.scale(WL[RL42[ril]], 18432, 8);
        self.low.update(dlow);

        // High band: INVQAH, RECONS, LIMIT, LOGSCH, SCALEH.
        let dhigh = (self.high.det * QM2[ihigh]) >> 15;
        let rhigh = (dhigh + self.high.s).clamp(-16384, 16383);
        self.high.scale(WH[RH2[ihigh]], 22528, 10);
        self.high.update(dhigh);

        // Receive QMF: two output samples per pair of sub-band samples.
        let p = self.pos;
        self.even[p] = rlow + rhigh;
        self.even[p + 12] = rlow + rhigh;
        self.odd[p] = rlow - rhigh;
        self.odd[p + 12] = rlow - rhigh;
        let p = if p == 11 { 0 } else { p + 1 };
        self.pos = p;
        let even: &[i32; 12] = self.even[p..p + 12].try_into().unwrap_or(&[0; 12]);
        let odd: &[i32; 12] = self.odd[p..p + 12].try_into().unwrap_or(&[0; 12]);
        let mut xout1 = 0i32;
        let mut xout2 = 0i32;
        for i in 0..12 {
            xout2 += even[i] * QMF[i];
            xout1 += odd[i] * QMF_REV[i];
        }
        (sat(xout1 >> 11) as i16, sat(xout2 >> 11) as i16)
    }
}

/// G.722 64 kbit/s encoder: 16 kHz PCM16 in, one byte per two samples out.
#[derive(Clone, Debug)]
pub struct Encoder {
    low: Band,
    high: Band,
    x: [i32; 24],
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            low: Band::new(32),
            high: Band::new(8),
            x: [0; 24],
        }
    }

    /// Encodes pairs of samples; an odd last sample is ignored. Appends to `out`.
    pub fn encode(&mut self, input: &[i16], out: &mut Vec<u8>) {
        for pair in input.chunks_exact(2) {
            out.push(self.encode_pair(pair[0], pair[1]));
        }
    }

    fn encode_pair(&mut self, s0: i16, s1: i16) -> u8 {
        // Transmit QMF: split into low and high band at 8 kHz.
        self.x.copy_within(2.., 0);
        self.x[22] = i32::from(s0);
        self.x[23] = i32::from(s1);
        let (mut sumeven, mut sumodd) = (0i32, 0i32);
        for i in 0..12 {
            sumodd += self.x[2 * i] * QMF[i];
            sumeven += self.x[2 * i + 1] * QMF[11 - i];
        }
        let xlow = (sumeven + sumodd) >> 14;
        let xhigh = (sumeven - sumodd) >> 14;

        // Low band: SUBTRA, QUANTL, INVQAL, LOGSCL, SCALEL.
        let el = sat(xlow - self.low.s);
        let wd = if el >= 0 { el } else { -(el + 1) };
        let mut i = 1;
        while i < 30 && wd >= (Q6[i] * self.low.det) >> 12 {
            i += 1;
        }
        let ilow = if el < 0 { ILN[i] } else { ILP[i] };
        let ril = (ilow >> 2) as usize;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.scale(WL[RL42[ril]], 18432, 8);
        self.low.update(dlow);

        // High band: SUBTRA, QUANTH, INVQAH, LOGSCH, SCALEH.
        let eh = sat(xhigh - self.high.s);
        let wd = if eh >= 0 { eh } else { -(eh + 1) };
        let mih = if wd >= (564 * self.high.det) >> 12 {
            2
        } else {
            1
        };
        let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
        let dhigh = (self.high.det * QM2[ihigh as usize]) >> 15;
        self.high.scale(WH[RH2[ihigh as usize]], 22528, 10);
        self.high.update(dhigh);

        ((ihigh << 6) | ilow) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, amp: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / 16_000.0).sin()) as i16)
            .collect()
    }

    /// SNR in dB of `out` against `reference` delayed by `delay` samples, skipping warm-up.
    fn snr_db(reference: &[i16], out: &[i16], delay: usize) -> f64 {
        let (mut sig, mut noise) = (0f64, 0f64);
        for i in 2000..reference.len() - delay {
            let r = f64::from(reference[i]);
            let e = r - f64::from(out[i + delay]);
            sig += r * r;
            noise += e * e;
        }
        10.0 * (sig / noise.max(1e-9)).log10()
    }

    fn round_trip(input: &[i16]) -> Vec<i16> {
        let mut enc = Encoder::new();
        let mut bytes = Vec::new();
        enc.encode(input, &mut bytes);
        let mut dec = Decoder::new();
        let mut out = vec![0i16; bytes.len() * 2];
        assert_eq!(dec.decode(&bytes, &mut out), input.len());
        out
    }

    #[test]
    fn one_khz_tone_round_trips_above_20_db() {
        let input = tone(1000.0, 10_000.0, 16_000);
        let out = round_trip(&input);
        let best = (0..64)
            .map(|d| snr_db(&input, &out, d))
            .fold(f64::MIN, f64::max);
        assert!(best > 20.0, "SNR {best:.1} dB");
    }

    #[test]
    fn high_band_tone_round_trips() {
        // 5 kHz lives in the upper sub-band (2-bit ADPCM): coarser, still well above noise.
        let input = tone(5000.0, 8000.0, 16_000);
        let out = round_trip(&input);
        let best = (0..64)
            .map(|d| snr_db(&input, &out, d))
            .fold(f64::MIN, f64::max);
        assert!(best > 8.0, "SNR {best:.1} dB");
    }

    #[test]
    fn encoded_silence_decodes_to_near_silence() {
        let out = round_trip(&vec![0i16; 3200]);
        assert!(out.iter().all(|&s| s.abs() < 64), "{:?}", &out[..32]);
    }

    #[test]
    fn known_pattern_is_deterministic_and_bounded() {
        let input: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut a = vec![0i16; 8000];
        let mut b = vec![0i16; 8000];
        Decoder::new().decode(&input, &mut a);
        Decoder::new().decode(&input, &mut b);
        assert_eq!(a, b);
        // Every byte value, repeated, from a fresh state: no panic, no overflow.
        for code in 0..=255u8 {
            let mut out = vec![0i16; 2000];
            Decoder::new().decode(&[code; 1000], &mut out);
        }
    }

    #[test]
    fn short_output_buffer_is_not_overrun() {
        let mut out = [0i16; 5];
        assert_eq!(Decoder::new().decode(&[0x55; 10], &mut out), 4);
    }
}
