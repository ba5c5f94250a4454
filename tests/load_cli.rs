//! `reel load` against a real `reel serve`: calls over UDP and TCP are recorded with every
//! packet it says it sent, each flavour and codec lands with both participants and the right
//! tone on each channel, hold is silence in the middle, 503 and dead targets fail (and fail
//! over), and bad arguments exit 2 naming the flag.
//!
//! Timing is never asserted: a bound only catches a hang.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::media::{channel, dominant, sox_available, wav_info};
use common::server::{Server, reel_bin};
use serde_json::Value;

/// Stream 0 (caller, channel 0) and stream 1 (callee, channel 1) tones of `reel load`.
const TONES: [f32; 2] = [400.0, 1000.0];

/// Runs `reel load ARGS --json --quiet` to its end (bounded) and parses its last line.
fn load(args: &[&str]) -> (Output, Value) {
    let child = Command::new(reel_bin())
        .arg("load")
        .args(args)
        .args(["--json", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start reel load");
    common::load::finish(child)
}

fn target(server: &Server) -> String {
    format!("127.0.0.1:{}", server.sip_port)
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {v}"))
}

/// Every recording has two streams, no loss, both participants with AoRs and no warnings;
/// returns the packets summed over all of them.
fn check_recordings(recs: &[(std::path::PathBuf, Value)]) -> u64 {
    let mut packets = 0;
    for (_, r) in recs {
        assert_eq!(r["state"], "complete", "{r}");
        let streams = r["streams"].as_array().expect("streams");
        assert_eq!(streams.len(), 2, "{r}");
        for s in streams {
            packets += s["packets"].as_u64().expect("packets");
            assert_eq!(s["lost"], 0, "{r}");
            assert!(s["participant"].is_string(), "stream has its sender: {r}");
        }
        let aors: Vec<&str> = r["participants"]
            .as_array()
            .expect("participants")
            .iter()
            .filter_map(|p| p["aor"].as_str())
            .collect();
        assert!(
            aors.iter().any(|a| a.contains("caller.example.com"))
                && aors.iter().any(|a| a.contains("callee.example.net")),
            "both participants: {r}"
        );
        // Warnings about the metadata (labels, senders) would mean a dialect is wrong; an
        // ignored extra part (CUBE's application/gtd) is the recorder's note, not a problem.
        let metadata_warnings = r["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .filter(|w| {
                let w = w.as_str().unwrap_or("");
                w.contains("label") || w.contains("participant") || w.contains("stream")
            })
            .count();
        assert_eq!(metadata_warnings, 0, "no metadata warnings: {r}");
    }
    packets
}

fn four_calls(transport: &str) {
    let server = Server::start(&[]);
    let (out, json) = load(&[
        "--target",
        &target(&server),
        "--calls",
        "4",
        "--concurrency",
        "4",
        "--duration-s",
        "2",
        "--transport",
        transport,
    ]);
    assert!(out.status.success(), "{json}");
    assert_eq!(num(&json, "calls_ok"), 4, "{json}");
    assert_eq!(num(&json, "calls_failed"), 0, "{json}");
    assert_eq!(json["responses"]["200"], 4, "{json}");
    assert_eq!(json["by_target"][target(&server)], 4, "{json}");
    assert_eq!(num(&json, "bye_ok"), 4, "{json}");
    for k in ["p50", "p99", "max"] {
        assert!(json["setup_ms"][k].as_f64().is_some(), "{json}");
    }
    let sent = num(&json, "rtp_packets_sent");
    // 4 calls x 2 streams x about 100 packets in 2 s.
    assert!(sent > 600, "{json}");
    let recs = server.wait_recordings(4);
    assert_eq!(recs.len(), 4);
    assert_eq!(
        check_recordings(&recs),
        sent,
        "zero loss on loopback: {json}"
    );
}

#[test]
fn packets_sent_right_before_the_bye_are_recorded() {
    // Real SRCs send BYE right after their last RTP packet, while the recorder's media
    // thread may be asleep between wakes: what was queued before the BYE must still go in.
    let server = Server::start(&[]);
    let (out, json) = load(&[
        "--target",
        &target(&server),
        "--calls",
        "8",
        "--duration-s",
        "1",
        "--bye-delay-ms",
        "0",
    ]);
    assert!(out.status.success(), "{json}");
    assert_eq!(num(&json, "calls_ok"), 8, "{json}");
    let recs = server.wait_recordings(8);
    assert_eq!(recs.len(), 8);
    assert_eq!(
        check_recordings(&recs),
        num(&json, "rtp_packets_sent"),
        "every packet sent before the BYE is recorded: {json}"
    );
}

#[test]
fn udp_calls_are_recorded_with_every_packet_sent() {
    four_calls("udp");
}

#[test]
fn tcp_calls_are_recorded_with_every_packet_sent() {
    four_calls("tcp");
}

/// The dominant tone of `secs` of channel `ch` starting at `from`.
fn tone_at(wav: &Path, ch: usize, rate: u32, from: f64, secs: f64) -> f32 {
    let s = channel(wav, ch, rate);
    let a = ((from * f64::from(rate)) as usize).min(s.len());
    let b = (((from + secs) * f64::from(rate)) as usize).min(s.len());
    dominant(&s[a..b], &TONES, rate)
}

fn rms(samples: &[i16]) -> f64 {
    let n = samples.len().max(1) as f64;
    (samples.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n).sqrt()
}

#[test]
fn every_flavour_and_codec_is_recorded_with_tones_on_their_channels() {
    if !sox_available() {
        return;
    }
    let server = Server::start(&[]);
    let runs = [
        ("rfc7865", "PCMU"),
        ("broadworks", "PCMA"),
        ("acme", "G722"),
        ("cube", "PCMU"),
        ("rfc7865", "G722"),
        ("cube", "PCMA"),
    ];
    for (i, (flavour, codec)) in runs.iter().enumerate() {
        let (out, json) = load(&[
            "--target",
            &target(&server),
            "--flavour",
            flavour,
            "--codec",
            codec,
            "--duration-s",
            "2",
        ]);
        assert!(out.status.success(), "{flavour} {codec}: {json}");
        assert_eq!(json["flavour"], *flavour);
        let recs = server.wait_recordings(i + 1);
        assert_eq!(recs.len(), i + 1, "{flavour} {codec}");
        let newest = recs
            .iter()
            .max_by_key(|(_, r)| r["started_at"].as_str().unwrap_or("").to_string())
            .expect("a recording");
        check_recordings(std::slice::from_ref(newest));
        let (dir, r) = newest;
        let streams = r["streams"].as_array().expect("streams");
        assert!(
            streams.iter().all(|s| s["codec"] == *codec),
            "{flavour}: {r}"
        );
        let wav = dir.join("audio.wav");
        let (channels, rate, _) = wav_info(&wav);
        assert_eq!(channels, 2, "{flavour} {codec}");
        if *codec == "G722" {
            assert_eq!(rate, 16000, "G.722 is recorded wideband");
        }
        assert_eq!(
            tone_at(&wav, 0, rate, 0.3, 1.0),
            TONES[0],
            "{flavour} {codec}"
        );
        assert_eq!(
            tone_at(&wav, 1, rate, 0.3, 1.0),
            TONES[1],
            "{flavour} {codec}"
        );
    }
}

#[test]
fn hold_is_silence_in_the_middle_third() {
    if !sox_available() {
        return;
    }
    let server = Server::start(&[]);
    let (out, json) = load(&["--target", &target(&server), "--duration-s", "3", "--hold"]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["reinvite_responses"]["200"], 2, "{json}");
    assert_eq!(num(&json, "hold_ok"), 2, "{json}");
    let recs = server.wait_recordings(1);
    assert_eq!(check_recordings(&recs), num(&json, "rtp_packets_sent"));
    let wav = recs[0].0.join("audio.wav");
    for ch in 0..2 {
        let s = channel(&wav, ch, 8000);
        let part = |a: f64, b: f64| &s[(a * 8000.0) as usize..((b * 8000.0) as usize).min(s.len())];
        assert!(
            rms(part(0.2, 0.8)) > 1000.0,
            "channel {ch}: tone before hold"
        );
        assert!(rms(part(1.2, 1.8)) < 50.0, "channel {ch}: silence on hold");
        assert!(
            rms(part(2.2, 2.8)) > 1000.0,
            "channel {ch}: tone after resume"
        );
    }
}

#[test]
fn full_recorder_answers_503_and_calls_fail() {
    let server = Server::start_with(Some("[sip]\nmax_sessions = 1\n"), &[]);
    let (out, json) = load(&[
        "--target",
        &target(&server),
        "--calls",
        "3",
        "--concurrency",
        "3",
        "--duration-s",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert!(num(&json, "calls_failed") > 0, "{json}");
    assert!(json["responses"]["503"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(
        json["failures"]["status_503"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
    assert_eq!(
        num(&json, "calls_ok") + num(&json, "calls_failed"),
        3,
        "{json}"
    );
}

/// A loopback port with nothing listening (bound, then closed).
fn dead_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

#[test]
fn dead_target_fails_instead_of_hanging() {
    for transport in ["udp", "tcp"] {
        let dead = format!("127.0.0.1:{}", dead_port());
        let (out, json) = load(&[
            "--target",
            &dead,
            "--failover-timeout-ms",
            "500",
            "--transport",
            transport,
        ]);
        assert_eq!(out.status.code(), Some(1), "{transport}: {json}");
        assert_eq!(num(&json, "calls_failed"), 1, "{transport}: {json}");
        let f = &json["failures"];
        assert!(
            f["transport"].as_u64().unwrap_or(0) + f["timeout"].as_u64().unwrap_or(0) == 1,
            "{transport}: {json}"
        );
    }
}

#[test]
fn calls_fail_over_from_a_dead_target_to_a_live_one_and_hold_it_down() {
    let server = Server::start(&[]);
    let dead = format!("127.0.0.1:{}", dead_port());
    let targets = format!("{dead},{}", target(&server));
    // One call after the other: after the first call's failover the dead target is held
    // down, so the others go straight to the live one; with no hold-down each fails over.
    for (holddown, failovers) in [("30", 1), ("0", 3)] {
        let before = server.recordings().len();
        let (out, json) = load(&[
            "--target",
            &targets,
            "--calls",
            "3",
            "--concurrency",
            "1",
            "--duration-s",
            "1",
            "--failover-timeout-ms",
            "500",
            "--holddown-s",
            holddown,
        ]);
        assert!(out.status.success(), "{json}");
        assert_eq!(num(&json, "calls_ok"), 3, "{json}");
        assert_eq!(json["by_target"][target(&server)], 3, "{json}");
        assert!(json["by_target"].get(&dead).is_none(), "{json}");
        assert_eq!(
            num(&json, "failovers"),
            failovers,
            "hold-down {holddown}: {json}"
        );
        let recs = server.wait_recordings(before + 3);
        assert_eq!(recs.len(), before + 3);
    }
}

/// `reel load ARGS` that must fail before running: exit 2 and a message naming `flag`.
fn bad_args(args: &[&str], flag: &str) {
    let out = Command::new(reel_bin())
        .arg("load")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run reel load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(flag), "{args:?} names {flag}: {stderr}");
}

#[test]
fn bad_arguments_exit_2_naming_the_flag() {
    bad_args(&["--target", "127.0.0.1:5060", "--codec", "GSM"], "--codec");
    bad_args(
        &[
            "--target",
            "127.0.0.1:5060",
            "--srv",
            "_sip._udp.example.com",
        ],
        "--srv",
    );
    bad_args(&["--calls", "1"], "--target");
    bad_args(&["--target", "not-an-address"], "--target");
    bad_args(&["--target", "127.0.0.1:5060", "--rate", "0"], "--rate");
    bad_args(
        &["--target", "127.0.0.1:5060", "--transport", "sctp"],
        "--transport",
    );
    bad_args(
        &["--target", "127.0.0.1:5060", "--flavour", "avaya"],
        "--flavour",
    );
}

#[test]
fn srv_that_cannot_be_resolved_fails_the_run_naming_the_flag() {
    // Nothing listens on the DNS port: the lookup fails (refused or timed out) and the run
    // does not start.
    let dns = format!("127.0.0.1:{}", dead_port());
    let out = Command::new(reel_bin())
        .args(["load", "--srv", "_sip._udp.example.com", "--dns", &dns])
        .stdin(Stdio::null())
        .output()
        .expect("run reel load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--srv _sip._udp.example.com"), "{stderr}");
}

#[test]
fn sigterm_ends_calls_with_bye() {
    let server = Server::start(&[]);
    let child = Command::new(reel_bin())
        .args(["load", "--target", &target(&server)])
        .args(["--calls", "2", "--duration-s", "60", "--json", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start reel load");
    // Both calls up (answered) before the signal.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.sessions_active() < 2 {
        assert!(Instant::now() < deadline, "calls did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let (_, json) = common::load::finish(child);
    assert_eq!(json["interrupted"], true, "{json}");
    assert_eq!(num(&json, "bye_ok"), 2, "{json}");
    let recs = server.wait_recordings(2);
    assert_eq!(recs.len(), 2);
    for (_, r) in &recs {
        assert!(
            r["duration_ms"].as_u64().unwrap_or(u64::MAX) < 50_000,
            "{r}"
        );
    }
    assert_eq!(check_recordings(&recs), num(&json, "rtp_packets_sent"));
}
