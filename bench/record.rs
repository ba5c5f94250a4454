//! Recording cost against the machine's own receive limit, in one run on one traffic shape
//! (DESIGN.md section 7).
//!
//! Traffic: N calls x 2 streams, 50 packets/s per stream (100 per call), 172-byte packets
//! (12-byte RTP header + 160 bytes of PCMU), paced in 1 ms ticks by one sender thread with
//! `sendmmsg`, for D seconds. Variants:
//!
//! - `a`: the naive io_uring multishot sink that waits for each completion (`bench/recv.rs`).
//! - `b`: the recvmmsg sink: epoll, woken on readiness, then `recvmmsg` until the sockets are
//!   empty (`bench/recv.rs` variant b); paced like a.
//! - `c`: the drain floor: queues filled first, then drained with batched waits; only the
//!   drains are timed (`bench/recv.rs`).
//! - `t`: the floor of TPROXY mode: the traffic of a, every port taken by one
//!   `IP_TRANSPARENT` socket behind an nftables TPROXY rule, polled with a media thread's own
//!   backend config (`reel::driver::media::backend_config`: 80 ms batched waits, 16,384
//!   buffers), each packet counted and dropped. Needs root: like `reel-tproxy` it moves the
//!   whole bench into a private network namespace.
//! - `reel`: the real `reel serve` (release binary) as a child process on free loopback ports
//!   with its own temporary data directory and `--io-backend uring`. N SIPREC calls are set
//!   up over UDP (INVITE with two sendonly PCMU streams labelled 1 and 2 plus RFC 7865
//!   metadata, 200, ACK) at `--setup-rate` calls/s; then `reel::load::rtp_send` sends RTP to
//!   the answered ports for D seconds; then every call gets a BYE, and the bench waits for the
//!   N recording folders and sums `streams[].packets` of each `recording.json`. Reel's CPU
//!   (utime + stime of `/proc/<pid>/stat`, in clock ticks) is sampled on the sending thread
//!   just before its first packet and just after its last, so call setup and teardown are
//!   not counted (the RTP phase starts only once reel has gone quiet after the last 200: the
//!   writer may still be creating spool entries); per-thread CPU comes from
//!   `/proc/<pid>/task/*/stat`.
//! - `reel-tproxy`: the same with `media.tproxy_port` set: its one media thread receives the
//!   whole RTP range on one TPROXY socket (the rule Reel prints at start, installed in the
//!   bench's private network namespace).
//!
//! Figures: packets recorded (or received, for a, b, c and t), loss = sent - recorded,
//! CPU-seconds per million packets (= µs per packet), calls per core (= 1e6 / (µs/pkt x 100
//! pkt/s)), and the ratios to (a) and (c). For reel also the SIP setup latency (INVITE sent to
//! its 200 received, first transmission, retransmissions included) p50 / p99 / max.
//!
//! Run: `cargo bench --bench record -- --calls 1000 --seconds 10` (variants a,b,c,reel)
//! Scaling: `cargo bench --bench record -- --sizes 100,500,1000,2000 --seconds 10`
//! Spread on a noisy machine: `--repeat 5` runs every variant five times in turn and ends
//! with one line per round and the medians.
//!
//! Setup rate at the limit: `cargo bench --bench record -- --setup-limit` starts one reel and
//! sets up bursts of calls at 100, 200, 400, ... calls/s (one second's worth each, at most
//! 3,200 calls, fewer when other processes hold ports in the range), each burst torn down with BYE and its recordings awaited before the next. A
//! burst is clean when every INVITE got a 200, the p99 setup latency stays within
//! `--setup-bound-ms` (default 250) and the burst went out at 90 % or more of its rate. At
//! the first burst that is not, the ramp takes one step back halfway to the last clean rate,
//! then stops; the highest clean rate is printed. At most
//! about three minutes.

#[path = "common/sinks.rs"]
mod sinks;

#[path = "../tests/common/sim.rs"]
mod sim;

#[path = "../tests/common/netns.rs"]
mod netns;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use reel::load::rtp_send::{SendConfig, Sender as RtpSender, StreamSpec};
use reel::media::probe::{Backend, probe_uring};
use reel::sip::{Message, NameAddr, Response};

const PKTS_PER_CALL: f64 = 100.0;

#[derive(Clone, Debug)]
struct Opts {
    calls: usize,
    seconds: u64,
    sizes: Vec<usize>,
    variants: Vec<String>,
    setup_rate: u64,
    reel_bin: PathBuf,
    batch_ms: u64,
    pin: bool,
    reel_log: String,
    setup_limit: bool,
    setup_bound_ms: u64,
    /// Rounds of every variant per size, one after the other (a, c, ..., reel, a, c, ...).
    repeat: usize,
}

fn default_reel_bin() -> PathBuf {
    // The bench binary lives in <target>/release/deps/; the server in <target>/release/.
    let from_exe = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("reel")));
    match from_exe {
        Some(p) if p.exists() => p,
        _ => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("release/reel"),
    }
}

