//! A whole recorder without sockets: a fake port host, virtual time, and an SRC that speaks
//! SIP text. Storage acknowledgements are given by the test (or automatically).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use reel::control::{MediaHost, Recorder, RecorderConfig, StorageOp};
use reel::sip::{Flow, Message, Request, Response, Transport};

pub struct FakeHost {
    pub next: u16,
    pub limit: usize,
    pub in_use: std::rc::Rc<std::cell::RefCell<BTreeSet<u16>>>,
    pub started: std::rc::Rc<std::cell::RefCell<Vec<(u16, reel::control::recorder::MediaSpec)>>>,
    pub updated: Updates,
}

/// What the recorder asked the media path to change: (port, new spec, relearn).
pub type Updates =
    std::rc::Rc<std::cell::RefCell<Vec<(u16, reel::control::recorder::MediaSpec, bool)>>>;

impl MediaHost for FakeHost {
    fn allocate_port(&mut self) -> Option<u16> {
        if self.in_use.borrow().len() >= self.limit {
            return None;
        }
        let p = self.next;
        self.next += 2;
        self.in_use.borrow_mut().insert(p);
        Some(p)
    }
    fn release_port(&mut self, port: u16) {
        assert!(
            self.in_use.borrow_mut().remove(&port),
            "port {port} released twice"
        );
    }
    fn start_stream(&mut self, port: u16, spec: reel::control::recorder::MediaSpec) {
        assert!(
            self.in_use.borrow().contains(&port),
            "started port {port} is allocated"
        );
        self.started.borrow_mut().push((port, spec));
    }
    fn update_stream(
        &mut self,
        port: u16,
        spec: reel::control::recorder::MediaSpec,
        relearn: bool,
    ) {
        assert!(
            self.in_use.borrow().contains(&port),
            "updated port {port} is allocated"
        );
        self.updated.borrow_mut().push((port, spec, relearn));
    }
    fn media_ip(&mut self, _flow: &Flow) -> IpAddr {
        "192.0.2.10".parse().expect("ip")
    }
}

pub struct Sim {
    pub rec: Recorder,
    pub now: Instant,
    pub wall: SystemTime,
    pub sent: Vec<(Flow, Message)>,
    pub storage: Vec<StorageOp>,
    /// Begin ops not yet acknowledged (when `auto_store` is off).
    pub pending_begin: Vec<reel::control::SessionKey>,
    pub auto_store: bool,
    pub ports: std::rc::Rc<std::cell::RefCell<BTreeSet<u16>>>,
    pub started: std::rc::Rc<std::cell::RefCell<Vec<(u16, reel::control::recorder::MediaSpec)>>>,
    pub updated: Updates,
    pub flow: Flow,
}

impl Sim {
    pub fn new() -> Sim {
        Sim::with(RecorderConfig::default(), 1000)
    }

    pub fn with(config: RecorderConfig, port_limit: usize) -> Sim {
        let ports = std::rc::Rc::new(std::cell::RefCell::new(BTreeSet::new()));
        let started = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let updated: Updates = Default::default();
        let host = FakeHost {
            next: 20000,
            limit: port_limit,
            in_use: ports.clone(),
            started: started.clone(),
            updated: updated.clone(),
        };
        Sim {
            rec: Recorder::new(config, Box::new(host), 7),
            now: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            sent: Vec::new(),
            storage: Vec::new(),
            pending_begin: Vec::new(),
            auto_store: true,
            ports,
            started,
            updated,
            flow: Flow {
                transport: Transport::Udp,
                local: "192.0.2.10:5060".parse().expect("addr"),
                remote: "198.51.100.7:5070".parse().expect("addr"),
                conn: None,
            },
        }
    }

    pub fn send(&mut self, text: &str) {
        let data = text.replace("\r\n", "\n").replace('\n', "\r\n");
        self.rec
            .handle_message(self.now, self.wall, self.flow, data.as_bytes());
        self.drain();
    }

    pub fn send_bytes(&mut self, data: &[u8]) {
        self.rec
            .handle_message(self.now, self.wall, self.flow, data);
        self.drain();
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.wall += d;
        self.rec.handle_timeout(self.now, self.wall);
        self.drain();
    }

    /// Runs timers until `until` passes, one deadline at a time.
    pub fn run_for(&mut self, total: Duration) {
        let end = self.now + total;
        let mut guard = 0;
        while let Some(t) = self.rec.poll_timeout() {
            if t > end {
                break;
            }
            guard += 1;
            assert!(guard < 100_000, "timer livelock");
            if t > self.now {
                self.wall += t - self.now;
                self.now = t;
            }
            self.rec.handle_timeout(self.now, self.wall);
            self.drain();
        }
        if end > self.now {
            self.wall += end - self.now;
            self.now = end;
        }
    }

    pub fn ack_storage(&mut self, ok: bool) {
        let keys: Vec<_> = self.pending_begin.drain(..).collect();
        for k in keys {
            let r = if ok {
                Ok(())
            } else {
                Err("disk on fire".to_string())
            };
            self.rec.handle_storage(self.now, self.wall, k, r);
        }
        self.drain();
    }

