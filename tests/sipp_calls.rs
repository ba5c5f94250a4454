//! SIPp as the SIPREC client against the real `reel serve`, over UDP and TCP. (Debian's SIPp
//! is built without TLS; `tests/tls.rs` drives TLS with a Rust client instead.)

mod common;

use common::server::{Server, sipp, sipp_available};

fn basic_call(transport: &str) {
    if !sipp_available() {
        return;
    }
    let server = Server::start(&[]);
    let out = sipp(&server, "basic_call.xml", transport, &[]);
    assert!(out.status.success(), "basic call over {transport} failed");
    let recs = server.wait_recordings(1);
    assert_eq!(recs.len(), 1, "one recording folder");
    let (dir, json) = &recs[0];
    assert_eq!(json["state"], "no-media");
    assert!(json["call_id"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(
        json["duration_ms"].as_u64().is_some_and(|d| d >= 900),
        "{json}"
    );
    let participants = json["participants"].as_array().expect("participants");
    let aors: Vec<&str> = participants
        .iter()
        .filter_map(|p| p["aor"].as_str())
        .collect();
    assert_eq!(
        aors,
        vec!["sip:alice@example.com", "sip:bob@example.com"],
        "{json}"
    );
    let streams = json["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[0]["label"], "1");
    assert_eq!(streams[0]["codec"], "PCMU");
    assert_eq!(
        streams[0]["participant"], participants[0]["id"],
        "channel 0 is the first participant"
    );
    for file in json["files"].as_array().expect("files") {
        let path = dir.join(file["path"].as_str().expect("path"));
        let bytes = std::fs::read(&path).expect("listed file exists");
        assert_eq!(file["bytes"].as_u64(), Some(bytes.len() as u64));
        use sha2::Digest;
        assert_eq!(
            file["sha256"].as_str(),
            Some(hex::encode(sha2::Sha256::digest(&bytes)).as_str())
        );
    }
    assert!(dir.join("metadata.xml").exists());
    assert!(dir.join("audio.wav").exists());
}

#[test]
fn basic_call_over_udp() {
    basic_call("u1");
}

#[test]
fn basic_call_over_tcp() {
    basic_call("t1");
}

fn scenario_records(scenario: &str, transport: &str) -> serde_json::Value {
    let server = Server::start(&[]);
    let out = sipp(&server, scenario, transport, &[]);
    assert!(out.status.success(), "{scenario} over {transport} failed");
    let recs = server.wait_recordings(1);
    assert_eq!(recs.len(), 1, "{scenario}: one recording");
    recs[0].1.clone()
}

#[test]
fn reinvite_hold_resume_merges_metadata_over_udp_and_tcp() {
    if !sipp_available() {
        return;
    }
    for transport in ["u1", "t1"] {
        let json = scenario_records("reinvite_hold_resume.xml", transport);
        let aors: Vec<&str> = json["participants"]
            .as_array()
            .expect("p")
            .iter()
            .filter_map(|p| p["aor"].as_str())
            .collect();
        assert!(
            aors.contains(&"sip:carol@example.com"),
            "partial metadata merged: {json}"
        );
        assert_eq!(json["streams"].as_array().expect("s").len(), 2);
    }
}

#[test]
fn a_sloppy_src_script_is_recorded_and_ended_by_its_bye_over_udp_and_tcp() {
    if !sipp_available() {
        return;
    }
    // ACK with a made-up CSeq number, ACK and BYE whose CSeq names INVITE, BYE without the
    // To tag: as hand-written SRC scripts in the field send them (tests/sipp/sloppy_src.xml).
    for transport in ["u1", "t1"] {
        let json = scenario_records("sloppy_src.xml", transport);
        assert_eq!(json["end_reason"], "bye", "{transport}: {json}");
        // The script sends no RTP: a recording, ended at its BYE, of one stream.
        assert_eq!(json["state"], "no-media", "{transport}: {json}");
        assert_eq!(json["streams"].as_array().expect("s").len(), 1, "{json}");
        let ms = json["duration_ms"].as_u64().expect("duration_ms");
        assert!(
            ms < 5000,
            "{transport}: ended by the BYE, not a timeout: {ms} ms"
        );
    }
}

#[test]
fn metadata_only_update_over_udp_and_tcp() {
    if !sipp_available() {
        return;
    }
    for transport in ["u1", "t1"] {
        let json = scenario_records("update_metadata.xml", transport);
        assert_eq!(
            json["participants"].as_array().expect("p").len(),
            2,
            "{json}"
        );
    }
}

#[test]
fn options_answered_over_udp_and_tcp() {
    if !sipp_available() {
        return;
    }
    let server = Server::start(&[]);
    for transport in ["u1", "t1"] {
        assert!(
            sipp(&server, "options.xml", transport, &[])
                .status
                .success(),
            "{transport}"
        );
    }
}

#[test]
fn cancel_gets_487_or_a_clean_call() {
    if !sipp_available() {
        return;
    }
    let server = Server::start(&[]);
    for transport in ["u1", "t1"] {
        assert!(
            sipp(&server, "cancel.xml", transport, &[]).status.success(),
            "{transport}"
        );
    }
    // Whichever way the race went, no session is left behind.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_, metrics) = server.http_get("/metrics").expect("metrics");
    assert!(metrics.contains("reel_sessions_active 0"), "{metrics}");
}

#[test]
fn malformed_requests_get_documented_statuses_while_a_call_goes_on() {
    if !sipp_available() {
        return;
    }
    let server = Server::start(&[]);
    for transport in ["u1", "t1"] {
        // A good call runs beside the bad requests and must not notice them.
        let good = std::thread::scope(|scope| {
            let good = scope.spawn(|| sipp(&server, "basic_call.xml", transport, &[]));
            let bad = sipp(&server, "malformed.xml", transport, &[]);
            (bad, good.join().expect("sipp thread"))
        });
        let (bad, good) = good;
        assert!(bad.status.success(), "malformed scenario over {transport}");
        assert!(
            good.status.success(),
            "the good call over {transport} was disturbed"
        );
    }
    assert_eq!(server.wait_recordings(2).len(), 2);
}
