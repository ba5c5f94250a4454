//! The media -> writer packet ring (`media::ring`, over `rtrb`): push/pop of 160-byte packet
//! records across two threads, ns per record. The consumer spins on its own core while the
//! producer pushes; a full ring hands the record back and the producer retries (counted).
//!
//! Run: `cargo bench --bench ring`

use std::time::Instant;

use reel::media::ring::{KIND_AUDIO, PacketMeta, packet_ring};

fn main() {
    let records: u64 = std::env::args()
        .skip_while(|a| a != "--records")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    eprintln!(
        "machine: {} cores; command: cargo bench --bench ring -- --records {records}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let (mut w, mut r) = packet_ring(32 * 1024 * 1024);
    let payload = [0x55u8; 160];
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        let mut seen = 0u64;
        let mut bytes = 0u64;
        while seen < records {
            seen += r.drain(|_, m, p| {
                bytes += u64::from(m.seq) + p.len() as u64;
            }) as u64;
        }
        (seen, bytes)
    });
    let mut retries = 0u64;
    for i in 0..records {
        let meta = PacketMeta {
            stream: 0,
            kind: KIND_AUDIO,
            marker: false,
            payload_type: 0,
            seq: i as u16,
            timestamp: (i as u32).wrapping_mul(160),
            ssrc: 1,
            arrival_ns: i,
        };
        while !w.push(1, &meta, &payload) {
            retries += 1;
            std::hint::spin_loop();
        }
    }
    let (seen, _) = consumer.join().expect("consumer");
    let elapsed = start.elapsed();
    println!(
        "ring: {seen} records of 160 B across two threads in {:.3} s: {:.1} ns/record, {:.1} M records/s, producer retries on full: {retries}",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / seen as f64,
        seen as f64 / elapsed.as_secs_f64() / 1e6
    );
}
