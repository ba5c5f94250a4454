//! WAV (RIFF) writing for G.711 (format 7 mu-law, 6 A-law) and 16-bit PCM.

use std::io::{self, Write};

/// WAV sample formats Reel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WavFormat {
    MuLaw,
    ALaw,
    Pcm16,
}

/// Writes a WAV header for `frames` frames of `channels` channels at `rate` Hz.
pub fn write_header<W: Write>(
    out: &mut W,
    format: WavFormat,
    channels: u16,
    rate: u32,
    frames: u64,
) -> io::Result<()> {
    let _ = (out, format, channels, rate, frames);
    todo!()
}
