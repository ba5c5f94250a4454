//! Real UDP and TCP sockets against `reel serve`: vendor captures replayed as they are, IPv6,
//! large datagrams, pipelined and split TCP, garbage that must not disturb anything.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::client::{UdpClient, retarget, stream_response, stream_send};
use common::server::Server;
use common::sim::{SDP_TWO_STREAMS, metadata, multipart, request, siprec_invite, to_tag};
use reel::sip::StreamFramer;

fn bye_for(invite_text: &str, tag: &str, port: u16) -> String {
    let field = |name: &str| {
        invite_text
            .lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|l| {
                l.split_once(':')
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    };
    let cseq: u32 = field("CSeq")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    format!(
        "BYE sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-bye-{tag};rport\r\nFrom: {}\r\nTo: {};tag={tag}\r\nCall-ID: {}\r\nCSeq: {} BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        field("From"),
        field("To"),
        field("Call-ID"),
        cseq + 1
    )
}

#[test]
fn every_vendor_capture_is_answered_200_and_recorded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/siprec-samples/good");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: vendor samples not found at {}", dir.display());
        return;
    };
    let server = Server::start(&[]);
    let mut n = 0;
    for (i, entry) in entries.flatten().enumerate() {
        let text =
            String::from_utf8_lossy(&std::fs::read(entry.path()).expect("read")).into_owned();
        let client = UdpClient::new(server.sip_port);
        let invite = retarget(&text, "UDP", client.local_port(), &format!("vendor{i}"));
        client.send(invite.as_bytes());
        let ok = client
            .response(200, Duration::from_secs(5))
            .expect("final answer");
        assert_eq!(
            ok.status,
            200,
            "{}: {} {:?}",
            entry.path().display(),
            ok.reason,
            ok.headers.get("Warning")
        );
        client.send(bye_for(&invite, &to_tag(&ok), client.local_port()).as_bytes());
        let done = client
            .response(200, Duration::from_secs(5))
            .expect("BYE answer");
        assert_eq!(done.status, 200, "{}", entry.path().display());
        n += 1;
    }
    assert_eq!(server.wait_recordings(n).len(), n);
}

#[test]
fn ipv6_request_is_answered_with_ipv6_sdp() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    }
    let port = common::server::free_port();
    let server = Server::start(&["--sip", &format!("[::1]:{port}")]);
    let sock = std::net::UdpSocket::bind("[::1]:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let invite = siprec_invite("v6", "z9hG4bK-v6-1")
        .replace("sip:srs@192.0.2.10:5060", &format!("sip:srs@[::1]:{port}"))
        .replace("198.51.100.7:5070", "[::1]:5070");
    sock.send_to(invite.as_bytes(), ("::1", port))
        .expect("send");
    let mut buf = vec![0u8; 65536];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut got = None;
    while std::time::Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && let Ok(reel::sip::Message::Response(r)) =
                reel::sip::message::parse_message(&buf[..n])
            && r.status >= 200
        {
            got = Some(r);
            break;
        }
    }
    let ok = got.expect("answer over IPv6");
    assert_eq!(ok.status, 200, "{}", server.log_text());
    let sdp = String::from_utf8_lossy(&ok.body);
    assert!(sdp.contains("IN IP6 ::1"), "{sdp}");
}

#[test]
fn large_invite_in_one_datagram_is_accepted() {
    let server = Server::start(&[]);
    let client = UdpClient::new(server.sip_port);
    let invite = big_invite("big", "z9hG4bK-big-1");
    assert!(invite.len() > 8000, "{}", invite.len());
    client.send(invite.as_bytes());
    let ok = client
        .response(200, Duration::from_secs(5))
        .expect("answer");
    assert_eq!(ok.status, 200);
}

/// An INVITE whose metadata names 60 participants: about 12 KB.
fn big_invite(call_id: &str, branch: &str) -> String {
    let many: String = (0..60)
        .map(|i| format!("<participant participant_id=\"p{i}\"><nameID aor=\"sip:user{i}@example.com\"><name>User number {i}</name></nameID></participant>\n"))
        .collect();
    let body = multipart(SDP_TWO_STREAMS, &metadata("complete", &many));
    request(
        "INVITE",
        call_id,
        branch,
        1,
        "",
        "Require: siprec\r\n",
        Some("multipart/mixed;boundary=BND"),
        &body,
    )
}

