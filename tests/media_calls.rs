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
    use reel::media::srtp::SrtpContext;
    let keys = [srtp_key(1), srtp_key(2)];
    let sdes = [keys[0].to_sdes(), keys[1].to_sdes()];
    for (right, call_id) in [(true, "srtp-right"), (false, "srtp-wrong")] {
        let server = Server::start(&[]);
        let call = start_call(&server, call_id, &offer(0, Some([&sdes[0], &sdes[1]])));
        let mut specs = two_tones(&call);
        // The network duplicates three SRTP packets: SRTP's replay check sees them, and they
        // are duplicates, not key failures.
        specs[0].impairments.duplicate = vec![10, 20, 30];
        for (i, s) in specs.iter_mut().enumerate() {
            let k = if right { keys[i].clone() } else { srtp_key(9) };
            let mut ctx = SrtpContext::new(&k);
            s.protect = Some(Box::new(move |p: &mut Vec<u8>| {
                let _ = ctx.protect_rtp(p);
            }));
        }
        let report = send(specs, Duration::from_secs(2));
        end_call(&call);
        let recs = server.wait_recordings(1);
        let (dir, json) = &recs[0];
        if right {
            assert_eq!(json["state"], "complete", "{json}");
            check_channels(dir);
            let s = &json["streams"][0];
            assert_eq!(s["duplicates"], 3, "{json}");
            assert_eq!(s["srtp_failures"], 0, "{json}");
            assert_eq!(
                s["packets"].as_u64(),
                Some(report.per_stream[0].packets - 3),
                "{json}"
            );
        } else {
            assert_eq!(json["state"], "no-media", "{json}");
            // Every packet sent is counted, the last ones too (they were held for a retry
            // when the BYE removed the stream).
            for (i, s) in json["streams"]
                .as_array()
                .expect("streams")
                .iter()
                .enumerate()
            {
                let sent = report.per_stream[i].packets;
                assert!(sent >= 90, "{sent}");
                assert_eq!(
                    s["srtp_failures"].as_u64(),
                    Some(sent),
                    "stream {i}: {json}"
                );
                assert_eq!(s["packets"], 0);
            }
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
    // Stream 2's SRC sends PCMA although PCMU was negotiated: the other G.711 law, which
    // audio.wav holds as well, latches it from its first packet.
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
        Some(sent(1)),
        "every PCMA packet: {json}"
    );
    assert_eq!(streams[1]["foreign"], 7, "the stray packets only: {json}");
    assert_eq!(streams[1]["ssrcs"][0], 0x2222_0002u32, "{json}");
}

fn stream_counts(json: &serde_json::Value, i: usize) -> (u64, u64) {
    let s = &json["streams"][i];
    (
        s["packets"].as_u64().unwrap_or(0),
        s["foreign"].as_u64().unwrap_or(0),
    )
}

#[test]
fn a_stray_packet_of_the_negotiated_type_cannot_take_a_stream_from_the_src_at_its_sdp_address() {
    let server = Server::start(&[]);
    let src = [
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"),
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"),
    ];
    let ports = src.each_ref().map(|s| s.local_addr().expect("addr").port());
    let call = start_call(&server, "stray-pcmu", &offer_from(0, ports));
    // A single PCMU packet from elsewhere (the stale stream of another call) comes first.
    let stray = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    pcmu_from(&stray, dest(call.ports[0]), 0x0bad_0001, 7, 1);
    std::thread::sleep(Duration::from_millis(50));
    std::thread::scope(|s| {
        for (i, sock) in src.iter().enumerate() {
            let to = dest(call.ports[i]);
            s.spawn(move || pcmu_from(sock, to, 0x5000 + i as u32, 100, 50));
        }
    });
    end_call(&call);
    let recs = server.wait_recordings(1);
    let json = &recs[0].1;
    // The stray's one packet came first and is kept; every packet of the SRC follows it.
    assert_eq!(stream_counts(json, 0), (51, 0), "{json}");
    assert_eq!(json["streams"][0]["ssrcs"][1], 0x5000, "{json}");
    assert_eq!(stream_counts(json, 1), (50, 0), "{json}");
}

