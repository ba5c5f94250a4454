//! SDP (RFC 8866) offer parsing and the recorder's answer (RFC 7866 §8: one `m=` per offered
//! stream, `recvonly`, labels kept, rejected streams with port 0).
//!
//! Owns: reading an offer into [`SessionDescription`], choosing what Reel records from each
//! `m=` line, SDES key answers, and writing the answer text. Does not pick ports or addresses:
//! control passes them in through [`StreamPlan`] and `local_ip`.

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

/// More `m=` lines than any recording offer carries (RFC 7866 SRCs send one per leg and media
/// type); a cap on what one INVITE can make us allocate.
pub const MAX_MEDIA: usize = 32;

/// Parses an SDP body. Tolerates LF-only lines, unknown lines, a missing session `c=` (OpenSIPS),
/// static payload types with no rtpmap.
pub fn parse_sdp(text: &[u8]) -> Result<SessionDescription, BodyError> {
    let text = String::from_utf8_lossy(text);
    let mut saw_version = false;
    let mut origin: Option<(String, String)> = None;
    // Session-level state, applied to each m= line when the SDP ends.
    let mut session_connection: Option<Option<IpAddr>> = None;
    let mut session_direction: Option<Direction> = None;
    let mut media: Vec<MediaDescription> = Vec::new();
    // Per m= line: its own c= (if any) and its own direction attribute (if any).
    let mut media_connection: Vec<Option<Option<IpAddr>>> = Vec::new();
    let mut media_direction: Vec<Option<Direction>> = Vec::new();

    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim_end();
        if line.is_empty() {
            continue;
        }
        // `x=value`; anything else is junk we skip rather than fail on.
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match kind.trim() {
            "v" => saw_version = true,
            "o" => {
                let fields: Vec<&str> = value.split_whitespace().collect();
                if fields.len() < 3 {
                    return Err(BodyError::Malformed("sdp: bad o= line".into()));
                }
                origin = Some((fields[1].to_string(), fields[2].to_string()));
            }
            "c" => {
                let address = parse_connection(value);
                match media_connection.last_mut() {
                    Some(slot) => *slot = Some(address),
                    None => session_connection = Some(address),
                }
            }
            "m" => {
                if media.len() == MAX_MEDIA {
                    return Err(BodyError::TooLarge(format!(
                        "sdp: more than {MAX_MEDIA} m= lines"
                    )));
                }
                media.push(parse_media_line(value)?);
                media_connection.push(None);
                media_direction.push(None);
            }
            "a" => {
                let (name, attr_value) = match value.split_once(':') {
                    Some((n, v)) => (n.trim(), Some(v.trim())),
                    None => (value, None),
                };
                let direction = parse_direction(name);
                match media.last_mut() {
                    None => {
                        if direction.is_some() {
                            session_direction = direction;
                        }
                    }
                    Some(m) => {
                        if let Some(d) = direction
                            && let Some(slot) = media_direction.last_mut()
                        {
                            *slot = Some(d);
                        }
                        apply_media_attribute(m, name, attr_value);
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_version {
        return Err(BodyError::Malformed("sdp: missing v= line".into()));
    }
    let (origin_session_id, origin_version) = origin.unwrap_or_default();
    let session_connection = session_connection.flatten();
    for ((m, own_c), own_dir) in media.iter_mut().zip(media_connection).zip(media_direction) {
        m.connection = match own_c {
            Some(address) => address,
            None => session_connection,
        };
        m.direction = own_dir.or(session_direction).unwrap_or(Direction::SendRecv);
        // RFC 2543 hold: a zero connection address means "send nothing".
        if m.connection.is_some_and(|ip| ip.is_unspecified()) {
            m.direction = Direction::Inactive;
        }
    }
    Ok(SessionDescription {
        origin_session_id,
        origin_version,
        media,
    })
}

/// `IN IP4 192.0.2.1[/ttl]` to an address; an address we cannot read (an FQDN, a mangled
/// `X.X.X.X`) is no address rather than an error, since we only use it to detect hold.
fn parse_connection(value: &str) -> Option<IpAddr> {
    let address = value.split_whitespace().nth(2)?;
    let address = address.split('/').next()?;
    address.parse().ok()
}

fn parse_media_line(value: &str) -> Result<MediaDescription, BodyError> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.len() < 4 {
        return Err(BodyError::Malformed("sdp: bad m= line".into()));
    }
    // `<port>/<number of ports>` is legal; we only care about the first port.
    let port = fields[1]
        .split('/')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| BodyError::Malformed("sdp: bad m= port".into()))?;
    Ok(MediaDescription {
        media: fields[0].to_string(),
        port,
        proto: fields[2].to_string(),
        formats: fields[3..].iter().map(|f| f.to_string()).collect(),
        connection: None,
        attributes: Vec::new(),
        label: None,
        direction: Direction::SendRecv,
        rtcp_mux: false,
        crypto: Vec::new(),
    })
}

fn parse_direction(name: &str) -> Option<Direction> {
    match name.to_ascii_lowercase().as_str() {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

fn apply_media_attribute(m: &mut MediaDescription, name: &str, value: Option<&str>) {
    match (name.to_ascii_lowercase().as_str(), value) {
        ("label", Some(v)) => m.label = Some(v.to_string()),
        ("rtcp-mux", _) => m.rtcp_mux = true,
        ("crypto", Some(v)) => {
            if let Some(c) = parse_crypto(v) {
                m.crypto.push(c);
            }
        }
        _ => {}
    }
    m.attributes
        .push((name.to_string(), value.map(str::to_string)));
}

/// `<tag> <suite> <key-params> [<session-params>...]` (RFC 4568 §9.1); unreadable lines are
/// skipped, which leaves an SRTP stream without a usable suite (rejected), not the whole offer.
fn parse_crypto(value: &str) -> Option<Crypto> {
    let mut fields = value.split_whitespace();
    let tag = fields.next()?.parse().ok()?;
    let suite = fields.next()?.to_string();
    let key_params = fields.next()?.to_string();
    Some(Crypto {
        tag,
        suite,
        key_params,
        session_params: fields.map(str::to_string).collect(),
    })
}

/// An `a=rtpmap` entry: encoding name, clock rate, channels.
struct RtpMap<'a> {
    name: &'a str,
    clock_rate: u32,
    channels: Option<u8>,
}

/// Codecs Reel records, by canonical name: (name, static PT, RTP clock rate, channels).
const RECORDABLE: &[(&str, Option<u8>, u32, u8)] = &[
    ("PCMU", Some(0), 8000, 1),
    ("PCMA", Some(8), 8000, 1),
    // RFC 3551 §4.5.2: G.722's RTP clock is 8000 although it samples at 16 kHz.
    ("G722", Some(9), 8000, 1),
    ("G729", Some(18), 8000, 1),
    ("opus", None, 48000, 2),
];

impl MediaDescription {
    /// Every value of an attribute by case-insensitive name, in order.
    pub fn attribute_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| v.as_deref())
    }

    /// The first value of an attribute by case-insensitive name.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, v)| v.is_some() && n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
    }

    /// Does the stream carry the attribute at all (flag or value)?
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attributes
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    fn rtpmap(&self, pt: u8) -> Option<RtpMap<'_>> {
        self.attribute_values("rtpmap").find_map(|v| {
            let (num, encoding) = v.split_once(char::is_whitespace)?;
            if num.trim().parse::<u8>().ok()? != pt {
                return None;
            }
            let mut it = encoding.trim().split('/');
            let name = it.next()?.trim();
            let clock_rate = it.next().and_then(|c| c.trim().parse().ok()).unwrap_or(0);
            let channels = it.next().and_then(|c| c.trim().parse().ok());
            Some(RtpMap {
                name,
                clock_rate,
                channels,
            })
        })
    }

    fn fmtp(&self, pt: u8) -> Option<String> {
        self.attribute_values("fmtp").find_map(|v| {
            let (num, params) = v.split_once(char::is_whitespace)?;
            (num.trim().parse::<u8>().ok()? == pt).then(|| params.trim().to_string())
        })
    }

    /// Payload types of the m= line, in offer order (non-numeric formats skipped).
    fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt < 128)
    }

    /// The codec Reel records for this stream: the first offered of PCMU, PCMA, G722, G729, opus
    /// (in the offer's order), and telephone-event (RFC 4733) when offered. `None`: nothing
    /// recordable (the stream is rejected with port 0).
    ///
    /// telephone-event is only taken at the chosen codec's clock rate: RFC 4733 events share the
    /// stream's RTP clock, so a 8000 Hz event next to opus would be misread.
    pub fn choose_codecs(&self) -> Option<(Codec, Option<Codec>)> {
        self.choose_codecs_preferring(false)
    }

    /// [`choose_codecs`](Self::choose_codecs), but with `wav` the first offered of PCMU, PCMA
    /// and G722 (what `audio.wav` holds) wins over an earlier G729 or opus; those two are taken
    /// only when nothing else is offered (`record.codec_preference = "wav"`). RFC 3264 §6.1
    /// lets the answerer choose; a playable stereo WAV is the reason, and an SRC that offered
    /// G.711 sends it when answered so.
    pub fn choose_codecs_preferring(&self, wav: bool) -> Option<(Codec, Option<Codec>)> {
        let in_wav = |c: &Codec| crate::codec::Codec::from_name(&c.name).in_wav();
        let codec = if wav {
            self.offered_codecs()
                .find(in_wav)
                .or_else(|| self.offered_codecs().next())?
        } else {
            self.offered_codecs().next()?
        };
        let telephone_event = self.payload_types().find_map(|pt| {
            let map = self.rtpmap(pt)?;
            (map.name.eq_ignore_ascii_case("telephone-event") && map.clock_rate == codec.clock_rate)
                .then(|| Codec {
                    name: "telephone-event".to_string(),
                    payload_type: pt,
                    clock_rate: map.clock_rate,
                    channels: map.channels.unwrap_or(1),
                    fmtp: self.fmtp(pt),
                })
        });
        Some((codec, telephone_event))
    }

    /// The recordable codecs of the m= line, in offer order.
    fn offered_codecs(&self) -> impl Iterator<Item = Codec> + '_ {
        self.payload_types().filter_map(|pt| {
            let map = self.rtpmap(pt);
            let &(name, _, clock_rate, channels) =
                RECORDABLE.iter().find(|(name, static_pt, ..)| {
                    match &map {
                        // A dynamic (or re-mapped) PT is known by its rtpmap name.
                        Some(m) => m.name.eq_ignore_ascii_case(name),
                        None => *static_pt == Some(pt),
                    }
                })?;
            Some(Codec {
                name: name.to_string(),
                payload_type: pt,
                clock_rate,
                channels,
                fmtp: self.fmtp(pt),
            })
        })
    }

    /// Is this a transport Reel can take? `RTP/AVP` always; `RTP/SAVP` only with an `a=crypto`
    /// suite from [`SUPPORTED_CRYPTO_SUITES`]; anything else (DTLS-SRTP, AVPF ...) no.
    pub fn acceptable_transport(&self) -> bool {
        if self.proto.eq_ignore_ascii_case("RTP/AVP") {
            true
        } else if self.proto.eq_ignore_ascii_case("RTP/SAVP") {
            self.supported_crypto().is_some()
        } else {
            false
        }
    }

    /// The first offered `a=crypto` whose suite Reel supports (the one to answer).
    pub fn supported_crypto(&self) -> Option<&Crypto> {
        self.crypto
            .iter()
            .find(|c| suite_key_len(&c.suite).is_some())
    }
}