    pub fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.rec.poll_transmit() {
                let msg = reel::sip::message::parse_message(&t.data).expect("Reel sends valid SIP");
                self.sent.push((t.flow, msg));
                progressed = true;
            }
            while let Some(op) = self.rec.poll_storage() {
                if let StorageOp::Begin { session, .. } = &op {
                    self.pending_begin.push(*session);
                }
                self.storage.push(op);
                progressed = true;
            }
            if self.auto_store && !self.pending_begin.is_empty() {
                self.ack_storage(true);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }

    pub fn responses(&mut self) -> Vec<Response> {
        let mut out = Vec::new();
        self.sent.retain(|(_, m)| match m {
            Message::Response(r) => {
                out.push(r.clone());
                false
            }
            _ => true,
        });
        out
    }

    pub fn requests(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        self.sent.retain(|(_, m)| match m {
            Message::Request(r) => {
                out.push(r.clone());
                false
            }
            _ => true,
        });
        out
    }

    /// The final responses (>= 200) sent so far, taken.
    pub fn finals(&mut self) -> Vec<Response> {
        self.responses()
            .into_iter()
            .filter(|r| r.status >= 200)
            .collect()
    }

    pub fn finalized(&self) -> Vec<reel::record::RecordingMeta> {
        self.storage
            .iter()
            .filter_map(|op| match op {
                StorageOp::Finalize { meta, .. } => Some(meta.clone()),
                _ => None,
            })
            .collect()
    }
}

pub const SDP_TWO_STREAMS: &str = "v=0\r
o=SRC 1 1 IN IP4 198.51.100.7\r
s=-\r
c=IN IP4 198.51.100.7\r
t=0 0\r
m=audio 30000 RTP/AVP 0 101\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:101 telephone-event/8000\r
a=label:1\r
a=sendonly\r
m=audio 30002 RTP/AVP 0 101\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:101 telephone-event/8000\r
a=label:2\r
a=sendonly\r
";

pub fn metadata(mode: &str, extra_participant: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
<datamode>{mode}</datamode>
<session session_id="c2Vzc2lvbjE="><sipSessionID>abc;remote=def</sipSessionID></session>
<participant participant_id="cGFydDE="><nameID aor="sip:alice@example.com"><name>Alice</name></nameID></participant>
<participant participant_id="cGFydDI="><nameID aor="sip:bob@example.com"><name>Bob</name></nameID></participant>
{extra_participant}
<stream stream_id="c3RyMQ==" session_id="c2Vzc2lvbjE="><label>1</label></stream>
<stream stream_id="c3RyMg==" session_id="c2Vzc2lvbjE="><label>2</label></stream>
<participantstreamassoc participant_id="cGFydDE="><send>c3RyMQ==</send><recv>c3RyMg==</recv></participantstreamassoc>
<participantstreamassoc participant_id="cGFydDI="><send>c3RyMg==</send><recv>c3RyMQ==</recv></participantstreamassoc>
</recording>
"#
    )
}

pub fn multipart(sdp: &str, xml: &str) -> String {
    format!(
        "--BND\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--BND\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{xml}\r\n--BND--\r\n"
    )
}

/// A request from the SRC. `to_tag` empty for out-of-dialog requests. (Eight plain arguments
/// read better at the call sites than a builder would.)
#[allow(clippy::too_many_arguments)]
pub fn request(
    method: &str,
    call_id: &str,
    branch: &str,
    cseq: u32,
    to_tag: &str,
    extra_headers: &str,
    content_type: Option<&str>,
    body: &str,
) -> String {
    let to = if to_tag.is_empty() {
        "<sip:srs@192.0.2.10>".to_string()
    } else {
        format!("<sip:srs@192.0.2.10>;tag={to_tag}")
    };
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    let cseq_method = if method == "ACK" { "ACK" } else { method };
    format!(
        "{method} sip:srs@192.0.2.10:5060 SIP/2.0\r
Via: SIP/2.0/UDP 198.51.100.7:5070;branch={branch};rport\r
Max-Forwards: 70\r
From: \"SRC\" <sip:src@198.51.100.7>;tag=srctag1\r
To: {to}\r
Call-ID: {call_id}\r
CSeq: {cseq} {cseq_method}\r
Contact: <sip:src@198.51.100.7:5070>;+sip.src\r
{extra_headers}{ct}Content-Length: {}\r
\r
{body}",
        body.len()
    )
}

pub fn siprec_invite(call_id: &str, branch: &str) -> String {
    siprec_invite_with_metadata(call_id, branch, &metadata("complete", ""))
}

/// [`siprec_invite`] with this metadata document.
pub fn siprec_invite_with_metadata(call_id: &str, branch: &str, xml: &str) -> String {
    request(
        "INVITE",
        call_id,
        branch,
        1,
        "",
        "Require: siprec\r\nSupported: timer\r\n",
        Some("multipart/mixed;boundary=BND"),
        &multipart(SDP_TWO_STREAMS, xml),
    )
}

/// The To tag of a response.
pub fn to_tag(resp: &Response) -> String {
    let to = resp.headers.get("To").expect("To");
    reel::sip::NameAddr::parse(to)
        .expect("To parses")
        .tag()
        .expect("tag")
        .to_string()
}

pub fn body(resp: &Response) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}