#[test]
fn a_reoffer_that_moves_the_src_and_an_src_that_moves_without_one_are_both_followed() {
    let server = Server::start(&[]);
    let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let c = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = |s: &std::net::UdpSocket| s.local_addr().expect("addr").port();
    let call = start_call(&server, "moving", &offer_from(0, [port(&a), port(&c)]));
    let to = [dest(call.ports[0]), dest(call.ports[1])];
    // Stream 1 from a, then (after a transfer) from b, announced by a re-INVITE; stream 2
    // from c, then from a new socket d, with no new offer (an SBC fail-over).
    pcmu_from(&a, to[0], 0x6000, 1, 25);
    assert_eq!(
        reoffer(&call, 2, &offer_from(0, [port(&b), port(&c)])),
        Some(200),
        "{}",
        server.log_text()
    );
    pcmu_from(&b, to[0], 0x6001, 500, 25);
    pcmu_from(&c, to[1], 0x7000, 1, 25);
    let d = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    // c falls silent; d takes over once c was quiet for a second.
    pcmu_from(&d, to[1], 0x7001, 900, 75);
    assert_eq!(
        call.client.in_dialog("BYE", &call.call_id, &call.tag, 3),
        Some(200)
    );
    let recs = server.wait_recordings(1);
    let json = &recs[0].1;
    // The media thread takes the new offer at its next wake, up to 80 ms after b's first
    // packets: those are held and tried again after it, not lost.
    assert_eq!(stream_counts(json, 0), (50, 0), "{json}");
    assert_eq!(
        json["streams"][0]["ssrcs"],
        serde_json::json!([0x6000, 0x6001]),
        "{json}"
    );
    let (packets, foreign) = stream_counts(json, 1);
    assert_eq!(packets + foreign, 100, "{json}");
    assert!(
        (40..=55).contains(&foreign),
        "a second of d before it took over: {json}"
    );
}

#[test]
fn an_srtp_rekey_by_reoffer_is_followed_and_late_packets_of_the_old_key_still_count() {
    use reel::media::srtp::{SrtpContext, SrtpKey};
    let offer_with = |tag: u8, k: [&SrtpKey; 2]| {
        let mut sdp = offer(0, Some([&k[0].to_sdes(), &k[1].to_sdes()]));
        if tag != 1 {
            sdp = sdp.replace("a=crypto:1 ", &format!("a=crypto:{tag} "));
        }
        sdp
    };
    let server = Server::start(&[]);
    let (k1, k2, k3) = (srtp_key(1), srtp_key(2), srtp_key(3));
    let call = start_call(&server, "rekey", &offer_with(1, [&k1, &k2]));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to = dest(call.ports[0]);
    let send = |ctx: &mut SrtpContext, seqs: std::ops::Range<u16>| {
        for seq in seqs {
            let mut p = vec![0x80u8, 0];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            p.extend_from_slice(&0x4242u32.to_be_bytes());
            p.extend_from_slice(&[0xff; 160]);
            ctx.protect_rtp(&mut p).expect("protect");
            sock.send_to(&p, to).expect("send");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut old = SrtpContext::new(&k1);
    send(&mut old, 1..41);
    assert_eq!(reoffer(&call, 2, &offer_with(2, [&k3, &k2])), Some(200));
    let mut new = SrtpContext::new(&k3);
    send(&mut new, 41..81);
    // Two of the old key's packets, late (sent before the switch, delayed on the way).
    send(&mut old, 81..83);
    send(&mut new, 83..100);
    assert_eq!(
        call.client.in_dialog("BYE", &call.call_id, &call.tag, 3),
        Some(200)
    );
    let recs = server.wait_recordings(1);
    let json = &recs[0].1;
    let s = &json["streams"][0];
    assert_eq!(s["packets"], 99, "{json}");
    assert_eq!(s["srtp_failures"], 0, "{json}");
}

#[test]
fn a_reoffer_that_changes_the_telephone_event_type_is_followed() {
    let server = Server::start(&[]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = sock.local_addr().expect("addr").port();
    let call = start_call(&server, "te-change", &offer_from(0, [port, 30002]));
    let to = dest(call.ports[0]);
    pcmu_from(&sock, to, 0x5151, 1, 25);
    let moved = offer_from(0, [port, 30002])
        .replace(" 0 101\r\n", " 0 96\r\n")
        .replace("a=rtpmap:101 ", "a=rtpmap:96 ");
    assert!(moved.contains("rtpmap:96 telephone-event"), "{moved}");
    assert_eq!(reoffer(&call, 2, &moved), Some(200));
    // Digit 7 as RFC 4733 events of the new type (the last three carry the end bit), in
    // the timestamp slot after packet 25, then more audio.
    for (i, end) in [false, false, false, true, true, true]
        .into_iter()
        .enumerate()
    {
        let seq = 26 + i as u16;
        let mut p = vec![0x80u8, 96 | if i == 0 { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(26u32 * 160).to_be_bytes());
        p.extend_from_slice(&0x5151u32.to_be_bytes());
        let duration = 160 * (i as u16 + 1).min(4);
        p.extend_from_slice(&[7, if end { 0x80 | 10 } else { 10 }]);
        p.extend_from_slice(&duration.to_be_bytes());
        sock.send_to(&p, to).expect("send");
        std::thread::sleep(Duration::from_millis(20));
    }
    pcmu_from(&sock, to, 0x5151, 32, 25);
    assert_eq!(
        call.client.in_dialog("BYE", &call.call_id, &call.tag, 3),
        Some(200)
    );
    let recs = server.wait_recordings(1);
    let json = &recs[0].1;
    let digits: Vec<&str> = json["streams"][0]["dtmf"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["digit"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(digits, vec!["7"], "{json}");
    assert_eq!(json["streams"][0]["foreign"], 0, "{json}");
}
