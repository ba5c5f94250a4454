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

#[test]
fn after_kill_9_the_crashed_calls_ports_are_held_back_while_their_rtp_still_arrives() {
    use common::media::{dest, offer, start_call};
    use reel::load::rtp_send::{SendConfig, Sender, StreamSpec};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};

    let metric = |server: &Server, name: &str| -> Option<u64> {
        let (_, text) = server.http_get("/metrics").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let mut server = Server::start(&[]);
    let pairs = metric(&server, "reel_rtp_ports_capacity").expect("capacity") as usize;
    let crashed: Vec<_> = (0..10)
        .map(|i| start_call(&server, &format!("stale-{i}"), &offer(0, None)))
        .collect();
    let stale: HashSet<u16> = crashed.iter().flat_map(|c| c.ports.clone()).collect();
    assert_eq!(stale.len(), 20);
    server.kill9();

    // The dead calls' SRC knows nothing: it goes on sending to the old ports through the
    // restart and the new calls.
    let stop = AtomicBool::new(false);
    let specs: Vec<StreamSpec> = stale
        .iter()
        .enumerate()
        .map(|(i, &p)| StreamSpec::new(dest(p), 0x5000 + i as u32, 300.0))
        .collect();
    let sender = Sender::new(specs, SendConfig::default()).expect("sender");
    // Stops the sender when the scope ends, a failed assertion too.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|scope| {
        let sent = scope.spawn(|| sender.run(Duration::from_secs(30), &stop));
        let _stop = StopOnDrop(&stop);
        server.restart();
        assert_eq!(
            metric(&server, "reel_rtp_ports_held_back"),
            Some(20),
            "{}",
            server.log_text()
        );
        // Every pair that is not held back, and then some: none of the first calls may get
        // a port the dead calls' RTP still reaches.
        let free_calls = (pairs - 20) / 2;
        let mut new_calls = Vec::new();
        for i in 0..free_calls {
            let call = start_call(&server, &format!("fresh-{i}"), &offer(0, None));
            for p in &call.ports {
                assert!(!stale.contains(p), "call {i} got held-back port {p}");
            }
            new_calls.push(call);
        }
        // With nothing else left, a held-back pair goes out rather than a 503.
        let last = start_call(&server, "fresh-last", &offer(0, None));
        assert!(
            last.ports.iter().all(|p| stale.contains(p)),
            "{:?}",
            last.ports
        );
        assert_eq!(metric(&server, "reel_rtp_ports_held_back"), Some(18));
        stop.store(true, Ordering::Relaxed);
        let report = sent.join().expect("sender");
        assert!(report.packets_sent > 0);
    });
    let recs = server.wait_recordings(10);
    assert_eq!(recs.len(), 10, "{}", server.log_text());
    assert!(recs.iter().all(|r| r.1["state"] == "partial"));
    assert!(
        recs.iter().all(
            |r| r.1["streams"]
                .as_array()
                .is_some_and(|s| s.iter().all(|s| s["rtp_port"]
                    .as_u64()
                    .is_some_and(|p| stale.contains(&(p as u16)))))
        ),
        "recording.json names each stream's port"
    );
}

/// A clean-up job (or an operator) deletes a live call's spool folder: the journal lives on in
/// the writer's open file, so the recording keeps its audio and says what was lost, instead of
/// coming out as a silent no-media recording with nothing in the log.
#[test]
fn a_spool_folder_deleted_during_the_call_is_restored_from_the_open_journal() {
    use common::media::{end_call, offer, recorded_packets, send, start_call, two_tones};
    let server = Server::start(&[]);
    let call = start_call(&server, "deleted", &offer(0, None));
    let specs = two_tones(&call);
    let sender = std::thread::spawn(move || send(specs, Duration::from_secs(3)));
    std::thread::sleep(Duration::from_millis(1500));
    let spool = server.data().join("spool");
    let dirs: Vec<_> = std::fs::read_dir(&spool)
        .expect("spool")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    std::fs::remove_dir_all(&dirs[0]).expect("delete the live call's folder");
    let sent = sender.join().expect("sender");
    end_call(&call);
    let recs = server.wait_recordings(1);
    let json = &recs[0].1;
    assert_eq!(json["state"], "complete", "{json}");
    let recorded = recorded_packets(json);
    assert_eq!(recorded, sent.packets_sent, "{json}");
    let warnings = json["warnings"].to_string();
    assert!(warnings.contains("spool folder was deleted"), "{warnings}");
    assert!(
        server
            .log_text()
            .contains("spool folder was deleted during the call"),
        "{}",
        server.log_text()
    );
}
