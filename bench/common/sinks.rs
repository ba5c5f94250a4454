//! Receive-path sinks shared by `bench/recv.rs` and `bench/record.rs`: the round-robin
//! `sendmmsg` sender, the paced run (io_uring or epoll receiver against the sender) and the
//! drain floor (fill the queues, then time only the drains). See `bench/recv.rs` for the
//! variants.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use reel::media::backend::{BackendConfig, BackendStats, Batch, open_backend, set_receive_buffer};
use reel::media::probe::Backend;

pub const PAYLOAD: usize = 172;

#[derive(Clone, Debug)]
pub struct Args {
    pub sockets: usize,
    pub pps_per_socket: u64,
    pub seconds: u64,
    pub variants: Vec<char>,
    pub batch_ms: u64,
    pub slice_ms: u64,
    pub pin: bool,
}

pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which outlives the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn process_cpu_ns() -> u64 {
    // SAFETY: getrusage fills the zero-initialised rusage it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `ru` outlives the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is a plain bit set; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set`; sched_setaffinity reads `set` for the call.
    unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The machine and command lines every run starts with (DESIGN §7).
pub fn print_machine() {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    println!(
        "machine: nproc {} | {} {} | {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        read("/proc/sys/kernel/ostype"),
        read("/proc/sys/kernel/osrelease"),
        cpu_model
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
}

pub fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct that outlives the calls.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Sends round-robin to `dests` with `sendmmsg`, reusing prebuilt headers.
pub struct Sender {
    pub sock: UdpSocket,
    pub _names: Vec<libc::sockaddr_in>,
    pub _payload: Box<[u8; PAYLOAD]>,
    pub _iov: Box<libc::iovec>,
    pub msgs: Vec<libc::mmsghdr>,
    pub pos: usize,
    pub sent: u64,
    pub errors: u64,
}

impl Sender {
    pub fn new(dests: &[SocketAddr]) -> Sender {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        let mut payload = Box::new([0u8; PAYLOAD]);
        payload[0] = 0x80; // RTP v2
        payload[1] = 0x00; // PCMU
        let names: Vec<libc::sockaddr_in> = dests
            .iter()
            .map(|d| {
                let SocketAddr::V4(v4) = d else {
                    panic!("bench uses 127.0.0.1 only")
                };
                libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                }
            })
            .collect();
        let mut iov = Box::new(libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: PAYLOAD,
        });
        let msgs = names
            .iter()
            .map(|n| {
                // SAFETY: mmsghdr is plain C data; all-zero is valid.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (n as *const libc::sockaddr_in).cast_mut().cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = &mut *iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        Sender {
            sock,
            _names: names,
            _payload: payload,
            _iov: iov,
            msgs,
            pos: 0,
            sent: 0,
            errors: 0,
        }
    }

    /// Sends up to `n` packets; returns how many the kernel took.
    pub fn send(&mut self, mut n: u64) -> u64 {
        let mut took = 0;
        while n > 0 {
            let k = (n as usize).min(self.msgs.len() - self.pos).min(256);
            // SAFETY: msgs[pos..pos+k] are initialised headers pointing at `_names`,
            // `_iov` and `_payload`, all owned by self and alive for the call.
            let r = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    self.msgs.as_mut_ptr().add(self.pos),
                    k as u32,
                    0,
                )
            };
            if r <= 0 {
                self.errors += 1;
                break;
            }
            let r = r as usize;
            self.pos = (self.pos + r) % self.msgs.len();
            took += r as u64;
            n -= r as u64;
        }
        self.sent += took;
        took
    }
}

#[derive(Default, Clone, Debug)]
pub struct Outcome {
    pub sent: u64,
    pub received: u64,
    pub rx_cpu_ns: u64,
    pub tx_cpu_ns: u64,
    pub process_cpu_ns: u64,
    pub stats: BackendStats,
    pub wall: Duration,
    pub note: String,
}

