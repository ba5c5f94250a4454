//! Drain on SIGTERM and recovery after kill -9, against the real binary over UDP.

mod common;

use std::time::Duration;

use common::client::UdpClient;
use common::server::Server;
use common::sim::{request, siprec_invite, to_tag};

fn established(client: &UdpClient, call_id: &str) -> String {
    client.send(siprec_invite(call_id, &format!("z9hG4bK-{call_id}-1")).as_bytes());
    let ok = client.response(200, Duration::from_secs(5)).expect("200");
    assert_eq!(ok.status, 200);
    let tag = to_tag(&ok);
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
    tag
}

#[test]
fn sigterm_drains_refuses_new_calls_and_exits_0_after_the_last_bye() {
    let mut server = Server::start(&[]);
    let client = UdpClient::new(server.sip_port);
    let tag = established(&client, "drain-active");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(
            server.child.as_ref().expect("running").id() as i32,
            libc::SIGTERM,
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    client.send(siprec_invite("drain-new", "z9hG4bK-drain-new-1").as_bytes());
    let busy = client
        .response(200, Duration::from_secs(5))
        .expect("answer");
    assert_eq!(busy.status, 503);
    assert!(busy.headers.get("Retry-After").is_some());
    client.send(
        request(
            "OPTIONS",
            "drain-opt",
            "z9hG4bK-drain-opt",
            1,
            "",
            "",
            None,
            "",
        )
        .as_bytes(),
    );
    assert_eq!(
        client
            .response(200, Duration::from_secs(5))
            .map(|r| r.status),
        Some(503)
    );
    assert_eq!(server.http_get("/health").map(|r| r.0).ok(), Some(503));
    assert!(
        server
            .child
            .as_mut()
            .expect("child")
            .try_wait()
            .expect("wait")
            .is_none(),
        "still up"
    );
    assert_eq!(client.in_dialog("BYE", "drain-active", &tag, 2), Some(200));
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    let recs = server.wait_recordings(1);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].1["call_id"], "drain-active");
    assert_eq!(recs[0].1["state"], "no-media");
}

#[test]
fn kill_9_then_restart_finalizes_the_call_as_partial_and_answers_481() {
    let mut server = Server::start(&[]);
    let client = UdpClient::new(server.sip_port);
    let tag = established(&client, "crashed");
    std::thread::sleep(Duration::from_millis(500));
    server.kill9();
    assert!(server.recordings().is_empty(), "nothing finalized yet");
    server.restart();
    let recs = server.wait_recordings(1);
    assert_eq!(
        recs.len(),
        1,
        "the spooled call is finalized at start: {}",
        server.log_text()
    );
    let json = &recs[0].1;
    assert_eq!(json["call_id"], "crashed");
    assert_eq!(json["state"], "partial");
    assert_eq!(json["participants"].as_array().map(Vec::len), Some(2));
    assert_eq!(client.in_dialog("BYE", "crashed", &tag, 2), Some(481));
}

#[test]
fn a_new_call_is_answered_while_the_crash_scan_is_still_running() {
    let mut server = Server::start(&[]);
    let client = UdpClient::new(server.sip_port);
    established(&client, "left-behind");
    std::thread::sleep(Duration::from_millis(500));
    server.kill9();
    // Hold the crash scan inside this recording: its journal becomes a FIFO, and the scan's
    // read of it blocks until the test writes the journal's bytes into it.
    let spool = server.data().join("spool");
    let entry = std::fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .next()
        .expect("the crashed call's folder")
        .path();
    let journal = entry.join("journal.bin");
    let bytes = std::fs::read(&journal).expect("journal");
    std::fs::remove_file(&journal).expect("remove journal");
    let c_path = std::ffi::CString::new(journal.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo reads a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    server.restart();

    let tag = established(&client, "while-scanning");
    assert!(
        server.recordings().is_empty(),
        "the scan is still held, so the 200 came while it ran"
    );
    assert!(entry.exists(), "the crashed call is still in the spool");
    // Let the scan go on: it reads the journal and finalizes the crashed call.
    std::fs::write(&journal, &bytes).expect("write the journal into the FIFO");
    let recs = server.wait_recordings(1);
    assert_eq!(recs.len(), 1, "{}", server.log_text());
    assert_eq!(recs[0].1["call_id"], "left-behind");
    assert_eq!(recs[0].1["state"], "partial");
    assert_eq!(
        client.in_dialog("BYE", "while-scanning", &tag, 2),
        Some(200)
    );
    let recs = server.wait_recordings(2);
    assert_eq!(recs.len(), 2);
    let new = recs
        .iter()
        .find(|r| r.1["call_id"] == "while-scanning")
        .expect("the new call's recording");
    assert_eq!(new.1["end_reason"], "bye");
}