fn parse_list<T: std::str::FromStr>(s: &str, name: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| format!("bad {name} entry: {x}"))
        })
        .collect()
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        calls: 1000,
        seconds: 10,
        sizes: Vec::new(),
        variants: vec!["a".into(), "b".into(), "c".into(), "reel".into()],
        setup_rate: 250,
        reel_bin: default_reel_bin(),
        batch_ms: 5,
        pin: true,
        reel_log: "warn".into(),
        setup_limit: false,
        setup_bound_ms: 250,
        repeat: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let num = |s: String, name: &str| s.parse::<u64>().map_err(|_| format!("bad {name}: {s}"));
        match k.as_str() {
            "--calls" => o.calls = num(val(&k)?, &k)? as usize,
            "--seconds" => o.seconds = num(val(&k)?, &k)?,
            "--setup-rate" => o.setup_rate = num(val(&k)?, &k)?,
            "--batch-ms" => o.batch_ms = num(val(&k)?, &k)?,
            "--sizes" => o.sizes = parse_list(&val(&k)?, "--sizes")?,
            "--reel-bin" => o.reel_bin = PathBuf::from(val(&k)?),
            "--reel-log" => o.reel_log = val(&k)?,
            "--no-pin" => o.pin = false,
            "--setup-limit" => o.setup_limit = true,
            "--setup-bound-ms" => o.setup_bound_ms = num(val(&k)?, &k)?,
            "--repeat" => o.repeat = num(val(&k)?, &k)?.clamp(1, 50) as usize,
            "--variants" => {
                o.variants = parse_list(&val(&k)?, "--variants")?;
                if let Some(bad) = o
                    .variants
                    .iter()
                    .find(|v| !["a", "b", "c", "t", "reel", "reel-tproxy"].contains(&v.as_str()))
                {
                    return Err(format!("unknown variant {bad} (a,b,c,t,reel,reel-tproxy)"));
                }
            }
            "--bench" => {}
            other if other.starts_with("--") => return Err(format!("unknown flag {other}")),
            _ => {}
        }
    }
    if o.sizes.is_empty() {
        o.sizes = vec![o.calls];
    }
    if o.sizes.contains(&0) || o.seconds == 0 || o.setup_rate == 0 {
        return Err("--calls/--sizes, --seconds and --setup-rate must be > 0".into());
    }
    if o.sizes.iter().any(|&n| n > 3500) {
        return Err("at most 3500 calls (the RTP port range lies in 16384-32767)".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// /proc sampling

fn clk_tck() -> u64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// (name, utime + stime in ticks) of one `/proc/.../stat` file.
fn read_stat(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

#[derive(Clone, Debug, Default)]
struct CpuSample {
    process: u64,
    /// tid -> (name, ticks)
    threads: BTreeMap<u32, (String, u64)>,
}

fn sample(pid: u32) -> CpuSample {
    let mut s = CpuSample {
        process: read_stat(Path::new(&format!("/proc/{pid}/stat"))).map_or(0, |x| x.1),
        ..CpuSample::default()
    };
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(x) = read_stat(&e.path().join("stat")) {
                s.threads.insert(tid, x);
            }
        }
    }
    s
}

/// Per thread group (media threads, writer, main, other) ticks between two samples.
fn thread_split(pid: u32, a: &CpuSample, b: &CpuSample) -> Vec<(String, u64)> {
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (name, t1)) in &b.threads {
        let t0 = a.threads.get(tid).map_or(0, |x| x.1);
        let group = if *tid == pid {
            format!("main ({name})")
        } else if name.starts_with("reel-media") || name.starts_with("reel-writer") {
            name.clone()
        } else {
            "other".to_string()
        };
        *groups.entry(group).or_default() += t1.saturating_sub(t0);
    }
    let mut v: Vec<_> = groups.into_iter().collect();
    v.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    v
}

// ---------------------------------------------------------------------------------------
// The reel child process

struct ReelProc {
    child: Option<Child>,
    dir: tempfile::TempDir,
    sip: SocketAddr,
    http: SocketAddr,
    rtp: (u16, u16),
}

impl ReelProc {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(self.dir.path().join("reel.log")).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) -> String {
        let Some(mut child) = self.child.take() else {
            return "not running".into();
        };
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return format!("exited {st}"),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return "killed after SIGTERM timeout".into();
                }
            }
        }
    }
}

