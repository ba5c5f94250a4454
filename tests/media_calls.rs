//! Real RTP into `reel serve` on both receive backends: the right tone on the right channel,
//! the right duration, impaired streams, SRTP (right and wrong key), and kill -9 recovery.

mod common;

use std::time::Duration;

use common::media::*;
use common::server::Server;
use reel::load::rtp_send::{Codec, DtmfSpec, Hold, Impairments, SsrcChange, StreamSpec};
use reel::media::probe::probe_uring;

const TONES: [f32; 2] = [440.0, 1000.0];

fn backends() -> Vec<&'static str> {
    let mut b = vec!["epoll"];
    if probe_uring().is_ok() {
        b.push("uring");
    } else {
        eprintln!("uring variant skipped: io_uring is unavailable here");
    }
    b
}

fn two_tones(call: &Call) -> Vec<StreamSpec> {
    vec![
        StreamSpec::new(dest(call.ports[0]), 0x1111_0001, TONES[0]),
        StreamSpec::new(dest(call.ports[1]), 0x2222_0002, TONES[1]),
    ]
}

fn check_channels(dir: &std::path::Path) {
    check_tone_channels(dir, &TONES);
}

#[test]
fn each_party_on_its_own_channel_for_the_whole_call_on_both_backends() {
    if !sox_available() {
        return;
    }
    for backend in backends() {
        let server = Server::start(&["--io-backend", backend]);
        let call = start_call(&server, &format!("tones-{backend}"), &offer(0, None));
        let mut specs = two_tones(&call);
        specs[0].dtmf = vec![DtmfSpec {
            at_packet: 60,
            event: 5,
            volume: 10,
            packets: 5,
        }];
        // A stranger sends to stream 2's port from another address: counted, not recorded.
        let report = send_with_stranger(specs, &[(call.ports[1], 20)]);
        assert!(report.packets_sent >= 180, "{report:?}");
        end_call(&call);
        let recs = server.wait_recordings(1);
        let (dir, json) = &recs[0];
        assert_eq!(json["state"], "complete", "{backend}: {json}");
        let streams = json["streams"].as_array().expect("streams");
        for s in streams {
            assert!(s["packets"].as_u64().unwrap_or(0) >= 90, "{backend}: {s}");
            assert_eq!(s["lost"], 0, "{backend}: {s}");
        }
        assert_eq!(streams[0]["ssrcs"][0], 0x1111_0001u32, "{backend}");
        assert_eq!(
            streams[1]["ssrcs"].as_array().map(Vec::len),
            Some(1),
            "{backend}: {json}"
        );
        assert_eq!(
            streams[1]["foreign"], 20,
            "{backend}: the stranger's packets: {json}"
        );
        let digits: Vec<&str> = streams[0]["dtmf"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x["digit"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            digits,
            vec!["5"],
            "{backend}: RFC 4733 digit listed: {json}"
        );
        let (_, _, secs) = wav_info(&dir.join("audio.wav"));
        let expected = json["duration_ms"].as_f64().expect("duration") / 1000.0;
        assert!(
            (secs - expected).abs() < 0.05,
            "{backend}: wav {secs} s vs {expected} s"
        );
        check_channels(dir);
        let (_, metrics) = server.http_get("/metrics").expect("metrics");
        assert!(metrics.contains("reel_media_packets_total"), "{metrics}");
    }
}

#[test]
fn impaired_streams_are_placed_by_timestamp() {
    if !sox_available() {
        return;
    }
    for backend in backends() {
        let server = Server::start(&["--io-backend", backend]);
        let call = start_call(&server, &format!("impaired-{backend}"), &offer(8, None));
        let mut specs: Vec<StreamSpec> = two_tones(&call)
            .into_iter()
            .map(|s| s.with_codec(Codec::Pcma))
            .collect();
        specs[0].impairments = Impairments {
            drop: vec![10, 11, 12],
            swap: vec![20],
            duplicate: vec![30, 31],
            holds: vec![Hold {
                at_packet: 50,
                gap: Duration::from_millis(400),
            }],
            ..Impairments::default()
        };
        specs[1].impairments = Impairments {
            start_delay: Duration::from_millis(500),
            ssrc_change: Some(SsrcChange {
                at_packet: 40,
                new_ssrc: 0x3333_0003,
            }),
            ..Impairments::default()
        };
        send(specs, Duration::from_secs(3));
        end_call(&call);
        let recs = server.wait_recordings(1);
        let (dir, json) = &recs[0];
        let s = json["streams"].as_array().expect("streams");
        assert_eq!(
            s[0]["lost"], 3,
            "{backend}: three dropped, the hold is not loss: {json}"
        );
        assert!(
            s[0]["duplicates"].as_u64().unwrap_or(0) >= 2,
            "{backend}: {json}"
        );
        assert_eq!(
            s[1]["ssrcs"].as_array().map(Vec::len),
            Some(2),
            "{backend}: {json}"
        );
        assert_eq!(s[1]["lost"], 0, "{backend}: an SSRC change is not loss");
        check_channels(dir);
        // Late start: the first 400 ms of channel 1 are silence.
        let wav = dir.join("audio.wav");
        let (_, rate, _) = wav_info(&wav);
        let ch1 = channel(&wav, 1, rate);
        let head = &ch1[..(rate as usize * 4) / 10];
        assert!(
            head.iter().all(|v| v.unsigned_abs() < 64),
            "{backend}: leading silence"
        );
    }
}

#[test]
fn srtp_is_decrypted_and_a_wrong_key_records_silence() {
    if !sox_available() {
        return;
    }
    use reel::media::srtp::{SrtpContext, SrtpKey, SrtpSuite};
    let key = |n: u8| {
        SrtpKey::new(
            SrtpSuite::AesCm128HmacSha1_80,
            [n; 16],
            &[n.wrapping_add(1); 14],
        )
        .expect("key")
    };
    let keys = [key(1), key(2)];
    let sdes = [keys[0].to_sdes(), keys[1].to_sdes()];
    for (right, call_id) in [(true, "srtp-right"), (false, "srtp-wrong")] {
        let server = Server::start(&[]);
        let call = start_call(&server, call_id, &offer(0, Some([&sdes[0], &sdes[1]])));
        let mut specs = two_tones(&call);
        for (i, s) in specs.iter_mut().enumerate() {
            let k = if right { keys[i].clone() } else { key(9) };
            let mut ctx = SrtpContext::new(&k);
            s.protect = Some(Box::new(move |p: &mut Vec<u8>| {
                let _ = ctx.protect_rtp(p);
            }));
        }
        send(specs, Duration::from_secs(2));
        end_call(&call);
        let recs = server.wait_recordings(1);
        let (dir, json) = &recs[0];
        if right {
            assert_eq!(json["state"], "complete", "{json}");
            check_channels(dir);
        } else {
            assert_eq!(json["state"], "no-media", "{json}");
            let s = &json["streams"][0];
            assert!(s["srtp_failures"].as_u64().unwrap_or(0) >= 90, "{json}");
            assert_eq!(s["packets"], 0);
            assert!(
                dir.join("audio.wav").exists(),
                "silent audio still spans the timeline"
            );
        }
    }
}

#[test]
fn kill_9_mid_call_recovers_audio_up_to_the_last_commit() {
    if !sox_available() {
        return;
    }
    let mut server = Server::start(&[]);
    let call = start_call(&server, "crash-audio", &offer(0, None));
    send(two_tones(&call), Duration::from_secs(3));
    // Group commit is about once a second: by now at least 1-2 s are on disk.
    server.kill9();
    server.restart();
    let recs = server.wait_recordings(1);
    let (dir, json) = &recs[0];
    assert_eq!(json["state"], "partial", "{json}");
    let packets = json["streams"][0]["packets"].as_u64().unwrap_or(0);
    assert!(packets >= 50, "at least a second of audio survived: {json}");
    check_channels(dir);
}

#[test]
fn sipp_call_with_rtp_stream_is_recorded_on_channel_0() {
    if !sox_available() || !common::server::sipp_available() {
        return;
    }
    let server = Server::start(&[]);
    let work = tempfile::tempdir().expect("tempdir");
    let made = std::process::Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw"])
        .arg(work.path().join("tone.ulaw"))
        .args(["synth", "1", "sine", "440"])
        .status()
        .expect("sox");
    assert!(made.success());
    let scenario =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/call_with_rtp.xml");
    let port = common::server::free_port();
    let out = std::process::Command::new("sipp")
        .current_dir(work.path())
        .arg("-sf")
        .arg(&scenario)
        .arg(format!("127.0.0.1:{}", server.sip_port))
        .args([
            "-t",
            "u1",
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args([
            "-mp",
            &common::server::free_port().to_string(),
            "-mi",
            "127.0.0.1",
        ])
        .args(["-timeout", "30s", "-timeout_error"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sipp");
    assert!(
        out.status.success(),
        "sipp: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let recs = server.wait_recordings(1);
    let (dir, json) = &recs[0];
    assert_eq!(json["state"], "complete", "{json}");
    let streams = json["streams"].as_array().expect("streams");
    assert!(streams[0]["packets"].as_u64().unwrap_or(0) >= 50, "{json}");
    assert_eq!(
        streams[1]["packets"], 0,
        "SIPp sends one stream only: {json}"
    );
    let wav = dir.join("audio.wav");
    let (channels, rate, _) = wav_info(&wav);
    assert_eq!(channels, 2);
    let ch0 = channel(&wav, 0, rate);
    let from = rate as usize / 2;
    let window = &ch0[from..(from + rate as usize).min(ch0.len())];
    assert_eq!(
        dominant(window, &[440.0, 1000.0], rate),
        440.0,
        "SIPp's tone on channel 0"
    );
    let ch1 = channel(&wav, 1, rate);
    assert!(
        ch1.iter().all(|v| v.unsigned_abs() < 64),
        "channel 1 is silence"
    );
}

#[test]
fn stray_packets_of_a_payload_type_not_negotiated_cannot_latch_a_stream() {
    let server = Server::start(&[]);
    let call = start_call(&server, "stray-first", &offer(0, None));
    // Before the SRC's first packet, another host sends to both ports: seven packets of a
    // payload type nobody offered (a scanner, a stale stream), not enough to latch.
    let stray = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let mut junk = vec![0x80u8, 127, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    junk.extend_from_slice(&[0x55; 160]);
    for port in &call.ports {
        for _ in 0..7 {
            stray.send_to(&junk, dest(*port)).expect("send stray");
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    // Stream 2's SRC sends PCMA although PCMU was negotiated: its eighth packet latches it.
    let specs = vec![
        StreamSpec::new(dest(call.ports[0]), 0x1111_0001, TONES[0]),
        StreamSpec::new(dest(call.ports[1]), 0x2222_0002, TONES[1]).with_codec(Codec::Pcma),
    ];
    let report = send(specs, Duration::from_secs(1));
    end_call(&call);
    let recs = server.wait_recordings(1);
    let json = &recs[0].1;
    let streams = json["streams"].as_array().expect("streams");
    let sent = |i: usize| report.per_stream[i].packets;
    assert_eq!(streams[0]["packets"].as_u64(), Some(sent(0)), "{json}");
    assert_eq!(streams[0]["foreign"], 7, "the stray packets: {json}");
    assert_eq!(streams[0]["ssrcs"][0], 0x1111_0001u32, "{json}");
    assert_eq!(
        streams[1]["packets"].as_u64(),
        Some(sent(1) - 7),
        "all but the seven before the latch: {json}"
    );
    assert_eq!(streams[1]["foreign"], 14, "{json}");
    assert_eq!(streams[1]["ssrcs"][0], 0x2222_0002u32, "{json}");
}
