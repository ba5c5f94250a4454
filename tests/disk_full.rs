//! Out of disk: new sessions get 503 with Retry-After while free space is low, the active
//! call goes on, and admission comes back when space does. Runs on a small tmpfs this test
//! mounts itself (needs root; skipped, saying why, where mounting is not allowed).

mod common;

use std::process::Command;
use std::time::Duration;

use common::client::UdpClient;
use common::media::{end_call, offer, recorded_packets, send, start_call, two_tones};
use common::server::Server;
use common::sim::{request, siprec_invite, to_tag};

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// An 80 MiB tmpfs in a temporary folder, unmounted on drop; `None` (the caller skips, saying
/// why) where mounting is not allowed.
fn small_disk() -> Option<(tempfile::TempDir, Tmpfs)> {
    let base = tempfile::tempdir().expect("tempdir");
    let mnt = base.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=80m", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => Some((base, Tmpfs(mnt))),
        _ => {
            eprintln!("skipped: cannot mount a tmpfs here (needs root and mount rights)");
            None
        }
    }
}

#[test]
fn low_disk_refuses_new_sessions_and_recovers() {
    let Some((_base, disk)) = small_disk() else {
        return;
    };
    let mnt = disk.0.clone();
    let data = mnt.join("data");
    let mut server = Server::start(&["--data-dir", data.to_str().expect("utf-8 path")]);
    let client = UdpClient::new(server.sip_port);
    client.send(siprec_invite("before", "z9hG4bK-before-1").as_bytes());
    let ok = client
        .response(200, Duration::from_secs(5))
        .expect("answer");
    assert_eq!(ok.status, 200, "{}", server.log_text());
    let tag = to_tag(&ok);
    client.send(request("ACK", "before", "z9hG4bK-before-ack", 1, &tag, "", None, "").as_bytes());

    // Fill the disk to under the 64 MiB threshold; the check runs every second.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 40 * 1024 * 1024]).expect("fill");
    std::thread::sleep(Duration::from_millis(1500));
    client.send(siprec_invite("during", "z9hG4bK-during-1").as_bytes());
    let busy = client
        .response(200, Duration::from_secs(5))
        .expect("answer");
    assert_eq!(busy.status, 503, "{} {}", busy.reason, server.log_text());
    assert!(busy.headers.get("Retry-After").is_some());
    // ACK the 503 (same branch: it belongs to the INVITE's transaction) to stop its resends.
    client.send(
        request(
            "ACK",
            "during",
            "z9hG4bK-during-1",
            1,
            &to_tag(&busy),
            "",
            None,
            "",
        )
        .as_bytes(),
    );

    std::fs::remove_file(&filler).expect("free");
    std::thread::sleep(Duration::from_millis(1500));
    client.send(siprec_invite("after", "z9hG4bK-after-1").as_bytes());
    let again = client
        .response(200, Duration::from_secs(5))
        .expect("answer");
    assert_eq!(again.status, 200, "admission is back");
    assert_eq!(again.headers.get("Call-ID"), Some("after"));
    client.send(
        request(
            "ACK",
            "after",
            "z9hG4bK-after-ack",
            1,
            &to_tag(&again),
            "",
            None,
            "",
        )
        .as_bytes(),
    );

    assert_eq!(client.in_dialog("BYE", "before", &tag, 2), Some(200));
    assert_eq!(
        client.in_dialog("BYE", "after", &to_tag(&again), 2),
        Some(200)
    );
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    let mut found = Vec::new();
    for dir in common::server::recording_dirs(&data.join("recordings")) {
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("recording.json")).expect("read"),
        )
        .expect("json");
        found.push(json["call_id"].as_str().unwrap_or("").to_string());
    }
    found.sort();
    assert_eq!(
        found,
        vec!["after", "before"],
        "the call active during the shortage is kept"
    );
}

/// Writes into `path` until the file system refuses: not a byte left.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![0u8; chunk];
        while f.write_all(&block).is_ok() {}
    }
}

#[test]
fn a_call_that_ends_while_the_disk_is_full_is_finalized_whole_once_there_is_room() {
    let Some((_base, disk)) = small_disk() else {
        return;
    };
    let data = disk.0.join("data");
    let server = Server::start(&["--data-dir", data.to_str().expect("utf-8 path")]);
    let call = start_call(&server, "full-at-bye", &offer(0, None));
    let specs = two_tones(&call);
    // Three seconds of RTP; the disk fills a second in, so two seconds of it can only be
    // held in memory, and the BYE comes while nothing can be written.
    let sender = std::thread::spawn(move || send(specs, Duration::from_secs(3)));
    std::thread::sleep(Duration::from_millis(1000));
    let filler = disk.0.join("filler");
    fill(&filler);
    let sent = sender.join().expect("sender");
    end_call(&call);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        server.recordings().is_empty(),
        "nothing can be finalized yet"
    );
    assert!(
        server.log_text().contains("retrying in 5 s"),
        "{}",
        server.log_text()
    );
    // Each group commit failed for this journal; the log says so once, not once a second.
    assert_eq!(
        server.log_text().matches("journal write failed").count(),
        1,
        "{}",
        server.log_text()
    );

    std::fs::remove_file(&filler).expect("free");
    let recs = server.wait_recordings(1);
    assert_eq!(
        recs.len(),
        1,
        "finalized once there is room: {}",
        server.log_text()
    );
    let json = &recs[0].1;
    assert_eq!(json["call_id"], "full-at-bye");
    assert_eq!(json["state"], "complete", "{json}");
    let recorded = recorded_packets(json);
    assert_eq!(
        recorded, sent.packets_sent,
        "the packets buffered while the disk was full are in the recording"
    );
    let spool = std::fs::read_dir(data.join("spool"))
        .expect("spool")
        .count();
    assert_eq!(spool, 0, "nothing left in the spool");
}
