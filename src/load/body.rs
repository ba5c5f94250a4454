//! The bodies `reel load` puts in its requests: the SDP offer of the two recorded streams,
//! the hold and resume re-offers, the rs-metadata document in four vendor dialects, and the
//! multipart body that carries them; and reading the SRS's SDP answer back.
//!
//! Owns: what each dialect looks like on the wire, modelled on the vendor samples in
//! `tests/data/` and the shared corpus (RFC 7865, BroadWorks draft schema, Oracle/Acme old
//! namespace, Cisco CUBE with its third `application/gtd` part). Every dialect names two
//! participants (caller, callee) with AoRs and two streams whose labels are the SDP's
//! `a=label`s, each stream sent by one participant.
//!
//! Must not: do I/O or keep call state; the caller passes everything a body depends on.

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;

use super::rtp_send::{Codec, DTMF_PAYLOAD_TYPE};

/// The metadata dialect of the SRC being imitated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// RFC 7865 (`urn:ietf:params:xml:ns:recording:1`, `*_id` attributes, association
    /// elements).
    Rfc7865,
    /// Cisco BroadWorks: the draft `recording_metadata` schema (`urn:ietf:params:xml:ns:siprec`),
    /// `send/id` inside participants, a BroadWorks extension, Contact `;src` and no `Require`.
    Broadworks,
    /// Oracle (Acme Packet) SBC: the older `urn:ietf:params:xml:ns:recording` namespace with
    /// `id=` attributes, `send` inside participants, large numeric labels.
    Acme,
    /// Cisco CUBE: RFC 7865 namespace, associations after each participant, three body parts
    /// (SDP with `Content-Disposition: session;handling=required`, metadata, `application/gtd`).
    Cube,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Rfc7865 => "rfc7865",
            Flavour::Broadworks => "broadworks",
            Flavour::Acme => "acme",
            Flavour::Cube => "cube",
        }
    }

    /// The `a=label` of stream 0 (caller) and 1 (callee).
    pub fn labels(self) -> [&'static str; 2] {
        match self {
            Flavour::Acme => ["16777227", "16777228"],
            _ => ["1", "2"],
        }
    }

    /// Whether requests carry `Require: siprec` (BroadWorks relies on Contact `;src` alone).
    pub fn requires_siprec(self) -> bool {
        self != Flavour::Broadworks
    }

    /// The Contact feature parameter marking the SRC (RFC 7866 §6.1.1 `+sip.src`; BroadWorks
    /// writes a bare `;src`).
    pub fn contact_param(self) -> &'static str {
        match self {
            Flavour::Broadworks => "src",
            _ => "+sip.src",
        }
    }

    fn sdp_origin_user(self) -> &'static str {
        match self {
            Flavour::Rfc7865 => "reel-load",
            Flavour::Broadworks => "BroadWorks",
            Flavour::Acme => "-",
            Flavour::Cube => "CiscoSystemsSIP-GW-UserAgent",
        }
    }
}

/// Direction of both streams in an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendOnly,
    /// On hold (RFC 3264 §8.4 for a recording client: nothing is sent either way).
    Inactive,
}

/// Who and what one recorded call is: the values every body of the call shares.
#[derive(Clone, Debug)]
pub struct CallParties {
    pub caller_aor: String,
    pub callee_aor: String,
    pub caller_name: String,
    pub callee_name: String,
    /// Stable ids for the metadata (session, participants, streams, group), base64 of 16
    /// random bytes as RFC 7865 examples use.
    ids: [String; 6],
    /// Original call's Call-ID, for `sipSessionID`, BroadWorks `callID` and the GTD part.
    pub original_call_id: String,
}

impl CallParties {
    /// The parties of call number `n` (numbers only make the AoRs distinct and readable).
    pub fn new(n: u64) -> CallParties {
        let b64 = base64::engine::general_purpose::STANDARD;
        let ids = std::array::from_fn(|_| b64.encode(rand::random::<[u8; 16]>()));
        CallParties {
            caller_aor: format!("sip:+1555{:07}@caller.example.com", n % 10_000_000),
            callee_aor: format!("sip:+1666{:07}@callee.example.net", n % 10_000_000),
            caller_name: format!("Caller {n}"),
            callee_name: format!("Callee {n}"),
            ids,
            original_call_id: format!("{:016x}@orig.example.com", rand::random::<u64>()),
        }
    }