pub fn make_sockets(n: usize) -> (Vec<UdpSocket>, Vec<SocketAddr>) {
    let mut socks = Vec::with_capacity(n);
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind receiver socket");
        s.set_nonblocking(true).expect("nonblocking");
        // Room for a 5 ms stall at any rate used here; same for every variant.
        let _ = set_receive_buffer(&s, 1 << 20);
        addrs.push(s.local_addr().expect("addr"));
        socks.push(s);
    }
    (socks, addrs)
}

pub fn config_for(v: char, args: &Args) -> BackendConfig {
    let base = BackendConfig {
        max_sockets: (args.sockets as u32).next_power_of_two().max(64),
        ..BackendConfig::default()
    };
    match v {
        // The floor drains with the same batched waits as d: with DEFER_TASKRUN a wait for
        // one completion runs only a few sockets' receive work (the kernel caps task work
        // per loop), so "wait for 1" would measure wake overhead, not the drain.
        'c' | 'd' => BackendConfig {
            batch: Some(Batch {
                min_complete: base.buf_count / 2,
                min_wait: Duration::from_millis(args.batch_ms),
            }),
            ..base
        },
        _ => base,
    }
}

/// Variants a, b, d, e: paced sender and receiver running together.
pub fn run_paced(v: char, args: &Args) -> Outcome {
    let kind = if matches!(v, 'b' | 'e') {
        Backend::Epoll
    } else {
        Backend::Uring
    };
    let (socks, addrs) = make_sockets(args.sockets);
    let batch_sleep = (v == 'e').then(|| Duration::from_millis(args.batch_ms));
    run_paced_on(kind, config_for(v, args), socks, &addrs, batch_sleep, args)
}

