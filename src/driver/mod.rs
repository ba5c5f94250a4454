//! I/O for the control thread: SIP listeners (UDP, TCP, TLS), the HTTP API, signals, timers,
//! and the writer thread. Everything here moves bytes and time into [`Recorder`] and its
//! outputs back out; no protocol decision is made here.

pub mod host;
pub mod http;
pub mod media;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::config::{Config, ListenProto};
use crate::control::{PortPool, Recorder, RecorderConfig};
use crate::media::BackendChoice;
use crate::record::Spool;
use crate::sip::framing::Frame;
use crate::sip::{ConnId, EndpointConfig, Flow, StreamFramer, Transport};

/// Why `reel serve` stopped with an error: bad configuration (exit 2) or a runtime failure
/// (exit 1).
#[derive(Debug)]
pub enum RunError {
    Config(String),
    Runtime(String),
}

/// Free disk space below which new sessions get 503.
const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// Most simultaneous TCP/TLS connections.
const MAX_CONNECTIONS: usize = 4096;
/// How long a stream peer may take to send its first message, and to finish any message it
/// has started: 64 x T1, the RFC 3261 transaction timeout.
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(32);

async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

enum Input {
    Message {
        flow: Flow,
        data: Vec<u8>,
    },
    /// A message over `sip.max_message_bytes`: its header section, to answer 513 from.
    TooLarge {
        flow: Flow,
        head: Vec<u8>,
        total: usize,
    },
    Opened {
        conn: ConnId,
        writer: mpsc::UnboundedSender<Vec<u8>>,
    },
    Closed {
        conn: ConnId,
    },
}

/// TPROXY mode (`media.tproxy_port` set): how the RTP range splits over the media threads,
/// which decides the nftables rules (printed at start and by `reel check-config`).
pub fn tproxy_split(config: &Config) -> Option<host::PortSplit> {
    (config.media.tproxy_port != 0).then(|| {
        host::PortSplit::new(
            config.media.rtp_port_lo,
            config.media.rtp_port_hi,
            config.media.threads,
        )
    })
}

