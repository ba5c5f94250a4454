//! Runs the real `reel` binary on free loopback ports with its own data directory, and SIPp
//! against it.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Option<Child>,
    pub sip_port: u16,
    pub http_port: u16,
    pub rtp: (u16, u16),
    pub data_dir: tempfile::TempDir,
    pub log: PathBuf,
    args: Vec<std::ffi::OsString>,
    data_path: PathBuf,
}

/// A port free for both UDP and TCP on 127.0.0.1, with the three above it free too (SIPp's
/// `-mp P` binds audio RTP/RTCP and video RTP/RTCP on P..P+3).
/// Fixed ports come from below the kernel's ephemeral range (32768-60999), so a socket some
/// other test binds to port 0 can never take one between this check and its use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() % 250) as u16 * 40;
    let _ = NEXT.compare_exchange(0, 10000 + seed, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let p = NEXT.fetch_add(4, Ordering::SeqCst);
        if p > 19990 {
            NEXT.store(10000, Ordering::SeqCst);
            continue;
        }
        let ok = TcpListener::bind(("127.0.0.1", p)).is_ok()
            && (p..p + 4).all(|q| UdpSocket::bind(("127.0.0.1", q)).is_ok());
        if ok {
            return p;
        }
    }
}

/// A block of `len` free UDP ports for RTP.
pub fn free_rtp_block(len: u16) -> (u16, u16) {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() % 50) as u16 * 200;
    let _ = NEXT.compare_exchange(0, 20000 + seed, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let lo = NEXT.fetch_add(len, Ordering::SeqCst);
        if lo + len > 32700 {
            NEXT.store(20000, Ordering::SeqCst);
            continue;
        }
        if (lo..lo + len)
            .step_by(7)
            .all(|p| UdpSocket::bind(("0.0.0.0", p)).is_ok())
        {
            return (lo, lo + len - 1);
        }
    }
}

pub fn reel_bin() -> &'static str {
    env!("CARGO_BIN_EXE_reel")
}

impl Server {
    /// Starts `reel serve` with `--sip`, `--http`, `--rtp-ports`, `--data-dir` on fresh ports,
    /// plus `extra` arguments, and waits for `/health`.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with(None, extra)
    }

    /// Same, with a configuration file whose text may use `{sip_port}`, `{data_dir}` ...
    pub fn start_with(config: Option<&str>, extra: &[&str]) -> Server {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let sip_port = free_port();
        let http_port = free_port();
        let rtp = free_rtp_block(200);
        let log = data_dir.path().join("reel.log");
        let mut cmd = Command::new(reel_bin());
        cmd.arg("serve");
        if let Some(text) = config {
            let text = text
                .replace("{sip_port}", &sip_port.to_string())
                .replace("{tls_port}", &(sip_port + 1).to_string())
                .replace("{data_dir}", &data_dir.path().display().to_string());
            let path = data_dir.path().join("reel.toml");
            std::fs::write(&path, text).expect("write config");
            cmd.arg("--config").arg(path);
        }
        // A test may bring its own --sip (IPv6 ...): its port is then the one to use.
        let own_sip = extra
            .iter()
            .position(|a| *a == "--sip")
            .and_then(|i| extra.get(i + 1));
        let sip_port = match own_sip {
            Some(addr) => addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("--sip port"),
            None => {
                cmd.args(["--sip", &format!("127.0.0.1:{sip_port}")]);
                sip_port
            }
        };
        cmd.args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--rtp-ports", &format!("{}-{}", rtp.0, rtp.1)]);
        // A test may bring its own --data-dir (a small filesystem ...).
        let own_data = extra
            .iter()
            .position(|a| *a == "--data-dir")
            .and_then(|i| extra.get(i + 1));
        let data_path = match own_data {
            Some(d) => PathBuf::from(d),
            None => {
                cmd.arg("--data-dir").arg(data_dir.path().join("data"));
                data_dir.path().join("data")
            }
        };
        cmd.args(extra)
            .env("REEL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let args = cmd.get_args().map(|a| a.to_owned()).collect();
        let child = cmd.spawn().expect("start reel");
        let server = Server {
            child: Some(child),
            sip_port,
            http_port,
            rtp,
            data_dir,
            log,
            args,
            data_path,
        };
        server.wait_ready();
        server
    }

    pub fn data(&self) -> PathBuf {
        self.data_path.clone()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = self.http_get("/health") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("reel did not become ready; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Sessions in progress, from `/api/status` (0 when it cannot be read).
    pub fn sessions_active(&self) -> u64 {
        self.http_get("/api/status")
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["sessions_active"].as_u64())
            .unwrap_or(0)
    }

    /// Every finished recording folder (holding `recording.json`).
    pub fn recordings(&self) -> Vec<PathBuf> {
        recording_dirs(&self.data().join("recordings"))
    }

    /// Waits until at least `n` recordings exist; returns their parsed `recording.json`.
    pub fn wait_recordings(&self, n: usize) -> Vec<(PathBuf, serde_json::Value)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.recordings();
            if found.len() >= n || Instant::now() > deadline {
                return found
                    .into_iter()
                    .map(|dir| {
                        let text =
                            std::fs::read_to_string(dir.join("recording.json")).expect("json");
                        (dir, serde_json::from_str(&text).expect("valid JSON"))
                    })
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("reel did not exit after SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the same command again (same ports, same data), after a stop or a kill.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(reel_bin())
            .args(&self.args)
            .env("REEL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("restart reel");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every recording folder (holding `recording.json`) below `dir`.
pub fn recording_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(dir, &mut out);
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.join("recording.json").exists() {
                out.push(p);
            } else {
                collect(&p, out);
            }
        }
    }
}

/// Is SIPp here? In CI (`CI` set) its absence is a failure; elsewhere the test is skipped,
/// saying why.
pub fn sipp_available() -> bool {
    let ok = Command::new("sipp").arg("-v").output().is_ok();
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("sipp is not installed: .ci/run installs Debian's sip-tester");
        }
        eprintln!("skipped: sipp not installed (apt-get install sip-tester)");
    }
    ok
}

/// Runs one SIPp scenario from `tests/sipp/` against the server, one call.
pub fn sipp(server: &Server, scenario: &str, transport: &str, extra: &[&str]) -> Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp");
    let work = tempfile::tempdir().expect("tempdir");
    let local_port = free_port();
    let out = Command::new("sipp")
        .current_dir(work.path())
        .arg("-sf")
        .arg(dir.join(scenario))
        .arg(format!("127.0.0.1:{}", server.sip_port))
        .args(["-t", transport, "-m", "1", "-i", "127.0.0.1"])
        .args(["-p", &local_port.to_string()])
        .args(["-mp", &free_port().to_string()])
        .args([
            "-timeout",
            "30s",
            "-timeout_error",
            "-trace_err",
            "-trace_msg",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run sipp");
    if !out.status.success() {
        let mut logs = String::new();
        for e in std::fs::read_dir(work.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            logs.push_str(&format!("== {}\n", e.path().display()));
            logs.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        eprintln!(
            "sipp {scenario} over {transport} failed: {}\nstdout:\n{}\nstderr:\n{}\nlogs:\n{logs}\nreel log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log_text()
        );
    }
    out
}
