//! SDP (RFC 8866) offer parsing and the recorder's answer (RFC 7866 §8: one `m=` per offered
//! stream, `recvonly`, labels kept, rejected streams with port 0).

use std::net::IpAddr;

use super::error::BodyError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// A codec chosen for a stream: what the answer offers back and what the media path decodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    /// Canonical name: `PCMU`, `PCMA`, `G722`, `G729`, `opus`, `telephone-event`.
    pub name: String,
    pub payload_type: u8,
    /// RTP clock rate (8000 for G.722 per RFC 3551, 48000 for opus).
    pub clock_rate: u32,
    pub channels: u8,
    pub fmtp: Option<String>,
}

/// An `a=crypto` line (RFC 4568).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: String,
    /// The key-params as written (`inline:...`).
    pub key_params: String,
    pub session_params: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application` ...
    pub media: String,
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`, `RTP/AVPF`, `UDP/TLS/RTP/SAVPF` ...
    pub proto: String,
    pub formats: Vec<String>,
    /// The media-level `c=` address, else the session-level one; `None` when neither.
    pub connection: Option<IpAddr>,
    /// Every `a=` line as (name, value).
    pub attributes: Vec<(String, Option<String>)>,
    /// `a=label:` (RFC 4574).
    pub label: Option<String>,
    /// From `a=sendonly|recvonly|sendrecv|inactive` (media level, else session level, else
    /// sendrecv). `c=0.0.0.0` (RFC 2543 hold) reads as `Inactive`.
    pub direction: Direction,
    pub rtcp_mux: bool,
    pub crypto: Vec<Crypto>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin_session_id: String,
    pub origin_version: String,
    pub media: Vec<MediaDescription>,
}

/// Parses an SDP body. Tolerates LF-only lines, unknown lines, a missing session `c=` (OpenSIPS),
/// static payload types with no rtpmap.
pub fn parse_sdp(text: &[u8]) -> Result<SessionDescription, BodyError> {
    let _ = text;
    todo!()
}

impl MediaDescription {
    /// The codec Reel records for this stream: the first offered of PCMU, PCMA, G722, G729, opus
    /// (in the offer's order), and telephone-event (RFC 4733) when offered. `None`: nothing
    /// recordable (the stream is rejected with port 0).
    pub fn choose_codecs(&self) -> Option<(Codec, Option<Codec>)> {
        todo!()
    }
    /// Is this a transport Reel can take? `RTP/AVP` always; `RTP/SAVP` only with an `a=crypto`
    /// suite from [`SUPPORTED_CRYPTO_SUITES`]; anything else (DTLS-SRTP, AVPF ...) no.
    pub fn acceptable_transport(&self) -> bool {
        todo!()
    }
}

pub const SUPPORTED_CRYPTO_SUITES: &[&str] =
    &["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"];

/// What control decided for one offered `m=` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamPlan {
    /// Answered with port 0.
    Rejected,
    Accepted {
        port: u16,
        codec: Codec,
        telephone_event: Option<Codec>,
        /// Our `a=crypto` line value for an SRTP stream (tag, suite and our own key).
        crypto: Option<String>,
    },
}

/// Builds the answer: one `m=` per offered line in order, `recvonly` (or `inactive` where the
/// offer was `inactive` or `recvonly`), labels copied, `a=rtcp-mux` echoed when offered, `c=` our
/// address. `plan` has one entry per offered m-line. `session_id`/`version` go in `o=`.
pub fn build_answer(
    offer: &SessionDescription,
    plan: &[StreamPlan],
    local_ip: IpAddr,
    session_id: u64,
    version: u64,
) -> String {
    let _ = (offer, plan, local_ip, session_id, version);
    todo!()
}

/// A fresh `a=crypto` value answering `offered` with our own random key (RFC 4568 §5.1.2).
pub fn answer_crypto(offered: &Crypto) -> Option<String> {
    let _ = offered;
    todo!()
}