pub const SUPPORTED_CRYPTO_SUITES: &[&str] = &[
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
];

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
///
/// A missing `plan` entry answers that stream as rejected, so a short plan still yields a valid
/// answer with one `m=` per offered line.
pub fn build_answer(
    offer: &SessionDescription,
    plan: &[StreamPlan],
    local_ip: IpAddr,
    session_id: u64,
    version: u64,
) -> String {
    use std::fmt::Write as _;

    let family = if local_ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(256 + 256 * offer.media.len());
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        out,
        "v=0\r\no=Reel {session_id} {version} IN {family} {local_ip}\r\ns=Reel\r\nc=IN {family} {local_ip}\r\nt=0 0\r\n"
    );
    for (i, m) in offer.media.iter().enumerate() {
        match plan.get(i).unwrap_or(&StreamPlan::Rejected) {
            StreamPlan::Rejected => {
                let first = m.formats.first().map_or("0", String::as_str);
                let _ = write!(out, "m={} 0 {} {first}\r\n", m.media, m.proto);
            }
            StreamPlan::Accepted {
                port,
                codec,
                telephone_event,
                crypto,
            } => {
                let _ = write!(
                    out,
                    "m={} {port} {} {}",
                    m.media, m.proto, codec.payload_type
                );
                if let Some(te) = telephone_event {
                    let _ = write!(out, " {}", te.payload_type);
                }
                out.push_str("\r\n");
                for c in std::iter::once(codec).chain(telephone_event) {
                    let _ = write!(
                        out,
                        "a=rtpmap:{} {}/{}",
                        c.payload_type, c.name, c.clock_rate
                    );
                    if c.channels > 1 {
                        let _ = write!(out, "/{}", c.channels);
                    }
                    out.push_str("\r\n");
                    if let Some(fmtp) = &c.fmtp {
                        let _ = write!(out, "a=fmtp:{} {fmtp}\r\n", c.payload_type);
                    }
                }
                if let Some(label) = &m.label {
                    let _ = write!(out, "a=label:{label}\r\n");
                }
                if let Some(ptime) = m.attribute("ptime") {
                    let _ = write!(out, "a=ptime:{ptime}\r\n");
                }
                if m.rtcp_mux {
                    out.push_str("a=rtcp-mux\r\n");
                }
                if let Some(crypto) = crypto {
                    let _ = write!(out, "a=crypto:{crypto}\r\n");
                }
                let direction = match m.direction {
                    Direction::Inactive | Direction::RecvOnly => "inactive",
                    Direction::SendOnly | Direction::SendRecv => "recvonly",
                };
                let _ = write!(out, "a={direction}\r\n");
            }
        }
    }
    out
}

