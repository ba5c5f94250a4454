//! WAV (RIFF) writing for G.711 (format 7 mu-law, 6 A-law) and 16-bit PCM.
//!
//! Owns the header layout and silence. G.711 is stored as is (8 bits per sample, one byte per
//! sample per channel, interleaved); non-PCM formats need an 18-byte `fmt ` chunk (with
//! `cbSize` = 0) and a `fact` chunk, which strict readers check.

use std::io::{self, Write};

/// WAV sample formats Reel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WavFormat {
    MuLaw,
    ALaw,
    Pcm16,
}

impl WavFormat {
    /// `wFormatTag`: 1 PCM, 6 A-law, 7 mu-law.
    pub fn format_tag(self) -> u16 {
        match self {
            WavFormat::Pcm16 => 1,
            WavFormat::ALaw => 6,
            WavFormat::MuLaw => 7,
        }
    }

    pub fn bits_per_sample(self) -> u16 {
        match self {
            WavFormat::Pcm16 => 16,
            WavFormat::ALaw | WavFormat::MuLaw => 8,
        }
    }

    pub fn bytes_per_sample(self) -> u16 {
        self.bits_per_sample() / 8
    }

    /// The byte that encodes silence: mu-law 0xFF (+0), A-law 0xD5 (+0 with its even-bit
    /// inversion), PCM 0.
    pub fn silence_byte(self) -> u8 {
        match self {
            WavFormat::MuLaw => 0xFF,
            WavFormat::ALaw => 0xD5,
            WavFormat::Pcm16 => 0,
        }
    }

    /// Length of the header [`write_header`] writes: 44 bytes for PCM, 58 for G.711.
    pub fn header_len(self) -> u64 {
        match self {
            WavFormat::Pcm16 => 12 + 8 + 16 + 8,
            WavFormat::ALaw | WavFormat::MuLaw => 12 + 8 + 18 + 12 + 8,
        }
    }
}

/// Size of the `data` payload for `frames` frames, checked against RIFF's 32-bit sizes.
pub fn data_len(format: WavFormat, channels: u16, frames: u64) -> io::Result<u64> {
    let len = frames
        .checked_mul(u64::from(channels) * u64::from(format.bytes_per_sample()))
        .filter(|&len| len + len % 2 + format.header_len() <= u64::from(u32::MAX))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{frames} frames of {channels} channels exceed the 4 GiB WAV limit"),
            )
        })?;
    Ok(len)
}

/// Writes a WAV header for `frames` frames of `channels` channels at `rate` Hz.
///
/// RIFF chunks are word aligned: when the data length is odd the RIFF size counts one pad
/// byte, which the caller writes after the samples ([`write_silent`] does).
pub fn write_header<W: Write>(
    out: &mut W,
    format: WavFormat,
    channels: u16,
    rate: u32,
    frames: u64,
) -> io::Result<()> {
    if channels == 0 || rate == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a WAV file needs at least one channel and a rate (got {channels} channels at {rate} Hz)"
            ),
        ));
    }
    let data = data_len(format, channels, frames)?;
    let pad = data % 2;
    let block_align = channels * format.bytes_per_sample();
    let byte_rate = rate
        .checked_mul(u32::from(block_align))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "WAV byte rate overflows"))?;
    let riff_size = (format.header_len() - 8 + data + pad) as u32;

    let mut h = Vec::with_capacity(format.header_len() as usize);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&riff_size.to_le_bytes());
    h.extend_from_slice(b"WAVE");
    h.extend_from_slice(b"fmt ");
    let pcm = format == WavFormat::Pcm16;
    h.extend_from_slice(&(if pcm { 16u32 } else { 18u32 }).to_le_bytes());
    h.extend_from_slice(&format.format_tag().to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&byte_rate.to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&format.bits_per_sample().to_le_bytes());
    if !pcm {
        h.extend_from_slice(&0u16.to_le_bytes()); // cbSize: no extra format bytes
        h.extend_from_slice(b"fact");
        h.extend_from_slice(&4u32.to_le_bytes());
        // dwSampleLength counts samples per channel, i.e. frames.
        h.extend_from_slice(&(frames as u32).to_le_bytes());
    }
    h.extend_from_slice(b"data");
    h.extend_from_slice(&(data as u32).to_le_bytes());
    debug_assert_eq!(h.len() as u64, format.header_len());
    out.write_all(&h)
}

