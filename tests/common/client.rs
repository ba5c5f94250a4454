//! A minimal SIP client over real sockets, for what SIPp cannot do here (TLS, raw bytes,
//! vendor captures replayed as they are).

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use reel::sip::framing::Frame;
use reel::sip::message::parse_message;
use reel::sip::{Message, Response, StreamFramer};

pub struct UdpClient {
    pub sock: UdpSocket,
    pub server: std::net::SocketAddr,
}

impl UdpClient {
    pub fn new(server_port: u16) -> UdpClient {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        UdpClient {
            sock,
            server: ([127, 0, 0, 1], server_port).into(),
        }
    }

    pub fn local_port(&self) -> u16 {
        self.sock.local_addr().expect("addr").port()
    }

    pub fn send(&self, data: &[u8]) {
        self.sock.send_to(data, self.server).expect("send");
    }

    /// Sends an in-dialog request with no body (BYE, INFO ...) and returns the status of its
    /// final response, if one came within 5 s.
    pub fn in_dialog(&self, method: &str, call_id: &str, tag: &str, cseq: u32) -> Option<u16> {
        let branch = format!("z9hG4bK-{call_id}-{}{cseq}", method.to_ascii_lowercase());
        let req = super::sim::request(method, call_id, &branch, cseq, tag, "", None, "");
        self.send(req.as_bytes());
        self.response(200, Duration::from_secs(5)).map(|r| r.status)
    }

    /// The next response whose status is >= `min_status`, within `timeout`.
    pub fn response(&self, min_status: u16, timeout: Duration) -> Option<Response> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            if let Ok(Message::Response(r)) = parse_message(&buf[..n])
                && r.status >= min_status
            {
                return Some(r);
            }
        }
        None
    }
}

/// Reads SIP messages from a stream until a response with status >= `min_status` arrives.
pub fn stream_response<S: Read>(
    stream: &mut S,
    framer: &mut StreamFramer,
    min_status: u16,
) -> Option<Response> {
    let mut buf = [0u8; 8192];
    loop {
        while let Ok(Some(frame)) = framer.next_frame() {
            if let Frame::Message(data) = frame
                && let Ok(Message::Response(r)) = parse_message(&data)
                && r.status >= min_status
            {
                return Some(r);
            }
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        framer.push(&buf[..n]);
    }
}

pub fn stream_send<S: Write>(stream: &mut S, text: &str) {
    stream.write_all(text.as_bytes()).expect("write");
    stream.flush().expect("flush");
}

/// Replaces the Via sent-by and the Contact of a captured request with ours, so answers come
/// back to this client; also a fresh branch.
pub fn retarget(text: &str, transport: &str, port: u16, tag: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("via:") || lower.starts_with("v:") {
            out.push_str(&format!(
                "Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK-{tag};rport\r\n"
            ));
        } else {
            out.push_str(line);
        }
    }
    out
}