/// Runs the recorder until SIGTERM/SIGINT has drained it.
pub fn run(config: Config, backend: BackendChoice) -> Result<(), RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Runtime(format!("cannot start the control runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(config, backend))
}

fn tls_acceptor(config: &Config) -> Result<tokio_rustls::TlsAcceptor, RunError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = config
        .sip
        .tls_cert
        .as_ref()
        .ok_or_else(|| RunError::Config("sip.tls_cert: required by a tls listener".into()))?;
    let key_path = config
        .sip
        .tls_key
        .as_ref()
        .ok_or_else(|| RunError::Config("sip.tls_key: required by a tls listener".into()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| RunError::Config(format!("sip.tls_cert: {}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(RunError::Config(format!(
            "sip.tls_cert: {}: no certificate in the file",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| RunError::Config(format!("sip.tls_key: {}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RunError::Config(format!("sip.tls_cert: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| RunError::Config(format!("sip.tls_key: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// The data directory's lock file. A second Reel on the same data directory would take the
/// first one's live sessions for a crash's leftovers and finalize them under it (one
/// recording cut short, a second one of silence): it must not start.
pub const LOCK_FILE: &str = "reel.lock";

fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, RunError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let fail =
        |e: std::io::Error| RunError::Runtime(format!("data_dir lock {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(RunError::Runtime(format!(
                "data_dir {} is in use by another reel (pid {}); each instance needs its own --data-dir",
                dir.display(),
                holder.trim()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
    }
    file.set_len(0).map_err(fail)?;
    file.rewind().map_err(fail)?;
    writeln!(file, "{}", std::process::id()).map_err(fail)?;
    Ok(file)
}

async fn serve(config: Config, backend: BackendChoice) -> Result<(), RunError> {
    let mut spool = Spool::open(&config.data_dir)
        .map_err(|e| RunError::Runtime(format!("data_dir {}: {e}", config.data_dir.display())))?;
    // Held until serve returns: the kernel drops the lock when the process dies, kill -9 too.
    let _lock = lock_data_dir(&config.data_dir)?;
    let audio =
        crate::record::finalize::AudioFormat::parse(&config.record.audio).ok_or_else(|| {
            RunError::Config(format!(
                "record.audio: unknown format {:?}",
                config.record.audio
            ))
        })?;
    spool.set_audio_format(audio);
    spool.set_keep_raw(config.record.keep_raw);
    // The writer makes state durable with one file-system sync per group commit.
    spool.set_state_fsync(false);
    let (input_tx, mut inputs) = mpsc::channel::<Input>(8192);
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let (media_tx, mut media_reports) = mpsc::unbounded_channel();
    media::raise_fd_limit();
    let (media_threads, rings) = media::start(
        config.media.threads,
        &config.media.cpus,
        backend.backend,
        (config.media.tproxy_port != 0).then_some(media::Tproxy {
            port: config.media.tproxy_port,
            // One socket holds every stream of its thread across a wake (80 ms and more).
            rcvbuf: 128 << 20,
        }),
        media_tx,
    )
    .map_err(|e| RunError::Runtime(format!("cannot start the media threads: {e}")))?;
    // The ports the last run's unfinished calls received on: their SRCs may still send there.
    let stale_ports = Spool::rtp_ports_of(&spool.spooled());
    let writer_counters = Arc::new(writer::WriterCounters::default());
    let writer = writer::start(
        spool,
        report_tx,
        rings,
        writer::WriterConfig {
            commit_interval: Duration::from_millis(config.media.journal_fsync_ms),
            commit_bytes: 256 * 1024,
        },
        writer_counters.clone(),
    )
    .map_err(|e| RunError::Runtime(format!("cannot start the writer thread: {e}")))?;

    let tls = if config
        .sip
        .listen
        .iter()
        .any(|l| l.proto == ListenProto::Tls)
    {
        Some(tls_acceptor(&config)?)
    } else {
        None
    };
    let next_conn = Rc::new(std::cell::Cell::new(1u64));
    let mut udp: Vec<Rc<UdpSocket>> = Vec::new();
    for l in &config.sip.listen {
        let bind_err = |e: std::io::Error| {
            RunError::Runtime(format!("cannot listen on {:?} {}: {e}", l.proto, l.addr))
        };
        match l.proto {
            ListenProto::Udp => {
                let sock = bind_udp(l.addr).map_err(bind_err)?;
                let sock = Rc::new(sock);
                tokio::task::spawn_local(udp_reader(
                    sock.clone(),
                    input_tx.clone(),
                    config.sip.max_message_bytes,
                ));
                udp.push(sock);
            }
            ListenProto::Tcp | ListenProto::Tls => {
                let listener = TcpListener::bind(l.addr).await.map_err(bind_err)?;
                let acceptor = if l.proto == ListenProto::Tls {
                    tls.clone()
                } else {
                    None
                };
                tokio::task::spawn_local(accept_loop(
                    listener,
                    acceptor,
                    input_tx.clone(),
                    next_conn.clone(),
                    config.sip.max_message_bytes,
                ));
            }
        }
        tracing::info!(proto = ?l.proto, addr = %l.addr, "SIP listening");
    }
    let http = TcpListener::bind(config.http.listen).await.map_err(|e| {
        RunError::Runtime(format!("cannot listen on http {}: {e}", config.http.listen))
    })?;
    tracing::info!(addr = %config.http.listen, "HTTP API listening");
    let (http_tx, mut http_queries) = mpsc::unbounded_channel::<http::Query>();
    tokio::task::spawn_local(http::serve(http, http_tx));

    let pool = PortPool::new(
        config.media.rtp_port_lo,
        config.media.rtp_port_hi,
        config.media.rcvbuf,
    );
    tracing::info!(
        lo = config.media.rtp_port_lo,
        hi = config.media.rtp_port_hi,
        pairs = pool.capacity(),
        "RTP port range"
    );
    let tproxy = tproxy_split(&config).inspect(|split| {
        for (i, rule) in split.nft_rules(config.media.tproxy_port).iter().enumerate() {
            tracing::info!("media thread {i}: TPROXY mode expects: nft {rule}");
        }
    });
    let host = host::Host::new(
        pool,
        config.sip.advertise_ip,
        media_threads,
        config.media.latch,
    )
    .with_split(tproxy);
    let held = host.cool(&stale_ports, Instant::now());
    if held > 0 {
        tracing::info!(
            pairs = held,
            quiet_s = crate::control::ports::COOL_QUIET.as_secs(),
            "holding back the RTP ports of the last run's unfinished calls until no RTP reaches them"
        );
    }
    let rc = RecorderConfig {
        node_name: config.node_name.clone(),
        max_sessions: config.sip.max_sessions,
        max_streams: config.sip.max_streams,
        retry_after_s: config.sip.retry_after_s,
        min_se_s: config.sip.min_se_s,
        drain_timeout: Duration::from_secs(u64::from(config.sip.drain_timeout_s)),
        allow_from: config.sip.allow_from.clone(),
        metadata_max_bytes: config.record.max_metadata_bytes,
        metadata_max_depth: config.record.max_metadata_depth,
        prefer_wav_codecs: config.record.codec_preference == "wav",
        endpoint: EndpointConfig::default(),
        fault_injection: cfg!(debug_assertions)
            && std::env::var_os("REEL_FAULT_INJECTION").is_some(),
    };
    let mut recorder = Recorder::new(rc, Box::new(host.clone()), rand::random());

    let mut conns: HashMap<ConnId, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let mut snapshot = crate::metrics::Snapshot {
        disk_ok: true,
        ..Default::default()
    };
    let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let data_dir = config.data_dir.clone();
    let mut guard = PanicGuard::default();

    loop {
        // Outputs first: every input may have produced transmits and storage work.
        while let Some(t) = recorder.poll_transmit() {
            send(
                t,
                &udp,
                &conns,
                &input_tx,
                &next_conn,
                config.sip.max_message_bytes,
            );
        }
        while let Some(op) = recorder.poll_storage() {
            if writer.ops.send(op).is_err() {
                return Err(RunError::Runtime("the writer thread stopped".into()));
            }
        }
        if recorder.is_drained(Instant::now()) {
            break;
        }
        let deadline = recorder.poll_timeout().map(tokio::time::Instant::from_std);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(input) = inputs.recv() => match input {
                Input::Message { flow, data } => {
                    let t = match flow.transport { Transport::Udp => "udp", Transport::Tcp => "tcp", Transport::Tls => "tls" };
                    *snapshot.sip_messages_received.entry(t).or_default() += 1;
                    guard.run("a SIP message", || recorder.handle_message(Instant::now(), SystemTime::now(), flow, &data));
                }
                Input::TooLarge { flow, head, total } => {
                    let reason = format!("message of {total} bytes exceeds sip.max_message_bytes ({})", config.sip.max_message_bytes);
                    guard.run("an over-size SIP message", || recorder.handle_too_large(Instant::now(), SystemTime::now(), flow, &head, &reason));
                }
                Input::Opened { conn, writer } => {
                    conns.insert(conn, writer);
                }
                Input::Closed { conn } => {
                    conns.remove(&conn);
                    guard.run("a closed connection", || recorder.handle_connection_closed(Instant::now(), SystemTime::now(), conn));
                }
            },
            Some(report) = reports.recv() => match report {
                writer::WriterReport::Begun { session, result } => {
                    if result.is_err() { snapshot.storage_errors += 1; }
                    guard.run("a storage report", || recorder.handle_storage(Instant::now(), SystemTime::now(), session, result));
                }
                writer::WriterReport::Finalized { result, .. } => match result {
                    Ok(_) => snapshot.recordings_finalized += 1,
                    Err(_) => snapshot.storage_errors += 1,
                },
                writer::WriterReport::Recovered { count } => snapshot.recordings_recovered += count as u64,
                writer::WriterReport::Error => snapshot.storage_errors += 1,
            },
            Some(report) = media_reports.recv() => match report {
                crate::media::worker::MediaReport::Closed { key } => host.stream_closed(key),
            },
            _ = sleep => guard.run("a timer", || recorder.handle_timeout(Instant::now(), SystemTime::now())),
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: draining (new sessions get 503)");
                recorder.start_drain(Instant::now());
            }
            _ = sigint.recv() => {
                tracing::info!("SIGINT: draining (new sessions get 503)");
                recorder.start_drain(Instant::now());
            }
            _ = tick.tick() => {
                let ok = disk_ok(&data_dir);
                if ok != snapshot.disk_ok {
                    if ok { tracing::info!("free disk space is back above the threshold"); }
                    else { tracing::warn!(min_free_bytes = MIN_FREE_BYTES, "free disk space low: new sessions get 503"); }
                }
                snapshot.disk_ok = ok;
                recorder.set_disk_ok(ok);
                let back = host.check_cooling(Instant::now());
                if !back.is_empty() {
                    tracing::info!(pairs = back.len(), first = back[0], still_held = host.0.borrow().pool.cooling(), "held-back RTP ports went quiet: back in the pool");
                }
            }
            // What the HTTP API shows is built when asked for, not on a timer: the sessions
            // list is O(sessions) and an idle recorder must not pay for it.
            Some(q) = http_queries.recv() => {
                snapshot.control_panics = recorder.stats.panics + guard.count;
                let p = publish(&recorder, &host, &writer_counters, &mut snapshot, q.sessions, backend.backend.as_str());
                let _ = q.reply.send(p);
            }
        }
    }
    // Media threads first: each closes its sockets and sends its streams' end records; then
    // the writer, which finalizes what is pending and commits what is open.
    media::stop(&mut host.0.borrow_mut().media);
    drop(writer.ops);
    let _ = tokio::task::spawn_blocking(move || writer.handle.join()).await;
    tracing::info!("drained: every recording is finalized; exiting");
    Ok(())
}

/// Catches a panic of the control loop's handlers (a bug), so that it costs the input that
/// met it and not every call the process records. The recorder answers a request whose
/// handling panicked with 500 itself; what is caught here is the rest (parsing, timers,
/// storage reports). A bug that panics again and again (a timer firing at once after each
/// panic) must not spin for ever: [`PanicGuard::LIMIT`] panics within a minute end the
/// process with exit code 70, and the restart's crash scan recovers the recordings.
#[derive(Default)]
struct PanicGuard {
    count: u64,
    recent: std::collections::VecDeque<Instant>,
}

impl PanicGuard {
    const LIMIT: usize = 20;

    fn run(&mut self, what: &str, f: impl FnOnce()) {
        let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) else {
            return;
        };
        self.count += 1;
        let text = crate::panic_text(payload.as_ref());
        tracing::error!(
            panic = text,
            "BUG: handling {what} panicked; the control loop goes on"
        );
        let now = Instant::now();
        self.recent.push_back(now);
        while self.recent.len() > Self::LIMIT {
            self.recent.pop_front();
        }
        if self.recent.len() == Self::LIMIT
            && self
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60))
        {
            tracing::error!(
                "{} panics within a minute: exiting (70) so that a restart recovers the recordings",
                Self::LIMIT
            );
            std::process::exit(70);
        }
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, RunError> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| RunError::Runtime(format!("cannot install a signal handler: {e}")))
}

fn publish(
    recorder: &Recorder,
    host: &host::Host,
    writer: &writer::WriterCounters,
    snapshot: &mut crate::metrics::Snapshot,
    sessions: bool,
    backend: &str,
) -> http::Published {
    use std::sync::atomic::Ordering::Relaxed;
    snapshot.sessions_active = recorder.session_count() as u64;
    snapshot.sessions_started = recorder.stats.sessions_started;
    snapshot.sessions_ended = recorder.stats.sessions_ended;
    snapshot.sip_transactions = recorder.transaction_count() as u64;
    snapshot.sip_malformed = recorder.stats.malformed;
    snapshot.sip_rejected = recorder
        .stats
        .rejected
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    {
        let h = host.0.borrow();
        snapshot.rtp_ports_in_use = h.pool.in_use() as u64;
        snapshot.rtp_ports_capacity = h.pool.capacity() as u64;
        snapshot.rtp_ports_held_back = h.pool.cooling() as u64;
        snapshot.media = h
            .media
            .iter()
            .map(|t| {
                let c = &t.counters;
                crate::metrics::MediaThreadStats {
                    packets: c.packets.load(Relaxed),
                    bytes: c.bytes.load(Relaxed),
                    foreign: c.foreign.load(Relaxed),
                    duplicates: c.duplicates.load(Relaxed),
                    srtp_failures: c.srtp_failures.load(Relaxed),
                    malformed: c.malformed.load(Relaxed),
                    rtcp: c.rtcp.load(Relaxed),
                    ring_drops: c.ring_drops.load(Relaxed),
                    unrouted: c.unrouted.load(Relaxed),
                    tproxy_bypass: c.tproxy_bypass.load(Relaxed),
                    ring_used_bytes: c.ring_used_bytes.load(Relaxed),
                    enobufs: c.enobufs.load(Relaxed),
                    wakeups: c.wakeups.load(Relaxed),
                    streams: c.streams.load(Relaxed),
                }
            })
            .collect();
    }
    snapshot.journal_bytes = writer.journal_bytes.load(Relaxed);
    snapshot.journal_commits = writer.journal_commits.load(Relaxed);
    snapshot.journal_write_latency_us = writer.journal_write_latency_us.load(Relaxed);
    snapshot.journal_errors = writer.journal_errors.load(Relaxed);
    snapshot.journal_dropped = writer.journal_dropped.load(Relaxed);
    snapshot.draining = recorder.is_draining();
    http::Published {
        snapshot: snapshot.clone(),
        sessions: if sessions {
            recorder.active_sessions()
        } else {
            Vec::new()
        },
        backend: backend.to_string(),
    }
}

fn disk_ok(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: statvfs writes one `struct statvfs` into the zeroed value we own; `path` is a
    // valid NUL-terminated string for the whole call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return true;
    }
    (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) >= MIN_FREE_BYTES
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let std = std::net::UdpSocket::bind(addr)?;
    std.set_nonblocking(true)?;
    UdpSocket::from_std(std)
}

async fn udp_reader(sock: Rc<UdpSocket>, inputs: mpsc::Sender<Input>, max_message: usize) {
    let Ok(local) = sock.local_addr() else { return };
    // SIPREC INVITEs are 2-4 KB and can exceed 8 KB with big metadata: take any datagram.
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, remote)) if n > max_message => {
                let flow = Flow {
                    transport: Transport::Udp,
                    local,
                    remote: unmap(remote),
                    conn: None,
                };
                // Answered 513 from its header section when that is whole; dropped otherwise.
                let Some(head) = crate::sip::framing::head_of(&buf[..n]) else {
                    tracing::info!(%remote, bytes = n, limit = max_message, "dropped an over-size SIP datagram");
                    continue;
                };
                tracing::info!(%remote, bytes = n, limit = max_message, "an over-size SIP datagram: answered 513");
                let (head, total) = (head.to_vec(), n);
                if inputs
                    .send(Input::TooLarge { flow, head, total })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok((n, remote)) => {
                let flow = Flow {
                    transport: Transport::Udp,
                    local,
                    remote: unmap(remote),
                    conn: None,
                };
                if inputs
                    .send(Input::Message {
                        flow,
                        data: buf[..n].to_vec(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // ICMP port unreachable from an earlier send surfaces here on Linux: not fatal.
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    inputs: mpsc::Sender<Input>,
    next_conn: Rc<std::cell::Cell<u64>>,
    max_message: usize,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if open.get() >= MAX_CONNECTIONS {
            tracing::warn!(%remote, "too many SIP connections; refusing one");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = ConnId(next_conn.get());
        next_conn.set(conn.0 + 1);
        let transport = if tls.is_some() {
            Transport::Tls
        } else {
            Transport::Tcp
        };
        let flow = Flow {
            transport,
            local: unmap(local),
            remote: unmap(remote),
            conn: Some(conn),
        };
        let inputs = inputs.clone();
        let tls = tls.clone();
        let open = open.clone();
        open.set(open.get() + 1);
        tokio::task::spawn_local(async move {
            match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(s)) => connection(s, flow, inputs, max_message).await,
                        Ok(Err(e)) => tracing::info!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                    }
                }
                None => connection(stream, flow, inputs, max_message).await,
            }
            open.set(open.get().saturating_sub(1));
        });
    }
}

/// Reads frames from one stream connection and writes what the loop sends it.
async fn connection<S>(stream: S, flow: Flow, inputs: mpsc::Sender<Input>, max_message: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(conn) = flow.conn else { return };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    if inputs
        .send(Input::Opened {
            conn,
            writer: wtx.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let mut framer = StreamFramer::new(max_message);
    let mut buf = vec![0u8; 16384];
    // Slow-loris guard: a peer must send its first message (or keep-alive ping), and then
    // finish each message it starts, within MESSAGE_DEADLINE. An idle connection between messages is kept as long as the peer
    // likes (SRCs hold theirs for the calls' lifetime); one that trickles a header forever
    // would otherwise hold one of the MAX_CONNECTIONS slots for good.
    let mut unfinished_since = Some(tokio::time::Instant::now());
    // An over-size message's body is being discarded (see `Frame::TooLarge`).
    let mut skipping = false;
    'outer: loop {
        let deadline = unfinished_since.map(|t| t + MESSAGE_DEADLINE);
        tokio::select! {
            read = rd.read(&mut buf) => {
                let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                framer.push(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(data))) => {
                            unfinished_since = None;
                            if inputs.send(Input::Message { flow, data }).await.is_err() { break 'outer; }
                        }
                        Ok(Some(Frame::Ping)) => {
                            unfinished_since = None;
                            let _ = wtx.send(b"\r\n".to_vec());
                        }
                        Ok(Some(Frame::TooLarge { head, total })) => {
                            // Its head was whole; the body to skip gets a deadline of its own.
                            unfinished_since = None;
                            skipping = true;
                            tracing::info!(remote = %flow.remote, bytes = total, limit = max_message,
                                "an over-size SIP message: answered 513, its body skipped, the connection kept");
                            if inputs.send(Input::TooLarge { flow, head, total }).await.is_err() { break 'outer; }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(remote = %flow.remote, error = %e.reason, "closing a SIP connection: bad framing");
                            break 'outer;
                        }
                    }
                }
                if framer.buffered() > 0 && unfinished_since.is_none() {
                    unfinished_since = Some(tokio::time::Instant::now());
                } else if skipping && framer.buffered() == 0 {
                    // The skipped body is all in and nothing follows: idle between messages.
                    skipping = false;
                    unfinished_since = None;
                }
            }
            Some(data) = wrx.recv() => {
                if wr.write_all(&data).await.is_err() { break; }
            }
            () = sleep_until_or_never(deadline) => {
                tracing::info!(remote = %flow.remote, buffered = framer.buffered(),
                    "closing a SIP connection: no whole message within {} s", MESSAGE_DEADLINE.as_secs());
                break;
            }
        }
    }
    let _ = inputs.send(Input::Closed { conn }).await;
}

fn send(
    t: crate::sip::Transmit,
    udp: &[Rc<UdpSocket>],
    conns: &HashMap<ConnId, mpsc::UnboundedSender<Vec<u8>>>,
    inputs: &mpsc::Sender<Input>,
    next_conn: &Rc<std::cell::Cell<u64>>,
    max_message: usize,
) {
    match t.flow.transport {
        Transport::Udp => {
            let sock = udp
                .iter()
                .find(|s| {
                    s.local_addr()
                        .map(|a| unmap(a) == t.flow.local)
                        .unwrap_or(false)
                })
                .or_else(|| udp.iter().find(|s| same_family(s, &t.flow.remote)))
                .or(udp.first());
            let Some(sock) = sock else { return };
            let dest = match (sock.local_addr(), t.flow.remote) {
                (Ok(SocketAddr::V6(_)), SocketAddr::V4(v4)) => {
                    SocketAddr::new(std::net::IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
                }
                (_, d) => d,
            };
            // UDP sends never block the control thread: a full socket buffer drops the
            // datagram and the transaction's retransmission covers it.
            let _ = sock.try_send_to(&t.data, dest);
        }
        Transport::Tcp | Transport::Tls => {
            if let Some(w) = t.flow.conn.and_then(|c| conns.get(&c)) {
                let _ = w.send(t.data);
                return;
            }
            if t.flow.transport == Transport::Tls {
                tracing::warn!(remote = %t.flow.remote, "TLS connection gone; cannot reopen one to send");
                return;
            }
            // RFC 3261 §18.2.2: the connection is gone, open a new one to the same address.
            let conn = ConnId(next_conn.get());
            next_conn.set(conn.0 + 1);
            let inputs = inputs.clone();
            tokio::task::spawn_local(async move {
                let connect =
                    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(t.flow.remote))
                        .await;
                let Ok(Ok(stream)) = connect else {
                    tracing::info!(remote = %t.flow.remote, "cannot open a TCP connection to send");
                    return;
                };
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().map(unmap).unwrap_or(t.flow.local);
                let flow = Flow {
                    transport: Transport::Tcp,
                    local,
                    remote: t.flow.remote,
                    conn: Some(conn),
                };
                let mut stream = stream;
                if stream.write_all(&t.data).await.is_err() {
                    return;
                }
                connection(stream, flow, inputs, max_message).await;
            });
        }
    }
}

fn same_family(sock: &UdpSocket, remote: &SocketAddr) -> bool {
    sock.local_addr()
        .map(|a| a.is_ipv6() == remote.is_ipv6() || a.is_ipv6())
        .unwrap_or(false)
}

fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(std::net::IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::PanicGuard;

    #[test]
    fn the_panic_guard_catches_and_counts_and_the_loop_goes_on() {
        let mut guard = PanicGuard::default();
        let mut ran = 0;
        guard.run("a test input", || panic!("a bug"));
        guard.run("a test input", || ran += 1);
        assert_eq!(guard.count, 1);
        assert_eq!(ran, 1);
        assert_eq!(guard.recent.len(), 1);
    }
}
