//! The receive backends on real loopback sockets. Every case runs the same body against
//! io_uring and epoll; the io_uring variant is skipped, with the reason printed, where the
//! kernel probe fails (containers that block io_uring).

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use reel::media::backend::{
    BackendConfig, RecvBackend, open_backend, realtime_now_ns, set_receive_buffer,
};
use reel::media::probe::{Backend, probe_uring};

#[derive(Debug, Clone)]
struct Got {
    token: u64,
    data: Vec<u8>,
    source: SocketAddr,
    arrival_ns: u64,
    truncated: bool,
}

fn open(kind: Backend, config: &BackendConfig) -> Option<Box<dyn RecvBackend>> {
    if kind == Backend::Uring
        && let Err(e) = probe_uring()
    {
        eprintln!("skipped: io_uring unavailable here ({e})");
        return None;
    }
    Some(open_backend(kind, config).expect("open backend"))
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

/// A backend of `kind` (default config) receiving on one fresh socket under `token`: the
/// backend, the socket's address and a socket to send from.
fn one_socket(kind: Backend, token: u64) -> Option<(Box<dyn RecvBackend>, SocketAddr, UdpSocket)> {
    let mut b = open(kind, &BackendConfig::default())?;
    let rx = bind();
    let to = rx.local_addr().expect("addr");
    b.add_socket(rx, token).expect("add");
    Some((b, to, bind()))
}

/// Polls until `want` packets arrived or `limit` passed.
fn collect(b: &mut dyn RecvBackend, want: usize, limit: Duration) -> Vec<Got> {
    let mut got = Vec::new();
    let end = Instant::now() + limit;
    while got.len() < want && Instant::now() < end {
        b.poll(Duration::from_millis(20), &mut |p| {
            got.push(Got {
                token: p.token,
                data: p.data.to_vec(),
                source: p.source,
                arrival_ns: p.arrival_ns,
                truncated: p.truncated,
            })
        })
        .expect("poll");
    }
    got
}

/// A few more polls to catch anything that should not be there.
fn quiet(b: &mut dyn RecvBackend) -> Vec<Got> {
    let mut extra = collect(b, usize::MAX, Duration::from_millis(100));
    extra.shrink_to_fit();
    extra
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[test]
                fn uring() {
                    super::$case(reel::media::probe::Backend::Uring);
                }
                #[test]
                fn epoll() {
                    super::$case(reel::media::probe::Backend::Epoll);
                }
            }
        )*
    };
}

both!(
    tokens_data_and_sources,
    arrival_time_is_wall_clock,
    ten_thousand_packets_over_twenty_sockets,
    remove_stops_one_token_only,
    waker_ends_a_long_poll,
    burst_larger_than_the_buffer_ring,
    oversized_datagrams_are_flagged_truncated,
    removed_port_can_be_bound_again,
    drop_with_live_sockets_returns,
    empty_datagrams_neither_stop_nor_hide_the_stream,
    a_queue_of_empty_datagrams_is_read_through_in_one_wake,
);

fn tokens_data_and_sources(kind: Backend) {
    let Some(mut b) = open(kind, &BackendConfig::default()) else {
        return;
    };
    let mut dest = HashMap::new();
    for token in [11u64, 22, 33] {
        let rx = bind();
        dest.insert(token, rx.local_addr().expect("addr"));
        b.add_socket(rx, token).expect("add");
    }
    let senders: Vec<UdpSocket> = (0..3).map(|_| bind()).collect();
    let mut expect = HashSet::new();
    for (i, tx) in senders.iter().enumerate() {
        for (token, to) in &dest {
            for n in 0..4u8 {
                let payload = vec![i as u8, *token as u8, n, 0xAB];
                tx.send_to(&payload, to).expect("send");
                expect.insert((*token, payload, tx.local_addr().expect("tx addr")));
            }
        }
    }
    let got = collect(&mut *b, expect.len(), Duration::from_secs(5));
    let seen: HashSet<_> = got
        .iter()
        .map(|g| (g.token, g.data.clone(), g.source))
        .collect();
    assert_eq!(got.len(), expect.len(), "{}: count", b.name());
    assert_eq!(seen, expect, "{}: token, data, source", b.name());
    assert!(got.iter().all(|g| !g.truncated));
    let st = b.stats();
    assert_eq!(st.packets, expect.len() as u64);
    assert_eq!(st.bytes, 4 * expect.len() as u64);
    assert!(quiet(&mut *b).is_empty());
}