/// Master key + salt length in bytes for a supported suite (RFC 4568 §6.2, RFC 7714 §12).
fn suite_key_len(suite: &str) -> Option<usize> {
    if !SUPPORTED_CRYPTO_SUITES
        .iter()
        .any(|s| s.eq_ignore_ascii_case(suite))
    {
        return None;
    }
    if suite.to_ascii_uppercase().starts_with("AEAD_AES_128_GCM") {
        Some(16 + 12)
    } else {
        Some(16 + 14)
    }
}

/// A fresh `a=crypto` value answering `offered` with our own random key (RFC 4568 §5.1.2).
pub fn answer_crypto(offered: &Crypto) -> Option<String> {
    let len = suite_key_len(&offered.suite)?;
    let mut key = vec![0u8; len];
    rand::fill(&mut key[..]);
    Some(format!(
        "{} {} inline:{}",
        offered.tag,
        offered.suite,
        base64(&key)
    ))
}

/// Standard base64 with padding (RFC 4648 §4), which is what SDES `inline:` keys use. Written
/// out here rather than adding a dependency for forty characters per call.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_LEGS: &str = "v=0\r\n\
o=- 20076 595552 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 20106 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=label:11\r\n\
a=sendonly\r\n\
m=audio 20110 RTP/AVP 8\r\n\
a=label:12\r\n\
a=sendonly\r\n";

    fn sdp(text: &str) -> SessionDescription {
        parse_sdp(text.as_bytes()).unwrap()
    }

    fn one_media(m_and_attrs: &str) -> MediaDescription {
        let text = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n{m_and_attrs}"
        );
        sdp(&text).media.remove(0)
    }

    fn accept(m: &MediaDescription, port: u16) -> StreamPlan {
        let (codec, telephone_event) = m.choose_codecs().unwrap();
        let crypto = m.supported_crypto().and_then(answer_crypto);
        StreamPlan::Accepted {
            port,
            codec,
            telephone_event,
            crypto,
        }
    }

    fn answer_lines(offer: &SessionDescription, plan: &[StreamPlan]) -> Vec<String> {
        let a = build_answer(offer, plan, "198.51.100.7".parse().unwrap(), 42, 1);
        assert!(a.ends_with("\r\n"));
        assert!(!a.replace("\r\n", "").contains('\n'), "bare LF in answer");
        a.split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn parses_origin_media_labels_and_direction() {
        let s = sdp(TWO_LEGS);
        assert_eq!(s.origin_session_id, "20076");
        assert_eq!(s.origin_version, "595552");
        assert_eq!(s.media.len(), 2);
        let m = &s.media[0];
        assert_eq!(
            (m.media.as_str(), m.port, m.proto.as_str()),
            ("audio", 20106, "RTP/AVP")
        );
        assert_eq!(m.formats, ["0", "101"]);
        assert_eq!(m.label.as_deref(), Some("11"));
        assert_eq!(m.direction, Direction::SendOnly);
        assert_eq!(m.connection, Some("192.0.2.10".parse().unwrap()));
        assert_eq!(m.attribute("ptime"), Some("20"));
    }

    #[test]
    fn lf_only_lines_are_read() {
        let s = sdp(&TWO_LEGS.replace("\r\n", "\n"));
        assert_eq!(s.media.len(), 2);
        assert_eq!(s.media[1].label.as_deref(), Some("12"));
    }

    #[test]
    fn missing_session_c_is_tolerated() {
        let s = sdp(
            "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 35011 RTP/AVP 0\r\na=sendonly\r\n",
        );
        assert_eq!(s.media[0].connection, None);
        assert_eq!(s.media[0].direction, Direction::SendOnly);
    }

    #[test]
    fn media_c_overrides_session_c() {
        let m = one_media("m=audio 1 RTP/AVP 0\r\nc=IN IP6 2001:db8::1\r\n");
        assert_eq!(m.connection, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn unreadable_c_address_is_none() {
        let s = sdp(
            "v=0\r\no=x 1 1 IN IP4 X.X.X.X\r\ns=-\r\nc=IN IP4 X.X.X.X\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n",
        );
        assert_eq!(s.media[0].connection, None);
    }

    #[test]
    fn c_zero_means_hold() {
        let m = one_media("m=audio 1 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\n");
        assert_eq!(m.direction, Direction::Inactive);
    }

    #[test]
    fn no_direction_is_sendrecv() {
        assert_eq!(
            one_media("m=audio 1 RTP/AVP 18 0 8\r\na=label:1\r\n").direction,
            Direction::SendRecv
        );
    }

    #[test]
    fn session_direction_applies_to_media() {
        let s = sdp(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\na=sendonly\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\nm=audio 2 RTP/AVP 0\r\na=inactive\r\n",
        );
        assert_eq!(s.media[0].direction, Direction::SendOnly);
        assert_eq!(s.media[1].direction, Direction::Inactive);
    }

    #[test]
    fn direction_both_is_not_a_direction() {
        let m = one_media("m=audio 1 RTP/AVP 8\r\na=direction:both\r\na=sendonly\r\n");
        assert_eq!(m.direction, Direction::SendOnly);
    }

    #[test]
    fn missing_v_line_is_malformed() {
        assert!(matches!(
            parse_sdp(b"hello world"),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn bad_port_is_malformed() {
        let err = parse_sdp(b"v=0\r\nm=audio 99999 RTP/AVP 0\r\n").unwrap_err();
        assert!(err.reason().contains("port"));
    }

    #[test]
    fn port_count_is_ignored() {
        assert_eq!(one_media("m=audio 4000/2 RTP/AVP 0\r\n").port, 4000);
    }

    #[test]
    fn too_many_m_lines_is_too_large() {
        let mut text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n".to_string();
        for i in 0..=MAX_MEDIA {
            text.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 2000 + 2 * i));
        }
        assert!(matches!(
            parse_sdp(text.as_bytes()),
            Err(BodyError::TooLarge(_))
        ));
    }

    #[test]
    fn rtcp_mux_and_crypto_are_read() {
        let m = one_media(
            "m=audio 1 RTP/SAVP 0\r\na=rtcp-mux\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 UNENCRYPTED_SRTCP\r\na=crypto:x broken\r\n",
        );
        assert!(m.rtcp_mux);
        assert_eq!(m.crypto.len(), 1);
        assert_eq!(m.crypto[0].tag, 1);
        assert_eq!(m.crypto[0].suite, "AES_CM_128_HMAC_SHA1_80");
        assert!(m.crypto[0].key_params.starts_with("inline:"));
        assert_eq!(m.crypto[0].session_params, ["UNENCRYPTED_SRTCP"]);
    }

    #[test]
    fn first_offered_recordable_codec_wins() {
        let m = one_media("m=audio 1 RTP/AVP 18 0 8\r\n");
        let (codec, te) = m.choose_codecs().unwrap();
        assert_eq!(
            (codec.name.as_str(), codec.payload_type, codec.clock_rate),
            ("G729", 18, 8000)
        );
        assert!(te.is_none());
    }

    #[test]
    fn unknown_codecs_are_skipped() {
        let m =
            one_media("m=audio 1 RTP/AVP 3 19 8\r\na=rtpmap:3 GSM/8000\r\na=rtpmap:19 CN/8000\r\n");
        assert_eq!(m.choose_codecs().unwrap().0.name, "PCMA");
    }

    #[test]
    fn static_pt_without_rtpmap_is_pcma() {
        let m = one_media("m=audio 1 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n");
        let (codec, te) = m.choose_codecs().unwrap();
        assert_eq!((codec.name.as_str(), codec.payload_type), ("PCMA", 8));
        assert_eq!(te.unwrap().payload_type, 101);
    }

    #[test]
    fn g722_clock_is_8000() {
        let m = one_media("m=audio 1 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n");
        assert_eq!(m.choose_codecs().unwrap().0.clock_rate, 8000);
    }

    #[test]
    fn codec_found_by_rtpmap_name_case_insensitive() {
        let m = one_media("m=audio 1 RTP/AVP 96\r\na=rtpmap:96 pcmu/8000\r\n");
        let codec = m.choose_codecs().unwrap().0;
        assert_eq!((codec.name.as_str(), codec.payload_type), ("PCMU", 96));
    }

    #[test]
    fn opus_dynamic_with_matching_telephone_event() {
        let m = one_media(
            "m=audio 1 RTP/AVP 111 101 0 107\r\na=rtpmap:111 OPUS/48000/2\r\na=fmtp:111 useinbandfec=1\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:107 telephone-event/48000\r\na=fmtp:107 0-15\r\n",
        );
        let (codec, te) = m.choose_codecs().unwrap();
        assert_eq!(codec.name, "opus");
        assert_eq!(
            (codec.payload_type, codec.clock_rate, codec.channels),
            (111, 48000, 2)
        );
        assert_eq!(codec.fmtp.as_deref(), Some("useinbandfec=1"));
        let te = te.unwrap();
        assert_eq!((te.payload_type, te.clock_rate), (107, 48000));
        assert_eq!(te.fmtp.as_deref(), Some("0-15"));
    }

    #[test]
    fn wav_preference_takes_g711_or_g722_over_an_earlier_g729_or_opus() {
        // Metaswitch offers G.729 first; Webex Calling opus first.
        let g729 = one_media("m=audio 1 RTP/AVP 18 0 8\r\na=rtpmap:18 G729/8000\r\n");
        assert_eq!(g729.choose_codecs_preferring(false).unwrap().0.name, "G729");
        assert_eq!(g729.choose_codecs_preferring(true).unwrap().0.name, "PCMU");
        let opus = one_media(
            "m=audio 1 RTP/AVP 111 101 0 8 9 107\r\na=rtpmap:111 opus/48000/2\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=rtpmap:107 telephone-event/48000\r\n\
             a=rtpmap:9 G722/8000\r\n",
        );
        let (codec, te) = opus.choose_codecs_preferring(true).unwrap();
        assert_eq!((codec.name.as_str(), codec.payload_type), ("PCMU", 0));
        assert_eq!(te.unwrap().payload_type, 101, "telephone-event at 8000 Hz");
        assert_eq!(opus.choose_codecs_preferring(false).unwrap().0.name, "opus");
        // Offer order among the WAV codecs is kept: G722 first stays G722.
        let g722 = one_media("m=audio 1 RTP/AVP 18 9 0\r\n");
        assert_eq!(g722.choose_codecs_preferring(true).unwrap().0.name, "G722");
        // Nothing for the WAV: the first recordable one.
        let only = one_media("m=audio 1 RTP/AVP 3 18\r\n");
        assert_eq!(only.choose_codecs_preferring(true).unwrap().0.name, "G729");
        assert!(
            one_media("m=audio 1 RTP/AVP 3\r\n")
                .choose_codecs_preferring(true)
                .is_none()
        );
    }

    #[test]
    fn telephone_event_keeps_pt_and_fmtp() {
        let m = one_media(
            "m=audio 1 RTP/AVP 0 97\r\na=rtpmap:97 telephone-event/8000\r\na=fmtp:97 0-15\r\n",
        );
        let te = m.choose_codecs().unwrap().1.unwrap();
        assert_eq!(te.name, "telephone-event");
        assert_eq!(
            (te.payload_type, te.clock_rate, te.fmtp.as_deref()),
            (97, 8000, Some("0-15"))
        );
    }

    #[test]
    fn nothing_recordable_is_none() {
        let m = one_media("m=video 1 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
        assert!(m.choose_codecs().is_none());
    }

    #[test]
    fn transport_avp_is_acceptable() {
        assert!(one_media("m=audio 1 RTP/AVP 0\r\n").acceptable_transport());
    }

    #[test]
    fn savp_needs_supported_crypto() {
        assert!(!one_media("m=audio 1 RTP/SAVP 0\r\n").acceptable_transport());
        assert!(
            !one_media("m=audio 1 RTP/SAVP 0\r\na=crypto:1 F8_128_HMAC_SHA1_80 inline:abc\r\n")
                .acceptable_transport()
        );
        let m = one_media(
            "m=audio 1 RTP/SAVP 0\r\na=crypto:1 F8_128_HMAC_SHA1_80 inline:abc\r\na=crypto:2 AEAD_AES_128_GCM inline:def\r\n",
        );
        assert!(m.acceptable_transport());
        assert_eq!(m.supported_crypto().unwrap().tag, 2);
    }

    #[test]
    fn dtls_and_avpf_are_not_acceptable() {
        assert!(!one_media("m=audio 1 UDP/TLS/RTP/SAVPF 0\r\n").acceptable_transport());
        assert!(!one_media("m=audio 1 RTP/AVPF 0\r\n").acceptable_transport());
    }

    #[test]
    fn answer_has_session_lines() {
        let offer = sdp(TWO_LEGS);
        let plan = [
            accept(&offer.media[0], 30000),
            accept(&offer.media[1], 30002),
        ];
        let lines = answer_lines(&offer, &plan);
        assert_eq!(
            lines[..5],
            [
                "v=0",
                "o=Reel 42 1 IN IP4 198.51.100.7",
                "s=Reel",
                "c=IN IP4 198.51.100.7",
                "t=0 0"
            ]
        );
    }

    #[test]
    fn answer_ipv6_address() {
        let offer = sdp(TWO_LEGS);
        let a = build_answer(&offer, &[], "2001:db8::7".parse().unwrap(), 1, 2);
        assert!(a.contains("o=Reel 1 2 IN IP6 2001:db8::7\r\n"));
        assert!(a.contains("c=IN IP6 2001:db8::7\r\n"));
    }

    #[test]
    fn accepted_stream_answer_lines() {
        let offer = sdp(TWO_LEGS);
        let plan = [
            accept(&offer.media[0], 30000),
            accept(&offer.media[1], 30002),
        ];
        let lines = answer_lines(&offer, &plan);
        assert_eq!(
            lines[5..],
            [
                "m=audio 30000 RTP/AVP 0 101",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
                "a=label:11",
                "a=ptime:20",
                "a=recvonly",
                "m=audio 30002 RTP/AVP 8",
                "a=rtpmap:8 PCMA/8000",
                "a=label:12",
                "a=recvonly",
            ]
        );
    }

    #[test]
    fn answer_reparses_with_one_m_per_offered() {
        let offer = sdp(TWO_LEGS);
        let plan = [accept(&offer.media[0], 30000), StreamPlan::Rejected];
        let text = build_answer(&offer, &plan, "198.51.100.7".parse().unwrap(), 1, 1);
        let answer = parse_sdp(text.as_bytes()).unwrap();
        assert_eq!(answer.media.len(), 2);
        assert_eq!(answer.media[0].direction, Direction::RecvOnly);
        assert_eq!(answer.media[0].label.as_deref(), Some("11"));
        assert_eq!(answer.media[1].port, 0);
    }

    #[test]
    fn rejected_stream_has_port_zero() {
        let offer = sdp(TWO_LEGS);
        let lines = answer_lines(&offer, &[StreamPlan::Rejected, StreamPlan::Rejected]);
        assert_eq!(lines[5..], ["m=audio 0 RTP/AVP 0", "m=audio 0 RTP/AVP 8"]);
    }

    #[test]
    fn short_plan_rejects_the_rest() {
        let offer = sdp(TWO_LEGS);
        let lines = answer_lines(&offer, &[accept(&offer.media[0], 30000)]);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("m=audio 0 RTP/AVP 8")
        );
    }

    #[test]
    fn inactive_offer_answers_inactive() {
        let offer = sdp(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\na=inactive\r\nm=audio 2 RTP/AVP 0\r\na=recvonly\r\nm=audio 3 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4 RTP/AVP 0\r\na=sendrecv\r\n",
        );
        let plan: Vec<_> = offer
            .media
            .iter()
            .enumerate()
            .map(|(i, m)| accept(m, 5000 + i as u16))
            .collect();
        let a = build_answer(&offer, &plan, "198.51.100.7".parse().unwrap(), 1, 1);
        let answer = parse_sdp(a.as_bytes()).unwrap();
        let dirs: Vec<_> = answer.media.iter().map(|m| m.direction).collect();
        assert_eq!(
            dirs,
            [
                Direction::Inactive,
                Direction::Inactive,
                Direction::Inactive,
                Direction::RecvOnly
            ]
        );
    }

    #[test]
    fn rtcp_mux_echoed_only_when_offered() {
        let with = sdp(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\na=rtcp-mux\r\n",
        );
        let a = build_answer(
            &with,
            &[accept(&with.media[0], 4000)],
            "192.0.2.9".parse().unwrap(),
            1,
            1,
        );
        assert!(a.contains("a=rtcp-mux\r\n"));
        let without = sdp(TWO_LEGS);
        let a = build_answer(
            &without,
            &[accept(&without.media[0], 4000)],
            "192.0.2.9".parse().unwrap(),
            1,
            1,
        );
        assert!(!a.contains("rtcp-mux"));
    }

    #[test]
    fn opus_answer_has_channels_and_fmtp() {
        let offer = sdp(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n",
        );
        let lines = answer_lines(&offer, &[accept(&offer.media[0], 4000)]);
        assert!(lines.contains(&"a=rtpmap:111 opus/48000/2".to_string()));
        assert!(lines.contains(&"a=fmtp:111 useinbandfec=1".to_string()));
    }

    #[test]
    fn srtp_answer_carries_our_crypto() {
        let offer = sdp(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/SAVP 0\r\na=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:AAAA\r\n",
        );
        let a = build_answer(
            &offer,
            &[accept(&offer.media[0], 4000)],
            "192.0.2.9".parse().unwrap(),
            1,
            1,
        );
        let answer = parse_sdp(a.as_bytes()).unwrap();
        assert_eq!(answer.media[0].proto, "RTP/SAVP");
        let c = &answer.media[0].crypto[0];
        assert_eq!((c.tag, c.suite.as_str()), (3, "AES_CM_128_HMAC_SHA1_32"));
        assert_ne!(c.key_params, "inline:AAAA");
    }

    fn decoded_key_len(answer: &str) -> usize {
        let b64 = answer.split("inline:").nth(1).unwrap();
        let pad = b64.bytes().filter(|&b| b == b'=').count();
        b64.len() / 4 * 3 - pad
    }

    #[test]
    fn answer_crypto_aes_cm_key_is_30_bytes() {
        let offered = Crypto {
            tag: 1,
            suite: "AES_CM_128_HMAC_SHA1_80".into(),
            key_params: "inline:x".into(),
            session_params: vec![],
        };
        let a = answer_crypto(&offered).unwrap();
        assert!(a.starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"));
        assert_eq!(decoded_key_len(&a), 30);
        assert_ne!(a, answer_crypto(&offered).unwrap(), "keys must be fresh");
    }

    #[test]
    fn answer_crypto_gcm_key_is_28_bytes() {
        let offered = Crypto {
            tag: 7,
            suite: "AEAD_AES_128_GCM".into(),
            key_params: "inline:x".into(),
            session_params: vec![],
        };
        let a = answer_crypto(&offered).unwrap();
        assert!(a.starts_with("7 AEAD_AES_128_GCM inline:"));
        assert_eq!(decoded_key_len(&a), 28);
    }

    #[test]
    fn unsupported_suite_has_no_answer() {
        let offered = Crypto {
            tag: 1,
            suite: "AES_256_CM_HMAC_SHA1_80".into(),
            key_params: "inline:x".into(),
            session_params: vec![],
        };
        assert_eq!(answer_crypto(&offered), None);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input), expected);
        }
    }
}