    fn session(&self) -> &str {
        &self.ids[0]
    }
    fn participant(&self, i: usize) -> &str {
        &self.ids[1 + i]
    }
    fn stream(&self, i: usize) -> &str {
        &self.ids[3 + i]
    }
    fn group(&self) -> &str {
        &self.ids[5]
    }
}

/// An SDP offer of two streams labelled per `flavour`, both from `ip:port` (the RTP sender's
/// one socket), version `version` of the session.
pub fn offer(
    flavour: Flavour,
    codec: Codec,
    ip: IpAddr,
    port: u16,
    session_id: u64,
    version: u32,
    dir: Direction,
) -> String {
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let session_name = if flavour == Flavour::Cube {
        "SIP Call"
    } else {
        "-"
    };
    let mut sdp = format!(
        "v=0\r\no={} {session_id} {version} IN {family} {ip}\r\ns={session_name}\r\nc=IN {family} {ip}\r\nt=0 0\r\n",
        flavour.sdp_origin_user()
    );
    let pt = codec.payload_type();
    let direction = match dir {
        Direction::SendOnly => "sendonly",
        Direction::Inactive => "inactive",
    };
    for label in flavour.labels() {
        let _ = write!(
            sdp,
            "m=audio {port} RTP/AVP {pt} {DTMF_PAYLOAD_TYPE}\r\n\
             a=rtpmap:{pt} {}/8000\r\n\
             a=rtpmap:{DTMF_PAYLOAD_TYPE} telephone-event/8000\r\n\
             a=fmtp:{DTMF_PAYLOAD_TYPE} 0-15\r\n\
             a=ptime:20\r\n\
             a={direction}\r\n\
             a=label:{label}\r\n",
            codec.name()
        );
    }
    sdp
}

/// The rs-metadata document of a call in `flavour`.
pub fn metadata(flavour: Flavour, p: &CallParties, start_time: &str) -> String {
    match flavour {
        Flavour::Rfc7865 => rfc7865(p, start_time),
        Flavour::Broadworks => broadworks(p, start_time),
        Flavour::Acme => acme(p, start_time),
        Flavour::Cube => cube(p, start_time),
    }
}

fn rfc7865(p: &CallParties, t: &str) -> String {
    let [l0, l1] = Flavour::Rfc7865.labels();
    let (s, g) = (p.session(), p.group());
    let (p0, p1, s0, s1) = (p.participant(0), p.participant(1), p.stream(0), p.stream(1));
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
<datamode>complete</datamode>
<group group_id="{g}"><associate-time>{t}</associate-time></group>
<session session_id="{s}"><group-ref>{g}</group-ref><sipSessionID>{cid}</sipSessionID><start-time>{t}</start-time></session>
<participant participant_id="{p0}"><nameID aor="{a0}"><name xml:lang="en">{n0}</name></nameID></participant>
<participant participant_id="{p1}"><nameID aor="{a1}"><name xml:lang="en">{n1}</name></nameID></participant>
<stream stream_id="{s0}" session_id="{s}"><label>{l0}</label></stream>
<stream stream_id="{s1}" session_id="{s}"><label>{l1}</label></stream>
<sessionrecordingassoc session_id="{s}"><associate-time>{t}</associate-time></sessionrecordingassoc>
<participantsessionassoc participant_id="{p0}" session_id="{s}"><associate-time>{t}</associate-time></participantsessionassoc>
<participantsessionassoc participant_id="{p1}" session_id="{s}"><associate-time>{t}</associate-time></participantsessionassoc>
<participantstreamassoc participant_id="{p0}"><send>{s0}</send><recv>{s1}</recv></participantstreamassoc>
<participantstreamassoc participant_id="{p1}"><send>{s1}</send><recv>{s0}</recv></participantstreamassoc>
</recording>
"#,
        cid = p.original_call_id,
        a0 = p.caller_aor,
        a1 = p.callee_aor,
        n0 = p.caller_name,
        n1 = p.callee_name,
    )
}

