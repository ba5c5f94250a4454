//! Out of disk: new sessions get 503 with Retry-After while free space is low, the active
//! call goes on, and admission comes back when space does. Runs on a small tmpfs this test
//! mounts itself (needs root; skipped, saying why, where mounting is not allowed).

mod common;

use std::process::Command;
use std::time::Duration;

use common::client::UdpClient;
use common::server::Server;
use common::sim::{request, siprec_invite, to_tag};

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn low_disk_refuses_new_sessions_and_recovers() {
    let base = tempfile::tempdir().expect("tempdir");
    let mnt = base.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=80m", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!("skipped: cannot mount a tmpfs here (needs root and mount rights)");
            return;
        }
    }
    let _guard = Tmpfs(mnt.clone());
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
