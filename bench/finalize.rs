//! Finalize speed: seconds of stereo audio rendered per second of one core.
//!
//! Input: a two-stream call journal (20 ms packets per stream, 1% of packets swapped with the
//! next, 0.5% lost), read with `Plan::new` and rendered with `Plan::write_wav` into a sink, so
//! the figure is finalize's own CPU (journal parse + CRC, stream bookkeeping, placement,
//! rendering); file writing is the disk's. Goal (issue): >= 500 s of stereo audio per second.
//!
//! Printed first: ratios for a 10-minute call as mu-law WAV (G.711 kept), as PCM16 (G.711
//! decoded) and as G.722 decoded to 16 kHz. Then a criterion benchmark of the 10-minute
//! G.711 case.
//!
//! Run: `cargo bench --bench finalize`

#[path = "common/machine.rs"]
mod machine;
use machine::print_machine;

use std::hint::black_box;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group};
use reel::codec::g722;
use reel::record::finalize::Plan;
use reel::record::journal::{JournalRecord, RecordKind, encode_into, file_header};
use reel::record::{AudioFormat, RecordingMeta, StreamRecord};

const SECONDS: u64 = 600;

fn meta(codec: &str, pt: u8) -> RecordingMeta {
    let t0 = UNIX_EPOCH + Duration::from_secs(1_795_628_305);
    let mut m = RecordingMeta::new("bench", "call@host", t0, "bench");
    m.ended_at = t0 + Duration::from_secs(SECONDS);
    m.streams = (0..2)
        .map(|i| StreamRecord {
            label: format!("{}", i + 1),
            codec: codec.into(),
            payload_type: pt,
            clock_rate: 8000,
            mline: i,
            ..StreamRecord::default()
        })
        .collect();
    m
}

fn journal(pt: u8, payload: &[u8]) -> Vec<u8> {
    let t0_ns = 1_795_628_305u64 * 1_000_000_000;
    let packets = SECONDS * 50;
    let mut order: Vec<u64> = (0..packets).collect();
    for i in (50..packets as usize - 1).step_by(100) {
        order.swap(i, i + 1);
    }
    let mut out = file_header().to_vec();
    for &n in &order {
        if n % 200 == 7 {
            continue; // lost
        }
        for stream in 0..2u16 {
            encode_into(
                &JournalRecord {
                    stream,
                    kind: RecordKind::Audio,
                    marker: false,
                    payload_type: pt,
                    seq: n as u16,
                    timestamp: (n * 160) as u32,
                    ssrc: 0x100 + u32::from(stream),
                    arrival_ns: t0_ns + n * 20_000_000 + 3_000_000,
                    payload,
                },
                &mut out,
            );
        }
    }
    out
}

fn finalize(j: &[u8], m: &RecordingMeta, audio: AudioFormat) -> u64 {
    let plan = Plan::new(j, m).unwrap();
    let mut sink = std::io::sink();
    plan.write_wav(m, audio, &mut sink).unwrap()
}

fn ratio(name: &str, j: &[u8], m: &RecordingMeta, audio: AudioFormat) {
    finalize(j, m, audio); // warm-up
    let runs = 5;
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..runs {
        bytes = finalize(black_box(j), m, audio);
    }
    let per = t.elapsed().as_secs_f64() / f64::from(runs);
    eprintln!(
        "{name:<40} {:>6.1} ms per {SECONDS} s call  = {:>7.0} s of stereo audio per second  (journal {:.1} MB, wav {:.1} MB)",
        per * 1000.0,
        SECONDS as f64 / per,
        j.len() as f64 / 1e6,
        bytes as f64 / 1e6,
    );
}

fn bench(c: &mut Criterion) {
    let pcmu: Vec<u8> = (0..160u8).collect();
    let j = journal(0, &pcmu);
    let m = meta("PCMU", 0);
    ratio(
        "G.711 -> mu-law WAV (8 kHz stereo)",
        &j,
        &m,
        AudioFormat::WavG711,
    );
    ratio(
        "G.711 -> PCM16 WAV (8 kHz stereo)",
        &j,
        &m,
        AudioFormat::WavPcm16,
    );
    let tone: Vec<i16> = (0..320).map(|i| ((i * 97) % 2000) as i16 - 1000).collect();
    let mut g = Vec::new();
    g722::Encoder::new().encode(&tone, &mut g);
    let jg = journal(9, &g);
    ratio(
        "G.722 -> PCM16 WAV (16 kHz stereo)",
        &jg,
        &meta("G722", 9),
        AudioFormat::WavG711,
    );

    let mut group = c.benchmark_group("finalize");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SECONDS));
    group.bench_function(
        "10 min stereo G.711 -> mu-law WAV (elements = audio seconds)",
        |b| b.iter(|| finalize(black_box(&j), &m, AudioFormat::WavG711)),
    );
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    print_machine();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