fn broadworks(p: &CallParties, t: &str) -> String {
    let [l0, l1] = Flavour::Broadworks.labels();
    let urn = |id: &str| format!("urn:uuid:{}", uuid_from(id));
    let (s, g, r) = (
        urn(p.session()),
        urn(p.group()),
        urn(p.participant(0)) + "-rec",
    );
    let (p0, p1, s0, s1) = (
        urn(p.participant(0)),
        urn(p.participant(1)),
        urn(p.stream(0)),
        urn(p.stream(1)),
    );
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
<dataMode>complete</dataMode>
<recording id="{r}">
<requestor>SRC</requestor>
<type>selective</type>
</recording>
<group id="{g}" recording="{r}">
<initiator>{a0}</initiator>
</group>
<session id="{s}" group="{g}">
<start-time>{t}</start-time>
</session>
<participant id="{p0}" session="{s}">
<aor>{a0}</aor>
<name>{n0}</name>
<send>
<id>{s0}</id>
</send>
</participant>
<participant id="{p1}" session="{s}">
<aor>{a1}</aor>
<name>{n1}</name>
<send>
<id>{s1}</id>
</send>
</participant>
<stream id="{s0}" session="{s}">
<label>{l0}</label>
<mode>separate</mode>
</stream>
<stream id="{s1}" session="{s}">
<label>{l1}</label>
<mode>separate</mode>
</stream>
<extensiondata id="{s}-ext" parent="{s}">
<broadWorksRecordingMetadata xmlns="http://schema.broadsoft.com/broadworksCallRecording" version="1.0">
<extTrackingID>{cid}</extTrackingID>
<serviceProviderID>SP-LOAD</serviceProviderID>
<groupID>Load-Group</groupID>
<userID>{a0}</userID>
<callID>callhalf-{cid}</callID>
<callType>
<origCall>
<callingPartyNumber>{a0}</callingPartyNumber>
<calledPartyNumber>{a1}</calledPartyNumber>
</origCall>
</callType>
<recordingType>on</recordingType>
</broadWorksRecordingMetadata>
</extensiondata>
</recording_metadata>
"#,
        cid = p.original_call_id,
        a0 = p.caller_aor,
        a1 = p.callee_aor,
        n0 = p.caller_name,
        n1 = p.callee_name,
    )
}

fn acme(p: &CallParties, t: &str) -> String {
    let [l0, l1] = Flavour::Acme.labels();
    let s = p.session();
    let (p0, p1, s0, s1) = (p.participant(0), p.participant(1), p.stream(0), p.stream(1));
    // Acme writes local time without a zone in associate-time.
    let t = t.trim_end_matches('Z');
    let t = t.split('.').next().unwrap_or(t);
    format!(
        r#"<?xml version='1.0' encoding='UTF-8'?>
<recording xmlns='urn:ietf:params:xml:ns:recording'>
	<datamode>complete</datamode>
	<session id="{s}">
		<associate-time>{t}</associate-time>
		<extensiondata xmlns:apkt="http://acmepacket.com/siprec/extensiondata">
			<apkt:ucid>00FA080000000000000000;encoding=hex</apkt:ucid>
			<apkt:callerOrig>true</apkt:callerOrig>
		</extensiondata>
	</session>
	<participant id="{p0}" session="{s}">
		<nameID aor="{a0}">
			<name>{n0}</name>
		</nameID>
		<send>{s0}</send>
		<associate-time>{t}</associate-time>
		<extensiondata xmlns:apkt="http://acmepacket.com/siprec/extensiondata">
			<apkt:callingParty>true</apkt:callingParty>
		</extensiondata>
	</participant>
	<participant id="{p1}" session="{s}">
		<nameID aor="{a1}">
			<name>{n1}</name>
		</nameID>
		<send>{s1}</send>
		<associate-time>{t}</associate-time>
		<extensiondata xmlns:apkt="http://acmepacket.com/siprec/extensiondata">
			<apkt:callingParty>false</apkt:callingParty>
		</extensiondata>
	</participant>
	<stream id="{s0}" session="{s}">
		<label>{l0}</label>
		<mode>separate</mode>
		<associate-time>{t}</associate-time>
	</stream>
	<stream id="{s1}" session="{s}">
		<label>{l1}</label>
		<mode>separate</mode>
		<associate-time>{t}</associate-time>
	</stream>
</recording>
"#,
        a0 = p.caller_aor,
        a1 = p.callee_aor,
        n0 = p.caller_name,
        n1 = p.callee_name,
    )
}

