//! Audio codecs finalize needs, written here rather than pulled in as dependencies: G.711
//! tables, a G.722 (SB-ADPCM, 64 kbit/s) decoder and encoder, and an Ogg page writer for
//! storing Opus RTP payloads as Ogg/Opus (RFC 7845).
//!
//! Owns: sample conversion and container framing. Must not: know RTP, the journal or the
//! timeline (that is `record::finalize`). Nothing here runs on the media hot path.

pub mod g711;
pub mod g722;
pub mod ogg;

/// The codecs Reel knows by name (the `codec` field of `recording.json` streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    G722,
    G729,
    Opus,
    /// Anything else: stored raw, never decoded.
    Other,
}

impl Codec {
    /// From an SDP `a=rtpmap` encoding name, case-insensitively.
    pub fn from_name(name: &str) -> Codec {
        match name.to_ascii_uppercase().as_str() {
            "PCMU" => Codec::Pcmu,
            "PCMA" => Codec::Pcma,
            "G722" => Codec::G722,
            "G729" | "G729A" => Codec::G729,
            "OPUS" => Codec::Opus,
            _ => Codec::Other,
        }
    }

    /// The RFC 3551 static payload types Reel can recognise without an `rtpmap`.
    pub fn from_static_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            18 => Some(Codec::G729),
            _ => None,
        }
    }

    /// Decoded into `audio.wav` (G.711 and G.722), as opposed to stored in its own file.
    pub fn in_wav(self) -> bool {
        matches!(self, Codec::Pcmu | Codec::Pcma | Codec::G722)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(Codec::from_name("pcmu"), Codec::Pcmu);
        assert_eq!(Codec::from_name("PCMA"), Codec::Pcma);
        assert_eq!(Codec::from_name("g722"), Codec::G722);
        assert_eq!(Codec::from_name("G729"), Codec::G729);
        assert_eq!(Codec::from_name("opus"), Codec::Opus);
        assert_eq!(Codec::from_name("AMR"), Codec::Other);
    }

    #[test]
    fn only_g711_and_g722_go_into_the_wav() {
        assert!(Codec::Pcmu.in_wav() && Codec::Pcma.in_wav() && Codec::G722.in_wav());
        assert!(!Codec::Opus.in_wav() && !Codec::G729.in_wav() && !Codec::Other.in_wav());
    }
}