#[test]
fn an_over_size_message_gets_513_and_its_tcp_connection_carries_on() {
    // An SBC sends every recording session over one connection: one INVITE over the limit
    // must be answered, not cost the connection (and the other calls on it).
    let server = Server::start_with(Some("[sip]\nmax_message_bytes = 8192\n"), &[]);
    let mut tcp = TcpStream::connect(("127.0.0.1", server.sip_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut framer = StreamFramer::new(65536);
    let big = big_invite("too-big", "z9hG4bK-too-big-1").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    assert!(big.len() > 8192, "{}", big.len());
    // The head and the start of the body, then the rest in a second write.
    stream_send(&mut tcp, &big[..big.len() / 2]);
    std::thread::sleep(Duration::from_millis(50));
    stream_send(&mut tcp, &big[big.len() / 2..]);
    let answer = stream_response(&mut tcp, &mut framer, 200).expect("an answer to the big one");
    assert_eq!(answer.status, 513);
    assert_eq!(answer.headers.get("Call-ID"), Some("too-big"));
    let warning = answer.headers.get("Warning").unwrap_or_default();
    assert!(warning.contains("max_message_bytes (8192)"), "{warning}");
    // The same connection goes on: a call set up and ended on it is recorded.
    let invite =
        siprec_invite("after-big", "z9hG4bK-after-big-1").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    stream_send(&mut tcp, &invite);
    let ok = stream_response(&mut tcp, &mut framer, 200).expect("the next INVITE's answer");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers.get("Call-ID"), Some("after-big"));
    let tag = to_tag(&ok);
    let ack = request("ACK", "after-big", "z9hG4bK-ab-ack", 1, &tag, "", None, "")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let bye = request("BYE", "after-big", "z9hG4bK-ab-bye", 2, &tag, "", None, "")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    stream_send(&mut tcp, &format!("{ack}{bye}"));
    let ok = stream_response(&mut tcp, &mut framer, 200).expect("BYE answer");
    assert_eq!(ok.headers.get("CSeq"), Some("2 BYE"));
    let recordings = server.wait_recordings(1);
    assert_eq!(recordings[0].1["call_id"], "after-big");
    assert!(
        !server.log_text().contains("closing a SIP connection"),
        "{}",
        server.log_text()
    );
    // Over UDP the same INVITE is answered 513 too.
    let client = UdpClient::new(server.sip_port);
    client.send(big_invite("too-big-udp", "z9hG4bK-too-big-2").as_bytes());
    let answer = client
        .response(200, Duration::from_secs(5))
        .expect("a UDP answer");
    assert_eq!(answer.status, 513);
    assert_eq!(answer.headers.get("Call-ID"), Some("too-big-udp"));
}

#[test]
fn garbage_datagrams_do_not_disturb_a_call() {
    let server = Server::start(&[]);
    let client = UdpClient::new(server.sip_port);
    client.send(siprec_invite("steady", "z9hG4bK-steady-1").as_bytes());
    let ok = client.response(200, Duration::from_secs(5)).expect("200");
    let tag = to_tag(&ok);
    let junk = UdpClient::new(server.sip_port);
    for payload in [
        &b"\x00\x00\x00"[..],
        b"INVITE",
        b"SIP/2.0 200 OK\r\n\r\n",
        &[0xffu8; 1400],
        b"\r\n\r\n",
    ] {
        junk.send(payload);
    }
    junk.send(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK-x\r\nContent-Length: 99999\r\n\r\n");
    assert_eq!(client.in_dialog("BYE", "steady", &tag, 2), Some(200));
    assert_eq!(server.wait_recordings(1).len(), 1);
}

#[test]
fn tcp_split_and_pipelined_messages_are_framed() {
    let server = Server::start(&[]);
    let mut tcp = TcpStream::connect(("127.0.0.1", server.sip_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut framer = StreamFramer::new(65536);
    let invite =
        siprec_invite("tcp-split", "z9hG4bK-tcp-split-1").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    // Byte by byte for the first 200 bytes, then the rest.
    for b in invite.as_bytes()[..200].iter() {
        tcp.write_all(&[*b]).expect("write");
    }
    tcp.write_all(&invite.as_bytes()[200..]).expect("write");
    let ok = stream_response(&mut tcp, &mut framer, 200).expect("answer");
    assert_eq!(ok.status, 200);
    let tag = to_tag(&ok);
    // ACK and BYE in one write.
    let ack = request("ACK", "tcp-split", "z9hG4bK-tcp-ack", 1, &tag, "", None, "")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let bye = request("BYE", "tcp-split", "z9hG4bK-tcp-bye", 2, &tag, "", None, "")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    stream_send(&mut tcp, &format!("{ack}{bye}"));
    let ok = stream_response(&mut tcp, &mut framer, 200).expect("BYE answer");
    assert_eq!(ok.headers.get("CSeq"), Some("2 BYE"));
    assert_eq!(server.wait_recordings(1).len(), 1);
}

#[test]
fn a_broken_tcp_stream_closes_only_itself() {
    let server = Server::start(&[]);
    let mut bad = TcpStream::connect(("127.0.0.1", server.sip_port)).expect("connect");
    stream_send(
        &mut bad,
        "INVITE sip:x SIP/2.0\r\nContent-Length: banana\r\n\r\n",
    );
    let client = UdpClient::new(server.sip_port);
    client.send(request("OPTIONS", "after", "z9hG4bK-after", 1, "", "", None, "").as_bytes());
    assert_eq!(
        client
            .response(200, Duration::from_secs(5))
            .map(|r| r.status),
        Some(200)
    );
}

#[test]
fn metrics_and_sessions_api_reflect_a_live_call() {
    let server = Server::start(&[]);
    let client = UdpClient::new(server.sip_port);
    client.send(siprec_invite("api", "z9hG4bK-api-1").as_bytes());
    let ok = client.response(200, Duration::from_secs(5)).expect("200");
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = server.http_get("/api/sessions").expect("api");
    assert_eq!(status, 200);
    assert!(body.contains("\"call_id\":\"api\""), "{body}");
    let (_, metrics) = server.http_get("/metrics").expect("metrics");
    assert!(metrics.contains("reel_sessions_active 1"), "{metrics}");
    assert!(metrics.contains("reel_rtp_ports_in_use 2"), "{metrics}");
    assert_eq!(client.in_dialog("BYE", "api", &to_tag(&ok), 2), Some(200));
}

#[test]
fn an_api_connection_flood_is_capped_and_disturbs_no_call() {
    use std::io::Read;
    let server = Server::start(&[]);
    // Idle API connections up to the cap are held open by the server (each until its request
    // deadline); one more is closed at once, so a flood cannot take the descriptors SIP and
    // RTP need.
    let held: Vec<TcpStream> = (0..reel::driver::http::MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(
        extra.read(&mut byte).map_err(|e| e.kind()),
        Ok(0),
        "a connection over the cap is closed, not served or left hanging"
    );
    // SIP is untouched meanwhile.
    let client = UdpClient::new(server.sip_port);
    client.send(siprec_invite("flood", "z9hG4bK-flood-1").as_bytes());
    let ok = client.response(200, Duration::from_secs(5)).expect("200");
    assert_eq!(ok.status, 200);
    assert_eq!(client.in_dialog("BYE", "flood", &to_tag(&ok), 2), Some(200));
    // Connections that send no request are closed after REQUEST_DEADLINE, so the API
    // answers again while the flood's sockets are still open on our side.
    let deadline = std::time::Instant::now() + reel::driver::http::REQUEST_DEADLINE * 4;
    let mut status = 0;
    while std::time::Instant::now() < deadline {
        status = server.http_get("/health").map(|r| r.0).unwrap_or(0);
        if status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        status, 200,
        "health is back though the idle sockets stay open"
    );
    for mut idle in held {
        idle.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert_eq!(
            idle.read(&mut byte).map_err(|e| e.kind()),
            Ok(0),
            "closed by the server"
        );
    }
    assert_eq!(server.wait_recordings(1).len(), 1);
}

#[test]
fn a_stream_peer_that_never_finishes_a_message_is_closed_and_an_idle_src_is_kept() {
    use std::io::Read;
    // The limit is lowered so that one SRC's connection can start with an over-size INVITE.
    let server = Server::start_with(Some("[sip]\nmax_message_bytes = 8192\n"), &[]);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", server.sip_port)).expect("connect");
        s.set_read_timeout(Some(
            reel::driver::MESSAGE_DEADLINE + Duration::from_secs(10),
        ))
        .expect("timeout");
        s
    };
    let options = |branch: &str| {
        request("OPTIONS", "keep", branch, 1, "", "", None, "")
            .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
    };
    let mut silent = connect();
    let mut trickle = connect();
    stream_send(
        &mut trickle,
        "INVITE sip:rec@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9",
    );
    let mut src = connect();
    let mut framer = StreamFramer::new(65536);
    stream_send(&mut src, &options("z9hG4bK-keep-1"));
    assert_eq!(
        stream_response(&mut src, &mut framer, 200).map(|r| r.status),
        Some(200)
    );
    // Another SRC's first message is over the limit: answered 513, its body skipped; the
    // connection then idles like the first one's and must be kept as well.
    let mut big_src = connect();
    let mut big_framer = StreamFramer::new(65536);
    // In two writes, so that the body to skip is still due after the head was answered.
    let big = big_invite("keep-big", "z9hG4bK-keep-big").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    stream_send(&mut big_src, &big[..big.len() / 2]);
    std::thread::sleep(Duration::from_millis(100));
    stream_send(&mut big_src, &big[big.len() / 2..]);
    assert_eq!(
        stream_response(&mut big_src, &mut big_framer, 200).map(|r| r.status),
        Some(513)
    );
    let start = std::time::Instant::now();
    let mut byte = [0u8; 1];
    for (name, s) in [("silent", &mut silent), ("trickle", &mut trickle)] {
        assert_eq!(
            s.read(&mut byte).map_err(|e| e.kind()),
            Ok(0),
            "the {name} connection is closed by the server"
        );
    }
    assert!(
        start.elapsed() + Duration::from_secs(1) >= reel::driver::MESSAGE_DEADLINE,
        "not before the deadline: {:?}",
        start.elapsed()
    );
    // The SRCs' connections, idle between messages for as long, still work.
    stream_send(&mut src, &options("z9hG4bK-keep-2"));
    assert_eq!(
        stream_response(&mut src, &mut framer, 200).map(|r| r.status),
        Some(200)
    );
    stream_send(&mut big_src, &options("z9hG4bK-keep-3"));
    assert_eq!(
        stream_response(&mut big_src, &mut big_framer, 200).map(|r| r.status),
        Some(200),
        "the connection that sent the over-size INVITE is kept while idle"
    );
}

/// What home-made SRC test scripts send (a here-document piped to `nc -u`): LF line ends, a
/// hard-coded Content-Length larger than the body, no `Require: siprec`, no `+sip.src`, no
/// `a=label`. The datagram is whole, so Reel records it rather than answering 400.
#[test]
fn a_scripted_invite_with_a_miscounted_content_length_is_recorded() {
    let server = Server::start(&[]);
    let client = UdpClient::new(server.sip_port);
    let port = client.local_port();
    let body = "--b0\nContent-Type: application/sdp\n\nv=0\no=- 7 7 IN IP4 127.0.0.1\ns=-\n\
        c=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 0 8\na=rtpmap:0 PCMU/8000\na=sendonly\n\n\
        --b0\nContent-Type: application/rs-metadata+xml\n\n<?xml version=\"1.0\"?>\n\
        <recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><datamode>complete</datamode>\
        <session session_id=\"c2NyaXB0ZWQ=\"/><participant participant_id=\"cDE=\"><nameID aor=\"sip:ann@example.com\"/>\
        </participant></recording>\n--b0--\n";
    let invite = format!(
        "INVITE sip:rec@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-scripted\n\
         From: <sip:pbx@example.com>;tag=scr1\nTo: <sip:rec@127.0.0.1>\nCall-ID: scripted-1\n\
         CSeq: 1 INVITE\nContact: <sip:pbx@127.0.0.1:{port}>\nMax-Forwards: 70\n\
         Content-Type: multipart/mixed;boundary=b0\nContent-Length: {}\n\n{body}",
        body.len() + 400
    );
    client.send(invite.as_bytes());
    let ok = client
        .response(200, Duration::from_secs(5))
        .expect("answer");
    assert_eq!(
        ok.status,
        200,
        "{} {:?}",
        ok.reason,
        ok.headers.get("Warning")
    );
    client.send(bye_for(&invite, &to_tag(&ok), port).as_bytes());
    assert_eq!(
        client
            .response(200, Duration::from_secs(5))
            .map(|r| r.status),
        Some(200)
    );
    let recs = server.wait_recordings(1);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].1["call_id"], "scripted-1", "{}", recs[0].1);
}

#[test]
fn a_bye_of_reels_after_the_srcs_tcp_connection_closed_goes_to_its_contact() {
    let mut server = Server::start_with(Some("[sip]\ndrain_timeout_s = 1\n"), &[]);
    // The SRC listens on its Contact's port and connects from another (ephemeral) one.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let contact = listener.local_addr().expect("addr").port();
    let tcp = |text: String| {
        text.replace("SIP/2.0/UDP", "SIP/2.0/TCP").replace(
            "<sip:src@198.51.100.7:5070>",
            &format!("<sip:src@127.0.0.1:{contact};transport=tcp>"),
        )
    };
    let mut conn = TcpStream::connect(("127.0.0.1", server.sip_port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut framer = StreamFramer::new(65536);
    stream_send(
        &mut conn,
        &tcp(siprec_invite("tcp-gone", "z9hG4bK-tcp-gone-1")),
    );
    let ok = stream_response(&mut conn, &mut framer, 200).expect("answer");
    assert_eq!(ok.status, 200);
    let tag = to_tag(&ok);
    stream_send(
        &mut conn,
        &tcp(request(
            "ACK",
            "tcp-gone",
            "z9hG4bK-tcp-gone-ack",
            1,
            &tag,
            "",
            None,
            "",
        )),
    );
    std::thread::sleep(Duration::from_millis(200));
    drop(conn);
    std::thread::sleep(Duration::from_millis(200));
    // SIGTERM: after the 1 s drain timeout Reel ends the recording with a BYE of its own.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(
            server.child.as_ref().expect("running").id() as i32,
            libc::SIGTERM,
        );
    }
    listener.set_nonblocking(false).expect("blocking");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let got = listener.accept().ok().and_then(|(mut s, _)| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut framer = StreamFramer::new(65536);
            let mut buf = [0u8; 8192];
            loop {
                if let Ok(Some(reel::sip::framing::Frame::Message(data))) = framer.next_frame()
                    && let Ok(reel::sip::Message::Request(r)) =
                        reel::sip::message::parse_message(&data)
                {
                    let resp = reel::sip::Response::for_request(&r, 200, "OK");
                    let _ = s.write_all(&resp.encode());
                    return Some(r);
                }
                let n = std::io::Read::read(&mut s, &mut buf).ok()?;
                if n == 0 {
                    return None;
                }
                framer.push(&buf[..n]);
            }
        });
        let _ = tx.send(got);
    });
    let bye = rx
        .recv_timeout(Duration::from_secs(15))
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no request at the Contact; log:\n{}", server.log_text()));
    assert_eq!(bye.method, reel::sip::Method::Bye);
    assert_eq!(bye.headers.get("Call-ID"), Some("tcp-gone"));
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    assert_eq!(server.wait_recordings(1)[0].1["end_reason"], "shutdown");
}
