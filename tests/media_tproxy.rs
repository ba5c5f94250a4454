//! TPROXY mode (`media.tproxy_port`): each media thread receives its share of the RTP port
//! range on one socket, behind the nftables rules the server prints at start, and routes each
//! datagram by its original destination port. Runs in a private network namespace of its own
//! (the rules never touch the host's), on both receive backends.

mod common;

use std::net::{Ipv6Addr, SocketAddr};
use std::process::Command;

use common::media::*;
use common::netns::{private_netns, set_reel_rules};
use common::server::Server;
use reel::load::rtp_send::StreamSpec;
use reel::media::probe::probe_uring;

const TONES: [f32; 2] = [440.0, 1000.0];
const TPROXY_PORT: u16 = 33000;

/// The `nft add rule ...` lines the server logged, installed as they are (in place of an
/// earlier server's).
fn install_rules(server: &Server) -> usize {
    let log = server.log_text();
    let rules: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("TPROXY mode expects: nft ").nth(1))
        .map(|r| r.trim_end_matches('"').trim())
        .collect();
    set_reel_rules(&rules).expect("nft rules from the server's log");
    rules.len()
}

fn metric(server: &Server, name: &str) -> u64 {
    let (status, text) = server.http_get("/metrics").expect("metrics");
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// How a call's media reaches the server.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// The server's nftables rules installed: everything through the shared socket.
    Tproxy,
    /// No rules: every datagram reaches the stream's own socket; still recorded, but
    /// counted as a bypass and logged.
    NoRule,
    /// Rules installed, stream 2 sent over IPv6 (which the IPv4 rule does not take): it
    /// reaches its stream's own socket and is recorded; stream 1 comes through the rule.
    Ipv6Stream2,
}

fn record_one_call(backend: &str, path: Path) {
    let config = format!("[media]\nthreads = 2\ntproxy_port = {TPROXY_PORT}\n");
    let server = Server::start_with(Some(&config), &["--io-backend", backend]);
    if path != Path::NoRule {
        assert_eq!(install_rules(&server), 2, "one rule per media thread");
    }
    let call = start_call(
        &server,
        &format!("tproxy-{backend}-{path:?}"),
        &offer(0, None),
    );
    let dest2 = match path {
        Path::Ipv6Stream2 => SocketAddr::from((Ipv6Addr::LOCALHOST, call.ports[1])),
        _ => dest(call.ports[1]),
    };
    let specs = vec![
        StreamSpec::new(dest(call.ports[0]), 0x1111_0001, TONES[0]),
        StreamSpec::new(dest2, 0x2222_0002, TONES[1]),
    ];
    // A stranger on stream 2's port (counted as foreign) and a datagram to a port of the
    // range that no stream holds (counted as unrouted): neither is recorded.
    // Pairs start at random in the range: take a port of a pair the call does not hold.
    let idle_port = (server.rtp.0..=server.rtp.1)
        .rev()
        .find(|p| !call.ports.iter().any(|c| c / 2 == p / 2))
        .expect("a free pair in the range");
    let report = send_with_stranger(specs, &[(call.ports[1], 20), (idle_port, 7)]);
    assert!(report.packets_sent >= 180, "{report:?}");
    end_call(&call);
    let recs = server.wait_recordings(1);
    // Read once the call is over: by then its media thread has taken every datagram.
    let bypass = metric(&server, "reel_media_tproxy_bypass_total");
    let unrouted = metric(&server, "reel_media_unrouted_total");
    let logged = server
        .log_text()
        .contains("RTP reached a stream's own socket, not the shared one");
    match path {
        Path::Tproxy => {
            assert_eq!(unrouted, 7, "{backend}");
            assert_eq!(bypass, 0, "{backend}: all through the shared socket");
            assert!(!logged, "{backend}: no bypass, no warning");
        }
        Path::Ipv6Stream2 => {
            assert_eq!(unrouted, 7, "{backend}");
            assert_eq!(
                bypass, report.per_stream[1].packets,
                "{backend}: stream 2 only"
            );
            assert!(logged, "{backend}: the bypass is logged");
        }
        Path::NoRule => {
            // The stranger's 20 reach the stream's socket too (then dropped as foreign);
            // the idle port has no socket at all.
            assert_eq!(unrouted, 0, "{backend}");
            assert_eq!(bypass, report.packets_sent + 20, "{backend}");
            assert!(logged, "{backend}: the missing rule is logged");
        }
    }
    let (dir, json) = &recs[0];
    assert_eq!(json["state"], "complete", "{backend}: {json}");
    let streams = json["streams"].as_array().expect("streams");
    let recorded: u64 = streams.iter().filter_map(|s| s["packets"].as_u64()).sum();
    assert_eq!(
        recorded, report.packets_sent,
        "{backend}: every packet sent is recorded"
    );
    let foreign: u64 = streams.iter().filter_map(|s| s["foreign"].as_u64()).sum();
    assert_eq!(foreign, 20, "{backend}: {json}");
    let seconds = check_tone_channels(dir, &TONES);
    assert!((1.8..2.6).contains(&seconds), "{backend}: {seconds} s");
}

#[test]
fn tproxy_mode_records_each_party_on_its_channel_through_one_socket_per_thread_and_without_the_rule_too()
 {
    if !sox_available() {
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipped: nft (nftables) is not installed; .ci/run installs it");
        return;
    }
    let outcome = std::thread::spawn(|| -> Result<(), String> {
        private_netns()?;
        let mut backends = vec!["epoll"];
        match probe_uring() {
            Ok(_) => backends.push("uring"),
            Err(e) => eprintln!("uring variant skipped: {e}"),
        }
        for backend in &backends {
            record_one_call(backend, Path::Tproxy);
        }
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            for backend in &backends {
                record_one_call(backend, Path::Ipv6Stream2);
            }
        } else {
            eprintln!("IPv6 case skipped: no ::1 in this network namespace");
        }
        // Without the rules (flushed here), as when an operator has not installed them yet.
        set_reel_rules::<&str>(&[]).expect("nft flush");
        for backend in &backends {
            record_one_call(backend, Path::NoRule);
        }
        Ok(())
    })
    .join()
    .expect("test thread");
    if let Err(why) = outcome {
        eprintln!("skipped: no private network namespace here: {why}");
    }
}