fn arrival_time_is_wall_clock(kind: Backend) {
    let Some((mut b, to, tx)) = one_socket(kind, 1) else {
        return;
    };
    let before = realtime_now_ns();
    for _ in 0..10 {
        tx.send_to(&[0u8; 172], to).expect("send");
    }
    let got = collect(&mut *b, 10, Duration::from_secs(5));
    let after = realtime_now_ns();
    assert_eq!(got.len(), 10);
    for g in &got {
        // Kernel receive time: after the first send started, before we finished reading.
        assert!(
            g.arrival_ns + 1_000_000 >= before && g.arrival_ns <= after + 1_000_000,
            "{}: arrival {} outside [{before}, {after}]",
            b.name(),
            g.arrival_ns
        );
    }
}

fn ten_thousand_packets_over_twenty_sockets(kind: Backend) {
    let Some(mut b) = open(kind, &BackendConfig::default()) else {
        return;
    };
    let mut dests = Vec::new();
    for token in 0..20u64 {
        let rx = bind();
        dests.push(rx.local_addr().expect("addr"));
        b.add_socket(rx, token).expect("add");
    }
    let tx = bind();
    let mut per_token = vec![0u32; 20];
    let mut got_total = 0usize;
    let mut bad = 0usize;
    // 20 bursts of 500 (25 per socket), polling between bursts.
    for burst in 0..20u32 {
        for n in 0..25u32 {
            for (i, to) in dests.iter().enumerate() {
                let mut p = [0u8; 172];
                p[..4].copy_from_slice(&(burst * 25 + n).to_be_bytes());
                p[4] = i as u8;
                tx.send_to(&p, to).expect("send");
            }
        }
        let end = Instant::now() + Duration::from_secs(5);
        let target = (burst as usize + 1) * 500;
        while got_total < target && Instant::now() < end {
            b.poll(Duration::from_millis(10), &mut |p| {
                got_total += 1;
                let t = p.token as usize;
                if t >= 20 || p.data.len() != 172 || usize::from(p.data[4]) != t {
                    bad += 1;
                } else {
                    per_token[t] += 1;
                }
            })
            .expect("poll");
        }
    }
    assert_eq!(bad, 0);
    assert_eq!(got_total, 10_000, "{}: {:?}", b.name(), b.stats());
    assert!(per_token.iter().all(|&n| n == 500), "{per_token:?}");
    assert_eq!(b.stats().packets, 10_000);
}

fn remove_stops_one_token_only(kind: Backend) {
    let Some(mut b) = open(kind, &BackendConfig::default()) else {
        return;
    };
    let (a, c) = (bind(), bind());
    let (to_a, to_c) = (a.local_addr().expect("a"), c.local_addr().expect("c"));
    b.add_socket(a, 1).expect("add a");
    b.add_socket(c, 2).expect("add c");
    let tx = bind();
    tx.send_to(b"a0", to_a).expect("send");
    tx.send_to(b"c0", to_c).expect("send");
    assert_eq!(collect(&mut *b, 2, Duration::from_secs(5)).len(), 2);

    // Queued but not yet delivered when the socket is removed: must never show up.
    tx.send_to(b"a1", to_a).expect("send");
    tx.send_to(b"c1", to_c).expect("send");
    std::thread::sleep(Duration::from_millis(20));
    b.remove_socket(1).expect("remove");
    assert_eq!(
        b.remove_socket(1).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::NotFound)
    );
    let _ = tx.send_to(b"a2", to_a); // the port is closed; the send may fail or vanish
    tx.send_to(b"c2", to_c).expect("send");
    let got = collect(&mut *b, 2, Duration::from_secs(5));
    let got: Vec<_> = got.iter().chain(quiet(&mut *b).iter()).cloned().collect();
    assert!(got.iter().all(|g| g.token == 2), "{}: {got:?}", b.name());
    let data: Vec<_> = got.iter().map(|g| g.data.clone()).collect();
    assert_eq!(data, vec![b"c1".to_vec(), b"c2".to_vec()]);
    // The token may be used again for a new socket.
    let again = bind();
    let to_again = again.local_addr().expect("addr");
    b.add_socket(again, 1).expect("re-add token 1");
    tx.send_to(b"new", to_again).expect("send");
    let got = collect(&mut *b, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].token, got[0].data.as_slice()), (1, &b"new"[..]));
}

