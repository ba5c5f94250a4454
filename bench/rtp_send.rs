//! Throughput of the load tool's RTP sender (`reel::load::rtp_send`) on one thread.
//!
//! Setup: `--streams` G.711 streams (default 2,000: 1,000 recorded calls of two legs each),
//! each to its own destination port on 127.0.0.1. The receivers are bound UDP sockets with
//! the default SO_RCVBUF that nobody reads: each fills within the first second, and from
//! then on the kernel drops arriving datagrams at the socket (Udp RcvbufErrors, printed).
//! Default buffers rather than big ones keep the kernel memory of 2,000 full queues near
//! 0.4 GiB; the sender's work is the same either way. On loopback the receive path (IP,
//! UDP lookup, the queue or drop) runs in the sending thread's softirq, so the CPU time
//! per packet below includes it: a sender to a remote host does less per packet.
//!
//! Phases, `--seconds` each (default 5):
//! 1. unpaced: the streams' schedules run on virtual time, as fast as sendmmsg takes them;
//! 2. paced: real 20 ms packetisation, i.e. streams x 50 packets/s (100,000 for 2,000);
//! 3. dynamic unpaced: the same streams added through [`StreamControl`] commands, as
//!    `reel load` drives the sender (so the command path and its per-packet checks count).
//!
//! Prints packets/s, CPU µs per packet (getrusage of the sending thread) and the share of
//! one core. Goal: >= 200,000 packets/s from one core.
//!
//! Run: `cargo bench --bench rtp_send [-- --streams N --seconds S --batch N --single]`
//! (`--single`: every stream to one receiving socket instead of one port per stream).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use reel::load::rtp_send::{
    SendConfig, SendReport, Sender, StreamCommand, StreamControl, StreamSpec,
};

fn main() {
    let mut streams = 2000usize;
    let mut seconds = 5u64;
    let mut single = false;
    let mut batch = SendConfig::default().batch;
    let args: Vec<String> = std::env::args().collect();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        // cargo passes `--bench`; anything unknown is ignored the same way.
        match a.as_str() {
            "--streams" => streams = it.next().and_then(|v| v.parse().ok()).unwrap_or(streams),
            "--seconds" => seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            "--single" => single = true,
            "--batch" => batch = it.next().and_then(|v| v.parse().ok()).unwrap_or(batch),
            _ => {}
        }
    }
    print_machine(&args);

    let ports = if single { 1 } else { streams };
    println!(
        "destinations: {ports} receiving socket(s) on 127.0.0.1, default SO_RCVBUF, never read"
    );
    let receivers: Vec<UdpSocket> =
        match (0..ports).map(|_| UdpSocket::bind("127.0.0.1:0")).collect() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cannot bind {streams} receivers: {e}");
                std::process::exit(1);
            }
        };
    let dests: Vec<SocketAddr> = receivers
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .collect();
    let make = || -> Vec<StreamSpec> {
        dests
            .iter()
            .cycle()
            .take(streams)
            .enumerate()
            .map(|(i, &d)| StreamSpec::new(d, i as u32, 300.0 + (i % 20) as f32 * 100.0))
            .collect()
    };
    let duration = Duration::from_secs(seconds);

    for (name, paced, dynamic) in [
        ("unpaced", false, false),
        ("paced", true, false),
        ("dynamic", false, true),
    ] {
        let config = SendConfig {
            paced,
            batch,
            ..SendConfig::default()
        };
        // The control lives until the run ends, so a dynamic sender does not stop early.
        let mut _control: Option<StreamControl> = None;
        let built = if dynamic {
            Sender::dynamic(config).map(|(sender, control)| {
                for (i, spec) in make().into_iter().enumerate() {
                    control.send(StreamCommand::Add {
                        id: i as u64,
                        spec: Box::new(spec),
                    });
                }
                _control = Some(control);
                sender
            })
        } else {
            Sender::new(make(), config)
        };
        let sender = match built {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sender setup: {e}");
                std::process::exit(1);
            }
        };
        let drops_before = rcvbuf_errors();
        let (user0, sys0) = thread_times();
        let report = sender.run(duration, &AtomicBool::new(false));
        let (user1, sys1) = thread_times();
        let drops = rcvbuf_errors().zip(drops_before).map(|(a, b)| a - b);
        print_report(name, streams, &config, &report, drops);
        let per = |d: Duration| d.as_secs_f64() * 1e6 / report.packets_sent.max(1) as f64;
        println!(
            "         of which user {:.2} µs/packet, system {:.2} µs/packet",
            per(user1.saturating_sub(user0)),
            per(sys1.saturating_sub(sys0))
        );
    }
    drop(receivers);
}

fn print_report(
    name: &str,
    streams: usize,
    config: &SendConfig,
    r: &SendReport,
    drops: Option<u64>,
) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let pps = r.packets_sent as f64 / secs;
    let cpu_us = r.cpu_time.as_secs_f64() * 1e6 / (r.packets_sent.max(1) as f64);
    let share = r.cpu_time.as_secs_f64() / secs;
    let target = if config.paced {
        format!(
            " (target {} pps = {streams} streams x 50)",
            streams as u64 * 50
        )
    } else {
        String::new()
    };
    println!(
        "{name:8} {streams} streams, batch {}, tick {:?}: {} packets in {:.2} s = {:.0} packets/s{target}",
        config.batch, config.tick, r.packets_sent, secs, pps
    );
    println!(
        "         CPU {:.3} s = {:.2} µs/packet, {:.0}% of one core; {:.1} MB/s UDP payload; send errors {}{}",
        r.cpu_time.as_secs_f64(),
        cpu_us,
        share * 100.0,
        r.bytes as f64 / secs / 1e6,
        r.send_errors,
        r.last_send_error
            .as_deref()
            .map(|e| format!(" (last: {e})"))
            .unwrap_or_default()
    );
    if config.paced {
        println!("         worst lateness {:?}", r.max_late);
    }
    if let Some(d) = drops {
        println!("         dropped at the full receive queues (Udp RcvbufErrors): {d}");
    }
}

/// (user, system) CPU time of the calling thread, the one [`Sender::run`] runs on.
fn thread_times() -> (Duration, Duration) {
    // SAFETY: getrusage writes one `struct rusage` into the zeroed value we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// `RcvbufErrors` from the Udp line of /proc/net/snmp (host-wide), if readable.
fn rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?.split_whitespace();
    let values = udp.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
}

fn print_machine(args: &[String]) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    // SAFETY: uname fills the zeroed struct we own; its fields are NUL-terminated.
    let uname = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) == 0 {
            let f = |s: &[libc::c_char]| {
                std::ffi::CStr::from_ptr(s.as_ptr())
                    .to_string_lossy()
                    .into_owned()
            };
            format!(
                "{} {} {} {}",
                f(&u.sysname),
                f(&u.release),
                f(&u.version),
                f(&u.machine)
            )
        } else {
            "unknown".into()
        }
    };
    println!("machine: nproc {nproc}; {uname}");
    println!("command: {}", args.join(" "));
}
