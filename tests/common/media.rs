//! A SIPREC call with real RTP against the real binary: INVITE over UDP, the answer's ports,
//! a tone per stream from [`reel::load::rtp_send`], BYE, and the WAV read back through sox.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use reel::load::rtp_send::{SendConfig, Sender, StreamSpec};

use super::client::UdpClient;
use super::server::Server;
use super::sim::{metadata, multipart, request, to_tag};

/// The `m=` ports of an SDP answer, in order.
pub fn answer_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m=audio "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Two `sendonly` PCMU (or PCMA) streams labelled 1 and 2, optionally SRTP with the given
/// `a=crypto` values.
pub fn offer(pt: u8, crypto: Option<[&str; 2]>) -> String {
    let name = if pt == 8 { "PCMA" } else { "PCMU" };
    let proto = if crypto.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let mut sdp =
        String::from("v=0\r\no=SRC 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n");
    for (i, label) in ["1", "2"].iter().enumerate() {
        sdp.push_str(&format!(
            "m=audio {} {proto} {pt} 101\r\na=rtpmap:{pt} {name}/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:{label}\r\na=sendonly\r\n",
            30000 + 2 * i
        ));
        if let Some(c) = crypto {
            sdp.push_str(&format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {}\r\n", c[i]));
        }
    }
    sdp
}

pub struct Call {
    pub client: UdpClient,
    pub call_id: String,
    pub tag: String,
    pub ports: Vec<u16>,
}

/// INVITE + ACK; returns the answered ports.
pub fn start_call(server: &Server, call_id: &str, sdp: &str) -> Call {
    let client = UdpClient::new(server.sip_port);
    let invite = request(
        "INVITE",
        call_id,
        &format!("z9hG4bK-{call_id}-1"),
        1,
        "",
        "Require: siprec\r\n",
        Some("multipart/mixed;boundary=BND"),
        &multipart(sdp, &metadata("complete", "")),
    );
    client.send(invite.as_bytes());
    let ok = client
        .response(200, Duration::from_secs(5))
        .expect("answer");
    assert_eq!(ok.status, 200, "{:?}", ok.headers.get("Warning"));
    let tag = to_tag(&ok);
    let ports = answer_ports(&String::from_utf8_lossy(&ok.body));
    client.send(
        request(
            "ACK",
            call_id,
            &format!("z9hG4bK-{call_id}-ack"),
            1,
            &tag,
            "",
            None,
            "",
        )
        .as_bytes(),
    );
    Call {
        client,
        call_id: call_id.to_string(),
        tag,
        ports,
    }
}

pub fn end_call(call: &Call) {
    assert_eq!(
        call.client.in_dialog("BYE", &call.call_id, &call.tag, 2),
        Some(200)
    );
}

/// Sends the specs for `duration` (paced, real time) and waits.
pub fn send(specs: Vec<StreamSpec>, duration: Duration) -> reel::load::rtp_send::SendReport {
    let sender = Sender::new(specs, SendConfig::default()).expect("sender");
    sender.run(duration, &std::sync::atomic::AtomicBool::new(false))
}

pub fn dest(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A 400 Hz tone to the call's first port and a 1 kHz one to its second.
pub fn two_tones(call: &Call) -> Vec<StreamSpec> {
    vec![
        StreamSpec::new(dest(call.ports[0]), 0x1111_0001, 400.0),
        StreamSpec::new(dest(call.ports[1]), 0x2222_0002, 1000.0),
    ]
}

/// The packets a `recording.json` says went into the recording, over all its streams.
pub fn recorded_packets(json: &serde_json::Value) -> u64 {
    json["streams"]
        .as_array()
        .map(|streams| {
            streams
                .iter()
                .map(|s| s["packets"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// One channel of a WAV as 16-bit samples at `rate`, decoded by sox (an independent reader).
pub fn channel(wav: &std::path::Path, channel: usize, rate: u32) -> Vec<i16> {
    let out = Command::new("sox")
        .arg(wav)
        .args([
            "-t",
            "raw",
            "-e",
            "signed-integer",
            "-b",
            "16",
            "-c",
            "1",
            "-r",
            &rate.to_string(),
            "-",
        ])
        .args(["remix", &(channel + 1).to_string()])
        .output()
        .expect("run sox");
    assert!(
        out.status.success(),
        "sox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// `sox --i` fields of a WAV: (channels, rate, duration seconds).
pub fn wav_info(wav: &std::path::Path) -> (u32, u32, f64) {
    let q = |flag: &str| {
        let out = Command::new("sox")
            .args(["--i", flag])
            .arg(wav)
            .output()
            .expect("sox --i");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    (
        q("-c").parse().expect("channels"),
        q("-r").parse().expect("rate"),
        q("-D").parse().expect("duration"),
    )
}

/// Which of `tones` dominates `samples` (Goertzel power).
pub fn dominant(samples: &[i16], tones: &[f32], rate: u32) -> f32 {
    let mut best = (tones[0], f64::MIN);
    for &t in tones {
        let p = reel::load::tone::goertzel_power(samples, t, rate);
        if p > best.1 {
            best = (t, p);
        }
    }
    best.0
}

pub fn sox_available() -> bool {
    let ok = Command::new("sox").arg("--version").output().is_ok();
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("sox is not installed: .ci/run installs it");
        }
        eprintln!("skipped: sox not installed (apt-get install sox)");
    }
    ok
}

/// Asserts `dir/audio.wav` is stereo with `tones[ch]` dominant on channel `ch` (a second of
/// audio after the first 300 ms, past any late start); returns its length in seconds.
pub fn check_tone_channels(dir: &std::path::Path, tones: &[f32; 2]) -> f64 {
    let wav = dir.join("audio.wav");
    let (channels, rate, seconds) = wav_info(&wav);
    assert_eq!(channels, 2);
    for (ch, tone) in tones.iter().enumerate() {
        let samples = channel(&wav, ch, rate);
        let from = (rate as usize * 3) / 10;
        let window = &samples[from..(from + rate as usize).min(samples.len())];
        assert_eq!(
            dominant(window, tones, rate),
            *tone,
            "channel {ch} carries its stream's tone"
        );
    }
    seconds
}

/// Sends the specs for 2 s; half a second in, a stranger on 127.0.0.2 sends `count` RTP
/// packets (SSRC 0xdeadbeef) to each `(port, count)`.
pub fn send_with_stranger(
    specs: Vec<StreamSpec>,
    stranger_to: &[(u16, usize)],
) -> reel::load::rtp_send::SendReport {
    let stranger = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let mut junk = vec![0x80u8, 0, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    junk.extend_from_slice(&[0x55; 160]);
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| send(specs, Duration::from_secs(2)));
        std::thread::sleep(Duration::from_millis(500));
        for &(port, count) in stranger_to {
            for _ in 0..count {
                let _ = stranger.send_to(&junk, dest(port));
            }
        }
        sender.join().expect("sender")
    })
}

/// [`offer`] with the SRC's own RTP ports in the `m=` lines, as an SRC with symmetric RTP
/// would put them.
pub fn offer_from(pt: u8, ports: [u16; 2]) -> String {
    offer(pt, None)
        .replacen("m=audio 30000 ", &format!("m=audio {} ", ports[0]), 1)
        .replacen("m=audio 30002 ", &format!("m=audio {} ", ports[1]), 1)
}

/// An in-dialog re-INVITE with this SDP, ACKed; the status of its answer.
pub fn reoffer(call: &Call, cseq: u32, sdp: &str) -> Option<u16> {
    let id = &call.call_id;
    call.client.send(
        request(
            "INVITE",
            id,
            &format!("z9hG4bK-{id}-re{cseq}"),
            cseq,
            &call.tag,
            "",
            Some("application/sdp"),
            sdp,
        )
        .as_bytes(),
    );
    let status = call
        .client
        .response(200, Duration::from_secs(5))
        .map(|r| r.status);
    call.client.send(
        request(
            "ACK",
            id,
            &format!("z9hG4bK-{id}-reack{cseq}"),
            cseq,
            &call.tag,
            "",
            None,
            "",
        )
        .as_bytes(),
    );
    status
}

/// `count` PCMU packets (silence) from `from` to `to`, one each 20 ms, sequence numbers from
/// `first_seq`.
pub fn pcmu_from(
    from: &std::net::UdpSocket,
    to: SocketAddr,
    ssrc: u32,
    first_seq: u16,
    count: u16,
) {
    for i in 0..count {
        let seq = first_seq.wrapping_add(i);
        let ts = u32::from(seq).wrapping_mul(160);
        let mut p = vec![0x80u8, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        let _ = from.send_to(&p, to);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An AES_CM_128_HMAC_SHA1_80 key made of `n` (master key) and `n + 1` (salt).
pub fn srtp_key(n: u8) -> reel::media::srtp::SrtpKey {
    reel::media::srtp::SrtpKey::new(
        reel::media::srtp::SrtpSuite::AesCm128HmacSha1_80,
        [n; 16],
        &[n.wrapping_add(1); 14],
    )
    .expect("key")
}
