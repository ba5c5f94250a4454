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