impl Drop for ReelProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port free for both UDP and TCP (the SIP listener takes both).
fn free_sip_port() -> Result<u16, String> {
    for _ in 0..200 {
        let t = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let p = t.local_addr().map_err(|e| e.to_string())?.port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    Err("no free SIP port".into())
}

/// An even-started block of `len` ports in 16384-32767 (below the ephemeral range) that
/// looks free (every 7th port checked, as the tests do).
fn free_rtp_block(len: u16) -> Result<(u16, u16), String> {
    let mut lo: u32 = 16384 + (std::process::id() % 8) * 256;
    while lo + u32::from(len) <= 32767 {
        let l = lo as u16;
        if (l..l + len)
            .step_by(7)
            .all(|p| UdpSocket::bind(("0.0.0.0", p)).is_ok())
        {
            return Ok((l, l + len - 1));
        }
        lo += 512;
    }
    Err(format!("no free block of {len} RTP ports in 16384-32767"))
}

fn http_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    std::io::Write::write_all(
        &mut s,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.get(9..12).and_then(|c| c.parse().ok())
}

/// The port `reel-tproxy`'s one media thread receives the whole RTP range on.
const TPROXY_PORT: u16 = 64000;

fn start_reel(o: &Opts, calls: usize, tproxy: bool) -> Result<ReelProc, String> {
    if !o.reel_bin.exists() {
        return Err(format!(
            "{} missing: cargo build --release --bin reel",
            o.reel_bin.display()
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("reel-record-bench")
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let sip_port = free_sip_port()?;
    let http = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    // Two ports (RTP + RTCP) per stream, two streams per call, plus slack.
    let rtp = free_rtp_block((calls * 4 + 64) as u16)?;
    let mut cmd = Command::new(&o.reel_bin);
    cmd.arg("serve");
    let mut media = String::new();
    if o.pin && nproc() >= 2 {
        // Same placement as sink (a): the receiving thread on CPU 1, the sender on CPU 0.
        media.push_str("cpus = [1]\n");
    }
    if tproxy {
        if rtp.1 >= TPROXY_PORT {
            return Err(format!(
                "RTP block {rtp:?} reaches the TPROXY port {TPROXY_PORT}"
            ));
        }
        media.push_str(&format!("tproxy_port = {TPROXY_PORT}\n"));
    }
    if !media.is_empty() {
        let cfg = dir.path().join("reel.toml");
        std::fs::write(&cfg, format!("[media]\n{media}")).map_err(|e| e.to_string())?;
        cmd.arg("--config").arg(cfg);
    }
    let log = std::fs::File::create(dir.path().join("reel.log")).map_err(|e| e.to_string())?;
    cmd.args(["--sip", &format!("127.0.0.1:{sip_port}")])
        .args(["--http", &http.to_string()])
        .args(["--rtp-ports", &format!("{}-{}", rtp.0, rtp.1)])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--io-backend", "uring"])
        .env("REEL_LOG", &o.reel_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let child = cmd.spawn().map_err(|e| format!("start reel: {e}"))?;
    let mut p = ReelProc {
        child: Some(child),
        dir,
        sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
        http,
        rtp,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http_get(p.http, "/health") == Some(200) {
            if tproxy {
                // The rule reel prints at start for its one media thread (this bench runs in
                // its own network namespace, see `main`). They replace an earlier size's.
                let split = reel::driver::host::PortSplit::new(p.rtp.0, p.rtp.1, 1);
                netns::set_reel_rules(&split.nft_rules(TPROXY_PORT))?;
            }
            return Ok(p);
        }
        if let Some(Ok(Some(st))) = p.child.as_mut().map(|c| c.try_wait()) {
            p.child = None;
            return Err(format!("reel exited at start: {st}\n{}", p.log_tail()));
        }
        if Instant::now() > deadline {
            return Err(format!("reel not ready in 20 s\n{}", p.log_tail()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// SIP over one UDP socket, many calls in flight

/// Two sendonly PCMU streams labelled 1 and 2 (as `tests/common/media.rs` offers).
fn offer() -> String {
    let mut sdp =
        String::from("v=0\r\no=SRC 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n");
    for (i, label) in ["1", "2"].iter().enumerate() {
        sdp.push_str(&format!(
            "m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:{label}\r\na=sendonly\r\n",
            30000 + 2 * i
        ));
    }
    sdp
}

/// The initial SIPREC INVITE of call `id` with the multipart `body`.
fn invite_text(id: &str, body: &str) -> String {
    sim::request(
        "INVITE",
        id,
        &format!("z9hG4bK-{id}-1"),
        1,
        "",
        "Require: siprec\r\n",
        Some("multipart/mixed;boundary=BND"),
        body,
    )
}

/// An in-dialog request without a body (ACK for the 200, BYE) of call `id`.
fn in_dialog_text(method: &str, id: &str, cseq: u32, to_tag: &str) -> String {
    let branch = format!("z9hG4bK-{id}-{}", method.to_ascii_lowercase());
    sim::request(method, id, &branch, cseq, to_tag, "", None, "")
}

fn answer_ports(body: &[u8]) -> Vec<u16> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("m=audio "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[derive(Clone, Debug, Default)]
struct CallState {
    tag: String,
    ports: Vec<u16>,
}

/// Sends one request per index at `rate`/s and collects the final response of each;
/// `build(i)` gives (Call-ID, request text). Retransmits as RFC 3261 over UDP does (0.5 s,
/// doubling up to 4 s) until a provisional or final response, and gives up on an index 32 s
/// after its first send (timers B and F). Returns per index the final status (None: none) and
/// the time from its first send to that final response.
fn transact(
    sock: &UdpSocket,
    to: SocketAddr,
    n: usize,
    rate: u64,
    method: &str,
    build: &dyn Fn(usize) -> (String, String),
    on_final: &mut dyn FnMut(usize, &Response),
) -> Transacted {
    struct Pending {
        first: Instant,
        next_retx: Instant,
        interval: Duration,
        provisional: bool,
        text: String,
    }
    let mut status: Vec<Option<u16>> = vec![None; n];
    let mut latency: Vec<Option<Duration>> = vec![None; n];
    let mut sent_all = Duration::ZERO;
    let mut last_final = Duration::ZERO;
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut pending: HashMap<usize, Pending> = HashMap::new();
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(n as f64 / rate as f64) + Duration::from_secs(40);
    let mut next = 0usize;
    let mut buf = vec![0u8; 65536];
    let cseq_tag = format!(" {method}");
    loop {
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(n);
        while next < due {
            let (id, text) = build(next);
            let _ = sock.send_to(text.as_bytes(), to);
            by_id.insert(id, next);
            let now = Instant::now();
            pending.insert(
                next,
                Pending {
                    first: now,
                    next_retx: now + Duration::from_millis(500),
                    interval: Duration::from_millis(500),
                    provisional: false,
                    text,
                },
            );
            next += 1;
            if next == n {
                sent_all = t0.elapsed();
            }
        }
        let mut got = false;
        while let Ok((len, _)) = sock.recv_from(&mut buf) {
            got = true;
            let Ok(Message::Response(r)) = reel::sip::message::parse_message(&buf[..len]) else {
                continue;
            };
            if !r
                .headers
                .get("CSeq")
                .is_some_and(|c| c.ends_with(&cseq_tag))
            {
                continue;
            }
            let Some(&i) = r.headers.get("Call-ID").and_then(|c| by_id.get(c)) else {
                continue;
            };
            if r.status < 200 {
                if let Some(p) = pending.get_mut(&i) {
                    p.provisional = true;
                }
            } else if let Some(p) = pending.remove(&i) {
                status[i] = Some(r.status);
                latency[i] = Some(p.first.elapsed());
                last_final = t0.elapsed();
                on_final(i, &r);
            }
        }
        let now = Instant::now();
        pending.retain(|_, p| {
            if now.duration_since(p.first) > Duration::from_secs(32) {
                return false;
            }
            if !p.provisional && now >= p.next_retx {
                let _ = sock.send_to(p.text.as_bytes(), to);
                p.interval = (p.interval * 2).min(Duration::from_secs(4));
                p.next_retx = now + p.interval;
            }
            true
        });
        if (next == n && pending.is_empty()) || t0.elapsed() > limit {
            break;
        }
        if !got {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    Transacted {
        status,
        latency,
        sent_all,
        last_final,
    }
}

struct Transacted {
    status: Vec<Option<u16>>,
    latency: Vec<Option<Duration>>,
    /// When the last first transmission went out (how fast the requests were offered).
    sent_all: Duration,
    /// When the last final response arrived.
    last_final: Duration,
}

/// p50, p99 and max of the answered latencies.
fn percentiles(latency: &[Option<Duration>]) -> Option<(Duration, Duration, Duration)> {
    let mut v: Vec<Duration> = latency.iter().flatten().copied().collect();
    if v.is_empty() {
        return None;
    }
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some((at(0.50), at(0.99), v[v.len() - 1]))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn collect_recordings(dir: &Path, out: &mut Vec<PathBuf>, depth: u32) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.join("recording.json").exists() {
                out.push(p);
            } else {
                collect_recordings(&p, out, depth + 1);
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct ReelOutcome {
    calls_ok: usize,
    setup_secs: f64,
    sent: u64,
    send_errors: u64,
    max_late: Duration,
    sender_cpu: Duration,
    rtp_wall: Duration,
    recordings: usize,
    recorded: u64,
    lost_field: u64,
    duplicates: u64,
    foreign: u64,
    bye_ok: usize,
    setup_rate: u64,
    /// Time reel took to go quiet after the last 200 (setup work still queued).
    settle_secs: f64,
    setup_latency: Option<(Duration, Duration, Duration)>,
    cpu_ticks: u64,
    split: Vec<(String, u64)>,
    idle_ticks_per_s: f64,
    note: String,
}

fn run_reel(o: &Opts, calls: usize, tproxy: bool) -> Result<ReelOutcome, String> {
    let mut proc = start_reel(o, calls, tproxy)?;
    let pid = proc.pid();
    eprintln!(
        "reel pid {pid}: sip {} http {} rtp {}-{} data {}",
        proc.sip,
        proc.http,
        proc.rtp.0,
        proc.rtp.1,
        proc.data().display()
    );
    let mut out = ReelOutcome::default();
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = reel::media::backend::set_receive_buffer(&sock, 4 << 20);
    let run_id = format!("{:x}", rand::random::<u32>());
    let body = sim::multipart(&offer(), &sim::metadata("complete", ""));
    let cid = |i: usize| format!("rec-{run_id}-{i}");

    // Setup: INVITE, 200, ACK.
    let t_setup = Instant::now();
    let mut states: Vec<Option<CallState>> = vec![None; calls];
    let invite = |i: usize| {
        let id = cid(i);
        let text = invite_text(&id, &body);
        (id, text)
    };
    let setup = transact(
        &sock,
        proc.sip,
        calls,
        o.setup_rate,
        "INVITE",
        &invite,
        &mut |i, r| {
            if r.status != 200 {
                return;
            }
            let tag = r
                .headers
                .get("To")
                .and_then(|t| NameAddr::parse(t).ok())
                .and_then(|n| n.tag().map(str::to_string));
            let ports = answer_ports(&r.body);
            if let Some(tag) = tag {
                let id = cid(i);
                let ack = in_dialog_text("ACK", &id, 1, &tag);
                let _ = sock.send_to(ack.as_bytes(), proc.sip);
                if ports.len() == 2 && ports.iter().all(|&p| p != 0) {
                    states[i] = Some(CallState { tag, ports });
                }
            }
        },
    );
    out.setup_secs = t_setup.elapsed().as_secs_f64();
    out.setup_latency = percentiles(&setup.latency);
    out.setup_rate = o.setup_rate;
    let status = setup.status;
    out.calls_ok = states.iter().filter(|s| s.is_some()).count();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for (s, st) in status.iter().zip(&states) {
        if st.is_none() {
            let k = s.map_or("no answer".to_string(), |c| c.to_string());
            *failures.entry(k).or_default() += 1;
        }
    }
    if !failures.is_empty() {
        out.note += &format!("setup failures {failures:?}; ");
    }
    if out.calls_ok == 0 {
        return Err(format!(
            "no call set up ({failures:?})\n{}",
            proc.log_tail()
        ));
    }

    // The writer may still be creating the calls' spool entries (file creation can cost
    // milliseconds each on a busy ext4): let it finish, so none of the setup's work is counted
    // as the RTP phase's. Quiet = under 2 ticks in 200 ms; at most 20 s.
    let t_quiet = Instant::now();
    loop {
        let q0 = sample(pid);
        std::thread::sleep(Duration::from_millis(200));
        let q1 = sample(pid);
        if q1.process.saturating_sub(q0.process) < 2 || t_quiet.elapsed() > Duration::from_secs(20)
        {
            break;
        }
    }
    out.settle_secs = t_quiet.elapsed().as_secs_f64();

    // RTP phase, on a sender thread pinned to CPU 0; reel sampled around it.
    let mut specs = Vec::with_capacity(out.calls_ok * 2);
    for (i, st) in states.iter().enumerate() {
        let Some(st) = st else { continue };
        for (k, &p) in st.ports.iter().enumerate() {
            let ssrc = 0x1000_0000 + (i as u32) * 2 + k as u32;
            specs.push(StreamSpec::new(
                SocketAddr::from(([127, 0, 0, 1], p)),
                ssrc,
                if k == 0 { 440.0 } else { 1000.0 },
            ));
        }
    }
    let sender = RtpSender::new(specs, SendConfig::default()).map_err(|e| e.to_string())?;
    let secs = o.seconds;
    let pin = o.pin;
    let t = std::thread::spawn(move || {
        if pin {
            sinks::pin_to(0);
        }
        let s0 = sample(pid);
        let rep = sender.run(Duration::from_secs(secs), &AtomicBool::new(false));
        let s1 = sample(pid);
        (rep, s0, s1)
    });
    let (rep, s0, s1) = t.join().map_err(|_| "sender thread panicked".to_string())?;
    out.sent = rep.packets_sent;
    out.send_errors = rep.send_errors;
    out.max_late = rep.max_late;
    out.sender_cpu = rep.cpu_time;
    out.rtp_wall = rep.elapsed;
    out.cpu_ticks = s1.process.saturating_sub(s0.process);
    out.split = thread_split(pid, &s0, &s1);
    // Idle cost with the calls still up but no media: 1 s.
    std::thread::sleep(Duration::from_millis(200));
    let i0 = sample(pid);
    std::thread::sleep(Duration::from_secs(1));
    let i1 = sample(pid);
    out.idle_ticks_per_s = i1.process.saturating_sub(i0.process) as f64;

    // Teardown: BYE every call.
    let up: Vec<usize> = (0..calls).filter(|&i| states[i].is_some()).collect();
    let bye = |k: usize| {
        let i = up[k];
        let id = cid(i);
        let tag = states[i].as_ref().map_or("", |s| s.tag.as_str());
        let text = in_dialog_text("BYE", &id, 2, tag);
        (id, text)
    };
    let st = transact(
        &sock,
        proc.sip,
        up.len(),
        o.setup_rate.max(500),
        "BYE",
        &bye,
        &mut |_, _| {},
    )
    .status;
    out.bye_ok = st.iter().filter(|s| **s == Some(200)).count();
    if out.bye_ok < up.len() {
        let mut h: BTreeMap<String, usize> = BTreeMap::new();
        for s in &st {
            *h.entry(s.map_or("no answer".into(), |c| c.to_string()))
                .or_default() += 1;
        }
        out.note += &format!("BYE answers {h:?}; ");
    }

    // Wait for the recording folders.
    let deadline = Instant::now() + Duration::from_secs(60 + calls as u64 / 20);
    let mut dirs = Vec::new();
    while Instant::now() < deadline {
        dirs.clear();
        collect_recordings(&proc.data().join("recordings"), &mut dirs, 0);
        if dirs.len() >= out.calls_ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    out.recordings = dirs.len();
    if dirs.len() < out.calls_ok {
        out.note += &format!(
            "only {} of {} recordings within the wait; ",
            dirs.len(),
            out.calls_ok
        );
    }
    for d in &dirs {
        let Some(json) = std::fs::read_to_string(d.join("recording.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        else {
            out.note += &format!("unreadable {}; ", d.display());
            continue;
        };
        for s in json["streams"].as_array().into_iter().flatten() {
            let f = |k: &str| s[k].as_u64().unwrap_or(0);
            out.recorded += f("packets");
            out.lost_field += f("lost");
            out.duplicates += f("duplicates");
            out.foreign += f("foreign");
        }
    }
    let how = proc.stop(Duration::from_secs(40));
    if !how.starts_with("exited") {
        out.note += &format!("reel {how}; ");
    }
    if !out.note.is_empty() {
        out.note += &format!("\n  reel log tail:\n{}", proc.log_tail());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Setup rate at the limit

/// Largest burst: 4 RTP ports per call must fit the 16384-32767 range. When other processes
/// hold ports there, smaller maxima are tried in turn.
const LIMIT_MAX_CALLS: [usize; 6] = [3200, 2400, 2000, 1600, 1200, 800];

struct Burst {
    rate: u64,
    calls: usize,
    ok: usize,
    failures: BTreeMap<String, usize>,
    offered_rate: f64,
    answered_rate: f64,
    latency: Option<(Duration, Duration, Duration)>,
    bye_ok: usize,
}

impl Burst {
    /// Every call up, p99 within the bound, and the client kept up with the rate (a burst
    /// the client could not offer says nothing about the server).
    fn clean(&self, bound: Duration) -> bool {
        self.ok == self.calls
            && self.latency.is_some_and(|(_, p99, _)| p99 <= bound)
            && (self.calls < 50 || self.offered_rate >= 0.9 * self.rate as f64)
    }
}

fn run_setup_limit(o: &Opts) -> Result<(), String> {
    let started = Instant::now();
    let mut proc = None;
    let mut max_calls = 0;
    for n in LIMIT_MAX_CALLS {
        match start_reel(o, n, false) {
            Ok(p) => {
                proc = Some(p);
                max_calls = n;
                break;
            }
            Err(e) => eprintln!("setup limit: {n} calls: {e}"),
        }
    }
    let Some(mut proc) = proc else {
        return Err("cannot start reel with a free RTP port block".into());
    };
    eprintln!(
        "reel pid {}: sip {} (setup limit, bound p99 <= {} ms, bursts up to {max_calls} calls)",
        proc.pid(),
        proc.sip,
        o.setup_bound_ms
    );
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = reel::media::backend::set_receive_buffer(&sock, 8 << 20);
    let run_id = format!("{:x}", rand::random::<u32>());
    let body = sim::multipart(&offer(), &sim::metadata("complete", ""));
    let bound = Duration::from_millis(o.setup_bound_ms);
    let mut bursts: Vec<Burst> = Vec::new();
    let mut finished = 0usize;
    let mut rate = 100u64;
    let mut step = 0usize;
    // The unclean rate the ramp already hit, once it steps back to look in between.
    let mut refined: Option<u64> = None;
    loop {
        let calls = (rate as usize).min(max_calls);
        let cid = |i: usize| format!("lim-{run_id}-{step}-{i}");
        let invite = |i: usize| {
            let id = cid(i);
            let text = invite_text(&id, &body);
            (id, text)
        };
        let mut tags: Vec<Option<String>> = vec![None; calls];
        let setup = transact(
            &sock,
            proc.sip,
            calls,
            rate,
            "INVITE",
            &invite,
            &mut |i, r| {
                if r.status != 200 {
                    return;
                }
                let Some(tag) = r
                    .headers
                    .get("To")
                    .and_then(|t| NameAddr::parse(t).ok())
                    .and_then(|n| n.tag().map(str::to_string))
                else {
                    return;
                };
                let id = cid(i);
                let ack = in_dialog_text("ACK", &id, 1, &tag);
                let _ = sock.send_to(ack.as_bytes(), proc.sip);
                tags[i] = Some(tag);
            },
        );
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        for (st, tag) in setup.status.iter().zip(&tags) {
            if tag.is_none() {
                *failures
                    .entry(st.map_or("no answer".into(), |c| c.to_string()))
                    .or_default() += 1;
            }
        }
        let up: Vec<usize> = (0..calls).filter(|&i| tags[i].is_some()).collect();
        let bye = |k: usize| {
            let i = up[k];
            let id = cid(i);
            let tag = tags[i].as_deref().unwrap_or("");
            let text = in_dialog_text("BYE", &id, 2, tag);
            (id, text)
        };
        let byes = transact(&sock, proc.sip, up.len(), 1000, "BYE", &bye, &mut |_, _| {});
        let bye_ok = byes.status.iter().filter(|s| **s == Some(200)).count();
        // The recordings of this burst, before the next one starts.
        finished += up.len();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut dirs = Vec::new();
        while Instant::now() < deadline {
            dirs.clear();
            collect_recordings(&proc.data().join("recordings"), &mut dirs, 0);
            if dirs.len() >= finished {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let offered = setup.sent_all.max(Duration::from_millis(1));
        let answered = setup.last_final.max(Duration::from_millis(1));
        let b = Burst {
            rate,
            calls,
            ok: up.len(),
            failures,
            offered_rate: calls as f64 / offered.as_secs_f64(),
            answered_rate: up.len() as f64 / answered.as_secs_f64(),
            latency: percentiles(&setup.latency),
            bye_ok,
        };
        let clean = b.clean(bound);
        eprintln!(
            "setup limit: {rate} calls/s: {} of {} up, p99 {:.1} ms{}",
            b.ok,
            b.calls,
            b.latency.map_or(0.0, |l| ms(l.1)),
            if clean { "" } else { " (not clean: stop)" }
        );
        bursts.push(b);
        step += 1;
        if started.elapsed() > Duration::from_secs(150) || (clean && calls >= max_calls) {
            break;
        }
        if !clean {
            // One look between the last clean rate and this one (the doubling is coarse).
            let last_clean = bursts.iter().rev().find(|b| b.clean(bound)).map(|b| b.rate);
            match last_clean {
                Some(lo) if refined.is_none() && rate > lo * 3 / 2 => {
                    refined = Some(rate);
                    rate = (lo + rate) / 2;
                    continue;
                }
                _ => break,
            }
        }
        if refined.is_some_and(|r| rate * 2 >= r) {
            break;
        }
        rate *= 2;
    }
    let how = proc.stop(Duration::from_secs(40));

    println!();
    bursts.sort_by_key(|b| b.rate);
    println!(
        "== SIP setup rate at the limit (bursts of 1 s of calls, torn down after; clean = all 200, p99 <= {} ms, offered >= 90 % of the rate) ==",
        o.setup_bound_ms
    );
    println!(
        "{:>8} {:>7} {:>7} {:>12} {:>12} {:>9} {:>9} {:>9} {:>8}  failures",
        "rate", "calls", "200", "offered/s", "answered/s", "p50 ms", "p99 ms", "max ms", "BYE 200"
    );
    let mut best = None;
    for b in &bursts {
        let (p50, p99, max) = b
            .latency
            .map_or((0.0, 0.0, 0.0), |(a, b, c)| (ms(a), ms(b), ms(c)));
        println!(
            "{:>8} {:>7} {:>7} {:>12.0} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>8}  {:?}",
            b.rate,
            b.calls,
            b.ok,
            b.offered_rate,
            b.answered_rate,
            p50,
            p99,
            max,
            b.bye_ok,
            b.failures
        );
        if b.clean(bound) {
            best = Some(b.rate);
        }
    }
    match best {
        Some(r) => println!("highest clean setup rate: {r} calls/s"),
        None => println!("highest clean setup rate: none (even 100 calls/s was not clean)"),
    }
    if bursts
        .last()
        .is_some_and(|b| b.calls >= max_calls && b.clean(bound))
    {
        println!(
            "(the ramp stopped at the largest burst the RTP port range allows, not at a limit)"
        );
    }
    if !how.starts_with("exited") {
        println!("reel {how}\n{}", proc.log_tail());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Default)]
struct SizeResult {
    calls: usize,
    a: Option<sinks::Outcome>,
    b: Option<sinks::Outcome>,
    c: Option<sinks::Outcome>,
    reel: Option<Result<ReelOutcome, String>>,
    reel_tproxy: Option<Result<ReelOutcome, String>>,
    t: Option<Result<sinks::Outcome, String>>,
}

fn run_size(o: &Opts, calls: usize, uring: bool) -> SizeResult {
    let args = sinks::Args {
        sockets: calls * 2,
        pps_per_socket: 50,
        seconds: o.seconds,
        variants: Vec::new(),
        batch_ms: o.batch_ms,
        slice_ms: 1,
        pin: o.pin,
    };
    let mut r = SizeResult {
        calls,
        ..SizeResult::default()
    };
    for v in &o.variants {
        let t = Instant::now();
        match v.as_str() {
            "a" if uring => r.a = Some(sinks::run_paced('a', &args)),
            "b" => r.b = Some(sinks::run_paced('b', &args)),
            "c" if uring => r.c = Some(sinks::run_drain(&args)),
            "t" if uring => r.t = Some(run_tproxy_floor(&args)),
            "reel" => r.reel = Some(run_reel(o, calls, false)),
            "reel-tproxy" => r.reel_tproxy = Some(run_reel(o, calls, true)),
            _ => {
                eprintln!("{v}: skipped, io_uring unavailable");
                continue;
            }
        }
        eprintln!(
            "{calls} calls: {v} done in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    r
}

/// The port variant t's one socket takes every stream on (reel-tproxy's is `TPROXY_PORT`).
const FLOOR_TPROXY_PORT: u16 = TPROXY_PORT + 1;
/// Variant t's first RTP port; streams on even ports from here, no socket bound to any.
const FLOOR_FIRST_PORT: u16 = 20000;

/// Variant t, the floor of TPROXY mode: the same paced traffic as a, every stream's port
/// taken by one `IP_TRANSPARENT` socket (as `reel serve` with `media.tproxy_port` opens it),
/// polled with a media thread's own backend config (its waits and buffers), every packet
/// counted and dropped. What reel-tproxy's media thread costs above this is Reel's own work.
fn run_tproxy_floor(args: &sinks::Args) -> Result<sinks::Outcome, String> {
    let last = usize::from(FLOOR_FIRST_PORT) + 2 * args.sockets;
    let last = u16::try_from(last).map_err(|_| format!("{} streams do not fit", args.sockets))?;
    let split = reel::driver::host::PortSplit::new(FLOOR_FIRST_PORT, last, 1);
    netns::set_reel_rules(&split.nft_rules(FLOOR_TPROXY_PORT))?;
    let sock = reel::media::backend::open_tproxy_socket(FLOOR_TPROXY_PORT, 128 << 20)
        .map_err(|e| format!("TPROXY socket: {e}"))?;
    let addrs: Vec<SocketAddr> = (0..args.sockets)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], FLOOR_FIRST_PORT + 2 * i as u16)))
        .collect();
    let config = reel::driver::media::backend_config(64);
    Ok(sinks::run_paced_on(
        Backend::Uring,
        config,
        vec![sock],
        &addrs,
        None,
        args,
    ))
}

fn sink_ns(o: &sinks::Outcome) -> f64 {
    o.rx_cpu_ns as f64 / o.received.max(1) as f64
}

fn reel_ns(r: &ReelOutcome, tck: u64) -> f64 {
    r.cpu_ticks as f64 * 1e9 / tck as f64 / r.recorded.max(1) as f64
}

fn print_detail(r: &SizeResult, tck: u64) {
    let a = r.a.as_ref().map(sink_ns);
    let c = r.c.as_ref().map(sink_ns);
    let ratio = |x: f64, b: Option<f64>| b.map_or("-".into(), |b| format!("{:.2}", x / b));
    println!();
    println!(
        "== {} calls ({} streams, {} pkt/s offered) ==",
        r.calls,
        r.calls * 2,
        r.calls * 100
    );
    println!(
        "{:<26} {:>10} {:>10} {:>8} {:>10} {:>8} {:>7} {:>7} {:>10}",
        "variant", "sent", "recorded", "loss", "cpu-s/Mpk", "us/pkt", "vs a", "vs c", "calls/core"
    );
    let row = |name: &str, sent: u64, got: u64, ns: f64, extra: String| {
        println!(
            "{:<26} {:>10} {:>10} {:>8} {:>10.3} {:>8.3} {:>7} {:>7} {:>10.0}  {}",
            name,
            sent,
            got,
            sent as i64 - got as i64,
            ns / 1000.0,
            ns / 1000.0,
            ratio(ns, a),
            ratio(ns, c),
            1e9 / (ns * PKTS_PER_CALL),
            extra
        );
    };
    if let Some(o) = &r.a {
        row(
            "a uring naive (wait 1)",
            o.sent,
            o.received,
            sink_ns(o),
            format!(
                "{:.1} pkt/wake",
                o.received as f64 / o.stats.wakeups.max(1) as f64
            ),
        );
    }
    if let Some(o) = &r.b {
        row(
            "b epoll recvmmsg (ready)",
            o.sent,
            o.received,
            sink_ns(o),
            format!(
                "{:.1} pkt/wake",
                o.received as f64 / o.stats.wakeups.max(1) as f64
            ),
        );
    }
    if let Some(o) = &r.c {
        row(
            "c uring drain floor",
            o.sent,
            o.received,
            sink_ns(o),
            o.note.clone(),
        );
    }
    match &r.t {
        Some(Ok(o)) => row(
            "t one TPROXY socket",
            o.sent,
            o.received,
            sink_ns(o),
            format!(
                "{:.0} pkt/wake",
                o.received as f64 / o.stats.wakeups.max(1) as f64
            ),
        ),
        Some(Err(e)) => println!("t one TPROXY socket: FAILED: {e}"),
        None => {}
    }
    for (name, outcome) in [
        ("reel serve (uring)", &r.reel),
        ("reel serve, TPROXY", &r.reel_tproxy),
    ] {
        match outcome {
            Some(Ok(x)) => {
                row(
                    name,
                    x.sent,
                    x.recorded,
                    reel_ns(x, tck),
                    format!(
                        "{} calls up, {} recordings, {} BYE 200",
                        x.calls_ok, x.recordings, x.bye_ok
                    ),
                );
                let total = x.cpu_ticks.max(1) as f64;
                let split: Vec<String> = x
                    .split
                    .iter()
                    .map(|(n, t)| {
                        format!(
                            "{n} {:.2} s ({:.0}%, {:.3} us/pkt)",
                            *t as f64 / tck as f64,
                            100.0 * *t as f64 / total,
                            *t as f64 * 1e6 / tck as f64 / x.recorded.max(1) as f64
                        )
                    })
                    .collect();
                println!(
                    "  reel CPU over the RTP phase ({:.2} s wall): {:.2} s = {} ticks at {} Hz",
                    x.rtp_wall.as_secs_f64(),
                    x.cpu_ticks as f64 / tck as f64,
                    x.cpu_ticks,
                    tck
                );
                println!("  per thread: {}", split.join("; "));
                println!(
                    "  reel idle with {} calls up and no media: {:.2} CPU-s/s",
                    x.calls_ok,
                    x.idle_ticks_per_s / tck as f64
                );
                println!(
                    "  recording.json: lost {} duplicates {} foreign {}; sender: {:.2} CPU-s, max late {:.1} ms, {} send errors; setup {:.1} s, quiet {:.1} s later",
                    x.lost_field,
                    x.duplicates,
                    x.foreign,
                    x.sender_cpu.as_secs_f64(),
                    x.max_late.as_secs_f64() * 1e3,
                    x.send_errors,
                    x.setup_secs,
                    x.settle_secs
                );
                if let Some((p50, p99, max)) = x.setup_latency {
                    println!(
                        "  SIP setup latency (INVITE sent -> 200) at {} calls/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                        x.setup_rate,
                        ms(p50),
                        ms(p99),
                        ms(max)
                    );
                }
                if !x.note.is_empty() {
                    println!("  note: {}", x.note);
                }
            }
            Some(Err(e)) => println!("{name}: FAILED: {e}"),
            None => {}
        }
    }
}

fn ok_outcome(x: &Option<Result<ReelOutcome, String>>) -> Option<&ReelOutcome> {
    x.as_ref().and_then(|x| x.as_ref().ok())
}

/// With `--repeat`: one line per round and each column's median, so a noisy machine's
/// figures come with their spread. Ratios are per round (each Reel figure against the
/// sinks of its own round), and their medians are taken over the rounds.
fn print_rounds(results: &[SizeResult], tck: u64) {
    println!();
    println!("== rounds (us CPU per packet; ratios within each round) ==");
    println!(
        "{:>6} {:>5} {:>7} {:>7} {:>7} {:>8} {:>6} {:>6} {:>9} {:>6} {:>6} {:>10}",
        "calls", "round", "a", "c", "t", "reel", "vs a", "vs c", "reel-tpx", "vs a", "vs t", "loss"
    );
    let us = |x: Option<f64>| x.map(|v| v / 1000.0);
    let fmt = |x: Option<f64>, w: usize| x.map_or(format!("{:>w$}", "-"), |v| format!("{v:>w$.2}"));
    let div = |x: Option<f64>, y: Option<f64>| Some(x? / y?);
    let median = |mut v: Vec<f64>| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    };
    let mut sizes: Vec<usize> = results.iter().map(|r| r.calls).collect();
    sizes.dedup();
    for calls in sizes {
        let mut cols: Vec<Vec<f64>> = vec![Vec::new(); 9];
        for (round, r) in results.iter().filter(|r| r.calls == calls).enumerate() {
            let a = us(r.a.as_ref().map(sink_ns));
            let c = us(r.c.as_ref().map(sink_ns));
            let t = us(r.t.as_ref().and_then(|o| o.as_ref().ok()).map(sink_ns));
            let reel = us(ok_outcome(&r.reel).map(|x| reel_ns(x, tck)));
            let tpx = us(ok_outcome(&r.reel_tproxy).map(|x| reel_ns(x, tck)));
            let row = [
                a,
                c,
                t,
                reel,
                div(reel, a),
                div(reel, c),
                tpx,
                div(tpx, a),
                div(tpx, t),
            ];
            for (col, v) in cols.iter_mut().zip(row) {
                col.extend(v);
            }
            let loss: Vec<String> = [ok_outcome(&r.reel), ok_outcome(&r.reel_tproxy)]
                .into_iter()
                .flatten()
                .map(|x| (x.sent as i64 - x.recorded as i64).to_string())
                .collect();
            println!(
                "{calls:>6} {:>5} {} {} {} {} {} {} {} {} {} {:>10}",
                round + 1,
                fmt(a, 7),
                fmt(c, 7),
                fmt(t, 7),
                fmt(reel, 8),
                fmt(row[4], 6),
                fmt(row[5], 6),
                fmt(tpx, 9),
                fmt(row[7], 6),
                fmt(row[8], 6),
                loss.join(" / ")
            );
        }
        let m: Vec<Option<f64>> = cols.into_iter().map(median).collect();
        println!(
            "{calls:>6} {:>5} {} {} {} {} {} {} {} {} {}",
            "med",
            fmt(m[0], 7),
            fmt(m[1], 7),
            fmt(m[2], 7),
            fmt(m[3], 8),
            fmt(m[4], 6),
            fmt(m[5], 6),
            fmt(m[6], 9),
            fmt(m[7], 6),
            fmt(m[8], 6)
        );
    }
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("record bench: {e}");
            eprintln!(
                "usage: record [--calls N | --sizes N1,N2,..] [--seconds D] [--variants a,b,c,t,reel,reel-tproxy] \
                 [--setup-rate R] [--batch-ms M] [--reel-bin PATH] [--reel-log FILTER] [--no-pin] \
                 [--repeat N] [--setup-limit [--setup-bound-ms B]]"
            );
            std::process::exit(2);
        }
    };
    sinks::raise_nofile();
    if o.variants.iter().any(|v| v == "reel-tproxy" || v == "t") {
        // Every variant, so they stay comparable; before any thread starts, so the whole
        // process moves.
        match netns::private_netns() {
            Ok(()) => println!("network: a private namespace of its own (for the TPROXY rules)"),
            Err(e) => {
                eprintln!("record bench: t and reel-tproxy need a private network namespace: {e}");
                std::process::exit(2);
            }
        }
    }
    let tck = clk_tck();
    sinks::print_machine();
    println!(
        "traffic: calls x 2 streams x 50 pkt/s, {} B packets (12 B RTP + 160 B PCMU), {} s, \
         1 ms sendmmsg ticks from one thread; pinned sender cpu0 / receiver cpu1: {}; \
         reel: {} (REEL_LOG={}), setup {} calls/s",
        sinks::PAYLOAD,
        o.seconds,
        o.pin,
        o.reel_bin.display(),
        o.reel_log,
        o.setup_rate
    );
    let uring = match probe_uring() {
        Ok(_) => true,
        Err(e) => {
            println!("io_uring unavailable: {e}");
            false
        }
    };
    if o.setup_limit {
        match run_setup_limit(&o) {
            Ok(()) => {}
            Err(e) => println!("setup limit: FAILED: {e}"),
        }
        return;
    }
    let mut results = Vec::new();
    for &n in &o.sizes {
        for round in 1..=o.repeat {
            if o.repeat > 1 {
                println!();
                println!("-- round {round} of {} --", o.repeat);
            }
            let r = run_size(&o, n, uring);
            print_detail(&r, tck);
            results.push(r);
        }
    }
    if o.repeat > 1 {
        print_rounds(&results, tck);
    }
    if results.len() > 1 {
        println!();
        println!("== scaling ==");
        println!(
            "{:>6} {:>7} {:>10} {:>10} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9} {:>10} {:>9} {:>9}",
            "calls",
            "mode",
            "sent",
            "recorded",
            "loss",
            "a us/pk",
            "floor us",
            "reel us",
            "vs a",
            "vs floor",
            "calls/core",
            "media us",
            "writer us"
        );
        let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.3}", v / 1000.0));
        for r in &results {
            let a = r.a.as_ref().map(sink_ns);
            // Each socket model against its own floor: c for per-stream sockets, t for TPROXY.
            let t = r.t.as_ref().and_then(|o| o.as_ref().ok()).map(sink_ns);
            let c = r.c.as_ref().map(sink_ns);
            for (mode, outcome, floor) in [("sockets", &r.reel, c), ("tproxy", &r.reel_tproxy, t)] {
                let Some(Ok(x)) = outcome else {
                    continue;
                };
                let per = |pfx: &str| {
                    let t: u64 = x
                        .split
                        .iter()
                        .filter(|(n, _)| n.starts_with(pfx))
                        .map(|s| s.1)
                        .sum();
                    Some(t as f64 * 1e9 / tck as f64 / x.recorded.max(1) as f64)
                };
                let ns = reel_ns(x, tck);
                let ratio = |b: Option<f64>| b.map_or("-".into(), |b| format!("{:.2}", ns / b));
                println!(
                    "{:>6} {:>7} {:>10} {:>10} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9} {:>10.0} {:>9} {:>9}",
                    r.calls,
                    mode,
                    x.sent,
                    x.recorded,
                    x.sent as i64 - x.recorded as i64,
                    f(a),
                    f(floor),
                    f(Some(ns)),
                    ratio(a),
                    ratio(floor),
                    1e9 / (ns * PKTS_PER_CALL),
                    f(per("reel-media")),
                    f(per("reel-writer"))
                );
            }
        }
    }
    println!();
    println!(
        "cpu-s/Mpk = CPU seconds per million packets (= us/pkt): for a and c the receiving \
         thread, for reel the whole process (utime+stime, /proc/<pid>/stat) over the RTP phase \
         only; calls/core = 1e6 / (us/pkt x 100 pkt/s per call); loss = sent - recorded \
         (sum of recording.json streams[].packets). Goal: reel <= 1.5 us/pkt at 1000 calls, \
         zero loss."
    );
}