/// The paced run: one sender thread sends round-robin to `addrs` at `args`' rate while a
/// receiver thread polls `socks` (which may be fewer than `addrs`: one TPROXY socket takes
/// every port) with `config`, sleeping `batch_sleep` between polls when given.
pub fn run_paced_on(
    kind: Backend,
    config: BackendConfig,
    socks: Vec<UdpSocket>,
    addrs: &[SocketAddr],
    batch_sleep: Option<Duration>,
    args: &Args,
) -> Outcome {
    let start = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let sent_total = Arc::new(AtomicU64::new(0));
    let (rx_start, rx_done, rx_sent) = (start.clone(), done.clone(), sent_total.clone());
    let pin = args.pin;
    // A batched wait is cut short by the poll's timeout: give it room to run its course.
    let wait = config.batch.map_or(Duration::from_millis(20), |b| {
        b.min_wait + Duration::from_millis(20)
    });
    let rx = std::thread::spawn(move || {
        if pin {
            pin_to(1);
        }
        let mut b = open_backend(kind, &config).expect("open backend");
        for (t, s) in socks.into_iter().enumerate() {
            b.add_socket(s, t as u64).expect("add socket");
        }
        b.poll(Duration::ZERO, &mut |_| {}).expect("first poll");
        let mut received = 0u64;
        let mut bytes = 0u64;
        rx_start.wait();
        let cpu0 = thread_cpu_ns();
        let mut last_progress = Instant::now();
        loop {
            let timeout = match batch_sleep {
                Some(d) => {
                    std::thread::sleep(d);
                    Duration::ZERO
                }
                None => wait,
            };
            let n = b
                .poll(timeout, &mut |p| {
                    received += 1;
                    bytes += p.data.len() as u64;
                })
                .expect("poll");
            if n > 0 {
                last_progress = Instant::now();
            }
            if rx_done.load(Ordering::Acquire)
                && (received >= rx_sent.load(Ordering::Acquire)
                    || last_progress.elapsed() > Duration::from_millis(300))
            {
                break;
            }
        }
        let cpu = thread_cpu_ns() - cpu0;
        std::hint::black_box(bytes);
        (received, cpu, b.stats())
    });

    if args.pin {
        pin_to(0);
    }
    let mut tx = Sender::new(addrs);
    start.wait();
    let proc0 = process_cpu_ns();
    let tx_cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    let rate = addrs.len() as u64 * args.pps_per_socket;
    let total = rate * args.seconds;
    let slice = Duration::from_millis(args.slice_ms);
    let mut next = t0;
    while tx.sent < total {
        let elapsed = t0.elapsed();
        let due = ((rate as u128 * elapsed.as_nanos()) / 1_000_000_000).min(total as u128) as u64;
        if due > tx.sent {
            tx.send(due - tx.sent);
        }
        if elapsed > Duration::from_secs(args.seconds + 5) {
            break; // the kernel keeps refusing; report what went
        }
        next += slice;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let tx_cpu = thread_cpu_ns() - tx_cpu0;
    sent_total.store(tx.sent, Ordering::Release);
    done.store(true, Ordering::Release);
    let (received, rx_cpu, stats) = rx.join().expect("receiver thread");
    Outcome {
        sent: tx.sent,
        received,
        rx_cpu_ns: rx_cpu,
        tx_cpu_ns: tx_cpu,
        process_cpu_ns: process_cpu_ns() - proc0,
        stats,
        wall: t0.elapsed(),
        note: if tx.errors > 0 {
            format!("{} sendmmsg errors", tx.errors)
        } else {
            String::new()
        },
    }
}

/// Variant c: fill the queues with the receiver idle, then time only the drains.
pub fn run_drain(args: &Args) -> Outcome {
    let config = config_for('c', args);
    let (socks, addrs) = make_sockets(args.sockets);
    let per_round = (config.buf_count as usize / args.sockets).clamp(1, 50) as u64;
    let per_socket = args.pps_per_socket * args.seconds;
    let rounds = per_socket.div_ceil(per_round);
    // Receiver and sender take turns; the channel carries "round r sent n packets".
    let (to_rx, rx_in) = std::sync::mpsc::channel::<u64>();
    let (to_tx, tx_in) = std::sync::mpsc::channel::<()>();
    let pin = args.pin;
    let rx = std::thread::spawn(move || {
        if pin {
            pin_to(1);
        }
        let mut b = open_backend(Backend::Uring, &config).expect("open backend");
        for (t, s) in socks.into_iter().enumerate() {
            b.add_socket(s, t as u64).expect("add socket");
        }
        b.poll(Duration::ZERO, &mut |_| {}).expect("first poll");
        let mut received = 0u64;
        let mut cpu = 0u64;
        let mut expected = 0u64;
        let _ = to_tx.send(());
        while let Ok(n) = rx_in.recv() {
            expected += n;
            let c0 = thread_cpu_ns();
            let give_up = Instant::now() + Duration::from_secs(2);
            while received < expected && Instant::now() < give_up {
                b.poll(Duration::from_millis(20), &mut |p| {
                    received += 1;
                    std::hint::black_box(p.data.len());
                })
                .expect("poll");
            }
            cpu += thread_cpu_ns() - c0;
            let _ = to_tx.send(());
        }
        (received, cpu, b.stats())
    });
    if args.pin {
        pin_to(0);
    }
    let mut tx = Sender::new(&addrs);
    let proc0 = process_cpu_ns();
    let t0 = Instant::now();
    let mut tx_cpu = 0;
    let mut sent_before = 0;
    for r in 0..rounds {
        if tx_in.recv().is_err() {
            break;
        }
        let n = per_round.min(per_socket - r * per_round) * args.sockets as u64;
        let c0 = thread_cpu_ns();
        tx.send(n);
        tx_cpu += thread_cpu_ns() - c0;
        // Let loopback delivery settle so the receiver's timed drain starts on full queues.
        std::thread::sleep(Duration::from_millis(2));
        if to_rx.send(tx.sent - sent_before).is_err() {
            break;
        }
        sent_before = tx.sent;
    }
    let _ = tx_in.recv();
    drop(to_rx);
    let (received, rx_cpu, stats) = rx.join().expect("receiver thread");
    Outcome {
        sent: tx.sent,
        received,
        rx_cpu_ns: rx_cpu,
        tx_cpu_ns: tx_cpu,
        process_cpu_ns: process_cpu_ns() - proc0,
        stats,
        wall: t0.elapsed(),
        note: format!("{rounds} rounds x {per_round} pkt/socket"),
    }
}