fn waker_ends_a_long_poll(kind: Backend) {
    let Some(mut b) = open(kind, &BackendConfig::default()) else {
        return;
    };
    b.add_socket(bind(), 1).expect("add");
    // A first poll submits whatever is pending, so the timed one measures only the wake.
    b.poll(Duration::from_millis(1), &mut |_| {}).expect("poll");
    let waker = b.waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        waker.wake();
        waker.wake(); // wakes coalesce
    });
    let start = Instant::now();
    let n = b.poll(Duration::from_secs(20), &mut |_| {}).expect("poll");
    let took = start.elapsed();
    t.join().expect("waker thread");
    assert_eq!(n, 0);
    assert!(
        took >= Duration::from_millis(80) && took < Duration::from_secs(5),
        "{}: woke after {took:?}",
        b.name()
    );
    // The wake was consumed: the next poll times out normally.
    let start = Instant::now();
    b.poll(Duration::from_millis(50), &mut |_| {})
        .expect("poll");
    let second = start.elapsed();
    // Two wakes may leave one more early return; a third poll must then wait.
    if second < Duration::from_millis(40) {
        let start = Instant::now();
        b.poll(Duration::from_millis(50), &mut |_| {})
            .expect("poll");
        assert!(start.elapsed() >= Duration::from_millis(40));
    }
}

fn burst_larger_than_the_buffer_ring(kind: Backend) {
    let config = BackendConfig {
        buf_count: 64,
        ..BackendConfig::default()
    };
    let Some(mut b) = open(kind, &config) else {
        return;
    };
    let rx = bind();
    let got_buf = set_receive_buffer(&rx, 8 << 20).expect("rcvbuf");
    assert!(got_buf >= 2 << 20, "SO_RCVBUF only {got_buf}");
    let to = rx.local_addr().expect("addr");
    let tx = bind();
    // Queue everything before the backend sees the socket: one multishot receive meets
    // 1,000 waiting datagrams and 64 buffers.
    for n in 0..1000u32 {
        let mut p = [0u8; 172];
        p[..4].copy_from_slice(&n.to_be_bytes());
        tx.send_to(&p, to).expect("send");
    }
    b.add_socket(rx, 5).expect("add");
    let got = collect(&mut *b, 1000, Duration::from_secs(10));
    let mut seq: Vec<u32> = got
        .iter()
        .map(|g| u32::from_be_bytes([g.data[0], g.data[1], g.data[2], g.data[3]]))
        .collect();
    assert_eq!(got.len(), 1000, "{}: {:?}", b.name(), b.stats());
    // One socket, one receive at a time: order is kept.
    assert!(seq.windows(2).all(|w| w[0] < w[1]));
    seq.dedup();
    assert_eq!(seq.len(), 1000);
    assert!(quiet(&mut *b).is_empty());
    let st = b.stats();
    if kind == Backend::Uring {
        assert!(st.enobufs > 0, "ring of 64 never ran dry? {st:?}");
        assert!(st.rearms >= st.enobufs, "{st:?}");
    } else {
        assert_eq!(st.enobufs, 0);
    }
    assert_eq!(st.errors, 0, "{st:?}");
}

fn oversized_datagrams_are_flagged_truncated(kind: Backend) {
    let config = BackendConfig {
        buf_size: 256,
        ..BackendConfig::default()
    };
    let Some(mut b) = open(kind, &config) else {
        return;
    };
    let rx = bind();
    let to = rx.local_addr().expect("addr");
    b.add_socket(rx, 9).expect("add");
    let tx = bind();
    let big: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();
    tx.send_to(&big, to).expect("send big");
    tx.send_to(b"small", to).expect("send small");
    let got = collect(&mut *b, 2, Duration::from_secs(5));
    assert_eq!(got.len(), 2, "{}", b.name());
    assert!(got[0].truncated);
    assert!(!got[0].data.is_empty() && got[0].data.len() <= 256);
    assert_eq!(got[0].data[..], big[..got[0].data.len()]);
    assert!(!got[1].truncated);
    assert_eq!(got[1].data, b"small");
    assert_eq!(b.stats().truncated, 1);
}

