//! Receive-path CPU per packet, io_uring against epoll against the machine's drain floor, all
//! in one run on the same traffic (DESIGN.md section 7).
//!
//! N UDP sockets on 127.0.0.1 (default 2,000 = 1,000 calls x 2 streams) get 172-byte packets
//! (an RTP header plus 20 ms of G.711) from one sender thread, round-robin, at a fixed total
//! rate (default 50 packets/s per socket = 100,000 pps) paced in 1 ms slices with `sendmmsg`,
//! for D seconds. The receiver thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, user + system,
//! which includes the io_uring task work that copies packets in) is read around its receive
//! loop. Variants:
//!
//! - `a`: io_uring backend, naive: wait for 1 completion, take what is there, repeat.
//! - `b`: epoll + recvmmsg backend, woken per readiness.
//! - `c`: drain floor: the sender fills the socket queues first (rounds of `buf_count / N`
//!   packets per socket, so the buffer ring never runs dry), then the io_uring backend drains
//!   everything with batched waits; only the drains are timed. The cheapest the receive path
//!   gets on this host.
//! - `d`: io_uring backend batched as Reel runs it: a wait returns after `--batch-ms`
//!   (default 5) with everything that came, so one wake takes hundreds of packets.
//! - `e`: epoll batched the same way (sleep `--batch-ms`, then drain), to tell the batching
//!   gain from the backend gain.
//!
//! Per variant: packets received, loss (sent - received), receiver CPU-seconds per million
//! packets, µs per packet, wakeups, packets per wake, ratios to (a) and (c), calls per core
//! (at 100 packets/s per call, receive path only), the sender's CPU, and the rest of the
//! process's CPU (io-wq workers would show there).
//!
//! Run: `cargo bench --bench recv -- --sockets 2000 --pps-per-socket 50 --seconds 10
//! --variants a,b,c,d,e`

#[path = "common/sinks.rs"]
mod sinks;

use reel::media::probe::probe_uring;
use sinks::*;

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        sockets: 2000,
        pps_per_socket: 50,
        seconds: 10,
        variants: vec!['a', 'b', 'c', 'd', 'e'],
        batch_ms: 5,
        slice_ms: 1,
        pin: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let num = |s: String, name: &str| s.parse::<u64>().map_err(|_| format!("bad {name}: {s}"));
        match k.as_str() {
            "--sockets" => a.sockets = num(val("--sockets")?, "--sockets")? as usize,
            "--pps-per-socket" => a.pps_per_socket = num(val(&k)?, &k)?,
            "--seconds" => a.seconds = num(val(&k)?, &k)?,
            "--batch-ms" => a.batch_ms = num(val(&k)?, &k)?,
            "--slice-ms" => a.slice_ms = num(val(&k)?, &k)?.max(1),
            "--no-pin" => a.pin = false,
            "--variants" => {
                a.variants = val(&k)?
                    .split(',')
                    .filter_map(|s| s.trim().chars().next())
                    .collect();
                if let Some(bad) = a.variants.iter().find(|c| !"abcde".contains(**c)) {
                    return Err(format!("unknown variant {bad} (a,b,c,d,e)"));
                }
            }
            // cargo bench passes --bench; ignore it and anything libtest-like.
            "--bench" => {}
            other if other.starts_with("--") => return Err(format!("unknown flag {other}")),
            _ => {}
        }
    }
    if a.sockets == 0 || a.pps_per_socket == 0 || a.seconds == 0 {
        return Err("--sockets, --pps-per-socket and --seconds must be > 0".into());
    }
    Ok(a)
}

fn label(v: char) -> &'static str {
    match v {
        'a' => "a uring naive (wait 1)",
        'b' => "b epoll+recvmmsg",
        'c' => "c uring drain floor",
        'd' => "d uring batched",
        'e' => "e epoll batched",
        _ => "?",
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("recv bench: {e}");
            eprintln!(
                "usage: recv [--sockets N] [--pps-per-socket R] [--seconds D] \
                 [--variants a,b,c,d,e] [--batch-ms M] [--slice-ms S] [--no-pin]"
            );
            std::process::exit(2);
        }
    };
    raise_nofile();
    print_machine();
    println!(
        "traffic: {} sockets x {} pps = {} pps, {} s, {} B payload, {} ms send slices; \
         batch {} ms; pinned rx cpu1 / tx cpu0: {}",
        args.sockets,
        args.pps_per_socket,
        args.sockets as u64 * args.pps_per_socket,
        args.seconds,
        PAYLOAD,
        args.slice_ms,
        args.batch_ms,
        args.pin
    );
    let uring_ok = probe_uring();
    let mut results: Vec<(char, Outcome)> = Vec::new();
    for &v in &args.variants {
        if v != 'b' && v != 'e' && uring_ok.is_err() {
            println!(
                "{}: skipped, io_uring unavailable ({})",
                label(v),
                uring_ok.as_ref().err().map_or("", |e| e.as_str())
            );
            continue;
        }
        let o = if v == 'c' {
            run_drain(&args)
        } else {
            run_paced(v, &args)
        };
        eprintln!("{} done in {:.1} s", label(v), o.wall.as_secs_f64());
        results.push((v, o));
    }
    let per_pkt = |o: &Outcome| o.rx_cpu_ns as f64 / o.received.max(1) as f64;
    let base_a = results.iter().find(|r| r.0 == 'a').map(|r| per_pkt(&r.1));
    let base_c = results.iter().find(|r| r.0 == 'c').map(|r| per_pkt(&r.1));
    let ratio = |x: f64, b: Option<f64>| b.map_or("-".into(), |b| format!("{:.2}", x / b));
    println!();
    println!(
        "{:<24} {:>9} {:>6} {:>10} {:>7} {:>8} {:>9} {:>6} {:>6} {:>10} {:>8} {:>8} {:>8} {:>7}",
        "variant",
        "received",
        "loss",
        "cpu-s/Mpk",
        "us/pkt",
        "wakeups",
        "pkt/wake",
        "vs a",
        "vs c",
        "calls/core",
        "tx cpu-s",
        "other-s",
        "enobufs",
        "rearms"
    );
    for (v, o) in &results {
        let ns = per_pkt(o);
        let other = o.process_cpu_ns.saturating_sub(o.rx_cpu_ns + o.tx_cpu_ns);
        println!(
            "{:<24} {:>9} {:>6} {:>10.3} {:>7.3} {:>8} {:>9.1} {:>6} {:>6} {:>10.0} {:>8.2} {:>8.2} {:>8} {:>7}  {}",
            label(*v),
            o.received,
            o.sent as i64 - o.received as i64,
            ns / 1000.0,
            ns / 1000.0,
            o.stats.wakeups,
            o.received as f64 / o.stats.wakeups.max(1) as f64,
            ratio(ns, base_a),
            ratio(ns, base_c),
            // One call = 2 streams x 50 packets/s = 100 packets/s.
            1e9 / (ns * 100.0),
            o.tx_cpu_ns as f64 / 1e9,
            other as f64 / 1e9,
            o.stats.enobufs,
            o.stats.rearms,
            o.note
        );
    }
    println!();
    println!(
        "cpu-s/Mpk = receiver-thread CPU seconds per million packets (= us/pkt); calls/core = \
         1 s / (us/pkt x 100 pkt/s per call), receive path only; other-s = process CPU not \
         in the rx or tx thread (io-wq workers, setup); loss = sent - received."
    );
}