/// Writes a complete silent WAV file (header, `frames` frames of silence, pad byte if
/// needed). Returns the bytes written. Writes in large blocks: hours of silence are cheap.
pub fn write_silent<W: Write>(
    out: &mut W,
    format: WavFormat,
    channels: u16,
    rate: u32,
    frames: u64,
) -> io::Result<u64> {
    write_header(out, format, channels, rate, frames)?;
    let data = data_len(format, channels, frames)?;
    let total = data + data % 2;
    // The pad byte may as well be silence too: readers ignore it.
    let block = vec![format.silence_byte(); total.min(256 * 1024) as usize];
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    Ok(format.header_len() + total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn mulaw_header_has_format_7_fmt18_and_fact() {
        let mut b = Vec::new();
        write_header(&mut b, WavFormat::MuLaw, 2, 8000, 8000).unwrap();
        assert_eq!(b.len(), 58);
        assert_eq!(&b[0..4], b"RIFF");
        assert_eq!(u32_at(&b, 4), 58 - 8 + 16_000);
        assert_eq!(&b[8..16], b"WAVEfmt ");
        assert_eq!(u32_at(&b, 16), 18);
        assert_eq!(u16_at(&b, 20), 7);
        assert_eq!(u16_at(&b, 22), 2); // channels
        assert_eq!(u32_at(&b, 24), 8000); // rate
        assert_eq!(u32_at(&b, 28), 16_000); // byte rate
        assert_eq!(u16_at(&b, 32), 2); // block align
        assert_eq!(u16_at(&b, 34), 8); // bits
        assert_eq!(u16_at(&b, 36), 0); // cbSize
        assert_eq!(&b[38..42], b"fact");
        assert_eq!(u32_at(&b, 42), 4);
        assert_eq!(u32_at(&b, 46), 8000); // frames
        assert_eq!(&b[50..54], b"data");
        assert_eq!(u32_at(&b, 54), 16_000);
    }

    #[test]
    fn alaw_header_has_format_6() {
        let mut b = Vec::new();
        write_header(&mut b, WavFormat::ALaw, 1, 8000, 10).unwrap();
        assert_eq!(u16_at(&b, 20), 6);
        assert_eq!(u16_at(&b, 34), 8);
    }

    #[test]
    fn pcm16_header_is_canonical_44_bytes() {
        let mut b = Vec::new();
        write_header(&mut b, WavFormat::Pcm16, 2, 16_000, 100).unwrap();
        assert_eq!(b.len(), 44);
        assert_eq!(u32_at(&b, 16), 16);
        assert_eq!(u16_at(&b, 20), 1);
        assert_eq!(u32_at(&b, 28), 64_000);
        assert_eq!(u16_at(&b, 32), 4);
        assert_eq!(u16_at(&b, 34), 16);
        assert_eq!(&b[36..40], b"data");
        assert_eq!(u32_at(&b, 40), 400);
        assert_eq!(u32_at(&b, 4), 36 + 400);
    }

    #[test]
    fn odd_data_length_is_padded() {
        let mut b = Vec::new();
        let n = write_silent(&mut b, WavFormat::MuLaw, 1, 8000, 3).unwrap();
        assert_eq!(n, 58 + 4);
        assert_eq!(b.len() as u64, n);
        assert_eq!(u32_at(&b, 54), 3, "data size excludes the pad byte");
        assert_eq!(u32_at(&b, 4) as usize, b.len() - 8, "RIFF size includes it");
    }

    #[test]
    fn silence_bytes_per_format() {
        for (format, byte) in [
            (WavFormat::MuLaw, 0xFF),
            (WavFormat::ALaw, 0xD5),
            (WavFormat::Pcm16, 0),
        ] {
            let mut b = Vec::new();
            write_silent(&mut b, format, 2, 8000, 1000).unwrap();
            let header = format.header_len() as usize;
            assert!(b[header..].iter().all(|&x| x == byte), "{format:?}");
        }
    }

    #[test]
    fn silent_file_larger_than_one_block() {
        let mut b = Vec::new();
        let frames = 8000 * 60; // one minute, two channels: 960000 bytes, several blocks
        let n = write_silent(&mut b, WavFormat::MuLaw, 2, 8000, frames).unwrap();
        assert_eq!(n, 58 + 2 * frames);
        assert_eq!(b.len() as u64, n);
    }

    #[test]
    fn too_long_for_riff_is_an_error() {
        let mut b = Vec::new();
        let e = write_header(&mut b, WavFormat::Pcm16, 2, 8000, u64::from(u32::MAX)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(b.is_empty());
    }

    #[test]
    fn zero_channels_is_an_error() {
        assert!(write_header(&mut Vec::new(), WavFormat::MuLaw, 0, 8000, 1).is_err());
    }

    #[test]
    fn sox_reads_silent_mulaw_file() {
        let Ok(out) = std::process::Command::new("sox").arg("--version").output() else {
            println!("skipped: sox is not installed");
            return;
        };
        if !out.status.success() {
            println!("skipped: sox --version failed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (format, encoding) in [
            (WavFormat::MuLaw, "u-law"),
            (WavFormat::ALaw, "A-law"),
            (WavFormat::Pcm16, "Signed"),
        ] {
            let path = dir.path().join("s.wav");
            let mut f = std::fs::File::create(&path).unwrap();
            write_silent(&mut f, format, 2, 8000, 12_345).unwrap();
            drop(f);
            let info = std::process::Command::new("sox")
                .arg("--i")
                .arg(&path)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&info.stdout);
            assert!(
                info.status.success(),
                "{format:?}: {}",
                String::from_utf8_lossy(&info.stderr)
            );
            assert!(text.contains("Channels       : 2"), "{text}");
            assert!(text.contains("Sample Rate    : 8000"), "{text}");
            assert!(text.contains("12345 samples"), "{text}");
            assert!(text.contains(encoding), "{format:?}: {text}");
        }
    }
}
