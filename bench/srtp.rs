//! SRTP unprotect of one 172-byte packet (12-byte RTP header + 160-byte G.711 payload, 20 ms
//! at 8 kHz), the recorder's per-packet cost, for AES_CM_128_HMAC_SHA1_80 and AEAD_AES_128_GCM.
//! Reports nanoseconds per packet (one element = one packet).
//!
//! Run: `cargo bench --bench srtp`
//!
//! Why `iter_custom` and templates: a context accepts each packet index once (replay
//! protection), so the same packet cannot be unprotected twice and the timed loop cannot
//! protect fresh packets without timing protect too. Instead `TEMPLATES` packets with
//! consecutive sequence numbers are protected once up front; each timed iteration copies the
//! next template into a working buffer (a 182/188-byte memcpy, included in the figure, as the
//! media thread also unprotects in its own receive buffer) and unprotects it. When the
//! templates run out a fresh receive context is made outside the timed section, so no
//! bench-only API resets replay state. One packet in `TEMPLATES` takes the first-packet path
//! of a new SSRC instead of the steady-state path; at 1 in 4096 that does not move the figure.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use reel::media::srtp::{SrtpContext, SrtpKey, SrtpSuite};

const TEMPLATES: usize = 4096;
const PAYLOAD: usize = 160;

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + PAYLOAD + 16);
    p.extend_from_slice(&[0x80, 0x00]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5u8, PAYLOAD)); // A-law silence
    p
}

fn templates(key: &SrtpKey) -> Vec<Vec<u8>> {
    let mut tx = SrtpContext::new(key);
    (0..TEMPLATES)
        .map(|i| {
            let mut p = rtp(i as u16);
            tx.protect_rtp(&mut p).expect("protect template");
            p
        })
        .collect()
}

fn bench_suite(c: &mut Criterion, suite: SrtpSuite) {
    let salt = vec![0x5a; suite.salt_len()];
    let key = SrtpKey::new(suite, [0x42; 16], &salt).expect("bench key");
    let wires = templates(&key);
    let mut buf = vec![0u8; wires[0].len()];

    let mut g = c.benchmark_group("srtp_unprotect");
    g.throughput(Throughput::Elements(1));
    g.bench_function(suite.sdp_name(), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let mut rx = SrtpContext::new(&key); // untimed: fresh replay state
                let n = left.min(TEMPLATES as u64) as usize;
                let start = Instant::now();
                for wire in &wires[..n] {
                    buf.copy_from_slice(wire);
                    let plain = rx.unprotect_rtp(black_box(&mut buf)).expect("unprotect");
                    black_box(plain);
                }
                timed += start.elapsed();
                left -= n as u64;
            }
            timed
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    eprintln!(
        "machine: {} cores (available_parallelism); packet: 12-byte header + {PAYLOAD}-byte \
         payload + tag; command: cargo bench --bench srtp",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    );
    bench_suite(c, SrtpSuite::AesCm128HmacSha1_80);
    bench_suite(c, SrtpSuite::AeadAes128Gcm);
}

criterion_group!(benches, bench);
criterion_main!(benches);
