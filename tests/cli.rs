//! The command line contract (DESIGN §3): subcommands, exit codes, errors that name the key,
//! the start-up line naming the I/O backend.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{Server, reel_bin};

fn reel(args: &[&str]) -> std::process::Output {
    Command::new(reel_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run reel")
}

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("reel.toml");
    std::fs::write(&path, text).expect("write");
    (dir, path.display().to_string())
}

#[test]
fn check_config_prints_the_example_configuration() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reel.example.toml");
    let out = reel(&["check-config", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rtp_port") || text.contains("rtp_ports"),
        "{text}"
    );
    assert!(text.contains("data_dir"), "{text}");
}

#[test]
fn check_config_gives_the_tproxy_rules_and_stays_a_valid_configuration() {
    let (dir, path) =
        write_config("[media]\nthreads = 2\ntproxy_port = 40000\nrtp_ports = \"20000-20999\"\n");
    let out = reel(&["check-config", "--config", &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rules: Vec<&str> = text.lines().filter(|l| l.starts_with("# nft ")).collect();
    assert_eq!(
        rules,
        [
            "# nft add rule inet reel prerouting udp dport 20000-20499 tproxy ip to :40000",
            "# nft add rule inet reel prerouting udp dport 20500-20999 tproxy ip to :40001",
        ],
        "{text}"
    );
    // The printout read back as a configuration gives the same printout.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &text).expect("write");
    let out = reel(&["check-config", "--config", &again.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);
    // Default mode: no rules.
    let (_d, plain) = write_config("[media]\nthreads = 2\n");
    let out = reel(&["check-config", "--config", &plain]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("# nft"));
}

#[test]
fn unknown_key_exits_2_naming_it() {
    let (_d, path) = write_config("[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\nmax_sesions = 4\n");
    let out = reel(&["check-config", "--config", &path]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_sesions"), "{err}");
}

#[test]
fn bad_value_exits_2_naming_the_key() {
    let (_d, path) = write_config("[media]\nrtp_ports = \"30000-20000\"\n");
    let out = reel(&["serve", "--config", &path]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("media.rtp_ports"), "{err}");
}

#[test]
fn wrong_type_exits_2_naming_the_key() {
    let (_d, path) = write_config("[sip]\nmax_sessions = \"many\"\n");
    let out = reel(&["check-config", "--config", &path]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_sessions"), "{err}");
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["serve", "--rtp-ports", "banana"][..],
        &["serve", "--io-backend", "carrier-pigeon"][..],
        &["serve", "--sip", "not-an-address"][..],
        &["serve", "--no-such-flag"][..],
        &["frobnicate"][..],
    ] {
        let out = reel(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
}

#[test]
fn missing_config_file_exits_2_naming_it() {
    let out = reel(&["check-config", "--config", "/nonexistent/reel.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/reel.toml"));
}

#[test]
fn port_in_use_is_a_runtime_failure_exit_1() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(reel_bin())
        .args([
            "serve",
            "--sip",
            &format!("127.0.0.1:{port}"),
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_second_reel_on_the_same_data_dir_exits_1_and_takes_nothing_over() {
    let mut first = Server::start(&[]);
    let client = common::client::UdpClient::new(first.sip_port);
    client.send(common::sim::siprec_invite("live", "z9hG4bK-live-1").as_bytes());
    let ok = client.response(200, Duration::from_secs(5)).expect("200");
    assert_eq!(ok.status, 200);
    let (lo, hi) = common::server::free_rtp_block(20);
    let out = Command::new(reel_bin())
        .args(["serve", "--sip", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--rtp-ports", &format!("{lo}-{hi}")])
        .arg("--data-dir")
        .arg(first.data())
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another reel"), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.child.as_ref().expect("up").id())),
        "{err}"
    );
    // The live session was not "recovered" under the first one.
    assert!(first.recordings().is_empty());
    assert_eq!(first.sessions_active(), 1);
    // kill -9 drops the lock with the process: a restart on the same directory works.
    first.kill9();
    first.restart();
    assert_eq!(first.wait_recordings(1).len(), 1, "{}", first.log_text());
}

#[test]
fn start_line_names_the_backend_and_why() {
    for (flag, expect) in [("auto", None), ("epoll", Some("epoll"))] {
        let server = Server::start(&["--io-backend", flag]);
        let log = server.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("media I/O backend"))
            .expect("backend line");
        assert!(line.contains("reason"), "{line}");
        if let Some(e) = expect {
            assert!(
                line.contains(&format!("backend=\"{e}\""))
                    || line.contains(&format!("backend={e}")),
                "{line}"
            );
        }
    }
}

#[test]
fn serve_runs_on_embedded_defaults() {
    let busy = std::net::UdpSocket::bind("0.0.0.0:5060").is_err()
        || std::net::TcpListener::bind("127.0.0.1:8080").is_err();
    if busy {
        eprintln!("skipped: port 5060 or 8080 is in use here, and the defaults need both");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let mut child = Command::new(reel_bin())
        .arg("serve")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut healthy = false;
    while Instant::now() < deadline && !healthy {
        std::thread::sleep(Duration::from_millis(100));
        healthy = std::net::TcpStream::connect("127.0.0.1:8080").is_ok();
    }
    let client = common::client::UdpClient::new(5060);
    let options = common::sim::request("OPTIONS", "defaults", "z9hG4bK-def", 1, "", "", None, "")
        .replace(
            "198.51.100.7:5070",
            &format!("127.0.0.1:{}", client.local_port()),
        );
    client.send(options.as_bytes());
    let answer = client.response(200, Duration::from_secs(5));
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("wait");
    assert!(
        healthy,
        "HTTP on 127.0.0.1:8080: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(answer.map(|r| r.status), Some(200), "SIP on UDP 5060");
    assert!(dir.path().join("reel-data").is_dir(), "data in ./reel-data");
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
}