fn cube(p: &CallParties, t: &str) -> String {
    let [l0, l1] = Flavour::Cube.labels();
    let s = p.session();
    let (p0, p1, s0, s1) = (p.participant(0), p.participant(1), p.stream(0), p.stream(1));
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
<datamode>complete</datamode>
<session session_id="{s}">
<sipSessionID>{cid}</sipSessionID>
<start-time>{t}</start-time>
</session>
<participant participant_id="{p0}">
<nameID aor="{a0}">
<name xml:lang="en">{n0}</name>
</nameID>
</participant>
<participantsessionassoc participant_id="{p0}" session_id="{s}">
<associate-time>{t}</associate-time>
</participantsessionassoc>
<stream stream_id="{s0}" session_id="{s}">
<label>{l0}</label>
</stream>
<participant participant_id="{p1}">
<nameID aor="{a1}">
<name xml:lang="en">{n1}</name>
</nameID>
</participant>
<participantsessionassoc participant_id="{p1}" session_id="{s}">
<associate-time>{t}</associate-time>
</participantsessionassoc>
<stream stream_id="{s1}" session_id="{s}">
<label>{l1}</label>
</stream>
<participantstreamassoc participant_id="{p0}">
<send>{s0}</send>
<recv>{s1}</recv>
</participantstreamassoc>
<participantstreamassoc participant_id="{p1}">
<send>{s1}</send>
<recv>{s0}</recv>
</participantstreamassoc>
</recording>
"#,
        cid = p.original_call_id,
        a0 = p.caller_aor,
        a1 = p.callee_aor,
        n0 = p.caller_name,
        n1 = p.callee_name,
    )
}

/// A UUID-shaped rendering of a base64 id (BroadWorks uses `urn:uuid:` ids).
fn uuid_from(id: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(id)
        .unwrap_or_default();
    // Short or missing ids are padded with zeros, as before; longer ones cut to 16 bytes.
    let mut b = [0u8; 16];
    let n = bytes.len().min(16);
    b[..n].copy_from_slice(&bytes[..n]);
    crate::record::model::uuid_text(&b)
}

/// The multipart boundary `reel load` uses for `flavour` (vendor-like, one per dialect).
pub fn boundary(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::Rfc7865 => "reel-load-boundary",
        Flavour::Broadworks => "UniqueBroadWorksBoundary",
        Flavour::Acme => "unique-boundary-1",
        Flavour::Cube => "uniqueBoundary",
    }
}

/// The initial INVITE's body (`multipart/mixed;boundary=`[`boundary`]).
pub fn multipart(flavour: Flavour, sdp: &str, xml: &str, p: &CallParties) -> String {
    let b = boundary(flavour);
    match flavour {
        Flavour::Broadworks => format!(
            "--{b}\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--{b}\r\nContent-Type:application/rs-metadata+xml\r\nContent-Disposition:recording-session\r\n\r\n{xml}\r\n--{b}--\r\n"
        ),
        Flavour::Cube => format!(
            "--{b}\r\nContent-Disposition: session;handling=required\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--{b}\r\nContent-Disposition: recording-session\r\nContent-Type: application/rs-metadata+xml\r\n\r\n{xml}\r\n--{b}\r\nContent-Disposition: signal;handling=optional\r\nContent-Type: application/gtd\r\n\r\nIAM,\r\nGCI,{}\r\n\r\n--{b}--\r\n",
            p.original_call_id.split('@').next().unwrap_or("0")
        ),
        Flavour::Rfc7865 | Flavour::Acme => format!(
            "--{b}\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--{b}\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{xml}\r\n--{b}--\r\n"
        ),
    }
}