fn removed_port_can_be_bound_again(kind: Backend) {
    let Some(mut b) = open(kind, &BackendConfig::default()) else {
        return;
    };
    let rx = bind();
    let addr = rx.local_addr().expect("addr");
    b.add_socket(rx, 3).expect("add");
    b.poll(Duration::from_millis(1), &mut |_| {}).expect("poll");
    b.remove_socket(3).expect("remove");
    UdpSocket::bind(addr).expect("the port is free once remove_socket returned");
}

fn drop_with_live_sockets_returns(kind: Backend) {
    let Some(mut b) = open(kind, &BackendConfig::default()) else {
        return;
    };
    let tx = bind();
    for t in 0..50 {
        let rx = bind();
        tx.send_to(b"x", rx.local_addr().expect("addr"))
            .expect("send");
        b.add_socket(rx, t).expect("add");
    }
    b.poll(Duration::from_millis(5), &mut |_| {}).expect("poll");
    let start = Instant::now();
    drop(b);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn open_backend_rejects_bad_sizes() {
    for bad in [
        BackendConfig {
            buf_count: 100, // not a power of two
            ..BackendConfig::default()
        },
        BackendConfig {
            buf_size: 16,
            ..BackendConfig::default()
        },
    ] {
        if probe_uring().is_ok() {
            assert!(open_backend(Backend::Uring, &bad).is_err());
        }
    }
    assert!(
        open_backend(
            Backend::Epoll,
            &BackendConfig {
                buf_size: 16,
                ..BackendConfig::default()
            }
        )
        .is_err()
    );
}

/// A zero-length datagram ends the kernel's multishot `recvmsg` (its length 0 reads as "no
/// more"): the receive must be re-armed, and the packets after it delivered like any other.
fn empty_datagrams_neither_stop_nor_hide_the_stream(kind: Backend) {
    let Some((mut b, to, tx)) = one_socket(kind, 7) else {
        return;
    };
    let mut got = Vec::new();
    for round in 0..300u16 {
        tx.send_to(&round.to_be_bytes(), to).expect("send");
        tx.send_to(&[], to).expect("send empty");
        if round % 10 == 9 {
            got.extend(collect(&mut *b, 20, Duration::from_secs(2)));
        }
    }
    got.extend(quiet(&mut *b));
    let real: Vec<u16> = got
        .iter()
        .filter(|g| g.data.len() == 2)
        .map(|g| u16::from_be_bytes([g.data[0], g.data[1]]))
        .collect();
    assert_eq!(
        real,
        (0..300).collect::<Vec<_>>(),
        "{}: every real packet, in order",
        b.name()
    );
    let empty = got.iter().filter(|g| g.data.is_empty()).count();
    assert_eq!(
        empty,
        300,
        "{}: the empty ones are delivered too (the worker counts them malformed)",
        b.name()
    );
}

/// Fifty packets, each followed by an empty datagram, queued before the wake: a media thread
/// wakes every 80 ms, so a backend that takes one empty datagram per wake (io_uring's
/// multishot ends at each) falls ever further behind and the stream goes deaf. Three wakes
/// must deliver everything.
fn a_queue_of_empty_datagrams_is_read_through_in_one_wake(kind: Backend) {
    let Some((mut b, to, tx)) = one_socket(kind, 7) else {
        return;
    };
    for n in 0..50u16 {
        tx.send_to(&n.to_be_bytes(), to).expect("send");
        tx.send_to(&[], to).expect("send empty");
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut real = Vec::new();
    for _ in 0..3 {
        b.poll(Duration::from_millis(80), &mut |p| {
            if p.data.len() == 2 {
                real.push(u16::from_be_bytes([p.data[0], p.data[1]]));
            }
        })
        .expect("poll");
    }
    assert_eq!(real, (0..50).collect::<Vec<_>>(), "{}", b.name());
}
