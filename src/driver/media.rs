//! Starting the media threads and talking to them from the control thread.
//!
//! Each media thread owns one receive backend (created on that thread: a single-issuer
//! io_uring belongs to the thread that made it), pinned to its CPU when `media.cpus` says so,
//! and one packet ring to the writer. The control thread sends it streams to record and hears
//! back when a stream's sockets are closed, so the port can be reused.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::media::backend::{self, BackendConfig, Batch, Waker};
use crate::media::probe::Backend;
use crate::media::ring::{RingReader, packet_ring};
use crate::media::worker::{MediaCommand, MediaCounters, MediaReport, PortActivity, Worker};

/// Bytes of each media thread's packet ring: at 100,000 packets/s of ~200 bytes this holds
/// more than a second, far beyond the writer's 10 ms drain tick.
const RING_BYTES: usize = 32 * 1024 * 1024;

/// TPROXY mode (`media.tproxy_port`): media thread `i` receives on `port + i`.
#[derive(Clone, Copy, Debug)]
pub struct Tproxy {
    pub port: u16,
    /// Receive buffer of each shared socket: it holds every stream of the thread.
    pub rcvbuf: usize,
}

pub struct MediaThread {
    pub commands: mpsc::Sender<MediaCommand>,
    pub waker: Waker,
    pub counters: Arc<MediaCounters>,
    /// TPROXY mode: unrouted datagrams per port, shared by every media thread.
    pub activity: Option<Arc<PortActivity>>,
    pub backend: &'static str,
    handle: Option<thread::JoinHandle<()>>,
}

impl MediaThread {
    pub fn send(&self, cmd: MediaCommand) {
        if self.commands.send(cmd).is_ok() {
            self.waker.wake();
        }
    }
}

/// What each media thread's receive backend is opened with (also the bench's one-socket
/// floor, so that it measures the same waits and buffers).
pub fn backend_config(max_sockets: u32) -> BackendConfig {
    BackendConfig {
        max_sockets,
        // A recorder needs no per-packet latency: let ~80 ms of packets pile up (about four
        // per stream) so each wake drains thousands of completions and each socket's receive
        // work is shared by several packets. Measured at 1,000 calls in alternating runs
        // (bench record --variants c,reel): media thread 2.14 / 2.18 us/packet at 20 ms,
        // 1.70 / 1.80 at 40 ms; 1.86 / 1.60 at 40 ms against 1.44 / 1.34 at 80 ms. The wake
        // comes earlier when `min_complete` packets are in (three quarters of the buffers),
        // so a busier thread never runs out of buffers. Cost: 32 MiB of receive buffers per
        // media thread.
        batch: Some(Batch {
            min_complete: 12288,
            min_wait: Duration::from_millis(80),
        }),
        buf_count: 16384,
        ..BackendConfig::default()
    }
}

/// Starts `count` media threads; returns them and the rings for the writer.
pub fn start(
    count: usize,
    cpus: &[usize],
    kind: Backend,
    tproxy: Option<Tproxy>,
    reports: tokio::sync::mpsc::UnboundedSender<MediaReport>,
) -> std::io::Result<(Vec<MediaThread>, Vec<RingReader>)> {
    let max_sockets = fd_limit().clamp(1024, 65536) as u32;
    let mut threads = Vec::new();
    let mut rings = Vec::new();
    let activity = tproxy.map(|_| Arc::new(PortActivity::new()));
    for i in 0..count.max(1) {
        let (ring_w, ring_r) = packet_ring(RING_BYTES);
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let counters = Arc::new(MediaCounters::default());
        let thread_counters = counters.clone();
        let cpu = cpus.get(i).copied();
        let reports = reports.clone();
        let thread_activity = activity.clone();
        let shared = match tproxy {
            Some(t) => {
                let port = t.port + i as u16;
                let sock = backend::open_tproxy_socket(port, t.rcvbuf).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("media.tproxy_port {port}: {e}"))
                })?;
                Some(sock)
            }
            None => None,
        };
        let handle = thread::Builder::new()
            .name(format!("reel-media-{i}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu);
                }
                let config = backend_config(max_sockets);
                let opened = backend::open_backend(kind, &config).or_else(|e| {
                tracing::warn!(error = %e, "media thread {i}: io_uring setup failed; using epoll");
                backend::open_backend(Backend::Epoll, &config)
            });
                let backend = match opened {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let ready = (backend.waker(), backend.name());
                let sink = Box::new(move |r: MediaReport| {
                    let _ = reports.send(r);
                });
                let worker = Worker::new(
                    backend,
                    cmd_rx,
                    sink,
                    ring_w,
                    thread_counters,
                    Duration::ZERO,
                );
                let worker = match shared {
                    Some(sock) => {
                        match worker.with_tproxy(sock, thread_activity.unwrap_or_default()) {
                            Ok(w) => w,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    None => worker,
                };
                let _ = ready_tx.send(Ok(ready));
                // A media thread that died would leave its streams deaf while SIP goes on
                // answering 200: end the process instead, so the restart recovers them.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run())).is_err() {
                    tracing::error!("BUG: media thread {i} panicked; exiting (70) so that a restart recovers its recordings");
                    std::process::exit(70);
                }
            })?;
        let (waker, name) = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("media thread died at start"))??;
        let tproxy_port = tproxy.map(|t| t.port + i as u16);
        tracing::info!(thread = i, backend = name, cpu = ?cpu, tproxy_port = ?tproxy_port, "media thread started");
        threads.push(MediaThread {
            commands: cmd_tx,
            waker,
            counters,
            activity: activity.clone(),
            backend: name,
            handle: Some(handle),
        });
        rings.push(ring_r);
    }
    Ok((threads, rings))
}

/// Stops every media thread (each closes its sockets and sends its streams' end records).
pub fn stop(threads: &mut [MediaThread]) {
    for t in threads.iter() {
        t.send(MediaCommand::Shutdown);
    }
    for t in threads.iter_mut() {
        if let Some(h) = t.handle.take() {
            let _ = h.join();
        }
    }
}

fn fd_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the value we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc == 0 { lim.rlim_cur as usize } else { 1024 }
}

/// Raises the soft descriptor limit to the hard one: every stream holds two sockets.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit value we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it
    // for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(cpu, "cannot pin a media thread to its CPU");
        }
    }
}

/// Lowers the calling thread's CPU priority to nice `nice` (background work such as the crash
/// scan); a failure leaves it as it was.
pub fn lower_this_thread(nice: i32) {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and our own thread id
    // changes only this thread's nice value.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
    }
}