/// Where the SRS wants each offered stream, in `m=` order: `None` for a rejected stream
/// (port 0). The connection address is the stream's `c=` or the session's; when the answer
/// has none, `fallback` (the SRS's signalling address).
pub fn answer_destinations(sdp: &[u8], fallback: IpAddr) -> Vec<Option<std::net::SocketAddr>> {
    // An answer the recorder's own SDP parser refuses gives no stream to send to.
    let Ok(answer) = crate::siprec::sdp::parse_sdp(sdp) else {
        return Vec::new();
    };
    answer
        .media
        .iter()
        .map(|m| {
            if m.port == 0 {
                return None;
            }
            // No address, or an unspecified one, says nothing about where to send: the SRS's.
            let ip = m
                .connection
                .filter(|ip| !ip.is_unspecified())
                .unwrap_or(fallback);
            Some(std::net::SocketAddr::new(ip, m.port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::siprec::metadata::{Limits, Metadata, parse_metadata};

    fn model(xml: &str) -> Metadata {
        let doc = parse_metadata(xml.as_bytes(), &Limits::default()).expect("parses");
        let mut m = Metadata::default();
        m.apply(doc);
        m
    }

    #[test]
    fn every_flavour_names_both_senders_by_label() {
        let p = CallParties::new(7);
        for f in [
            Flavour::Rfc7865,
            Flavour::Broadworks,
            Flavour::Acme,
            Flavour::Cube,
        ] {
            let m = model(&metadata(f, &p, "2026-01-02T03:04:05.678Z"));
            let [l0, l1] = f.labels();
            let labels = [l0.to_string(), l1.to_string()];
            assert_eq!(m.warnings(&labels), Vec::<String>::new(), "{f:?}");
            let caller = m.sender_of_label(l0).expect("caller sends label 0");
            let callee = m.sender_of_label(l1).expect("callee sends label 1");
            assert_eq!(caller.aor.as_deref(), Some(p.caller_aor.as_str()), "{f:?}");
            assert_eq!(callee.aor.as_deref(), Some(p.callee_aor.as_str()), "{f:?}");
        }
    }

    #[test]
    fn offer_has_two_labelled_streams_in_the_direction_asked() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let sdp = offer(
            Flavour::Acme,
            Codec::G722,
            ip,
            4000,
            1,
            2,
            Direction::Inactive,
        );
        assert_eq!(sdp.matches("m=audio 4000 RTP/AVP 9 101").count(), 2);
        assert!(sdp.contains("a=label:16777227") && sdp.contains("a=label:16777228"));
        assert_eq!(sdp.matches("a=inactive").count(), 2);
        assert!(sdp.contains("a=rtpmap:9 G722/8000"));
        assert!(sdp.contains("o=- 1 2 IN IP4 127.0.0.1"));
    }

    #[test]
    fn answer_destinations_follow_media_then_session_c_line() {
        let fb: IpAddr = "127.0.0.9".parse().unwrap();
        let sdp = b"v=0\r\nc=IN IP4 127.0.0.2\r\nm=audio 5000 RTP/AVP 0\r\nm=audio 0 RTP/AVP 0\r\nm=audio 5002 RTP/AVP 0\r\nc=IN IP4 127.0.0.3\r\n";
        let d = answer_destinations(sdp, fb);
        assert_eq!(
            d,
            vec![
                Some("127.0.0.2:5000".parse().unwrap()),
                None,
                Some("127.0.0.3:5002".parse().unwrap())
            ]
        );
        let none = answer_destinations(b"v=0\r\nm=audio 7 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n", fb);
        assert_eq!(none, vec![Some("127.0.0.9:7".parse().unwrap())]);
    }

    #[test]
    fn answer_destinations_never_panic_on_junk() {
        let fb: IpAddr = "127.0.0.1".parse().unwrap();
        for junk in [
            &b"m="[..],
            b"c=",
            b"m=audio x",
            b"\xff\xfe",
            b"c=IN IP4 999.1.1.1",
        ] {
            let _ = answer_destinations(junk, fb);
        }
    }
}
