//! Parsing a realistic ~3 KB SIPREC INVITE (SIP + multipart + SDP + RFC 7865 metadata) and
//! building the recorder's answer. Prints messages per second per core.
//!
//! Run: `cargo bench --bench sip_parse`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use reel::sip::message::parse_message;
use reel::sip::{Message, Response};
use reel::siprec::metadata::{Limits, parse_metadata};
use reel::siprec::sdp::{StreamPlan, build_answer, parse_sdp};
use reel::siprec::{Metadata, is_metadata_type, split_body};

const SDP: &str = "v=0\r\no=SBC 1748291 1748291 IN IP4 203.0.113.5\r\ns=SIPREC\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=label:1\r\na=sendonly\r\nm=audio 30002 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=label:2\r\na=sendonly\r\n";

const XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <group group_id="7+OTCyoxTmqmqyA/1weDAg=="><associate-time>2026-11-25T10:00:00Z</associate-time></group>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ=="><sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID><group-ref>7+OTCyoxTmqmqyA/1weDAg==</group-ref><start-time>2026-11-25T10:00:00Z</start-time></session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w=="><nameID aor="sip:+15551230001@carrier.example.com"><name xml:lang="en">Alice Caller</name></nameID></participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw=="><nameID aor="sip:+15551230002@carrier.example.com"><name xml:lang="en">Bob Callee</name></nameID></participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>1</label></stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>2</label></stream>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w=="><send>UAAMm5GRQKSCMVvLyl4rFw==</send><recv>i1Pz3to5hGk8fuXl+PbwCw==</recv></participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw=="><send>i1Pz3to5hGk8fuXl+PbwCw==</send><recv>UAAMm5GRQKSCMVvLyl4rFw==</recv></participantstreamassoc>
</recording>
"#;

fn invite() -> Vec<u8> {
    let body = format!(
        "--uniqueBoundary\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--uniqueBoundary\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{XML}\r\n--uniqueBoundary--\r\n"
    );
    format!(
        "INVITE sip:srs@198.51.100.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-524287-1---a3f3c0e0c8d1a2b3;rport\r\nMax-Forwards: 70\r\nContact: <sip:src@203.0.113.5:5060>;+sip.src\r\nTo: <sip:srs@198.51.100.20>\r\nFrom: <sip:src@203.0.113.5>;tag=5b5b2d8e\r\nCall-ID: 8f1d3c2a-7e6b-4a59-9c1d-2e3f4a5b6c7d@203.0.113.5\r\nCSeq: 1 INVITE\r\nAllow: INVITE, ACK, CANCEL, OPTIONS, BYE, UPDATE, INFO\r\nRequire: siprec\r\nSupported: timer, replaces\r\nSession-Expires: 1800;refresher=uac\r\nMin-SE: 90\r\nUser-Agent: CarrierSBC/9.1\r\nContent-Type: multipart/mixed;boundary=uniqueBoundary\r\nMIME-Version: 1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the recorder does with an INVITE before it answers: parse SIP, split the body, parse
/// SDP and metadata, merge, choose codecs, build the SDP answer and the 200.
fn handle(data: &[u8]) -> usize {
    let Ok(Message::Request(req)) = parse_message(data) else {
        panic!("bench input parses")
    };
    let parts = split_body(req.headers.get("Content-Type"), &req.body).expect("parts");
    let mut offer = None;
    let mut metadata = Metadata::default();
    for p in &parts {
        if p.content_type == "application/sdp" {
            offer = Some(parse_sdp(&p.body).expect("sdp"));
        } else if is_metadata_type(&p.content_type) {
            metadata.apply(parse_metadata(&p.body, &Limits::default()).expect("xml"));
        }
    }
    let offer = offer.expect("sdp part");
    let plan: Vec<StreamPlan> = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (codec, te) = m.choose_codecs().expect("codec");
            StreamPlan::Accepted {
                port: 40000 + 2 * i as u16,
                codec,
                telephone_event: te,
                crypto: None,
            }
        })
        .collect();
    let ip: IpAddr = "198.51.100.20".parse().expect("ip");
    let answer = build_answer(&offer, &plan, ip, 1, 1);
    let mut resp = Response::for_request(&req, 200, "OK");
    resp.headers.push("Content-Type", "application/sdp");
    resp.body = answer.into_bytes();
    black_box(metadata.sender_of_label("1").is_some());
    resp.encode().len()
}

fn bench(c: &mut Criterion) {
    let data = invite();
    eprintln!(
        "machine: {} cores; INVITE size {} bytes; command: cargo bench --bench sip_parse",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        data.len()
    );
    let mut g = c.benchmark_group("siprec_invite");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_sip_only", |b| {
        b.iter(|| parse_message(black_box(&data)).is_ok())
    });
    g.bench_function("parse_and_answer", |b| b.iter(|| handle(black_box(&data))));
    // The stages, to see where the time goes.
    let Ok(Message::Request(req)) = parse_message(&data) else {
        panic!("parses")
    };
    let ct = req.headers.get("Content-Type").map(str::to_string);
    g.bench_function("stage_split_body", |b| {
        b.iter(|| split_body(ct.as_deref(), black_box(&req.body)).map(|p| p.len()))
    });
    g.bench_function("stage_parse_sdp", |b| {
        b.iter(|| parse_sdp(black_box(SDP.as_bytes())).is_ok())
    });
    g.bench_function("stage_parse_metadata", |b| {
        b.iter(|| parse_metadata(black_box(XML.as_bytes()), &Limits::default()).is_ok())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
