//! The per-packet work a media thread does before journaling a packet: parse the RTP header
//! and run the stream bookkeeping (sequence, duplicates, loss). Input: one G.711 stream of
//! 20 ms packets (12-byte header, 160-byte payload), sequential sequence numbers that wrap
//! once, and 1% of packets swapped with their successor (reordering).
//!
//! Criterion reports elements (packets) per second; ns/packet = 1e9 / that.
//! The machine and the command line are printed to stderr first.
//!
//! Run: `cargo bench --bench rtp_stream`

#[path = "common/machine.rs"]
mod machine;
use machine::print_machine;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use reel::media::rtp::{RtpHeader, parse_rtp, payload};
use reel::media::stream::{PacketVerdict, StreamState};

const PACKETS: usize = 10_000;
const PAYLOAD: usize = 160;
const STRIDE: usize = 12 + PAYLOAD;
const PACKET_NS: u64 = 20_000_000;

/// PACKETS packets back to back, STRIDE bytes each. Sequence numbers start near the top so
/// the stream wraps 65535 -> 0 once; every 100th packet is swapped with the next one.
fn stream() -> Vec<u8> {
    let mut order: Vec<usize> = (0..PACKETS).collect();
    for i in (50..PACKETS - 1).step_by(100) {
        order.swap(i, i + 1);
    }
    let mut out = Vec::with_capacity(PACKETS * STRIDE);
    for n in order {
        let seq = 60_000u16.wrapping_add(n as u16);
        let ts = 1_234_567u32.wrapping_add(n as u32 * PAYLOAD as u32);
        out.extend_from_slice(&[0x80, 0]);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&0x5eed_cafe_u32.to_be_bytes());
        out.extend((0..PAYLOAD).map(|i| ((i as u8) ^ (n as u8)) | 0x80));
    }
    out
}

/// Parse and track every packet once, as a media thread would; returns what was accepted
/// and the payload bytes it would journal.
fn run(packets: &[u8]) -> (StreamState, usize) {
    let mut s = StreamState::new();
    let mut bytes = 0;
    for (i, p) in packets.chunks_exact(STRIDE).enumerate() {
        let Ok(h) = parse_rtp(black_box(p)) else {
            continue;
        };
        if let PacketVerdict::Accept { .. } = s.on_packet(&h, i as u64 * PACKET_NS) {
            bytes += payload(p, &h).len();
        }
    }
    (s, bytes)
}

fn bench(c: &mut Criterion) {
    let packets = stream();

    // The input is what it claims to be: nothing lost, 1% reordered, all accepted.
    let (s, bytes) = run(&packets);
    assert_eq!(s.packets(), PACKETS as u64);
    assert_eq!(s.lost(), 0);
    assert_eq!(s.reordered(), (PACKETS / 100) as u64);
    assert_eq!(bytes, PACKETS * PAYLOAD);

    let mut g = c.benchmark_group("rtp_stream");
    g.throughput(Throughput::Elements(PACKETS as u64));
    g.bench_function("parse+on_packet (G.711, 1% reordered)", |b| {
        b.iter(|| {
            let (s, bytes) = run(&packets);
            black_box((s.packets(), bytes))
        })
    });
    g.bench_function("parse only", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in packets.chunks_exact(STRIDE) {
                if let Ok(h) = parse_rtp(black_box(p)) {
                    n += h.payload_len;
                }
            }
            black_box(n)
        })
    });
    let headers: Vec<RtpHeader> = packets
        .chunks_exact(STRIDE)
        .filter_map(|p| parse_rtp(p).ok())
        .collect();
    g.bench_function("on_packet only", |b| {
        b.iter(|| {
            let mut s = StreamState::new();
            for (i, h) in headers.iter().enumerate() {
                black_box(s.on_packet(black_box(h), i as u64 * PACKET_NS));
            }
            black_box(s.lost())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    print_machine();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
